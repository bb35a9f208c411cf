"""Config fields shared by the Hebbian experiments: the ES penalty, its lr, and Ray."""

from __future__ import annotations

from pydantic import Field

from badgerlab.experiment import ExperimentConfig

__all__ = ["HebbianESConfig"]


class HebbianESConfig(ExperimentConfig):
    """The reference's ES settings that every Hebbian experiment exposes alike."""

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
