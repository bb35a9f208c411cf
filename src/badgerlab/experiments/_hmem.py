"""The training loop shared by the H-Mem experiments (image associations, question answering)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from badgerlab.runs import RunLike

EVERY = 50  # steps per logged (mean) training loss


def fit(
    unit,
    run: RunLike,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    steps: int,
    loss_of: Callable[[torch.Generator], Tensor],
    *,
    seed: int,
    clip: float,
    checkpoint_every: int,
) -> list[float]:
    """Adam-style training for `steps` steps on the batches `loss_of(generator)` draws, with
    the gradient norm clipped at `clip`; the model, optimizer, generator and loss history are
    checkpointed every `checkpoint_every` steps, so a resumed unit continues bit for bit.
    Returns the history of mean training losses (one per `EVERY` steps)."""
    st = unit.restore()
    if st is None:
        g = torch.Generator().manual_seed(seed)
        st = {"step": 0, "generator": g, "loss_sum": 0.0, "history": []}
    else:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
    g = st["generator"]
    for step in range(st["step"], steps):
        loss = loss_of(g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        st["loss_sum"] += float(loss.detach())
        if (step + 1) % EVERY == 0 or step + 1 == steps:
            mean = st["loss_sum"] / (step % EVERY + 1)
            st["history"].append(mean)
            st["loss_sum"] = 0.0
            run.log(unit.index * 10_000_000 + step, unit=unit.key, step_in_unit=step, loss=mean)
        if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            st.update(step=step + 1, model=model.state_dict(), opt=opt.state_dict())
            unit.checkpoint(st, step=unit.index * 10_000_000 + step)
    return st["history"]
