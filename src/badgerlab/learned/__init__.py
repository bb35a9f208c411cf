"""Learned learners: meta-learning when (not) to learn on bandits (RL^2 + A2C)."""

from badgerlab.learned.bandits import (
    BanditFamily,
    Oracle,
    behaviour,
    oracle,
    oracle_actions,
    sample_tasks,
    step_rewards,
)
from badgerlab.learned.rl2 import a2c_loss, init_params, normalise_advantages, rollout

NOT_TO_LEARN_PAPER = (
    "Lange & Sprekeler, Learning not to learn: Nature versus nurture in silico, AAAI 2022"
)
NOT_TO_LEARN_BIBTEX = """@inproceedings{lange2022learning,
  title     = {Learning not to learn: Nature versus nurture in silico},
  author    = {Lange, Robert Tjarko and Sprekeler, Henning},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  year      = {2022},
  note      = {arXiv:2010.04466}
}"""

__all__ = [
    "NOT_TO_LEARN_BIBTEX",
    "NOT_TO_LEARN_PAPER",
    "BanditFamily",
    "Oracle",
    "a2c_loss",
    "behaviour",
    "init_params",
    "normalise_advantages",
    "oracle",
    "oracle_actions",
    "rollout",
    "sample_tasks",
    "step_rewards",
]
