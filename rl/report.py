"""``python -m rl.report``: from sweep directories to a study's results page in one command.

    python -m rl.report runs/d4rl_o2o --out results/d4rl_o2o --last 3 --online-at 2500
    python -m rl.report results/d4rl_o2o/runs --out results/d4rl_o2o --last 3 --online-at 2500   (redraw)

1. Runs: every run folder under the given directories (``.hydra/config.yaml``), and every job a
   sweep's ``index.csv`` lists (rl/sweep.py). A run is *finished* when it saved its final agent
   (``checkpoints/agent_final.pt``); a folder with ``metrics.csv`` and no ``checkpoints/`` is a
   collected copy of a finished run. The others are *failed* (the index says why), *unfinished* (the
   last step they logged) or *missing* (in the index, never started). None is dropped silently: they
   are listed in the README section, not drawn.
2. Collect: each finished run's resolved config (and overrides and git revision when recorded) and
   the metric rows the results need (evaluations, plus ``--metrics`` prefixes) are copied into
   ``<out>/runs/<agent>_<dataset>_s<seed>/``, small files to commit (run folders hold checkpoints and
   buffers, hundreds of MB). ``<out>/runs/index.csv`` lists every run considered, so a redraw from the
   collected runs lists the same failed and missing ones. Runs already under ``<out>/runs`` stay as
   they are.
3. Draw: ``curves.png`` (mean and 95% bootstrap band over seeds, overlays) and ``table.md``, by
   ``rl.plot`` with the same options (``--x``, ``--online-at``, ``--last``, ``--overlay``...).
4. README: a generated section between ``<!-- rl.report -->`` markers in ``<out>/README.md`` (the
   file is created if absent; text outside the markers is never touched): the commands, each line's
   seeds and the command that ran them, and the runs left out.
"""

from __future__ import annotations

import argparse
import csv
import re
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from rl import plot
from rl.run_files import INDEX, INDEX_FIELDS, METRICS_COLUMNS, RUN_RECORD, read_index

EVALUATION_METRICS = ("eval_", "normalized_score", "dataset_normalized_score")
BEGIN = (
    "<!-- rl.report: generated from here to the end marker by python -m rl.report; edits here are lost -->"
)
END = "<!-- rl.report: end -->"


def fail(message: str) -> SystemExit:
    return SystemExit(f"rl.report: error: {message}")


@dataclass
class Found:
    """One run a report considered: where it is (or was to be), how it ended, how it was started."""

    path: Path
    status: str
    """``finished``, ``failed: <why>``, ``unfinished: ...`` or ``missing: ...``."""
    overrides: str = ""


def survey(directory: Path) -> list[Found]:
    """Every run under ``directory`` and every job its sweep indexes name, with its status."""
    if not directory.is_dir():
        raise fail(f"{directory} is not a directory")
    indexed = {}
    for index in sorted(directory.rglob(INDEX)):
        for folder, row in read_index(index.parent).items():
            # A sweep's index names folders beside it; a collected index (``collect``) keeps the
            # path a run left out had when it was collected.
            path = Path(folder) if "/" in folder else index.parent / folder
            indexed[path.resolve()] = row
    found = []
    for config in sorted(directory.rglob(".hydra/config.yaml")):
        run_dir = config.parent.parent
        row = indexed.pop(run_dir.resolve(), {})
        found.append(Found(run_dir, _status(run_dir, row.get("status", "")), row.get("overrides", "")))
    for path, row in sorted(indexed.items()):
        status = row["status"]
        if not status.startswith(("failed", "missing", "unfinished")):
            status = f"missing: {status} in the index, no run folder"
        found.append(Found(_relative(path), status, row["overrides"]))
    return found


def _relative(path: Path) -> Path:
    """``path`` relative to the working directory when it is under it (as a user would type it)."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def _status(run_dir: Path, indexed: str) -> str:
    if (run_dir / "checkpoints" / "agent_final.pt").is_file():
        return "finished"
    if not (run_dir / "checkpoints").exists() and (run_dir / "metrics.csv").is_file():
        return "finished"  # a collected copy: only finished runs are collected
    if indexed.startswith("failed"):
        return indexed
    steps = _last_step(run_dir / "metrics.csv")
    return f"unfinished: last logged step {steps}" if steps is not None else "unfinished: nothing logged"


def _last_step(metrics: Path) -> int | None:
    if not metrics.is_file():
        return None
    with metrics.open(newline="") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    return max(steps, default=None)


# -- collecting ------------------------------------------------------------------------------------------


def collected_name(run_dir: Path) -> str:
    """``<agent>_<dataset>_s<seed>`` from a run's resolved config (path separators replaced)."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    return re.sub(r"[^\w.=+-]", "_", f"{cfg.agent.name}_{cfg.dataset.name}_s{cfg.seed}")


def collect_run(run_dir: Path, target: Path, prefixes: tuple[str, ...]) -> Path:
    """Copy ``run_dir``'s record (config, overrides, git revision, dataset digest: those it has) and the metric rows whose
    name starts with one of ``prefixes`` into ``target``."""
    (target / ".hydra").mkdir(parents=True, exist_ok=True)
    for name in RUN_RECORD:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, target / name)
    with (
        open(run_dir / "metrics.csv", newline="") as source,
        open(target / "metrics.csv", "w", newline="") as sink,
    ):
        reader = csv.DictReader(source)
        writer = csv.DictWriter(sink, fieldnames=reader.fieldnames or METRICS_COLUMNS)
        writer.writeheader()
        writer.writerows(row for row in reader if row["metric"].startswith(prefixes))
    return target


def collect(found: list[Found], runs_dir: Path, prefixes: tuple[str, ...]) -> list[Found]:
    """The finished runs copied into ``runs_dir`` (those already there kept as they are) and, when some
    did not finish, every run listed in ``runs_dir/index.csv``; returns the runs as they now stand
    (finished ones at their copy)."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    taken: dict[str, Path] = {}
    result = []
    for run in found:
        if run.status == "finished" and runs_dir.resolve() not in run.path.resolve().parents:
            name = collected_name(run.path)
            if name in taken and taken[name] != run.path:
                name = f"{name}-{run.path.name}"  # another config with the same agent, data and seed
            taken[name] = run.path
            run = Found(collect_run(run.path, runs_dir / name, prefixes), run.status, run.overrides)
        result.append(run)
    index = runs_dir / INDEX
    index.unlink(missing_ok=True)
    if all(run.status == "finished" for run in result):
        return result
    with index.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=INDEX_FIELDS, lineterminator="\n")
        writer.writeheader()
        for run in result:
            inside = runs_dir.resolve() in run.path.resolve().parents
            folder = run.path.name if inside else str(_relative(run.path.resolve()))
            writer.writerow({"folder": folder, "status": run.status, "overrides": run.overrides})
    return result


# -- the README section ----------------------------------------------------------------------------------


def line_command(runs: Sequence[plot.Run]) -> str:
    """The multirun command that ran a line's seeds, from their recorded overrides: the overrides
    they share, plus ``key=a,b`` for those that differ (the seed)."""
    recorded = []
    for run in runs:
        path = run.path / ".hydra" / "overrides.yaml"
        if not path.is_file():
            return "(overrides not recorded with these runs)"
        recorded.append(dict(o.split("=", 1) for o in OmegaConf.load(path) if "=" in o))
    keys = list(dict.fromkeys(k for overrides in recorded for k in overrides))
    parts = []
    for key in keys:
        values = list(dict.fromkeys(overrides.get(key, "") for overrides in recorded))
        parts.append(f"{key}={','.join(values)}")
    return "`python -m rl.train -m " + " ".join(shlex.quote(p) for p in parts) + "`"


def readme_section(command: str, redraw: str, runs: Sequence[plot.Run], left_out: Sequence[Found]) -> str:
    lines = [
        BEGIN,
        "## Runs and commands (generated)",
        "",
        "`table.md`, `curves.png` and this section were made with",
        "",
        f"```bash\n{command}\n```",
        "",
    ]
    if redraw != command:
        lines += ["and are redrawn from the collected runs with", "", f"```bash\n{redraw}\n```", ""]
    lines += [
        "| env | dataset | line | seeds | command |",
        "|---|---|---|---|---|",
    ]
    for (env, dataset), panel_lines in plot.group_lines(runs).items():
        for line in panel_lines:
            seeds = ", ".join(str(s) for s in sorted(run.seed for run in line.runs))
            lines.append(f"| {env} | {dataset} | {line.label} | {seeds} | {line_command(line.runs)} |")
    lines.append("")
    if left_out:
        lines.append(f"Left out of the table and the curves ({len(left_out)}):")
        lines.append("")
        for run in left_out:
            overrides = f" (`{run.overrides}`)" if run.overrides else ""
            lines.append(f"- `{run.path}`: {run.status}{overrides}")
    else:
        lines.append("Every run found finished and is in the table.")
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_readme(path: Path, section: str) -> None:
    """Put ``section`` between the markers of ``path`` (appended if it has none, a new file if absent)."""
    text = path.read_text() if path.is_file() else f"# {path.parent.name}\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


# -- the command -----------------------------------------------------------------------------------------


def command_line(args: argparse.Namespace, dirs: Sequence[Path], metrics: bool) -> str:
    """The ``rl.report`` command for ``dirs`` with ``args``' options (``--metrics`` if asked)."""
    words = ["python -m rl.report", *map(str, dirs), "--out", str(args.out)]
    if metrics and args.metrics:
        words += ["--metrics", *args.metrics]
    if args.x != "step":
        words += ["--x", args.x]
    if args.last != 1:
        words += ["--last", str(args.last)]
    if args.online_at:
        words += ["--online-at", *map(str, args.online_at)]
    if args.overlay:
        words += ["--overlay", *map(str, args.overlay)]
    if args.overlay_match:
        words += ["--overlay-match", *(f"{ours}={theirs}" for ours, theirs in args.overlay_match)]
    if args.overlay_steps != (1_000_000, 1_000_000):
        words += ["--overlay-steps", ",".join(map(str, args.overlay_steps))]
    if args.x_max is not None:
        words += ["--x-max", f"{args.x_max:g}"]
    return " ".join(words)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl.report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument("--out", type=Path, required=True, help="the study's results folder")
    parser.add_argument(
        "--metrics", nargs="*", default=[], metavar="PREFIX", help="metrics to keep besides evaluations"
    )
    plot.add_plot_options(parser)
    args = parser.parse_args(argv)
    options = plot.plot_options(parser, args)

    found = [run for directory in args.dirs for run in survey(directory)]
    found = collect(found, args.out / "runs", EVALUATION_METRICS + tuple(args.metrics))
    finished = [run.path for run in found if run.status == "finished"]
    runs = plot.load_runs(finished)
    drawn = {run.path.resolve() for run in runs}
    left_out = [run for run in found if run.status != "finished"]
    left_out += [Found(p, "finished, no evaluation logged") for p in finished if p.resolve() not in drawn]
    if not runs:
        raise fail(f"no finished run with an evaluation under {', '.join(map(str, args.dirs))}")
    panels, table = plot.build_from_runs(runs, **options)
    plot.write(panels, table, args.x, args.out)
    made = command_line(args, args.dirs, metrics=True)
    redraw = command_line(args, [args.out / "runs"], metrics=False)
    write_readme(args.out / "README.md", readme_section(made, redraw, runs, left_out))
    print(table, end="")
    for run in left_out:
        print(f"rl.report: left out {run.path}: {run.status}", file=sys.stderr)
    print(f"rl.report: wrote table.md, curves.png, README.md and runs/ in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
