"""Copy what a results plot needs out of a sweep directory: each finished run's resolved config and
the metric rows named on the command line (evaluations by default), nothing else.

Sweep directories hold checkpoints and replay buffers (hundreds of MB); `results/<study>/runs/`
keeps only these small files so that `python -m rl.plot results/<study>/runs` redraws the committed
plot. Each run lands in `<out>/<agent>_<dataset>_s<seed>/` (from its `.hydra/config.yaml`). Runs
without `checkpoints/agent_final.pt` are unfinished and are listed, not copied.

    python experiments/collect_runs.py runs/d4rl_o2o results/d4rl_o2o/runs
    python experiments/collect_runs.py runs/o2o_family results/o2o_family/runs --metrics amq_ beta_
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

from omegaconf import OmegaConf

EVALUATION_METRICS = ("eval_", "normalized_score")


def run_name(config_path: Path) -> str:
    """``<agent>_<dataset>_s<seed>`` from a run's resolved config."""
    cfg = OmegaConf.load(config_path)
    return f"{cfg.agent.name}_{cfg.dataset.name}_s{cfg.seed}"


def collect_run(run_dir: Path, out_root: Path, prefixes: tuple[str, ...]) -> Path:
    """Copy ``run_dir``'s config and the metric rows whose name starts with one of ``prefixes``."""
    config = run_dir / ".hydra" / "config.yaml"
    target = out_root / run_name(config)
    (target / ".hydra").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config, target / ".hydra" / "config.yaml")
    with (
        open(run_dir / "metrics.csv", newline="") as source,
        open(target / "metrics.csv", "w", newline="") as sink,
    ):
        reader, writer = csv.DictReader(source), None
        for row in reader:
            if writer is None:
                writer = csv.DictWriter(sink, fieldnames=reader.fieldnames)
                writer.writeheader()
            if row["metric"].startswith(prefixes):
                writer.writerow(row)
    return target


def collect(sweep_dir: Path, out_root: Path, prefixes: tuple[str, ...]) -> tuple[list[Path], list[Path]]:
    """Collect every finished run under ``sweep_dir``; returns (copied targets, unfinished run dirs)."""
    copied, unfinished = [], []
    for run_dir in sorted(p.parent.parent for p in sweep_dir.glob("*/.hydra/config.yaml")):
        if not (run_dir / "checkpoints" / "agent_final.pt").is_file():
            unfinished.append(run_dir)
            continue
        copied.append(collect_run(run_dir, out_root, prefixes))
    return copied, unfinished


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--metrics", nargs="*", default=[], help="extra metric-name prefixes to keep besides the evaluations"
    )
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"collect_runs: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    copied, unfinished = collect(args.sweep_dir, args.out, EVALUATION_METRICS + tuple(args.metrics))
    for run_dir in unfinished:
        print(f"unfinished, not copied: {run_dir}")
    print(f"copied {len(copied)} runs into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
