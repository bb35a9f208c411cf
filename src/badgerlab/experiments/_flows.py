"""The resumable training loop the SurVAE experiments share (not an experiment itself)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from badgerlab.runs import RunLike


def fit_flow(
    unit,
    run: RunLike,
    flow: nn.Module,
    opt: torch.optim.Optimizer,
    cfg,
    generator_seed: int,
    loss_fn: Callable[[torch.Generator], Tensor],
    metric: str,
    **labels,
) -> list[float]:
    """Train `flow` for `cfg.steps` steps of `loss_fn(generator)` (a fresh batch's loss, drawn
    with the unit's generator, seeded by `generator_seed`), logging the mean loss of each
    `cfg.checkpoint_every` steps as `metric` beside `labels` and checkpointing the flow, the
    optimiser and the generator as often; a restored unit continues where it stopped.
    Returns the per-step loss history."""
    st = unit.restore()
    if st is None:
        st = {"step": 0, "generator": torch.Generator().manual_seed(generator_seed), "history": []}
    else:
        flow.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
    every = cfg.checkpoint_every
    for step in range(st["step"], cfg.steps):
        loss = loss_fn(st["generator"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        st["history"].append(float(loss.detach()))
        if (step + 1) % every == 0 or step + 1 == cfg.steps:
            window = st["history"][-every:]
            run.log(unit.index * cfg.steps + step, **labels, **{metric: sum(window) / len(window)})
        if (step + 1) % every == 0 and step + 1 < cfg.steps:
            st.update(step=step + 1, model=flow.state_dict(), opt=opt.state_dict())
            unit.checkpoint(st, step=unit.index * cfg.steps + step)
    return st["history"]
