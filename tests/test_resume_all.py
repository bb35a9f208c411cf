"""Every registered experiment survives SIGKILL: killed right after its first checkpoint (a
torn metrics line appended), resumed, it ends with the same metric lines and claims as an
uninterrupted run of the same smoke config."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from badgerlab.experiments import registry
from badgerlab.runner import execute

NAMES = sorted(registry())

# Runs the CLI with `Run.save_checkpoint` wrapped so that the process SIGKILLs itself right
# after the first checkpoint is on disk: the hardest point for resume (a unit half done).
DRIVER = """
import os, signal, sys
from badgerlab.runs import Run
_save = Run.save_checkpoint
def save(self, *args, **kwargs):
    _save(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
Run.save_checkpoint = save
from badgerlab.cli import main
sys.exit(main(sys.argv[1:]))
"""

# Metric keys that measure wall time differ between any two runs; everything else must match.
TIMING = re.compile(r"(time|seconds|elapsed|wall|_s$|per_s|throughput)")


def _comparable(rows):
    return [{k: v for k, v in r.items() if not TIMING.search(k)} for r in rows]


def _claims(rec):
    keep = ("id", "measured", "std", "n_seeds", "status")
    return [{k: c[k] for k in keep} for c in rec.claims if not TIMING.search(c["id"])]


@pytest.mark.parametrize("name", NAMES)
def test_sigkill_after_first_checkpoint_then_resume_equals_uninterrupted(
    name, smoke_record, tmp_path
):
    whole = smoke_record(name)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-c", DRIVER, "run", name, "--scale", "smoke", "--quiet"]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=600
    )
    if proc.returncode == 0:
        pytest.fail(f"{name} finished without ever checkpointing: nothing would survive a kill")
    assert proc.returncode == -9, proc.stderr[-2000:]
    (run_dir,) = (tmp_path / name).iterdir()
    with open(run_dir / "metrics.jsonl", "ab") as fh:
        fh.write(b'{"step": 99, "torn')
    resumed = execute(name, resume=run_dir, quiet=True)
    assert resumed.finished
    assert _comparable(resumed.metrics) == _comparable(whole.metrics)
    assert _claims(resumed) == _claims(whole)
    json.dumps(resumed.summary)
