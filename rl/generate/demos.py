"""Scripted manipulation demonstrations (the one demo contract): ``python -m rl.data generate
env=lift level=expert [episodes=50] [seed=0] [image_size=84]`` (and ``env=can``).

What a dataset holds (a real Minari dataset, hdf5, id ``o2o/<env>/<level>-v0``):
- ``observations``: a dict per step:
  - ``state``: the flat vector ``env=lift`` / ``env=can`` observes (``object-state`` then
    ``robot0_proprio-state``; Lift 10 + 43, Can 14 + 43). ``env=lift-pixels`` observes only the
    proprio part under its ``state`` key: ``state[object_state_dim:]``, with ``object_state_dim`` in the
    dataset's metadata (``state_layout``).
  - ``agentview`` and ``robot0_eye_in_hand``: ``(image_size, image_size, 3)`` uint8 frames rendered
    exactly as ``env=lift-pixels`` renders them (same adapter, same ``fast_render``, robosuite's row
    order, recorded in the metadata as ``image_convention``). Stored losslessly (no JPEG), so a frame
    in the dataset is a frame the pixel env can produce.
- ``actions`` in [-1, 1] (OSC_POSE, 7 numbers), ``rewards`` the env's sparse reward, ``terminations``
  (at the first success, the family's convention) and ``truncations`` (the 500-step limit, or the
  cut of a cut-short episode).
- ``infos["success"]``: one flag per observation (T + 1 per episode; the reset's is False), the
  task's own success check. With success termination only an episode's last observation can be a
  success frame: the reward classifier's positives; every other frame is a negative.
- Per-episode metadata (``dataset.storage.get_episode_metadata``): ``kind``, ``noise_std``,
  ``success``, and the reset ``seed``.
- Dataset metadata: ``env`` (o2o's env name), ``robosuite_task``, ``level``, ``seed``, ``recipe``,
  ``episode_kinds`` (episodes and successes of each kind), ``success_rate`` (all episodes) and
  ``expert_success_rate`` (the expert-kind episodes: the scripted expert's success rate at the
  recipe's noise), ``success_floor`` (the rate ``envs.scripted`` states and tests), ``cameras``,
  ``image_size``, ``state_layout``, ``command``.

Episode kinds (the recipe of each level is ``RECIPES``, counts are rounded shares of ``episodes``,
their order is shuffled by the seed):
- ``expert``: the scripted expert (``envs.scripted``) with small action noise, for diversity.
- ``noisy``: the same script under heavy action noise: slow, clumsy attempts, some of which fail.
- ``cut-short``: an expert attempt truncated before it ends, at a uniformly drawn point in the
  second half of its length: grasps and lifts that never finish, the near-success negatives a
  success classifier needs.
Levels: ``expert`` is mostly clean successes plus a tenth each of noisy and cut-short attempts;
``mixed`` is noisier and has many partial attempts, so behaviour cloning on it does not start at the
expert's success rate.

Seeding: episode ``i`` resets with seed ``seed * 1_000_000 + i`` and draws its action noise from
that seed too; the kinds and cut points are drawn from ``seed`` before any rollout. The same command
gives the same dataset on the same machine (MuJoCo and the software renderer are deterministic there).

``check_demo_dataset`` is the reader-side contract: what a consumer of these datasets (BC, the
reward classifier, pixel agents) verifies before using one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm

import envs
from envs.scripted import SUCCESS_FLOOR, ScriptedExpert

ENVS = {"lift": "Lift", "can": "PickPlaceCan"}
LEVELS = ("expert", "mixed")
KINDS = ("expert", "noisy", "cut-short")


@dataclass(frozen=True)
class Recipe:
    expert_noise_std: float
    """Action noise of the expert and cut-short episodes."""
    noisy_fraction: float
    noisy_noise_std: float
    cut_short_fraction: float


RECIPES = {
    "expert": Recipe(expert_noise_std=0.05, noisy_fraction=0.1, noisy_noise_std=0.6, cut_short_fraction=0.1),
    "mixed": Recipe(expert_noise_std=0.2, noisy_fraction=0.4, noisy_noise_std=0.6, cut_short_fraction=0.3),
}


@dataclass
class DemoConfig:
    env: str = "lift"
    level: str = "expert"
    episodes: int = 50
    seed: int = 0
    image_size: int = 84
    """Height and width of both cameras (``env=lift-pixels`` uses 84)."""
    dataset_id: str | None = None
    """Default: ``o2o/<env>/<level>-v0``."""
    progress: bool = True


@dataclass(frozen=True)
class EpisodePlan:
    kind: str
    noise_std: float
    reset_seed: int
    cut_fraction: float
    """cut-short only: the share of the attempt's steps that is kept."""


def pixel_env_config(env: str, image_size: int) -> envs.EnvConfig:
    """The env the demos are recorded in: ``env=<env>`` with both cameras on (as ``lift-pixels``)."""
    return envs.EnvConfig(
        name=f"{env}-pixels",
        id=ENVS[env],
        family="robosuite",
        score_name=None,
        obs_mode="pixels",
        image_size=image_size,
    )


def _check_config(cfg: DemoConfig) -> None:
    if cfg.env not in ENVS:
        raise ValueError(
            f"generate: env={cfg.env!r} has no scripted demonstrations; choose one of {sorted(ENVS)}"
        )
    if cfg.level not in LEVELS:
        raise ValueError(f"generate: level={cfg.level!r} is not one of {list(LEVELS)} for env={cfg.env}")
    if cfg.episodes < 1:
        raise ValueError(f"generate: episodes={cfg.episodes} must be at least 1")
    if cfg.image_size < 8:
        raise ValueError(f"generate: image_size={cfg.image_size} must be at least 8")


def plan_episodes(recipe: Recipe, episodes: int, seed: int) -> list[EpisodePlan]:
    """Each episode's kind, noise, reset seed and cut point, drawn before any rollout."""
    rng = np.random.default_rng(seed)
    noisy = round(recipe.noisy_fraction * episodes)
    cut = min(round(recipe.cut_short_fraction * episodes), episodes - noisy)
    kinds = rng.permutation(["expert"] * (episodes - noisy - cut) + ["noisy"] * noisy + ["cut-short"] * cut)
    fractions = rng.uniform(0.5, 1.0, episodes)
    return [
        EpisodePlan(
            kind=str(kind),
            noise_std=recipe.noisy_noise_std if kind == "noisy" else recipe.expert_noise_std,
            reset_seed=seed * 1_000_000 + i,
            cut_fraction=float(fractions[i]),
        )
        for i, kind in enumerate(kinds)
    ]


def _observation(env: gym.Env, pixel_obs: dict) -> dict[str, np.ndarray]:
    """The pixel env's frames plus the full state vector of the state env (RobosuiteEnv's layout)."""
    suite_obs = env.unwrapped.suite.observation_spec()  # the step's cached observables, no re-render
    state = np.concatenate([suite_obs["object-state"], suite_obs["robot0_proprio-state"]])
    return {"state": state, **{camera: pixel_obs[camera] for camera in env.unwrapped.cameras}}


def record_episode(env: gym.Env, plan: EpisodePlan, episode_id: int):
    """Roll the planned attempt out and return its ``EpisodeBuffer`` (cut if the plan says so)."""
    from minari.data_collector import EpisodeBuffer

    expert = ScriptedExpert(env, plan.noise_std)
    obs, _ = env.reset(seed=plan.reset_seed)
    expert.reset(plan.reset_seed)
    observations = [_observation(env, obs)]
    actions, rewards, terminations, truncations, success = [], [], [], [], [False]
    done = False
    while not done:
        action = expert.act()
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(_observation(env, obs))
        actions.append(action)
        rewards.append(float(reward))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated))
        success.append(bool(info["success"]))
        done = terminated or truncated
    if plan.kind == "cut-short" and len(actions) > 1:
        keep = min(max(1, math.floor(plan.cut_fraction * len(actions))), len(actions) - 1)
        observations, success = observations[: keep + 1], success[: keep + 1]
        actions, rewards = actions[:keep], rewards[:keep]
        terminations, truncations = [False] * keep, [False] * (keep - 1) + [True]
    return EpisodeBuffer(
        id=episode_id,
        seed=plan.reset_seed,
        observations={key: np.stack([o[key] for o in observations]) for key in observations[0]},
        actions=np.stack(actions),
        rewards=rewards,
        terminations=terminations,
        truncations=truncations,
        infos={"success": np.asarray(success, dtype=bool)},
    )


def generate_demos(cfg: DemoConfig) -> str:
    """Record the demonstrations into the local Minari store; returns the dataset id."""
    import minari

    _check_config(cfg)
    dataset_id = cfg.dataset_id or f"o2o/{cfg.env}/{cfg.level}-v0"
    if dataset_id in minari.list_local_datasets():
        raise ValueError(
            f"generate: dataset {dataset_id} already exists in {minari.storage.get_dataset_path()}; "
            "choose another dataset_id or delete it first"
        )
    recipe = RECIPES[cfg.level]
    plans = plan_episodes(recipe, cfg.episodes, cfg.seed)
    env = envs.make(pixel_env_config(cfg.env, cfg.image_size))
    first = _observation(env, env.reset(seed=plans[0].reset_seed)[0])
    observation_space = gym.spaces.Dict(
        {
            key: gym.spaces.Box(0, 255, value.shape, np.uint8)
            if value.dtype == np.uint8
            else gym.spaces.Box(-np.inf, np.inf, value.shape, np.float64)
            for key, value in first.items()
        }
    )
    outcomes: list[dict] = []

    def episodes() -> Iterator:
        bar = tqdm(plans, disable=not cfg.progress, desc=dataset_id, unit="episode")
        for i, plan in enumerate(bar):
            episode = record_episode(env, plan, i)
            outcomes.append(
                {
                    "kind": plan.kind,
                    "noise_std": plan.noise_std,
                    "success": bool(episode.infos["success"][-1]),
                }
            )
            bar.set_postfix(successes=sum(o["success"] for o in outcomes))
            yield episode

    command = (
        f"python -m rl.data generate env={cfg.env} level={cfg.level} episodes={cfg.episodes} "
        f"seed={cfg.seed} image_size={cfg.image_size}"
    )
    try:
        with warnings.catch_warnings():
            # robosuite tasks are not Gymnasium-registered, so the dataset has no env spec (the
            # metadata names the task instead); minari warns about that on every creation.
            warnings.filterwarnings("ignore", message="`eval_env` is set to None|env_spec is None")
            dataset = minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=episodes(),  # written one episode at a time: only one episode's frames in memory
                observation_space=observation_space,
                action_space=env.action_space,
                algorithm_name=f"o2o scripted waypoint expert ({cfg.level})",
                author="o2o",
                author_email="o2o@users.noreply.github.com",
                code_permalink="rl/generate/demos.py",
                description=f"Scripted {cfg.level} demonstrations on robosuite {ENVS[cfg.env]} with "
                f"{cfg.image_size}x{cfg.image_size} agentview and eye-in-hand frames; made by '{command}'",
                data_format="hdf5",
                jpeg_encoding=False,
            )
        dataset.storage.update_episode_metadata(outcomes)
        dataset.storage.update_metadata(_metadata(cfg, recipe, outcomes, env, first, command))
    except BaseException:
        if dataset_id in minari.list_local_datasets():
            minari.delete_dataset(dataset_id)
        raise
    finally:
        env.close()
    return dataset_id


def _metadata(cfg: DemoConfig, recipe: Recipe, outcomes: list[dict], env: gym.Env, first: dict, command: str):
    import robosuite

    kinds = {}
    for kind in KINDS:
        mine = [o["success"] for o in outcomes if o["kind"] == kind]
        kinds[kind] = {"episodes": len(mine), "successes": int(sum(mine))}
    expert = kinds["expert"]
    object_dim = int(env.unwrapped.suite.observation_spec()["object-state"].shape[0])
    return {
        "env": cfg.env,
        "robosuite_task": ENVS[cfg.env],
        "level": cfg.level,
        "seed": cfg.seed,
        "recipe": asdict(recipe),
        "episode_kinds": kinds,
        "success_rate": float(np.mean([o["success"] for o in outcomes])),
        "expert_success_rate": expert["successes"] / expert["episodes"] if expert["episodes"] else None,
        "success_floor": SUCCESS_FLOOR[ENVS[cfg.env]],
        "cameras": list(env.unwrapped.cameras),
        "image_size": cfg.image_size,
        "image_convention": robosuite.macros.IMAGE_CONVENTION,
        "state_layout": {"object_state_dim": object_dim, "state_dim": int(first["state"].shape[0])},
        "command": command,
    }


def open_dataset(dataset: str):
    """A Minari dataset by id (local store) or by its directory (the one holding ``data/``)."""
    import minari

    path = Path(dataset)
    if (path / "data").is_dir():
        return minari.MinariDataset(path / "data")
    if dataset in minari.list_local_datasets():
        return minari.load_dataset(dataset)
    raise ValueError(
        f"demo dataset {dataset}: neither a dataset directory nor in the local Minari store "
        f"({minari.storage.get_dataset_path()}); make it with 'python -m rl.data generate env=lift level=expert'"
    )


def check_demo_dataset(dataset: str, need_success: bool, action_dim: int):
    """Refuse a demo dataset a consumer cannot use, in one line naming the dataset and the field.

    Checks: dict observations with a ``state`` vector; ``actions`` of ``action_dim`` numbers within
    [-1, 1] (declared and stored); with ``need_success`` (a success-based preset: the reward
    classifier, success-rate BC), an ``infos/success`` flag for every observation of every episode.
    Returns the opened ``MinariDataset``.
    """
    ds = open_dataset(dataset)
    if not isinstance(ds.observation_space, gym.spaces.Dict) or "state" not in ds.observation_space.spaces:
        raise ValueError(f"demo dataset {dataset}: 'observations' must be a dict with a 'state' vector")
    declared = ds.action_space.shape
    if declared != (action_dim,):
        raise ValueError(f"demo dataset {dataset}: 'actions' have shape {declared}, expected ({action_dim},)")
    for episode in ds.iterate_episodes():
        where = f"demo dataset {dataset}: episode {episode.id}"
        actions = np.asarray(episode.actions)
        if actions.shape[1:] != (action_dim,):
            raise ValueError(f"{where}: 'actions' have shape {actions.shape[1:]}, expected ({action_dim},)")
        if np.abs(actions).max(initial=0.0) > 1.0 + 1e-6:
            raise ValueError(f"{where}: 'actions' exceed [-1, 1]")
        if need_success:
            success = (episode.infos or {}).get("success")
            if success is None:
                raise ValueError(f"{where}: no 'infos/success' flags, which a success-based preset needs")
            if len(success) != len(episode.rewards) + 1:
                raise ValueError(
                    f"{where}: 'infos/success' has {len(success)} flags for {len(episode.rewards) + 1} observations"
                )
    return ds
