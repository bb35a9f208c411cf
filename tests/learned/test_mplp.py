"""MPLP: the backprop special case, batched GRU vs loop, meta-gradient vs finite differences,
meta-training on sinusoids, tasks and errors."""

from __future__ import annotations

import pytest
import torch

from badgerlab.learned import mplp as M

F64 = torch.float64


def _problem(sizes, seed=0, classes=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(7, sizes[0], generator=g, dtype=F64)
    if classes:
        y = torch.nn.functional.one_hot(torch.randint(0, sizes[-1], (7,), generator=g), sizes[-1])
        y = y.to(F64)
    else:
        y = torch.randn(7, sizes[-1], generator=g, dtype=F64)
    return x, y, M.init_net(sizes, "tanh", generator=g, dtype=F64)


def _autograd_sgd(net, x, y, lr, steps, activation, loss):
    """Plain SGD with torch.autograd on the same network; params and loss after every step."""
    ps = [p.clone().requires_grad_() for wb in net for p in wb]
    params, losses = [], []
    for _ in range(steps):
        pairs = list(zip(ps[0::2], ps[1::2], strict=True))
        pred = M.forward(pairs, x, activation)[0]
        if loss == "mse":
            value = torch.nn.functional.mse_loss(pred, y)
        else:
            value = torch.nn.functional.cross_entropy(pred, y.argmax(-1))
        grads = torch.autograd.grad(value, ps)
        ps = [(p - lr * g).detach().requires_grad_() for p, g in zip(ps, grads, strict=True)]
        losses.append(value.detach())
        params.append([p.detach() for p in ps])
    return params, torch.stack(losses)


@pytest.mark.parametrize(
    ("sizes", "activation", "loss"),
    [((3, 5, 4, 2), "tanh", "mse"), ((1, 6, 6, 1), "relu", "mse"), ((4, 6, 3), "sigmoid", "ce")],
)
def test_sgd_learner_is_plain_sgd_step_for_step(sizes, activation, loss):
    x, y, net = _problem(sizes, classes=loss == "ce")
    lr, steps = 0.3, 5
    ref_params, ref_losses = _autograd_sgd(net, x, y, lr, steps, activation, loss)
    theta = M.sgd_theta(lr)
    for t in range(1, steps + 1):
        out, losses = M.inner_loop(
            theta, net, x, y, t, learner="sgd", activation=activation, loss=loss
        )
        flat = [p for wb in out for p in wb]
        for a, b in zip(flat, ref_params[t - 1], strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
        torch.testing.assert_close(losses, ref_losses[:t], atol=1e-12, rtol=0)
    assert ref_losses[-1] < ref_losses[0]  # the reference did learn


def test_batched_gru_equals_per_parameter_loop():
    g = torch.Generator().manual_seed(1)
    theta = M.init_theta(2, hidden=5, message=3, generator=g, dtype=F64)
    p = theta["dense"][0]
    w, b = torch.randn(4, 6, generator=g, dtype=F64), torch.randn(6, generator=g, dtype=F64)
    x = torch.randn(3, 4, generator=g, dtype=F64)
    m = torch.randn(3, 6, 3, generator=g, dtype=F64)
    c = torch.randn(3, 5, 6, 5, generator=g, dtype=F64)
    (dw, db), msg, c2 = M.gru_dense(p, w, b, 0.5, x, m, c)
    (dw_l, db_l), msg_l, c2_l = M.gru_dense_loop(p, w, b, 0.5, x, m, c)
    assert dw.shape == (4, 6) and db.shape == (6,) and msg.shape == (3, 4, 3)
    for a, r in [(dw, dw_l), (db, db_l), (msg, msg_l), (c2, c2_l)]:
        torch.testing.assert_close(a, r, atol=1e-12, rtol=0)
    # and the whole inner loop, every node stateful over 3 steps
    x, y, net = _problem((2, 4, 1))
    a, la = M.inner_loop(theta, net, x, y, 3, activation="tanh")
    r, lr = M.inner_loop(theta, net, x, y, 3, activation="tanh", learner="gru_loop")
    for u, v in zip([t for wb in a for t in wb], [t for wb in r for t in wb], strict=True):
        torch.testing.assert_close(u, v, atol=1e-12, rtol=0)
    torch.testing.assert_close(la, lr, atol=1e-12, rtol=0)


def test_run_tasks_vmap_equals_one_task_at_a_time():
    g = torch.Generator().manual_seed(2)
    theta = M.init_theta(2, hidden=4, message=2, generator=g, dtype=F64)
    tasks = M.sample_sine_tasks(3, k_support=5, k_query=4, generator=g, dtype=F64)
    nets = M.init_nets((1, 6, 1), "tanh", 3, g, F64)
    _, sup, query = M.run_tasks(theta, tasks, 3, hidden=(6,), nets=nets, activation="tanh")
    for k in range(3):
        net = [(w[k], b[k]) for w, b in nets]
        _, s, q = M.inner_loop(
            theta,
            net,
            tasks.x[k],
            tasks.y[k],
            3,
            activation="tanh",
            x_query=tasks.x_query[k],
            y_query=tasks.y_query[k],
        )
        torch.testing.assert_close(sup[k], s, atol=1e-12, rtol=0)
        torch.testing.assert_close(query[k], q, atol=1e-12, rtol=0)


def _fd_setup(loss):
    g = torch.Generator().manual_seed(3)
    theta = M.init_theta(2, hidden=3, message=2, scale=0.5, generator=g, dtype=F64)
    if loss == "mse":
        tasks = M.sample_sine_tasks(2, k_support=4, k_query=3, generator=g, dtype=F64)
    else:
        x, y = torch.randn(20, 2, generator=g, dtype=F64), torch.arange(20) % 3
        tasks = M.sample_class_tasks(x, y, 2, n_support=5, n_query=4, generator=g)
    d_in, d_out = tasks.x.shape[-1], tasks.y.shape[-1]
    nets = M.init_nets((d_in, 3, d_out), "tanh", 2, g, F64)
    leaves = M.theta_leaves(theta)
    direction = [torch.randn(t.shape, generator=g, dtype=F64) for t in leaves]
    return theta, tasks, nets, leaves, direction


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_meta_gradient_matches_finite_differences(loss):
    theta, tasks, nets, leaves, direction = _fd_setup(loss)
    kw = {"hidden": (3,), "nets": nets, "activation": "tanh", "target": "mean", "loss": loss}
    for t in leaves:
        t.requires_grad_()
    grads = torch.autograd.grad(M.meta_loss(theta, tasks, 3, **kw), leaves)
    analytic = sum((g * d).sum() for g, d in zip(grads, direction, strict=True))
    eps = 1e-6
    values = []
    with torch.no_grad():
        for sign in (1, -1):
            for t, d in zip(leaves, direction, strict=True):
                t.add_(sign * eps * d)
            values.append(M.meta_loss(theta, tasks, 3, **kw))
            for t, d in zip(leaves, direction, strict=True):
                t.sub_(sign * eps * d)
    numeric = (values[0] - values[1]) / (2 * eps)
    assert abs(analytic) > 1e-4
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-9)
    # truncation: a window as long as the unroll is the full gradient, a shorter one is not
    full = torch.autograd.grad(M.meta_loss(theta, tasks, 3, truncate=3, **kw), leaves)
    short = torch.autograd.grad(M.meta_loss(theta, tasks, 3, truncate=1, **kw), leaves)
    for a, b in zip(full, grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert max(float((a - b).abs().max()) for a, b in zip(short, grads, strict=True)) > 1e-6


def test_meta_training_lowers_five_step_sinusoid_mse():
    """A short meta-training (fixed budget of outer steps) must lower the 5-step test MSE on
    fresh tasks to <= 0.8x both its value at the random initial learner and the untrained
    network's MSE (no inner steps)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    hidden, steps = (10, 10), 5
    theta = M.init_theta(3, hidden=8, message=2, generator=g)
    test = M.sample_sine_tasks(32, k_query=20, generator=torch.Generator().manual_seed(9))

    def score():
        init = torch.Generator().manual_seed(5)
        return M.evaluate(theta, test, steps, hidden=hidden, generator=init)

    start = score()
    no_learning = M.evaluate(
        theta, test, 0, hidden=hidden, generator=torch.Generator().manual_seed(5)
    )
    opt = torch.optim.Adam([t.requires_grad_() for t in M.theta_leaves(theta)], lr=3e-3)
    for _ in range(60):
        tasks = M.sample_sine_tasks(8, generator=g)
        M.meta_train_step(theta, opt, tasks, steps, hidden=hidden, generator=g)
    assert score() <= 0.8 * min(start, no_learning)


def test_class_tasks_and_sgd_classification():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(60, 2, 3, generator=g)
    y = torch.arange(60) % 4
    tasks = M.sample_class_tasks(x, y, 5, n_support=10, n_query=8, n_classes=3, dim=5, generator=g)
    assert tasks.x.shape == (5, 10, 5) and tasks.y.shape == (5, 10, 3)
    assert tasks.x_query.shape == (5, 8, 5) and tasks.y_query.shape == (5, 8, 3)
    torch.testing.assert_close(tasks.x.mean(1), torch.zeros(5, 5), atol=1e-5, rtol=0)
    assert bool((tasks.y.sum(-1) == 1).all())
    # separable classes: the backprop learner through the CE node learns them
    labels = torch.arange(90) % 3
    xs = torch.nn.functional.one_hot(labels, 3).float() * 3 + 0.3 * torch.randn(90, 3, generator=g)
    tasks = M.sample_class_tasks(xs, labels, 4, n_support=30, n_query=30, generator=g)
    acc = M.evaluate_classification(
        M.sgd_theta(0.5, dtype=torch.float32), tasks, 20, hidden=(8,), learner="sgd", generator=g
    )
    assert acc > 0.9


def test_tune_sgd_lr_picks_the_best_of_the_grid():
    tasks = M.sample_sine_tasks(8, generator=torch.Generator().manual_seed(6))
    g = torch.Generator().manual_seed(8)
    best, scores = M.tune_sgd_lr(tasks, 5, grid=(1e-4, 1e-2, 10.0), hidden=(10,), generator=g)
    assert best == min(scores, key=scores.get) == 1e-2
    assert scores[10.0] == float("inf")  # diverged
    again = M.evaluate(
        M.sgd_theta(1e-2, dtype=torch.float32),
        tasks,
        5,
        hidden=(10,),
        learner="sgd",
        generator=torch.Generator().manual_seed(8),
    )
    assert again == scores[1e-2]  # every lr ran from the same initial networks


def test_theta_vector_round_trip():
    theta = M.init_theta(3, hidden=4, message=2, generator=torch.Generator().manual_seed(0))
    vec = M.theta_to_vector(theta)
    back = M.theta_from_vector(vec * 2, theta)
    for a, b in zip(M.theta_leaves(back), M.theta_leaves(theta), strict=True):
        torch.testing.assert_close(a, 2 * b)
    with pytest.raises(ValueError, match="vec must have shape"):
        M.theta_from_vector(vec[:-1], theta)


def test_bad_inputs_raise():
    g = torch.Generator().manual_seed(0)
    net = M.init_net((2, 3, 1), generator=g)
    x, y = torch.randn(4, 2), torch.randn(4, 1)
    theta = M.init_theta(2)
    with pytest.raises(ValueError, match="sizes"):
        M.init_net((3,))
    with pytest.raises(ValueError, match="sizes\\[1\\]"):
        M.init_net((3, 0, 1))
    with pytest.raises(ValueError, match="activation"):
        M.forward(net, x, "gelu")
    with pytest.raises(ValueError, match="loss"):
        M.inner_loop(theta, net, x, y, 2, loss="l1")
    with pytest.raises(ValueError, match="steps"):
        M.inner_loop(theta, net, x, y, -1)
    with pytest.raises(ValueError, match="truncate"):
        M.inner_loop(theta, net, x, y, 2, truncate=0)
    with pytest.raises(ValueError, match="learner"):
        M.inner_loop(theta, net, x, y, 2, learner="adam")
    with pytest.raises(ValueError, match="x \\(B, D\\)"):
        M.inner_loop(theta, net, x, y[:3], 2)
    with pytest.raises(ValueError, match="lr"):
        M.sgd_theta(-1.0)
    with pytest.raises(ValueError, match="hidden"):
        M.init_theta(2, hidden=0)
    with pytest.raises(ValueError, match="n_tasks"):
        M.sample_sine_tasks(0)
    with pytest.raises(ValueError, match="n_classes"):
        M.sample_class_tasks(
            torch.randn(10, 2), torch.arange(10) % 2, 1, n_support=2, n_query=2, n_classes=3
        )
    with pytest.raises(ValueError, match="exceeds"):
        M.sample_class_tasks(torch.randn(10, 2), torch.arange(10) % 2, 1, n_support=8, n_query=8)
    with pytest.raises(ValueError, match="nets has"):
        M.run_tasks(theta, M.sample_sine_tasks(2), 1, hidden=(3,), nets=[net[0]])
    with pytest.raises(ValueError, match="learners for 3 layers"):
        M.inner_loop(M.init_theta(3), net, x, y, 1)
    with pytest.raises(ValueError, match="grid"):
        M.tune_sgd_lr(M.sample_sine_tasks(2), 1, grid=())
    with pytest.raises(ValueError, match="target"):
        M.meta_loss(theta, M.sample_sine_tasks(2), 1, target="best")
