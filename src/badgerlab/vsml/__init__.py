"""VSML: variable-shared meta-learning RNNs (Kirsch & Schmidhuber, arXiv 2012.14905)."""

from .model import VSML, VSMLConfig, episode, init_params, init_state, num_params, tick

__all__ = ["VSML", "VSMLConfig", "episode", "init_params", "init_state", "num_params", "tick"]
