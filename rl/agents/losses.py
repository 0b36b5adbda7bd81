"""Every loss of every agent, as pure functions of tensors (no modules, no optimizers, no state).

Shapes: ``E`` critics (ensemble members), ``B`` rows, ``M`` sampled actions per row, ``n`` policies.
Each function is checked against values worked out by hand in tests/test_losses.py (and, for the
FamO2O and Uni-O4 ones, in tests/test_famo2o.py and tests/test_unio4.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.distributions import Normal

# -- TD learning -------------------------------------------------------------------------------------


def td_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_{e, b} (q[e, b] - target[b])^2``: the mean over members *and* rows.

    As the official WSRL/CQL code (jaxrl_m ``critic_loss_fn``: ``jnp.mean((predicted_qs - target_qs) ** 2)``)
    and CORL's IQL. With ``conservative_loss`` also a mean over its members, each critic of a
    10-critic ensemble whose CQL term touches 2 gets 5x the CQL weight relative to its TD error that
    a sum over members would give it: the official balance. (The official IQL sums its two critics'
    errors, a factor of 2 that Adam's normalisation removes.)
    """
    return (q - target).pow(2).mean()


def subset_min_target(
    next_q: torch.Tensor,
    subset: torch.Tensor,
    reward: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """``r + gamma (1 - terminated) min_{k in subset} next_q[k]``; ``next_q`` is ``(E, B)``."""
    return reward + gamma * (1.0 - terminated) * next_q[subset].min(0).values


def finite_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of the finite entries (NaN when there are none), without a host sync."""
    finite = values.isfinite()
    return torch.where(finite, values, 0.0).sum() / finite.sum()


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """``alpha * (-mean(log_prob) - target_entropy)``; its gradient lowers alpha when entropy is high."""
    return log_alpha.exp() * (-log_prob.detach().mean() - target_entropy)


def sac_actor_loss(log_prob: torch.Tensor, q: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``mean(alpha log pi(a~|s) - Q(s, a~))``."""
    return (alpha * log_prob - q).mean()


# -- CQL / Cal-QL ------------------------------------------------------------------------------------


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
    """Per-critic conservative gap ``mean_b[T logsumexp(...) - Q(s, a_data)]``: shape ``(E,)``.

    ``q_data`` is ``(E, B)``; ``q_random``, ``q_current``, ``q_next`` are ``(E, B, M)``; the
    log-densities are ``(B, M)``; ``mc_return`` (Cal-QL) is ``(B,)`` and floors the two policy
    proposals' Q-values before the importance correction (random actions stay unfloored).
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


def conservative_loss(
    gap: torch.Tensor, weight: torch.Tensor | float, target_gap: float = 0.0
) -> torch.Tensor:
    """``weight * mean_e (gap_e - target_gap)``: the mean over the members the gap was measured on, as
    the official ``cql_q_diff.mean()``; ``target_gap`` is non-zero only with the Lagrange multiplier."""
    return weight * (gap - target_gap).mean()


# -- IQL and advantage-weighted regression -----------------------------------------------------------


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """``mean(|expectile - 1(diff < 0)| * diff^2)``: IQL's asymmetric regression of V towards Q."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def advantage_weights(
    q: torch.Tensor, v: torch.Tensor, beta: float | torch.Tensor, max_weight: float
) -> torch.Tensor:
    """``min(exp(beta * (q - v)), max_weight)``, with no gradient to the critics."""
    return torch.exp(beta * (q - v).detach()).clamp(max=max_weight)


def awr_loss(
    log_prob: torch.Tensor,
    q: torch.Tensor,
    v: torch.Tensor,
    beta: float | torch.Tensor,
    max_weight: float,
) -> torch.Tensor:
    """``-mean(min(exp(beta_i (q_i - v_i)), max_weight) log_prob_i)``; ``beta`` a scalar (IQL) or one
    per row (FamO2O: each row weighted by its own beta, not the batch's)."""
    return -(advantage_weights(q, v, beta, max_weight) * log_prob).mean()


# -- FamO2O -------------------------------------------------------------------------------------------


def family_sac_actor_loss(
    log_prob: torch.Tensor, q: torch.Tensor, beta: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """``mean(alpha log_prob_i - beta_i q_i)``: beta weighs Q against the entropy bonus."""
    return (alpha * log_prob - beta * q).mean()


def balance_loss(q: torch.Tensor, log_prob: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """``mean(alpha log pi_b(beta|s) - Q(s, a_beta))``: pick the beta whose action has the highest Q."""
    return (alpha * log_prob - q).mean()


# -- Uni-O4 -------------------------------------------------------------------------------------------


def standardize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``(x - mean) / (std + 1e-8)`` along ``dim`` (unbiased std, as the official z-scores)."""
    return (x - x.mean(dim, keepdim=True)) / (x.std(dim, keepdim=True) + 1e-8)


def ensemble_bc_loss(dist: Normal, action: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Uni-O4's ensemble BC, the official default (``kl_type='heuristic'``):
    ``sum_i mean_b[-log pi_i(a_b|s_b) - alpha (log pi_i(a_b|s_b) - sg max_{j != i} log pi_j(a_b|s_b))]``,
    and per member the mean gap ``log pi_i - max_{j != i} log pi_j`` (how much better it explains the
    data than the best other member; 0 for a single member).

    ``dist`` has batch shape ``(n, B, A)``. The max is detached, so the gradient is ``(1 + alpha)``
    times the NLL's: the members differ by their initialisation (rl/agents/unio4.py says why the
    distribution form is not used).
    """
    log_prob = dist.log_prob(action).sum(-1)  # (n, B)
    n = log_prob.shape[0]
    if n == 1:
        return -log_prob.mean(1).sum(), torch.zeros(1, device=action.device)
    others = log_prob.detach().unsqueeze(0).expand(n, -1, -1)  # [i, j, b] = log pi_j(a_b|s_b)
    others = others.masked_fill(
        torch.eye(n, dtype=torch.bool, device=action.device).unsqueeze(-1), -torch.inf
    )
    gap = log_prob - others.amax(1)  # (n, B)
    return (-log_prob - alpha * gap).mean(1).sum(), gap.detach().mean(1)


def ppo_clip_loss(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantage: torch.Tensor, clip: float
) -> torch.Tensor:
    """``-mean_last(min(rho A, clip(rho, 1 - clip, 1 + clip) A))``, ``rho = exp(log_prob - old_log_prob)``."""
    ratio = (log_prob - old_log_prob).exp()
    return -torch.minimum(ratio * advantage, ratio.clamp(1.0 - clip, 1.0 + clip) * advantage).mean(-1)


def clipped_value_loss(
    value: torch.Tensor, old_value: torch.Tensor, returns: torch.Tensor, clip: float
) -> torch.Tensor:
    """``mean(max((V - R)^2, (V_old + clip(V - V_old, -clip, clip) - R)^2))``."""
    clipped = old_value + (value - old_value).clamp(-clip, clip)
    return torch.maximum((value - returns).pow(2), (clipped - returns).pow(2)).mean()


# -- flow matching, shortcut models and chains of Gaussian steps (ReinFlow, DPPO) --------------------

Velocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``velocity(x, t, d, cond) -> (B, A)``: a flow network evaluated on rows of ``cond``."""


def flow_matching_loss(
    velocity: Velocity, cond: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Rectified flow: ``mean((v(x_t, t) - (x1 - x0))^2)`` with ``x_t = t x1 + (1 - t) x0``; ``x0`` is
    noise, ``x1`` data, ``t`` ``(B,)``. The step size handed to ``velocity`` is 0 (the flow itself)."""
    tt = t.unsqueeze(-1)
    predicted = velocity(tt * x1 + (1.0 - tt) * x0, t, torch.zeros_like(t), cond)
    return (predicted - (x1 - x0)).pow(2).mean()


def shortcut_loss(
    velocity: Velocity,
    cond: torch.Tensor,
    x0: torch.Tensor,
    x1: torch.Tensor,
    t: torch.Tensor,
    d: torch.Tensor,
    flow_rows: int,
    delta: float = 1e-5,
) -> torch.Tensor:
    """Shortcut models' loss over one batch: ``mean((s(x_t, t, d) - target)^2)`` over all rows, with
    ``x_t = (1 - (1 - delta) t) x0 + t x1``.

    - rows ``[:flow_rows]``: flow matching, ``d = 0`` (their ``d`` is ignored), target ``x1 - (1 - delta) x0``;
    - the other rows: self-consistency, target (no gradient) ``(s1 + s2) / 2`` with
      ``s1 = s(x_t, t, d/2)``, ``s2 = s(x_t + s1 d/2, t + d/2, d/2)``: one step of size d must land where
      two half steps do.
    """
    tt = t.unsqueeze(-1)
    xt = (1.0 - (1.0 - delta) * tt) * x0 + tt * x1
    d = torch.cat([torch.zeros_like(d[:flow_rows]), d[flow_rows:]])
    with torch.no_grad():
        x, ts, half = xt[flow_rows:], t[flow_rows:], d[flow_rows:] / 2.0
        c = cond[flow_rows:]
        first = velocity(x, ts, half, c)
        second = velocity(x + first * half.unsqueeze(-1), ts + half, half, c)
        target = torch.cat([x1[:flow_rows] - (1.0 - delta) * x0[:flow_rows], (first + second) / 2.0])
    return (velocity(xt, t, d, cond) - target).pow(2).mean()


def gaussian_chain_log_prob(
    mean: torch.Tensor, std: torch.Tensor, chain: torch.Tensor, initial: bool = True
) -> torch.Tensor:
    """Log-likelihood of a chain ``x^0..x^K`` ``(B, K + 1, A)`` whose steps are Gaussian,
    ``x^{k+1} ~ N(mean_k, std_k^2)`` (``mean``, ``std``: ``(B, K, A)``), with ``x^0 ~ N(0, I)`` counted
    when ``initial``; divided by the number of terms and by ``A``: a per-number, per-step log-density
    (ReinFlow's normalisation, so one clip range and one entropy weight fit every K and chunk size)."""
    terms = torch.distributions.Normal(mean, std).log_prob(chain[:, 1:]).sum((-2, -1))
    steps = mean.shape[1]
    if initial:
        terms = terms + torch.distributions.Normal(0.0, 1.0).log_prob(chain[:, 0]).sum(-1)
        steps += 1
    return terms / (steps * chain.shape[-1])


def gaussian_chain_entropy(std: torch.Tensor, initial: bool = True) -> torch.Tensor:
    """ReinFlow's entropy-rate estimate ``[H(N(0, I)) + sum_k H(N(mean_k, std_k^2))] / (terms A)``, ``(B,)``,
    normalised like ``gaussian_chain_log_prob``."""
    entropy = (0.5 * math.log(2.0 * math.pi * math.e) + std.log()).sum((-2, -1))
    steps = std.shape[1]
    if initial:
        entropy = entropy + 0.5 * math.log(2.0 * math.pi * math.e) * std.shape[-1]
        steps += 1
    return entropy / (steps * std.shape[-1])


def approx_kl(log_ratio: torch.Tensor) -> torch.Tensor:
    """``mean((rho - 1) - log rho)``: the low-variance KL(old || new) estimate PPO stops early on."""
    return (log_ratio.exp() - 1.0 - log_ratio).mean()


def ddpm_loss(
    predict_noise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    clean: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    alpha_bar: torch.Tensor,
) -> torch.Tensor:
    """DDPM's simple loss ``mean((eps(sqrt(ab_t) x + sqrt(1 - ab_t) e, t) - e)^2)``; ``t`` ``(B,)``
    integer steps into ``alpha_bar`` (the cumulative products of ``1 - beta``)."""
    ab = alpha_bar[t].unsqueeze(-1)
    return (predict_noise(ab.sqrt() * clean + (1.0 - ab).sqrt() * noise, t) - noise).pow(2).mean()
