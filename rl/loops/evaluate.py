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

    Each episode is seeded (``seed + i``), so an evaluation depends only on the agent's weights,
    never on the training env's state: resumed and uninterrupted runs evaluate identically.
    """
    returns, lengths = [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total, length = False, 0.0, 0
        while not done:
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=agent.device).unsqueeze(0)
            action = agent.act(obs_t, deterministic=True)[0].cpu().numpy()
            obs, reward, terminated, truncated, info = env.step(action)
            # Envs whose score is not their return (Franka Kitchen: distinct subtasks done) say so.
            total += float(info.get("score_reward", reward))
            length += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(length)
    result = {
        "return": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "length": float(np.mean(lengths)),
    }
    if normalizer is not None:
        result["normalized_score"] = float(normalizer(result["return"]))
    return result
