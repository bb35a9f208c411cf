"""Online (batch size 1) gradient learners run on many independent episodes at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from badgerlab.registry import Registry

__all__ = ["LEARNERS", "OnlineResult", "get_learner", "online_learn", "register_learner"]


@dataclass(frozen=True)
class OnlineResult:
    """`correct` `(E, N)`: was example t classified right *before* its label was used;
    `loss` `(E, N)`: its cross-entropy, also before the update."""

    correct: torch.Tensor
    loss: torch.Tensor

    @property
    def accuracy_curve(self) -> torch.Tensor:
        """Accuracy per example index, averaged over episodes: `(N,)`."""
        return self.correct.float().mean(0)


def _init_params(
    sizes: list[int], episodes: int, g: torch.Generator, dtype: torch.dtype
) -> list[torch.Tensor]:
    # PyTorch's nn.Linear initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), per episode.
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        bound = fan_in**-0.5
        w = (torch.rand(episodes, fan_in, fan_out, generator=g, dtype=dtype) * 2 - 1) * bound
        b = (torch.rand(episodes, 1, fan_out, generator=g, dtype=dtype) * 2 - 1) * bound
        params += [w.requires_grad_(), b.requires_grad_()]
    return params


def _forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    h = x  # (E, 1, D)
    for i in range(0, len(params), 2):
        h = torch.baddbmm(params[i + 1], h, params[i])  # (E, 1, H)
        if i + 2 < len(params):
            h = torch.relu(h)
    return h


OptimFactory = Callable[[list[torch.Tensor], float], torch.optim.Optimizer]

#: Online optimisers by name; a config field `optimizer: LEARNERS.field_type()` accepts any.
LEARNERS: Registry[OptimFactory] = Registry("online learner")
LEARNERS.register("sgd", lambda p, lr: torch.optim.SGD(p, lr=lr))
LEARNERS.register("adam", lambda p, lr: torch.optim.Adam(p, lr=lr))


def register_learner(name: str, factory: OptimFactory, *, overwrite: bool = False) -> None:
    """Add an optimiser; it must act elementwise so that one instance over the stacked
    parameters equals one instance per episode. A name is registered once unless
    `overwrite`."""
    LEARNERS.register(name, factory, overwrite=overwrite)


def get_learner(name: str) -> OptimFactory:
    """The registered optimiser factory `name` (`sgd`, `adam`, or one you registered)."""
    return LEARNERS.get(name)


def online_learn(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    optimizer: str = "adam",
    lr: float = 1e-3,
    hidden: tuple[int, ...] = (),
    seed: int = 0,
) -> OnlineResult:
    """Train one fresh network per episode online: predict example t, then one step on it.

    For episode e and step t: ŷ_t = f(x_t; θ_{t-1}), record [argmax ŷ_t = y_t] and
    CE(ŷ_t, y_t), then θ_t = opt(θ_{t-1}, ∇_θ CE(ŷ_t, y_t)). The episodes' networks are stacked
    along a leading axis and trained with one optimiser on the summed loss; SGD and Adam act
    elementwise, so this equals E independent learners.

    Args:
        x: `(E, N, D)` inputs. y: `(E, N)` labels in `0..num_classes-1`.
        hidden: hidden layer widths (ReLU); `()` is a linear model.
    """
    if x.ndim != 3 or y.shape != x.shape[:2]:
        raise ValueError(
            f"x must be (E, N, D) and y (E, N); got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    episodes, steps, dim = x.shape
    g = torch.Generator().manual_seed(seed)
    params = _init_params([dim, *hidden, num_classes], episodes, g, x.dtype)
    opt = get_learner(optimizer)(params, lr)
    correct = torch.zeros(episodes, steps, dtype=torch.bool)
    losses = torch.zeros(episodes, steps)
    for t in range(steps):
        logits = _forward(params, x[:, t : t + 1])[:, 0]  # (E, C)
        loss = F.cross_entropy(logits, y[:, t], reduction="none")  # (E,)
        correct[:, t] = logits.argmax(-1) == y[:, t]
        losses[:, t] = loss.detach()
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    return OnlineResult(correct, losses)
