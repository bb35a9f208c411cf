"""Meta-training the learned optimizer: task family, unrolls, BPTT, antithetic ES and PES."""

from __future__ import annotations

import math

import pytest
import torch

from badgerlab.evolve.openai_es import openai_es_init
from badgerlab.learned.lopt import init_theta, theta_to_vector
from badgerlab.learned.metatrain import (
    PESState,
    Task,
    TaskFamily,
    antithetic_grad,
    bptt_grad,
    dataset_task,
    es_generation,
    es_grad,
    hidden_of,
    init_inner,
    meta_objective,
    pes_generation,
    pes_grad,
    pes_init,
    population,
    population_unroll,
    sample_task,
    unroll,
)

TINY = TaskFamily(dims=(8,), max_examples=64, widths=(8,), depths=(1,), max_classes=4)


def _tiny_task(dtype=torch.float64) -> Task:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20, 3, generator=g, dtype=dtype)
    y = torch.randint(0, 3, (20,), generator=g)
    return Task(x, y, 3, (4,), "tanh", 1.0, "tiny")


def _theta(hidden: int, seed: int, dtype=torch.float64, out_scale: float = 300.0) -> torch.Tensor:
    """A head whose steps are large enough to matter in a few updates."""
    th = init_theta(hidden, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    th["w2"] = th["w2"] * out_scale
    return theta_to_vector(th)


def test_sample_task_is_a_function_of_the_generator():
    a = sample_task(TaskFamily(), torch.Generator().manual_seed(5))
    b = sample_task(TaskFamily(), torch.Generator().manual_seed(5))
    assert a.name == b.name and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.x.shape[0] <= 256 and a.y.max() < a.num_classes
    assert set(a.y.tolist()) == set(range(a.num_classes))
    params, _ = init_inner(a, torch.Generator().manual_seed(0))
    assert [tuple(p.shape) for p in params] == a.shapes
    # at init the cross-entropy is near log k (the scale is at most 2)
    assert float(a.loss(params)) < 3 * math.log(a.num_classes) + 1


def test_pes_over_one_truncation_is_antithetic_es_with_the_same_noise():
    task = sample_task(TINY, torch.Generator().manual_seed(0), dtype=torch.float64)
    inner = init_inner(task, torch.Generator().manual_seed(1))
    theta = _theta(4, 2)
    eps = torch.randn(
        6, theta.shape[0], generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    fn = population_unroll(task, 5)
    es = es_grad(theta, fn, inner, eps, 0.1)
    pes, state, _ = pes_grad(theta, pes_init(inner, 12, theta.shape[0]), fn, eps, 0.1)
    assert torch.equal(pes, es)
    assert torch.equal(state.xi, eps)


def _quadratic_fn(a: float = 0.9, steps: int = 3):
    """Inner s_{t+1} = a·s_t + θ, loss Σ_t ½‖s_{t+1} − c‖² per truncation (quadratic in θ)."""
    c = torch.tensor([1.0, -2.0], dtype=torch.float64)

    def fn(thetas, s):  # thetas (P, 2), s (P, 2)
        total = torch.zeros(thetas.shape[0], dtype=torch.float64)
        for _ in range(steps):
            s = a * s + thetas
            total = total + 0.5 * ((s - c) ** 2).sum(-1)
        return s, total

    return fn


def test_pes_is_unbiased_for_the_smoothed_full_unroll_and_truncated_es_is_not():
    """The loss is quadratic in the per-truncation parameters, so Gaussian smoothing only adds
    a constant: the smoothed gradient is the exact gradient of the unperturbed full unroll."""
    fn, truncations, sigma, pairs = _quadratic_fn(), 4, 0.1, 100_000
    theta = torch.tensor([0.3, 0.2], dtype=torch.float64, requires_grad=True)
    s, ref = torch.zeros(1, 2, dtype=torch.float64), 0.0
    for _ in range(truncations):
        s, loss = fn(theta[None], s)
        ref = ref + loss.sum()
    (exact,) = torch.autograd.grad(ref, theta)
    theta = theta.detach()
    g = torch.Generator().manual_seed(0)
    state = pes_init(torch.zeros(2, dtype=torch.float64), 2 * pairs, 2)
    pes_total, naive_total = torch.zeros(2, dtype=torch.float64), 0.0
    per_pair = torch.zeros(pairs, 2, dtype=torch.float64)
    for _ in range(truncations):
        eps = torch.randn(pairs, 2, generator=g, dtype=torch.float64)
        est, state, losses = pes_grad(theta, state, fn, eps, sigma)
        pes_total = pes_total + est
        naive_total = naive_total + antithetic_grad(losses, eps, sigma)
        d = losses.reshape(-1, 2)
        per_pair += ((d[:, 0] - d[:, 1]) / (2 * sigma))[:, None] * state.xi
    stderr = per_pair.std(0) / math.sqrt(pairs)
    # Stated tolerance: 4 standard errors of the estimate and 2% of the gradient's norm.
    assert torch.all((pes_total - exact).abs() < 4 * stderr)
    assert float((pes_total - exact).norm()) < 0.02 * float(exact.norm())
    # Weighting each truncation by its own noise only forgets the earlier truncations' effect.
    assert float((naive_total - exact).norm()) > 0.2 * float(exact.norm())


@pytest.mark.parametrize("truncation", [4, 2])
def test_bptt_meta_gradient_matches_finite_differences(truncation):
    task = _tiny_task()
    theta = _theta(2, 0)
    inner = init_inner(task, torch.Generator().manual_seed(1))
    grad, _, values = bptt_grad(theta, task, inner, 4, truncation)
    assert values.shape == (4 // truncation,)

    def segment_losses(th):  # segments start from the unperturbed inner states
        inn, out = inner, 0.0
        for _ in range(4 // truncation):
            _, losses = unroll(th, task, inn, truncation)
            out = out + meta_objective(losses)
            inn, _ = unroll(theta, task, inn, truncation)
        return out / (4 // truncation)

    h, g = 1e-6, torch.Generator().manual_seed(7)
    for _ in range(4):  # directional derivatives along random directions
        u = torch.randn(theta.shape, generator=g, dtype=torch.float64)
        fd = (segment_losses(theta + h * u) - segment_losses(theta - h * u)) / (2 * h)
        torch.testing.assert_close(grad @ u, fd, rtol=1e-5, atol=1e-9)
    assert float(grad.norm()) > 1e-3


def _heldout_meta_loss(theta: torch.Tensor, steps: int) -> float:
    g = torch.Generator().manual_seed(999)
    family = TaskFamily(**{**TINY.__dict__, "split": "test"})
    total = 0.0
    for _ in range(4):
        task = sample_task(family, g)
        _, losses = unroll(theta, task, init_inner(task, g), steps)
        total += float(meta_objective(losses))
    return total / 4


def test_short_es_meta_training_lowers_the_heldout_meta_loss():
    g = torch.Generator().manual_seed(0)
    theta = _theta(4, 0, torch.float32, out_scale=100.0)  # outputs O(1) at init, as the reference
    es = openai_es_init(theta, popsize=8, sigma=0.05, lr=0.1)
    before = _heldout_meta_loss(es.center, 10)
    for _ in range(20):
        task = sample_task(TINY, g)
        es, _ = es_generation(es, population_unroll(task, 10), init_inner(task, g), g)
    after = _heldout_meta_loss(es.center, 10)
    # margin fixed in advance: the mean log-loss over the unroll drops by at least 0.1
    assert after < before - 0.1, (before, after)


def test_pes_generation_runs_particles_on_and_descends():
    g = torch.Generator().manual_seed(1)
    theta = theta_to_vector(init_theta(4, generator=g))
    es = openai_es_init(theta, popsize=8, sigma=0.05, lr=0.05)
    task = sample_task(TINY, g)
    inner = init_inner(task, g)
    pes = pes_init(inner, 8, theta.shape[0])
    fn = population_unroll(task, 5)
    for _ in range(3):
        es, pes, losses = pes_generation(es, pes, fn, g)
    assert isinstance(pes, PESState) and losses.shape == (8,)
    assert int(pes.inner[1].step[0]) == 15  # every particle kept its state: 3 × 5 steps
    assert not torch.equal(es.center, theta)


def test_dataset_tasks_and_population_layout():
    t = dataset_task("iris", widths=(16,))
    assert t.x.shape == (120, 4) and t.num_classes == 3
    torch.testing.assert_close(t.x.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    eps = torch.ones(2, 3)
    x = population(torch.zeros(3), eps, 0.5)
    assert x[0].tolist() == [0.5] * 3 and x[1].tolist() == [-0.5] * 3


def test_meta_objective_closed_form_and_clipping():
    losses = torch.tensor([[1.0, math.e, 0.0], [float("nan"), 1e-9, 2.0]], dtype=torch.float64)
    mean = meta_objective(losses, min_loss=1e-3, max_loss=5.0)
    want0 = (0.0 + 1.0 + math.log(1e-3)) / 3  # an exact 0 is floored at L_min
    want1 = (math.log(5.0) + math.log(1e-3) + math.log(2.0)) / 3  # NaN counts as L_max
    torch.testing.assert_close(mean, torch.tensor([want0, want1], dtype=torch.float64))
    final = meta_objective(losses, kind="final", min_loss=1e-3, max_loss=5.0)
    torch.testing.assert_close(final, torch.tensor([math.log(1e-3), math.log(2.0)]).double())


def test_bad_inputs_raise_value_errors_naming_them():
    task = _tiny_task()
    inner = init_inner(task, torch.Generator().manual_seed(0))
    theta = _theta(2, 0)
    with pytest.raises(ValueError, match="max_classes"):
        TaskFamily(max_classes=11)
    with pytest.raises(ValueError, match="activations"):
        TaskFamily(activations=("swish",))
    with pytest.raises(ValueError, match="generator"):
        sample_task(TaskFamily(), 0)
    with pytest.raises(ValueError, match="name"):
        dataset_task("cifar")
    with pytest.raises(ValueError, match="kind"):
        meta_objective(torch.ones(3), kind="best")
    with pytest.raises(ValueError, match="min_loss"):
        meta_objective(torch.ones(3), min_loss=0.0)
    with pytest.raises(ValueError, match="max_loss"):
        meta_objective(torch.ones(3), min_loss=1.0, max_loss=0.5)
    with pytest.raises(ValueError, match="num_theta"):
        hidden_of(torch.zeros(10))
    with pytest.raises(ValueError, match="steps"):
        unroll(theta, task, inner, 0)
    with pytest.raises(ValueError, match="truncation"):
        bptt_grad(theta, task, inner, 5, 2)
    with pytest.raises(ValueError, match="popsize"):
        pes_init(inner, 3, theta.shape[0])
    with pytest.raises(ValueError, match="activation"):
        Task(task.x, task.y, 3, (4,), "swish", 1.0)
    ranks = openai_es_init(theta, popsize=4, shaping="centred_ranks")
    pes = pes_init(inner, 4, theta.shape[0])
    with pytest.raises(ValueError, match="shaping"):
        pes_generation(ranks, pes, population_unroll(task, 2), torch.Generator())
