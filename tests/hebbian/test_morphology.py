"""hebbian-morphology's config: body families, their parts, per-agent ES settings."""

from __future__ import annotations

import pytest

from badgerlab.cli import main
from badgerlab.experiment import ConfigError
from badgerlab.experiments import hebbian_morphology as hm


def test_parts_must_belong_to_the_family_and_differ(capsys):
    with pytest.raises(ConfigError, match="test_part='front_right' is not a part of the half"):
        hm.EXPERIMENT.config("quick", {"test_part": "front_right"})
    with pytest.raises(ConfigError, match="train_part='bthigh' is not a part of the ant"):
        hm.EXPERIMENT.config("quick", {"family": "ant"})
    with pytest.raises(ConfigError, match="test_part must differ"):
        hm.EXPERIMENT.config("quick", {"test_part": "bthigh"})
    rc = main(["run", "hebbian-morphology", "--set", "family=cheetah"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "family" in err


def test_paper_scale_is_ant_with_the_reference_lr_for_both_agents():
    cfg = hm.EXPERIMENT.config("paper")
    assert (cfg.family, cfg.train_part, cfg.test_part) == ("ant", "front_left", "front_right")
    assert cfg.lr == 0.2 and cfg.static_lr is None
    bodies = hm._bodies(cfg)
    assert list(bodies.values()) == [None, {"front_left": 0.5}, {"front_right": 0.5}]
    quick = hm.EXPERIMENT.config("quick")
    assert hm.FAMILIES[quick.family][0] == "HalfCheetah-v5/distance" and quick.seeds == 3


def test_each_agent_evolves_with_its_own_lr(tmp_path):
    from badgerlab.runner import execute

    over = {"lr": 0.05, "static_lr": 0.01}
    rec = execute("hebbian-morphology", scale="smoke", overrides=over, out=tmp_path, quiet=True)
    first = {m["phase"]: m["lr"] for m in rec.metrics if m.get("generation") == 1}
    # The logged lr is after the first generation's decay (×0.995, the reference's).
    assert first["hebbian@0"] == pytest.approx(0.05 * 0.995, rel=1e-6)
    assert first["static@0"] == pytest.approx(0.01 * 0.995, rel=1e-6)
    with pytest.raises(ValueError, match=r"policy_options names unknown policies \['plastic'\]"):
        from badgerlab.hebbian import train_agents

        train_agents(None, {"static": None}, None, seeds=[0], popsize=2, generations=1,
                     policy_options={"plastic": {"lr": 0.1}})  # fmt: skip
