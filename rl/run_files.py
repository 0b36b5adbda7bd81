"""The files a run and a sweep leave on disk, as the analysis tools read them.

``rl.plot``, ``rl.calibration`` and ``rl.report`` read finished runs on any machine, so this module
(and they) import neither torch nor Hydra's internals: a results page redraws in about a second.
The writers (``rl.loops.logger``, ``rl.sweep``) take the layouts from here, so reader and writer
cannot drift apart.
"""

from __future__ import annotations

import csv
from pathlib import Path

METRICS_COLUMNS = ("step", "phase", "env_steps", "metric", "value")
"""``metrics.csv``'s header: one row per logged value."""

ADDED_SETTINGS = {"precision": "fp32"}
"""Settings newer than some saved runs, with the value those runs computed with: a run whose saved
config lacks one ran with it, so it resumes (``rl.loops.run_state``) and plots (``rl.plot``) as a run
with that value, not as another config."""

DATASET_DIGEST = "dataset_sha256.txt"
"""``<sha256>  <dataset source>``: which copy of its data a run trained on (``Dataset.sha256``)."""
RUN_RECORD = (".hydra/config.yaml", ".hydra/overrides.yaml", "git_revision.txt", DATASET_DIGEST)
"""What a run writes about itself when it starts (``rl.train``); a published run carries them."""

INDEX = "index.csv"
"""A sweep's list of its jobs (``rl.sweep``): one row per job folder."""
INDEX_FIELDS = ("folder", "status", "overrides")


def read_index(sweep_dir: Path) -> dict[str, dict[str, str]]:
    """The index's rows by folder (empty if the sweep has none)."""
    path = sweep_dir / INDEX
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {row["folder"]: row for row in csv.DictReader(f)}
