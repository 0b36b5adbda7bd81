"""Offline/online mixing: one batch, an exact share of it from each buffer."""

from __future__ import annotations

from rl.buffers.batch import Batch
from rl.buffers.replay import ReplayBuffer


class MixedSampler:
    """Draws ``round(n * offline_ratio)`` rows from the offline buffer and the rest from the online one.

    ``offline_ratio = 0`` samples online data only (WSRL); ``0.5`` is the symmetric RLPD/Cal-QL
    sampling; ``1`` keeps training on the dataset alone. The split is exact in every batch, so the
    ratio holds for each update, not just on average. ``offline`` may be None when the ratio is 0.
    """

    def __init__(self, offline: ReplayBuffer | None, online: ReplayBuffer, offline_ratio: float) -> None:
        if not 0.0 <= offline_ratio <= 1.0:
            raise ValueError(f"offline_ratio must lie in [0, 1], got {offline_ratio}")
        if offline_ratio > 0 and (offline is None or len(offline) == 0):
            raise ValueError(f"offline_ratio={offline_ratio} needs offline data, but the run has no dataset")
        self.offline, self.online, self.offline_ratio = offline, online, offline_ratio

    def ready(self, n: int) -> bool:
        """A batch of ``n`` may be drawn: the online buffer holds at least the batch's online share
        and the offline one is not empty. The official WSRL/Cal-QL fine-tuning
        (``finetune.py``: ``min_steps_to_update = batch_size * (1 - offline_data_ratio)``) makes no
        update before that; updating from the first online row instead draws each early transition
        hundreds of times. Rows still waiting for labels do not count."""
        online_ok = len(self.online) >= n - round(n * self.offline_ratio)
        return online_ok and (self.offline_ratio == 0.0 or len(self.offline) > 0)

    def sample(self, n: int) -> Batch:
        n_offline = round(n * self.offline_ratio)
        parts = []
        if n_offline:
            parts.append(self.offline.sample(n_offline))
        if n - n_offline:
            parts.append(self.online.sample(n - n_offline))
        return Batch.cat(parts)
