"""Normalised scores: ``100 * (R - R_min) / (R_max - R_min)`` on raw, undiscounted episode returns.

Reference returns come from one of two places:
- Minari datasets carry ``ref_min_score`` / ``ref_max_score`` in their metadata (a random policy's and
  an expert's mean return in *that* env); ``ScoreNormalizer.for_run`` prefers them.
- D4RL's own table, pinned below from ``Farama-Foundation/D4RL@89141a6 d4rl/infos.py``. The values are
  shared by every dataset level and version of a task (infos.py copies them), so the table is keyed
  by task. Some public copies carry different numbers (e.g. hopper 395.64/4376.33); these are D4RL's.
D4RL's numbers were measured on gym ``-v3`` dynamics; on Gymnasium ``-v5`` they stay a useful but
approximate yardstick, which is why a dataset's own metadata wins when present.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# task -> (random-policy return, expert return)
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "antmaze": (0.0, 1.0),
    "kitchen": (0.0, 4.0),
    "pen": (96.262799, 3076.8331017826877),
    "door": (-56.512833, 2880.5693087298737),
    "hammer": (-274.856578, 12794.134825156867),
    "relocate": (-6.425911, 4233.877797728884),
    "maze2d-umaze": (23.85, 161.86),
    "maze2d-medium": (13.13, 277.39),
    "maze2d-large": (6.7, 273.99),
}


@dataclass(frozen=True)
class ScoreNormalizer:
    ref_min: float
    ref_max: float
    source: str
    """Where the references came from: 'dataset metadata' or 'D4RL table (<task>)'."""

    def __post_init__(self) -> None:
        if not self.ref_max > self.ref_min:
            raise ValueError(
                f"reference scores from {self.source}: need max > min, got {self.ref_min}, {self.ref_max}"
            )

    def __call__(self, raw_return: float | np.ndarray) -> float | np.ndarray:
        return 100.0 * (raw_return - self.ref_min) / (self.ref_max - self.ref_min)

    @staticmethod
    def d4rl(task: str) -> ScoreNormalizer:
        if task not in D4RL_REF_SCORES:
            raise ValueError(f"no D4RL reference scores for task {task!r}; known: {sorted(D4RL_REF_SCORES)}")
        lo, hi = D4RL_REF_SCORES[task]
        return ScoreNormalizer(lo, hi, f"D4RL table ({task})")

    @staticmethod
    def for_run(
        score_name: str | None, ref_min: float | None = None, ref_max: float | None = None
    ) -> ScoreNormalizer | None:
        """Dataset metadata first, then the D4RL table by the env's ``score_name``, else None."""
        if ref_min is not None and ref_max is not None:
            return ScoreNormalizer(float(ref_min), float(ref_max), "dataset metadata")
        if score_name is not None:
            return ScoreNormalizer.d4rl(score_name)
        return None
