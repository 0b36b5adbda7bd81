"""``python -m rl.train``: offline then online training, one run or a Hydra sweep.

    python -m rl.train agent=cql env=hopper dataset=minari:mujoco/hopper/medium-v0 steps.offline=1000 steps.online=1000
    python -m rl.train -m seed=0,1,2 agent=cql,iql hydra/launcher=joblib

Run directories are named from the command-line overrides (``runs/<overrides>``; sweeps under
``runs/sweep/``), so starting the same command again finds the same directory:
- it holds a checkpoint of the same config: the run resumes from it (a finished run just reports);
- it holds a run of another config: refused, nothing in it is touched;
- ``resume=<run dir>`` continues that directory's run explicitly.

``dataset=<source>:<id>`` is shorthand for ``dataset.source=<source>:<id>`` (``dataset`` is also a
config group, e.g. ``dataset=door_human``); the shorthand is rewritten before Hydra parses argv.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import subprocess
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rl.config import TrainConfig, register_configs
from rl.loops import build_run, run_phases, run_state
from rl.loops.run_state import LAST_CHECKPOINT, LoopState

register_configs()


def run_name(overrides: str) -> str:
    """A directory name from the command-line overrides: the same command always maps to the same
    directory (that is how a re-run finds its checkpoint). Long names keep a readable head and end
    in a hash of the whole, since a path component may not exceed 255 bytes."""
    name = re.sub(r"[^\w=,.+-]", "_", overrides.replace("\\", "")) or "default"
    if len(name) > 120:
        name = f"{name[:100]}-{hashlib.sha1(name.encode()).hexdigest()[:12]}"
    return name


def dataset_name(source: str | None) -> str:
    """The name a dataset given only by its source goes by (plots, tables): a Minari id, or the file's stem."""
    if source is None:
        return "none"
    scheme, _, target = source.partition(":")
    return Path(target).stem if scheme == "d4rl" else target


OmegaConf.register_new_resolver("o2o_run_name", run_name, replace=True)
OmegaConf.register_new_resolver("o2o_dataset_name", dataset_name, replace=True)
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


def _write_run_record(run_dir: Path, cfg: DictConfig) -> None:
    record = run_dir / ".hydra"
    record.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, record / "config.yaml", resolve=True)
    with contextlib.suppress(ValueError):  # HydraConfig is unset outside @hydra.main (in-process tests)
        OmegaConf.save(OmegaConf.create(list(HydraConfig.get().overrides.task)), record / "overrides.yaml")
    (run_dir / "git_revision.txt").write_text(_git_revision() + "\n")


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Build, resume if possible, run; the single code path behind the CLI and the tests."""
    started = time.perf_counter()
    saved = run_state.read_run_checkpoint(run_dir, cfg)  # before building: a refusal touches nothing
    run = build_run(cfg)
    try:
        if saved is not None:
            state = run_state.restore(run, saved)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_run_record(run_dir, cfg)
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
    try:
        train(cfg, _run_directory(cfg))
    except ValueError as err:
        print(f"o2o: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.argv = rewrite_dataset_shorthand(sys.argv)
    main()
