"""Small conditioner networks for couplings and conditional densities."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["MLP", "ConvNet"]


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
