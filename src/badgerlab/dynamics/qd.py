"""MAP-Elites on pyribs over a game domain: diverse agents described by their payoff profiles.

MAP-Elites (Mouret & Clune 2015, https://arxiv.org/abs/1504.04909) keeps the best solution
(elite) of each cell of a grid over behaviour descriptors; new solutions are mutated elites.
Our domain: an agent is a mixed strategy ``softmax(x)`` of a symmetric zero-sum matrix game;
its descriptor is its payoff profile against two reference opponents and its objective its
mean payoff against a reference population. Objectives can be negative, so the archive gets
``qd_score_offset`` = the lowest possible payoff (pyribs counts QD-score from that offset).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import softmax

from badgerlab.dynamics.games import _int_arg, _positive, check_antisymmetric

__all__ = ["PayoffProfileDomain", "QDHistory", "map_elites", "random_search"]


@dataclass
class PayoffProfileDomain:
    """Agents ``x ∈ R^n`` play ``softmax(x)`` in the game ``A`` (``(n, n)``, antisymmetric).

    ``objective(x) = softmax(x)ᵀ A q̄`` against the population mixture ``q̄`` ``(n,)``;
    ``measures(x) = (softmax(x)ᵀ A r_1, softmax(x)ᵀ A r_2)`` against references ``r_1, r_2``.
    All three lie in ``[min A, max A]``.
    """

    A: np.ndarray
    population: np.ndarray
    references: np.ndarray  # (2, n)

    def __post_init__(self) -> None:
        self.A = check_antisymmetric(self.A)
        n = self.A.shape[0]
        self.population = np.asarray(self.population, dtype=np.float64)
        self.references = np.asarray(self.references, dtype=np.float64)
        if self.population.shape != (n,):
            raise ValueError(f"population must have shape ({n},), got {self.population.shape}")
        if self.references.shape != (2, n):
            raise ValueError(f"references must have shape (2, {n}), got {self.references.shape}")
        for name, v in (("population", self.population), ("references", self.references)):
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{name} has NaN or infinite entries")
        if self.A.min() == self.A.max():
            raise ValueError("A must not be all zeros (the archive ranges would be empty)")

    @property
    def dim(self) -> int:
        return self.A.shape[0]

    @property
    def bounds(self) -> tuple[float, float]:
        return float(self.A.min()), float(self.A.max())

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x`` ``(B, n)`` -> objectives ``(B,)``, measures ``(B, 2)``."""
        p = softmax(np.asarray(x, dtype=np.float64), axis=-1)  # (B, n)
        payoff = p @ self.A  # (B, n): payoff of each agent against each pure strategy
        return payoff @ self.population, payoff @ self.references.T


@dataclass
class QDHistory:
    """Per-iteration archive statistics: evaluations so far, coverage, QD-score, best."""

    evaluations: list[int]
    coverage: list[float]
    qd_score: list[float]
    best: list[float]


def _archive(domain: PayoffProfileDomain, cells: int, seed: int):
    from ribs.archives import GridArchive

    cells = _int_arg("cells", cells, 1)

    lo, hi = domain.bounds
    return GridArchive(
        solution_dim=domain.dim,
        dims=[cells, cells],
        ranges=[(lo, hi), (lo, hi)],
        qd_score_offset=lo,  # objectives are >= lo, so every elite adds a positive amount
        seed=seed,
    )


def _record(hist: QDHistory, archive, evals: int) -> None:
    st = archive.stats
    hist.evaluations.append(evals)
    hist.coverage.append(float(st.coverage))
    hist.qd_score.append(float(st.qd_score))
    hist.best.append(float(st.obj_max) if st.obj_max is not None else float("nan"))


def map_elites(
    domain: PayoffProfileDomain,
    *,
    iterations: int = 200,
    batch_size: int = 32,
    emitters: int = 2,
    sigma: float = 0.5,
    cells: int = 20,
    seed: int = 0,
):
    """MAP-Elites with Gaussian emitters through pyribs' ask/tell Scheduler.

    Returns ``(archive, QDHistory)``; the history has one entry per iteration.
    """
    from ribs.emitters import GaussianEmitter
    from ribs.schedulers import Scheduler

    iterations = _int_arg("iterations", iterations, 1)
    batch_size = _int_arg("batch_size", batch_size, 1)
    emitters = _int_arg("emitters", emitters, 1)
    sigma = _positive("sigma", sigma)
    archive = _archive(domain, cells, seed)
    ems = [
        GaussianEmitter(
            archive, sigma=sigma, x0=np.zeros(domain.dim), batch_size=batch_size, seed=seed + i + 1
        )
        for i in range(emitters)
    ]
    scheduler = Scheduler(archive, ems)
    hist = QDHistory([], [], [], [])
    evals = 0
    for _ in range(iterations):
        x = scheduler.ask()
        obj, meas = domain.evaluate(x)
        scheduler.tell(obj, meas)
        evals += len(x)
        _record(hist, archive, evals)
    return archive, hist


def random_search(
    domain: PayoffProfileDomain,
    *,
    iterations: int = 200,
    batch_size: int = 64,
    sigma: float = 2.0,
    cells: int = 20,
    seed: int = 0,
):
    """The baseline: independent Gaussian samples ``x ~ N(0, σ²I)`` into the same archive."""
    iterations = _int_arg("iterations", iterations, 1)
    batch_size = _int_arg("batch_size", batch_size, 1)
    sigma = _positive("sigma", sigma)
    rng = np.random.default_rng(seed)
    archive = _archive(domain, cells, seed)
    hist = QDHistory([], [], [], [])
    evals = 0
    for _ in range(iterations):
        x = sigma * rng.standard_normal((batch_size, domain.dim))
        obj, meas = domain.evaluate(x)
        archive.add(x, obj, meas)
        evals += batch_size
        _record(hist, archive, evals)
    return archive, hist
