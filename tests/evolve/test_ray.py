"""Ray evaluation equals local evaluation and survives a killed actor (loopback-only netns)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from badgerlab.evolve import RayEvaluator

CHECKS = Path(__file__).with_name("ray_checks.py")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _netns_available() -> str | None:
    """None if `unshare --net` works here, else why not."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip not found"
    probe = subprocess.run(
        ["unshare", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c", "ip link set lo up"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"unshare --net failed: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def ray_results() -> dict:
    """Run every Ray check in one subprocess: one Ray start, inside its own network namespace.

    The PID namespace makes every Ray process die with the subprocess, whatever happens.
    """
    pytest.importorskip("ray")
    reason = _netns_available()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true forbids skipping the Ray test: {reason}")
        pytest.skip(reason)
    # A short private directory: Ray's unix socket paths must stay under ~107 characters.
    tmp = tempfile.mkdtemp(prefix="brl", dir="/tmp")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=tmp, HOME=tmp)
    script = f"ip link set lo up; {sys.executable} {CHECKS}"
    try:
        proc = subprocess.run(
            ["unshare", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
            capture_output=True,
            text=True,
            env=env,
            timeout=240,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def test_ray_stays_on_loopback(ray_results):
    assert ray_results["ray_node_ip"] == "127.0.0.1"


def test_ray_evaluation_equals_local(ray_results):
    assert ray_results["mlp_max_abs_diff"] <= 1e-6
    assert ray_results["es_center_max_abs_diff"] <= 1e-6


def test_killed_actor_still_gives_full_fitness(ray_results):
    assert ray_results["kill_failures"] == 1
    assert ray_results["kill_len"] == 9 and ray_results["kill_equal"]
    assert ray_results["after_kill_equal"] and ray_results["actors_after"] == 2


def test_evaluator_arguments_are_checked_before_ray_starts():
    with pytest.raises(ValueError, match="actors"):
        RayEvaluator(lambda x: x.sum(-1), actors=0)
    with pytest.raises(ValueError, match="actors=N"):
        RayEvaluator(lambda x: x.sum(-1))
    with pytest.raises(TypeError, match="fitness_fn"):
        RayEvaluator(torch.zeros(3), actors=1)
