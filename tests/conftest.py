"""Shared fixtures: small real datasets made here, on Hopper-v5, through the real writers."""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (first: chooses headless EGL rendering before anything loads mujoco)
from rl.buffers import Batch

# One intra-op thread per test process: on a shared 2-core machine, OpenMP threads waiting for a busy
# core slow small updates by an order of magnitude, and one thread keeps results reproducible.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
DOOR_HUMAN = DATA / "door-human-demos-d4rl-layout.hdf5"
MINARI_ID = "o2otest/hopper/random-v0"


def random_hopper_rollout(steps: int, seed: int) -> dict[str, np.ndarray]:
    """A uniformly random policy on Hopper-v5, in D4RL's layout (with next_observations)."""
    env = gym.make("Hopper-v5")
    rng = np.random.default_rng(seed)
    columns = {
        k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    }
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        action = rng.uniform(-1, 1, size=3).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(columns, (obs, action, reward, next_obs, terminated, truncated), strict=True):
            columns[key].append(value)
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    out = {k: np.asarray(v) for k, v in columns.items()}
    out["timeouts"][-1] = not out["terminals"][-1]  # the file ends an episode
    return out


def write_d4rl_file(path: Path, columns: dict[str, np.ndarray]) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in columns.items():
            f.create_dataset(key, data=value)
    return path


@pytest.fixture(scope="session")
def hopper_d4rl_file(tmp_path_factory) -> Path:
    columns = random_hopper_rollout(1500, seed=0)
    columns["observations"] = columns["observations"].astype(np.float32)
    return write_d4rl_file(tmp_path_factory.mktemp("d4rl") / "hopper-random.hdf5", columns)


@pytest.fixture(scope="session")
def minari_store(tmp_path_factory) -> Path:
    """A Minari store with one Hopper-v5 dataset recorded by minari's DataCollector."""
    import minari
    from minari import DataCollector

    store = tmp_path_factory.mktemp("minari")
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(store)
    env = DataCollector(gym.make("Hopper-v5"))
    rng = np.random.default_rng(1)
    env.reset(seed=1)
    for _ in range(600):
        _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, size=3).astype(np.float32))
        if terminated or truncated:
            env.reset()
    env.create_dataset(
        dataset_id=MINARI_ID,
        algorithm_name="uniform random",
        ref_min_score=-20.0,
        ref_max_score=3000.0,
        author="o2o tests",
        author_email="none",
        eval_env="Hopper-v5",
        code_permalink="tests/conftest.py",
        description="o2o test fixture",
    )
    env.close()
    assert MINARI_ID in minari.list_local_datasets()
    yield store
    if previous is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = previous


def random_batch(
    n: int, obs_dim: int, action_dim: int, seed: int = 1, terminal_rate: float = 0.1, mc_return: bool = True
) -> Batch:
    """A seeded batch of random transitions for agent tests; ``terminal_rate=0`` gives no terminals
    and ``mc_return=False`` zero Monte-Carlo returns (neither draws from the generator)."""
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(n, obs_dim, generator=g),
        action=torch.rand(n, action_dim, generator=g) * 2 - 1,
        reward=torch.randn(n, generator=g),
        next_obs=torch.randn(n, obs_dim, generator=g),
        terminated=(torch.rand(n, generator=g) < terminal_rate).float()
        if terminal_rate > 0
        else torch.zeros(n),
        mc_return=torch.randn(n, generator=g) if mc_return else torch.zeros(n),
    )


class Interrupted(Exception):
    """Stops a run inside ``train_until_checkpoint``: a kill right after a checkpoint, in process."""


def train_until_checkpoint(cfg, run_dir: Path, step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``rl.train.train(cfg, run_dir)``, stopped right after its checkpoint at ``step``."""
    import rl.train
    from rl.loops import run_state

    save = run_state.save

    def save_then_stop(run, state, directory):
        save(run, state, directory)
        if state.step == step:
            raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(run_state, "save", save_then_stop)
        with pytest.raises(Interrupted):
            rl.train.train(cfg, run_dir)
