"""The CLI end to end: runs, sweeps, resume after SIGKILL, and refusal of bad input."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from rl.data import load_dataset
from rl.run_files import read_index
from tests.conftest import MINARI_ID, REPO

TINY = [
    "agent.critic_hidden=[32,32]",
    "agent.actor_hidden=[32,32]",
    "agent.batch_size=32",
    "steps.eval_episodes=1",
    "threads=1",
    "progress=false",
]


def run_cli(*args: str, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rl.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def comparable(rows: list[dict[str, str]], after: int) -> list[tuple]:
    return [tuple(r.values()) for r in rows if int(r["step"]) > after and r["metric"] != "steps_per_second"]


@pytest.mark.slow
def test_offline_then_online_run_writes_a_complete_run_directory(tmp_path, hopper_d4rl_file):
    run_dir = tmp_path / "run"
    command = [
        "agent=cql",
        f"dataset=d4rl:{hopper_d4rl_file}",
        "steps.offline=40",
        "steps.online=60",
        "steps.warmup=10",
        "steps.eval_every=20",
        "steps.log_every=10",
        "agent.cql_samples=2",
        f"hydra.run.dir={run_dir}",
        *TINY,
    ]
    result = run_cli(*command)
    assert result.returncode == 0, result.stderr
    assert "agent cql | env hopper" in result.stdout and "after offline: score" in result.stdout
    assert "after online: score" in result.stdout
    for name in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "git_revision.txt",
        "checkpoints/last.pt",
        "checkpoints/agent_offline.pt",
        "checkpoints/agent_final.pt",
    ):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    rows = read_metrics(run_dir)
    phases = {(r["phase"], r["metric"]) for r in rows}
    assert {
        ("offline", "critic_loss"),
        ("offline", "cql_gap"),
        ("offline", "normalized_score"),
        ("online", "episode_return"),
        ("online", "normalized_score"),
    } <= phases
    scores = [(int(r["step"]), r["phase"]) for r in rows if r["metric"] == "normalized_score"]
    assert scores == [(20, "offline"), (40, "offline"), (60, "online"), (80, "online"), (100, "online")]
    assert f"source: d4rl:{hopper_d4rl_file}" in (run_dir / ".hydra/config.yaml").read_text()
    # Which copy of the data: the digest `python -m rl.data digest` prints for the same file.
    digest = load_dataset(f"d4rl:{hopper_d4rl_file}").sha256()
    assert (run_dir / "dataset_sha256.txt").read_text() == f"{digest}  d4rl:{hopper_d4rl_file}\n"
    # The data's own level, logged once at the start: its episodes' mean return on D4RL's hopper scale.
    with h5py.File(hopper_d4rl_file, "r") as f:
        rewards, ends = f["rewards"][:], f["terminals"][:] | f["timeouts"][:]
    episodes = np.split(rewards.astype(np.float64), np.flatnonzero(ends[:-1]) + 1)
    expected = 100 * (np.mean([e.sum() for e in episodes]) + 20.272305) / (3234.3 + 20.272305)
    level = [r for r in rows if r["metric"] == "dataset_normalized_score"]
    assert [(r["step"], r["phase"]) for r in level] == [("0", "offline")]
    assert float(level[0]["value"]) == pytest.approx(expected, rel=1e-5)

    again = run_cli(*command)
    assert again.returncode == 0 and "after online: score" in again.stdout
    assert read_metrics(run_dir) == rows  # a finished run is reported, not trained again


@pytest.mark.slow
def test_sigkill_then_the_same_command_continues_exactly(tmp_path, hopper_d4rl_file):
    args = [
        "agent=sac",
        f"dataset=d4rl:{hopper_d4rl_file}",
        "offline_ratio=0.5",
        "steps.offline=30",
        "steps.online=400",
        "steps.warmup=20",
        "steps.checkpoint_every=25",
        "steps.eval_every=100",
        "steps.log_every=1",
        *TINY,
    ]
    reference = tmp_path / "reference"
    assert run_cli(*args, f"hydra.run.dir={reference}").returncode == 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rl.train", *args, f"hydra.run.dir={killed}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        rows = read_metrics(killed) if (killed / "metrics.csv").exists() else []
        steps = [int(r["step"]) for r in rows if (r.get("step") or "").isdigit()]  # a row half-written
        if steps and steps[-1] >= 140:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    killed_rows = read_metrics(killed)
    assert int(killed_rows[-1]["step"]) < 430

    resumed = run_cli(*args, f"hydra.run.dir={killed}")
    assert resumed.returncode == 0, resumed.stderr
    # every row after the first checkpoint is identical to the run that never stopped
    assert comparable(read_metrics(killed), after=25) == comparable(read_metrics(reference), after=25)
    assert len(comparable(read_metrics(reference), after=140)) > 100


def test_a_restart_drops_the_rows_past_its_checkpoint_and_a_fresh_start_drops_them_all(tmp_path):
    """A run killed before its first checkpoint starts again at step 0 and logs its step-0 rows (the
    dataset's level) again, so none of the killed attempt's rows may stay; a resume from step 10
    keeps rows through step 10 only."""
    from rl.loops import RunLogger

    def attempt(start_step: int) -> list[tuple[str, str]]:
        (tmp_path / "metrics.csv").write_text(
            "step,phase,env_steps,metric,value\n0,offline,0,dataset_normalized_score,60.5\n"
            "10,offline,0,td_loss,1.0\n30,offline,0,td_loss,0.5\n"
        )
        RunLogger(tmp_path, 100, start_step, progress=False).close()
        return [(r["step"], r["metric"]) for r in read_metrics(tmp_path)]

    assert attempt(0) == []
    assert attempt(10) == [("0", "dataset_normalized_score"), ("10", "td_loss")]


def test_the_header_is_on_disk_from_the_start_and_survives_a_kill_before_the_first_rows(tmp_path):
    """A run checkpoints step 0 before its logger opens metrics.csv; killed before the first rows,
    it restarts from that checkpoint onto the file it left. The header must be there both times,
    or every row after would be read as the header (``rl.report``, ``rl.plot``)."""
    from rl.loops import RunLogger

    header = "step,phase,env_steps,metric,value\r\n"
    logger = RunLogger(tmp_path, 100, 0, progress=False)  # open, nothing logged yet (a kill here)
    assert (tmp_path / "metrics.csv").read_bytes().decode() == header
    (tmp_path / "metrics.csv").write_text("")  # what a kill left before this fix: the header unflushed
    restarted = RunLogger(tmp_path, 100, 0, progress=False)
    restarted.log(0, "offline", 0, {"td_loss": 1.0})
    restarted.close()
    logger.close()
    assert [(r["step"], r["metric"]) for r in read_metrics(tmp_path)] == [("0", "td_loss")]


@pytest.mark.slow
def test_joblib_sweep_runs_every_combination_into_short_indexed_folders(tmp_path, minari_store):
    result = run_cli(
        "-m",
        "seed=0,1",
        "agent=sac,iql",
        f"dataset=minari:{MINARI_ID}",
        "steps.offline=5",
        "steps.online=5",
        "steps.eval_every=5",
        "agent.batch_size=16",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={tmp_path}/sweep",
        "threads=1",
        "progress=false",
        "steps.eval_episodes=1",
        env={"MINARI_DATASETS_PATH": str(minari_store)},
    )
    assert result.returncode == 0, result.stderr
    runs = sorted(p.parent for p in (tmp_path / "sweep").glob("*/metrics.csv"))
    assert len(runs) == 4
    assert all(re.fullmatch(r"(sac|iql)-hopper-[0-9a-f]{8}", run.name) for run in runs)
    index = read_index(tmp_path / "sweep")
    assert sorted(index) == [run.name for run in runs]
    assert {row["status"] for row in index.values()} == {"finished"}
    assert any("agent=iql" in row["overrides"] and "seed=1" in row["overrides"] for row in index.values())
    for run in runs:
        assert (run / ".hydra/config.yaml").is_file() and (run / "checkpoints/agent_final.pt").is_file()
        saved = (run / ".hydra/overrides.yaml").read_text()
        assert all(f"- {o}" in saved for o in index[run.name]["overrides"].split())
    assert "o2o: sweep" in result.stderr and "4 of 4 jobs finished, 0 failed" in result.stderr


@pytest.mark.slow
def test_a_half_failed_sweep_is_planned_then_rerun_skipping_what_finished(tmp_path, hopper_d4rl_file, capsys):
    """One job's dataset is missing: it fails with one line, the other finishes, the sweep exits 1.
    The plan then shows one finished job and one to run; once the file exists, the same command
    reports the finished run without training it again and runs the other."""
    from rl import sweep

    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(hopper_d4rl_file, data / "a.hdf5")
    command = [
        "-m",
        f"dataset.source=d4rl:{data}/a.hdf5,d4rl:{data}/b.hdf5",
        "offline_ratio=0.5",
        "steps.online=20",
        "steps.warmup=10",
        "steps.eval_every=20",
        f"hydra.sweep.dir={tmp_path}/sweep",
        *TINY,
    ]
    first = run_cli(*command)
    assert first.returncode == 1
    index = read_index(tmp_path / "sweep")
    (done,) = [f for f, row in index.items() if row["status"] == "finished"]
    (failed,) = [f for f, row in index.items() if row["status"] != "finished"]
    message = f"dataset d4rl:{data}/b.hdf5: no such file"
    assert index[failed]["status"] == f"failed: {message}"
    assert f"o2o: error: {message}" in first.stderr
    assert f"o2o: {tmp_path}/sweep/{failed}: failed: {message}" in first.stderr
    assert not (tmp_path / "sweep" / failed).exists()  # a refused job leaves no folder behind
    rows = read_metrics(tmp_path / "sweep" / done)

    assert sweep.plan(command[1:], multirun=True) == 0  # what `rl.train ... +plan=true` prints
    plan = capsys.readouterr().out
    assert re.search(rf"{tmp_path}/sweep/{done}\s+finished\s+-", plan)
    assert re.search(rf"{tmp_path}/sweep/{failed}\s+new\s+~", plan)
    assert "total: 1 new, 0 to resume, 1 finished (skipped)" in plan
    nothing_new = sorted([".index.lock", "index.csv", "multirun.yaml", done])
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == nothing_new

    shutil.copyfile(hopper_d4rl_file, data / "b.hdf5")
    second = run_cli(*command)
    assert second.returncode == 0, second.stderr
    assert {row["status"] for row in read_index(tmp_path / "sweep").values()} == {"finished"}
    assert read_metrics(tmp_path / "sweep" / done) == rows  # reported, not trained again
    assert (tmp_path / "sweep" / failed / "checkpoints" / "agent_final.pt").is_file()


def test_plan_counts_the_offline_updates_an_agent_dictates(capsys):
    """Uni-O4 sets its own offline length (its stage sizes): the plan counts those, not steps.offline."""
    from rl import sweep

    # stage 1 outlasts the plan's timed updates (at most 201), which never reach the AM-Q stage
    stages = "agent.critic_steps=300 agent.bc_steps=200 agent.dynamics_steps=200 agent.improve_steps=50"
    small = "agent.critic_hidden=[8,8] agent.value_hidden=[8,8] agent.policy_hidden=[8,8] agent.dynamics_hidden=[8,8]"
    overrides = ["agent=unio4", *stages.split(), *small.split(), "agent.batch_size=16", "steps.online=0"]
    assert sweep.plan(overrides, multirun=False) == 0
    printed = capsys.readouterr().out
    assert "1 job(s), launcher basic, one run" in printed
    assert "unio4 on hopper:" in printed and "350 offline updates (on cpu, 1 thread)" in printed


# -- bad input: a one-line error, a non-zero exit, nothing earlier overwritten ---------------------------


def test_wrong_key_and_wrong_type_fail_at_start_with_hydras_message(tmp_path):
    result = run_cli("agent.no_such_key=1", f"hydra.run.dir={tmp_path}/a")
    assert result.returncode != 0 and "no_such_key" in result.stderr
    result = run_cli("steps.online=many", f"hydra.run.dir={tmp_path}/b")
    assert result.returncode != 0 and "steps.online" in result.stderr and "many" in result.stderr
    result = run_cli("agent=nosuchagent", f"hydra.run.dir={tmp_path}/c")
    assert result.returncode != 0 and "nosuchagent" in result.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_unknown_env_id_and_dataset_are_one_line_errors(tmp_path):
    result = run_cli("env.id=Hoppa-v9", f"hydra.run.dir={tmp_path}/a", "progress=false")
    assert result.returncode == 2
    assert result.stderr.strip() == "o2o: error: env.id: unknown Gymnasium id 'Hoppa-v9' (env.name='hopper')"
    result = run_cli("dataset=d4rl:/nonexistent.hdf5", f"hydra.run.dir={tmp_path}/b", "progress=false")
    assert (
        result.returncode == 2
        and result.stderr.strip() == "o2o: error: dataset d4rl:/nonexistent.hdf5: no such file"
    )


@pytest.mark.slow
def test_other_config_in_an_existing_run_directory_is_refused_and_left_alone(tmp_path):
    run_dir = tmp_path / "run"
    base = ["steps.online=20", "steps.warmup=10", "steps.eval_every=20", *TINY, f"hydra.run.dir={run_dir}"]
    assert run_cli(*base).returncode == 0
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    result = run_cli(*base, "agent.actor_lr=0.1")
    assert result.returncode == 2
    assert "holds a run with another config (agent.actor_lr: 0.0001 -> 0.1)" in result.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before

    other = tmp_path / "iql"
    result = run_cli(
        "agent=iql", "agent.hidden=[32,32]", f"resume={run_dir}", f"hydra.run.dir={other}", "progress=false"
    )
    assert result.returncode == 2 and "with another config (agent.name: 'sac' -> 'iql'" in result.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_resume_from_a_corrupt_checkpoint_is_refused(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints/last.pt").write_bytes(b"\x00garbage")
    result = run_cli(f"resume={tmp_path}", "progress=false", f"hydra.run.dir={tmp_path}/x")
    assert result.returncode == 2
    assert "checkpoints/last.pt: not readable" in result.stderr
    assert (tmp_path / "checkpoints/last.pt").read_bytes() == b"\x00garbage"


def test_cuda_device_on_a_cpu_machine_is_refused(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal only applies without it")
    result = run_cli("device=cuda", f"hydra.run.dir={tmp_path}/a", "progress=false")
    assert result.returncode == 2 and "CUDA is not available" in result.stderr


def test_vector_env_online_phase_acts_once_per_vector_step_and_updates_once_per_env_step(tmp_path):
    from rl.config import compose_config
    from rl.loops import LoopState, build_run, run_phases

    cfg = compose_config([
        "num_envs=4", "steps.online=40", "steps.warmup=8", "steps.warmup_actions=policy",
        "steps.eval_every=1000", "steps.eval_episodes=1", *TINY, "agent.batch_size=8",
    ])  # fmt: skip
    run = build_run(cfg)
    calls = {"act": [], "update": 0}
    act, update = run.agent.act, run.agent.update

    def spy_act(obs, deterministic=False):
        if not deterministic:
            calls["act"].append(tuple(obs.shape))
        return act(obs, deterministic)

    def spy_update(batch):
        calls["update"] += 1
        return update(batch)

    run.agent.act, run.agent.update = spy_act, spy_update
    state = LoopState.start(run)
    run_phases(run, state, tmp_path / "run")
    assert calls["act"] == [(4, 11)] * 10  # one batched call per vector step
    assert calls["update"] == 40 - 8  # one update per env step after the warm-up
    assert len(run.online_buffer) == 40 and state.env_steps == 40
    with pytest.raises(ValueError, match=r"steps.online=42 must be a multiple of num_envs=4"):
        cfg.steps.online = 42
        build_run(cfg)


@pytest.mark.parametrize(
    ("agent", "warmup", "first_update_at"),
    [("sac", 0, 32), ("sac", 40, 41), ("cql", 0, 32), ("calql", 0, 46)],
)
def test_first_online_update_waits_for_the_warmup_a_batchs_worth_of_online_rows_and_calqls_episode_limit(
    tmp_path, agent, warmup, first_update_at
):
    """As the official fine-tuning, no update before the online buffer holds the batch's online share
    (32 rows here, all online): without a warm-up the first comes at the 32nd env step; a longer
    warm-up (40) is the binding wait; Cal-QL also waits for the env's time limit (45 steps here)."""
    from rl.config import compose_config
    from rl.loops import LoopState, build_run, run_phases

    cfg = compose_config([
        f"agent={agent}", "steps.online=60", f"steps.warmup={warmup}", "env.max_episode_steps=45", *TINY,
        "steps.eval_episodes=0",
    ])  # fmt: skip
    run = build_run(cfg)
    sizes = []
    update = run.agent.update

    def spy_update(batch):
        sizes.append(len(run.online_buffer))
        return update(batch)

    run.agent.update = spy_update
    run_phases(run, LoopState.start(run), tmp_path / "run")
    assert sizes[0] == first_update_at and len(sizes) == 60 - first_update_at + 1


def test_the_episode_limit_is_the_training_envs_own_without_an_evaluation_env():
    """Cal-QL's start rule reads the limit from the training copies (Hopper-v5: 1,000 steps), so it
    holds with ``steps.eval_episodes=0`` (a real robot's usual setting) as with evaluations."""
    from rl.config import compose_config
    from rl.loops import build_run

    for overrides in (["steps.eval_episodes=0"], ["steps.eval_episodes=0", "env.max_episode_steps=45"]):
        run = build_run(compose_config(["agent=calql", "steps.online=10", *TINY, *overrides]))
        assert run.eval_env is None and run.episode_limit == (45 if len(overrides) == 2 else 1000)
        run.close()


@pytest.mark.parametrize(("warmup_actions", "deterministic_calls"), [("policy", 0), ("policy_mean", 3)])
def test_warmup_acts_with_the_policys_mean_only_when_asked(tmp_path, warmup_actions, deterministic_calls):
    """``policy_mean`` makes the warm-up's acts deterministic (3 vector steps of 2 copies here) and
    the acts after it sample again; ``policy`` samples throughout. No evaluations, so every call
    seen is the collection's."""
    from rl.config import compose_config
    from rl.loops import LoopState, build_run, run_phases

    cfg = compose_config([
        "num_envs=2", "steps.online=10", "steps.warmup=6", f"steps.warmup_actions={warmup_actions}",
        *TINY, "steps.eval_episodes=0",
    ])  # fmt: skip
    run = build_run(cfg)
    flags = []
    act = run.agent.act

    def spy_act(obs, deterministic=False):
        flags.append(deterministic)
        return act(obs, deterministic)

    run.agent.act = spy_act
    run_phases(run, LoopState.start(run), tmp_path / "run")
    assert flags == [True] * deterministic_calls + [False] * (5 - deterministic_calls)


def test_collect_step_stores_each_transition_and_writes_mc_returns_when_its_episode_ends():
    """The online phase's collection step (also what experiments/bench/envs.py times): n rows per
    vector step, each copy's rows tracked, and an ended episode's returns-to-go written and cleared."""
    import torch

    import envs
    from rl.buffers import ObsSpec, ReplayBuffer
    from rl.loops.off_policy import collect_step

    torch.manual_seed(0)
    n, gamma = 2, 0.9
    env = envs.make_vec(envs.EnvConfig(), n, mode="sync")  # Hopper falls within ~100 random steps
    buffer = ReplayBuffer(1000, ObsSpec.from_space(env.single_observation_space), 3, gamma=gamma)
    (obs_column,) = buffer.obs.values()
    episode_rows: list[list[int]] = [[] for _ in range(n)]
    obs, steps, ended = env.reset(seed=0), 0, ()
    while not ended:
        action = torch.rand(n, 3) * 2 - 1
        result = collect_step(env, obs, action, buffer, episode_rows)
        rows = slice(n * steps, n * steps + n)
        assert torch.equal(obs_column[rows], obs) and torch.equal(buffer.action[rows], action)
        assert torch.equal(buffer.reward[rows], result.reward)
        obs, ended, steps = result.obs, result.episodes, steps + 1
    env.close()
    assert len(buffer) == n * steps
    finished = {episode.env_index for episode in ended}
    for copy in range(n):
        copy_rows = torch.arange(copy, n * steps, n)  # copy i's transitions, in time order
        if copy in finished:
            assert episode_rows[copy] == []
            expected, acc = [], 0.0
            for reward in reversed(buffer.reward[copy_rows].tolist()):
                acc = reward + gamma * acc
                expected.append(acc)
            assert torch.allclose(buffer.mc_return[copy_rows], torch.tensor(expected[::-1]))
        else:
            assert episode_rows[copy] == copy_rows.tolist()
            assert torch.isinf(buffer.mc_return[copy_rows]).all()


def test_on_policy_agent_learns_online_from_rollouts(tmp_path, hopper_d4rl_file, monkeypatch):
    """Uni-O4: offline stages through update(), then rollouts of rollout_steps env steps, each
    followed by one update_rollout(); checkpoints only between rollouts."""
    from rl.agents.unio4 import UniO4
    from rl.config import compose_config
    from rl.loops import LoopState, build_run, run_phases, run_state

    stages = {"critic_steps": 4, "bc_steps": 4, "dynamics_steps": 4, "improve_steps": 4, "ope_every": 2}
    small = {
        "critic_hidden": "[16,16]",
        "value_hidden": "[16,16]",
        "policy_hidden": "[16,16]",
        "dynamics_hidden": "[16,16]",
        "num_policies": 2,
        "batch_size": 32,
        "ope_horizon": 3,
        "dynamics_members": 3,
        "dynamics_elites": 2,
        "online_epochs": 1,
        "online_minibatch": 16,
        **stages,
    }
    cfg = compose_config(
        [
            "agent=unio4",
            *[f"agent.{k}={v}" for k, v in small.items()],
            f"dataset.source=d4rl:{hopper_d4rl_file}",
            "steps.offline=8",
            "steps.online=96",
            "rollout_steps=32",
            "num_envs=2",
            "steps.checkpoint_every=20",
            "steps.eval_every=1000",
            "steps.eval_episodes=1",
            "progress=false",
        ]
    )
    run = build_run(cfg)
    assert isinstance(run.agent, UniO4) and run.agent.on_policy
    state = LoopState.start(run)
    calls = {"update_rollout": [], "saved_at": []}
    update_rollout, save = run.agent.update_rollout, run_state.save

    def spy_update_rollout(rollout, last_obs):
        calls["update_rollout"].append((state.step, rollout.t, tuple(last_obs.shape)))
        return update_rollout(rollout, last_obs)

    def spy_save(run, state, run_dir):
        calls["saved_at"].append(state.step)
        save(run, state, run_dir)

    run.agent.update_rollout = spy_update_rollout
    monkeypatch.setattr(run_state, "save", spy_save)
    run_phases(run, state, tmp_path / "run")
    offline = run.schedule.offline
    assert calls["update_rollout"] == [(offline + 32 * k, 16, (2, 11)) for k in (1, 2, 3)]
    online_saves = [s for s in calls["saved_at"] if s > offline]
    assert online_saves and all((s - offline) % 32 == 0 for s in online_saves)
    assert len(run.online_buffer) == 0  # on-policy: nothing went into the replay buffer
    # Each rollout's update metrics are logged at its step, though log_every (500) is not due there.
    logged = {int(r["step"]) for r in read_metrics(tmp_path / "run") if r["metric"] == "approx_kl"}
    assert logged == {offline + 32 * k for k in (1, 2, 3)}


def test_run_folders_are_short_readable_and_the_same_for_the_same_overrides():
    from rl.config import run_folder

    digest = hashlib.sha1(b"agent=sac,seed=0").hexdigest()[:8]
    assert run_folder("sac", "hopper", "agent=sac,seed=0") == f"sac-hopper-{digest}"
    long = ",".join(f"agent.option_{i}=[128,128]" for i in range(20))
    assert run_folder("cql", "door", long) == run_folder("cql", "door", long)
    assert len(run_folder("cql", "antmaze-large-diverse", long)) == len("cql-antmaze-large-diverse-") + 8
    assert run_folder("cql", "door", long) != run_folder("cql", "door", long.replace("option_19", "option_x"))
    assert run_folder("my agent", "a/b", "") == f"my_agent-a_b-{hashlib.sha1(b'').hexdigest()[:8]}"


def test_values_out_of_range_are_refused_at_load_with_one_line(tmp_path):
    from rl.config import check_values, compose_config

    refusals = {
        "steps.online=-5": "steps.online=-5: a count, must be >= 0",
        "steps.offline=-1": "steps.offline=-1: a count, must be >= 0",
        "steps.eval_every=0": "steps.eval_every=0: a cadence, must be > 0",
        "offline_ratio=1.5": "offline_ratio=1.5: a share of each batch, must be in [0, 1]",
        "agent.gamma=-0.1": "agent.gamma=-0.1: a discount, must be in [0, 1]",
        "agent.batch_size=0": "agent.batch_size=0: a size, must be > 0",
        "agent.critic_hidden=[64,0]": "agent.critic_hidden.1=0: a layer width, must be > 0",
        "agent.actor_lr=0": "agent.actor_lr=0.0: a learning rate, must be > 0",
        "num_envs=0": "num_envs=0: a size, must be > 0",
        "env_mode=fast": "env_mode=fast: must be one of auto, sync, async",
    }
    check_values(compose_config(["agent=iql", "offline_ratio=1", "steps.warmup=0"]))
    for override, message in refusals.items():
        with pytest.raises(ValueError) as refused:
            check_values(compose_config([override]))
        assert str(refused.value) == message
    result = run_cli("steps.online=-5", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2
    assert result.stderr.strip() == "o2o: error: steps.online=-5: a count, must be >= 0"
    assert not (tmp_path / "run").exists()


def test_help_exits_0_and_offers_presets_not_schemas():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    agents = sorted(p.stem for p in (REPO / "conf" / "agent").glob("*.yaml"))
    assert {"cql", "iql", "sac", "wsrl"} <= set(agents)
    assert f"agent: {', '.join(agents)}\n" in result.stdout
    assert "launcher: local, ray, slurm\n" in result.stdout and "+plan=true" in result.stdout
    assert "schema" not in result.stdout


def test_every_dataset_preset_selects_its_env():
    from rl.config import compose_config

    presets = sorted(p.stem for p in (REPO / "conf" / "dataset").glob("*.yaml") if p.stem != "none")
    for preset in presets:
        cfg = compose_config([f"dataset={preset}"])
        assert cfg.env.name == re.split(r"[-_]", preset)[0], preset  # hopper-medium -> hopper
        assert cfg.dataset.name.replace("-", "_") == preset.replace("-", "_")
    # the command line still chooses another env (e.g. pixels instead of state)
    assert compose_config(["dataset=door_human", "env=pen"]).env.name == "pen"


def test_door_human_preset_runs_from_any_working_directory(tmp_path, monkeypatch, capsys):
    from rl.config import compose_config
    from rl.train import train

    monkeypatch.chdir(tmp_path)  # the preset's file is found from the checkout, not from here
    small = ["agent.hidden=[32,32]", "agent.batch_size=32", "steps.eval_episodes=1", "progress=false"]
    cfg = compose_config(
        ["dataset=door_human", "agent=iql", "steps.offline=10", "steps.eval_every=10", *small]
    )
    assert cfg.dataset.source == f"d4rl:{REPO}/tests/data/door-human-demos-d4rl-layout.hdf5"
    train(cfg, tmp_path / "run")
    assert "env door | dataset door-human | after offline: score" in capsys.readouterr().out


def test_an_offline_only_run_is_marked_finished_with_its_final_agent(tmp_path, hopper_d4rl_file):
    """rl.report and rl.sweep call a run finished by checkpoints/agent_final.pt: a run with
    steps.online=0 (a tuning pre-training, a peer comparison) must write it too."""
    import torch

    from rl.checkpoint import load_checkpoint
    from rl.config import compose_config
    from rl.loops import LoopState, build_run, run_phases

    overrides = ["agent=iql", "agent.hidden=[16,16]", "agent.batch_size=8", "steps.offline=5"]
    cfg = compose_config(
        [
            *overrides,
            f"dataset.source=d4rl:{hopper_d4rl_file}",
            "steps.online=0",
            "steps.eval_episodes=0",
            "threads=1",
            "progress=false",
        ]
    )
    run = build_run(cfg)
    try:
        run_phases(run, LoopState.start(run), tmp_path / "run")
    finally:
        run.close()
    final = load_checkpoint(tmp_path / "run" / "checkpoints" / "agent_final.pt")["agent"]["state"]
    offline = load_checkpoint(tmp_path / "run" / "checkpoints" / "agent_offline.pt")["agent"]["state"]
    assert final.keys() == offline.keys()
    assert all(torch.equal(final[k], offline[k]) for k in final if isinstance(final[k], torch.Tensor))
