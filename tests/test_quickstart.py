"""The main job end to end at a tiny scale: data generation, WSRL pre-training and fine-tuning, table."""

import subprocess

import pytest

import rl.generate.locomotion as gen
import rl.quickstart as quickstart
from tests.test_generate import behaviour_dir  # noqa: F401  (fixture: fake medium/expert policies)


def test_quickstart_generates_trains_and_tabulates(behaviour_dir, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(quickstart, "BEHAVIOUR_DIR", behaviour_dir)
    monkeypatch.setattr(gen, "BEHAVIOUR_DIR", behaviour_dir)
    out = tmp_path / "qs"
    tiny = [
        "agent.num_critics=2",
        "agent.critic_hidden=[16,16]",
        "agent.actor_hidden=[16,16]",
        "steps.offline=40",
        "steps.online=60",
        "steps.warmup=20",
        "steps.eval_every=20",
        "steps.eval_episodes=1",
        "agent.batch_size=32",
    ]
    argv = ["env=hopper", "seeds=0", "dataset_size=300", f"out={out}", "threads=1", "progress=false", *tiny]
    assert quickstart.main(argv) == 0
    table = (out / "table.md").read_text()
    row = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    assert row[:5] == ["hopper", "hopper-medium", "wsrl", "1", "normalized_score"]
    assert row[-2] == "60"  # the online phase ran to its end
    assert (out / "curves.png").stat().st_size > 0
    (run,) = [p for p in out.iterdir() if (p / "metrics.csv").is_file()]
    config = (run / ".hydra" / "config.yaml").read_text()
    assert "temperature_lr: 0.003" in config  # the demo's reductions applied...
    assert "critic_hidden:\n  - 16" in config  # ...and the caller's overrides after them


def test_quickstart_refuses_a_bad_scale(capsys):
    assert quickstart.main(["scale=huge"]) == 2
    assert "scale='huge': choose demo or paper" in capsys.readouterr().err


def test_quickstart_help_prints_its_usage_and_starts_nothing(capsys, monkeypatch):
    from rl import quickstart

    monkeypatch.setattr(quickstart, "generate", lambda *_: pytest.fail("--help must not generate data"))
    assert quickstart.main(["--help"]) == 0 and "python -m rl.quickstart" in capsys.readouterr().out


def test_quickstart_runs_halfcheetah_unless_told_otherwise(monkeypatch):
    made, commands = [], []
    monkeypatch.setattr(quickstart, "generate", made.append)
    monkeypatch.setattr(
        quickstart.subprocess, "run", lambda cmd: commands.append(cmd) or subprocess.CompletedProcess(cmd, 0)
    )
    assert quickstart.main(["dataset_size=500", "out=unused"]) == 0
    fingerprint = quickstart.behaviour_fingerprint("halfcheetah")
    assert fingerprint != quickstart.behaviour_fingerprint("hopper")
    dataset_id = f"o2o/halfcheetah/medium-500-{fingerprint}-v0"
    assert [(cfg.env, cfg.level, cfg.size, cfg.dataset_id) for cfg in made] == [
        ("halfcheetah", "medium", 500, dataset_id)
    ]
    train = commands[0]
    assert "env=halfcheetah" in train and f"dataset=minari:{dataset_id}" in train
    assert "dataset.name=halfcheetah-medium" in train and "env=hopper" not in train


def test_quickstart_refuses_an_unknown_env(capsys, monkeypatch):
    monkeypatch.setattr(quickstart, "generate", lambda *_: pytest.fail("a bad env must not generate data"))
    assert quickstart.main(["env=pendulum"]) == 2
    assert "env='pendulum': choose one of hopper, halfcheetah, walker2d" in capsys.readouterr().err
