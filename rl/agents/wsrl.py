"""WSRL, Warm-Start RL (Zhou et al., ICLR 2025): pre-train conservatively, fine-tune with plain SAC.

``update`` switches on the saved phase:
- offline: the CQL step (``cql.cql_critic_loss``, UTD 1), on the *same* 10-critic LayerNorm ensemble
  and actor the online agent uses, so every tensor transfers one to one. Pre-training happens either
  in the same run (``steps.offline > 0``) or in an earlier ``agent=cql``/``agent=calql`` run whose
  ``checkpoints/agent_offline.pt`` is passed as ``checkpoint=<path>`` (``load_pretrained``);
- online: the SAC step (``sac.sac_critic_loss``) with the UTD ratio ``utd``: ``utd`` critic steps on
  minibatches of ``batch_size``, then one actor and temperature step on all of them.
The schedule (``conf/agent/wsrl.yaml``): the online buffer starts empty and no offline data is
sampled (``offline_ratio=0``); for the first ``steps.warmup=5000`` env steps the pre-trained policy
acts, stochastically, and no update is made.

Decisions on the official code's pitfalls (spec §1.6):
- Checkpoint compatibility: the CQL/Cal-QL -> WSRL load is an explicit key map (``PRETRAINED_KEYS``):
  actor, critics, target critics, temperature and their optimizers' moments. The Lagrange
  multiplier of AntMaze's CQL has no counterpart online and is dropped by name, not by accident.
- Warm-up actions come from the pre-trained policy (``steps.warmup_actions=policy``), never random.
- Rewards are scaled once, by the buffer (``env.reward_scale``/``env.reward_bias``), so the
  double-scaling bug fixed upstream in 0e70202 cannot occur.
- The target entropy is -|A| and the TD target a random-subset min of 2 of the 10 critics (sac.py);
  pre-training takes the max of that min over 10 next actions (CQL's ``max_target_backup``), the
  online SAC step does not (``online_max_target_backup``, official: AntMaze only).
Reductions for small machines are config values; the paper-scale settings are this file's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from rl.agents.base import Agent, Part, Phase
from rl.agents.cql import CQLConfig, CQLLagrange, cql_critic_loss
from rl.agents.encoding import Encoded
from rl.agents.sac import ActorCritic, actor_temperature_step, apply_critic_loss, sac_critic_loss
from rl.buffers.batch import Batch, Obs
from rl.nets import ObservationEncoder, ObservationNormalizer

# pre-trained (CQL / Cal-QL) part -> WSRL part. Parts not listed are dropped on purpose.
PRETRAINED_KEYS = {
    "actor": "actor",
    "critic": "critic",
    "target_critic": "target_critic",
    "log_alpha": "log_alpha",
    "actor_optimizer": "actor_optimizer",
    "critic_optimizer": "critic_optimizer",
    "temperature_optimizer": "temperature_optimizer",
}
PRETRAINED_AGENTS = ("cql", "calql", "wsrl")


@dataclass
class WSRLConfig(CQLConfig):
    name: str = "wsrl"
    num_critics: int = 10
    subset_size: int = 2
    utd: int = 4
    """Critic steps per online env step (offline pre-training always uses 1)."""
    critic_layer_norm: bool = True
    actor_layer_norm: bool = True
    actor_hidden: list[int] = field(default_factory=lambda: [256, 256])
    critic_hidden: list[int] = field(default_factory=lambda: [256, 256])
    online_max_target_backup: bool = False
    """The online SAC step's max backup (official: AntMaze only). ``max_target_backup`` (on, CQL's) is
    the pre-training step's: the official flags are two as well (SAC's and CQL's)."""


class WSRL(Agent):
    name = "wsrl"
    config_class = WSRLConfig
    takes_images = True

    def __init__(
        self,
        cfg: WSRLConfig,
        obs_dim: int,
        action_dim: int,
        device: torch.device,
        obs_norm: ObservationNormalizer | None = None,
        encoder: ObservationEncoder | None = None,
    ) -> None:
        super().__init__(cfg, obs_dim, action_dim, device)
        self.ac = ActorCritic.build(cfg, obs_dim, action_dim, device, obs_norm, encoder=encoder)
        self.lagrange = CQLLagrange.build(cfg, device)

    def parts(self) -> dict[str, Part]:
        return self.ac.parts() | (self.lagrange.parts() if self.lagrange else {})

    def load_pretrained(self, checkpoint: dict[str, Any]) -> None:
        """Start from a CQL/Cal-QL agent's ``state_dict()``, mapping its parts by ``PRETRAINED_KEYS``."""
        if checkpoint.get("agent") not in PRETRAINED_AGENTS:
            raise ValueError(
                f"WSRL starts from a {'/'.join(PRETRAINED_AGENTS)} agent, not {checkpoint.get('agent')!r}"
            )
        theirs = checkpoint["state"]
        mapped = {
            ours: theirs[their_key] for their_key, ours in PRETRAINED_KEYS.items() if their_key in theirs
        }
        if self.lagrange is not None:
            mapped |= {k: v for k, v in theirs.items() if "cql_multiplier" in k}
        self.load_parts({**checkpoint, "agent": self.cfg.name, "state": mapped}, own_settings=True)

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size * (self.cfg.utd if self.phase is Phase.ONLINE else 1)

    def act(self, obs: Obs, deterministic: bool = False) -> torch.Tensor:
        return self.ac.act(self.ac.features(obs), deterministic)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        if self.phase is Phase.OFFLINE:
            # offline: the CQL step
            batch = self.ac.encode(batch)
            inputs = (batch.obs, batch.next_obs)
            loss, metrics = cql_critic_loss(self.ac, cfg, batch, inputs, self.lagrange)
            apply_critic_loss(self.ac, loss, cfg.tau)
            return metrics | actor_temperature_step(self.ac, batch)
        # online: the SAC step, with the UTD ratio
        seen = []
        for minibatch in batch.split(cfg.utd):
            minibatch = self.ac.encode(minibatch)
            loss, metrics = sac_critic_loss(self.ac, cfg, minibatch, cfg.online_max_target_backup)
            apply_critic_loss(self.ac, loss, cfg.tau)
            seen.append(minibatch)
        return metrics | actor_temperature_step(self.ac, Encoded.cat(seen))
