"""The cluster launchers run for real, small: the Ray preset on a local Ray instance, and the SLURM
preset's code path through submitit's local executor, including a preemption that requeues a job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rl.run_files import read_index
from tests.conftest import REPO
from tests.test_train import TINY, comparable, read_metrics, run_cli

ONE_THREAD_TINY = [arg for arg in TINY if not arg.startswith("threads=")]  # the presets set threads


@pytest.mark.slow
def test_ray_preset_runs_a_two_job_sweep_on_a_local_ray_instance(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "seed=0,1",
        "steps.online=20",
        "steps.warmup=10",
        "steps.eval_every=20",
        *ONE_THREAD_TINY,
        "launcher=ray",
        "hydra.launcher.ray.remote.num_cpus=1",
        "+hydra.launcher.ray.init.include_dashboard=false",  # a lighter local instance for a test
        f"hydra.sweep.dir={sweep}",
        env={"RAY_USAGE_STATS_ENABLED": "0"},
    )
    assert result.returncode == 0, result.stderr
    assert "Started a local Ray instance" in result.stderr
    index = read_index(sweep)
    assert sorted(row["overrides"].split()[0] for row in index.values()) == ["seed=0", "seed=1"]
    for folder, row in index.items():
        assert row["status"] == "finished"
        run = sweep / folder
        config = (run / ".hydra" / "config.yaml").read_text()
        assert f"seed: {row['overrides'].split()[0][5:]}\n" in config
        assert "threads: 1\n" in config  # one torch thread per CPU Ray gives the job
        scores = [(r["step"], r["phase"]) for r in read_metrics(run) if r["metric"] == "normalized_score"]
        assert scores == [("20", "online")]
        assert (run / "checkpoints" / "agent_final.pt").is_file()


def task_processes(sweep: Path) -> dict[int, Path]:
    """Submitit's task processes for this sweep, each with the run folder whose metrics it writes."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or b"submitit.core._submit" not in (proc / "cmdline").read_bytes():
                continue
            for fd in (proc / "fd").iterdir():
                target = Path(os.readlink(fd))
                if target.name == "metrics.csv" and target.parent.parent == sweep:
                    found[int(proc.name)] = target.parent
        except OSError:  # the process ended while we looked
            continue
    return found


@pytest.mark.slow
def test_slurm_preset_through_submitit_and_a_preempted_job_resumes_exactly(tmp_path, hopper_d4rl_file):
    """A one-job sweep with the SLURM preset on submitit's local executor, sent SLURM's preemption
    signal mid-run: submitit requeues it, and the requeued attempt (the same command) resumes from
    its checkpoint and logs the same numbers as the same run never interrupted (run in this process)."""
    from rl.config import compose_config
    from rl.train import train

    run_args = [
        "agent=sac",
        f"dataset.source=d4rl:{hopper_d4rl_file}",
        "offline_ratio=0.5",
        "steps.online=150",
        "steps.warmup=20",
        "steps.checkpoint_every=25",
        "steps.eval_every=50",
        "steps.log_every=5",
        *ONE_THREAD_TINY,
    ]
    sweep = tmp_path / "sweep"
    launcher = ["launcher=slurm", "hydra/launcher=submitit_local", "hydra.launcher.gpus_per_node=0"]
    command = [sys.executable, "-m", "rl.train", "-m", "seed=0", *run_args, *launcher]
    command += ["hydra.launcher.cpus_per_task=1", f"hydra.sweep.dir={sweep}"]
    sweep_process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    preempted, deadline = None, time.time() + 120
    while preempted is None and sweep_process.poll() is None and time.time() < deadline:
        for pid, run in task_processes(sweep).items():
            steps = [r.get("step") or "" for r in read_metrics(run)]  # a live file: a row half-written
            if steps and steps[-1].isdigit() and int(steps[-1]) >= 50:
                os.kill(pid, signal.SIGUSR2)  # what SLURM sends a job it is about to preempt
                preempted = run
        time.sleep(0.02)
    _, err = sweep_process.communicate(timeout=180)
    assert sweep_process.returncode == 0, err
    assert preempted is not None, "the job ended before it could be preempted"

    assert read_index(sweep)[preempted.name]["status"] == "finished"
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "Caught signal SIGUSR2" in logs and "Requeued job" in logs
    assert len(list((preempted / "tb").glob("events.out.tfevents.*"))) == 2  # two attempts
    assert "threads: 1\n" in (preempted / ".hydra" / "config.yaml").read_text()  # from cpus_per_task

    cfg = compose_config(["seed=0", *run_args, "threads=1"])
    train(cfg, tmp_path / "reference")
    reference = read_metrics(tmp_path / "reference")
    assert comparable(read_metrics(preempted), after=25) == comparable(reference, after=25)
    assert int(read_metrics(preempted)[-1]["step"]) == 150
