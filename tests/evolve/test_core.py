"""The ES family: one signature, shapes, validation, and bit-exact resume through safetensors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from badgerlab.evolve import (
    EvolutionStrategy,
    available_es,
    get_es,
    load_state,
    register_es,
    state_dict,
    state_meta,
)

ALL = available_es()
P, D = 12, 6


def f(x: torch.Tensor) -> torch.Tensor:
    return ((x - 0.5) ** 2).sum(-1) + torch.sin(3 * x).sum(-1)


def test_registry_lists_every_algorithm():
    assert {"openai-es", "openai-es-ranks", "cmaes", "pgpe", "snes"} <= set(ALL)
    with pytest.raises(ValueError, match="unknown es 'cma'"):
        get_es("cma")
    with pytest.raises(ValueError, match="already registered"):
        register_es(get_es("cmaes"))
    with pytest.raises(TypeError, match="EvolutionStrategy"):
        register_es("cmaes")


@pytest.mark.parametrize("name", ALL)
def test_ask_tell_shapes_and_determinism(name):
    es = get_es(name)
    assert isinstance(es, EvolutionStrategy) and es.resumable
    centers = []
    for _ in range(2):
        g = torch.Generator().manual_seed(0)
        state = es.init(torch.zeros(D), popsize=P)
        for _ in range(3):
            x = es.ask(state, generator=g)
            assert x.shape == (P, D) and x.dtype == torch.float32
            state = es.tell(state, x, f(x))
        assert es.center(state).shape == (D,)
        centers.append(es.center(state))
    assert torch.equal(centers[0], centers[1])
    assert not torch.equal(centers[0], torch.zeros(D))


@pytest.mark.parametrize("name", ALL)
def test_tell_rejects_bad_shapes_and_nan(name):
    es = get_es(name)
    state = es.init(torch.zeros(D), popsize=P)
    x = es.ask(state, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="x must have shape"):
        es.tell(state, x[:, :-1], f(x))
    with pytest.raises(ValueError, match="fitness"):
        es.tell(state, x, f(x)[:-1])
    bad = f(x)
    bad[3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        es.tell(state, x, bad)
    with pytest.raises(TypeError, match="center"):
        es.init([0.0] * D, popsize=P)


@pytest.mark.parametrize("name", ALL)
def test_resumed_run_equals_uninterrupted_bit_for_bit(name, tmp_path):
    es = get_es(name)
    maximize = name == "openai-es-ranks"
    sign = -1.0 if maximize else 1.0

    def run(state, g, gens):
        for _ in range(gens):
            x = es.ask(state, generator=g)
            state = es.tell(state, x, sign * f(x))
        return state

    g = torch.Generator().manual_seed(7)
    full = run(es.init(torch.zeros(D), popsize=P, maximize=maximize), g, 20)

    g = torch.Generator().manual_seed(7)
    half = run(es.init(torch.zeros(D), popsize=P, maximize=maximize), g, 10)
    save_file(state_dict(half, generator=g), str(tmp_path / "es.safetensors"))
    (tmp_path / "es.json").write_text(json.dumps(state_meta(half)))
    del half, g

    g2 = torch.Generator()
    template = es.init(torch.zeros(D), popsize=P, maximize=maximize)
    resumed = load_state(
        template,
        load_file(str(tmp_path / "es.safetensors")),
        meta=json.loads((tmp_path / "es.json").read_text()),
        generator=g2,
    )
    resumed = run(resumed, g2, 10)
    full_t, resumed_t = state_dict(full), state_dict(resumed)
    assert full_t.keys() == resumed_t.keys()
    for key in full_t:
        assert torch.equal(full_t[key], resumed_t[key]), key
    assert state_meta(full) == state_meta(resumed)


def test_load_state_rejects_changed_config_and_missing_fields():
    es = get_es("openai-es")
    state = es.init(torch.zeros(D), popsize=P)
    tensors, meta = state_dict(state), state_meta(state)
    with pytest.raises(ValueError, match="popsize"):
        load_state(es.init(torch.zeros(D), popsize=P + 2), tensors, meta=meta)
    with pytest.raises(ValueError, match="shape"):
        load_state(es.init(torch.zeros(D + 1), popsize=P), tensors)
    del tensors["sigma"]
    with pytest.raises(ValueError, match="sigma"):
        load_state(state, tensors)
    with pytest.raises(ValueError, match="generator"):
        load_state(state, state_dict(state), generator=torch.Generator())
