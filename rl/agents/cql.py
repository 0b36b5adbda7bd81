"""Conservative Q-Learning, CQL(H), and Cal-QL, on top of the ensemble SAC in ``sac.py``.

The critic loss is SAC's TD loss plus, for each critic ``e`` in the same random subset that formed
the TD target (WSRL: with 10 critics the conservative term touches 2 per step, TD covers all):

    alpha_cql * [ T * logsumexp_j((Q_e(s, a_j) - log q(a_j)) / T) - Q_e(s, a_data) ]

over ``cql_samples`` actions from each of three proposals, all evaluated at ``s``:
uniform on [-1, 1]^|A| (``log q = |A| log 0.5``), ``pi(.|s)`` and ``pi(.|s')`` (``log q`` = their
log-densities). The actor and temperature losses are SAC's.

Cal-QL (``calql=True``) floors the Q-values of the two policy proposals at the Monte-Carlo
return-to-go of the data row, ``max(Q, G)``, *before* the importance-sampling correction; random
actions stay unbounded (Nakamoto et al. 2023; WSRL ``cql.py``; CORL ``cal_ql.py``). Online rows
carry ``G = -inf`` until their episode ends, which leaves them unfloored.

Options from the official configs: ``cql_importance_sample=False`` (Kitchen) appends ``Q(s, a_data)``
to the logsumexp and subtracts ``log(3 M + 1)``; ``cql_lagrange=True`` (AntMaze) tunes a
multiplier so the gap stays near ``cql_target_gap``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rl.agents.base import adam
from rl.agents.sac import SAC, SACConfig
from rl.buffers.batch import Batch
from rl.nets import ObservationNormalizer


@dataclass
class CQLConfig(SACConfig):
    name: str = "cql"
    cql_alpha: float = 5.0
    cql_samples: int = 10
    """Actions per proposal (uniform, pi(.|s), pi(.|s')) per state."""
    cql_temperature: float = 1.0
    cql_importance_sample: bool = True
    calql: bool = False
    cql_lagrange: bool = False
    cql_target_gap: float = 0.8
    cql_lagrange_lr: float = 3e-4


@dataclass
class CalQLConfig(CQLConfig):
    name: str = "calql"
    calql: bool = True


def cql_gap(
    q_data: torch.Tensor,
    q_random: torch.Tensor,
    q_current: torch.Tensor,
    q_next: torch.Tensor,
    log_q_random: float,
    log_pi_current: torch.Tensor,
    log_pi_next: torch.Tensor,
    temperature: float,
    importance_sample: bool = True,
    mc_return: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-critic conservative gap ``mean_batch[T logsumexp(...) - Q(s, a_data)]``: shape ``(members,)``.

    ``q_data`` is ``(E, B)``; ``q_random``, ``q_current``, ``q_next`` are ``(E, B, M)``; the
    log-densities are ``(B, M)``; ``mc_return`` (Cal-QL) is ``(B,)``.
    """
    if mc_return is not None:
        floor = mc_return[None, :, None]
        q_current, q_next = torch.maximum(q_current, floor), torch.maximum(q_next, floor)
    if importance_sample:
        candidates = torch.cat(
            [q_random - log_q_random, q_current - log_pi_current.detach(), q_next - log_pi_next.detach()],
            dim=-1,
        )
        log_count = 0.0
    else:
        candidates = torch.cat([q_random, q_current, q_next, q_data.unsqueeze(-1)], dim=-1)
        log_count = math.log(candidates.shape[-1])
    soft_max = temperature * (torch.logsumexp(candidates / temperature, dim=-1) - log_count)
    return (soft_max - q_data).mean(1)


class CQL(SAC):
    name = "cql"
    config_class = CQLConfig

    def __init__(
        self,
        cfg: CQLConfig,
        obs_dim: int,
        action_dim: int,
        device: torch.device,
        obs_norm: ObservationNormalizer | None = None,
    ) -> None:
        super().__init__(cfg, obs_dim, action_dim, device, obs_norm)
        if cfg.cql_lagrange:
            self.log_cql_multiplier = torch.zeros((), device=device, requires_grad=True)
            self.cql_multiplier_optimizer = adam([self.log_cql_multiplier], cfg.cql_lagrange_lr)

    def conservative_gap(
        self,
        batch: Batch,
        q_all: torch.Tensor,
        subset: torch.Tensor,
        current: tuple[torch.Tensor, torch.Tensor],
        following: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """``cql_gap`` for the critics in ``subset``: uniform actions plus the policy's samples at s
        (``current``) and at s' (``following``), each ``(actions (B, M, A), log-densities (B, M))``,
        all evaluated at s in one batched pass."""
        cfg, m = self.cfg, self.cfg.cql_samples
        random_actions = torch.rand(len(batch), m, self.action_dim, device=self.device) * 2.0 - 1.0
        proposals = torch.cat([random_actions, current[0], following[0]], dim=1)  # (B, 3M, A)
        q_random, q_current, q_next = self.critic(batch.obs, proposals, members=subset).split(m, dim=-1)
        return cql_gap(
            q_all[subset],
            q_random,
            q_current,
            q_next,
            self.action_dim * math.log(0.5),
            current[1],
            following[1],
            cfg.cql_temperature,
            cfg.cql_importance_sample,
            batch.mc_return if cfg.calql else None,
        )

    def critic_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        target, subset = self.td_target(batch)
        q_all = self.critic(batch.obs, batch.action)
        td_loss = (q_all - target).pow(2).mean(1).sum()

        with torch.no_grad():
            current = self.actor(batch.obs, cfg.cql_samples)
            following = self.actor(batch.next_obs, cfg.cql_samples)
        gap = self.conservative_gap(batch, q_all, subset, current, following)
        metrics = {
            "td_loss": td_loss.detach(),
            "cql_gap": gap.detach().mean(),
            "q_mean": q_all.detach().mean(),
        }
        if cfg.cql_lagrange:
            multiplier = self.log_cql_multiplier.exp().clamp(0.0, 1e6)
            conservative = (multiplier.detach() * cfg.cql_alpha * (gap - cfg.cql_target_gap)).sum()
            multiplier_loss = -(multiplier * cfg.cql_alpha * (gap.detach() - cfg.cql_target_gap)).sum()
            self.cql_multiplier_optimizer.zero_grad(set_to_none=True)
            multiplier_loss.backward()
            self.cql_multiplier_optimizer.step()
            metrics["cql_multiplier"] = multiplier.detach()
        else:
            conservative = cfg.cql_alpha * gap.sum()
        loss = td_loss + conservative
        metrics["critic_loss"] = loss.detach()
        return loss, metrics
