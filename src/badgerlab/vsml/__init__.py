"""VSML: variable-shared meta-learning RNNs (Kirsch & Schmidhuber, arXiv 2012.14905).

`model` is the grid of shared LSTMs (batched over a population and a batch axis), `dense` the
same network as one Meta-RNN with block-structured weights, `cloning` backprop cloning and
introspection of w and b in the states, `metatrain` the ES and BPTT outer loops, `baselines`
the Meta-RNN of Hochreiter et al. (2001) and the learner interface both share.
"""

from .baselines import EpisodeOutput, Learner, MetaRNN, VSMLLearner
from .cloning import CloneTask, clone_config, read_weights
from .dense import DenseMetaRNN, dense_layer
from .model import (
    VSML,
    LayerState,
    VSMLConfig,
    episode,
    init_params,
    init_state,
    layer_step,
    num_params,
    params_from_tensors,
    tick,
)

PAPER = "Kirsch & Schmidhuber, Meta Learning Backpropagation And Improving It, NeurIPS 2021"
BIBTEX = """@inproceedings{kirsch2021vsml,
  title={Meta Learning Backpropagation And Improving It},
  author={Kirsch, Louis and Schmidhuber, J{\\"u}rgen},
  booktitle={Advances in Neural Information Processing Systems},
  year={2021},
  note={arXiv:2012.14905}
}"""

__all__ = [
    "BIBTEX",
    "PAPER",
    "VSML",
    "CloneTask",
    "DenseMetaRNN",
    "EpisodeOutput",
    "LayerState",
    "Learner",
    "MetaRNN",
    "VSMLConfig",
    "VSMLLearner",
    "clone_config",
    "dense_layer",
    "episode",
    "init_params",
    "init_state",
    "layer_step",
    "num_params",
    "params_from_tensors",
    "read_weights",
    "tick",
]
