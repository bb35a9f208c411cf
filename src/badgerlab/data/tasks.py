"""Episodes of online examples for meta-learning, drawn from any classification `Dataset`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .registry import Dataset

__all__ = ["Episodes", "TaskSampler"]


@dataclass(frozen=True)
class Episodes:
    """`x` `(E, N, features)` float32, `y` `(E, N)` int64 in `0..num_classes-1`."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int


class TaskSampler:
    """Sample episodes of `length` online examples, each a task of its own.

    Each episode draws `num_classes` of the dataset's classes at random and relabels them by a
    random permutation to `0..num_classes-1` (so the label of a class is meaningless across
    episodes and must be learned online), then draws `length` examples of those classes.
    Inputs are flattened; optionally resized first (images, bilinear) and projected linearly to
    `project_to` features with a Gaussian matrix of variance 1/D, either one matrix fixed for the
    sampler (`projection="fixed"`) or a fresh one per episode (`"episode"`, the VSML
    reference's augmentation). Everything is a function of the seed passed to `sample`.

    >>> from badgerlab.data import load
    >>> s = TaskSampler(load("digits"), length=20, num_classes=5, project_to=16)
    >>> e = s.sample(3, seed=0)
    >>> tuple(e.x.shape), tuple(e.y.shape), int(e.y.max()) < 5
    ((3, 20, 16), (3, 20), True)
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        length: int,
        num_classes: int | None = None,
        project_to: int | None = None,
        projection: Literal["fixed", "episode"] = "fixed",
        resize: int | None = None,
        permute_labels: bool = True,
        seed: int = 0,
    ) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        classes = int(dataset.num_classes)
        k = classes if num_classes is None else int(num_classes)
        if not 2 <= k <= classes:
            raise ValueError(f"num_classes must be in 2..{classes} for {dataset.name!r}, got {k}")
        if project_to is not None and project_to < 1:
            raise ValueError(f"project_to must be >= 1, got {project_to}")
        if projection not in ("fixed", "episode"):
            raise ValueError(f"projection must be 'fixed' or 'episode', got {projection!r}")
        if resize is not None and (len(dataset.shape) != 3 or resize < 1):
            raise ValueError(f"resize={resize} needs an image dataset (C, H, W) and size >= 1")
        self.length, self.num_classes, self.permute_labels = length, k, permute_labels
        self.project_to, self.projection = project_to, projection
        x = dataset.x
        if resize is not None:
            x = F.interpolate(x, size=(resize, resize), mode="bilinear", antialias=True)
        self.x = x.reshape(len(dataset), -1).contiguous()  # (N, D)
        self.y = dataset.y
        self.by_class = [torch.nonzero(self.y == c).flatten() for c in range(classes)]
        if any(len(ix) == 0 for ix in self.by_class):
            raise ValueError(f"dataset {dataset.name!r} has a class without examples")
        self.features = project_to if project_to is not None else self.x.shape[1]
        self._fixed = None
        if project_to is not None and projection == "fixed":
            g = torch.Generator().manual_seed(seed)
            self._fixed = self._matrix(g, 1)[0]

    def _matrix(self, g: torch.Generator, n: int) -> torch.Tensor:
        d = self.x.shape[1]
        return torch.randn(n, d, self.project_to, generator=g) / d**0.5  # (n, D, F)

    def sample(
        self, episodes: int, *, seed: int | None = None, generator: torch.Generator | None = None
    ) -> Episodes:
        """`episodes` fresh episodes; pass `seed` or an explicit `generator` (not both)."""
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        if (seed is None) == (generator is None):
            raise ValueError("pass exactly one of seed= or generator=")
        g = generator if generator is not None else torch.Generator().manual_seed(seed)
        total = len(self.by_class)
        xs, ys = [], []
        for _ in range(episodes):
            chosen = torch.randperm(total, generator=g)[: self.num_classes]
            if not self.permute_labels:
                chosen = chosen.sort().values
            pool = torch.cat([self.by_class[c] for c in chosen.tolist()])
            new_label = torch.full((total,), -1, dtype=torch.int64)
            new_label[chosen] = torch.arange(self.num_classes)
            pick = pool[torch.randint(len(pool), (self.length,), generator=g)]
            xs.append(self.x[pick])
            ys.append(new_label[self.y[pick]])
        x = torch.stack(xs)  # (E, N, D)
        if self._fixed is not None:
            x = x @ self._fixed  # (E, N, F)
        elif self.project_to is not None:
            x = torch.bmm(x, self._matrix(g, episodes))  # (E, N, F)
        return Episodes(x.contiguous(), torch.stack(ys), self.num_classes)
