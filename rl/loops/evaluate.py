"""Evaluation: deterministic actions, raw undiscounted returns, normalised score."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from rl.agents import Agent
from rl.data import ScoreNormalizer


def evaluate(
    agent: Agent, env: gym.Env, episodes: int, seed: int, normalizer: ScoreNormalizer | None
) -> dict[str, float]:
    """Run ``episodes`` episodes with ``agent.act(obs, deterministic=True)``.

    ``success_rate`` (envs whose info has ``success``): the share of episodes with a success at any
    step; it scores a task whether or not its episodes end at the first success.

    Each episode is seeded (``seed + i``), and torch's random stream is forked and seeded with
    ``seed`` for the evaluation, so an evaluation depends only on the agent's weights, even for
    agents whose deterministic action still draws noise (ReinFlow's and DPPO's chains start from a
    Gaussian draw). Training's stream is left where it was: how often a run evaluates, and with
    which K, never changes what it trains.
    """
    on_cuda = agent.device.type == "cuda"  # the CPU stream is always forked
    with torch.random.fork_rng(devices=[agent.device] if on_cuda else [], device_type="cuda"):
        torch.manual_seed(seed)
        return _evaluate(agent, env, episodes, seed, normalizer)


def _evaluate(
    agent: Agent, env: gym.Env, episodes: int, seed: int, normalizer: ScoreNormalizer | None
) -> dict[str, float]:
    returns, lengths, successes = [], [], []
    reports_success = False
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total, length, success = False, 0.0, 0, False
        while not done:
            action = agent.act(batch_of_one(obs, agent.device), deterministic=True)[0].cpu().numpy()
            obs, reward, terminated, truncated, info = env.step(action)
            # Envs whose score is not their return (Franka Kitchen: distinct subtasks done) say so.
            total += float(info.get("score_reward", reward))
            length += 1
            done = terminated or truncated
            reports_success = reports_success or "success" in info
            success = success or bool(info.get("success", False))
        returns.append(total)
        lengths.append(length)
        successes.append(success)
    result = {
        "return": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "length": float(np.mean(lengths)),
    }
    if reports_success:
        result["success_rate"] = float(np.mean(successes))
    if normalizer is not None:
        result["normalized_score"] = float(normalizer(result["return"]))
    return result


def batch_of_one(obs: np.ndarray | dict, device: torch.device) -> torch.Tensor | dict[str, torch.Tensor]:
    """One env observation as a batch of one on ``device``, typed as the vector env hands them:
    camera frames stay uint8, everything else is float32."""
    if isinstance(obs, dict):
        return {key: batch_of_one(value, device) for key, value in obs.items()}
    obs = np.asarray(obs)
    dtype = torch.uint8 if obs.dtype == np.uint8 else torch.float32
    return torch.as_tensor(obs, dtype=dtype, device=device).unsqueeze(0)
