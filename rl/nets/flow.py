"""Flow-matching and diffusion policy networks over action chunks (ReinFlow, DPPO).

A policy acts on a flat chunk ``x`` of ``Ta * Da`` numbers (the chunk env wrapper's action) given a
flat observation history of ``To * Do`` numbers, or a ``Dict`` of cameras and proprio read through
an image encoder (``Conditioning``); the networks never need ``Ta`` or ``To`` apart.

- ``SinusoidalEmbedding``: the transformer/DDPM sinusoid of a scalar per row.
- ``ResidualMLP``: Linear -> (pre-activation two-layer residual blocks) -> Linear, the IBC/d3il head
  of ReinFlow's and DPPO's networks. Widths ``[h] * (2n + 1)`` give n blocks; ``[512, 512, 512]``
  (the official gym head) is one block.
- ``FlowMLP``: the rectified-flow velocity ``v(x, t | o)`` (official ``FlowMLP``): time embedding
  ``Sinusoid(16) -> Linear(16, 32) -> Mish -> Linear(32, 16)``, an optional condition MLP on the
  observation, and the residual head on ``[x, time_emb, cond_emb]``. The same layout is DPPO's DDPM
  noise predictor (``DiffusionMLP``), with the integer denoising step as ``t``.
- ``ShortcutMLP``: the shortcut model ``s(x, t, d | o)`` (official ``ShortCutFlowMLP``, ``add``
  combination): ``t`` and the step size ``d`` share one sinusoid, ``Linear(32, 16) -> Mish ->
  Linear(16, 16)`` mixes them, the condition MLP's output (last width = 16) is *added*, and the head
  reads ``[x, td_emb + cond_emb]``.
  Both expose ``encode(obs)`` (the observation's features, computed once per chain) and
  ``forward(x, t, d, cond) -> (velocity, time_emb)``; ``FlowMLP`` ignores ``d``.
- ``euler_sample``: the deterministic K-step Euler ODE with ``t_k = k / K`` (and ``d = 1 / K``),
  clipped to [-1, 1] after every step (``clip_intermediate``) and always after the last.
- ``NoiseNet``: ReinFlow's exploration-noise head, a Tanh MLP whose output is squashed into
  ``[sigma_min, sigma_max]`` through the log-variance (``bounded_std``).
- ``sample_flow_time`` / ``sample_shortcut_steps``: the pre-training draws of ``t`` and ``d``.

``from_official_state_dict`` maps a network saved by ReinFlow's official code onto these modules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import nn

from rl.nets.encoders import ObservationEncoder
from rl.nets.mlp import ObservationNormalizer

ACTIVATIONS = {"relu": nn.ReLU, "mish": nn.Mish, "tanh": nn.Tanh}
TIME_SAMPLERS = ("uniform", "logitnormal", "beta")


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r}: not one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class SinusoidalEmbedding(nn.Module):
    """``(B,)`` -> ``(B, dim)``: ``[sin(x f_i), cos(x f_i)]`` with ``f_i = 10000^(-i / (dim/2 - 1))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        self.register_buffer(
            "frequencies", torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1)), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = x.float().unsqueeze(-1) * self.frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ResidualBlock(nn.Module):
    """``x + l2(act(l1(act(x))))``: two pre-activation layers (IBC's ``TwoLayerPreActivationResNetLinear``)."""

    def __init__(self, width: int, activation: str) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(width, width), nn.Linear(width, width)
        self.act = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.l2(self.act(self.l1(self.act(x))))


class ResidualMLP(nn.Module):
    """``Linear(in, h)``, ``(len(hidden) - 1) / 2`` residual blocks of width h, ``Linear(h, out)``."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "relu") -> None:
        super().__init__()
        if len(hidden) % 2 == 0 or len(set(hidden)) != 1:
            raise ValueError(
                f"residual MLP widths {list(hidden)}: need an odd number of equal widths ([h] * (2n + 1))"
            )
        width = hidden[0]
        self.input = nn.Linear(in_dim, width)
        self.blocks = nn.Sequential(*(ResidualBlock(width, activation) for _ in range(len(hidden) // 2)))
        self.output = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.blocks(self.input(x)))


def plain_mlp(in_dim: int, widths: Sequence[int], activation: str) -> nn.Sequential:
    """``Linear -> act`` per width, no activation after the last (the official condition MLP)."""
    layers: list[nn.Module] = []
    dims = [in_dim, *widths]
    for i in range(len(widths)):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(widths) - 1:
            layers.append(_activation(activation))
    return nn.Sequential(*layers)


class Conditioning(nn.Module):
    """Observation features: a state history through fixed normalisation, or a ``Dict`` of cameras
    and proprio through an image encoder (``rl.nets.encoders.ObservationEncoder``, then ``obs_dim`` is
    its ``out_dim``), then an optional condition MLP. ``out_dim`` is the width the velocity head reads.
    The encoder is part of the policy: copies of the policy (EMA, fine-tuned actor, reference) copy it."""

    def __init__(
        self,
        obs_dim: int,
        cond_hidden: Sequence[int] | None,
        activation: str,
        obs_norm: ObservationNormalizer | None = None,
        encoder: ObservationEncoder | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.obs_norm = None if encoder is not None else obs_norm or ObservationNormalizer(obs_dim)
        self.mlp = plain_mlp(obs_dim, cond_hidden, activation) if cond_hidden else None
        self.out_dim = cond_hidden[-1] if cond_hidden else obs_dim

    def forward(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.encoder(obs) if self.encoder is not None else self.obs_norm(obs)
        return self.mlp(x) if self.mlp is not None else x

    def augment(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
        """``obs`` with the encoder's random shift (``encoder.pad``); state observations unchanged."""
        return obs if self.encoder is None else self.encoder.augment(obs)[0]


class FlowMLP(nn.Module):
    """Rectified-flow velocity ``v(x, t | o)`` over a flat chunk of ``action_dim`` numbers."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (512, 512, 512),
        time_dim: int = 16,
        cond_hidden: Sequence[int] | None = None,
        activation: str = "relu",
        obs_norm: ObservationNormalizer | None = None,
        encoder: ObservationEncoder | None = None,
    ) -> None:
        super().__init__()
        self.action_dim, self.time_dim = action_dim, time_dim
        self.time_embedding = nn.Sequential(
            SinusoidalEmbedding(time_dim),
            nn.Linear(time_dim, 2 * time_dim),
            nn.Mish(),
            nn.Linear(2 * time_dim, time_dim),
        )
        self.cond = Conditioning(obs_dim, cond_hidden, activation, obs_norm, encoder)
        self.head = ResidualMLP(action_dim + time_dim + self.cond.out_dim, hidden, action_dim, activation)

    @property
    def noise_input_dim(self) -> int:
        """Width of ``[time_emb, cond]``, what ReinFlow's noise net reads."""
        return self.time_dim + self.cond.out_dim

    def encode(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        return self.cond(obs)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, d: torch.Tensor | None, cond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity ``(B, A)`` and the time embedding ``(B, time_dim)``; ``d`` is unused."""
        time_emb = self.time_embedding(t)
        return self.head(torch.cat([x, time_emb, cond], dim=-1)), time_emb


class ShortcutMLP(nn.Module):
    """Shortcut model ``s(x, t, d | o)``: the velocity for a step of size ``d`` (``d = 0``: the flow)."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (512, 512, 512),
        time_dim: int = 16,
        cond_hidden: Sequence[int] = (64, 16),
        activation: str = "relu",
        obs_norm: ObservationNormalizer | None = None,
        encoder: ObservationEncoder | None = None,
    ) -> None:
        super().__init__()
        if not cond_hidden or cond_hidden[-1] != time_dim:
            raise ValueError(
                f"shortcut: the condition MLP's last width ({list(cond_hidden or [])}) must equal time_dim={time_dim}, "
                "since its output is added to the (t, d) embedding"
            )
        self.action_dim, self.time_dim = action_dim, time_dim
        self.map_noise = SinusoidalEmbedding(time_dim)
        self.td_embedding = nn.Sequential(
            nn.Linear(2 * time_dim, time_dim), nn.Mish(), nn.Linear(time_dim, time_dim)
        )
        self.cond = Conditioning(obs_dim, cond_hidden, activation, obs_norm, encoder)
        self.head = ResidualMLP(action_dim + time_dim, hidden, action_dim, activation)

    @property
    def noise_input_dim(self) -> int:
        return self.time_dim + self.cond.out_dim

    def encode(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        return self.cond(obs)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, d: torch.Tensor | None, cond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity ``(B, A)`` for step size ``d`` and the (t, d) embedding ``(B, time_dim)``."""
        if d is None:
            raise ValueError("shortcut model: forward needs the step size d")
        td_emb = self.td_embedding(torch.cat([self.map_noise(t), self.map_noise(d)], dim=-1))
        return self.head(torch.cat([x, td_emb + cond], dim=-1)), td_emb


FlowNet = FlowMLP | ShortcutMLP


def step_times(k: int, steps: int, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``t_k = k / K`` and ``d = 1 / K`` for a batch: the one time grid of sampling, scoring,
    evaluation and the BC regulariser (ReinFlow's pitfall 1 came from two grids)."""
    t = torch.full((batch,), k / steps, device=device)
    return t, torch.full((batch,), 1.0 / steps, device=device)


def euler_sample(
    net: FlowNet, cond: torch.Tensor, x0: torch.Tensor, steps: int, clip_intermediate: bool = True
) -> torch.Tensor:
    """The deterministic K-step Euler ODE from ``x0``: ``x <- x + v(x, t_k, 1/K) / K``, clipped to
    [-1, 1] after every step when ``clip_intermediate`` and always after the last. Differentiable."""
    x = x0
    for k in range(steps):
        t, d = step_times(k, steps, x.shape[0], x.device)
        velocity, _ = net(x, t, d, cond)
        x = x + velocity / steps
        if clip_intermediate or k == steps - 1:
            x = x.clamp(-1.0, 1.0)
    return x


def bounded_std(z: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """``sigma = exp(lv / 2)``, ``lv = log sigma_min^2 + (log sigma_max^2 - log sigma_min^2) (tanh z + 1) / 2``:
    in ``[sigma_min, sigma_max]``, ``sqrt(sigma_min sigma_max)`` at ``z = 0`` (official ``ExploreNoiseNet``)."""
    low, high = 2.0 * math.log(sigma_min), 2.0 * math.log(sigma_max)
    return torch.exp(0.5 * (low + (high - low) * (torch.tanh(z) + 1.0) / 2.0))


class NoiseNet(nn.Module):
    """``sigma(s, t)``: a Tanh MLP on ``[time_emb, cond]`` -> ``bounded_std`` per chunk number. The
    bounds are arguments, so a schedule (ReinFlow's sigma_max hold-then-decay) changes them freely."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        self.net = plain_mlp(in_dim, [*hidden, out_dim], "tanh")

    def forward(self, feature: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
        return bounded_std(self.net(feature), sigma_min, sigma_max)


def sample_flow_time(n: int, kind: str, device: torch.device) -> torch.Tensor:
    """Flow-matching times in [0, 1): ``uniform``; ``logitnormal`` (sigmoid of N(0, 1)); ``beta``
    (``0.999 (1 - B)``, ``B ~ Beta(1.5, 1)``: more weight near t = 0, the noise end). Official defaults."""
    if kind == "uniform":
        return torch.rand(n, device=device)
    if kind == "logitnormal":
        return torch.sigmoid(torch.randn(n, device=device))
    if kind == "beta":
        beta = torch.distributions.Beta(torch.tensor(1.5, device=device), torch.tensor(1.0, device=device))
        return 0.999 * (1.0 - beta.sample((n,)))
    raise ValueError(f"time sampler {kind!r}: not one of {list(TIME_SAMPLERS)}")


def sample_shortcut_steps(n: int, max_steps: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-consistency draws ``(t, d)``: ``j ~ U{0, ..., J - 1}`` with ``J = floor(log2 max_steps)``,
    ``d = 2^-j``, ``t = i d`` with ``i ~ U{0, ..., 2^j - 1}``.

    The range of ``j`` is a decision (ReinFlow's pitfall 4): the official code draws
    ``j in {0, ..., max_steps - 2}``, which with ``max_steps = 20`` trains mostly on step sizes down to
    ``2^-18`` that no sampler uses (its config notes that 100 overflows). Here ``j`` stops where Frans
    et al.'s shortcut models stop (``log2_sections - 1``): the bootstrap target's half-step ``d / 2``
    is never finer than ``1 / max_steps``, and every step size a K-step sampler with ``K`` a power of
    two up to ``max_steps / 2`` uses (1, 1/2, 1/4, 1/8 for 20) is trained directly.
    """
    levels = max(1, max_steps.bit_length() - 1)
    j = torch.randint(0, levels, (n,), device=device)
    d = torch.pow(2.0, -j.float())
    i = torch.floor(torch.rand(n, device=device) * torch.pow(2.0, j.float()))
    return i * d, d


def from_official_state_dict(state: dict[str, torch.Tensor], shortcut: bool) -> dict[str, torch.Tensor]:
    """A ReinFlow (github.com/ReinFlow/ReinFlow) network's weights under this module's names.

    The official pre-training checkpoint is ``torch.save({"epoch", "model", "ema"})`` where ``model``
    and ``ema`` are the ``ReFlow`` / ``ShortCutFlow`` module's ``state_dict``: the velocity network
    under ``network.`` (fine-tuning loads ``ema``, with that prefix stripped). Key map:

    ===========================================  ==========================================
    official (``FlowMLP`` / ``ShortCutFlowMLP``)  o2o (``FlowMLP`` / ``ShortcutMLP``)
    ===========================================  ==========================================
    ``time_embedding.{1,3}.*`` (flow)             ``time_embedding.{1,3}.*``
    ``t_emb.{0,2}.*`` (shortcut)                  ``td_embedding.{0,2}.*``
    ``cond_mlp.moduleList.{i}.linear_1.*``        ``cond.mlp.{2i}.*``
    ``cond_emb.moduleList.{i}.linear_1.*``        ``cond.mlp.{2i}.*``
    ``mlp_mean.layers.0.*`` / ``vel_head...``     ``head.input.*``
    ``....layers.{i}.l{1,2}.*``, i = 1..n         ``head.blocks.{i-1}.l{1,2}.*``
    ``....layers.{n+1}.*``                        ``head.output.*``
    ===========================================  ==========================================

    The official observation normalisation (min/max to [-1, 1], outside the network) has no key here:
    o2o's ``cond.obs_norm`` stays whatever the run sets. Keys of any other layout (layer norms,
    ``use_layernorm=True``, pixel backbones) are refused by name.
    """
    head_prefix = "vel_head.layers." if shortcut else "mlp_mean.layers."
    cond_prefix = "cond_emb.moduleList." if shortcut else "cond_mlp.moduleList."
    time_names = (
        {"t_emb.0": "td_embedding.0", "t_emb.2": "td_embedding.2"}
        if shortcut
        else {
            "time_embedding.1": "time_embedding.1",
            "time_embedding.3": "time_embedding.3",
        }
    )
    state = {key.removeprefix("network."): value for key, value in state.items()}
    head_layers = sorted(
        {int(k[len(head_prefix) :].split(".")[0]) for k in state if k.startswith(head_prefix)}
    )
    output_layer = head_layers[-1] if head_layers else None
    out = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module in time_names:
            out[f"{time_names[module]}.{leaf}"] = value
        elif match := re.fullmatch(re.escape(cond_prefix) + r"(\d+)\.linear_1", module):
            out[f"cond.mlp.{2 * int(match[1])}.{leaf}"] = value
        elif match := re.fullmatch(re.escape(head_prefix) + r"(\d+)(\.l[12])?", module):
            index, inner = int(match[1]), match[2]
            if inner:
                out[f"head.blocks.{index - 1}{inner}.{leaf}"] = value
            elif index == 0:
                out[f"head.input.{leaf}"] = value
            elif index == output_layer:
                out[f"head.output.{leaf}"] = value
            else:
                raise ValueError(f"official checkpoint: key {key!r} is not in the layout o2o maps")
        else:
            raise ValueError(f"official checkpoint: key {key!r} is not in the layout o2o maps")
    return out
