"""BYOL and SimCLR under DDP: the global BatchNorm, gathered negatives and sharded batches make
2 gloo ranks take the step one process takes on the whole batch; `byol-digits` runs under
torchrun at smoke scale and logs what the single process logs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from badgerlab import ddp as D
from badgerlab.ssl.byol import BYOL, SimCLR, encoder

torch.set_num_threads(1)

STEPS, N, C, S = 3, 16, 1, 8  # steps, global batch, channels, image side


@pytest.fixture
def no_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)


def test_global_batchnorm_is_batchnorm_in_one_process(no_launch: None) -> None:
    g = torch.Generator().manual_seed(0)
    ref = nn.BatchNorm2d(3, momentum=0.3).double()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5, generator=g)
        ref.bias.normal_(generator=g)
    ours = D.sync_batchnorm(nn.Sequential(ref))[0]
    assert isinstance(ours, D.GlobalBatchNorm) and ours.weight is ref.weight
    plain = nn.BatchNorm2d(3, momentum=0.3).double()
    plain.load_state_dict(ref.state_dict())
    x = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y1 = ours(x)
    (gx1,) = torch.autograd.grad((y1 * y1.detach().cos()).sum(), x)
    y2 = plain(x)
    (gx2,) = torch.autograd.grad((y2 * y2.detach().cos()).sum(), x)
    torch.testing.assert_close(y1, y2, rtol=0, atol=1e-14)
    torch.testing.assert_close(gx1, gx2, rtol=0, atol=1e-14)
    assert set(ours.state_dict()) == set(plain.state_dict())
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v)
    assert int(ours.num_batches_tracked) == 1
    with pytest.raises(TypeError, match="nn.Module"):
        D.sync_batchnorm("bn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected input"):
        ours(torch.randn(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="tensor"):
        D.all_gather_cat([1.0])  # type: ignore[arg-type]
    t = torch.ones(2)
    assert D.all_gather_cat(t) is t


def _models(seed: int) -> dict[str, nn.Module]:
    out = {}
    for name in ("byol", "simclr"):
        torch.manual_seed(seed)
        enc, feat = encoder("small-cnn", C, width=2)
        cls = BYOL if name == "byol" else SimCLR
        out[name] = cls(enc, feat, hidden=8, out=4).double()
    return out


def _views(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10 + step)
    x = torch.randn(N, C, S, S, generator=g, dtype=torch.float64)
    return x, x.flip(-1) + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)


def _train(models: dict[str, nn.Module], shard: bool) -> dict[str, torch.Tensor]:
    """STEPS steps of SGD with momentum and τ = 0.9 EMA; this rank's half of each batch when
    `shard`. (Adam would turn the float noise of exactly-zero gradients — biases in front of a
    BatchNorm — into full-size steps, so it cannot be compared to 1e-10.)"""
    state = {}
    for name, model in models.items():
        opt = torch.optim.SGD(model.online_parameters(), lr=0.1, momentum=0.9)
        for step in range(STEPS):
            v1, v2 = _views(step)
            if shard:
                mine = D.shard_indices(N, epoch=step, seed=0, shuffle=False)
                v1, v2 = v1[mine], v2[mine]
            loss, _ = model.loss(v1, v2)
            opt.zero_grad()
            loss.backward()
            D.average_gradients(model.online_parameters())
            opt.step()
            model.update_target(0.9)
        state.update({f"{name}.{k}": v.clone() for k, v in model.state_dict().items()})
    return state


WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, sys.argv[2])
    import test_byol_ddp as T
    from badgerlab import ddp as D

    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    D.init_from_env("cpu", timeout_s=120)
    assert D.world_size() == 2
    synced = {k: D.sync_batchnorm(m) for k, m in T._models(0).items()}
    save_file(T._train(synced, shard=True), str(out / f"rank{D.rank()}.safetensors"))
    # the same with per-rank BatchNorm statistics: what plain DDP without SyncBN computes
    save_file(T._train(T._models(0), shard=True), str(out / f"local{D.rank()}.safetensors"))
    D.cleanup()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node",
        "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_two_gloo_ranks_take_the_single_process_step(tmp_path: Path, no_launch: None) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    _torchrun(tmp_path, str(script), str(tmp_path), str(Path(__file__).parent))
    p0, p1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    ref = _train(_models(0), shard=False)
    init = {f"{n}.{k}": v for n, m in _models(0).items() for k, v in m.state_dict().items()}
    assert set(p0) == set(ref)
    for k, v in ref.items():
        assert torch.equal(p0[k], p1[k]), k  # the ranks agree bit for bit
        torch.testing.assert_close(p0[k], v, rtol=1e-10, atol=1e-12, msg=k)
    # the parameters, the EMA target and the running statistics all moved
    for part in (
        "byol.encoder.0.weight",
        "byol.target_encoder.1.running_var",
        "simclr.projector.0.weight",
    ):
        assert (p0[part] - init[part]).abs().max() > 1e-3, part
    # per-rank BatchNorm statistics (no global BatchNorm) give other parameters: the match
    # above needs the global statistics and, for SimCLR, the gathered negatives
    local = load_file(str(tmp_path / "local0.safetensors"))
    for name in ("byol", "simclr"):
        key = f"{name}.encoder.0.weight"
        assert (local[key] - ref[key]).abs().max() > 1e-6, key


def _metrics(root: Path) -> list[dict]:
    (run,) = list((root / "byol-digits").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished", summary
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_byol_digits_smoke_under_torchrun(tmp_path: Path, no_launch: None) -> None:
    base = ["-m", "badgerlab", "run", "byol-digits", "--scale", "smoke", "--quiet"]
    _torchrun(tmp_path, *base, "--out", str(tmp_path / "ddp"))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    one = subprocess.run(
        [sys.executable, *base, "--out", str(tmp_path / "one")],
        env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    two, single = _metrics(tmp_path / "ddp"), _metrics(tmp_path / "one")
    assert [r["step"] for r in two] == [r["step"] for r in single]  # rank 0 alone wrote
    for a, b in zip(two, single, strict=True):
        assert a["method"] == b["method"]
        # float32 on 8 + 8 images per rank vs 16 in one process: equal up to rounding
        assert a["loss"] == pytest.approx(b["loss"], rel=2e-3, abs=2e-4), (a, b)
        assert a["z_std_sqrt_d"] == pytest.approx(b["z_std_sqrt_d"], rel=2e-3, abs=2e-4)
