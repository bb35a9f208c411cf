"""VSML's ES population split over Ray actors equals in-process ES (loopback-only netns).

The test runs this file as a script inside `unshare --net` with only `lo` up, so Ray's
traffic cannot leave the machine; the script prints one `RESULT {json}` line.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest


@pytest.mark.slow
def test_es_over_ray_actors_equals_in_process_es(loopback_ray):
    result = loopback_ray(Path(__file__), timeout=600)
    assert result["ray_node_ip"] == "127.0.0.1"
    # 3 actors on 8 members: shares of 3, 3, 2 rows cut antithetic pairs apart
    assert result["shares"] == [3, 3, 2]
    for name in ("vsml", "metarnn"):
        assert result[f"{name}_center_max_abs_diff"] <= 1e-6, result
        assert result[f"{name}_losses_max_abs_diff"] <= 1e-6, result
    # the experiment with actors=3 logs the meta-loss curve of the in-process run
    assert result["experiment_max_abs_diff"] <= 1e-6, result
    assert result["experiment_claims_max_abs_diff"] <= 1e-6, result


def _generations(learner, evaluate, popsize: int, generations: int = 2):
    """A few ES generations of `learner` on fixed episodes: final center and mean losses."""
    import torch

    from badgerlab.evolve import get_es
    from badgerlab.vsml.metatrain import es_init, es_step

    g = torch.Generator().manual_seed(0)
    state = es_init(learner, learner.init_params(generator=g), es="openai-es", popsize=popsize)
    losses = []
    for gen in range(generations):
        e = torch.Generator().manual_seed(10 + gen)
        x = torch.randn(5, popsize // 2, 2, 6, generator=e)  # (T, P/2, N, A)
        y = torch.randint(0, 3, (5, popsize // 2, 2), generator=e)
        state, loss = es_step(learner, "openai-es", state, x, y, 3, generator=g, evaluate=evaluate)
        losses.append(loss)
    return get_es("openai-es").center(state), losses


def _experiment(actors: int, out: str):
    from badgerlab.runner import execute

    over = {
        "outer": "es", "actors": actors, "popsize": 8, "generations": 2, "es_batch": 1,
        "online_lrs": [1e-2], "test_length": 8, "other_inputs": 16,
    }  # fmt: skip
    rec = execute("vsml-from-scratch", scale="smoke", overrides=over, out=out, quiet=True)
    curve = [m["meta_loss"] for m in rec.metrics if "learner" in m]
    claims = {c["id"]: c["measured"] for c in rec.claims if "seconds" not in c["id"]}
    return curve, claims


def _main() -> None:
    import ray
    import torch

    from badgerlab.evolve import RayEvaluator
    from badgerlab.vsml.baselines import MetaRNN, VSMLLearner
    from badgerlab.vsml.metatrain import population_fitness
    from badgerlab.vsml.model import VSMLConfig

    torch.set_num_threads(1)
    learners = {
        "vsml": VSMLLearner(VSMLConfig(msg_size=4, state_size=6, layer_norm=True)),
        "metarnn": MetaRNN(6, 3, hidden=8),
    }
    result: dict = {"shares": [len(s) for s in torch.arange(8).tensor_split(3)]}
    # One Ray for both checks: the experiment's evaluator joins it with actors of its own.
    ray.init(num_cpus=6, include_dashboard=False, log_to_driver=False)
    with RayEvaluator(population_fitness, actors=3) as remote:
        result["ray_node_ip"] = ray.util.get_node_ip_address()
        for name, learner in learners.items():
            local_c, local_l = _generations(learner, None, 8)
            ray_c, ray_l = _generations(learner, remote, 8)
            result[f"{name}_center_max_abs_diff"] = float((local_c - ray_c).abs().max())
            result[f"{name}_losses_max_abs_diff"] = max(
                abs(a - b) for a, b in zip(local_l, ray_l, strict=True)
            )
    out = tempfile.mkdtemp(prefix="bvx")
    local_curve, local_claims = _experiment(0, out)
    ray_curve, ray_claims = _experiment(3, out)
    result["experiment_max_abs_diff"] = max(
        abs(a - b) for a, b in zip(local_curve, ray_curve, strict=True)
    )
    result["experiment_claims_max_abs_diff"] = max(
        abs(a - b) if a is not None and b is not None else (0.0 if a == b else 1.0)
        for a, b in ((local_claims[k], ray_claims.get(k)) for k in local_claims)
    )
    ray.shutdown()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(_main())
