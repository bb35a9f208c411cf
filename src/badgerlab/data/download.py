"""Downloading the real datasets: canonical URLs, checksums, temporary file, verify, rename.

Each dataset has a `Source`: the files it installs under `<root>/<upstream folder>/` and the
`Download`s that produce them. A download streams into a hidden temporary file beside its
destination (`.<name>.<random>.part`), is verified, and only then `os.replace`d in, so an
interrupted or corrupt transfer never leaves a file that looks valid. Archives (CIFAR-10's
tar, EMNIST's zip) are verified as a whole, then the members we need are extracted one by one
the same way, and a manifest with their sha256 is written last.

Checksums: MNIST and Fashion-MNIST are checked against the sha256 of the *decompressed* IDX
payload of the copies in `shared/data` (`verified=True`); KMNIST, EMNIST and CIFAR-10 against
the md5 their publishers list for the upstream files (`verified=False`: we never held a copy).
bAbI has no published hash we could confirm: its archive is checked by its byte count
(`size:11745123`, the size two independent users' downloads report), the weakest check,
`verified=False`; its members are then pinned by the manifest's sha256 as for every archive.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import json
import os
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from badgerlab import __version__
from badgerlab.errors import UserError

__all__ = [
    "MANIFEST",
    "SOURCES",
    "ChecksumError",
    "Download",
    "DownloadError",
    "Progress",
    "Source",
    "fetch",
    "get_source",
    "register_source",
    "verify",
]

Progress = Callable[[str, int, "int | None"], None]
"""`progress(label, bytes_done, bytes_total_or_None)`; the CLI wraps it in a rich bar."""

MANIFEST = ".badgerlab-manifest.json"
_CHUNK = 1 << 20
_ALGOS = ("md5", "sha256", "size")


class DownloadError(UserError):
    """A dataset could not be fetched (network, HTTP status, unwritable cache, bad archive)."""


class ChecksumError(DownloadError):
    """A downloaded file's checksum differs from the published one."""


@dataclass(frozen=True)
class Download:
    """One file fetched over HTTP.

    `path`: where it lives under a mirror (`BADGERLAB_MIRROR` / `base_url`), which is laid out
    like the cache; for a plain file it is also where it is installed under the root.
    `urls`: tried in order. `checksum`: `"sha256:<hex>"` or `"md5:<hex>"`, of the bytes as
    downloaded (`of="file"`) or of the gzip-decompressed payload (`of="payload"`).
    `extract`: for an archive, `{member name: path under the root}`; the archive itself is
    deleted after extraction.
    """

    path: str
    urls: tuple[str, ...]
    checksum: str
    of: str = "file"
    extract: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        algo, _, hexdigest = self.checksum.partition(":")
        if algo not in _ALGOS or not hexdigest or (algo == "size" and not hexdigest.isdigit()):
            raise ValueError(
                "checksum must be 'md5:<hex>', 'sha256:<hex>' or 'size:<bytes>', got "
                f"{self.checksum!r}"
            )
        if self.of not in ("file", "payload"):
            raise ValueError(f"of must be 'file' or 'payload', got {self.of!r}")
        for where in (self.path, *(self.extract or {}).values()):
            _check_relative(where)


def _check_relative(rel: str) -> None:
    """Install paths stay inside the cache: relative, forward slashes, no `..` parts."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"install path must be relative inside the cache, got {rel!r}")


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from and what it installs.

    `splits[split]`: paths under the root (images then labels for IDX sets; the batch files
    for CIFAR-10). `sizes`: expected payload bytes of extracted archive members, the check
    used when a folder has no manifest (e.g. a copy made by hand). `label_offset` is
    subtracted from stored labels (EMNIST letters store 1..26); `transpose` marks images stored
    column-major (EMNIST), which must be transposed to stand upright.
    """

    name: str
    folder: str
    downloads: tuple[Download, ...]
    splits: Mapping[str, tuple[str, ...]]
    verified: bool
    homepage: str = ""
    license: str = ""
    sizes: Mapping[str, int] = field(default_factory=dict)
    label_offset: int = 0
    transpose: bool = False

    @property
    def files(self) -> tuple[str, ...]:
        """Every installed path under the root, in split order."""
        return tuple(f for split in self.splits.values() for f in split)

    def check_for(self, path: str) -> Download | None:
        """The plain (non-archive) download that installs `path`, if any."""
        for d in self.downloads:
            if d.extract is None and d.path == path:
                return d
        return None


def _idx_downloads(
    folder: str, bases: tuple[str, ...], checks: tuple[str, ...], *, of: str
) -> tuple[Download, ...]:
    """The four MNIST-layout files; `checks` in the order train images, train labels, test
    images, test labels."""
    names = (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
    return tuple(
        Download(f"{folder}/{n}.gz", tuple(f"{b}{n}.gz" for b in bases), c, of=of)
        for n, c in zip(names, checks, strict=True)
    )


def _idx_splits(folder: str, prefix: str = "", test: str = "t10k") -> dict[str, tuple[str, ...]]:
    return {
        "train": (
            f"{folder}/{prefix}train-images-idx3-ubyte.gz",
            f"{folder}/{prefix}train-labels-idx1-ubyte.gz",
        ),
        "test": (
            f"{folder}/{prefix}{test}-images-idx3-ubyte.gz",
            f"{folder}/{prefix}{test}-labels-idx1-ubyte.gz",
        ),
    }


_EMNIST_FILES = tuple(
    f"emnist-letters-{s}-{k}-idx{d}-ubyte.gz"
    for s in ("train", "test")
    for k, d in (("images", 3), ("labels", 1))
)
_EMNIST_MEMBERS = {f"gzip/{f}": f"emnist/{f}" for f in _EMNIST_FILES}
_CIFAR_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
_CIFAR_BYTES = 10000 * (1 + 3 * 32 * 32)

SOURCES: dict[str, Source] = {
    "mnist": Source(
        "mnist",
        "mnist",
        # LeCun's page is the canonical home but often refuses scripted downloads; PyTorch's
        # S3 copy holds the same files, and the payload sha256 makes either equally safe.
        _idx_downloads(
            "mnist",
            (
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
            ),
            (
                "sha256:ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "sha256:65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "sha256:0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "sha256:ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
            of="payload",
        ),
        _idx_splits("mnist"),
        verified=True,
        homepage="http://yann.lecun.com/exdb/mnist/",
        license="CC BY-SA 3.0 (LeCun, Cortes, Burges)",
    ),
    "fashion_mnist": Source(
        "fashion_mnist",
        "fashion-mnist",
        _idx_downloads(
            "fashion-mnist",
            (
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            ),
            (
                "sha256:c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "sha256:bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "sha256:5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "sha256:0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
            of="payload",
        ),
        _idx_splits("fashion-mnist"),
        verified=True,
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        license="MIT (Zalando SE)",
    ),
    "kmnist": Source(
        "kmnist",
        "kmnist",
        _idx_downloads(
            "kmnist",
            ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
            (
                "md5:bdb82020997e1d708af4cf47b453dcf7",
                "md5:e144d726b3acfaa3e44228e80efcd344",
                "md5:5c965bf0a639b31b8f53240b1b52f4d7",
                "md5:7320c461ea6c1c855c0b718fb2a4b134",
            ),
            of="file",
        ),
        _idx_splits("kmnist"),
        verified=False,
        homepage="https://github.com/rois-codh/kmnist",
        license="CC BY-SA 4.0 (CODH, NIJL)",
    ),
    "emnist_letters": Source(
        "emnist_letters",
        "emnist",
        # NIST publishes every EMNIST split in one zip (about 560 MB); only the letters are kept.
        (
            Download(
                "emnist/gzip.zip",
                (
                    "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip",
                    "http://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/gzip.zip",
                ),
                "md5:58c8d27c78d21e728a6bc7b3cc06412e",
                extract=_EMNIST_MEMBERS,
            ),
        ),
        _idx_splits("emnist", prefix="emnist-letters-", test="test"),
        verified=False,
        homepage="https://www.nist.gov/itl/products-and-services/emnist-dataset",
        license="public domain (NIST), see arXiv:1702.05373",
        sizes={
            "emnist/emnist-letters-train-images-idx3-ubyte.gz": 16 + 124800 * 784,
            "emnist/emnist-letters-train-labels-idx1-ubyte.gz": 8 + 124800,
            "emnist/emnist-letters-test-images-idx3-ubyte.gz": 16 + 20800 * 784,
            "emnist/emnist-letters-test-labels-idx1-ubyte.gz": 8 + 20800,
        },
        label_offset=1,
        transpose=True,
    ),
    "cifar10": Source(
        "cifar10",
        "cifar-10-batches-bin",
        (
            Download(
                "cifar-10-binary.tar.gz",
                ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
                "md5:c32a1d4ab5d03f1284b67883e8d87530",
                extract={
                    f"cifar-10-batches-bin/{b}": f"cifar-10-batches-bin/{b}"
                    for b in _CIFAR_BATCHES
                },
            ),
        ),
        {
            "train": tuple(f"cifar-10-batches-bin/{b}" for b in _CIFAR_BATCHES[:5]),
            "test": ("cifar-10-batches-bin/test_batch.bin",),
        },
        verified=False,
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        license="see the CIFAR page (Krizhevsky, 2009)",
        sizes={f"cifar-10-batches-bin/{b}": _CIFAR_BYTES for b in _CIFAR_BATCHES},
    ),
}


_BABI_FILES = tuple(
    f"{lang}/qa{task}_{name}_{split}.txt"
    for lang in ("en", "en-10k")
    for task, name in ((1, "single-supporting-fact"), (2, "two-supporting-facts"))
    for split in ("train", "test")
)
SOURCES["babi"] = Source(
    "babi",
    "tasks_1-20_v1-2",
    # Only tasks 1 and 2 (1k and 10k stories) are kept: the ones hmem-qa reads.
    (
        Download(
            "tasks_1-20_v1-2.tar.gz",
            ("http://www.thespermwhale.com/jaseweston/babi/tasks_1-20_v1-2.tar.gz",),
            "size:11745123",
            extract={f"tasks_1-20_v1-2/{f}": f"tasks_1-20_v1-2/{f}" for f in _BABI_FILES},
        ),
    ),
    {
        split: tuple(f"tasks_1-20_v1-2/{f}" for f in _BABI_FILES if f.endswith(f"_{split}.txt"))
        for split in ("train", "test")
    },
    verified=False,
    homepage="https://research.facebook.com/downloads/babi/",
    license="CC BY 3.0 (Facebook AI Research), see arXiv:1502.05698",
)


def get_source(name: str, sources: Mapping[str, Source] | None = None) -> Source:
    """The `Source` of dataset `name` (from `sources` when given, else `SOURCES`)."""
    table = SOURCES if sources is None else sources
    if name not in table:
        raise DownloadError(
            f"no download source for dataset {name!r}; downloadable: {', '.join(sorted(table))}"
        )
    return table[name]


def register_source(source: Source) -> Source:
    """Add (or replace) a dataset's download source."""
    if not isinstance(source, Source):
        raise TypeError(f"source must be a Source, got {type(source).__name__}")
    SOURCES[source.name] = source
    return source


# ---------------------------------------------------------------------------------------------
# checking files


def _open_payload(path: Path) -> IO[bytes]:
    """The gzip-decompressed stream of `path`, or its raw bytes when it is not gzip (as
    `idx.read_idx` accepts both)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")  # noqa: SIM115


def _digest(path: Path, algo: str, *, of: str = "file") -> str:
    """Hex digest of the file (or of its decompressed payload); a description of the damage
    when the gzip stream is corrupt, so the mismatch message says what happened."""
    h = hashlib.new(algo, usedforsecurity=False)  # md5 is an integrity check here
    try:
        with _open_payload(path) if of == "payload" else open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        return f"<unreadable gzip: {err}>"
    return h.hexdigest()


def _checksum_ok(path: Path, d: Download) -> tuple[bool, str]:
    algo, _, want = d.checksum.partition(":")
    if algo == "size":  # only where no published hash exists: see the module docstring
        got = str(path.stat().st_size if d.of == "file" else _payload_size(path))
        return got == want, got
    got = _digest(path, algo, of=d.of)
    return got == want.lower(), got


def _payload_size(path: Path) -> int:
    """Decompressed size: from the gzip trailer (ISIZE, size mod 2**32) or the file size."""
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            return path.stat().st_size
        fh.seek(-4, os.SEEK_END)
        return int.from_bytes(fh.read(4), "little")


def _read_manifest(folder: Path) -> dict[str, str]:
    try:
        body = json.loads((folder / MANIFEST).read_text())
        return {str(k): str(v) for k, v in body.get("sha256", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _file_ok(root: Path, rel: str, src: Source, manifest: Mapping[str, str]) -> bool:
    path = root / rel
    if not path.is_file():
        return False
    d = src.check_for(rel)
    if d is not None:
        return _checksum_ok(path, d)[0]
    if rel in manifest:
        return _digest(path, "sha256") == manifest[rel]
    if rel in src.sizes:
        return _payload_size(path) == src.sizes[rel] % 2**32
    return True


def verify(name: str, root: Path, *, sources: Mapping[str, Source] | None = None) -> bool:
    """True when every file of dataset `name` is present under `root` and checks out.

    Plain downloads are checked against their checksum; members extracted from an archive
    against the manifest written when the (checksummed) archive was unpacked, or, in a folder
    without one (a copy made by hand), against their expected payload size.
    """
    src = get_source(name, sources)
    root = Path(root)
    manifest = _read_manifest(root / src.folder)
    return all(_file_ok(root, rel, src, manifest) for rel in src.files)


# ---------------------------------------------------------------------------------------------
# fetching


class _Truncated(OSError):
    """The connection closed before Content-Length bytes arrived."""


class RefusedRedirect(urllib.error.URLError):
    """A server redirected a download to a scheme the policy does not follow."""


# Which schemes a redirect may lead to, by the scheme of the URL that redirected: https only
# to https (a downgrade would drop the transport's integrity), plain http (a user's own
# mirror) to http or https; never to ftp, file or anything else.
REDIRECTS = {"https": frozenset({"https"}), "http": frozenset({"http", "https"})}


def _check_redirect(old_url: str, new_url: str) -> None:
    old = urllib.parse.urlsplit(old_url).scheme.lower()
    new = urllib.parse.urlsplit(new_url).scheme.lower()
    if new not in REDIRECTS.get(old, frozenset()):
        raise RefusedRedirect(
            f"refused a redirect from {old_url} to {new_url} ({old} -> {new}): "
            "downloads follow https -> https and http -> http/https only"
        )


class _RedirectPolicy(urllib.request.HTTPRedirectHandler):
    def http_error_302(self, req, fp, code, msg, headers):  # noqa: ANN001
        # Checked here, before urllib's own scheme filter, so every refusal reads the same.
        location = headers.get("Location") or headers.get("URI")
        if location:
            _check_redirect(req.full_url, urllib.parse.urljoin(req.full_url, location))
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        _check_redirect(req.full_url, newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_RedirectPolicy)
_MIRROR_SCHEMES = ("http", "https", "file")


def _unreachable(err: BaseException) -> bool:
    """Errors that retrying the same URL cannot fix: refused connection, unknown host."""
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    return isinstance(reason, (ConnectionRefusedError, socket.gaierror))


def _transient(err: BaseException) -> bool:
    if isinstance(err, RefusedRedirect):
        return False
    if isinstance(err, urllib.error.HTTPError):
        return err.code >= 500 or err.code in (408, 429)
    return not _unreachable(err)


def _stream(
    url: str, fh: IO[bytes], *, timeout: float, label: str, progress: Progress | None
) -> None:
    """Append `url`'s body to `fh`, resuming with a Range request when `fh` already holds a
    prefix and the server honours it (206); otherwise start again from byte 0."""
    have = fh.tell()
    headers = {"User-Agent": f"badgerlab/{__version__}", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    with _OPENER.open(req, timeout=timeout) as resp:
        resumed = (
            have
            and resp.status == 206
            and resp.headers.get("Content-Range", "").startswith(f"bytes {have}-")
        )
        if not resumed:
            fh.seek(0)
            fh.truncate()
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        if progress is not None:
            progress(label, have, total)
        while chunk := resp.read(_CHUNK):
            fh.write(chunk)
            have += len(chunk)
            if progress is not None:
                progress(label, have, total)
        # http.client returns b"" at a premature EOF instead of raising, so compare lengths.
        if total is not None and have < total:
            raise _Truncated(f"connection closed after {have} of {total} bytes")


def _urls(d: Download, base_url: str | None) -> tuple[str, ...]:
    if base_url:
        return (f"{base_url.rstrip('/')}/{d.path}",)
    return d.urls


def _offline_message(rel: str, failures: list[tuple[str, str]]) -> str:
    tried = "; ".join(f"{url} ({why})" for url, why in failures)
    if all(why.startswith("refused a redirect") for _, why in failures):
        return f"could not download {rel}: {tried}"
    return (
        f"could not download {rel}: {tried}. `--download` needs network access; on a machine "
        f"without it, copy the files to a folder laid out as <folder>/{rel} and point "
        f"BADGERLAB_DATA at that folder (or BADGERLAB_MIRROR at a server that has them)"
    )


def _mkstemp(folder: Path, name: str) -> tuple[int, Path]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    except OSError as err:
        raise DownloadError(
            f"cannot write to the download cache {str(folder)!r} ({err}); set BADGERLAB_CACHE "
            f"to a writable folder"
        ) from None
    return fd, Path(tmp)


def _download(
    d: Download,
    folder: Path,
    *,
    base_url: str | None,
    progress: Progress | None,
    retries: int,
    timeout: float,
    backoff: float,
) -> Path:
    """Fetch `d` into a verified hidden temporary file in `folder`; the caller renames it.

    Each URL gets `1 + retries` attempts at transient failures (dropped connection, timeout,
    5xx); a refused connection, an unknown host or a 4xx moves on to the next URL at once.
    A checksum mismatch also moves on (a mirror may be stale) and is what is raised if no URL
    gives a good file.
    """
    name = d.path.rsplit("/", 1)[-1]
    fd, tmp = _mkstemp(folder, name)
    failures: list[tuple[str, str]] = []
    mismatch: ChecksumError | None = None
    ok = False
    try:
        with os.fdopen(fd, "w+b") as fh:
            for url in _urls(d, base_url):
                why = _attempts(
                    url,
                    fh,
                    label=d.path,
                    progress=progress,
                    retries=retries,
                    timeout=timeout,
                    backoff=backoff,
                )
                if why is not None:
                    failures.append((url, why))
                    continue
                fh.flush()
                os.fsync(fh.fileno())
                good, got = _checksum_ok(tmp, d)
                if good:
                    ok = True
                    return tmp
                algo, _, want = d.checksum.partition(":")
                what = "decompressed payload" if d.of == "payload" else "file"
                mismatch = ChecksumError(
                    f"{d.path}: {algo} of the {what} downloaded from {url} is {got}, "
                    f"expected {want}; nothing was installed"
                )
                failures.append((url, f"{algo} mismatch"))
        if mismatch is not None:
            raise mismatch
        raise DownloadError(_offline_message(d.path, failures))
    finally:
        if not ok:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _attempts(
    url: str,
    fh: IO[bytes],
    *,
    label: str,
    progress: Progress | None,
    retries: int,
    timeout: float,
    backoff: float,
) -> str | None:
    """Download `url` into `fh` from scratch, with up to `retries` retries of transient
    failures; None on success, else why the last attempt failed."""
    fh.seek(0)
    fh.truncate()
    for attempt in range(retries + 1):
        try:
            _stream(url, fh, timeout=timeout, label=label, progress=progress)
            return None
        except (OSError, http.client.HTTPException) as err:
            if isinstance(err, urllib.error.HTTPError):
                why = f"HTTP {err.code} {err.reason}"
            elif isinstance(err, RefusedRedirect):
                why = str(err.reason)
            else:
                why = f"{type(err).__name__}: {getattr(err, 'reason', None) or err}"
            if attempt == retries or not _transient(err):
                return why
            time.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = _mkstemp(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _extract(archive: Path, d: Download, root: Path) -> dict[str, str]:
    """Extract `d.extract`'s members, each through a temporary file and a rename; returns the
    sha256 of each installed file. Only the listed members are read, and they are written to
    paths we chose, so a hostile archive cannot write elsewhere."""
    assert d.extract is not None
    digests: dict[str, str] = {}

    def install(stream: IO[bytes], rel: str) -> None:
        dest = root / rel
        fd, tmp = _mkstemp(dest.parent, dest.name)
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in iter(lambda: stream.read(_CHUNK), b""):
                    out.write(chunk)
                    h.update(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        digests[rel] = h.hexdigest()

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = set(zf.namelist())
                for member, rel in d.extract.items():
                    if member not in names:
                        raise DownloadError(f"{d.path}: archive has no member {member!r}")
                    with zf.open(member) as stream:
                        install(stream, rel)
        else:
            with tarfile.open(archive, "r:*") as tf:
                for member, rel in d.extract.items():
                    try:
                        stream = tf.extractfile(member)
                    except KeyError:
                        stream = None
                    if stream is None:
                        raise DownloadError(f"{d.path}: archive has no file member {member!r}")
                    with stream:
                        install(stream, rel)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise DownloadError(f"{d.path}: the archive is unreadable ({err})") from None
    return digests


def fetch(
    name: str,
    *,
    cache: Path,
    base_url: str | None = None,
    progress: Progress | None = None,
    retries: int = 2,
    timeout: float = 60.0,
    backoff: float = 0.5,
    force: bool = False,
    sources: Mapping[str, Source] | None = None,
) -> list[Path]:
    """Download dataset `name` into `cache/<folder>/` and return its installed files.

    Files that are already present and verify are kept (unless `force`). `base_url` (default:
    env `BADGERLAB_MIRROR`) replaces the upstream URLs with `<base_url>/<Download.path>`, a
    server laid out like the cache. `progress(label, done, total)` is called as bytes arrive.
    `retries` is the number of extra attempts per URL after a transient failure, waiting
    `backoff * 2**attempt` seconds; `timeout` is the per-read socket timeout in seconds.

    Raises `ChecksumError` (a `ValueError`) naming the file and both hashes when no URL gives
    a file with the published checksum, and `DownloadError` naming each URL that failed when
    the network is unreachable. Neither leaves anything that looks like a dataset file.
    """
    if not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0, got {timeout!r}")
    src = get_source(name, sources)
    root = Path(cache).expanduser()
    if base_url is None:
        base_url = os.environ.get("BADGERLAB_MIRROR") or None
    if base_url is not None and urllib.parse.urlsplit(base_url).scheme not in _MIRROR_SCHEMES:
        raise DownloadError(
            f"mirror {base_url!r} (BADGERLAB_MIRROR or base_url) is not an http://, https:// "
            "or file:// URL"
        )
    opts = dict(
        base_url=base_url, progress=progress, retries=retries, timeout=timeout, backoff=backoff
    )
    manifest_path = root / src.folder / MANIFEST
    manifest = _read_manifest(root / src.folder)
    for d in src.downloads:
        installs = [d.path] if d.extract is None else list(d.extract.values())
        if not force and all(_file_ok(root, rel, src, manifest) for rel in installs):
            continue
        dest = root / d.path
        tmp = _download(d, dest.parent, **opts)
        try:
            if d.extract is None:
                os.replace(tmp, dest)
                continue
            # A stale manifest must not vouch for members about to be replaced.
            with contextlib.suppress(FileNotFoundError):
                manifest_path.unlink()
            for rel in d.extract.values():
                manifest.pop(rel, None)
            manifest.update(_extract(tmp, d, root))
            body = {"source": d.urls[0], "archive": d.checksum, "sha256": manifest}
            _write_atomic(manifest_path, json.dumps(body, indent=1, sort_keys=True).encode())
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return [root / rel for rel in src.files]
