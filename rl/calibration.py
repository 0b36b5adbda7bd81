"""``python -m rl.calibration``: is a pre-trained critic warm? Its Q on the data's actions against the
same rows' Monte-Carlo returns over a pre-training, and the first step where a stated rule holds.

    python -m rl.calibration ~/o2o_runs/quickstart_tuning --window 2500 --within 0.25 --moved 0.05 \\
        --out results/quickstart/tuning
    python -m rl.calibration ~/o2o_runs/warmstart/wsrl-walker2d --window 5000 --every 25000 \\
        --within 0.25 --moved 0.02

The rule (issue 17's meaning of "warm"; each study states its values before any run): every
``every`` offline steps, take each run's mean of ``q_mean`` and of ``mc_return_mean`` over the last
``window`` steps, then average those over the runs given (the seeds of one setting). The critic is
warm at the first such point where Q is within ``within`` of the Monte-Carlo return (relative to the
return) and has moved by less than ``moved`` since the previous point (relative to it). The first
point has no previous one, so it is never warm. CQL's penalty holds Q below the returns by design,
which is why ``within`` is a tolerance and not an exact match.

Agents whose critic step logs both metrics (CQL, Cal-QL, WSRL's pre-training, IQL, FamO2O) can be
checked; both are in the scaled units the critic learns. Writes ``calibration.png`` (Q and the
return against offline steps, the mean over runs in bold and each run faint, the warm step dashed)
and ``calibration.md`` (the points and the verdict) to ``--out``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rl import plot

Q, MC = "q_mean", "mc_return_mean"


@dataclass(frozen=True)
class CalibrationRule:
    window: int
    """Offline steps each point averages over (the last ``window`` before it)."""
    every: int
    """Offline steps between points."""
    within: float
    """Largest |Q - MC| / |MC| of a warm critic."""
    moved: float
    """Largest |Q - previous Q| / |previous Q| of a warm critic."""

    def __post_init__(self) -> None:
        if self.window <= 0 or self.every <= 0:
            raise ValueError(f"window and every must be positive, got {self.window} and {self.every}")
        if self.within <= 0 or self.moved <= 0:
            raise ValueError(f"within and moved must be positive, got {self.within} and {self.moved}")


def offline_series(metrics_csv: Path) -> pd.DataFrame:
    """``q_mean`` and ``mc_return_mean`` by offline step (one row per logged step), from a run's
    ``metrics.csv``; refused in one line when the run logged neither."""
    metrics = pd.read_csv(metrics_csv)
    offline = metrics[(metrics["phase"] == "offline") & metrics["metric"].isin((Q, MC))]
    series = offline.pivot_table(index="step", columns="metric", values="value")
    missing = [m for m in (Q, MC) if m not in series.columns]
    if missing:
        raise ValueError(
            f"{metrics_csv}: no offline {' or '.join(missing)} rows (a CQL-family or IQL critic logs them)"
        )
    return series[[Q, MC]].dropna()


def calibration_points(runs: Sequence[pd.DataFrame], rule: CalibrationRule) -> pd.DataFrame:
    """One row per point (``every``, ``2 * every``, ... up to the shortest run's last logged step):
    the mean over runs of each run's window means, the relative gap to MC, the relative move since
    the previous point, and whether the rule holds there."""
    last = min(int(run.index.max()) for run in runs)
    rows = []
    for step in range(rule.every, last + 1, rule.every):
        means = [run[(run.index > step - rule.window) & (run.index <= step)].mean() for run in runs]
        if any(m.isna().any() for m in means):  # a run logged nothing in this window
            continue
        rows.append(
            {
                "step": step,
                Q: float(np.mean([m[Q] for m in means])),
                MC: float(np.mean([m[MC] for m in means])),
            }
        )
    points = pd.DataFrame(rows, columns=["step", Q, MC])
    points["gap"] = (points[Q] - points[MC]).abs() / points[MC].abs()
    points["moved"] = (points[Q].diff()).abs() / points[Q].shift().abs()
    points["warm"] = (points["gap"] <= rule.within) & (points["moved"] < rule.moved)
    return points


def first_warm_step(points: pd.DataFrame) -> int | None:
    """The first point where the rule holds, or None."""
    warm = points.loc[points["warm"], "step"]
    return int(warm.iloc[0]) if len(warm) else None


def report(points: pd.DataFrame, rule: CalibrationRule, runs: Sequence[Path]) -> str:
    """``calibration.md``: the rule, the runs, every point, the verdict."""
    warm = first_warm_step(points)
    verdict = (
        f"**Warm at step {warm}**: the first point where both hold."
        if warm is not None
        else f"**Not warm** by step {int(points['step'].max()) if len(points) else 0}: no point meets both."
    )
    lines = [
        f"Rule: every {rule.every} offline steps, the mean over the last {rule.window} steps (averaged over "
        f"{len(runs)} run(s)); warm where |Q - MC| <= {rule.within:g} x |MC| and Q moved < {rule.moved:g} "
        "since the previous point.",
        "",
        "| step | q_mean | mc_return_mean | gap | moved | warm |",
        "|---|---|---|---|---|---|",
    ]
    for row in points.itertuples(index=False):
        moved = "–" if math.isnan(row.moved) else f"{row.moved:.3f}"
        lines.append(
            f"| {row.step} | {getattr(row, Q):.2f} | {getattr(row, MC):.2f} | {row.gap:.3f} | {moved} | "
            f"{'yes' if row.warm else ''} |"
        )
    return "\n".join([*lines, "", verdict, ""])


def draw(series: Sequence[pd.DataFrame], points: pd.DataFrame, path: Path) -> None:
    fig = Figure(figsize=(6, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for metric, color, label in (
        (Q, "tab:blue", "Q on the data's actions"),
        (MC, "tab:orange", "Monte-Carlo return"),
    ):
        for run in series:
            ax.plot(run.index, run[metric], color=color, alpha=0.25, linewidth=0.8)
        ax.plot(
            points["step"], points[metric], color=color, linewidth=2, marker="o", markersize=3, label=label
        )
    warm = first_warm_step(points)
    if warm is not None:
        ax.axvline(warm, color="black", linestyle="--", linewidth=0.8, label=f"warm at {warm}")
    ax.set_xlabel("offline gradient steps")
    ax.set_ylabel("value (the critic's scaled units)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl.calibration", description=__doc__.splitlines()[0])
    parser.add_argument(
        "dirs", nargs="+", type=Path, help="run or sweep directories (the seeds of one setting)"
    )
    parser.add_argument("--window", type=int, required=True, help="offline steps each point averages over")
    parser.add_argument("--every", type=int, help="offline steps between points (default: --window)")
    parser.add_argument("--within", type=float, required=True, help="largest relative gap of Q to the return")
    parser.add_argument(
        "--moved", type=float, required=True, help="largest relative move of Q between points"
    )
    parser.add_argument("--out", type=Path, help="where calibration.png and .md go (default: the first dir)")
    args = parser.parse_args(argv)
    try:
        rule = CalibrationRule(args.window, args.every or args.window, args.within, args.moved)
        runs = plot.find_runs(args.dirs)
        series = [offline_series(run / "metrics.csv") for run in runs]
    except ValueError as err:
        print(f"o2o: error: {err}", file=sys.stderr)
        return 2
    points = calibration_points(series, rule)
    out = args.out or args.dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    text = report(points, rule, runs)
    (out / "calibration.md").write_text(text)
    draw(series, points, out / "calibration.png")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
