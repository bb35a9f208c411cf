"""Population evaluation over Ray actors that survives an actor dying mid-generation."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["RayEvaluator"]


class _Worker:
    """Body of one Ray actor: evaluates shares ``(p, D)`` of the population."""

    def __init__(self, fitness_fn: Callable[..., Tensor], threads: int) -> None:
        torch.set_num_threads(threads)
        self.fitness_fn = fitness_fn

    def evaluate(self, x: np.ndarray, *args: Any) -> np.ndarray:
        with torch.no_grad():
            f = self.fitness_fn(torch.from_numpy(x), *args)
        return torch.as_tensor(f).detach().cpu().numpy()

    def pid(self) -> int:
        return os.getpid()


class RayEvaluator:
    """Evaluate a population ``x (P, D)`` by splitting it into one share per Ray actor.

    ``fitness_fn(x_share (p, D), *args) -> (p,)`` must be picklable (module-level function or a
    closure cloudpickle can ship) and give each row's fitness independently of the others, so
    the result equals ``fitness_fn(x, *args)`` computed locally. ``args`` (e.g. this
    generation's data) are put in Ray's object store once per call and shared by all actors.

    When an actor dies during a call, its share is sent to the next actor, a replacement actor
    is started for later calls, and the call returns the full fitness vector; more than
    ``max_failures`` deaths within one call raise ``RuntimeError``. Errors raised by
    ``fitness_fn`` itself are not retried.

    Ray: if it is not running yet, ``ray.init(address=address)`` is called (``address=None``
    starts a local Ray with ``actors`` CPUs; ``"auto"`` or ``"ray://host:10001"`` joins a
    cluster) and ``close()`` shuts it down again. Usage statistics are off unless the
    environment enables them. Each actor asks Ray for one CPU: a Ray started elsewhere with
    fewer CPUs than ``actors`` leaves the extra actors waiting.

    Example (not run here, it starts Ray)::

        with RayEvaluator(sphere, actors=4) as evaluate:
            for _ in range(100):
                x = es.ask(state, generator=g)
                state = es.tell(state, x, evaluate(x))
    """

    def __init__(
        self,
        fitness_fn: Callable[..., Tensor],
        *,
        actors: int | None = None,
        address: str | None = None,
        threads: int = 1,
        max_failures: int = 3,
    ) -> None:
        if not callable(fitness_fn):
            raise TypeError(f"fitness_fn must be callable, got {type(fitness_fn).__name__}")
        if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int)):
            raise TypeError(f"actors must be an int or None, got {actors!r}")
        if actors is not None and actors < 1:
            raise ValueError(f"actors must be >= 1, got {actors}")
        if actors is None and address is None:
            raise ValueError("give actors=N for a local Ray, or address= to join a cluster")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if max_failures < 0:
            raise ValueError(f"max_failures must be >= 0, got {max_failures}")
        import ray

        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None:
                kwargs["num_cpus"] = actors
            ray.init(address=address, **kwargs)
            self._owns_ray = True
        if actors is None:
            actors = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.fitness_fn = fitness_fn
        self.threads = threads
        self.max_failures = max_failures
        #: how many actor deaths were recovered from, over the evaluator's lifetime
        self.failures = 0
        self._remote = ray.remote(num_cpus=1)(_Worker)
        self.actors = [self._spawn() for _ in range(actors)]

    def _spawn(self) -> Any:
        return self._remote.remote(self.fitness_fn, self.threads)

    def __call__(self, x: Tensor, *args: Any) -> Tensor:
        """Fitness ``(P,)`` of ``x (P, D)``, in row order."""
        if not isinstance(x, Tensor) or x.ndim != 2:
            raise ValueError(f"x must be a tensor of shape (P, D), got {getattr(x, 'shape', x)!r}")
        ray = self._ray
        refs = [ray.put(a) for a in args]
        shares = [s.detach().cpu().numpy() for s in torch.tensor_split(x, len(self.actors))]
        pending = {}
        for i, share in enumerate(shares):
            if len(share):
                pending[self.actors[i].evaluate.remote(share, *refs)] = (i, i)
        results: list[np.ndarray | None] = [np.zeros(0)] * len(shares)
        failures = 0
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            share_index, actor_index = pending.pop(ready)
            try:
                results[share_index] = ray.get(ready)
            except ray.exceptions.RayActorError:
                failures += 1
                self.failures += 1
                if failures > self.max_failures:
                    raise RuntimeError(
                        f"{failures} Ray actors died while evaluating one population "
                        f"(max_failures={self.max_failures})"
                    ) from None
                self.actors[actor_index] = self._spawn()
                # The next actor is already running, so the lost share does not wait for the
                # replacement to start; with a single actor the replacement takes it.
                other = (actor_index + 1) % len(self.actors)
                ref = self.actors[other].evaluate.remote(shares[share_index], *refs)
                pending[ref] = (share_index, other)
        fitness = torch.from_numpy(np.concatenate(results))
        if tuple(fitness.shape) != (x.shape[0],):
            raise ValueError(
                f"fitness_fn returned {tuple(fitness.shape)} values in all for P={x.shape[0]}"
            )
        return fitness.to(x.device)

    def close(self) -> None:
        """Stop the actors, and Ray too if this evaluator started it."""
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False

    def __enter__(self) -> RayEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
