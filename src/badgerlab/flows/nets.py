"""Small conditioner networks for couplings and conditional densities."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MLP", "ConvNet", "SetConvNet"]


class MLP(nn.Sequential):
    """`in_dim → hidden… → out_dim` with ReLU; the last layer starts at zero (identity flows)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (64, 64)) -> None:
        dims = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        last = nn.Linear(dims[-1], out_dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        super().__init__(*layers, last)


class ConvNet(nn.Sequential):
    """3×3 conv → ReLU → 1×1 conv → ReLU → 3×3 conv (zero-initialised), same spatial size."""

    def __init__(self, in_ch: int, out_ch: int, hidden: int = 32) -> None:
        last = nn.Conv2d(hidden, out_ch, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        super().__init__(
            nn.Conv2d(in_ch, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            last,
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, in_ch, H, W) -> (B, out_ch, H, W)
        return super().forward(x)


class SetConvNet(nn.Module):
    """Conditioner over sequences `(B, C_in, N) → (B, C_out, N)`: each position sees a window of
    `k` neighbours (a width-`k` 1-D convolution, written as unfold + linear: much faster on CPU
    than conv1d at these sizes), then a layer that also sees the mean over the sequence (global
    context), then a zero-initialised output layer. Local where the order means something
    (sorted points), global otherwise."""

    def __init__(self, in_ch: int, out_ch: int, hidden: int = 64, kernel: int = 5) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (same length out), got {kernel!r}")
        self.kernel = kernel
        self.local = nn.Linear(in_ch * kernel, hidden)
        self.mix = nn.Linear(2 * hidden, hidden)
        self.out = nn.Linear(hidden, out_ch)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, n = x.shape
        k = self.kernel
        win = F.pad(x, (k // 2, k // 2)).unfold(2, k, 1)  # (B, C, N, k)
        h = torch.relu(self.local(win.permute(0, 2, 1, 3).reshape(b, n, c * k)))  # (B, N, H)
        g = h.mean(1, keepdim=True).expand_as(h)
        return self.out(torch.relu(self.mix(torch.cat([h, g], 2)))).transpose(1, 2)
