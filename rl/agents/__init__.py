"""Agents by name. ``build_agent`` is the only place that maps a config to an agent class."""

from __future__ import annotations

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
from rl.nets import ObservationNormalizer
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
    obs_dim: int,
    action_dim: int,
    device: torch.device,
    obs_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    termination: TerminationFn | None = None,
) -> Agent:
    """Build the agent ``cfg.name`` names; ``obs_stats`` (mean, std) is used when ``cfg.normalize_obs``;
    ``termination`` (the env's rule, ``envs.termination.for_env``) reaches agents that use one."""
    if cfg.name not in AGENTS:
        raise ValueError(f"agent.name: unknown agent {cfg.name!r}; known: {sorted(AGENTS)}")
    agent_class, _ = AGENTS[cfg.name]
    obs_norm = None
    if cfg.normalize_obs:
        if obs_stats is None:
            raise ValueError("agent.normalize_obs=true needs an offline dataset for the statistics")
        obs_norm = ObservationNormalizer(obs_dim, *obs_stats).to(device)
    if agent_class.uses_termination:
        return agent_class(cfg, obs_dim, action_dim, device, obs_norm, termination=termination)
    return agent_class(cfg, obs_dim, action_dim, device, obs_norm)


__all__ = ["AGENTS", "AGENT_FORMAT", "Agent", "AgentConfig", "Phase", "build_agent"]
