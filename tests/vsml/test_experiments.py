"""The VSML experiments: a saved meta-trained model reloads on a new grid size; exact resume."""

from __future__ import annotations

import math

import pytest
import torch

from badgerlab.experiments import vsml_from_scratch as fs
from badgerlab.runner import execute
from badgerlab.runs import Run
from badgerlab.vsml.model import VSMLConfig, episode, params_from_tensors


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return execute(
        "vsml-from-scratch", scale="smoke", overrides={"checkpoint_every": 1}, out=out, quiet=True
    )


def test_saved_model_runs_on_a_grid_of_a_new_size(scratch_run):
    rec = Run.open(scratch_run.dir)
    assert rec.finished and rec.checkpoint is not None
    c = rec.config
    cfg = VSMLConfig(
        layer_norm=c["layer_norm"], backward_pass=c["backward_pass"], feed_label=c["feed_label"]
    )
    params = params_from_tensors(rec.checkpoint.tensors, cfg, prefix="done.0.params.")
    assert params["w_h"].shape == (16, 64)
    for sizes in [(9, 4), (5, 3, 2)]:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(6, 2, sizes[0], generator=g)
        y = torch.randint(0, sizes[-1], (6, 2), generator=g)
        r1 = episode(params, x, y, cfg, sizes=sizes, generator=torch.Generator().manual_seed(1))
        r2 = episode(params, x, y, cfg, sizes=sizes, generator=torch.Generator().manual_seed(1))
        assert r1.logits.shape == (6, 1, 2, sizes[-1])
        assert torch.isfinite(r1.logits).all()
        torch.testing.assert_close(r1.logits, r2.logits)
    with pytest.raises(ValueError, match="lack"):
        params_from_tensors(rec.checkpoint.tensors, cfg, prefix="nothing.")


def test_killed_and_resumed_run_ends_with_the_same_claims(scratch_run, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = fs.bptt_step

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # the Meta-RNN's third step: its step-2 checkpoint exists
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fs, "bptt_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        execute(
            "vsml-from-scratch",
            scale="smoke",
            overrides={"checkpoint_every": 1},
            out=tmp_path,
            quiet=True,
        )
    monkeypatch.setattr(fs, "bptt_step", real)
    (run_dir,) = (tmp_path / "vsml-from-scratch").iterdir()
    rec = execute("vsml-from-scratch", resume=run_dir, quiet=True)
    assert rec.finished
    # wall-clock seconds differ between any two runs; every other claim must match
    want = {c["id"]: c["measured"] for c in scratch_run.claims if "seconds" not in c["id"]}
    got = {c["id"]: c["measured"] for c in rec.claims if "seconds" not in c["id"]}
    assert got == want and "vsml-gap" in got
    steps = [m["step"] for m in rec.metrics if "learner" in m]
    assert steps == sorted(steps) and len(steps) == len(set(steps))


def test_clipped_meta_training_resumes_bit_exactly(tmp_path, monkeypatch):
    """With clipping active, a kill mid-VSML and a resume give the same tensors, every one."""
    over = {"checkpoint_every": 1, "clip": 0.3, "steps": 5}
    full = execute("vsml-from-scratch", scale="smoke", overrides=over, out=tmp_path / "a",
                   quiet=True)  # fmt: skip
    norms = [m["grad_norm"] for m in full.metrics if "learner" in m]
    assert max(norms) > 0.3, "the clip must actually act in this configuration"
    calls = {"n": 0}
    real = fs.bptt_step

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # VSML's fourth step: three checkpoints of its state exist
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fs, "bptt_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        execute("vsml-from-scratch", scale="smoke", overrides=over, out=tmp_path / "b",
                quiet=True)  # fmt: skip
    monkeypatch.setattr(fs, "bptt_step", real)
    (run_dir,) = (tmp_path / "b" / "vsml-from-scratch").iterdir()
    rec = execute("vsml-from-scratch", resume=run_dir, quiet=True)
    want, got = Run.open(full.dir).checkpoint.tensors, Run.open(rec.dir).checkpoint.tensors
    assert sorted(got) == sorted(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    untimed = [c for c in full.claims if "seconds" not in c["id"]]
    assert [c["measured"] for c in rec.claims if "seconds" not in c["id"]] == [
        c["measured"] for c in untimed
    ]


def test_cloning_two_seeds_killed_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    from badgerlab.experiments import vsml_cloning as vc

    over = {"seeds": 2, "train_steps": 6, "checkpoint_every": 2, "test_length": 8}
    full = execute("vsml-cloning", scale="smoke", overrides=over, out=tmp_path / "a", quiet=True)
    calls = {"n": 0}
    real = vc.clone_loss

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:  # seed 1, step 4: its step-2 checkpoint exists
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(vc, "clone_loss", crashing)
    with pytest.raises(KeyboardInterrupt):
        execute("vsml-cloning", scale="smoke", overrides=over, out=tmp_path / "b", quiet=True)
    monkeypatch.setattr(vc, "clone_loss", real)
    (run_dir,) = (tmp_path / "b" / "vsml-cloning").iterdir()
    rec = execute("vsml-cloning", resume=run_dir, quiet=True)
    assert rec.finished and full.finished
    assert {c["id"]: c["measured"] for c in rec.claims} == {
        c["id"]: c["measured"] for c in full.claims
    }
    assert rec.claims[0]["n_seeds"] == 2


def test_es_meta_training_killed_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    """outer=es (and a CMA-ES comparison curve): a kill mid-VSML resumes to the same claims
    and the same ES state tensors."""
    over = {"outer": "es", "generations": 4, "checkpoint_every": 2, "compare": ["cmaes"]}
    full = execute("vsml-from-scratch", scale="smoke", overrides=over, out=tmp_path / "a",
                   quiet=True)  # fmt: skip
    ids = {c["id"] for c in full.claims}
    assert {"vsml-es-in", "vsml-es-every-seed"} <= ids
    labels = {m["learner"] for m in full.metrics if "learner" in m}
    assert labels == {"vsml", "metarnn", "vsml~cmaes"}
    # The Meta-RNN keeps its tuned BPTT outer loop under outer=es (metarnn_outer="bptt").
    cfg = fs.EXPERIMENT.config("smoke", over)
    rnn = [m for m in full.metrics if m.get("learner") == "metarnn"]
    assert len(rnn) == cfg.metarnn_steps
    assert all(math.isfinite(m["grad_norm"]) for m in rnn)  # ES steps log a NaN norm
    assert fs._unit_outer(cfg, "", "metarnn") == fs.Outer("bptt")
    run_cfg = fs.EXPERIMENT.config("smoke", {**over, "metarnn_outer": "run"})
    assert fs._unit_outer(run_cfg, "", "metarnn") == fs.Outer("es", "openai-es")
    calls = {"n": 0}
    real = fs.es_step

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # VSML's third generation: its generation-2 checkpoint exists
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fs, "es_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        execute("vsml-from-scratch", scale="smoke", overrides=over, out=tmp_path / "b",
                quiet=True)  # fmt: skip
    monkeypatch.setattr(fs, "es_step", real)
    (run_dir,) = (tmp_path / "b" / "vsml-from-scratch").iterdir()
    rec = execute("vsml-from-scratch", resume=run_dir, quiet=True)
    want, got = Run.open(full.dir).checkpoint.tensors, Run.open(rec.dir).checkpoint.tensors
    assert sorted(got) == sorted(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    untimed = [c for c in full.claims if "seconds" not in c["id"]]
    assert [c["measured"] for c in rec.claims if "seconds" not in c["id"]] == [
        c["measured"] for c in untimed
    ]


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"compare": ["nosuch"]}, "nosuch"),
        ({"outer": "es", "popsize": 7}, "even"),
        ({"generations": 0}, "generations"),
    ],
)
def test_es_settings_are_checked_before_a_run(over, match):
    from badgerlab.errors import UserError

    with pytest.raises(UserError, match=match):
        fs.EXPERIMENT.config("smoke", over)
