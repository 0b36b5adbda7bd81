"""``python -m rl.train``: offline then online training, one run or a Hydra sweep.

    python -m rl.train agent=cql env=hopper dataset=minari:mujoco/hopper/medium-v0 steps.offline=1000 steps.online=1000
    python -m rl.train -m seed=0,1,2 agent=cql,iql launcher=local
    python -m rl.train -m seed=0,1,2 agent=cql,iql launcher=local +plan=true   (the jobs; launches nothing)

A run's folder is ``<agent>-<env>-<hash of the command-line overrides>`` (``rl.config.run_folder``;
under ``runs/``, or a sweep's directory, ``runs/sweep`` by default, beside the sweep's ``index.csv``),
so starting the same command again finds the same folder:
- it holds a checkpoint of the same config: the run resumes from it (a finished run just reports);
- it holds a run of another config: refused, nothing in it is touched;
- ``resume=<run dir>`` continues that directory's run explicitly.
The overrides are saved in the folder (``.hydra/overrides.yaml``). A SLURM job requeued after
preemption or a timeout (submitit) is the same command again, so it resumes from ``last.pt``.

Values are checked when the config is loaded (``rl.config.check_values``): a bad one stops the run
with one line, ``o2o: error: <key>=<value>: <why>``, and exit status 2. In a sweep, a job that stops
this way is marked failed in the index and the other jobs go on; the sweep exits 1 at its end.

``dataset=<source>:<id>`` is shorthand for ``dataset.source=<source>:<id>`` (``dataset`` is also a
config group, e.g. ``dataset=door_human``); the shorthand is rewritten before Hydra parses argv.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from rl import sweep
from rl.config import REPOSITORY, TrainConfig, check_values, register_configs
from rl.loops import build_run, run_phases, run_state
from rl.loops.run_state import LAST_CHECKPOINT, LoopState
from rl.run_files import DATASET_DIGEST

PLAN_FLAG = re.compile(r"^\+?plan=(true|True)$")
CONFIG_GROUPS = ("agent", "env", "dataset", "reward", "launcher", "experiment")


def config_groups() -> str:
    """``--help``'s list of choices: each group's YAML presets in conf/, not the schemas behind them."""
    lines = []
    for group in CONFIG_GROUPS:
        options = sorted(p.stem for p in (REPOSITORY / "conf" / group).glob("*.yaml"))
        lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


register_configs()
OmegaConf.register_new_resolver("o2o_config_groups", config_groups, replace=True)
DATASET_SHORTHAND = re.compile(r"^(\+{0,2})dataset=((?:minari|d4rl):.*)$")


def rewrite_dataset_shorthand(argv: list[str]) -> list[str]:
    """``dataset=minari:x`` -> ``dataset.source=minari:x`` (and keeps ``dataset=<group option>``)."""
    return [DATASET_SHORTHAND.sub(r"\1dataset.source=\2", arg) for arg in argv]


def _git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _run_directory(cfg: DictConfig) -> Path:
    if cfg.resume is not None:
        run_dir = Path(cfg.resume)
        if not (run_dir / LAST_CHECKPOINT).is_file():
            raise ValueError(f"resume={cfg.resume}: no checkpoint at {run_dir / LAST_CHECKPOINT}")
        return run_dir
    return Path(HydraConfig.get().runtime.output_dir)


def _write_run_record(run_dir: Path, cfg: DictConfig, dataset_sha256: str | None) -> None:
    record = run_dir / ".hydra"
    record.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, record / "config.yaml", resolve=True)
    with contextlib.suppress(ValueError):  # HydraConfig is unset outside @hydra.main (in-process tests)
        OmegaConf.save(OmegaConf.create(list(HydraConfig.get().overrides.task)), record / "overrides.yaml")
    (run_dir / "git_revision.txt").write_text(_git_revision() + "\n")
    if dataset_sha256 is not None:
        (run_dir / DATASET_DIGEST).write_text(f"{dataset_sha256}  {cfg.dataset.source}\n")


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Build, resume if possible, run; the single code path behind the CLI and the tests."""
    started = time.perf_counter()
    saved = run_state.read_run_checkpoint(run_dir, cfg)  # before building: a refusal touches nothing
    run = build_run(cfg)
    if run.labeller is not None:  # before a resume requeues pending rows: their labels are logged too
        run.labeller.open_label_log(run_dir)
    try:
        if saved is not None:
            state = run_state.restore(run, saved)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_run_record(run_dir, cfg, run.dataset_sha256)
            state = LoopState.start(run)
            run_state.save(run, state, run_dir)  # step 0: from here on the directory always resumes
        summary = run_phases(run, state, run_dir)
    finally:
        run.close()
    print(summary_line(run_dir, cfg, summary, time.perf_counter() - started), flush=True)
    return summary


def summary_line(
    run_dir: Path, cfg: TrainConfig, summary: dict[str, dict[str, float]], seconds: float
) -> str:
    parts = [
        f"o2o: {run_dir}",
        f"agent {cfg.agent.name}",
        f"env {cfg.env.name}",
        f"dataset {cfg.dataset.name}",
    ]
    for phase in ("offline", "online"):
        if phase in summary:
            result = summary[phase]
            score = result.get("normalized_score")
            shown = f"score {score:.1f}" if score is not None else f"return {result['return']:.1f}"
            if cfg.steps.eval_episodes == 0:
                shown += " (mean of the last 10 training episodes)"
            parts.append(f"after {phase}: {shown}")
    parts.append(f"{seconds:.0f}s")
    return " | ".join(parts)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    job = sweep.current_job()
    try:
        check_values(cfg)
        run_dir = _run_directory(cfg)
        if job is not None:
            sweep.mark(job, "running")
        train(cfg, run_dir)
    except ValueError as err:
        print(f"o2o: error: {err}", file=sys.stderr)
        _remove_if_untouched(Path(HydraConfig.get().runtime.output_dir))
        if job is None:
            sys.exit(2)
        sweep.mark(job, f"failed: {err}")  # the sweep goes on; it exits 1 at its end (SweepIndex)
        return
    except BaseException as err:
        if job is not None:  # a SLURM requeue exits here too: the next attempt marks it again
            stopped = isinstance(err, SystemExit | KeyboardInterrupt)
            sweep.mark(job, "interrupted" if stopped else f"failed: {type(err).__name__}: {err}")
        raise
    if job is not None:
        sweep.mark(job, "finished")


def _remove_if_untouched(run_dir: Path) -> None:
    """Remove the folder Hydra made for a refused job if all it holds is Hydra's empty job log."""
    entries = list(run_dir.iterdir()) if run_dir.is_dir() else []
    if all(p.is_file() and p.suffix == ".log" and p.stat().st_size == 0 for p in entries):
        for entry in entries:
            entry.unlink()
        with contextlib.suppress(OSError):
            run_dir.rmdir()


def plan_or_train(argv: list[str]) -> None:
    """``+plan=true`` prints the jobs (``rl.sweep.plan``) instead of launching them."""
    args = rewrite_dataset_shorthand(argv[1:])
    if not any(PLAN_FLAG.match(arg) for arg in args):
        sys.argv = [argv[0], *args]
        main()
        return
    multirun = "-m" in args or "--multirun" in args
    overrides = [a for a in args if not PLAN_FLAG.match(a) and a not in ("-m", "--multirun")]
    try:
        sys.exit(sweep.plan(overrides, multirun))
    except (ValueError, HydraException) as err:  # Hydra's: a wrong key, type or option, as in a run
        message = f"{err}: {err.__cause__}" if isinstance(err, HydraException) and err.__cause__ else err
        print(f"o2o: error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    plan_or_train(sys.argv)
