"""Datasets made the D4RL way, here: ``python -m rl.data generate env=hopper level=medium``.

Levels (D4RL's recipe, Fu et al. 2020; spec peers_and_datasets.md Part C):
- ``random``: a uniformly random policy;
- ``medium``: a SAC policy stopped at about one third of the expert's return;
- ``expert``: the best SAC policy trained within the documented budget;
- ``medium-expert``: ``size`` steps of medium followed by ``size`` steps of expert;
- ``medium-replay``: every transition of the behaviour policies' SAC training run up to the medium
  checkpoint, in the order it was collected, read from that run's replay buffer (the run's
  ``last.pt`` named by ``behaviour/<env>-medium-replay.json``). Its size is fixed by the recipe
  (the medium checkpoint's env step), not by ``size``.
The behaviour policies are small actor-only files in ``rl/data/behaviour/`` (see its README for the
command and seed that trained each). Rollouts use their stochastic actions, as D4RL's did.

The result is a real Minari dataset, written through minari's own ``DataCollector``, with
``ref_min_score`` = mean return of the uniformly random policy and ``ref_max_score`` = mean return
of the expert policy in its metadata, so ``minari.get_normalized_score`` works on it. Everything is
seeded: the same command gives the same dataset on the same machine.

The reference scores are pinned, as D4RL pinned its ``REF_MIN_SCORE``/``REF_MAX_SCORE``: ``python -m
rl.data reference env=hopper`` measures them once (seeded episodes of each policy) and writes them
to ``behaviour/reference_scores.json`` with the hash of the expert file they were measured with;
``generate`` copies them from there and refuses if the expert changed since. Measuring them at
every generation, as the first version did, gave a different scale on each machine: seeded rollouts
of the same policy diverge across CPUs (float kernels differ, MuJoCo is chaotic), and over 20
episodes the Walker2d expert's mean came out 2,499 on one machine and 2,796 on the next, so the same
return scored 10% differently. With the references pinned, a normalised score means the same thing
everywhere; only the dataset's own transitions still differ slightly from machine to machine.

Rollouts run torch single-threaded: one observation at a time gains nothing from threads, and on a
shared 2-core machine two threads per forward made a 100k-step medium dataset take 8.7 min instead
of ~50 s.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

import envs
from rl.nets import TanhGaussianActor

BEHAVIOUR_DIR = Path(__file__).parents[1] / "data" / "behaviour"
LEVELS = ("random", "medium", "expert", "medium-expert", "medium-replay")
ENVS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5"}
REFERENCE_FILE = "reference_scores.json"


@dataclass
class GenerateConfig:
    env: str = "hopper"
    level: str = "medium"
    size: int = 1_000_000
    """Env steps to record (per part for medium-expert). D4RL used 1M."""
    seed: int = 0
    dataset_id: str | None = None
    """Default: ``o2o/<env>/<level>-v0``."""
    progress: bool = True


@dataclass
class ReferenceConfig:
    env: str = "hopper"
    episodes: int = 20
    """Seeded episodes behind each reference score (Minari uses 100)."""
    seed: int = 0


class Policy:
    """A behaviour policy: ``act(obs) -> action`` in [-1, 1], seeded."""

    def __init__(self, actor: TanhGaussianActor | None, action_dim: int, seed: int) -> None:
        self.actor, self.action_dim = actor, action_dim
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.actor is None:
            return self.rng.uniform(-1.0, 1.0, self.action_dim).astype(np.float32)
        with torch.no_grad():
            obs_row = torch.as_tensor(obs, dtype=torch.float32)[None]
            return self.actor.sample(obs_row, self.generator)[0].numpy()


def export_policy(agent_checkpoint: Path, out: Path) -> None:
    """Keep only the actor of a SAC checkpoint (a few hundred KB) as a behaviour policy.

    Takes an agent checkpoint (``checkpoints/agent_*.pt``) or a run's resume checkpoint
    (``checkpoints/last.pt``, whose agent is the run's agent at its last saved step).
    """
    from rl.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(agent_checkpoint)
    if payload.get("kind") == "agent":
        agent_config = payload["agent_config"]
    elif payload.get("kind") == "run":
        agent_config = payload["config"]["agent"]
    else:
        agent_config = None
    if agent_config is None or payload["agent"]["agent"] != "sac":
        raise ValueError(
            f"{agent_checkpoint}: need a SAC checkpoint (checkpoints/agent_*.pt or last.pt of a sac run)"
        )
    agent = payload["agent"]
    save_checkpoint(
        out,
        {
            "kind": "behaviour_policy",
            "obs_dim": agent["obs_dim"],
            "action_dim": agent["action_dim"],
            "actor_hidden": list(agent_config["actor_hidden"]),
            "actor_layer_norm": bool(agent_config["actor_layer_norm"]),
            "actor": agent["state"]["actor"],
            "source": str(agent_checkpoint),
        },
    )


def load_policy(env: str, name: str, seed: int) -> Policy:
    from rl.checkpoint import load_checkpoint

    path = BEHAVIOUR_DIR / f"{env}-{name}.pt"
    if not path.is_file():
        raise ValueError(
            f"generate: no {name} behaviour policy for {env} ({path}); see rl/data/behaviour/README.md"
        )
    payload = load_checkpoint(path)
    actor = TanhGaussianActor(
        payload["obs_dim"], payload["action_dim"], payload["actor_hidden"], payload["actor_layer_norm"]
    )
    actor.load_state_dict(payload["actor"])
    return Policy(actor.eval(), payload["action_dim"], seed)


@contextmanager
def single_threaded() -> Iterator[None]:
    """Torch on one thread for the duration (rollouts of one observation at a time; module docstring)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _reference_table() -> dict:
    path = BEHAVIOUR_DIR / REFERENCE_FILE
    if not path.is_file():
        return {}
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(table, dict):
        raise ValueError(f"{path}: expected an object keyed by env, got {type(table).__name__}")
    return table


def _check_env(command: str, env: str) -> None:
    if env not in ENVS:
        raise ValueError(f"{command}: env={env!r} is not one of {sorted(ENVS)}")


def _env_config(env: str) -> envs.EnvConfig:
    return envs.EnvConfig(name=env, id=ENVS[env], score_name=env)


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _file_hash(path: Path) -> str:
    return file_digest(path)[:16]


def measure_reference_scores(cfg: ReferenceConfig) -> dict:
    """Measure an env's reference scores and pin them in ``behaviour/reference_scores.json``.

    The entry keeps the measurement's settings and the expert file's hash, so ``generate`` can tell
    when the expert was replaced after the scores were pinned.
    """
    _check_env("reference", cfg.env)
    if cfg.episodes < 1:
        raise ValueError(f"reference: episodes={cfg.episodes} must be at least 1")
    with single_threaded():
        env_cfg = _env_config(cfg.env)
        action_dim = envs.make(env_cfg).action_space.shape[0]
        expert = load_policy(cfg.env, "expert", cfg.seed + 3)
        random_policy = Policy(None, action_dim, cfg.seed + 1)
        ref_min = mean_return(envs.make(env_cfg), random_policy, cfg.episodes, 1_000_000)
        ref_max = mean_return(envs.make(env_cfg), expert, cfg.episodes, 2_000_000)
        if not ref_max > ref_min:
            raise ValueError(
                f"reference: the {cfg.env} expert's mean return {ref_max:.1f} is not above the random "
                f"policy's {ref_min:.1f}; nothing was pinned (is {cfg.env}-expert.pt a trained policy?)"
            )
        entry = {
            "ref_min_score": ref_min,
            "ref_max_score": ref_max,
            "episodes": cfg.episodes,
            "seed": cfg.seed,
            "expert_sha256": _file_hash(BEHAVIOUR_DIR / f"{cfg.env}-expert.pt"),
            "command": f"python -m rl.data reference env={cfg.env} episodes={cfg.episodes} seed={cfg.seed}",
        }
    table = _reference_table()
    table[cfg.env] = entry
    (BEHAVIOUR_DIR / REFERENCE_FILE).write_text(json.dumps(dict(sorted(table.items())), indent=2) + "\n")
    return entry


def pinned_reference_scores(env: str) -> dict:
    """The env's pinned reference scores; refused if missing or measured with another expert."""
    table = _reference_table()
    if env not in table:
        raise ValueError(
            f"generate: no pinned reference scores for {env} in {BEHAVIOUR_DIR / REFERENCE_FILE}; "
            f"measure them with 'python -m rl.data reference env={env}'"
        )
    entry = table[env]
    missing = {"ref_min_score", "ref_max_score", "expert_sha256"} - set(entry)
    if missing:
        raise ValueError(f"{BEHAVIOUR_DIR / REFERENCE_FILE}: entry {env!r} lacks {sorted(missing)}")
    expert_path = BEHAVIOUR_DIR / f"{env}-expert.pt"
    if not expert_path.is_file():
        raise ValueError(
            f"generate: no expert behaviour policy for {env} ({expert_path}); see rl/data/behaviour/README.md"
        )
    if _file_hash(expert_path) != entry["expert_sha256"]:
        raise ValueError(
            f"generate: {expert_path} is not the expert the pinned reference scores of {env} were "
            f"measured with; measure them again with 'python -m rl.data reference env={env}'"
        )
    return entry


class _StopAt(gym.Wrapper):
    """Truncates the episode in progress when the recording reaches its size, so none is cut silently."""

    def __init__(self, env: gym.Env, total: int) -> None:
        super().__init__(env)
        self.remaining = total

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.remaining -= 1
        return obs, reward, terminated, truncated or self.remaining == 0, info


def mean_return(env: gym.Env, policy: Policy, episodes: int, seed: int) -> float:
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def generate(cfg: GenerateConfig) -> str:
    """Record the dataset; returns its Minari id."""
    with single_threaded():
        return _generate(cfg)


def read_medium_replay(path: Path) -> list:
    """The episodes of an exported medium-replay source (``experiments/behaviour/export_medium_replay.py``
    describes the layout), as Minari episode buffers in collection order. An episode ends where a
    row's next observation is not the following row's; it is a termination if the buffer said so and
    a truncation otherwise (time limit, or the episode in progress when the run was resumed)."""
    import h5py
    from minari.data_collector import EpisodeBuffer

    with h5py.File(path, "r") as f:
        obs, action = f["observations"][:], f["actions"][:]
        reward, terminated = f["rewards"][:], f["terminals"][:]
        ends, final_obs = f["episode_ends"][:], f["final_observations"][:]
    episodes, start = [], 0
    for i, end in enumerate(ends.tolist()):
        stop = end + 1
        episodes.append(
            EpisodeBuffer(
                id=i,
                observations=np.concatenate([obs[start:stop], final_obs[i : i + 1]]),
                actions=action[start:stop],
                rewards=reward[start:stop].tolist(),
                terminations=[False] * (stop - start - 1) + [bool(terminated[end])],
                truncations=[False] * (stop - start - 1) + [not terminated[end]],
                infos={},
            )
        )
        start = stop
    return episodes


def episodes_digest(episodes: list) -> str:
    """A sha256 over every episode's arrays: equal digests mean the same dataset content."""
    digest = hashlib.sha256()
    for episode in episodes:
        for column in (
            episode.observations,
            episode.actions,
            episode.rewards,
            episode.terminations,
            episode.truncations,
        ):
            digest.update(np.ascontiguousarray(np.asarray(column)).tobytes())
    return digest.hexdigest()


def export_medium_replay(run_checkpoint: Path, env: str, rows: int, out_dir: Path | None = None) -> Path:
    """Export the first ``rows`` transitions of a behaviour run's replay buffer (its ``last.pt``) as
    ``behaviour/<env>-medium-replay.hdf5``, and its manifest ``<env>-medium-replay.json`` with the
    file's sha256 and the sha256 of the episodes ``generate level=medium-replay`` builds from it, so
    a fresh clone regenerates the dataset without the run's state and ``generate`` verifies both.

    Layout: D4RL's keys for those rows in collection order (``observations``, ``actions``,
    ``rewards`` as the env gave them, ``terminals``) plus ``episode_ends`` (rows whose next
    observation is not the following row's observation) and ``final_observations`` (the next
    observation of each such row). ``next_observations`` are not stored: inside an episode they are
    the following row's observation, and storing them would double the file.
    """
    import h5py

    run = torch.load(run_checkpoint, map_location="cpu", weights_only=False)
    buffer, env_cfg = run["online_buffer"], run["config"]["env"]
    if buffer["size"] < rows or buffer["size"] == buffer["capacity"]:
        raise ValueError(
            f"export: {run_checkpoint} holds {buffer['size']} rows of capacity {buffer['capacity']}; "
            f"medium-replay needs the first {rows} in collection order"
        )
    obs = buffer["obs"]["_"][:rows].numpy()
    next_obs = buffer["next_obs"]["_"][:rows].numpy()
    # The buffer stores reward * scale + bias (ReplayBuffer.add); datasets hold the env's reward.
    reward = (buffer["reward"][:rows].numpy().reshape(-1) - env_cfg["reward_bias"]) / env_cfg["reward_scale"]
    ends = np.array([*np.flatnonzero(np.any(next_obs[:-1] != obs[1:], axis=1)).tolist(), rows - 1])
    out_dir = BEHAVIOUR_DIR if out_dir is None else out_dir
    path = out_dir / f"{env}-medium-replay.hdf5"
    with h5py.File(path, "w", track_order=True) as f:
        compress = {"compression": "gzip", "compression_opts": 9, "shuffle": True}
        f.create_dataset("observations", data=obs, **compress)
        f.create_dataset("actions", data=buffer["action"][:rows].numpy(), **compress)
        f.create_dataset("rewards", data=reward.astype(np.float32), **compress)
        f.create_dataset("terminals", data=buffer["terminated"][:rows].numpy().reshape(-1) > 0, **compress)
        f.create_dataset("episode_ends", data=ends.astype(np.int64), **compress)
        f.create_dataset("final_observations", data=next_obs[ends], **compress)
        f.attrs["source"] = f"{run_checkpoint} (first {rows} rows of its replay buffer)"
    manifest = {
        "source_file": path.name,
        "source_sha256": file_digest(path),
        "episodes_sha256": episodes_digest(read_medium_replay(path)),
        "env_steps": rows,
        "exported_from": f"{run_checkpoint} (first {rows} rows of its replay buffer)",
        "command": f"python -m rl.data export-medium-replay {run_checkpoint} {env} {rows}",
    }
    (out_dir / f"{env}-medium-replay.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def replay_episodes(env: str) -> tuple[list, str]:
    """The behaviour run's transitions up to the medium checkpoint, read from the exported source
    named by ``behaviour/<env>-medium-replay.json`` and checked against both of its checksums."""
    manifest_path = BEHAVIOUR_DIR / f"{env}-medium-replay.json"
    if not manifest_path.is_file():
        raise ValueError(
            f"generate: no medium-replay source for {env} ({manifest_path}); see rl/data/behaviour/README.md"
        )
    manifest = json.loads(manifest_path.read_text())
    source = BEHAVIOUR_DIR / manifest["source_file"]
    if not source.is_file():
        raise ValueError(f"generate: medium-replay for {env} reads {source}, which is missing")
    if file_digest(source) != manifest["source_sha256"]:
        raise ValueError(f"generate: {source} does not match the sha256 recorded in {manifest_path.name}")
    episodes = read_medium_replay(source)
    if episodes_digest(episodes) != manifest["episodes_sha256"]:
        raise ValueError(f"generate: the episodes read from {source} differ from those recorded at export")
    return episodes, manifest["exported_from"]


def _generate(cfg: GenerateConfig) -> str:
    import minari
    from minari import DataCollector

    _check_env("generate", cfg.env)
    if cfg.level not in LEVELS:
        raise ValueError(f"generate: level={cfg.level!r} is not one of {list(LEVELS)}")
    dataset_id = cfg.dataset_id or f"o2o/{cfg.env}/{cfg.level}-v0"
    if dataset_id in minari.list_local_datasets():
        raise ValueError(
            f"generate: dataset {dataset_id} already exists in {minari.storage.get_dataset_path()}; "
            "choose another dataset_id or delete it first"
        )
    env_cfg = _env_config(cfg.env)
    action_dim = envs.make(env_cfg).action_space.shape[0]
    reference = pinned_reference_scores(cfg.env)

    metadata = dict(
        dataset_id=dataset_id,
        eval_env=ENVS[cfg.env],
        algorithm_name=f"o2o SAC behaviour policy ({cfg.level})"
        if cfg.level != "random"
        else "uniform random",
        author="o2o",
        author_email="o2o@users.noreply.github.com",
        code_permalink="rl/generate/locomotion.py",
        ref_min_score=reference["ref_min_score"],
        ref_max_score=reference["ref_max_score"],
    )
    if cfg.level == "medium-replay":
        episodes, source = replay_episodes(cfg.env)
        minari.create_dataset_from_buffers(
            buffer=episodes,
            env=ENVS[cfg.env],
            description=f"D4RL-recipe medium-replay data on {ENVS[cfg.env]}: the SAC training run's "
            f"transitions up to the medium checkpoint, from {source}; made by "
            f"'python -m rl.data generate env={cfg.env} level=medium-replay seed={cfg.seed}'",
            **metadata,
        )
        return dataset_id
    parts = {
        "random": [Policy(None, action_dim, cfg.seed)],
        "medium": [load_policy(cfg.env, "medium", cfg.seed)],
        "expert": [load_policy(cfg.env, "expert", cfg.seed)],
        "medium-expert": [
            load_policy(cfg.env, "medium", cfg.seed),
            load_policy(cfg.env, "expert", cfg.seed + 1),
        ],
    }[cfg.level]
    total = cfg.size * len(parts)
    collector = DataCollector(_StopAt(envs.make(env_cfg), total))
    bar = tqdm(total=total, disable=not cfg.progress, desc=f"{dataset_id}", unit="step")
    # Every episode gets its own reset seed: the DataCollector draws a random one when given None.
    episode = 0
    obs, _ = collector.reset(seed=cfg.seed * 1_000_000)
    for policy in parts:
        for _ in range(cfg.size):
            obs, _, terminated, truncated, _ = collector.step(policy.act(obs))
            if terminated or truncated:
                episode += 1
                obs, _ = collector.reset(seed=cfg.seed * 1_000_000 + episode)
            bar.update(1)
        if not (terminated or truncated):  # the next part starts a fresh episode
            episode += 1
            obs, _ = collector.reset(seed=cfg.seed * 1_000_000 + episode)
    bar.close()
    collector.create_dataset(
        **metadata,
        description=f"D4RL-recipe {cfg.level} data on {ENVS[cfg.env]}: {total} steps, seed {cfg.seed}, "
        f"made by 'python -m rl.data generate env={cfg.env} level={cfg.level} size={cfg.size} seed={cfg.seed}'",
    )
    collector.close()
    return dataset_id


def parse_key_values(args: list[str], config_class: type) -> object:
    """``key=value`` arguments into a config dataclass; unknown keys and bad values fail by name."""
    known = {f.name: f for f in fields(config_class)}
    values = {}
    for arg in args:
        key, sep, raw = arg.partition("=")
        if not sep or key not in known:
            raise ValueError(f"unknown argument {arg!r}; expected key=value with key in {sorted(known)}")
        kind = known[key].type
        try:
            if "bool" in str(kind):
                if raw.lower() not in ("true", "false"):
                    raise ValueError(raw)
                values[key] = raw.lower() == "true"
            elif "int" in str(kind):
                values[key] = int(raw)
            elif "float" in str(kind):
                values[key] = float(raw)
            else:
                values[key] = raw
        except ValueError:
            raise ValueError(f"{key}={raw!r}: not a valid {kind}") from None
    return config_class(**values)
