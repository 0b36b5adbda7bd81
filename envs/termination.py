"""Termination rules of the MuJoCo locomotion envs, as functions of model transitions.

A model-based agent (Uni-O4's AM-Q) rolls policies out in a learned dynamics model; these rules end
a rollout where the real env would end the episode (a fall), so the critic is never read on states
past one. They are the official Uni-O4 rules (``transition_model/utils/termination_fns.py``, from
MOBILE), which are Gymnasium's healthy checks on the default observation layout (the root's x
excluded: ``obs[0]`` is the height, ``obs[1]`` the torso angle):

- hopper: alive while every entry is finite, ``obs[1:] < 100``, height > 0.7 and |angle| < 0.2.
  The official line is ``np.abs(next_obs[:, 1:] < 100)``: the absolute value of the comparison,
  so only the upper bound is checked; kept as written (Gymnasium checks |obs[1:]| < 100; a state
  below -100 is far outside any dataset either way).
- walker2d: alive while every entry lies in (-100, 100), 0.8 < height < 2.0 and -1 < angle < 1.
- halfcheetah: never falls; alive while every entry lies in (-100, 100).

``for_env(cfg)`` gives the rule for an env config, or None when there is none (other envs, or a
customised simulator whose observation layout or health limits the rule cannot know). The loop
passes it to ``rl.agents.build_agent`` (agents import no env).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from envs.config import EnvConfig

TerminationFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(obs, action, next_obs) -> terminated``: ``(B, ...)`` rows in, a ``(B,)`` bool tensor out."""


def _within(next_obs: torch.Tensor, bound: float) -> torch.Tensor:
    return ((next_obs > -bound) & (next_obs < bound)).all(-1)


def hopper(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    height, angle = next_obs[:, 0], next_obs[:, 1]
    alive = (
        torch.isfinite(next_obs).all(-1)
        & (next_obs[:, 1:] < 100).all(-1)
        & (height > 0.7)
        & (angle.abs() < 0.2)
    )
    return ~alive


def walker2d(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    height, angle = next_obs[:, 0], next_obs[:, 1]
    alive = _within(next_obs, 100.0) & (height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~alive


def halfcheetah(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    return ~_within(next_obs, 100.0)


RULES: dict[str, TerminationFn] = {"Hopper": hopper, "Walker2d": walker2d, "HalfCheetah": halfcheetah}
"""Gymnasium MuJoCo id (without its version) -> rule."""


def for_env(cfg: EnvConfig) -> TerminationFn | None:
    """The rule for ``cfg``'s Gymnasium MuJoCo env, or None (no rule known, or constructor kwargs that
    may change the observation layout or the health limits)."""
    if cfg.family != "gymnasium" or cfg.kwargs:
        return None
    return RULES.get(cfg.id.split("-v")[0])
