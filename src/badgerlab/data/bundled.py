"""Datasets that ship with installed packages (scikit-learn's bundled sets) or are generated."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["BUNDLED", "load_bundled"]

BUNDLED = ("digits", "iris", "wine", "breast_cancer", "mnist1d")


@lru_cache(maxsize=8)
def load_bundled(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """(x_train, y_train, x_test, y_test, is_image) for a bundled set, split 80/20 stratified,
    seed 0 (scikit-learn's sets) or as mnist1d generates it (4000/1000)."""
    if name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        d = make_dataset(get_dataset_args())
        return (
            np.asarray(d["x"], np.float32),
            np.asarray(d["y"], np.int64),
            np.asarray(d["x_test"], np.float32),
            np.asarray(d["y_test"], np.int64),
            False,
        )
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    loaders = {
        "digits": datasets.load_digits,
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
    }
    if name not in loaders:
        raise ValueError(f"unknown bundled dataset {name!r}; expected one of {BUNDLED}")
    x, y = loaders[name](return_X_y=True)
    x = np.asarray(x, np.float32)
    is_image = name == "digits"
    if is_image:
        x = x.reshape(-1, 1, 8, 8) / 16.0
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return xtr, ytr.astype(np.int64), xte, yte.astype(np.int64), is_image
