"""What every agent is, and the few pieces of algorithm code that several agents share.

An agent is built from its config, the observation and action sizes and the device; it knows
nothing about envs, files or loops. It exposes:
- ``act(obs, deterministic)``: a batch of actions in [-1, 1];
- ``update(batch)``: one learning step on a ``Batch`` of ``batch_size`` rows; returns a dict of
  detached scalar tensors (no host synchronisation: the logger decides when to read them);
- ``state_dict()`` / ``load_state_dict()``: networks, optimizers and learnable scalars, checked by
  name and shape on load so a checkpoint of another agent or size fails with a clear message.

``compile_update()`` (the run's ``compile=true``) swaps ``update`` for its ``torch.compile``d version,
for every agent alike; on a CUDA device the compiled graphs are also captured as CUDA graphs.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable
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

    def compile_update(self) -> None:
        """From now on, run ``update`` through ``torch.compile`` (see ``compiled_update``)."""
        self.update = compiled_update(self.update, self.device)  # type: ignore[method-assign]

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


# -- compiling the update ----------------------------------------------------------------------------


def compile_options(device: torch.device) -> dict[str, Any]:
    """Inductor options for an agent's update on ``device``.

    - ``fallback_random``: random ops (``randperm`` of the target subset, the actor's noise) call the
      same aten kernels and generator as eager, so a compiled update draws the same numbers and its
      results match eager to float rounding (tests/test_compile.py): ``compile`` is a speed choice.
    - ``pattern_matcher=False`` works around a torch 2.13 inductor bug (pytorch/pytorch#183988; the
      fix, #184276, is not in 2.13.0). Inductor's ``randperm_index_pattern`` (fx_passes/misc_patterns.py)
      is meant for ``x[torch.randperm(n)[:k]]``, but it was traced with n=4 and k=42, so the slice was
      elided while tracing and the pattern became ``x[torch.randperm(n)]`` with its ``slice_shape``
      input unbound. Any graph that indexes with a whole ``randperm`` then matches and its check
      raises "Not all inputs to pattern found in match.kwargs ... argname=slice_shape". Ours do
      whenever ``subset_size == num_critics`` (SAC's and CQL's default 2 of 2): ``randperm(2)[:2]``
      is a no-op slice that inductor removes before pattern matching. With 10 critics (2 of 10) the
      slice stays and the update compiles either way; turning the pattern passes off changed its speed
      by nothing measurable on CPU (22-24 updates/s both ways, 1 thread). Drop it once torch has the fix.
    - On CUDA, ``triton.cudagraphs`` (what ``mode="reduce-overhead"`` sets) also records each compiled
      graph as a CUDA graph and replays it: one launch instead of hundreds of small kernels. The CPU
      path never takes it.
    """
    options: dict[str, Any] = {"fallback_random": True, "pattern_matcher": False}
    if device.type == "cuda":
        options["triton.cudagraphs"] = True
    return options


def compiled_update(
    update: Callable[[Batch], dict[str, torch.Tensor]], device: torch.device
) -> Callable[[Batch], dict[str, torch.Tensor]]:
    """``update`` through ``torch.compile``, with the options of ``compile_options(device)``.

    Graph breaks are allowed (``fullgraph=False``): the fused Adam step is ``torch.compiler.disable``d
    by torch and runs eagerly between the compiled forward/backward graphs, as do ``zero_grad`` and
    ``backward()`` (whose backward graph AOTAutograd compiled with the forward). Dynamo recompiles
    when a Python value the update reads changes (WSRL's ``online``, a new batch size) and
    otherwise reuses the graphs.
    """
    compiled = torch.compile(update, options=compile_options(device))
    if device.type != "cuda":
        return compiled

    def update_in_cuda_graphs(batch: Batch) -> dict[str, torch.Tensor]:
        # Each call is a new iteration for CUDA graph trees; outputs live in the graphs' static memory
        # and are overwritten by the next replay, so the metrics the logger reads later are copied out.
        torch.compiler.cudagraph_mark_step_begin()
        return {k: v.clone() for k, v in compiled(batch).items()}

    return update_in_cuda_graphs


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
