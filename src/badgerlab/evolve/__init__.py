"""Evolution strategies as functional ask/tell over tensor state, and population evaluation.

Every algorithm in the registry has the same four functions (see ``EvolutionStrategy``)::

    state = es.init(center, popsize=P, maximize=False, **options)
    x = es.ask(state, generator=g)          # (P, D)
    state = es.tell(state, x, fitness)      # fitness (P,)
    es.center(state)                        # (D,), the current solution

The state is a NamedTuple of tensors plus plain hyper-parameters: ``state_dict`` turns it (and
the generator) into tensors for safetensors, ``state_meta`` gives the JSON part, and
``load_state`` restores both so a resumed run equals an uninterrupted one bit for bit.

Registered: ``openai-es`` (VSML reference: raw antithetic differences, σ 0.05, Adam 0.025),
``openai-es-ranks`` (Hebbian reference: centred ranks, SGD lr 0.2×0.995, σ 0.1×0.999),
``cmaes``, ``pgpe`` and ``snes`` (EvoTorch's update rules). ``evaluate_population`` runs
P parameter vectors of one ``nn.Module`` in one vmapped call; ``RayEvaluator`` spreads them
over Ray actors.

Example: fit a linear model's 4 parameters with OpenAI-ES, checkpoint mid-way and resume.

>>> import torch
>>> from torch import nn
>>> from badgerlab.evolve import (evaluate_population, flatten_params, get_es, load_state,
...                               state_dict, state_meta)
>>> torch.manual_seed(0) and None
>>> net = nn.Linear(3, 1)
>>> a = torch.randn(64, 3)
>>> b = a @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
>>> mse = lambda forward, a, b: ((forward(a) - b) ** 2).mean()
>>> es = get_es("openai-es")
>>> g = torch.Generator().manual_seed(0)
>>> state = es.init(flatten_params(net), popsize=32, lr=0.05)
>>> for _ in range(150):
...     x = es.ask(state, generator=g)                       # (32, 4)
...     state = es.tell(state, x, evaluate_population(net, mse, x, a, b))
>>> saved, meta = state_dict(state, generator=g), state_meta(state)
>>> restored = load_state(es.init(flatten_params(net), popsize=32, lr=0.05), saved,
...                       meta=meta, generator=g)
>>> for _ in range(150):
...     x = es.ask(restored, generator=g)
...     restored = es.tell(restored, x, evaluate_population(net, mse, x, a, b))
>>> bool(evaluate_population(net, mse, es.center(restored)[None], a, b) < 1e-3)
True
"""

from . import evotorch_es, openai_es
from .core import (
    ES,
    EvolutionStrategy,
    available_es,
    get_es,
    load_state,
    register_es,
    state_dict,
    state_meta,
)
from .openai_es import HEBBIAN_DEFAULTS, VSML_DEFAULTS, OpenAIESState
from .population import (
    evaluate_population,
    flatten_params,
    load_flat_params,
    num_params,
    population_call,
    unflatten_params,
)
from .ray import RayEvaluator
from .shaping import SHAPINGS, available_shapings, centred_ranks, get_shaping, register_shaping

__all__ = [
    "ES",
    "SHAPINGS",
    "HEBBIAN_DEFAULTS",
    "VSML_DEFAULTS",
    "EvolutionStrategy",
    "OpenAIESState",
    "RayEvaluator",
    "available_es",
    "available_shapings",
    "centred_ranks",
    "evaluate_population",
    "evotorch_es",
    "flatten_params",
    "get_es",
    "get_shaping",
    "load_flat_params",
    "load_state",
    "num_params",
    "openai_es",
    "population_call",
    "register_es",
    "register_shaping",
    "state_dict",
    "state_meta",
    "unflatten_params",
]
