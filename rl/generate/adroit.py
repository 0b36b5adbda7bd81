"""D4RL's ``door-cloned``, made here from the 25 human demonstrations, and the check of the reward
it relies on.

``python -m rl.data generate env=door level=cloned [size=1000000] [seed=0]`` writes the Minari
dataset ``o2o/door/cloned-v0`` (``dataset=door-cloned``); ``python -m rl.data check-door-reward``
replays the demonstrations in ``AdroitHandDoor-v1`` and compares its rewards with the recorded ones
(the result is in ``results/door_cloned/README.md``).

The recipe, step by step, with its source; where the sources are silent the choice is ours and is an
argument of ``ClonedConfig``:

1. **Demonstrations**: the 25 human tele-operation episodes of door (6,729 rows, ``demos=``, by
   default the file shipped in ``tests/data``; D4RL's ``door-human``), actions clipped to [-1, 1] as
   D4RL wrote its ``door-human`` file (``Farama-Foundation/D4RL``,
   ``scripts/generation/hand_dapg_demos.py``: ``demo_playback(..., clip=True)``).
2. **Behaviour cloning on them**: "an imitation policy trained on the demonstrations" (D4RL, Fu et al.
   2020, Adroit datasets). Minari's card for ``door-cloned`` words it "trained on the demonstrations
   from expert and human", which may mean the expert data too; the human demonstrations are the only
   ones ``hand_dapg_combined.py`` mixes in and the only ones shipped here, so BC trains on them. Its
   network is what D4RL stored in ``door-cloned-v1.hdf5`` (``metadata/policy``, as TensorFlow
   Datasets reads it, ``tensorflow_datasets/d4rl/dataset_builder.py``, config ``v1-cloned``): layers
   ``fc0``, ``fc1``, ``last_fc`` of width 256 (``policy_size=256``) and no ``last_fc_log_std``, so an
   MLP with two hidden layers of 256 and one deterministic output. The sources are silent on the
   loss, optimiser, training length, activation and input scaling; ours: mean squared error to the
   clipped actions, Adam at ``bc_lr`` (1e-3), ``bc_steps`` (10,000) minibatches of ``bc_batch_size``
   (256) drawn from all demonstration transitions, ReLU (the project's ``rl.nets.MLP``), observations
   standardised by the demonstrations' mean and standard deviation.
3. **Rollouts of the BC policy** in ``AdroitHandDoor-v1`` (gymnasium-robotics' port of D4RL's
   ``door-v0``): 200-step episodes (D4RL's ``max_episode_steps`` for door, and the env's), never
   terminated, so every episode ends in a time-out; each action is clipped to [-1, 1] before the
   step, as D4RL's policy playback does (``hand_dapg_policies.py``, ``pol_playback(..., clip=True)``).
   Action noise: the sources do not say. The stored BC policy has no standard-deviation head, and
   ``door-cloned-v1`` has no per-step ``infos/action_mean``/``action_log_std``, which D4RL's playback of
   a Gaussian policy writes (``door-expert-v1`` has them); so ``noise_std`` defaults to 0 (the BC
   policy's output itself). With ``noise_std > 0``, Gaussian noise of that standard deviation is added
   to the output before clipping, drawn from a generator seeded with the episode's reset seed.
4. **The 50/50 mix** (``scripts/generation/hand_dapg_combined.py``): ``size`` = N rows as D4RL's file
   counts them, N = 200 x 5,000 = 1,000,000 by default. The BC part is the rollouts up to the first
   episode end at or after row N // 2 (500,200 rows: 2,501 episodes); the remaining N - 500,200
   rows are the demonstrations tiled end to end and cut there (74 full copies and the first 1,854 rows
   of a 75th: 6 whole demonstrations and 61 rows of the 7th). BC rows come first. That is 4,358
   episodes, the count Minari lists for D4RL's ``door-cloned`` (1,000,000 steps, 4,358 episodes),
   which confirms the reading. ``size`` smaller than D4RL's is allowed down to the smallest N whose
   demonstration part still holds every demonstration once (13,529 rows for the shipped file).

The Minari layout: an episode holds T actions and T + 1 observations. A BC episode keeps all 200
steps (the observation after the last step is known). A demonstration row's next observation is
the next row, so each demonstration episode of T rows gives T - 1 transitions (its last row has no
recorded successor and is dropped, as ``d4rl.qlearning_dataset`` and ``rl.data.load_d4rl_hdf5``
drop it); the cut demonstration at the end keeps every row it has, ending in a truncation.
``terminations`` are what the env returns (always False for door: D4RL's ``terminals``),
``truncations`` True at each episode's end (its ``timeouts``). So a dataset of N rows holds N minus
(complete demonstration episodes) transitions: 998,144 in 4,358 episodes for the default size
(500,200 BC + 497,944 demonstration transitions).

**Rewards.** gymnasium-robotics 1.4.2's ``AdroitHandDoor-v1`` is not D4RL's door reward: since its
1.2.1 it adds ``0.1 * |palm - handle|`` where D4RL subtracts it (``check-door-reward`` measures this on
the demonstrations). The dataset keeps D4RL's reward throughout: the demonstration rows keep their
recorded rewards, and each BC row gets the reward ``env=door`` pays, which is D4RL's
(``envs.robotics.d4rl_door_reward`` from the simulator's state after the step, the formula of D4RL's
``d4rl/hand_manipulation_suite/door_v0.py``; the library's own is kept in ``info["env_reward"]``
and is that plus ``0.2 * |palm - handle|``). So an agent fine-tuned online in ``env=door`` is paid
as the data and CORL's curves are.
Reference scores: D4RL's for door (``rl.data.D4RL_REF_SCORES``), measured with D4RL's reward.

Everything is seeded (BC initialisation and minibatches by ``seed``, episode ``i`` resets with seed
``seed * 1_000_000 + i``) and runs torch on one thread: the same command gives the same dataset on
the same machine. The BC policy is saved beside the dataset (``bc_policy.pt`` in its directory), as
D4RL kept its policy's weights in the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import envs
from envs.robotics import (
    DOOR_HANDLE,
    DOOR_HINGE,
    DOOR_LATCH,
    DOOR_PALM,
    d4rl_door_reward,
)
from rl.data import D4RL_REF_SCORES, Dataset, check_dataset, load_d4rl_hdf5
from rl.generate.locomotion import file_digest, single_threaded
from rl.nets import MLP, ObservationNormalizer

ENVS = {"door": "AdroitHandDoor-v1"}
LEVELS = ("cloned",)
DEMOS = Path(__file__).resolve().parents[2] / "tests" / "data" / "door-human-demos-d4rl-layout.hdf5"
EPISODE_STEPS = 200
"""D4RL's time limit for door, and ``AdroitHandDoor-v1``'s: every BC episode has this many steps."""
D4RL_ROWS = EPISODE_STEPS * 5_000
"""``hand_dapg_combined.py``: ``N = env._max_episode_steps * 5000``."""
BC_HIDDEN = (256, 256)
"""The width of D4RL's stored BC policy (module docstring, step 2)."""
BC_POLICY_FILE = "bc_policy.pt"


@dataclass
class ClonedConfig:
    env: str = "door"
    level: str = "cloned"
    size: int = D4RL_ROWS
    """Rows as D4RL's file counts them (BC part + demonstration part). D4RL: 1,000,000."""
    seed: int = 0
    demos: str = str(DEMOS)
    """The human demonstrations, a D4RL-layout hdf5 file (``timeouts`` at each episode's last row)."""
    bc_steps: int = 10_000
    """BC minibatch updates (the sources are silent; module docstring, step 2)."""
    bc_batch_size: int = 256
    bc_lr: float = 1e-3
    noise_std: float = 0.0
    """Gaussian action noise on the BC policy's output before clipping (step 3: D4RL shows none)."""
    dataset_id: str | None = None
    """Default: ``o2o/<env>/<level>-v0``."""
    progress: bool = True


@dataclass
class RewardCheckConfig:
    demos: str = str(DEMOS)
    tolerance: float = 0.01
    """Largest |replayed - recorded| over an observation's entries (radians and metres) for a step to
    count as replayed on the recorded state."""


# -- the demonstrations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Demo:
    """One demonstration in Minari's shape: one observation more than actions (clipped) and rewards."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray

    @property
    def rows(self) -> int:
        """Rows in the D4RL file: one per observation (the last has no recorded successor)."""
        return len(self.observations)


def read_demos(path: str | Path, env: gym.Env) -> tuple[Dataset, list[Demo]]:
    """The demonstrations as loaded for training (checked against the env's spaces) and per episode."""
    dataset = load_d4rl_hdf5(path)
    check_dataset(dataset, env.observation_space, env.action_space, clip_actions=True)
    ends = np.flatnonzero(dataset.episode_ends)
    demos = []
    for start, end in zip(np.r_[0, ends[:-1] + 1], ends, strict=True):
        rows = slice(start, end + 1)
        demos.append(
            Demo(
                observations=np.concatenate(
                    [dataset.observations[rows], dataset.next_observations[end : end + 1]]
                ).astype(np.float64),
                actions=np.clip(dataset.actions[rows], -1.0, 1.0),
                rewards=dataset.rewards[rows].astype(np.float64),
            )
        )
    return dataset, demos


def split_rows(size: int) -> tuple[int, int]:
    """``(BC episodes, demonstration rows)`` of a ``size``-row dataset, as ``hand_dapg_combined.py``
    splits it: the BC part ends at the first episode end at or after row ``size // 2``."""
    bc_episodes = (size // 2) // EPISODE_STEPS + 1
    return bc_episodes, max(size - bc_episodes * EPISODE_STEPS, 0)


def minimum_size(demo_rows: int) -> int:
    """The smallest ``size`` whose demonstration part holds every demonstration row once."""
    size = 2 * demo_rows
    while split_rows(size)[1] < demo_rows:
        size += 1
    return size


def tiled_demos(demos: list[Demo], rows: int) -> Iterator[tuple[int, Demo, int]]:
    """``(index, demonstration, its rows)`` of the demonstrations tiled end to end and cut after
    ``rows`` rows; a cut one keeps its first k rows and their k transitions (row k's observation
    ends it)."""
    index = 0
    while rows > 0:
        demo, used = demos[index % len(demos)], min(rows, demos[index % len(demos)].rows)
        if used < demo.rows:
            demo = Demo(demo.observations[: used + 1], demo.actions[:used], demo.rewards[:used])
        yield index % len(demos), demo, used
        rows -= used
        index += 1


# -- behaviour cloning ----------------------------------------------------------------------------


def bc_network(obs_dim: int, action_dim: int, mean: np.ndarray, std: np.ndarray) -> nn.Sequential:
    return nn.Sequential(ObservationNormalizer(obs_dim, mean, std), MLP(obs_dim, BC_HIDDEN, action_dim))


def train_bc(demos: Dataset, cfg: ClonedConfig) -> tuple[nn.Sequential, float]:
    """The BC policy (deterministic: observation -> action) and its last minibatch loss."""
    obs = torch.as_tensor(demos.observations, dtype=torch.float32)
    target = torch.as_tensor(np.clip(demos.actions, -1.0, 1.0), dtype=torch.float32)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        policy = bc_network(obs.shape[1], target.shape[1], *demos.observation_stats())
    optimiser = torch.optim.Adam(policy.parameters(), lr=cfg.bc_lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    loss = torch.tensor(float("nan"))
    for _ in range(cfg.bc_steps):
        rows = torch.randint(len(obs), (cfg.bc_batch_size,), generator=generator)
        loss = nn.functional.mse_loss(policy(obs[rows]), target[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return policy.eval(), float(loss.detach())


def bc_action(policy: nn.Module, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
    """D4RL's playback: the policy's action (plus noise, if any), clipped to [-1, 1]."""
    with torch.no_grad():
        action = policy(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
    if noise is not None:
        action = action + noise
    return np.clip(action, -1.0, 1.0).astype(np.float32)


# -- rewards --------------------------------------------------------------------------------------


def record_bc_episode(env: gym.Env, policy: nn.Module, reset_seed: int, noise_std: float, episode_id: int):
    """One BC episode as a Minari ``EpisodeBuffer``, labelled with D4RL's reward."""
    from minari.data_collector import EpisodeBuffer

    rng = np.random.default_rng(reset_seed)
    obs, _ = env.reset(seed=reset_seed)
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    done = False
    while not done:
        noise = rng.normal(0.0, noise_std, env.action_space.shape) if noise_std > 0 else None
        action = bc_action(policy, obs, noise)
        obs, reward, terminated, truncated, _ = env.step(action)  # D4RL's reward (envs.robotics)
        observations.append(obs)
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated))
        done = terminated or truncated
    return EpisodeBuffer(
        id=episode_id,
        seed=reset_seed,
        observations=np.stack(observations),
        actions=np.stack(actions),
        rewards=rewards,
        terminations=terminations,
        truncations=truncations,
        infos={},
    )


def demo_episode(demo: Demo, episode_id: int):
    from minari.data_collector import EpisodeBuffer

    steps = len(demo.actions)
    return EpisodeBuffer(
        id=episode_id,
        observations=demo.observations,
        actions=demo.actions,
        rewards=demo.rewards.tolist(),
        terminations=[False] * steps,
        truncations=[False] * (steps - 1) + [True],
        infos={},
    )


# -- generation -----------------------------------------------------------------------------------


def env_config(env: str) -> envs.EnvConfig:
    return envs.EnvConfig(name=env, id=ENVS[env], family="robotics", score_name=env)


def _check_config(cfg: ClonedConfig) -> None:
    if cfg.env not in ENVS:
        raise ValueError(f"generate: env={cfg.env!r} has no cloned recipe here; choose one of {sorted(ENVS)}")
    if cfg.level not in LEVELS:
        raise ValueError(f"generate: level={cfg.level!r} is not one of {list(LEVELS)} for env={cfg.env}")
    for name in ("bc_steps", "bc_batch_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"generate: {name}={getattr(cfg, name)} must be at least 1")
    if not cfg.bc_lr > 0 or not cfg.noise_std >= 0:
        raise ValueError(f"generate: need bc_lr > 0 and noise_std >= 0, got {cfg.bc_lr} and {cfg.noise_std}")


def generate_cloned(cfg: ClonedConfig) -> str:
    """Write the cloned dataset into the local Minari store; returns its id."""
    with single_threaded():
        return _generate_cloned(cfg)


def _generate_cloned(cfg: ClonedConfig) -> str:
    import minari

    from rl.checkpoint import save_checkpoint

    _check_config(cfg)
    dataset_id = cfg.dataset_id or f"o2o/{cfg.env}/{cfg.level}-v0"
    if dataset_id in minari.list_local_datasets():
        raise ValueError(
            f"generate: dataset {dataset_id} already exists in {minari.storage.get_dataset_path()}; "
            "choose another dataset_id or delete it first"
        )
    env = envs.make(env_config(cfg.env))
    try:
        training, demos = read_demos(cfg.demos, env)
        demo_rows = sum(demo.rows for demo in demos)
        if cfg.size < minimum_size(demo_rows):
            raise ValueError(
                f"generate: size={cfg.size} leaves {split_rows(cfg.size)[1]} rows for the demonstrations, "
                f"fewer than the {demo_rows} of {cfg.demos}; the smallest size that holds each once is "
                f"{minimum_size(demo_rows)} (D4RL's: {D4RL_ROWS})"
            )
        bc_episodes, tiled_rows = split_rows(cfg.size)
        policy, bc_loss = train_bc(training, cfg)
        command = (
            f"python -m rl.data generate env={cfg.env} level={cfg.level} size={cfg.size} seed={cfg.seed} "
            f"bc_steps={cfg.bc_steps} bc_batch_size={cfg.bc_batch_size} bc_lr={cfg.bc_lr} "
            f"noise_std={cfg.noise_std}"
        )
        episode_meta: list[dict] = []
        bc_returns: list[float] = []

        def episodes() -> Iterator:
            bar = tqdm(total=cfg.size, disable=not cfg.progress, desc=dataset_id, unit="row")
            for i in range(bc_episodes):
                reset_seed = cfg.seed * 1_000_000 + i
                episode = record_bc_episode(env, policy, reset_seed, cfg.noise_std, i)
                episode_meta.append({"kind": "bc", "reset_seed": reset_seed})
                bc_returns.append(float(np.sum(episode.rewards)))
                bar.update(EPISODE_STEPS)
                yield episode
            for demo_index, demo, rows in tiled_demos(demos, tiled_rows):
                episode_meta.append({"kind": "human", "demonstration": demo_index})
                bar.update(rows)
                yield demo_episode(demo, len(episode_meta) - 1)
            bar.close()

        ref_min, ref_max = D4RL_REF_SCORES[cfg.env]
        dataset = minari.create_dataset_from_buffers(
            dataset_id=dataset_id,
            buffer=episodes(),  # written as rolled out: the ~1M rows never sit in memory together
            env=ENVS[cfg.env],
            eval_env=ENVS[cfg.env],
            algorithm_name="D4RL cloned recipe: BC on the human demonstrations, mixed 50/50 with them",
            author="o2o",
            author_email="o2o@users.noreply.github.com",
            code_permalink="rl/generate/adroit.py",
            ref_min_score=ref_min,
            ref_max_score=ref_max,
            description=f"D4RL-recipe {cfg.level} data on {ENVS[cfg.env]} with D4RL's door reward; "
            f"made by '{command}'",
        )
        save_checkpoint(
            Path(minari.storage.get_dataset_path(dataset_id)) / BC_POLICY_FILE,
            {
                "kind": "bc_policy",
                "obs_dim": env.observation_space.shape[0],
                "action_dim": env.action_space.shape[0],
                "state": policy.state_dict(),
                "command": command,
            },
        )
        dataset.storage.update_episode_metadata(episode_meta)
        dataset.storage.update_metadata(
            {
                "env": cfg.env,
                "level": cfg.level,
                "seed": cfg.seed,
                "recipe": {
                    "bc_hidden": list(BC_HIDDEN),
                    "bc_steps": cfg.bc_steps,
                    "bc_batch_size": cfg.bc_batch_size,
                    "bc_lr": cfg.bc_lr,
                    "noise_std": cfg.noise_std,
                    "episode_steps": EPISODE_STEPS,
                },
                "reward": "D4RL's door reward (door_v0.py): demonstration rows as recorded, BC rows from "
                "the simulator state after each step; AdroitHandDoor-v1's own reward adds 0.2*|palm - handle|",
                "demos": cfg.demos,
                "demos_sha256": file_digest(Path(cfg.demos)),
                "rows": cfg.size,
                "bc_episodes": bc_episodes,
                "bc_rows": bc_episodes * EPISODE_STEPS,
                "bc_mean_return": float(np.mean(bc_returns)),
                "bc_final_loss": bc_loss,
                "demo_rows": tiled_rows,
                "demo_episodes": sum(m["kind"] == "human" for m in episode_meta),
                "demo_copies": tiled_rows / demo_rows,
                "bc_policy_file": BC_POLICY_FILE,
                "command": command,
            }
        )
    except BaseException:
        if dataset_id in minari.list_local_datasets():
            minari.delete_dataset(dataset_id)
        raise
    finally:
        env.close()
    return dataset_id


def load_bc_policy(dataset_id: str) -> nn.Sequential:
    """The BC policy saved beside a cloned dataset: the one its rollouts were made with."""
    import minari

    from rl.checkpoint import load_checkpoint

    payload = load_checkpoint(Path(minari.storage.get_dataset_path(dataset_id)) / BC_POLICY_FILE)
    dims = payload["obs_dim"]
    policy = bc_network(dims, payload["action_dim"], np.zeros(dims), np.ones(dims))
    policy.load_state_dict(payload["state"])
    return policy.eval()


# -- the reward check -----------------------------------------------------------------------------

Restore = Callable[[gym.Env, np.ndarray], np.ndarray]
"""Put an env in the state a recorded observation shows; returns the env's observation of it."""
RewardOf = Callable[[gym.Env, float, np.ndarray, dict], float]
"""``(env after the step, the env's reward, next observation, info) -> the reward to compare``."""


@dataclass(frozen=True)
class EpisodeCheck:
    transitions: int
    """Recorded transitions (steps with a recorded next observation)."""
    replayed: int
    """Steps replayed before the first whose next observation differs from the recorded one by more
    than the tolerance (0 if the restored first observation already does)."""
    max_reward_diff: dict[str, float]
    """Per reward definition: max |its reward - the recorded one| over the replayed steps (NaN if none)."""


def check_replay(
    env: gym.Env,
    restore: Restore,
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    tolerance: float,
    reward_of: dict[str, RewardOf],
) -> EpisodeCheck:
    """Replay the recorded actions from the state of the first recorded observation and compare each
    reward definition with the recorded rewards while the replay stays on the recorded states."""
    replayed: dict[str, list[float]] = {name: [] for name in reward_of}
    on_track = bool(np.max(np.abs(restore(env, observations[0]) - observations[0])) <= tolerance)
    for t in range(len(actions) if on_track else 0):
        next_obs, reward, _, _, info = env.step(actions[t])
        if np.max(np.abs(next_obs - observations[t + 1])) > tolerance:
            break
        for name, of in reward_of.items():
            replayed[name].append(of(env, float(reward), next_obs, info))
    steps = len(next(iter(replayed.values()), []))
    return EpisodeCheck(
        transitions=len(actions),
        replayed=steps,
        max_reward_diff={
            name: float(np.max(np.abs(np.asarray(values) - rewards[:steps]))) if steps else math.nan
            for name, values in replayed.items()
        },
    )


# Where the observed joint angles sit in qpos (door_v0.py ``get_obs``): the arm and hand are
# qpos[1:28] (qpos[0], the arm's slide along the door axis, is not observed), the latch qpos[29],
# the door hinge qpos[28].
HAND_QPOS = slice(1, 28)
LATCH_QPOS, HINGE_QPOS = 29, 28


def restore_door(env: gym.Env, obs: np.ndarray) -> np.ndarray:
    """``AdroitHandDoor-v1`` in the state a recorded observation shows, with zero joint velocities.

    The observed joints are copied; the unobserved arm slide (qpos[0]) is solved from the palm's
    position (a slide moves the palm along a line) and the door body's position from the handle's
    (the door frame translates the handle). Velocities are not observed and are set to zero.
    """
    base = env.unwrapped.get_env_state()

    def reset_to(slide: float, door_body: np.ndarray) -> np.ndarray:
        qpos = np.zeros_like(base["qpos"])
        qpos[0], qpos[HAND_QPOS] = slide, obs[:DOOR_LATCH]
        qpos[LATCH_QPOS], qpos[HINGE_QPOS] = obs[DOOR_LATCH], obs[DOOR_HINGE]
        state = {"qpos": qpos, "qvel": np.zeros_like(base["qvel"]), "door_body_pos": door_body}
        return env.reset(options={"initial_state_dict": state})[0]

    at_zero = reset_to(0.0, base["door_body_pos"])
    direction = reset_to(1.0, base["door_body_pos"])[DOOR_PALM] - at_zero[DOOR_PALM]
    slide = float(np.dot(obs[DOOR_PALM] - at_zero[DOOR_PALM], direction) / np.dot(direction, direction))
    return reset_to(slide, base["door_body_pos"] + obs[DOOR_HANDLE] - at_zero[DOOR_HANDLE])


@dataclass(frozen=True)
class DoorRewardRow:
    replay: EpisodeCheck
    formula_residual: float
    """Over every recorded transition: max |recorded reward - D4RL's formula on the recorded next
    observation without the velocity term|. That term is -1e-5 * sum(qvel^2), small and <= 0."""


def check_door_reward(cfg: RewardCheckConfig) -> list[DoorRewardRow]:
    """Per demonstration: how far ``AdroitHandDoor-v1`` replays it, and how its reward and D4RL's
    compare with the recorded rewards on the replayed steps (module docstring, Rewards)."""
    if not cfg.tolerance > 0:
        raise ValueError(f"check-door-reward: tolerance={cfg.tolerance} must be > 0")
    reward_of: dict[str, RewardOf] = {
        ENVS["door"]: lambda env, reward, next_obs, info: info["env_reward"],  # the library's own
        "D4RL": lambda env, reward, next_obs, info: reward,  # envs.robotics.D4RLHandReward
    }
    env = envs.make(env_config("door"))
    try:
        env.reset(seed=0)
        rows = []
        for demo in read_demos(cfg.demos, env)[1]:
            replay = check_replay(
                env, restore_door, demo.observations, demo.actions, demo.rewards, cfg.tolerance, reward_of
            )
            formula = [d4rl_door_reward(obs, None) for obs in demo.observations[1:]]
            rows.append(DoorRewardRow(replay, float(np.max(np.abs(demo.rewards - formula)))))
    finally:
        env.close()
    return rows


def format_door_reward_check(rows: list[DoorRewardRow], tolerance: float) -> str:
    """The check as a table, one line per demonstration, and a summary line."""
    names = list(rows[0].replay.max_reward_diff)
    header = [
        "episode",
        "steps",
        "replayed",
        *(f"max|r_{name} - r|" for name in names),
        "max|r_D4RL(obs) - r|",
    ]
    widths = [max(len(h), 8) for h in header]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    for i, row in enumerate(rows):
        numbers = [*row.replay.max_reward_diff.values(), row.formula_residual]
        cells = [
            str(i),
            str(row.replay.transitions),
            str(row.replay.replayed),
            *(f"{v:.4f}" for v in numbers),
        ]
        lines.append("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    worst = {name: float(np.nanmax([row.replay.max_reward_diff[name] for row in rows])) for name in names}
    lines.append(
        f"{len(rows)} demonstrations: {sum(r.replay.replayed for r in rows)} of "
        f"{sum(r.replay.transitions for r in rows)} steps replayed within {tolerance} of the recorded "
        "observations; on them max |reward - recorded|: "
        + ", ".join(f"{name} {value:.4f}" for name, value in worst.items())
        + "; D4RL's formula on the recorded observations (no velocity term), every step: "
        + f"{max(r.formula_residual for r in rows):.4f}"
    )
    return "\n".join(lines)
