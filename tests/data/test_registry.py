"""Dataset loading: bundled sets, IDX parsing and checksums, search paths."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from badgerlab.data import DATASETS, DatasetError, load, locate
from badgerlab.data.idx import parse_idx, read_idx

SKLEARN = {
    "digits": (10, (1, 8, 8)),
    "iris": (3, (4,)),
    "wine": (3, (13,)),
    "breast_cancer": (2, (30,)),
}


@pytest.mark.parametrize("name", sorted(SKLEARN))
def test_sklearn_sets_split_80_20_stratified(name):
    tr, te = load(name, "train"), load(name, "test")
    classes, shape = SKLEARN[name]
    assert tr.num_classes == classes and tr.shape == shape
    total = len(tr) + len(te)
    assert len(te) == pytest.approx(0.2 * total, abs=1)
    assert tr.x.dtype == torch.float32 and tr.y.dtype == torch.int64
    assert set(tr.y.tolist()) == set(range(classes))
    # stratified: class proportions agree between splits
    p_tr = torch.bincount(tr.y, minlength=classes) / len(tr)
    p_te = torch.bincount(te.y, minlength=classes) / len(te)
    assert torch.allclose(p_tr, p_te, atol=0.03)


def test_images_in_unit_range_and_tabular_standardised_on_train():
    d = load("digits")
    assert float(d.x.min()) == 0.0 and float(d.x.max()) == 1.0
    w_tr, w_te = load("wine", "train"), load("wine", "test")
    assert torch.allclose(w_tr.x.mean(0), torch.zeros(13), atol=1e-5)
    assert torch.allclose(w_tr.x.std(0, unbiased=False), torch.ones(13), atol=1e-4)
    assert not torch.allclose(w_te.x.mean(0), torch.zeros(13), atol=1e-3)


def test_bad_name_and_split():
    with pytest.raises(DatasetError, match="nope"):
        load("nope")
    with pytest.raises(DatasetError, match="valid"):
        load("digits", "valid")


def _idx(arr: np.ndarray, code: int) -> bytes:
    head = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.tobytes()


def test_idx_parse_and_errors(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(_idx(arr, 8)), arr)
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="size"):
        parse_idx(_idx(arr, 8)[:-1])
    path = tmp_path / "f.gz"
    path.write_bytes(gzip.compress(_idx(arr, 8)))
    assert np.array_equal(read_idx(path), arr)
    with pytest.raises(ValueError, match="sha256"):
        read_idx(path, sha256="0" * 64)


def test_idx_dataset_found_in_badgerlab_data_with_checksums(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    imgs = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labs = rng.integers(0, 10, 7).astype(np.uint8)
    payloads = {}
    for split in ("train", "test"):
        i_name, l_name = DATASETS["mnist"].files[split]
        payloads[i_name], payloads[l_name] = _idx(imgs, 8), _idx(labs, 8)
    for name, payload in payloads.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
    monkeypatch.setenv("BADGERLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("BADGERLAB_CACHE", str(tmp_path / "cache"))
    assert locate("mnist") == ("BADGERLAB_DATA", folder)
    # Our fake files do not match the real MNIST checksums: loading must refuse them.
    with pytest.raises(DatasetError, match="sha256"):
        load("mnist", "test")


def test_real_mnist_and_fashion(require):
    require("mnist")
    require("fashion_mnist")
    for name in ("mnist", "fashion_mnist"):
        te = load(name, "test")
        assert te.x.shape == (10000, 1, 28, 28) and te.num_classes == 10
        assert 0.0 <= float(te.x.min()) and float(te.x.max()) <= 1.0
        assert torch.bincount(te.y).min() > 800
