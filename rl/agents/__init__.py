"""Agents by name. ``build_agent`` is the only place that maps a config to an agent class, and an
observation space to what the agent's networks read (a state vector, or an image encoder's features)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from rl.agents.base import AGENT_FORMAT, Agent, AgentConfig, Phase
from rl.agents.cql import CQL, CalQLConfig, CQLConfig
from rl.agents.dppo import DPPO, DPPOConfig
from rl.agents.famo2o import FamO2OCQL, FamO2OCQLConfig, FamO2OIQL, FamO2OIQLConfig
from rl.agents.iql import IQL, IQLConfig
from rl.agents.reinflow import ReinFlow, ReinFlowConfig
from rl.agents.sac import SAC, SACConfig
from rl.agents.unio4 import UniO4, UniO4Config
from rl.agents.wsrl import WSRL, WSRLConfig
from rl.nets import EncoderConfig, ObservationEncoder, ObservationNormalizer
from rl.nets.dynamics import TerminationFn

# name -> (agent class, its config class)
AGENTS: dict[str, tuple[type[Agent], type[AgentConfig]]] = {
    "sac": (SAC, SACConfig),
    "cql": (CQL, CQLConfig),
    "calql": (CQL, CalQLConfig),
    "iql": (IQL, IQLConfig),
    "wsrl": (WSRL, WSRLConfig),
    "unio4": (UniO4, UniO4Config),
    "famo2o_iql": (FamO2OIQL, FamO2OIQLConfig),
    "famo2o_cql": (FamO2OCQL, FamO2OCQLConfig),
    "reinflow": (ReinFlow, ReinFlowConfig),
    "dppo": (DPPO, DPPOConfig),
}


def build_agent(
    cfg: AgentConfig,
    obs_dim: int | None,
    action_dim: int,
    device: torch.device,
    obs_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    termination: TerminationFn | None = None,
    obs_space: gym.Space | None = None,
) -> Agent:
    """Build the agent ``cfg.name`` names; ``obs_stats`` (mean, std) is used when ``cfg.normalize_obs``;
    ``termination`` (the env's rule, ``envs.termination.for_env``) reaches agents that use one.

    Observations: ``obs_dim`` numbers, or ``obs_space`` when given (then ``obs_dim`` may be None): a
    1-D float ``Box`` of state, or a ``Dict`` of cameras and proprio vectors, which agents with
    ``takes_images`` read through an ``ObservationEncoder`` built from ``cfg.encoder``. Any other
    space is refused in one line naming it and the choices."""
    if cfg.name not in AGENTS:
        raise ValueError(f"agent.name: unknown agent {cfg.name!r}; known: {sorted(AGENTS)}")
    agent_class, _ = AGENTS[cfg.name]
    extra = {}
    if obs_space is not None:
        obs_dim, encoder = _observation_input(cfg, agent_class, obs_space)
        if encoder is not None:
            extra["encoder"] = encoder
    obs_norm = None
    if cfg.normalize_obs and "encoder" not in extra:  # an encoder normalises its own inputs
        if obs_stats is None:
            raise ValueError("agent.normalize_obs=true needs an offline dataset for the statistics")
        obs_norm = ObservationNormalizer(obs_dim, *obs_stats).to(device)
    if agent_class.uses_termination:
        extra["termination"] = termination
    return agent_class(cfg, obs_dim, action_dim, device, obs_norm, **extra)


def _observation_input(
    cfg: AgentConfig, agent_class: type[Agent], space: gym.Space
) -> tuple[int, ObservationEncoder | None]:
    """The size of what the networks read, and the image encoder when they read its features."""
    if (
        isinstance(space, gym.spaces.Box)
        and len(space.shape) == 1
        and np.issubdtype(space.dtype, np.floating)
    ):
        return int(space.shape[0]), None
    image_agents = "|".join(name for name, (cls, _) in AGENTS.items() if cls.takes_images)
    choices = (
        "choices: a 1-D float Box (state) for any agent, or a Dict of (H, W, C) uint8 cameras and 1-D "
        f"float proprio vectors for agent={image_agents}"
    )
    if not isinstance(space, gym.spaces.Dict):
        raise ValueError(f"agent {cfg.name}: cannot take the observation space {space}; {choices}")
    if not agent_class.takes_images:
        raise ValueError(
            f"agent {cfg.name}: cannot take the observation space {space} (it learns from state "
            f"vectors only); {choices}"
        )
    encoder = ObservationEncoder(space, encoder_config(cfg))
    return encoder.out_dim, encoder


def encoder_config(cfg: AgentConfig) -> EncoderConfig:
    """``cfg.encoder`` as an ``EncoderConfig`` (Hydra hands a ``DictConfig``, where ``keys`` would be the
    mapping's method, so its items are copied into the dataclass)."""
    if isinstance(cfg.encoder, EncoderConfig):
        return cfg.encoder
    return EncoderConfig(**{key: cfg.encoder[key] for key in cfg.encoder})


__all__ = ["AGENTS", "AGENT_FORMAT", "Agent", "AgentConfig", "Phase", "build_agent"]
