"""Downloads against an HTTP server on 127.0.0.1 serving files in the true formats."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import socket
import struct
import tarfile
import threading
import urllib.error
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from badgerlab.data import download as dl
from badgerlab.data.cifar import RECORD_BYTES, parse_cifar10_batch, read_cifar10
from badgerlab.data.download import ChecksumError, Download, DownloadError, Source, fetch, verify
from badgerlab.data.idx import read_idx

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


# ---------------------------------------------------------------------------------------------
# files in the true formats


def idx_bytes(a: np.ndarray) -> bytes:
    """IDX: magic 00 00 08 <ndim>, big-endian uint32 sizes, then the uint8 data."""
    return (
        struct.pack(">BBBB", 0, 0, 0x08, a.ndim)
        + struct.pack(f">{a.ndim}I", *a.shape)
        + (a.astype(np.uint8).tobytes())
    )


def gz(b: bytes) -> bytes:
    return gzip.compress(b, mtime=0)


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def mnist_like(seed: int, n: int = 6, classes: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, classes, (n,), dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n // 2, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, classes, (n // 2,), dtype=np.uint8),
    }


def idx_source(name: str, folder: str, arrays: dict[str, np.ndarray], *, of: str) -> Source:
    """A Source like the real MNIST-family entries, with the test files' checksums: sha256 of
    the decompressed payload (`of="payload"`) or md5 of the .gz as served (`of="file"`)."""
    downloads = []
    for base, a in arrays.items():
        payload = idx_bytes(a)
        check = f"sha256:{sha256(payload)}" if of == "payload" else f"md5:{md5(gz(payload))}"
        downloads.append(
            Download(f"{folder}/{base}.gz", (f"https://example.invalid/{base}.gz",), check, of=of)
        )
    files = [d.path for d in downloads]
    return Source(
        name,
        folder,
        tuple(downloads),
        {"train": tuple(files[:2]), "test": tuple(files[2:])},
        verified=of == "payload",
    )


def serve_idx(arrays: dict[str, np.ndarray], folder: str) -> dict[str, bytes]:
    return {f"/{folder}/{k}.gz": gz(idx_bytes(a)) for k, a in arrays.items()}


def cifar_batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, bytes]:
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, (n,), dtype=np.uint8)
    # A record: label byte, then the R, G and B planes, each 32x32 row-major.
    records = np.concatenate([y[:, None], x.reshape(n, -1)], axis=1)
    return x, y.astype(np.int64), records.tobytes()


def cifar_archive(seed: int = 0, n: int = 3) -> tuple[bytes, dict[str, tuple]]:
    rng = np.random.default_rng(seed)
    batches = {}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        for fname in names:
            x, y, raw = cifar_batch(rng, n)
            batches[fname] = (x, y)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{fname}")
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
        meta = b"airplane\nautomobile\n"
        info = tarfile.TarInfo("cifar-10-batches-bin/batches.meta.txt")
        info.size = len(meta)
        tf.addfile(info, io.BytesIO(meta))
    return buf.getvalue(), batches


def cifar_source(archive: bytes, n: int) -> Source:
    real = dl.SOURCES["cifar10"]
    (d,) = real.downloads
    return Source(
        "cifar10",
        real.folder,
        (Download(d.path, d.urls, f"md5:{md5(archive)}", extract=d.extract),),
        real.splits,
        verified=False,
        sizes={k: n * RECORD_BYTES for k in real.sizes},
    )


# ---------------------------------------------------------------------------------------------
# the server


@dataclass
class Server:
    """`files` maps URL paths to bytes. Paths in `drop_first` close the connection after half
    their bytes on the first request; `ranges` makes the server honour `Range: bytes=N-`."""

    files: dict[str, bytes]
    drop_first: set[str] = field(default_factory=set)
    ranges: bool = False
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location of a 302
    url: str = ""


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server({})
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            with lock:
                state.requests.append((self.path, rng))
                first = sum(p == self.path for p, _ in state.requests) == 1
            if self.path in state.redirects:
                self.send_response(302)
                self.send_header("Location", state.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            start = 0
            if state.ranges and rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if first and self.path in state.drop_first:
                self.wfile.write(body[start : len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(body[start:])

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def leftovers(root: Path) -> list[str]:
    """Every file under root, relative, for 'nothing that looks valid was left' checks."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def fetch_fast(name: str, root: Path, **kw):
    return fetch(name, cache=root, backoff=0.0, timeout=10.0, **kw)


# ---------------------------------------------------------------------------------------------
# success


@pytest.mark.parametrize("of", ["payload", "file"])
def test_fetch_idx_files_installs_verified_files(server: Server, tmp_path: Path, of: str) -> None:
    arrays = mnist_like(0)
    src = idx_source("mnist", "mnist", arrays, of=of)
    server.files.update(serve_idx(arrays, "mnist"))
    seen: dict[str, tuple[int, int | None]] = {}

    paths = fetch_fast(
        "mnist",
        tmp_path,
        base_url=server.url,
        sources={"mnist": src},
        progress=lambda label, done, total: seen.__setitem__(label, (done, total)),
    )

    assert [p.relative_to(tmp_path).as_posix() for p in paths] == list(src.files)
    for p, (_, a) in zip(paths, arrays.items(), strict=True):
        got = read_idx(p)
        assert got.dtype == np.uint8 and np.array_equal(got, a)
    assert leftovers(tmp_path) == sorted(src.files)  # no temporary file remains
    assert set(seen) == set(src.files)
    assert all(done == total == len(server.files[f"/{k}"]) for k, (done, total) in seen.items())
    assert verify("mnist", tmp_path, sources={"mnist": src})

    # Present and valid files are not downloaded again.
    n = len(server.requests)
    fetch_fast("mnist", tmp_path, base_url=server.url, sources={"mnist": src})
    assert len(server.requests) == n


def test_mirror_from_environment(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = mnist_like(1)
    src = idx_source("kmnist", "kmnist", arrays, of="file")
    server.files.update(serve_idx(arrays, "kmnist"))
    monkeypatch.setenv("BADGERLAB_MIRROR", server.url + "/")
    fetch_fast("kmnist", tmp_path, sources={"kmnist": src})
    assert {p for p, _ in server.requests} == {f"/{f}" for f in src.files}
    assert verify("kmnist", tmp_path, sources={"kmnist": src})


def test_fetch_cifar_binary_archive(server: Server, tmp_path: Path) -> None:
    archive, batches = cifar_archive(seed=3, n=3)
    src = cifar_source(archive, 3)
    server.files["/cifar-10-binary.tar.gz"] = archive

    paths = fetch_fast("cifar10", tmp_path, base_url=server.url, sources={"cifar10": src})

    assert all(p.is_file() for p in paths)
    # Only the batches and the manifest are installed; the archive itself is gone.
    assert leftovers(tmp_path) == sorted([*src.files, f"cifar-10-batches-bin/{dl.MANIFEST}"])
    folder = tmp_path / "cifar-10-batches-bin"
    for split, names in (
        ("train", [f"data_batch_{i}.bin" for i in range(1, 6)]),
        ("test", ["test_batch.bin"]),
    ):
        x, y = read_cifar10(folder, split)
        assert x.dtype == np.uint8 and x.shape == (3 * len(names), 3, 32, 32)
        assert y.dtype == np.int64
        assert np.array_equal(x, np.concatenate([batches[f][0] for f in names]))
        assert np.array_equal(y, np.concatenate([batches[f][1] for f in names]))
    assert verify("cifar10", tmp_path, sources={"cifar10": src})

    # Damage one batch: verify notices through the manifest, and fetch repairs it.
    bad = folder / "data_batch_3.bin"
    raw = bytearray(bad.read_bytes())
    raw[100] ^= 0xFF
    bad.write_bytes(bytes(raw))
    assert not verify("cifar10", tmp_path, sources={"cifar10": src})
    fetch_fast("cifar10", tmp_path, base_url=server.url, sources={"cifar10": src})
    assert verify("cifar10", tmp_path, sources={"cifar10": src})
    assert len(server.requests) == 2

    # Without a manifest (a copy made by hand) the record-size check applies.
    (folder / dl.MANIFEST).unlink()
    assert verify("cifar10", tmp_path, sources={"cifar10": src})
    bad.write_bytes(bad.read_bytes()[:-1])
    assert not verify("cifar10", tmp_path, sources={"cifar10": src})


def test_fetch_emnist_letters_zip(server: Server, tmp_path: Path) -> None:
    real = dl.SOURCES["emnist_letters"]
    assert real.label_offset == 1 and real.transpose
    rng = np.random.default_rng(5)
    arrays = {
        "emnist-letters-train-images-idx3-ubyte.gz": rng.integers(0, 256, (4, 28, 28)),
        "emnist-letters-train-labels-idx1-ubyte.gz": np.array([1, 26, 3, 4]),
        "emnist-letters-test-images-idx3-ubyte.gz": rng.integers(0, 256, (2, 28, 28)),
        "emnist-letters-test-labels-idx1-ubyte.gz": np.array([26, 1]),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for member, a in arrays.items():
            zf.writestr(f"gzip/{member}", gz(idx_bytes(a)))
        zf.writestr("gzip/emnist-digits-train-labels-idx1-ubyte.gz", gz(b"not needed"))
    archive = buf.getvalue()
    (d,) = real.downloads
    src = Source(
        real.name,
        real.folder,
        (Download(d.path, d.urls, f"md5:{md5(archive)}", extract=d.extract),),
        real.splits,
        verified=False,
    )
    server.files["/emnist/gzip.zip"] = archive

    paths = fetch_fast("emnist_letters", tmp_path, base_url=server.url, sources={real.name: src})

    for p in paths:
        assert np.array_equal(read_idx(p), arrays[p.name])
    assert not (tmp_path / "emnist" / "emnist-digits-train-labels-idx1-ubyte.gz").exists()
    assert verify("emnist_letters", tmp_path, sources={real.name: src})


# ---------------------------------------------------------------------------------------------
# failures


@pytest.mark.parametrize("ranges", [False, True])
def test_dropped_connection_is_retried_cleanly(
    server: Server, tmp_path: Path, ranges: bool
) -> None:
    arrays = mnist_like(2, n=40)  # big enough that half the gzip is a real prefix
    src = idx_source("mnist", "mnist", arrays, of="payload")
    server.files.update(serve_idx(arrays, "mnist"))
    victim = "/mnist/train-images-idx3-ubyte.gz"
    server.drop_first.add(victim)
    server.ranges = ranges

    paths = fetch_fast("mnist", tmp_path, base_url=server.url, sources={"mnist": src})

    hits = [rng for path, rng in server.requests if path == victim]
    half = len(server.files[victim]) // 2
    # The retry asks for the missing tail; a server without Range support answers 200 with
    # the whole file, and the client starts over from byte 0. Both must give the same file.
    assert hits == [None, f"bytes={half}-"]
    assert np.array_equal(read_idx(paths[0]), arrays["train-images-idx3-ubyte"])
    assert verify("mnist", tmp_path, sources={"mnist": src})
    assert leftovers(tmp_path) == sorted(src.files)


def test_dropped_connection_without_retries_fails_and_leaves_nothing(
    server: Server, tmp_path: Path
) -> None:
    arrays = mnist_like(2, n=40)
    src = idx_source("mnist", "mnist", arrays, of="payload")
    server.files.update(serve_idx(arrays, "mnist"))
    server.drop_first.add("/mnist/train-images-idx3-ubyte.gz")
    with pytest.raises(DownloadError, match="connection closed after"):
        fetch_fast("mnist", tmp_path, base_url=server.url, sources={"mnist": src}, retries=0)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("of", ["payload", "file"])
def test_checksum_mismatch_names_file_and_both_hashes(
    server: Server, tmp_path: Path, of: str
) -> None:
    arrays = mnist_like(3)
    src = idx_source("mnist", "mnist", arrays, of=of)
    served = serve_idx(arrays, "mnist")
    # The server's train labels differ from the ones the checksum was taken of.
    tampered = arrays["train-labels-idx1-ubyte"].copy()
    tampered[0] = (tampered[0] + 1) % 10
    served["/mnist/train-labels-idx1-ubyte.gz"] = gz(idx_bytes(tampered))
    server.files.update(served)

    with pytest.raises(ChecksumError) as info:
        fetch_fast("mnist", tmp_path, base_url=server.url, sources={"mnist": src})

    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    want = src.downloads[1].checksum.split(":")[1]
    got = sha256(idx_bytes(tampered)) if of == "payload" else md5(gz(idx_bytes(tampered)))
    assert "mnist/train-labels-idx1-ubyte.gz" in msg and want in msg and got in msg
    # The file before it was installed; the bad one left nothing (no temporary file either).
    assert leftovers(tmp_path) == ["mnist/train-images-idx3-ubyte.gz"]
    assert not verify("mnist", tmp_path, sources={"mnist": src})


def test_corrupt_gzip_is_a_checksum_error(server: Server, tmp_path: Path) -> None:
    arrays = mnist_like(4)
    src = idx_source("mnist", "mnist", arrays, of="payload")
    server.files.update(serve_idx(arrays, "mnist"))
    body = server.files["/mnist/train-images-idx3-ubyte.gz"]
    server.files["/mnist/train-images-idx3-ubyte.gz"] = body[: len(body) // 2]
    with pytest.raises(ChecksumError, match="unreadable gzip"):
        fetch_fast("mnist", tmp_path, base_url=server.url, sources={"mnist": src})
    assert leftovers(tmp_path) == []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_error_names_url_and_remedy(tmp_path: Path) -> None:
    arrays = mnist_like(5)
    src = idx_source("mnist", "mnist", arrays, of="payload")
    base = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(DownloadError) as info:
        fetch_fast("mnist", tmp_path, base_url=base, sources={"mnist": src})
    msg = str(info.value)
    assert f"{base}/mnist/train-images-idx3-ubyte.gz" in msg
    assert "Connection refused" in msg or "ConnectionRefused" in msg
    assert "`--download` needs network access" in msg and "BADGERLAB_DATA" in msg
    assert not isinstance(info.value, ChecksumError)
    assert leftovers(tmp_path) == []


def test_unreachable_hosts_are_not_retried_but_drops_are() -> None:
    refused = urllib.error.URLError(ConnectionRefusedError(111, "refused"))
    dns = urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
    assert not dl._transient(refused) and not dl._transient(dns)
    assert dl._transient(ConnectionResetError()) and dl._transient(TimeoutError())
    assert dl._transient(urllib.error.HTTPError("u", 503, "busy", None, None))  # type: ignore[arg-type]
    assert not dl._transient(urllib.error.HTTPError("u", 404, "gone", None, None))  # type: ignore[arg-type]


def test_http_404_tries_next_url_then_reports_each(server: Server, tmp_path: Path) -> None:
    arrays = mnist_like(6)
    good = idx_source("mnist", "mnist", arrays, of="payload")
    # First URL missing on the server, second present: the download falls over to it.
    downloads = tuple(
        Download(
            d.path, (f"{server.url}/missing/{i}", f"{server.url}/{d.path}"), d.checksum, of=d.of
        )
        for i, d in enumerate(good.downloads)
    )
    src = Source("mnist", "mnist", downloads, good.splits, verified=True)
    server.files.update(serve_idx(arrays, "mnist"))
    fetch_fast("mnist", tmp_path, sources={"mnist": src})
    assert verify("mnist", tmp_path, sources={"mnist": src})

    del server.files["/mnist/t10k-labels-idx1-ubyte.gz"]
    (tmp_path / "mnist/t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DownloadError) as info:
        fetch_fast("mnist", tmp_path, sources={"mnist": src})
    msg = str(info.value)
    assert f"{server.url}/missing/3 (HTTP 404 Not Found)" in msg
    assert f"{server.url}/mnist/t10k-labels-idx1-ubyte.gz (HTTP 404 Not Found)" in msg


def test_interrupted_download_leaves_no_file(server: Server, tmp_path: Path) -> None:
    arrays = mnist_like(7)
    src = idx_source("mnist", "mnist", arrays, of="payload")
    server.files.update(serve_idx(arrays, "mnist"))

    def interrupt(label: str, done: int, total: int | None) -> None:
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch_fast(
            "mnist", tmp_path, base_url=server.url, sources={"mnist": src}, progress=interrupt
        )
    assert leftovers(tmp_path) == []


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="no download source for dataset 'nope'"):
        fetch("nope", cache=tmp_path)
    with pytest.raises(ValueError, match="retries"):
        fetch("mnist", cache=tmp_path, retries=-1)
    with pytest.raises(ValueError, match="checksum"):
        Download("a/b", ("u",), "crc32:00")
    with pytest.raises(TypeError, match="Source"):
        dl.register_source("mnist")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# the real table


def test_real_source_table_is_well_formed() -> None:
    assert set(dl.SOURCES) >= {"mnist", "fashion_mnist", "kmnist", "emnist_letters", "cifar10"}
    for name, src in dl.SOURCES.items():
        assert src.name == name
        assert set(src.splits) == {"train", "test"}
        assert all(f.startswith(src.folder + "/") for f in src.files)
        assert all(u.startswith(("http://", "https://")) for d in src.downloads for u in d.urls)
        installed = {
            p
            for d in src.downloads
            for p in ([d.path] if d.extract is None else d.extract.values())
        }
        assert installed == set(src.files)
        # "verified" means: every file is checked by a sha256 of a payload we held.
        assert src.verified == all(
            d.extract is None and d.checksum.startswith("sha256:") and d.of == "payload"
            for d in src.downloads
        )
    assert [s.name for s in dl.SOURCES.values() if s.verified] == ["mnist", "fashion_mnist"]


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_checksums_match_the_shared_copies(name: str) -> None:
    if not (SHARED / dl.SOURCES[name].folder).is_dir():
        pytest.skip(f"no shared copy of {name} at {SHARED}")
    assert verify(name, SHARED)


def test_parse_cifar_rejects_bad_sizes_and_labels() -> None:
    with pytest.raises(ValueError, match="3073-byte"):
        parse_cifar10_batch(bytes(RECORD_BYTES + 1))
    with pytest.raises(ValueError, match="label 10"):
        parse_cifar10_batch(bytes([10]) + bytes(RECORD_BYTES - 1))
    with pytest.raises(ValueError, match="split"):
        read_cifar10(Path(os.devnull), "val")


def test_real_table_fetches_real_mnist_from_a_mirror(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped source table, its real checksums and the real files, over 127.0.0.1."""
    folder = SHARED / "mnist"
    if not folder.is_dir():
        pytest.skip(f"no shared copy of MNIST at {SHARED}")
    server.files.update({f"/mnist/{p.name}": p.read_bytes() for p in folder.glob("*.gz")})
    monkeypatch.setenv("BADGERLAB_MIRROR", server.url)
    monkeypatch.setenv("BADGERLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BADGERLAB_DATA", raising=False)
    from badgerlab.data import load, locate

    assert locate("mnist") is None
    test = load("mnist", "test", download=True)  # the registry calls fetch
    assert test.x.shape == (10000, 1, 28, 28) and test.num_classes == 10
    assert locate("mnist") == ("cache", tmp_path / "cache")
    assert verify("mnist", tmp_path / "cache")
    assert leftovers(tmp_path / "cache") == sorted(dl.SOURCES["mnist"].files)


def test_cli_datasets_download_fetches_into_the_cache(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`badgerlab datasets --download mnist` over 127.0.0.1, then the listing shows the cache."""
    folder = SHARED / "mnist"
    if not folder.is_dir():
        pytest.skip(f"no shared copy of MNIST at {SHARED}")
    server.files.update({f"/mnist/{p.name}": p.read_bytes() for p in folder.glob("*.gz")})
    monkeypatch.setenv("BADGERLAB_MIRROR", server.url)
    monkeypatch.setenv("BADGERLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BADGERLAB_DATA", str(tmp_path / "nothing"))
    from badgerlab.cli import main

    assert main(["datasets", "--download", "mnist"]) == 0
    out = capsys.readouterr().out
    assert verify("mnist", tmp_path / "cache")
    assert "cache" in out and "verified" in out
    monkeypatch.setenv("BADGERLAB_MIRROR", "http://127.0.0.1:9")  # a closed port: offline
    assert main(["datasets", "--download", "fashion_mnist"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "fashion" in err


# ---------------------------------------------------------------------------------------------
# hostile servers and archives


def test_redirects_follow_http_to_http_and_refuse_other_schemes(
    server: Server, tmp_path: Path
) -> None:
    arrays = mnist_like(7)
    src = idx_source("mnist", "mnist", arrays, of="payload")
    files = serve_idx(arrays, "mnist")
    first, *rest = src.files
    # The first file moves to another path of the same (http) server: followed.
    server.files[f"/moved/{first}"] = files[f"/{first}"]
    server.redirects[f"/{first}"] = f"{server.url}/moved/{first}"
    server.files.update({f"/{r}": files[f"/{r}"] for r in rest})
    fetch_fast("mnist", tmp_path, base_url=server.url, sources={"mnist": src})
    assert verify("mnist", tmp_path, sources={"mnist": src})

    # A redirect to ftp:// or file:// is refused, named, and installs nothing.
    for target in ("ftp://127.0.0.1/x.gz", f"file://{tmp_path}/elsewhere.gz"):
        server.redirects[f"/{first}"] = target
        root = tmp_path / target[:3]
        with pytest.raises(DownloadError, match=r"refused a redirect .*-> (ftp|file)"):
            fetch_fast("mnist", root, base_url=server.url, sources={"mnist": src})
        assert not root.exists() or leftovers(root) == []


@pytest.mark.parametrize(
    ("old", "new", "allowed"),
    [
        ("https://a.example/f", "https://b.example/f", True),
        ("https://a.example/f", "http://b.example/f", False),
        ("https://a.example/f", "ftp://b.example/f", False),
        ("http://127.0.0.1/f", "https://b.example/f", True),
        ("http://127.0.0.1/f", "http://127.0.0.1/g", True),
        ("http://127.0.0.1/f", "file:///etc/passwd", False),
    ],
)
def test_redirect_policy_table(old: str, new: str, allowed: bool) -> None:
    import urllib.request

    handler = dl._RedirectPolicy()
    req = urllib.request.Request(old)
    if allowed:
        assert handler.redirect_request(req, None, 302, "Found", {}, new).full_url == new
    else:
        with pytest.raises(dl.RefusedRedirect, match="refused a redirect"):
            handler.redirect_request(req, None, 302, "Found", {}, new)


def _hostile_tar(payload: bytes) -> bytes:
    """A tar whose wanted member is a symlink to /etc/passwd, beside members aimed outside."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name in ("../../escaped.bin", "/tmp/badgerlab-absolute.bin"):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
        link = tarfile.TarInfo("data/wanted.bin")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    return buf.getvalue()


def _hostile_zip(payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../escaped.bin", payload)
        zf.writestr("/tmp/badgerlab-absolute.bin", payload)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_hostile_archive_writes_nothing_outside_its_destination(
    server: Server, tmp_path: Path, kind: str
) -> None:
    archive = _hostile_tar(b"evil") if kind == "tar" else _hostile_zip(b"evil")
    src = Source(
        "hostile",
        "hostile",
        (
            Download(
                f"hostile/archive.{kind}",
                ("https://example.invalid/a",),
                f"md5:{md5(archive)}",
                extract={"data/wanted.bin": "hostile/wanted.bin"},
            ),
        ),
        {"train": ("hostile/wanted.bin",), "test": ("hostile/wanted.bin",)},
        verified=False,
    )
    server.files[f"/hostile/archive.{kind}"] = archive
    cache = tmp_path / "a" / "b" / "cache"
    cache.mkdir(parents=True)
    with pytest.raises(DownloadError, match="no (file )?member 'data/wanted.bin'"):
        fetch_fast("hostile", cache, base_url=server.url, sources={"hostile": src})
    outside = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert outside == [] and not Path("/tmp/badgerlab-absolute.bin").exists()


@pytest.mark.parametrize("rel", ["../x.gz", "/etc/x.gz", "a/../../x.gz", "a//x.gz", ""])
def test_install_paths_must_stay_inside_the_cache(rel: str) -> None:
    with pytest.raises(ValueError, match="install path must be relative"):
        Download(rel, ("https://example.invalid/x",), "md5:00")
    with pytest.raises(ValueError, match="install path must be relative"):
        Download("ok/a.zip", ("https://example.invalid/x",), "md5:00", extract={"m": rel})


@pytest.mark.parametrize("mirror", ["ht!tp://::bad", "ftp://127.0.0.1/", "127.0.0.1:8000"])
def test_bad_mirror_is_one_named_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mirror: str
) -> None:
    monkeypatch.setenv("BADGERLAB_MIRROR", mirror)
    src = idx_source("mnist", "mnist", mnist_like(0), of="payload")
    with pytest.raises(DownloadError, match="is not an http://, https:// or file:// URL"):
        fetch_fast("mnist", tmp_path, sources={"mnist": src})


# ---------------------------------------------------------------------------------------------
# bAbI: a text archive checked by its byte count


def babi_archive() -> tuple[bytes, dict[str, str]]:
    """tasks_1-20_v1-2.tar.gz laid out as upstream (en/, en-10k/, other tasks beside), each
    kept file a generated story in bAbI's text format."""
    from badgerlab.plasticity import babi

    real = dl.SOURCES["babi"]
    (d,) = real.downloads
    texts = {}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        members = [*d.extract, "tasks_1-20_v1-2/en/qa3_three-supporting-facts_train.txt"]
        for i, member in enumerate(members):
            task = 2 if "qa2_" in member else 1
            text = babi.format_stories(babi.generate(task, 2, seed=i))
            texts[member] = text
            raw = text.encode()
            info = tarfile.TarInfo(member)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return buf.getvalue(), texts


def test_fetch_babi_archive_and_read_it(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from badgerlab.plasticity import babi

    archive, texts = babi_archive()
    real = dl.SOURCES["babi"]
    (d,) = real.downloads
    assert d.checksum == "size:11745123" and not real.verified
    assert set(d.extract.values()) == set(real.files)
    assert babi.task_file(1, "train") in real.splits["train"]
    assert babi.task_file(2, "test", size="10k") in real.splits["test"]
    src = Source(
        real.name,
        real.folder,
        (Download(d.path, d.urls, f"size:{len(archive)}", extract=d.extract),),
        real.splits,
        verified=False,
    )
    server.files["/tasks_1-20_v1-2.tar.gz"] = archive

    fetch_fast("babi", tmp_path, base_url=server.url, sources={"babi": src})

    assert leftovers(tmp_path) == sorted([*real.files, f"tasks_1-20_v1-2/{dl.MANIFEST}"])
    assert verify("babi", tmp_path, sources={"babi": src})
    for member, rel in d.extract.items():
        assert (tmp_path / rel).read_text() == texts[member]
    stories = babi.load_task(2, "train", root=tmp_path)
    assert stories == babi.parse(texts[babi.task_file(2, "train")])  # members keep their paths

    # A file of the wrong size is refused, named, and installs nothing.
    server.files["/tasks_1-20_v1-2.tar.gz"] = archive + b"\0"
    with pytest.raises(ChecksumError, match=rf"size of the file .* is {len(archive) + 1}"):
        fetch_fast("babi", tmp_path / "again", base_url=server.url, sources={"babi": src})
    assert not (tmp_path / "again").exists() or leftovers(tmp_path / "again") == []

    # The registry knows it is text: `load` points at the reader instead of parsing tensors.
    monkeypatch.setenv("BADGERLAB_DATA", str(tmp_path))
    from badgerlab.data import DatasetError, load, locate

    assert locate("babi") == ("BADGERLAB_DATA", tmp_path)
    with pytest.raises(DatasetError, match="babi.load_task"):
        load("babi")
    assert babi.load_task(1, "test") == babi.parse(
        texts["tasks_1-20_v1-2/en/qa1_single-supporting-fact_test.txt"]
    )


def test_size_checksum_must_be_a_byte_count() -> None:
    with pytest.raises(ValueError, match="size:<bytes>"):
        Download("a/b", ("u",), "size:12ab")
