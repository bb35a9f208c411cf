"""Dataset loading: bundled sets, IDX parsing and checksums, search paths."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from badgerlab.data import DatasetError, load, locate
from badgerlab.data.download import get_source
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
        i_name, l_name = get_source("mnist").splits[split]
        payloads[i_name], payloads[l_name] = _idx(imgs, 8), _idx(labs, 8)
    for rel, payload in payloads.items():
        (tmp_path / "data" / rel).write_bytes(gzip.compress(payload))
    monkeypatch.setenv("BADGERLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("BADGERLAB_CACHE", str(tmp_path / "cache"))
    assert locate("mnist") == ("BADGERLAB_DATA", tmp_path / "data")
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


def test_emnist_letters_transposed_and_shifted_and_cifar_read(tmp_path, monkeypatch):
    # Files in the true formats, made here: EMNIST stores images column-major, labels 1..26.
    from badgerlab.data.cifar import CIFAR10_FILES

    root = tmp_path / "data"
    (root / "emnist").mkdir(parents=True)
    img = np.zeros((2, 28, 28), np.uint8)
    img[:, 0, 5] = 255  # stored row 0, column 5: upright it is row 5, column 0
    src = get_source("emnist_letters")
    for split in ("train", "test"):
        i_rel, l_rel = src.splits[split]
        (root / i_rel).write_bytes(gzip.compress(_idx(img, 8)))
        (root / l_rel).write_bytes(gzip.compress(_idx(np.array([1, 26], np.uint8), 8)))
    (root / "cifar-10-batches-bin").mkdir()
    for names in CIFAR10_FILES.values():
        for i, fname in enumerate(names):
            rec = np.zeros((3, 1 + 3072), np.uint8)
            rec[:, 0] = [i, 9, 3]
            rec[:, 1] = 255
            (root / "cifar-10-batches-bin" / fname).write_bytes(rec.tobytes())
    monkeypatch.setenv("BADGERLAB_DATA", str(root))
    monkeypatch.setenv("BADGERLAB_CACHE", str(tmp_path / "cache"))
    e = load("emnist_letters", "test")
    assert e.y.tolist() == [0, 25] and e.shape == (1, 28, 28)
    assert float(e.x[0, 0, 5, 0]) == 1.0 and float(e.x[0, 0, 0, 5]) == 0.0
    c = load("cifar10", "train")
    assert c.shape == (3, 32, 32) and len(c) == 15 and c.num_classes == 10
    assert c.y[:3].tolist() == [0, 9, 3] and float(c.x[0, 0, 0, 0]) == 1.0
