"""ES over Ray actors gives the same generation as local ES (loopback-only network namespace)."""

from __future__ import annotations

from pathlib import Path

import pytest

CHECK = Path(__file__).with_name("ray_check.py")


@pytest.mark.slow
def test_ray_evaluation_equals_local_es(loopback_ray):
    result = loopback_ray(CHECK, timeout=300)
    assert result["ray_node_ip"] == "127.0.0.1"
    assert result["center_diff"] == 0.0
    assert all(local == remote for local, remote in result["returns"])
