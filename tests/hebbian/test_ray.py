"""ES over Ray actors gives the same generation as local ES (loopback-only network namespace)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHECK = Path(__file__).with_name("ray_check.py")
NETNS = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c"]


@pytest.mark.slow
def test_ray_evaluation_equals_local_es():
    pytest.importorskip("ray")
    reason = None
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        reason = "unshare or ip not found"
    elif subprocess.run([*NETNS, "ip link set lo up"], capture_output=True).returncode != 0:
        reason = "unshare --net is not permitted here"
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true forbids skipping the Ray test: {reason}")
        pytest.skip(reason)
    tmp = tempfile.mkdtemp(prefix="brh", dir="/tmp")  # Ray's socket paths must stay short
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=tmp, HOME=tmp)
    try:
        proc = subprocess.run(
            [*NETNS, f"ip link set lo up; {sys.executable} {CHECK}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["ray_node_ip"] == "127.0.0.1"
    assert result["center_diff"] == 0.0
    assert all(local == remote for local, remote in result["returns"])
