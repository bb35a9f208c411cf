"""Run folders, checkpoints, claims and the SIGKILL-and-resume guarantee."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from badgerlab.runs import Claim, Run, RunError, evaluate_claims


def test_claim_statuses_pass_fail_info_error_and_refs():
    claims = [
        Claim.measure("a", "a above 0.5", [0.9, 0.7], op=">", threshold=0.5),
        Claim.measure("b", "b above 0.5", [0.1, 0.2], op=">", threshold=0.5),
        Claim.measure("c", "just a number", 3.0),
        Claim.measure("d", "data never arrived", None, op=">=", threshold=0.1),
        Claim.measure("e", "NaN is missing data", [float("nan")], op="<", threshold=1.0),
        Claim.measure("f", "a beats b", [0.8], op=">", threshold={"ref": "b"}),
        Claim.measure("g", "refers to a missing claim", [0.8], op=">", threshold={"ref": "zz"}),
        Claim.measure("h", "refers to an errored claim", [0.8], op=">", threshold={"ref": "d"}),
    ]
    status = {c.id: c.status for c in evaluate_claims(claims)}
    assert status == {
        "a": "pass",
        "b": "fail",
        "c": "info",
        "d": "error",
        "e": "error",
        "f": "pass",
        "g": "error",
        "h": "error",
    }
    a = evaluate_claims(claims)[0]
    assert a.measured == pytest.approx(0.8) and a.n_seeds == 2
    assert a.std == pytest.approx(torch.tensor([0.9, 0.7]).std().item())


def test_claim_rejects_bad_op_and_missing_threshold():
    with pytest.raises(ValueError, match="op"):
        Claim.measure("x", "s", 1.0, op="==", threshold=1)
    with pytest.raises(ValueError, match="threshold"):
        Claim.measure("x", "s", 1.0, op=">")


def test_run_roundtrip_and_checkpoint(tmp_path):
    run = Run.create("demo", {"seed": 3, "x": 1}, out=tmp_path, quiet=True)
    assert run.dir.name.endswith("-s3") and run.dir.parent.name == "demo"
    run.log(0, loss=1.5)
    g = torch.Generator().manual_seed(5)
    run.save_checkpoint(0, {"w": torch.arange(4.0), "rng": g.get_state()}, {"epoch": 1})
    run.log(1, loss=0.5)
    summary = run.finish([Claim.measure("l", "loss < 1", 0.5, op="<", threshold=1.0)])
    assert summary["claims"][0]["status"] == "pass"
    rec = Run.open(run.dir)
    assert rec.finished and rec.config == {"seed": 3, "x": 1}
    assert [m["loss"] for m in rec.metrics] == [1.5, 0.5]
    assert rec.checkpoint.state["epoch"] == 1
    torch.testing.assert_close(rec.checkpoint.tensors["w"], torch.arange(4.0))
    assert rec.meta["versions"]["torch"] == torch.__version__
    g2 = torch.Generator()
    g2.set_state(rec.checkpoint.tensors["rng"])
    assert torch.equal(torch.rand(3, generator=g2), torch.rand(3, generator=g))


def test_resume_drops_partial_line_and_lines_after_checkpoint(tmp_path):
    run = Run.create("demo", {"seed": 0}, out=tmp_path, quiet=True)
    run.log(0, v=0)
    run.save_checkpoint(0, {}, {})
    run.log(1, v=1)
    run.close()
    with open(run.dir / "metrics.jsonl", "ab") as fh:
        fh.write(b'{"step": 2, "v"')
    again = Run.resume(run.dir, quiet=True)
    assert [m["step"] for m in again.metrics] == [0]
    again.close()


def test_open_rejects_non_run_folder(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        Run.open(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(RunError, match="config.json"):
        Run.open(tmp_path / "bad")


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "badgerlab", *args], capture_output=True, text=True, env=env
    )


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    args = ["run", "online-learners", "--scale", "smoke", "--quiet"]
    args += ["--set", "seeds=12", "--set", "length=100"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "badgerlab", *args, "--out", str(tmp_path / "a")], env=env
    )
    root = tmp_path / "a" / "online-learners"
    deadline = time.time() + 120
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list(root.glob("*/checkpoints/ckpt.json"))
        if found and json.loads(found[0].read_text())["step"] >= 1:
            ckpt = found[0]
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt is not None, "the run never wrote a checkpoint"
    run_dir = ckpt.parents[1]
    assert not (run_dir / "summary.json").exists(), "the run finished before it was killed"
    with open(run_dir / "metrics.jsonl", "ab") as fh:  # the kill left half a line
        fh.write(b'{"step": 99, "seed": 1, "learner": "ad')
    res = _cli("run", "online-learners", "--resume", str(run_dir), "--quiet", env=env)
    assert res.returncode == 0, res.stderr
    full = _cli(*args, "--out", str(tmp_path / "b"), env=env)
    assert full.returncode == 0, full.stderr
    (b_dir,) = (tmp_path / "b" / "online-learners").iterdir()
    a, b = Run.open(run_dir), Run.open(b_dir)
    assert a.metrics == b.metrics
    assert len(a.metrics) == 12 * 4
    assert [m["step"] for m in a.metrics] == list(range(48))
    strip = [{k: v for k, v in c.items()} for c in a.claims]
    assert strip == b.claims


def test_saving_a_step_twice_keeps_one_complete_pair(tmp_path):
    run = Run.create("demo", {"seed": 0}, out=tmp_path, quiet=True)
    run.save_checkpoint(3, {"w": torch.zeros(2)}, {"v": 1})
    run.save_checkpoint(3, {"w": torch.ones(2)}, {"v": 2})
    files = list((run.dir / "checkpoints").glob("*.safetensors"))
    assert len(files) == 1
    ck = run.load_checkpoint()
    assert ck.step == 3 and ck.state["v"] == 2 and torch.equal(ck.tensors["w"], torch.ones(2))
    run.close()


def test_a_figure_needs_a_caption(tmp_path):
    import matplotlib.pyplot as plt

    run = Run.create("demo", {"seed": 0}, out=tmp_path, quiet=True)
    for bad in ("", "   ", None):
        fig = plt.figure()
        with pytest.raises(TypeError, match="'curve' needs a caption"):
            run.save_figure(fig, "curve", caption=bad)
        plt.close(fig)
    fig = plt.figure()
    path = run.save_figure(fig, "curve", caption="a line; look for it rising")
    assert path.exists() and path.name == "curve.png"
    run.close()
