"""Hebbian meta-learning (Najarro & Risi 2020): evolved ABCD plasticity in random networks."""

from badgerlab.hebbian.envs import (
    ANT_LEGS,
    BurnIn,
    EpisodeVectorEnv,
    NegativeRewardStop,
    ant_xml,
    make_ant,
    make_env,
)
from badgerlab.hebbian.policy import (
    HebbianPolicy,
    PolicySpec,
    PolicyState,
    abs_max_normalise,
    cnn_features,
    preprocess_pixels,
)
from badgerlab.hebbian.rollout import Rollout, l2_penalty, rollout
from badgerlab.hebbian.rules import (
    RULES,
    SHARING,
    FoldedRule,
    HebbianRule,
    PlasticityLayout,
    apply_folded,
    fold,
    get_rule,
    hebbian_update,
    register_rule,
    rules,
)
from badgerlab.hebbian.tasks import TASKS, Task, box2d_available, get_task, vector_env
from badgerlab.hebbian.train import (
    ESTrainer,
    RolloutFitness,
    evaluate,
    member_seeds,
    ray_evaluator,
    scaled_lr,
    train_agents,
)

#: The paper every Hebbian experiment reproduces part of.
PAPER = "Najarro & Risi, Meta-Learning through Hebbian Plasticity in Random Networks, NeurIPS 2020"
BIBTEX = """@inproceedings{najarro2020hebbian,
  title={Meta-Learning through Hebbian Plasticity in Random Networks},
  author={Najarro, Elias and Risi, Sebastian},
  booktitle={Advances in Neural Information Processing Systems},
  year={2020},
  note={arXiv:2007.02686}
}"""

__all__ = [
    "ANT_LEGS",
    "BIBTEX",
    "PAPER",
    "RULES",
    "SHARING",
    "TASKS",
    "ESTrainer",
    "RolloutFitness",
    "Task",
    "box2d_available",
    "evaluate",
    "get_task",
    "member_seeds",
    "scaled_lr",
    "train_agents",
    "ray_evaluator",
    "vector_env",
    "BurnIn",
    "EpisodeVectorEnv",
    "FoldedRule",
    "HebbianPolicy",
    "HebbianRule",
    "NegativeRewardStop",
    "PlasticityLayout",
    "PolicySpec",
    "PolicyState",
    "Rollout",
    "abs_max_normalise",
    "ant_xml",
    "apply_folded",
    "cnn_features",
    "fold",
    "get_rule",
    "hebbian_update",
    "l2_penalty",
    "make_ant",
    "make_env",
    "preprocess_pixels",
    "register_rule",
    "rollout",
    "rules",
]
