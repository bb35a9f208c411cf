"""Run inside a loopback-only network namespace by test_ray.py: Ray ES equals local ES."""

from __future__ import annotations

import json

import torch

from badgerlab.hebbian.policy import HebbianPolicy
from badgerlab.hebbian.tasks import get_task, vector_env
from badgerlab.hebbian.train import ESTrainer, ray_evaluator


def main() -> None:
    torch.set_num_threads(1)
    task, P, steps = get_task("HalfCheetah-v5"), 6, 25
    envs = vector_env(task, P, max_steps=steps)
    diffs, returns = [], []
    with ray_evaluator(2, task, popsize=P, max_steps=steps) as evaluator:
        import ray

        node_ip = ray.util.get_node_ip_address()
        # One actor pool serves both the Hebbian and the static policy, as in an experiment.
        for plastic in (True, False):
            policy = HebbianPolicy(task.spec([8], plastic=plastic))
            local = ESTrainer(policy, envs, popsize=P, seed=4)
            remote = ESTrainer(policy, None, popsize=P, seed=4, evaluator=evaluator)
            for _ in range(2):
                a, b = local.step(), remote.step()
                returns.append([a["return_mean"], b["return_mean"]])
            diffs.append(float((local.center - remote.center).abs().max()))
    print("RESULT " + json.dumps({"center_diff": max(diffs), "ray_node_ip": node_ip,
                                  "returns": returns}))  # fmt: skip


if __name__ == "__main__":
    main()
