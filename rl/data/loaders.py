"""Loaders from a source spec to a ``Dataset``, and the checks every dataset passes before training.

Source specs:
- ``minari:<dataset id>``: a dataset in the local Minari store (``MINARI_DATASETS_PATH`` or
  ``~/.minari/datasets``), read through minari's own API. Nothing is downloaded here: users with
  internet fetch datasets with ``minari download <id>`` first.
- ``d4rl:<path to .hdf5>``: a file in D4RL's key layout: ``observations``, ``actions``, ``rewards``,
  ``terminals``, ``timeouts`` and optionally ``next_observations``. Pixel data keeps the layout with
  ``observations`` (and ``next_observations``) as a group of one dataset per key, as Minari and
  ``real_robot.convert`` store a ``Dict`` observation: one per camera, uint8 ``(rows, H, W, C)``
  frames under the env's key for it (``agentview``; the bridge's ``front``), and
  ``observations/state`` a float ``(rows, D)`` vector.

Every error names the source and the field, so a bad file fails in one readable line.

``check_dataset`` also fits a dataset's observations to the env's where the data says how (see
``fit_observations``): the scripted demos record frames and the full state together, and serve both
``env=lift`` (state) and ``env=lift-pixels`` (cameras plus proprio).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gymnasium as gym
import numpy as np

from rl.data.dataset import Dataset, DatasetInfo, Observation

# Tanh-squashed policies have infinite log-density at |a| = 1; every official O2O code clips
# dataset actions to this bound before training (spec §7).
ACTION_CLIP = 1.0 - 1e-5
D4RL_REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


def load_dataset(spec: str) -> Dataset:
    """Load ``spec`` (``minari:<id>`` or ``d4rl:<path>``) into a Dataset.

    The file is read in a short-lived thread. Reading thousands of episodes through h5py makes
    hundreds of thousands of small C allocations; made by the main thread, they fragment glibc's
    main malloc arena, which the learner's tensors are allocated from afterwards, and every later
    ``malloc`` walks the fragments: IQL's update spent 12% of its time in ``_int_malloc`` after a
    walker2d-medium load against 0.6% without, 20-30% slower in all
    (``experiments/bench/process_state.py``). A new thread allocates from an arena of its own, and
    the arrays it returns are large enough to be mapped on their own, so the main arena stays clean.
    """
    scheme, sep, target = spec.partition(":")
    if not sep or not target:
        raise ValueError(f"dataset: {spec!r} is not '<source>:<id>' (sources: minari, d4rl)")
    readers = {"minari": load_minari, "d4rl": load_d4rl_hdf5}
    if scheme not in readers:
        raise ValueError(f"dataset: unknown source {scheme!r} in {spec!r} (sources: minari, d4rl)")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="o2o-dataset") as reader:
        return reader.submit(readers[scheme], target).result()


def load_minari(dataset_id: str) -> Dataset:
    import minari

    source = f"minari:{dataset_id}"
    local = minari.list_local_datasets()
    if dataset_id not in local:
        raise ValueError(
            f"dataset {source}: not in the local Minari store ({minari.storage.get_dataset_path()}); "
            f"fetch it with 'minari download {dataset_id}' or generate it with 'python -m rl.data generate'"
        )
    ds = minari.load_dataset(dataset_id)
    columns: dict[str, list] = {k: [] for k in ("obs", "next_obs", "act", "rew", "term", "trunc")}
    for episode in ds.iterate_episodes():
        steps = len(episode.rewards)
        obs = episode.observations
        columns["obs"].append(_slice_obs(obs, 0, steps))
        columns["next_obs"].append(_slice_obs(obs, 1, steps + 1))
        columns["act"].append(np.asarray(episode.actions))
        columns["rew"].append(np.asarray(episode.rewards))
        columns["term"].append(np.asarray(episode.terminations, dtype=bool))
        trunc = np.asarray(episode.truncations, dtype=bool).copy()
        # An episode recorded without a final flag (a dataset cut mid-episode) still ends here.
        if steps and not (trunc[-1] or columns["term"][-1][-1]):
            trunc[-1] = True
        columns["trunc"].append(trunc)
    if not columns["rew"]:
        raise ValueError(f"dataset {source}: holds no episodes")
    metadata = ds.storage.metadata
    env_spec = ds.env_spec
    extra = {"minari_version": str(ds.minari_version), "episodes": ds.total_episodes}
    if "state_layout" in metadata:  # the scripted demos' (rl/generate/demos.py)
        extra["state_layout"] = dict(metadata["state_layout"])
    info = DatasetInfo(
        source=source,
        env_id=env_spec.id if env_spec is not None else None,
        ref_min_score=_optional_float(metadata.get("ref_min_score")),
        ref_max_score=_optional_float(metadata.get("ref_max_score")),
        extra=extra,
    )
    return Dataset(
        observations=_concat_obs(columns["obs"]),
        actions=np.concatenate(columns["act"]).astype(np.float32),
        rewards=np.concatenate(columns["rew"]).astype(np.float32),
        next_observations=_concat_obs(columns["next_obs"]),
        terminated=np.concatenate(columns["term"]),
        truncated=np.concatenate(columns["trunc"]),
        info=info,
    )


def load_d4rl_hdf5(path: str | Path) -> Dataset:
    """Read a D4RL-layout hdf5 file.

    Without ``next_observations`` (D4RL's raw files), the next observation of row i is row i+1's
    observation within the same episode. The last row of an episode that ended by time-out has no
    recorded successor, so it is dropped and the row before it becomes the truncated end, which is
    what ``d4rl.qlearning_dataset`` does; a terminal row keeps its own observation as a placeholder
    (its target is never bootstrapped). ``info.extra['file_steps']`` keeps the file's row count.
    ``observations`` may be a group of per-key datasets (a ``Dict`` observation, module docstring).
    """
    import h5py

    path = Path(path)
    source = f"d4rl:{path}"
    if not path.is_file():
        raise ValueError(f"dataset {source}: no such file")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"dataset {source}: not a readable hdf5 file ({err})") from None
    with handle:
        missing = [k for k in D4RL_REQUIRED_KEYS if k not in handle]
        if missing:
            raise ValueError(
                f"dataset {source}: missing key(s) {missing}; a D4RL file has {list(D4RL_REQUIRED_KEYS)}"
            )
        data = {k: _read_hdf5(source, handle, k) for k in D4RL_REQUIRED_KEYS}
        next_obs = _read_hdf5(source, handle, "next_observations") if "next_observations" in handle else None
    n = len(data["rewards"])
    for key in D4RL_REQUIRED_KEYS:
        for name, column in _named_obs(key, data[key]):
            if len(column) != n:
                raise ValueError(f"dataset {source}: '{name}' has {len(column)} rows, 'rewards' has {n}")
    if data["actions"].ndim != 2:
        raise ValueError(f"dataset {source}: 'actions' must be 2-D (rows, features)")
    for name, column in _named_obs("observations", data["observations"]):
        if column.dtype != np.uint8 and column.ndim != 2:
            raise ValueError(f"dataset {source}: '{name}' must be 2-D (rows, features)")
        if column.dtype == np.uint8 and column.ndim != 4:
            raise ValueError(f"dataset {source}: '{name}' holds uint8 images, which must be (rows, H, W, C)")
    obs = _map_obs(data["observations"], _stored_dtype)
    terminals = data["terminals"].astype(bool).reshape(-1)
    timeouts = data["timeouts"].astype(bool).reshape(-1)
    keep = np.ones(n, dtype=bool)
    truncated = timeouts.copy()
    if next_obs is None:
        terminal_rows = np.flatnonzero(terminals)

        def successor(column: np.ndarray) -> np.ndarray:
            following = np.empty_like(column)
            following[:-1] = column[1:]
            following[-1] = column[-1]
            following[terminal_rows] = column[terminal_rows]
            return following

        next_obs = _map_obs(obs, successor)
        ends_without_successor = timeouts & ~terminals
        ends_without_successor[-1] |= not terminals[-1]  # a file that stops mid-episode
        keep = ~ends_without_successor
        previous = np.flatnonzero(ends_without_successor) - 1
        truncated = np.zeros(n, dtype=bool)
        truncated[previous[previous >= 0]] = True
    else:
        next_obs = _map_obs(next_obs, _stored_dtype)
        if _obs_shapes(next_obs) != _obs_shapes(obs):
            raise ValueError(
                f"dataset {source}: 'next_observations' shapes {_obs_shapes(next_obs)} != "
                f"observations {_obs_shapes(obs)}"
            )
    return Dataset(
        observations=_map_obs(obs, lambda column: column[keep]),
        actions=data["actions"].astype(np.float32)[keep],
        rewards=data["rewards"].astype(np.float32).reshape(-1)[keep],
        next_observations=_map_obs(next_obs, lambda column: column[keep]),
        terminated=terminals[keep],
        truncated=truncated[keep],
        info=DatasetInfo(source=source, extra={"file_steps": n, "dropped_rows": int((~keep).sum())}),
    )


def check_dataset(
    dataset: Dataset, observation_space: gym.Space, action_space: gym.spaces.Box, clip_actions: bool
) -> Dataset:
    """Refuse data the env cannot have produced; return it fitted to the env's observations
    (``fit_observations``) and with actions clipped for tanh policies.

    Checks: every column finite; observation and action shapes equal the env's (cameras and image
    sizes refused in one line naming both sides); actions within the env's [-1, 1] (beyond a 1e-4
    tolerance) unless ``clip_actions``.
    """
    dataset = fit_observations(dataset, observation_space)
    source = dataset.info.source
    for name, column in _named_columns(dataset):
        if np.issubdtype(column.dtype, np.floating) and not np.all(np.isfinite(column)):
            row = int(np.flatnonzero(~np.isfinite(column).reshape(len(column), -1).all(1))[0])
            raise ValueError(f"dataset {source}: '{name}' holds NaN or inf (first at row {row})")
    _check_obs_shape(source, dataset.observations, observation_space)
    if dataset.actions.shape[1:] != action_space.shape:
        raise ValueError(
            f"dataset {source}: 'actions' have shape {dataset.actions.shape[1:]}, the env's action space {action_space.shape}"
        )
    worst = float(np.abs(dataset.actions).max(initial=0.0))
    if worst > 1.0 + 1e-4 and not clip_actions:
        row = int(np.abs(dataset.actions).max(1).argmax())
        raise ValueError(
            f"dataset {source}: 'actions' exceed the env's bounds [-1, 1] (|a| = {worst:.3g} at row {row}); "
            "set dataset.clip_actions=true to clip them"
        )
    clipped = np.clip(dataset.actions, -ACTION_CLIP, ACTION_CLIP)
    return Dataset(
        observations=dataset.observations,
        actions=clipped,
        rewards=dataset.rewards,
        next_observations=dataset.next_observations,
        terminated=dataset.terminated,
        truncated=dataset.truncated,
        info=dataset.info,
    )


def fit_observations(dataset: Dataset, space: gym.Space) -> Dataset:
    """``dataset`` with its observations as the env observes them, where the data says how:

    - a flat ``Box`` env and ``Dict`` rows with a ``state`` vector of the env's size: that vector (the
      scripted demos record frames beside the state ``env=lift`` observes);
    - a ``Dict`` env: the env's keys, in its order; cameras the env does not observe are left out;
      a ``state`` the env observes shorter than the dataset's is the proprio part of the demos' full
      state when the dataset's ``state_layout`` says so (object state first, then proprio:
      ``env=lift-pixels`` observes proprio only);
    - anything else is returned unchanged, for ``check_dataset`` to compare and refuse.
    """
    obs = dataset.observations
    if not isinstance(obs, dict):
        return dataset
    if isinstance(space, gym.spaces.Box):
        if "state" not in obs or obs["state"].shape[1:] != space.shape:
            return dataset

        def fit(rows: Observation) -> Observation:
            return rows["state"]
    elif isinstance(space, gym.spaces.Dict) and set(space.spaces) <= set(obs):
        proprio = _proprio_part(dataset, space)

        def fit(rows: Observation) -> Observation:
            out = {key: rows[key] for key in space.spaces}
            if proprio is not None:
                out["state"] = rows["state"][:, proprio:]
            return out
    else:
        return dataset
    return Dataset(
        observations=fit(obs),
        actions=dataset.actions,
        rewards=dataset.rewards,
        next_observations=fit(dataset.next_observations),
        terminated=dataset.terminated,
        truncated=dataset.truncated,
        info=dataset.info,
    )


def _proprio_part(dataset: Dataset, space: gym.spaces.Dict) -> int | None:
    """Where the proprio part of the dataset's ``state`` starts, when the env observes only that part."""
    layout = dataset.info.extra.get("state_layout")
    sub = space.spaces.get("state")
    if layout is None or sub is None or len(sub.shape) != 1:
        return None
    stored = dataset.observations["state"].shape[1:]
    start = int(layout["object_state_dim"])
    if stored == (int(layout["state_dim"]),) and sub.shape == (stored[0] - start,):
        return start
    return None


def _check_obs_shape(source: str, obs: np.ndarray | dict, space: gym.Space) -> None:
    if isinstance(space, gym.spaces.Dict):
        _check_cameras(source, obs, space)
        if not isinstance(obs, dict) or set(obs) != set(space.spaces):
            got = sorted(obs) if isinstance(obs, dict) else "an array"
            raise ValueError(f"dataset {source}: observation keys {got} != the env's {sorted(space.spaces)}")
        for key, sub in space.spaces.items():
            if obs[key].shape[1:] != sub.shape:
                raise ValueError(
                    f"dataset {source}: 'observations/{key}' shape {obs[key].shape[1:]} != env {sub.shape}"
                )
        return
    if isinstance(obs, dict) or obs.shape[1:] != space.shape:
        got = "a dict" if isinstance(obs, dict) else obs.shape[1:]
        raise ValueError(
            f"dataset {source}: 'observations' have shape {got}, the env's observation space {space.shape}"
        )


def _check_cameras(source: str, obs: np.ndarray | dict, space: gym.spaces.Dict) -> None:
    """Refuse, in one line naming both, a dataset whose camera images are not the env's."""
    wanted = {key: sub.shape for key, sub in space.spaces.items() if sub.dtype == np.uint8}
    if not wanted:
        return
    held = {}
    if isinstance(obs, dict):
        held = {key: column.shape[1:] for key, column in obs.items() if column.dtype == np.uint8}
    if any(held.get(key) != shape for key, shape in wanted.items()):
        raise ValueError(
            f"dataset {source}: cameras {_describe(held)} do not match the env's {_describe(wanted)}"
        )


def _describe(cameras: dict[str, tuple[int, ...]]) -> str:
    """``agentview 84x84x3, robot0_eye_in_hand 84x84x3`` (``none`` without cameras)."""
    if not cameras:
        return "none"
    return ", ".join(f"{key} {'x'.join(str(d) for d in shape)}" for key, shape in cameras.items())


def _named_columns(dataset: Dataset) -> list[tuple[str, np.ndarray]]:
    named = [("actions", dataset.actions), ("rewards", dataset.rewards)]
    for name in ("observations", "next_observations"):
        named += _named_obs(name, getattr(dataset, name))
    return named


def _read_hdf5(source: str, handle, key: str) -> np.ndarray | dict[str, np.ndarray]:
    """One D4RL key: a dataset, or (observations) a group of one dataset per observation key."""
    import h5py

    item = handle[key]
    if not isinstance(item, h5py.Group):
        return np.asarray(item)
    columns = {}
    for name, value in item.items():
        if not isinstance(value, h5py.Dataset):
            raise ValueError(f"dataset {source}: '{key}/{name}' is a group; observation keys hold arrays")
        columns[name] = np.asarray(value)
    if not columns:
        raise ValueError(f"dataset {source}: the group '{key}' is empty")
    return columns


def _map_obs(obs: Observation, fn) -> Observation:
    if isinstance(obs, dict):
        return {key: fn(column) for key, column in obs.items()}
    return fn(obs)


def _named_obs(name: str, obs: Observation) -> list[tuple[str, np.ndarray]]:
    if isinstance(obs, dict):
        return [(f"{name}/{key}", column) for key, column in obs.items()]
    return [(name, obs)]


def _obs_shapes(obs: Observation) -> dict[str, tuple[int, ...]] | tuple[int, ...]:
    if isinstance(obs, dict):
        return {key: column.shape for key, column in obs.items()}
    return obs.shape


def _stored_dtype(column: np.ndarray) -> np.ndarray:
    """Frames stay uint8; everything else is float32."""
    return column if column.dtype == np.uint8 else column.astype(np.float32)


def _slice_obs(obs: np.ndarray | dict, start: int, stop: int) -> np.ndarray | dict:
    if isinstance(obs, dict):
        return {k: _slice_obs(v, start, stop) for k, v in obs.items()}
    return np.asarray(obs[start:stop])


def _concat_obs(parts: list) -> np.ndarray | dict:
    if isinstance(parts[0], dict):
        return {k: _concat_obs([p[k] for p in parts]) for k in parts[0]}
    return _stored_dtype(np.concatenate(parts))


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)
