"""One logging contract for every phase: TensorBoard events, a tidy ``metrics.csv``, a progress bar.

``metrics.csv`` has one row per (step, metric): ``step,phase,env_steps,metric,value``. ``step`` is
the run's single x-axis: offline gradient steps first, then the online phase's env steps continue
from there, so a plot puts both phases on one axis with the switch at ``steps.offline``.
``env_steps`` counts the env's own steps across all copies: an action chunk counts ``action_chunk``.
On resume, rows and events written after the checkpoint are dropped, so the resumed curve has no
duplicates: the CSV is truncated and TensorBoard purges events past ``purge_step``.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from rl.run_files import METRICS_COLUMNS


class RunLogger:
    def __init__(self, run_dir: Path, total_steps: int, start_step: int, progress: bool) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = run_dir / "metrics.csv"
        _truncate_csv(self.csv_path, start_step)
        new_file = not self.csv_path.exists()
        self._csv_file = self.csv_path.open("a", newline="")
        self._csv = csv.writer(self._csv_file)
        if new_file:  # on disk at once: a run killed before its first rows still has its header
            self._csv.writerow(METRICS_COLUMNS)
            self._csv_file.flush()
        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step if start_step > 0 else None)
        self.bar = tqdm(
            total=total_steps, initial=start_step, disable=not progress, dynamic_ncols=True, unit="step"
        )
        self.last_score: float | None = None
        self._rate_mark = (time.perf_counter(), start_step)

    def log(self, step: int, phase: str, env_steps: int, metrics: dict[str, float | torch.Tensor]) -> None:
        """Write scalars. Tensors are read here (one host sync per log call, never per update)."""
        values = {k: float(v) for k, v in metrics.items()}
        for key, value in values.items():
            self._csv.writerow([step, phase, env_steps, key, f"{value:.6g}"])
            self.tb.add_scalar(f"{phase}/{key}", value, step)
        self._csv_file.flush()
        if "normalized_score" in values:
            self.last_score = values["normalized_score"]

    def steps_per_second(self, step: int) -> float:
        now = time.perf_counter()
        then, then_step = self._rate_mark
        self._rate_mark = (now, step)
        return (step - then_step) / max(now - then, 1e-9)

    def advance(self, step: int, phase: str) -> None:
        self.bar.n = step
        score = "-" if self.last_score is None else f"{self.last_score:.1f}"
        self.bar.set_postfix_str(f"{phase} | score {score}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
        self.tb.close()
        self._csv_file.close()


def _truncate_csv(path: Path, keep_through: int) -> None:
    """Keep the header and the rows with ``step <= keep_through``; a start from step 0 (no checkpoint
    yet) keeps only the header, as the run logs its step-0 rows again. The header is written anew, so
    a file left empty by an attempt killed before its first write gets one too."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    resumed = keep_through > 0
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(METRICS_COLUMNS)
        writer.writerows(r for r in rows if resumed and int(r[0]) <= keep_through)
    tmp.replace(path)
