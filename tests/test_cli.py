"""The command line: exit codes, one-line errors, help, report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from badgerlab.cli import main


def _run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "badgerlab", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "online-learners", "--set", "no_such_key=1"], "no_such_key"),
        (["run", "online-learners", "--seed", "abc"], "--seed"),
        (["run", "online-learners", "--set", "episodes=0"], "episodes"),
        (["run", "online-learners", "--set", "dataset=imagenet"], "dataset"),
        (["run", "online-learners", "--scale", "huge"], "huge"),
        (["run", "online-learners", "--set", "novalue"], "novalue"),
        (["run", "no-such-experiment"], "no-such-experiment"),
        (["run", "online-learners", "--resume", "/nonexistent/run"], "/nonexistent/run"),
        (["run", "online-learners", "--config", "/nonexistent/config.json"], "config.json"),
        (["reproduce", "--only", "nope"], "nope"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_user_errors_exit_2_with_one_line(args, needle, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("error:") and needle in err


def test_missing_dataset_offline_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BADGERLAB_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("BADGERLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BADGERLAB_DOWNLOAD", raising=False)
    code = main(
        [
            "run",
            "online-learners",
            "--scale",
            "smoke",
            "--set",
            "dataset=mnist",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "mnist" in err and "--download" in err and "\n" not in err


def test_console_script_exit_code_and_stderr():
    res = _run("run", "online-learners", "--set", "no_such_key=1")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "no_such_key" in res.stderr


def test_experiment_help_lists_config_fields(capsys):
    assert main(["run", "online-learners", "--help"]) == 0
    out = capsys.readouterr().out
    for key in ("episodes", "lr_adam", "seeds", "threads"):
        assert key in out


@pytest.mark.parametrize("cmd", ["list", "run", "reproduce", "report", "datasets"])
def test_every_command_has_help(cmd, capsys):
    assert main([cmd, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out or cmd == "run"


def test_list_and_datasets(capsys):
    assert main(["list"]) == 0
    assert "online-learners" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "mnist" in out


def test_run_then_report_and_config_rerun(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", "online-learners", "--scale", "smoke", "--out", str(out), "--quiet"]) == 0
    (run_dir,) = (out / "online-learners").iterdir()
    cfg = run_dir / "config.json"
    args = ["run", "online-learners", "--config", str(cfg), "--set", "seed=7"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name[-2:] for p in (out / "online-learners").iterdir()) == ["s0", "s7"]
    assert main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "adam-mlp-final" in md and "@inproceedings" in md
    assert "data:image/png;base64," in html and "adam-mlp-final" in html
    assert "<script" not in html


def test_resume_refuses_overrides(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", "online-learners", "--scale", "smoke", "--out", str(out), "--quiet"]) == 0
    (run_dir,) = (out / "online-learners").iterdir()
    assert main(["run", "online-learners", "--resume", str(run_dir), "--set", "seeds=2"]) == 2
    assert "resume" in capsys.readouterr().err


def test_reproduce_lists_skipped_variants_with_fetch_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BADGERLAB_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("BADGERLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs"
    args = ["reproduce", "--only", "online-learners", "--scale", "smoke", "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    assert capsys.readouterr().out.strip().endswith("report.md")
    md = (out / "report.md").read_text()
    assert "Skipped paper-data variants" in md
    assert "badgerlab datasets --download mnist" in md
    assert [p.name for p in out.iterdir() if p.is_dir()] == ["online-learners"]


def test_reproduce_runs_variants_when_data_present(tmp_path, require, capsys):
    require("mnist")
    require("fashion_mnist")
    out = tmp_path / "runs"
    args = ["reproduce", "--only", "online-learners", "--scale", "smoke", "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == [
        "online-learners",
        "online-learners--fashion_mnist",
        "online-learners--mnist",
    ]
    md = (out / "report.md").read_text()
    assert "online-learners (online-learners--mnist)" in md
    assert "Skipped" not in md


def test_reproduce_reports_a_crash_and_exits_1(tmp_path, monkeypatch, capsys):
    from badgerlab.experiment import Experiment, ExperimentConfig
    from badgerlab.experiments import registry

    def explode(cfg, run):
        raise RuntimeError("deliberate failure")

    boom = Experiment(
        name="boom",
        paper="none",
        bibtex="@misc{boom}",
        description="always crashes",
        minutes={"smoke": 0.1, "quick": 0.1},
        Config=ExperimentConfig,
        run=explode,
    )
    monkeypatch.setitem(registry(), "boom", boom)
    out = tmp_path / "runs"
    args = ["reproduce", "--only", "boom", "--only", "online-learners", "--scale", "smoke"]
    assert main([*args, "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "boom" in err and "Traceback" not in err
    md = (out / "report.md").read_text()
    assert "Crashed in the last reproduce" in md and "deliberate failure" in md
    assert "adam-mlp-final" in md  # the other experiment still ran and is reported
    (run_dir,) = (out / "boom").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "crashed"
