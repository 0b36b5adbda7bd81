"""Pixel observations in the off-policy agents: one image encoder, shared as DrQ shares it, written
once for SAC, CQL, Cal-QL, WSRL, IQL and FamO2O.

The decision (issue 20), after DrQ (Kostrikov et al. 2020) and SAC-AE:
- **The critic owns the encoder** (``CriticEnsemble.encoder``, an ``ObservationEncoder`` built by
  ``build_agent`` from ``agent.encoder``). The critic's optimizer steps it, so only the critic's loss
  trains it: the TD error, plus CQL's conservative term where there is one.
- **Everything else reads detached features**: the actor, IQL's V, FamO2O's balance model and
  universal policy. No actor (or value, temperature, balance) gradient reaches the encoder.
- **The target critic has its own encoder**: the target critic is a copy of the critic, encoder
  included, and ``polyak_update`` averages the whole of it at the agent's ``tau`` (DrQ-v1 averages
  its whole critic at one rate; SAC-AE's separate encoder rate of 0.05 is not offered). A frozen
  backbone has equal weights in both, which averaging leaves unchanged.
- **One augmentation and one pass per encoder per (mini)batch** (``encode``): s and s' are shifted
  independently (DrQ's random shift, ``agent.encoder.pad``), then encoded by the critic's encoder
  (s with gradient, s' without) and, where the agent's target critic reads them, by the target
  encoder. With a UTD ratio each critic step encodes its own minibatch (the encoder changed after the
  previous step), and the actor step reads the features those steps computed (``Encoded.cat``),
  stale by at most one critic step, as in DrQ-v2; it does not encode again.
- **Acting and evaluation** encode the un-shifted observation with the critic's encoder
  (``features``).

State observations pass through the same code at no cost: ``encode`` returns the batch's own
tensors in every field, and ``features`` returns the observation itself.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from rl.buffers.batch import Batch, Obs
from rl.nets import CriticEnsemble


@dataclass(frozen=True)
class Encoded(Batch):
    """A batch as the networks read it. ``obs`` and ``next_obs`` are features from the critic's
    encoder: ``obs`` with gradient (for the critic's loss; everything else detaches it), ``next_obs``
    without. ``target_obs`` / ``target_next_obs`` come from the target critic's encoder, where the
    agent's target critic reads them (None otherwise). With state observations every field holds
    the batch's own observations."""

    target_obs: torch.Tensor | None = None
    target_next_obs: torch.Tensor | None = None

    @staticmethod
    def cat(parts: list[Encoded]) -> Encoded:
        """The minibatches of one update, joined again (for the actor step on all rows)."""
        if len(parts) == 1:
            return parts[0]
        joined = {}
        for f in fields(Encoded):
            values = [getattr(p, f.name) for p in parts]
            joined[f.name] = None if values[0] is None else torch.cat(values)
        return Encoded(**joined)


def encode(
    critic: CriticEnsemble,
    target_critic: CriticEnsemble,
    batch: Batch,
    target_obs: bool = False,
    target_next_obs: bool = False,
) -> Encoded:
    """``batch`` through the critic's encoder (see the module docstring); ``target_obs`` and
    ``target_next_obs`` ask for the target encoder's features of s and of s'."""
    rows = {f.name: getattr(batch, f.name) for f in fields(Batch)}
    encoder = critic.encoder
    if encoder is None:
        return Encoded(
            **rows,
            target_obs=batch.obs if target_obs else None,
            target_next_obs=batch.next_obs if target_next_obs else None,
        )
    obs, next_obs = encoder.augment_pair(batch.obs, batch.next_obs)  # independent shifts (DrQ)
    rows["obs"] = encoder(obs)
    with torch.no_grad():
        rows["next_obs"] = encoder(next_obs)
        target = target_critic.encoder
        return Encoded(
            **rows,
            target_obs=target(obs) if target_obs else None,
            target_next_obs=target(next_obs) if target_next_obs else None,
        )


@torch.no_grad()
def features(critic: CriticEnsemble, obs: Obs) -> torch.Tensor:
    """What the actor acts on: ``obs`` through the critic's encoder, un-shifted, or ``obs`` itself
    for state observations."""
    return obs if critic.encoder is None else critic.encoder(obs)
