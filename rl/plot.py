"""``python -m rl.plot``: learning curves (``curves.png``) and a score table (``table.md``) from runs.

    python -m rl.plot runs/sweep
    python -m rl.plot runs/sweep runs/more --out results/x --online-at 10000 50000
    python -m rl.plot runs/sweep --overlay ../shared/data/corl_finetune_curves.json \\
        --overlay-match door-human=door-cloned-v1 --overlay-steps 1000000,1000000

Runs: every directory under the given ones holding ``metrics.csv`` (``step,phase,env_steps,metric,
value``, see rl/loops/logger.py) and ``.hydra/config.yaml`` (the resolved config).

Grouping: one panel per (``env.name``, ``dataset.name``). In a panel, runs whose configs are equal
apart from the seed (and settings that do not change results: device, threads, progress, resume,
compile, logging and checkpoint intervals) are the seeds of one line, labelled by ``agent.name``;
lines of the same agent with different configs add the differing values to the label
(``cql offline_ratio=0.5``).

Score: the evaluation metric ``normalized_score`` (D4RL scale, 0-100); in a panel where some run has
none (an env without reference scores), ``eval_success_rate`` if every run has it (a task with a
success test, such as Lift, whose shaped or sparse return says less), else ``eval_return``, for the
whole panel, as the y label says. A normalised-score panel whose runs logged their dataset's own
level (``dataset_normalized_score``, the mean score of the dataset's episodes) draws it as a dotted
line: where a pre-trained policy stands against the data it learned from.

Alignment: the seeds of a line are compared at the evaluation steps they all have (the intersection);
steps that only some seeds reached, e.g. the tail of an unfinished run, are dropped with a note on
stderr, never interpolated or extrapolated. The x axis is ``step`` by default: offline gradient
steps, then the online env steps continue, with a dashed line at the switch (``steps.offline``).
With ``--x env_steps`` the offline evaluations all sit at env step 0, and only the last one (the
pre-trained policy) is drawn there.

Band: a 95% percentile bootstrap of the mean over seeds. Seeds are resampled with replacement 2000
times (numpy seed 0, so the figure is deterministic), each resample's mean is taken at every step, and
the band spans the 2.5th to 97.5th percentiles of those means. With one seed it is the line itself;
with three it is close to the range of the seeds.

Table: per line, mean ± std over seeds (numpy's population std; ``DECIMALS``) of the score at the last offline
evaluation, after N online steps for each ``--online-at N`` (the last common evaluation at or before
``steps.offline + N``; n/a if the seeds have not all got there), and at the last common evaluation
(end of online); the online change is mean ± std of each seed's (end of online - after offline).
With ``--last K`` each of these per-seed figures is the mean of the seed's last K evaluations of that
phase up to that point: a deterministic Hopper policy can score 95 at one evaluation and 3 at the
next (a knife edge between hopping and falling), so one evaluation says little about a phase's end.

Overlays (``--overlay FILE.json``): external curves ``{algorithm: {dataset: [per seed: [offline_curve,
online_curve, regret]]}}`` such as CORL's published ones. A dataset goes on the panels whose dataset
name equals it, or is mapped to it with ``--overlay-match ours=theirs``; the other datasets are left
out (listed on stderr). Each curve's evaluations are spread evenly over its run's phases
(``--overlay-steps OFFLINE,ONLINE``, CORL's 1M,1M by default; evaluation i of n sits at i/n of its
phase), and drawn dashed as "<algorithm> (CORL)" with the same bootstrap band over its seeds.
Each also gets a table row read the same way as ours, cut at the last online step our runs on that
panel reached: its "end of online" is its score at our end, not at its own 1M, so the rows compare
at equal online steps.

``--x-max N`` draws only x <= N (an overlay's 1M online steps beside our 100k would squeeze our
curves into a tenth of the axis); the table is unchanged.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from rl.run_files import ADDED_SETTINGS, METRICS_COLUMNS

SCORE_METRICS = ("normalized_score", "eval_success_rate", "eval_return")  # in order of preference
DATASET_LEVEL = "dataset_normalized_score"
"""Logged once at a run's start (``rl.loops``): the dataset's own episodes' mean normalised score,
drawn as a dotted reference line on normalised-score panels."""
Y_LABELS = {
    "normalized_score": "normalized score",
    "eval_success_rate": "success rate",
    "eval_return": "eval return (no reference scores)",
}
SAME_RESULTS_KEYS = {
    "seed",
    "device",
    "threads",
    "progress",
    "resume",
    "compile",  # the compiled update matches eager to float rounding (tests/test_compile.py)
    "steps.log_every",
    "steps.checkpoint_every",
    "steps.snapshot_every",
}
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
PanelKey = tuple[str, str]  # (env.name, dataset.name)


def fail(message: str) -> SystemExit:
    return SystemExit(f"rl.plot: error: {message}")


def note(message: str) -> None:
    print(f"rl.plot: {message}", file=sys.stderr)


# -- reading runs -------------------------------------------------------------------------------------


@dataclass
class Run:
    path: Path
    agent: str
    env: str
    dataset: str
    seed: int
    offline_steps: int
    config: dict[str, str]
    """Flattened config (dotted keys) without seed and the settings in ``SAME_RESULTS_KEYS``."""
    evals: pd.DataFrame
    """The rows of ``metrics.csv`` whose metric is one of ``SCORE_METRICS``."""
    dataset_score: float | None = None
    """The dataset's own episodes' mean normalised score, as the run logged it (``DATASET_LEVEL``)."""


def find_runs(dirs: Sequence[Path]) -> list[Path]:
    """Run directories (``metrics.csv`` next to ``.hydra/config.yaml``) under each of ``dirs``."""
    found: set[Path] = set()
    for directory in dirs:
        csvs = directory.rglob("metrics.csv")
        runs = {p.parent.resolve() for p in csvs if (p.parent / ".hydra" / "config.yaml").is_file()}
        if not runs:
            raise fail(
                f"no runs under {directory} (a run directory holds metrics.csv and .hydra/config.yaml)"
            )
        found |= runs
    return sorted(found)


def load_run(path: Path) -> Run:
    cfg = OmegaConf.to_container(OmegaConf.load(path / ".hydra" / "config.yaml"))
    flat = _flatten({**ADDED_SETTINGS, **cfg})
    missing = [
        k for k in ("agent.name", "env.name", "dataset.name", "seed", "steps.offline") if k not in flat
    ]
    if missing:
        raise fail(f"{path / '.hydra/config.yaml'}: no {', '.join(missing)}")
    csv_path = path / "metrics.csv"
    metrics = pd.read_csv(csv_path)
    absent = [c for c in METRICS_COLUMNS if c not in metrics.columns]
    if absent:
        raise fail(
            f"{csv_path}: missing column(s) {', '.join(absent)} (expected {','.join(METRICS_COLUMNS)})"
        )
    return Run(
        path=path,
        agent=str(flat["agent.name"]),
        env=str(flat["env.name"]),
        dataset=str(flat["dataset.name"]),
        seed=int(flat["seed"]),
        offline_steps=int(flat["steps.offline"]),
        config={k: str(v) for k, v in flat.items() if k not in SAME_RESULTS_KEYS},
        evals=metrics[metrics["metric"].isin(SCORE_METRICS)],
        dataset_score=next(iter(metrics.loc[metrics["metric"] == DATASET_LEVEL, "value"]), None),
    )


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# -- lines: seeds of one config, aligned --------------------------------------------------------------


@dataclass
class Line:
    label: str
    runs: list[Run]


def group_lines(runs: Sequence[Run]) -> dict[PanelKey, list[Line]]:
    """Panels keyed by (env, dataset), each with its lines (runs equal but for the seed), sorted."""
    seeds: dict[PanelKey, dict[tuple, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        seeds[(run.env, run.dataset)][(run.agent, *sorted(run.config.items()))].append(run)
    panels = {}
    for key in sorted(seeds):
        groups = list(seeds[key].values())
        panels[key] = sorted((Line(_label(g, groups), g) for g in groups), key=lambda line: line.label)
    return panels


def _label(group: list[Run], groups: list[list[Run]]) -> str:
    """The agent's name, plus the config values telling this group apart from the agent's others."""
    agent = group[0].agent
    same_agent = [g[0].config for g in groups if g[0].agent == agent]
    differing = sorted(
        {k for config in same_agent for k in config if len({c.get(k) for c in same_agent}) > 1}
    )
    return " ".join([agent, *(f"{k}={group[0].config.get(k)}" for k in differing)])


def panel_metric(lines: Sequence[Line]) -> str:
    """The first of ``SCORE_METRICS`` that every run of the panel logged (``eval_return`` at the latest)."""
    for metric in SCORE_METRICS[:-1]:
        if all((run.evals["metric"] == metric).any() for line in lines for run in line.runs):
            return metric
    return SCORE_METRICS[-1]


@dataclass
class Scores:
    """A line's evaluations, aligned over seeds: ``values[seed, i]`` was measured at ``steps[i]``."""

    steps: np.ndarray
    env_steps: np.ndarray
    online: np.ndarray
    values: np.ndarray
    offline_steps: int


def align_scores(line: Line, metric: str) -> Scores:
    """The line's seeds at the evaluation steps common to all of them (see the module docstring)."""
    tables = [run.evals[run.evals["metric"] == metric].set_index("step") for run in line.runs]
    common = tables[0].index
    for table in tables[1:]:
        common = common.intersection(table.index)
    common = common.sort_values()
    where = f"{line.runs[0].env}/{line.runs[0].dataset} {line.label}"
    if common.empty:
        raise fail(f"{where}: the seeds have no {metric} evaluation step in common")
    dropped = sorted(set().union(*(t.index for t in tables)) - set(common))
    if dropped:
        note(
            f"{where}: {len(dropped)} evaluation step(s) not reached by every seed left out ({dropped[0]}..{dropped[-1]})"
        )
    first = tables[0].loc[common]
    return Scores(
        steps=common.to_numpy(),
        env_steps=first["env_steps"].to_numpy(),
        online=(first["phase"] == "online").to_numpy(),
        values=np.stack([t.loc[common, "value"].to_numpy(dtype=float) for t in tables]),
        offline_steps=line.runs[0].offline_steps,
    )


def bootstrap_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile bootstrap band of the mean over seeds (axis 0) at each step (axis 1).

    Seeds are drawn with replacement ``BOOTSTRAP_RESAMPLES`` times from a generator seeded with
    ``BOOTSTRAP_SEED``; the band is the 2.5th and 97.5th percentiles of the resampled means.
    """
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    picks = rng.integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))
    means = values[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    return low, high


# -- curves and panels ----------------------------------------------------------------------------------


@dataclass
class Curve:
    label: str
    x: np.ndarray
    values: np.ndarray
    """Per seed (axis 0) at each x (axis 1)."""
    external: bool = False


@dataclass
class Panel:
    title: str
    ylabel: str
    curves: list[Curve] = field(default_factory=list)
    switches: set[int] = field(default_factory=set)
    """x positions where an offline phase ends and the online phase begins."""
    dataset_level: float | None = None
    """A normalised-score panel's reference line: its dataset's own episodes' mean score."""


def line_curve(label: str, scores: Scores, x: str, external: bool = False) -> Curve:
    if x == "step":
        return Curve(label, scores.steps, scores.values, external)
    keep = scores.online.copy()
    offline = np.flatnonzero(~scores.online)
    if offline.size:
        keep[offline[-1]] = True
    return Curve(label, scores.env_steps[keep], scores.values[:, keep], external)


def overlay_scores(offline: np.ndarray, online: np.ndarray, spans: tuple[int, int]) -> Scores:
    """An external run's evaluations (seeds x evaluations per phase), spread evenly over its
    offline and online spans: evaluation i of n at i/n of its phase."""
    offline_span, online_span = spans
    offline_x = offline_span * np.arange(1, offline.shape[1] + 1) / offline.shape[1]
    online_x = online_span * np.arange(1, online.shape[1] + 1) / online.shape[1]
    return Scores(
        steps=np.concatenate([offline_x, offline_span + online_x]),
        env_steps=np.concatenate([np.zeros_like(offline_x), online_x]),
        online=np.repeat([False, True], [offline.shape[1], online.shape[1]]),
        values=np.hstack([offline, online]),
        offline_steps=offline_span,
    )


def online_until(scores: Scores, online_steps: float) -> Scores:
    """``scores`` without the evaluations after ``online_steps`` of the online phase."""
    keep = scores.steps <= scores.offline_steps + online_steps
    return Scores(
        scores.steps[keep],
        scores.env_steps[keep],
        scores.online[keep],
        scores.values[:, keep],
        scores.offline_steps,
    )


def cut_at(panel: Panel, x_max: float) -> None:
    """Keep the panel's points and switches at x <= ``x_max`` (curves left empty are dropped)."""
    curves = []
    for curve in panel.curves:
        keep = curve.x <= x_max
        if keep.any():
            curves.append(Curve(curve.label, curve.x[keep], curve.values[:, keep], curve.external))
    panel.curves = curves
    panel.switches = {s for s in panel.switches if s <= x_max}


# -- overlays ------------------------------------------------------------------------------------------

OverlayCurves = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
OVERLAY_SHAPE = "{algorithm: {dataset: [per seed: [offline_curve, online_curve, regret]]}}"


def load_overlay(path: Path) -> OverlayCurves:
    """``{algorithm: {dataset: (offline, online)}}``, each an array of seeds x evaluations."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise fail(f"overlay {path}: {err}") from err
    try:
        return {
            algo: {dataset: _seed_curves(seeds) for dataset, seeds in datasets.items()}
            for algo, datasets in data.items()
        }
    except (AttributeError, TypeError, ValueError) as err:
        raise fail(f"overlay {path}: not {OVERLAY_SHAPE} ({err})") from err


def _seed_curves(seeds: list) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(seeds, list) or not seeds:
        raise ValueError(f"a dataset holds {seeds!r:.40}, not a non-empty list of seeds")
    offline, online = (np.array([seed[i] for seed in seeds], dtype=float) for i in (0, 1))
    if any(len(seed) != 3 for seed in seeds) or offline.ndim != 2 or online.ndim != 2 or not offline.size:
        raise ValueError(
            "each seed must be [offline_curve, online_curve, regret] with curves of equal length"
        )
    return offline, online


def add_overlays(
    panels: dict[PanelKey, Panel],
    overlays: Sequence[OverlayCurves],
    match: dict[str, str],
    spans: tuple[int, int],
    x: str,
) -> list[tuple[PanelKey, str, Scores]]:
    """Put each external (algorithm, dataset) curve on the panels whose dataset it matches; returns
    (panel, label, its evaluations on its own schedule) for the table."""
    unmatched, placed = set(), []
    for overlay in overlays:
        for algo, datasets in overlay.items():
            for theirs, (offline, online) in datasets.items():
                keys = [k for k in panels if theirs in (k[1], match.get(k[1]))]
                for key in keys:
                    label, scores = f"{algo} (CORL)", overlay_scores(offline, online, spans)
                    placed.append((key, label, scores))
                    panels[key].curves.append(line_curve(label, scores, x, external=True))
                    if x == "step":
                        panels[key].switches.add(spans[0])
                if not keys:
                    unmatched.add(theirs)
    if unmatched:
        note(f"overlay dataset(s) matching no panel, left out: {', '.join(sorted(unmatched))}")
    return placed


# -- the table -----------------------------------------------------------------------------------------


DECIMALS = {"normalized_score": 1, "eval_success_rate": 2, "eval_return": 1}
"""Table precision per score: a success rate in [0, 1] from 10 episodes moves in steps of 0.1, which
one decimal of a mean over seeds would hide."""


def _mean_std(values: np.ndarray | None, decimals: int, signed: bool = False) -> str:
    if values is None:
        return "n/a"
    return f"{values.mean():{'+' if signed else ''}.{decimals}f} ± {values.std():.{decimals}f}"


def phase_score(scores: Scores, online: bool, up_to: int, last: int) -> np.ndarray | None:
    """Per seed, the mean of the phase's last ``last`` common evaluations at steps <= ``up_to``."""
    index = np.flatnonzero((scores.online == online) & (scores.steps <= up_to))[-last:]
    return scores.values[:, index].mean(axis=1) if index.size else None


def table_row(
    key: PanelKey,
    label: str,
    seeds: int,
    metric: str,
    scores: Scores,
    online_at: Sequence[int],
    last: int = 1,
) -> list[str]:
    """One markdown row; the columns are those of ``table_header``."""
    final = int(scores.steps[-1])
    after_offline = phase_score(scores, False, final, last)
    end = phase_score(scores, True, final, last) if scores.online[-1] else None
    at_n = []
    for n in online_at:
        done = final >= scores.offline_steps + n
        at_n.append(phase_score(scores, True, scores.offline_steps + n, last) if done else None)
    change = end - after_offline if end is not None and after_offline is not None else None
    online_steps = str(final - scores.offline_steps) if end is not None else "n/a"
    decimals = DECIMALS[metric]
    return [
        *key,
        label,
        str(seeds),
        metric,
        _mean_std(after_offline, decimals),
        *(_mean_std(score, decimals) for score in at_n),
        _mean_std(end, decimals),
        online_steps,
        _mean_std(change, decimals, signed=True),
    ]


def table_header(online_at: Sequence[int]) -> list[str]:
    after_n = [f"after {n} online" for n in online_at]
    return [
        "env",
        "dataset",
        "agent",
        "seeds",
        "metric",
        "after offline",
        *after_n,
        "end of online",
        "online steps",
        "online change",
    ]


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines) + "\n"


# -- drawing -------------------------------------------------------------------------------------------


def draw(panels: Sequence[Panel], x: str, path: Path) -> None:
    """One subplot per panel: mean line and bootstrap band per curve, external curves dashed."""
    labels = list(dict.fromkeys(c.label for p in panels for c in sorted(p.curves, key=lambda c: c.external)))
    palette = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    color = {label: palette(i % palette.N) for i, label in enumerate(labels)}
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5.5 * cols, 4 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for curve in panel.curves:
            low, high = bootstrap_band(curve.values)
            style = "--" if curve.external else "-"
            marker = "o" if curve.x.size == 1 else None  # a lone evaluation would draw no line
            ax.plot(
                curve.x,
                curve.values.mean(axis=0),
                style,
                marker=marker,
                color=color[curve.label],
                label=curve.label,
            )
            ax.fill_between(
                curve.x, low, high, color=color[curve.label], alpha=0.1 if curve.external else 0.2
            )
        if panel.dataset_level is not None:
            ax.axhline(panel.dataset_level, color="grey", linestyle=":", label="dataset's episodes (mean)")
        for switch in sorted(panel.switches):
            ax.axvline(switch, color="black", linestyle="--", linewidth=0.8)
            for text, align in (("offline ", "right"), (" online", "left")):
                ax.text(switch, 0.98, text, transform=ax.get_xaxis_transform(), ha=align, va="top")
        ax.set_title(panel.title)
        ax.set_xlabel(
            "step (offline gradient steps, then online env steps)"
            if x == "step"
            else "online env steps (0: after offline)"
        )
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


# -- the command ---------------------------------------------------------------------------------------


def load_runs(paths: Sequence[Path]) -> list[Run]:
    """The runs at ``paths`` that have an evaluation (the others are named on stderr and left out)."""
    runs = []
    for path in paths:
        run = load_run(path)
        if run.evals.empty:
            note(f"{path}: no evaluation yet, left out")
        else:
            runs.append(run)
    return runs


def build(
    dirs: Sequence[Path],
    x: str = "step",
    online_at: Sequence[int] = (),
    overlays: Sequence[Path] = (),
    match: dict[str, str] | None = None,
    overlay_steps: tuple[int, int] = (1_000_000, 1_000_000),
    last: int = 1,
    x_max: float | None = None,
) -> tuple[list[Panel], str]:
    """The panels to draw and the markdown table, from the runs under ``dirs``."""
    runs = load_runs(find_runs(dirs))
    if not runs:
        raise fail(f"no run under {', '.join(map(str, dirs))} has an evaluation yet")
    return build_from_runs(runs, x, online_at, overlays, match, overlay_steps, last, x_max)


def build_from_runs(
    runs: Sequence[Run],
    x: str = "step",
    online_at: Sequence[int] = (),
    overlays: Sequence[Path] = (),
    match: dict[str, str] | None = None,
    overlay_steps: tuple[int, int] = (1_000_000, 1_000_000),
    last: int = 1,
    x_max: float | None = None,
) -> tuple[list[Panel], str]:
    """The panels and the table of ``runs`` (each with an evaluation); see ``build``."""
    panels: dict[PanelKey, Panel] = {}
    rows: dict[PanelKey, list[list[str]]] = defaultdict(list)
    online_end: dict[PanelKey, int] = defaultdict(int)  # the last online step a line of the panel reached
    for key, lines in group_lines(runs).items():
        metric = panel_metric(lines)
        panel = panels[key] = Panel(title=" / ".join(key), ylabel=Y_LABELS[metric])
        levels = {run.dataset_score for line in lines for run in line.runs}
        if metric == "normalized_score" and len(levels) == 1:  # one dataset, one level (None: not logged)
            panel.dataset_level = levels.pop()
        for line in lines:
            scores = align_scores(line, metric)
            panel.curves.append(line_curve(line.label, scores, x))
            if x == "step" and scores.offline_steps > 0:
                panel.switches.add(scores.offline_steps)
            rows[key].append(table_row(key, line.label, len(line.runs), metric, scores, online_at, last))
            if scores.online[-1]:
                online_end[key] = max(online_end[key], int(scores.steps[-1]) - scores.offline_steps)
    placed = add_overlays(panels, [load_overlay(p) for p in overlays], match or {}, overlay_steps, x)
    for key, label, scores in placed:
        cut = online_until(scores, online_end[key])
        rows[key].append(table_row(key, label, len(scores.values), "normalized_score", cut, online_at, last))
    if x_max is not None:
        for panel in panels.values():
            cut_at(panel, x_max)
    table_rows = [row for key in panels for row in rows[key]]
    return list(panels.values()), markdown(table_header(online_at), table_rows)


def _parse_match(text: str) -> tuple[str, str]:
    ours, sep, theirs = text.partition("=")
    if not (sep and ours and theirs):
        raise argparse.ArgumentTypeError(f"expected OURS=THEIRS, got {text!r}")
    return ours, theirs


def _parse_steps(text: str) -> tuple[int, int]:
    try:
        offline, online = (int(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected OFFLINE,ONLINE step counts, got {text!r}") from err
    return offline, online


def add_plot_options(parser: argparse.ArgumentParser) -> None:
    """The options that shape the curves and the table (``rl.report`` takes the same)."""
    parser.add_argument("--x", choices=("step", "env_steps"), default="step", help="x axis (default: step)")
    parser.add_argument(
        "--online-at", nargs="+", type=int, default=[], metavar="N", help="table columns after N online steps"
    )
    parser.add_argument(
        "--overlay",
        nargs="+",
        type=Path,
        default=[],
        action="extend",
        metavar="FILE.json",
        help="external curves to draw",
    )
    parser.add_argument(
        "--overlay-match",
        nargs="+",
        type=_parse_match,
        default=[],
        metavar="OURS=THEIRS",
        help="our dataset name = theirs",
    )
    parser.add_argument(
        "--overlay-steps",
        type=_parse_steps,
        default=(1_000_000, 1_000_000),
        metavar="OFFLINE,ONLINE",
        help="the external runs' phase lengths (default: 1000000,1000000)",
    )
    parser.add_argument(
        "--last",
        type=int,
        default=1,
        metavar="K",
        help="table cells average each seed's last K evaluations of the phase (default: 1)",
    )
    parser.add_argument(
        "--x-max", type=float, default=None, metavar="N", help="draw x <= N only (the table is unchanged)"
    )


def plot_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """``build``'s keyword arguments from parsed ``add_plot_options`` options (refused if out of range)."""
    if args.last < 1:
        parser.error(f"--last must be at least 1, got {args.last}")
    if args.x_max is not None and args.x_max <= 0:
        parser.error(f"--x-max must be positive, got {args.x_max}")
    return {
        "x": args.x,
        "online_at": args.online_at,
        "overlays": args.overlay,
        "match": dict(args.overlay_match),
        "overlay_steps": args.overlay_steps,
        "last": args.last,
        "x_max": args.x_max,
    }


def write(panels: Sequence[Panel], table: str, x: str, out: Path) -> None:
    """``curves.png`` and ``table.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    draw(panels, x, out / "curves.png")
    (out / "table.md").write_text(table)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rl.plot", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--out", type=Path, help="where curves.png and table.md go (default: the first dir)")
    add_plot_options(parser)
    args = parser.parse_args(argv)
    panels, table = build(args.dirs, **plot_options(parser, args))
    out = args.out or args.dirs[0]
    write(panels, table, args.x, out)
    print(table, end="")
    note(f"wrote {out / 'curves.png'} and {out / 'table.md'}")


if __name__ == "__main__":
    main()
