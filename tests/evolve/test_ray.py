"""Ray evaluation equals local evaluation and survives a killed actor (loopback-only netns)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from badgerlab.evolve import RayEvaluator

CHECKS = Path(__file__).with_name("ray_checks.py")


@pytest.fixture(scope="module")
def ray_results(loopback_ray) -> dict:
    """Every Ray check in one subprocess: one Ray start, inside its own network namespace."""
    return loopback_ray(CHECKS, timeout=240)


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
