"""The dataset registry: where each dataset's files are looked for, and `load`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from badgerlab.errors import UserError

from .bundled import load_bundled
from .cifar import read_cifar10
from .download import get_source
from .idx import read_idx

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "available",
    "cache_dir",
    "load",
    "locate",
    "search_paths",
]

SYSTEM_DIRS = (Path("/usr/share/datasets"),)


class DatasetError(UserError):
    """An unknown dataset, a bad split, or files that are missing or corrupt."""


@dataclass(frozen=True)
class Dataset:
    """`x` float32 `(N, *shape)` (images in [0, 1], tabular data standardised on the train
    split), `y` int64 in `0..num_classes-1`."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    shape: tuple[int, ...]
    name: str = ""

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} rows but y has {self.y.shape[0]}")
        if tuple(self.x.shape[1:]) != tuple(self.shape):
            raise ValueError(f"x rows have shape {tuple(self.x.shape[1:])}, not {self.shape}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def features(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset known to `load`: `kind` is `bundled` (ships with a package or is generated),
    `idx`, `cifar` or `text` (files described by `badgerlab.data.download.SOURCES[name]`;
    `text` sets are read by their method's module, not by `load`)."""

    name: str
    kind: str
    description: str


_FILE_SETS = {
    "mnist": ("idx", "MNIST, 28x28 handwritten digits, 60k/10k"),
    "fashion_mnist": ("idx", "Fashion-MNIST, 28x28 clothing images, 60k/10k"),
    "kmnist": ("idx", "Kuzushiji-MNIST, 28x28 cursive Japanese characters, 60k/10k"),
    "emnist_letters": ("idx", "EMNIST letters, 28x28, 26 classes, 124.8k/20.8k"),
    "cifar10": ("cifar", "CIFAR-10, 32x32 colour images, 10 classes, 50k/10k"),
    "babi": ("text", "bAbI tasks 1-2 (en, en-10k) text; read with badgerlab.plasticity.babi"),
}

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        "digits", "bundled", "scikit-learn's 8x8 handwritten digits, 10 classes"
    ),
    "iris": DatasetInfo("iris", "bundled", "scikit-learn's iris, 4 features, 3 classes"),
    "wine": DatasetInfo("wine", "bundled", "scikit-learn's wine, 13 features, 3 classes"),
    "breast_cancer": DatasetInfo(
        "breast_cancer", "bundled", "scikit-learn's breast cancer, 30 features, 2 classes"
    ),
    "mnist1d": DatasetInfo("mnist1d", "bundled", "MNIST-1D generated offline, 40 features"),
    **{name: DatasetInfo(name, kind, text) for name, (kind, text) in _FILE_SETS.items()},
}


def cache_dir() -> Path:
    """Where downloads go: `BADGERLAB_CACHE`, default `~/.cache/badgerlab`."""
    return Path(os.environ.get("BADGERLAB_CACHE") or Path.home() / ".cache" / "badgerlab")


def search_paths() -> list[tuple[str, Path]]:
    """(origin, root) pairs searched in order: BADGERLAB_DATA entries, the cache, system dirs."""
    out = [
        ("BADGERLAB_DATA", Path(p))
        for p in os.environ.get("BADGERLAB_DATA", "").split(os.pathsep)
        if p
    ]
    out.append(("cache", cache_dir()))
    out.extend(("system", p) for p in SYSTEM_DIRS)
    return out


def _find_file(root: Path, rel: str) -> Path | None:
    """`rel` under `root`, also accepted without its `.gz` (files decompressed by hand)."""
    for candidate in (root / rel, root / rel.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def locate(name: str) -> tuple[str, Path] | None:
    """(origin, root) whose tree holds every file of dataset `name`, or None; bundled sets give
    `("bundled", Path())`."""
    info = info_for(name)
    if info.kind == "bundled":
        return ("bundled", Path())
    src = get_source(name)
    for origin, root in search_paths():
        if all(_find_file(root, f) is not None for f in src.files):
            return origin, root
    return None


def available(name: str) -> bool:
    """True when `load(name)` would work without a download."""
    return locate(name) is not None


def info_for(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def load(name: str, split: str = "train", *, download: bool = False) -> Dataset:
    """Load a dataset split as a `Dataset`.

    Files are searched in `BADGERLAB_DATA`, the cache and system folders; with
    `download=True` (the CLI's `--download` reaches it as `run.download`) a missing dataset is fetched into the
    cache first. Checksums of IDX payloads are verified on load.

    >>> d = load("iris")
    >>> d.x.shape, d.num_classes, round(float(d.x.mean()), 6) == 0.0
    (torch.Size([120, 4]), 3, True)
    """
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    info = info_for(name)
    if info.kind == "bundled":
        return _load_bundled(name, split)
    if info.kind == "text":
        raise DatasetError(
            f"dataset {name!r} is text, not tensors: read it with "
            "badgerlab.plasticity.babi.load_task (fetch it with "
            f"`badgerlab datasets --download {name}`)"
        )
    where = locate(name)
    if where is None:
        if download:
            from .download import fetch

            fetch(name, cache=cache_dir())
            where = locate(name)
        if where is None:
            raise DatasetError(
                f"dataset {name!r} not found in BADGERLAB_DATA, {cache_dir()} or "
                f"{', '.join(map(str, SYSTEM_DIRS))}; fetch it with "
                f"`badgerlab datasets --download {name}` or point BADGERLAB_DATA at its folder"
            )
    return _load_files(name, split, str(where[1]))


@lru_cache(maxsize=8)
def _load_bundled(name: str, split: str) -> Dataset:
    xtr, ytr, xte, yte, is_image = load_bundled(name)
    x, y = (xtr, ytr) if split == "train" else (xte, yte)
    if not is_image:
        # Tabular data is standardised with the train split's statistics, for both splits.
        mu, sd = xtr.mean(0), xtr.std(0)
        x = (x - mu) / np.where(sd > 0, sd, 1.0)
    classes = int(max(ytr.max(), yte.max())) + 1
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return Dataset(xt, torch.from_numpy(y.astype(np.int64)), classes, tuple(xt.shape[1:]), name)


def _payload_sha256(src, rel: str) -> str | None:
    for d in src.downloads:
        if d.path == rel and d.of == "payload" and d.checksum.startswith("sha256:"):
            return d.checksum.removeprefix("sha256:")
    return None


@lru_cache(maxsize=4)
def _load_files(name: str, split: str, root: str) -> Dataset:
    src = get_source(name)
    files = [_find_file(Path(root), rel) for rel in src.splits[split]]
    try:
        if DATASETS[name].kind == "cifar":
            x, y = read_cifar10(files[0].parent, split)
        else:
            img, lab = (
                read_idx(path, sha256=_payload_sha256(src, rel))
                for path, rel in zip(files, src.splits[split], strict=True)
            )
            x, y = img, lab
    except (ValueError, FileNotFoundError) as err:
        raise DatasetError(f"dataset {name!r}: {err}") from None
    if src.transpose:
        x = x.transpose(0, 2, 1)
    y = y.astype(np.int64) - src.label_offset
    if x.ndim == 3:
        x = x[:, None]
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32) / 255.0)
    return Dataset(xt, torch.from_numpy(y), int(y.max()) + 1, tuple(xt.shape[1:]), name)
