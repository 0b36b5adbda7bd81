"""The contract between an agent and the loops, and the checkpoint format every agent shares.

An agent is built from its config, the observation and action sizes and the device (and, for
camera observations, the image encoder ``build_agent`` makes from the observation space); it knows
nothing about envs, files or loops. The loops use:
- ``phase`` / ``set_phase(Phase.ONLINE)``: the loop calls it when the online phase starts and again
  after a resume into it (idempotent); the phase is saved with the agent;
- ``offline_steps``: None (``steps.offline`` decides) or the offline length the agent dictates;
- ``batch_size``: rows the loop samples for one ``update`` (agents with a UTD ratio ask for more and
  split them);
- ``act(obs, deterministic)``: a batch of actions in [-1, 1];
- ``update(batch)``: one learning step; returns detached scalar tensors (no host synchronisation:
  the logger decides when to read them);
- on-policy agents (``on_policy = True``) online: ``policy_step``, ``state_value``, ``update_rollout``;
- ``state_dict()`` / ``load_state_dict()`` / ``load_pretrained()``: the parts each agent lists in
  ``parts()`` (networks, optimizers, learnable scalars, counters), checked by name and shape on load.

``compile_update()`` (the run's ``compile=true``) swaps ``update`` for its ``torch.compile``d version,
for every agent alike; on a CUDA device the compiled graphs are also captured as CUDA graphs.
"""

from __future__ import annotations

import abc
import copy
import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from rl.buffers.batch import Batch
from rl.nets import EncoderConfig

AGENT_FORMAT = 2
"""Version of ``Agent.state_dict()``'s layout. 2: explicit parts, the saved phase."""

Part = nn.Module | torch.optim.Optimizer | torch.Tensor


class Phase(enum.Enum):
    OFFLINE = "offline"
    ONLINE = "online"


@dataclass
class AgentConfig:
    name: str = "???"
    gamma: float = 0.99
    batch_size: int = 256
    """Rows per gradient step."""
    normalize_obs: bool = False
    """Standardise observations with the offline dataset's mean/std (fixed, saved with the networks)."""
    return_range_scale: float | None = None
    """If set, the loop scales every reward (dataset and online, once, where ``env.reward_scale``
    applies) by ``return_range_scale / (max - min)`` of the dataset's episode returns: IQL's and
    CORL's locomotion normalisation, with 1000 (the episode length). Needs an offline dataset."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """The image encoder, used with ``Dict`` observations with cameras (agents with ``takes_images``);
    state observations leave it unused. Defaults: DrQ's conv encoder, 50 features per camera, random
    shift of 4 pixels."""


class Agent(abc.ABC):
    name: ClassVar[str]
    config_class: ClassVar[type[AgentConfig]]
    on_policy: ClassVar[bool] = False
    """True for agents whose online phase learns from rollouts (PPO-style): the loop then calls
    ``policy_step(obs) -> (action, log_prob, value)``, ``state_value(obs)`` and, every
    ``rollout_steps`` env steps, ``update_rollout(rollout, last_obs)`` instead of ``update``."""
    uses_termination: ClassVar[bool] = False
    """True for agents that roll out a learned model (Uni-O4): ``build_agent`` passes them the env's
    termination rule (``termination=``)."""
    takes_images: ClassVar[bool] = False
    """True for agents that take ``Dict`` observations with cameras: ``build_agent`` passes them an
    ``ObservationEncoder`` (``encoder=``) and ``obs_dim`` is its feature size."""

    def __init__(self, cfg: AgentConfig, obs_dim: int, action_dim: int, device: torch.device) -> None:
        self.cfg, self.obs_dim, self.action_dim, self.device = cfg, obs_dim, action_dim, device
        self.phase = Phase.OFFLINE

    def set_phase(self, phase: Phase) -> None:
        """Enter ``phase``; calling it again with the same phase changes nothing."""
        self.phase = phase

    @property
    def offline_steps(self) -> int | None:
        """The offline phase's length when the agent dictates it; None lets ``steps.offline`` decide."""
        return None

    @property
    def batch_size(self) -> int:
        """Rows the loop samples for one ``update`` call."""
        return self.cfg.batch_size

    @property
    def first_update_waits_an_episode_limit(self) -> bool:
        """True when online updates wait until the env has taken as many steps as its time limit
        (Cal-QL, so that online rows can carry Monte-Carlo returns); the loop also waits for
        ``steps.warmup`` and for a batch's online share."""
        return False

    @abc.abstractmethod
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """A batch of actions in [-1, 1] for a batch of observations."""

    @abc.abstractmethod
    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One learning step on ``batch_size`` rows; detached scalar metrics."""

    def compile_update(self) -> None:
        """From now on, run ``update`` through ``torch.compile`` (see ``compiled_update``)."""
        self.update = compiled_update(self.update, self.device)  # type: ignore[method-assign]

    def update_in_bf16(self) -> None:
        """From now on, run ``update`` under bfloat16 autocast (``precision=bf16``; see ``bf16_update``).

        Refused for on-policy agents: their PPO ratio compares log-probabilities computed while
        acting (float32) with those the update recomputes, and must start at exactly 1."""
        if self.on_policy:
            raise ValueError(f"precision=bf16: agent {self.cfg.name} is on-policy; its PPO ratios need fp32")
        self.update = bf16_update(self.update, self.device)  # type: ignore[method-assign]

    # -- checkpoints ------------------------------------------------------------------------------

    @abc.abstractmethod
    def parts(self) -> dict[str, Part]:
        """What a checkpoint carries, by name: every network, optimizer and state tensor."""

    def state_dict(self) -> dict[str, Any]:
        state = {
            key: part.detach() if isinstance(part, torch.Tensor) else part.state_dict()
            for key, part in self.parts().items()
        }
        return {
            "format": AGENT_FORMAT,
            "agent": self.cfg.name,
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "phase": self.phase.value,
            # state_dict() returns live references that later updates modify in place: copy them out.
            "state": copy.deepcopy(state),
        }

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Resume: every part and the phase."""
        self.load_parts(checkpoint)
        self.phase = Phase(checkpoint["phase"])

    def load_pretrained(self, checkpoint: dict[str, Any]) -> None:
        """Start from another run's agent (``checkpoint=<path>``): its parts, not its phase (this run's
        schedule sets that), and not its optimizer settings (see ``load_parts``). By default it must be
        the same agent."""
        self.load_parts(checkpoint, own_settings=True)

    def load_parts(self, checkpoint: dict[str, Any], own_settings: bool = False) -> None:
        """Copy a ``state_dict()``'s parts into this agent, refusing another format, agent or shape.

        ``own_settings``: the optimizers keep the checkpoint's moments (Adam's running averages, which
        a warm start wants) but this run's settings (learning rates, betas); a resume passes False and
        continues with the checkpoint's. Without it, a run started from a checkpoint silently trained
        with the learning rates of the run that wrote it."""
        found = checkpoint.get("format", 1)
        if found != AGENT_FORMAT:
            raise ValueError(
                f"agent checkpoint format {found}; this o2o reads format {AGENT_FORMAT} "
                "(load it with the o2o version that wrote it, or train it again)"
            )
        if checkpoint["agent"] != self.cfg.name:
            raise ValueError(
                f"checkpoint holds agent {checkpoint['agent']!r}, this run builds {self.cfg.name!r}"
            )
        sizes = (checkpoint["obs_dim"], checkpoint["action_dim"])
        if sizes != (self.obs_dim, self.action_dim):
            raise ValueError(
                f"checkpoint was made for obs/action sizes {sizes}, this run has {(self.obs_dim, self.action_dim)}"
            )
        ours, theirs = self.parts(), checkpoint["state"]
        if set(ours) != set(theirs):
            raise ValueError(f"checkpoint parts {sorted(theirs)} != this agent's {sorted(ours)}")
        for key, part in ours.items():
            if isinstance(part, nn.Module):
                check_shapes(key, part.state_dict(), theirs[key])
                part.load_state_dict(theirs[key])
            elif isinstance(part, torch.optim.Optimizer):
                settings = [{k: v for k, v in group.items() if k != "params"} for group in part.param_groups]
                part.load_state_dict(theirs[key])
                if own_settings:
                    for group, own in zip(part.param_groups, settings, strict=True):
                        group.update(own)
            else:
                if part.shape != theirs[key].shape:
                    raise ValueError(
                        f"checkpoint '{key}' has shape {tuple(theirs[key].shape)}, expected {tuple(part.shape)}"
                    )
                with torch.no_grad():
                    part.copy_(theirs[key])


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


def bf16_update(
    update: Callable[[Batch], dict[str, torch.Tensor]], device: torch.device
) -> Callable[[Batch], dict[str, torch.Tensor]]:
    """``update`` under ``torch.autocast(dtype=bfloat16)``: matmuls and convolutions compute in
    bfloat16 while the weights, their gradients and Adam's moments stay float32 (autocast casts a copy
    of each weight per use, and the cast's backward returns a float32 gradient), so no loss scaling is
    needed. Each network's output layer stays float32 (``rl.nets.mlp``). The optimizer steps run inside
    the same context and are not autocast ops, so they are untouched.

    It pays only where the hardware multiplies bfloat16 natively (``native_bf16``): 2.0-2.2x the
    float32 matmul rate on an AVX-512-BF16 CPU, and several times slower than float32 without it."""

    def update_under_autocast(batch: Batch) -> dict[str, torch.Tensor]:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return update(batch)

    return update_under_autocast


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware: a CUDA GPU that says so, or a CPU with
    AVX-512-BF16 or AMX (read from /proc/cpuinfo's flags; False where that file does not exist)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compiled_update(
    update: Callable[[Batch], dict[str, torch.Tensor]], device: torch.device
) -> Callable[[Batch], dict[str, torch.Tensor]]:
    """``update`` through ``torch.compile``, with the options of ``compile_options(device)``.

    Graph breaks are allowed (``fullgraph=False``): the fused Adam step is ``torch.compiler.disable``d
    by torch and runs eagerly between the compiled forward/backward graphs, as do ``zero_grad`` and
    ``backward()`` (whose backward graph AOTAutograd compiled with the forward). Dynamo recompiles
    when a Python value the update reads changes (the agent's ``phase``, a new batch size) and
    otherwise reuses the graphs.
    """
    # Graphs persist in inductor's on-disk cache (FX graph cache, on by default in torch 2.13); under
    # the home directory rather than /tmp, so a second run on the same machine skips compiling even
    # after a reboot. Set TORCHINDUCTOR_CACHE_DIR to choose another place.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "o2o" / "torchinductor"))
    # A graph inductor cannot compile runs eagerly instead (dynamo logs a warning naming the error)
    # rather than stopping the run: compiling is a speed choice, never a reason to fail.
    torch._dynamo.config.suppress_errors = True
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


def adam(params, lr: float, **kwargs: Any) -> torch.optim.Adam:
    """Adam with the fused kernel: one kernel for all parameters, no host sync inside ``step``.

    On CPU the learning rate is a 0-d float64 tensor that ``set_lr`` writes in place: a compiled
    update reading a Python float would be recompiled for each new value of a schedule (IQL's cosine
    decay, Uni-O4's linear ones), until dynamo's recompile limit sends it back to eager. On CUDA it
    stays a float (a CPU tensor is not a valid fused-kernel argument there; not run on this machine).
    """
    params = list(params)
    devices = {p.device.type for p in params}
    rate: float | torch.Tensor = torch.tensor(lr, dtype=torch.float64) if devices == {"cpu"} else lr
    return torch.optim.Adam(params, lr=rate, fused=True, **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every parameter group of ``optimizer`` takes learning rate ``lr`` (a tensor rate in place)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
