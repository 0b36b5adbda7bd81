"""What every agent is, and the few pieces of algorithm code that several agents share.

An agent is built from its config, the observation and action sizes and the device; it knows
nothing about envs, files or loops. It exposes:
- ``act(obs, deterministic)``: a batch of actions in [-1, 1];
- ``update(batch)``: one learning step on a ``Batch`` of ``batch_size`` rows; returns a dict of
  detached scalar tensors (no host synchronisation: the logger decides when to read them);
- ``state_dict()`` / ``load_state_dict()``: networks, optimizers and learnable scalars, checked by
  name and shape on load so a checkpoint of another agent or size fails with a clear message.
"""

from __future__ import annotations

import abc
import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from rl.buffers.batch import Batch


@dataclass
class AgentConfig:
    name: str = "???"
    gamma: float = 0.99
    batch_size: int = 256
    """Rows per gradient step."""
    normalize_obs: bool = False
    """Standardise observations with the offline dataset's mean/std (fixed, saved with the networks)."""


class Agent(abc.ABC):
    name: ClassVar[str]
    config_class: ClassVar[type[AgentConfig]]
    on_policy: ClassVar[bool] = False
    """True for agents whose online phase learns from rollouts (PPO-style): the loop then calls
    ``policy_step(obs) -> (action, log_prob, value)``, ``state_value(obs)`` and, every
    ``rollout_steps`` env steps, ``update_rollout(rollout, last_obs)`` instead of ``update``."""

    def __init__(self, cfg: AgentConfig, obs_dim: int, action_dim: int, device: torch.device) -> None:
        self.cfg, self.obs_dim, self.action_dim, self.device = cfg, obs_dim, action_dim, device

    @property
    def batch_size(self) -> int:
        """Rows the loop samples for one ``update`` call (agents with a UTD ratio ask for more)."""
        return self.cfg.batch_size

    def load_pretrained(self, state: dict[str, Any]) -> None:
        """Start from another run's agent (``checkpoint=<path>``); by default it must be the same agent."""
        self.load_state_dict(state)

    def begin_online(self) -> None:  # noqa: B027 (an optional hook, deliberately empty)
        """Called by the loop when the online phase starts (or resumes); most agents need nothing."""

    @abc.abstractmethod
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """A batch of actions in [-1, 1] for a batch of observations."""

    @abc.abstractmethod
    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One learning step on ``batch_size`` rows; detached scalar metrics."""

    # -- checkpoints ------------------------------------------------------------------------------

    def _stateful(self) -> dict[str, nn.Module | torch.optim.Optimizer | torch.Tensor]:
        """Every module, optimizer and tensor attribute: what a checkpoint must carry."""
        return {
            k: v
            for k, v in vars(self).items()
            if isinstance(v, nn.Module | torch.optim.Optimizer | torch.Tensor)
        }

    def state_dict(self) -> dict[str, Any]:
        state = {}
        for key, value in self._stateful().items():
            state[key] = value.detach() if isinstance(value, torch.Tensor) else value.state_dict()
        # state_dict() returns live references that later updates modify in place: copy them out.
        state = copy.deepcopy(state)
        return {
            "agent": self.cfg.name,
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "state": state,
        }

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("agent") != self.cfg.name:
            raise ValueError(
                f"checkpoint holds agent {checkpoint.get('agent')!r}, this run builds {self.cfg.name!r}"
            )
        sizes = (checkpoint["obs_dim"], checkpoint["action_dim"])
        if sizes != (self.obs_dim, self.action_dim):
            raise ValueError(
                f"checkpoint was made for obs/action sizes {sizes}, this run has {(self.obs_dim, self.action_dim)}"
            )
        ours, theirs = self._stateful(), checkpoint["state"]
        if set(ours) != set(theirs):
            raise ValueError(f"checkpoint parts {sorted(theirs)} != this agent's {sorted(ours)}")
        for key, value in ours.items():
            if isinstance(value, nn.Module):
                check_shapes(key, value.state_dict(), theirs[key])
                value.load_state_dict(theirs[key])
            elif isinstance(value, torch.optim.Optimizer):
                value.load_state_dict(theirs[key])
            else:
                if value.shape != theirs[key].shape:
                    raise ValueError(
                        f"checkpoint '{key}' has shape {tuple(theirs[key].shape)}, expected {tuple(value.shape)}"
                    )
                with torch.no_grad():
                    value.copy_(theirs[key])


def check_shapes(prefix: str, expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    """Raise naming the first tensor whose name or shape differs (e.g. a 2-critic vs 10-critic ensemble)."""
    if set(expected) != set(got):
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        raise ValueError(f"checkpoint '{prefix}': missing {missing[:3]}, unexpected {extra[:3]}")
    for name, tensor in expected.items():
        if tensor.shape != got[name].shape:
            raise ValueError(
                f"checkpoint '{prefix}.{name}' has shape {tuple(got[name].shape)}, this run expects {tuple(tensor.shape)}"
            )


# -- pieces several agents share -------------------------------------------------------------------


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target <- (1 - tau) * target + tau * source``, for all parameters in one foreach call."""
    target_params = list(target.parameters())
    torch._foreach_lerp_(target_params, list(source.parameters()), tau)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """``mean(|expectile - 1(diff < 0)| * diff^2)``: IQL's asymmetric regression of V towards Q."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel: one kernel for all parameters, no host sync inside ``step``."""
    return torch.optim.Adam(params, lr=lr, fused=True)
