"""What every Hebbian experiment shares: the ES settings in its config, and the one training call.

Each experiment names its policies (Hebbian rules, static weights, sharing schemes) and calls
`train_policies`; every `<policy>@<seed>` is a resumable unit of `badgerlab.hebbian.train_agents`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import Field

from badgerlab.evolve import ES
from badgerlab.experiment import ExperimentConfig
from badgerlab.hebbian import HebbianPolicy, Task, scaled_lr, train_agents
from badgerlab.runs import RunLike

__all__ = ["HebbianESConfig", "agents", "train_policies"]


class HebbianESConfig(ExperimentConfig):
    """The reference's ES settings that every Hebbian experiment exposes alike."""

    es: ES.field_type() = Field(  # type: ignore[valid-type]
        "openai-es-ranks", description="registered ES (reference: OpenAI-ES, centred ranks)"
    )
    l2: float = Field(0.01, ge=0, le=1, description="fitness penalty on mean(coef²)")
    lr: float | None = Field(
        None, gt=0, le=10, description="initial ES lr; None: 0.2·√(popsize/200), as reference"
    )
    actors: int = Field(
        0, ge=0, le=4096, description="Ray actors rolling out the population (0: in process)"
    )
    ray_address: str | None = Field(
        None, description="Ray cluster to join ('auto', 'ray://host:10001'); None: local Ray"
    )


def train_policies(
    cfg: Any,
    run: RunLike,
    task: Task,
    policies: Mapping[str, HebbianPolicy],
    *,
    max_steps: int,
    bodies: Sequence[Mapping[str, float] | None] = (None,),
    description: str,
    es_options: Mapping[str, Any] | None = None,
    policy_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Evolve each policy for each of the config's seeds; `{"<policy>@<seed>": result}`.

    The OpenAI-ES learning rate is the config's `lr`, else the reference's scaled to the
    population (`scaled_lr`); `es_options` adds to it (e.g. the initial σ), and
    `policy_options[name]` to that for one policy (e.g. its own tuned lr).
    """
    options: dict[str, Any] = dict(es_options or {})
    if cfg.es.startswith("openai-es"):
        options.setdefault("lr", cfg.lr or scaled_lr(cfg.popsize))
    return train_agents(
        run,
        policies,
        task,
        seeds=[cfg.seed + s for s in range(cfg.seeds)],
        popsize=cfg.popsize,
        generations=cfg.generations,
        max_steps=max_steps,
        bodies=bodies,
        l2=cfg.l2,
        es=cfg.es,
        es_options=options,
        policy_options=policy_options,
        actors=cfg.actors,
        address=cfg.ray_address,
        description=description,
    )


def agents(trained: Mapping[str, Mapping[str, Any]]) -> Iterator[tuple[str, int, Any]]:
    """`(policy name, seed, result)` for every trained unit, in training order."""
    for key, result in trained.items():
        name, seed = key.rsplit("@", 1)
        yield name, int(seed), result
