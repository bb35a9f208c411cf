"""Shared matplotlib figures: curves with a band over seeds."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

__all__ = ["curve_plot", "moving_average"]


def moving_average(y: torch.Tensor, window: int) -> torch.Tensor:
    """Trailing moving average along the last axis (shorter windows at the start).

    >>> moving_average(torch.tensor([0.0, 2.0, 4.0, 6.0]), 2).tolist()
    [0.0, 1.0, 3.0, 5.0]
    """
    if window <= 1:
        return y
    c = torch.cumsum(y.double(), -1)
    out = c.clone()
    out[..., window:] = c[..., window:] - c[..., :-window]
    n = torch.arange(1, y.shape[-1] + 1, dtype=torch.float64).clamp(max=window)
    return (out / n).to(y.dtype)


def curve_plot(
    curves: Mapping[str, torch.Tensor],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    smooth: int = 1,
    chance: float | None = None,
    x: torch.Tensor | None = None,
    logy: bool = False,
):
    """One line per entry: the mean over the first axis (seeds) with a ±1 std band.

    Each value is `(seeds, T)` or `(T,)`, averaged over a trailing window of `smooth` points
    before plotting. Returns the figure (save it with `Run.save_figure`).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, y in curves.items():
        y = torch.as_tensor(y, dtype=torch.float64)
        y = y[None] if y.ndim == 1 else y
        y = moving_average(y, smooth)
        mean = y.mean(0)
        xs = torch.arange(1, y.shape[-1] + 1) if x is None else torch.as_tensor(x)
        ax.plot(xs.numpy(), mean.numpy(), label=name)
        if y.shape[0] > 1:
            std = y.std(0)
            ax.fill_between(xs.numpy(), (mean - std).numpy(), (mean + std).numpy(), alpha=0.2)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label="chance")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig
