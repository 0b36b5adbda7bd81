"""What an offline-to-online run's learner did around the switch: the evaluated score beside the
training metrics the agent logs, averaged over windows of steps, for each run given.

    .venv/bin/python -m experiments.switch_metrics RUN_OR_SWEEP_DIR [...] [--window 2500]
        [--before 2500] [--out DIR]

The first window is the last ``--before`` offline updates (absent for a run that starts online from
a checkpoint); then the online phase in windows of ``--window`` env steps from the switch. A cell is
the mean of the metric's logged values in the window; ``episode_length`` is the training episodes'.
Prints a markdown table per run and, with ``--out``, writes it to ``DIR/switch.md`` and draws
``DIR/switch.png`` (one panel per metric against the step, the switch dashed).

Written for the quickstart's unlearning diagnostic (results/quickstart/README.md): the score falling
while ``q_mean`` climbs reads as overestimation on the online data, a temperature collapsing as the
entropy term losing its hold.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rl import plot

METRICS = ("normalized_score", "q_mean", "temperature", "entropy", "critic_loss", "episode_length")


def windows(run: plot.Run, metrics: pd.DataFrame, window: int, before: int) -> pd.DataFrame:
    """Rows: windows labelled by their end step relative to the switch; columns: ``METRICS``."""
    switch = run.offline_steps
    rows = metrics[metrics["metric"].isin(METRICS)].copy()
    relative = rows["step"] - switch
    rows["window"] = np.where(relative <= 0, 0, np.ceil(relative / window).astype(int) * window)
    rows = rows[relative > -before]
    if switch == 0:
        rows = rows[rows["window"] > 0]
    table = rows.pivot_table(index="window", columns="metric", values="value", aggfunc="mean")
    return table.reindex(columns=[m for m in METRICS if m in table.columns])


def markdown(run: plot.Run, table: pd.DataFrame, window: int, before: int) -> str:
    header = ["steps from the switch", *table.columns]
    lines = [f"**{run.path.name}** (seed {run.seed}, switch at step {run.offline_steps})", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for end, values in table.iterrows():
        label = f"last {before} offline" if end == 0 else f"{int(end) - window}-{int(end)}"
        cells = ["–" if np.isnan(v) else f"{v:.3g}" for v in values]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def draw(runs: Sequence[tuple[plot.Run, pd.DataFrame]], path: Path) -> None:
    figure = Figure(figsize=(12, 6.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 3).ravel()
    for ax, metric in zip(axes, METRICS, strict=True):
        for run, metrics in runs:
            series = metrics[metrics["metric"] == metric]
            ax.plot(series["step"] - run.offline_steps, series["value"], lw=1, label=f"seed {run.seed}")
        ax.axvline(0, ls="--", color="grey", lw=0.8)
        ax.set_title(metric)
        ax.set_xlabel("steps from the switch")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--window", type=int, default=2500, help="online env steps per window")
    parser.add_argument("--before", type=int, default=2500, help="offline updates in the first window")
    parser.add_argument("--out", type=Path, help="write switch.md and switch.png here")
    args = parser.parse_args(argv)
    runs = [plot.load_run(path) for path in plot.find_runs(args.dirs)]
    loaded = [(run, pd.read_csv(run.path / "metrics.csv")) for run in runs]
    text = "\n\n".join(
        markdown(run, windows(run, metrics, args.window, args.before), args.window, args.before)
        for run, metrics in loaded
    )
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "switch.md").write_text(text + "\n")
        draw(loaded, args.out / "switch.png")


if __name__ == "__main__":
    main()
