"""``Batch``: the one type that flows from every buffer to every off-policy agent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

Obs = torch.Tensor | dict[str, torch.Tensor]


@dataclass(frozen=True)
class Batch:
    obs: Obs
    action: torch.Tensor
    reward: torch.Tensor
    """Already scaled: ``raw * reward_scale + reward_bias`` (the buffer applies it on the way in)."""
    next_obs: Obs
    terminated: torch.Tensor
    """1.0 where the episode truly ended, so the target must not bootstrap; 0.0 on time-limit truncation."""
    mc_return: torch.Tensor
    """Discounted return-to-go of the (scaled) rewards from this row to its episode's end; -inf until
    the episode has ended (online rows), which disables Cal-QL's floor for those rows."""

    def __len__(self) -> int:
        return self.reward.shape[0]

    def split(self, parts: int) -> list[Batch]:
        """``parts`` equal, disjoint minibatches (for update-to-data ratios above one)."""
        if len(self) % parts:
            raise ValueError(f"batch of {len(self)} does not split into {parts} equal parts")
        size = len(self) // parts
        return [self.slice(i * size, (i + 1) * size) for i in range(parts)]

    def slice(self, start: int, stop: int) -> Batch:
        return Batch(
            **{f.name: map_obs(getattr(self, f.name), lambda t: t[start:stop]) for f in fields(self)}
        )

    @staticmethod
    def cat(parts: list[Batch]) -> Batch:
        if len(parts) == 1:
            return parts[0]
        out = {}
        for f in fields(Batch):
            values = [getattr(p, f.name) for p in parts]
            if isinstance(values[0], dict):
                out[f.name] = {k: torch.cat([v[k] for v in values]) for k in values[0]}
            else:
                out[f.name] = torch.cat(values)
        return Batch(**out)


def map_obs(value: Obs, fn: Callable[[torch.Tensor], torch.Tensor]) -> Obs:
    """``fn`` applied to an observation tensor, or to each tensor of a dict observation."""
    if isinstance(value, dict):
        return {k: fn(v) for k, v in value.items()}
    return fn(value)


def obs_rows(value: Obs) -> int:
    """Rows of an observation batch: its leading size, or that of a dict observation's tensors."""
    return next(iter(value.values())).shape[0] if isinstance(value, dict) else value.shape[0]


def take_rows(value: Obs, index: torch.Tensor) -> Obs:
    """The rows ``index`` of an observation batch (of each tensor of a dict observation)."""
    return map_obs(value, lambda t: t[index])
