"""The dataset registry: where each dataset's files are looked for, and `load`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from badgerlab.errors import UserError

from .bundled import load_bundled
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
    """How to find and read one dataset. `files[split]` are (images, labels) file names inside
    `folder`; `sha256` maps a file name to the sha256 of its decompressed payload."""

    name: str
    kind: str  # "bundled" | "idx" | "custom"
    description: str
    folder: str = ""
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    label_offset: int = 0
    reader: Callable[[Path, str], tuple[np.ndarray, np.ndarray]] | None = None


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
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
    "mnist": DatasetInfo(
        "mnist",
        "idx",
        "MNIST, 28x28 handwritten digits, 60k/10k",
        folder="mnist",
        files=_MNIST_FILES,
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist",
        "idx",
        "Fashion-MNIST, 28x28 clothing images, 60k/10k",
        folder="fashion-mnist",
        files=_MNIST_FILES,
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ),
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


def _find_file(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate(name: str) -> tuple[str, Path] | None:
    """(origin, folder) holding every file of dataset `name`, or None; bundled sets give
    `("bundled", Path())`."""
    info = info_for(name)
    if info.kind == "bundled":
        return ("bundled", Path())
    needed = [f for files in info.files.values() for f in files]
    for origin, root in search_paths():
        folder = root / info.folder
        if all(_find_file(folder, f) is not None for f in needed):
            return origin, folder
    return None


def available(name: str) -> bool:
    """True when `load(name)` would work without a download."""
    return locate(name) is not None


def info_for(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def _download_default() -> bool:
    return os.environ.get("BADGERLAB_DOWNLOAD", "") == "1"


def load(name: str, split: str = "train", *, download: bool | None = None) -> Dataset:
    """Load a dataset split as a `Dataset`.

    Files are searched in `BADGERLAB_DATA`, the cache and system folders; with
    `download=True` (default: the CLI's `--download`) a missing dataset is fetched into the
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
    where = locate(name)
    if where is None:
        if download if download is not None else _download_default():
            from .download import fetch  # noqa: PLC0415 - only needed when downloading

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


@lru_cache(maxsize=4)
def _load_files(name: str, split: str, folder: str) -> Dataset:
    info = DATASETS[name]
    if info.reader is not None:
        x, y = info.reader(Path(folder), split)
    else:
        img_name, lab_name = info.files[split]
        try:
            x = read_idx(_find_file(Path(folder), img_name), sha256=info.sha256.get(img_name))
            y = read_idx(_find_file(Path(folder), lab_name), sha256=info.sha256.get(lab_name))
        except ValueError as err:
            raise DatasetError(f"dataset {name!r}: {err}") from None
    y = y.astype(np.int64) - info.label_offset
    if x.ndim == 3:
        x = x[:, None]
    xt = torch.from_numpy(x.astype(np.float32) / 255.0)
    return Dataset(xt, torch.from_numpy(y), int(y.max()) + 1, tuple(xt.shape[1:]), name)
