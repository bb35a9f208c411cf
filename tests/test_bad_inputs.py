"""Every class of bad input the CLI meets ends in exit 2, one line on stderr, no traceback.

The broken fixtures are built here: run folders corrupted each way a disk, a user or a hostile
party can corrupt them, output folders that cannot be written, malformed report inputs,
corrupt dataset files under BADGERLAB_DATA and unusable mirrors. (Downloads from hostile
servers and archives are in tests/data/test_download.py.)
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from badgerlab.cli import main
from badgerlab.runner import execute

MARKER = Path("/tmp/badgerlab-unpickled-marker")


class _Evil:
    """Unpickling this would create MARKER: proof that nothing is ever unpickled."""

    def __reduce__(self):
        return (Path.touch, (MARKER,))


def _one_line_exit_2(args: list[str], capsys) -> str:
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("runs")
    return {
        name: execute(name, scale="smoke", out=out, quiet=True).dir
        for name in ("online-learners", "deq-mnist")
    }


def _tensor_file(run: Path) -> Path:
    (path,) = (run / "checkpoints").glob("*.safetensors")
    return path


def _ckpt_json(run: Path, body) -> None:
    (run / "checkpoints" / "ckpt.json").write_text(json.dumps(body))


def _other_experiment(run: Path, other: Path, *, relabel: bool) -> None:
    shutil.rmtree(run / "checkpoints")
    shutil.copytree(other / "checkpoints", run / "checkpoints")
    shutil.copy(other / "metrics.jsonl", run / "metrics.jsonl")
    if relabel:  # a hostile copy that claims to belong to this experiment
        ckpt = json.loads((run / "checkpoints" / "ckpt.json").read_text())
        _ckpt_json(run, {**ckpt, "experiment": "online-learners"})


def _with_tensor_file(name: str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        ckpt = json.loads((run / "checkpoints" / "ckpt.json").read_text())
        _ckpt_json(run, {**ckpt, "tensors": name})

    return edit


# name -> (how the folder is broken, a word the one-line error must contain)
CORRUPT_RUNS: dict[str, tuple[Callable[..., None], str]] = {
    "config-not-utf8": (lambda r, o: (r / "config.json").write_bytes(b"\xff\xfe{"), "config.json"),
    "config-not-json": (lambda r, o: (r / "config.json").write_text("{oops"), "config.json"),
    "config-a-list": (lambda r, o: (r / "config.json").write_text("[1, 2]"), "config.json"),
    "metrics-not-utf8": (
        lambda r, o: (r / "metrics.jsonl").write_bytes(b"\xff\xfe\n"),
        "metrics were lost",
    ),
    "metrics-garbage": (
        lambda r, o: (r / "metrics.jsonl").write_text("garbage\n"),
        "metrics were lost",
    ),
    "metrics-emptied": (lambda r, o: (r / "metrics.jsonl").write_text(""), "metrics were lost"),
    "ckpt-json-a-list": (lambda r, o: _ckpt_json(r, [1, 2]), "not a JSON object"),
    "ckpt-json-no-step": (lambda r, o: _ckpt_json(r, {"tensors": "x"}), "'step'"),
    "ckpt-json-not-utf8": (
        lambda r, o: (r / "checkpoints" / "ckpt.json").write_bytes(b"\xff{"),
        "ckpt.json",
    ),
    "ckpt-tensors-outside": (
        lambda r, o: _with_tensor_file("../config.json")(r),
        "ckpt.json",
    ),
    "ckpt-tensors-absolute": (
        lambda r, o: _with_tensor_file("/etc/passwd")(r),
        "ckpt.json",
    ),
    "safetensors-truncated": (
        lambda r, o: _tensor_file(r).write_bytes(_tensor_file(r).read_bytes()[:40]),
        "safetensors",
    ),
    "safetensors-empty": (lambda r, o: _tensor_file(r).write_bytes(b""), "safetensors"),
    "safetensors-random": (
        lambda r, o: _tensor_file(r).write_bytes(os.urandom(600)),
        "safetensors",
    ),
    "safetensors-a-pickle": (
        lambda r, o: _tensor_file(r).write_bytes(pickle.dumps(_Evil())),
        "safetensors",
    ),
    "tensors-of-another-experiment": (
        lambda r, o: _other_experiment(r, o, relabel=False),
        "belongs to 'deq-mnist'",
    ),
    "tensors-of-another-experiment-relabelled": (
        lambda r, o: _other_experiment(r, o, relabel=True),
        "holds units",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_RUNS))
def test_corrupt_run_folder_on_resume(case, runs, tmp_path, capsys):
    MARKER.unlink(missing_ok=True)
    run = tmp_path / "run"
    shutil.copytree(runs["online-learners"], run)
    breaker, needle = CORRUPT_RUNS[case]
    breaker(run, runs["deq-mnist"])
    err = _one_line_exit_2(["run", "online-learners", "--resume", str(run)], capsys)
    assert needle in err
    assert not MARKER.exists(), "a checkpoint was unpickled"


def _out_cases(tmp_path: Path, good_run: Path) -> dict[str, tuple[list[str], str]]:
    afile = tmp_path / "afile"
    afile.write_text("x")
    bad_summary = tmp_path / "bad-summary"
    shutil.copytree(good_run, bad_summary / "online-learners" / good_run.name)
    (bad_summary / "online-learners" / good_run.name / "summary.json").write_text("{")
    bad_crashed = tmp_path / "bad-crashed"
    bad_crashed.mkdir()
    (bad_crashed / "crashed.json").write_text('{"not": "a list"')
    smoke = ["run", "online-learners", "--scale", "smoke", "--quiet"]
    return {
        "out-is-a-file": ([*smoke, "--out", str(afile)], "is a file"),
        "out-below-a-file": ([*smoke, "--out", str(afile / "sub")], "is a file"),
        "report-missing-folder": (["report", str(tmp_path / "nope")], "does not exist"),
        "report-on-a-file": (["report", str(afile)], "is a file"),
        "report-malformed-summary": (["report", str(bad_summary)], "summary.json"),
        "report-malformed-crashed": (["report", str(bad_crashed)], "crashed.json"),
        "reproduce-bad-scale": (
            ["reproduce", "--scale", "nope", "--out", str(tmp_path / "r")],
            "unknown scale 'nope'",
        ),
        "registry-name": (
            [*smoke[:1], "deq-mnist", "--set", "solver=nosuch", "--out", str(tmp_path / "r")],
            "unknown solver 'nosuch'",
        ),
        "cross-field": (
            [*smoke[:1], "mdeq-shapes", "--set", "image_size=15", "--out", str(tmp_path / "r")],
            "divisible",
        ),
        "device-not-supported": (
            [*smoke, "--set", "device=tpu", "--out", str(tmp_path / "r")],
            "tpu",
        ),
        "scale-through-set": (
            [*smoke, "--set", "scale=paper", "--out", str(tmp_path / "r")],
            "scale",
        ),
        "tensorboard-missing": (
            [*smoke, "--set", "tensorboard=true", "--out", str(tmp_path / "r")],
            "tensorboard",
        ),
        "resume-with-scale": (
            ["run", "online-learners", "--resume", str(good_run), "--scale", "quick"],
            "--scale",
        ),
        "resume-with-config": (
            ["run", "online-learners", "--resume", str(good_run), "--config", str(afile)],
            "--config",
        ),
    }


CASE_NAMES = [
    "out-is-a-file",
    "out-below-a-file",
    "report-missing-folder",
    "report-on-a-file",
    "report-malformed-summary",
    "report-malformed-crashed",
    "reproduce-bad-scale",
    "registry-name",
    "cross-field",
    "device-not-supported",
    "scale-through-set",
    "tensorboard-missing",
    "resume-with-scale",
    "resume-with-config",
]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_output_report_and_config_inputs(case, runs, tmp_path, capsys):
    if case == "tensorboard-missing" and importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here")
    args, needle = _out_cases(tmp_path, runs["online-learners"])[case]
    err = _one_line_exit_2(args, capsys)
    assert needle in err
    # Nothing runs and no run folder is made before the input is refused.
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("config.json"))


def _fake_mnist(root: Path, broken: str) -> None:
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for base in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        body = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02", mtime=0)
        if broken == "truncated":
            body = body[: len(body) // 2]
        (folder / f"{base}.gz").write_bytes(body)
    for base in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / f"{base}.gz").write_bytes(b"")


@pytest.mark.parametrize(("broken", "needle"), [("truncated", "is corrupt"), ("other", "sha256")])
def test_corrupt_dataset_file_names_file_and_checksum(
    broken, needle, tmp_path, monkeypatch, capsys
):
    _fake_mnist(tmp_path / "data", broken)
    monkeypatch.setenv("BADGERLAB_DATA", str(tmp_path / "data"))
    args = ["run", "online-learners", "--scale", "smoke", "--quiet", "--set", "dataset=mnist"]
    err = _one_line_exit_2([*args, "--out", str(tmp_path / "r")], capsys)
    assert needle in err and "train-images-idx3-ubyte.gz" in err
    assert "sha256" in err  # the checksum the file should have


@pytest.mark.parametrize("mirror", ["ftp://127.0.0.1/", "not a url"])
def test_bad_mirror_is_one_line(mirror, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BADGERLAB_MIRROR", mirror)
    monkeypatch.setenv("BADGERLAB_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("BADGERLAB_CACHE", str(tmp_path / "cache"))
    err = _one_line_exit_2(["datasets", "--download", "mnist"], capsys)
    assert "BADGERLAB_MIRROR" in err and mirror in err


# ---------------------------------------------------------------------------------------------
# filesystems that refuse writes, in a private mount namespace (needs root or user namespaces)


def _unshare_ok() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True
    )
    return probe.returncode == 0


needs_unshare = pytest.mark.skipif(not _unshare_ok(), reason="no private mount namespaces here")


def _in_namespace(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    badgerlab = [sys.executable, "-m", "badgerlab"]
    env = {**os.environ, "BL": " ".join(badgerlab), "T": str(tmp_path)}
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@needs_unshare
def test_read_only_filesystem_out_is_one_line(tmp_path):
    (tmp_path / "ro").mkdir()
    proc = _in_namespace(
        'mount -t tmpfs -o ro,size=1m tmpfs "$T/ro" && '
        '$BL run online-learners --scale smoke --quiet --out "$T/ro/runs"',
        tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in err and "read-only" in err.lower(), err


@needs_unshare
def test_disk_full_is_one_line_and_the_run_resumes(tmp_path):
    """A tmpfs too small for the run: one line naming 'no space left', exit 1; the same
    folder, given room, resumes to the same claims as an uninterrupted run."""
    (tmp_path / "disk").mkdir()
    proc = _in_namespace(
        'mount -t tmpfs -o size=48k tmpfs "$T/disk" && '
        '$BL run deq-mnist --scale smoke --quiet --out "$T/disk/runs" 2> "$T/err1"; '
        'echo $? > "$T/rc1"; '
        'mount -o remount,size=64m "$T/disk" && '
        'for d in "$T"/disk/runs/deq-mnist/*; do '
        '$BL run deq-mnist --resume "$d" --quiet 2> "$T/err2"; echo $? > "$T/rc2"; '
        'cp -r "$d" "$T/resumed"; done',
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    err1 = (tmp_path / "err1").read_text().strip()
    assert (tmp_path / "rc1").read_text().strip() == "1", err1
    assert "\n" not in err1 and "no space left" in err1 and "Traceback" not in err1, err1
    assert (tmp_path / "rc2").read_text().strip() == "0", (tmp_path / "err2").read_text()
    resumed = json.loads((tmp_path / "resumed" / "summary.json").read_text())["claims"]
    whole = execute("deq-mnist", scale="smoke", out=tmp_path / "whole", quiet=True).claims
    keep = ("id", "measured", "status")
    assert [{k: c[k] for k in keep} for c in resumed] == [{k: c[k] for k in keep} for c in whole]


# ---------------------------------------------------------------------------------------------
# one writer per run folder


HOLDER = """
import sys, time
from badgerlab.runs import Run
run = Run.resume(sys.argv[1], quiet=True)
print("locked", flush=True)
time.sleep(120)
"""


def test_second_process_on_a_run_folder_is_refused_until_the_first_dies(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs["online-learners"], run)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        err = _one_line_exit_2(["run", "online-learners", "--resume", str(run)], capsys)
        assert f"is in use by pid {holder.pid}" in err
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock, no stale lock file blocks resume
        holder.wait()
    assert main(["run", "online-learners", "--resume", str(run), "--quiet"]) == 0


def test_ctrl_c_prints_the_resume_command(tmp_path):
    import signal
    import time

    cmd = [sys.executable, "-m", "badgerlab", "run", "deq-mnist", "--scale", "smoke"]
    cmd += ["--set", "epochs=400", "--quiet", "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("deq-mnist/*/checkpoints/ckpt.json")):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    (run,) = (tmp_path / "deq-mnist").iterdir()
    assert proc.returncode == 130, err
    assert err.strip() == f"interrupted: continue with: badgerlab run deq-mnist --resume {run}"


def test_run_folders_made_in_the_same_second_never_clash(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from badgerlab import runs as runs_module
    from badgerlab.runs import Run

    monkeypatch.setattr(runs_module, "_utc_stamp", lambda: "20260101T000000Z")
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: Run.new_dir("x", 0, out=tmp_path), range(40)))
    assert len(set(made)) == 40 and all((p / "checkpoints").is_dir() for p in made)
