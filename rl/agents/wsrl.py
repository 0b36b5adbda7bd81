"""WSRL, Warm-Start RL (Zhou et al., ICLR 2025): pre-train conservatively, fine-tune with plain SAC.

1. Pre-train with CQL (locomotion) or Cal-QL on the dataset, using the *same* 10-critic LayerNorm
   ensemble and actor the online agent uses, so every tensor transfers one to one. This happens
   either in the same run (``steps.offline > 0``: this agent updates with the conservative loss
   of ``cql.py``) or in an earlier ``agent=cql``/``agent=calql`` run whose
   ``checkpoints/agent_offline.pt`` is passed as ``checkpoint=<path>`` (``load_pretrained``).
2. At the start of the online phase the conservative term is switched off: updates are SAC's (
   ``sac.py``) with the UTD ratio ``utd`` (each update: ``utd`` critic steps on minibatches of
   ``batch_size``, then one actor and temperature step on all of them).
3. The schedule (``conf/agent/wsrl.yaml``): the online buffer starts empty and no offline data is
   sampled (``offline_ratio=0``); for the first ``steps.warmup=5000`` env steps the pre-trained
   policy acts, stochastically, and no update is made.

Decisions on the official code's pitfalls (spec §1.6):
- Checkpoint compatibility: the CQL/Cal-QL -> WSRL load is an explicit key map (``PRETRAINED_KEYS``):
  actor, critics, target critics, temperature and their optimizers' moments. The Lagrange
  multiplier of AntMaze's CQL has no counterpart online and is dropped by name, not by accident.
- Warm-up actions come from the pre-trained policy (``steps.warmup_actions=policy``), never random.
- Rewards are scaled once, by the buffer (``env.reward_scale``/``env.reward_bias``), so the
  double-scaling bug fixed upstream in 0e70202 cannot occur.
- The target entropy is -|A| and the TD target a random-subset min of 2 of the 10 critics (sac.py).
Reductions for small machines are config values; the paper-scale settings are this file's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rl.agents.cql import CQL, CQLConfig
from rl.agents.sac import SAC
from rl.buffers.batch import Batch
from rl.nets import ObservationNormalizer

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


class WSRL(CQL):
    name = "wsrl"
    config_class = WSRLConfig

    def __init__(
        self,
        cfg: WSRLConfig,
        obs_dim: int,
        action_dim: int,
        device: torch.device,
        obs_norm: ObservationNormalizer | None = None,
    ) -> None:
        super().__init__(cfg, obs_dim, action_dim, device, obs_norm)
        self.online = False

    def load_pretrained(self, state: dict) -> None:
        """Start from a CQL/Cal-QL agent's ``state_dict()``, mapping its parts by ``PRETRAINED_KEYS``."""
        if state.get("agent") not in PRETRAINED_AGENTS:
            raise ValueError(
                f"WSRL starts from a {'/'.join(PRETRAINED_AGENTS)} agent, not {state.get('agent')!r}"
            )
        mapped = {ours: state["state"][theirs] for theirs, ours in PRETRAINED_KEYS.items()}
        if self.cfg.cql_lagrange:
            mapped |= {k: v for k, v in state["state"].items() if "cql_multiplier" in k}
        self.load_state_dict({**state, "agent": self.cfg.name, "state": mapped})

    def begin_online(self) -> None:
        self.online = True

    @property
    def critic_steps(self) -> int:
        return self.cfg.utd if self.online else 1

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.online:
            return SAC.critic_loss(self, batch)  # the TD loss alone: WSRL fine-tunes with plain SAC
        return super().critic_loss(batch)
