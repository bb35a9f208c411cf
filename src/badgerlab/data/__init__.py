"""Datasets (bundled, generated, IDX files, downloads) and meta-learning task samplers."""

from .registry import (
    DATASETS,
    Dataset,
    DatasetError,
    DatasetInfo,
    available,
    cache_dir,
    load,
    locate,
    search_paths,
)
from .tasks import Episodes, TaskSampler

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "Episodes",
    "TaskSampler",
    "available",
    "cache_dir",
    "load",
    "locate",
    "search_paths",
]
