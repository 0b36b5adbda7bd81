"""Copy what a results page needs out of a sweep directory (``rl.report``'s collection step alone):
each finished run's resolved config and its evaluation rows (plus ``--metrics`` prefixes) into
``<out>/<agent>_<dataset>_s<seed>/``; runs that did not finish are listed, not copied.

    python experiments/collect_runs.py runs/d4rl_o2o results/d4rl_o2o/runs
    python experiments/collect_runs.py runs/o2o_family results/o2o_family/runs --metrics amq_ beta_

``python -m rl.report runs/<study> --out results/<study>`` does this and draws the page too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rl.report import EVALUATION_METRICS, collect, survey


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--metrics", nargs="*", default=[], help="extra metric-name prefixes to keep besides the evaluations"
    )
    args = parser.parse_args(argv)
    found = collect(survey(args.sweep_dir), args.out, EVALUATION_METRICS + tuple(args.metrics))
    for run in found:
        if run.status != "finished":
            print(f"not copied: {run.path}: {run.status}")
    print(f"copied {sum(run.status == 'finished' for run in found)} runs into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
