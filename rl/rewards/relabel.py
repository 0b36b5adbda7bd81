"""Relabelling: recompute rewards, successes and terminations of stored rows with a reward model.

``label_rows`` is the one code path: the dataset relabel here (``python -m rl.rewards relabel``) and
the online buffer's relabel (``rl/buffers``, ``rl/loops/labelling.py``) both hand it the rows' frames
and named state and get ``Labels`` back, so a buffer and a dataset labelled by the same model agree
row for row. ``relabel_dataset`` writes a NEW Minari dataset (never the input) whose metadata records
the model's hash (and its prompt's, for VLM models).

What a relabelled dataset holds: the input's observations, actions and truncations unchanged;
``rewards`` and ``terminations`` from the model (``Labels.reward`` and ``Labels.done`` of each row's
next observation); per observation, aligned with Minari's ``infos`` (entry ``t + 1`` belongs to the row
``t`` that reached it, entry 0 to the reset): ``success`` (the model's), every ``Labels.info`` entry
(e.g. ``p_success``), and the input's own ``env_success`` flags and ``env_reward`` (NaN at the reset), so
nothing the input recorded is lost. The reset observation is no row's next state and is not labelled
(``success`` False). A model success mid-episode sets that row's termination and leaves the rows after
it in place: every stored transition keeps a reward; a loader then sees them as a new episode.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rl.rewards.base import LabelInput, Labels, RewardModel

DATASET_ID = re.compile(r"^([\w-]+/)*[\w-]+-v\d+$")
"""Minari's ``[namespace/]name-v<version>``."""


def label_rows(
    model: RewardModel,
    frames: Mapping[str, np.ndarray | torch.Tensor],
    state: Mapping[str, np.ndarray | torch.Tensor],
    episode: np.ndarray | torch.Tensor,
    step: np.ndarray | torch.Tensor,
    batch_size: int,
) -> Labels:
    """Label ``N`` rows with ``model``, ``batch_size`` rows per ``model.label`` call, in row order.

    ``frames``: camera -> ``(N, H, W, 3)`` uint8 (``<camera>_depth`` -> ``(N, H, W)`` float32) of each
    row's next observation, at least ``model.cameras``; ``state``: name -> ``(N, k)``, at least
    ``model.state_keys``; ``episode``, ``step``: ``(N,)`` int64. Extra entries are not passed on. Returns
    the rows' ``Labels`` (CPU tensors), or raises what ``model.label`` raises (``RewardModelError``:
    none of the rows is labelled, so the caller keeps them all pending).
    """
    missing = require_inputs(model, frames.keys(), state.keys())
    if missing:
        raise ValueError(f"label_rows: {missing}")
    n = len(episode)
    episode = torch.as_tensor(np.asarray(episode), dtype=torch.int64)
    step = torch.as_tensor(np.asarray(step), dtype=torch.int64)
    parts: list[Labels] = []
    for start in range(0, n, batch_size):
        rows = slice(start, start + batch_size)
        batch = LabelInput(
            frames={k: torch.as_tensor(np.asarray(frames[k][rows])) for k in _frame_keys(model, frames)},
            state={
                k: torch.as_tensor(np.asarray(state[k][rows]), dtype=torch.float32) for k in model.state_keys
            },
            episode=episode[rows],
            step=step[rows],
        )
        parts.append(model.label(batch))
    if not parts:
        return Labels(torch.zeros(0), torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.bool))
    return Labels(
        reward=torch.cat([p.reward.cpu().float() for p in parts]),
        success=torch.cat([p.success.cpu().bool() for p in parts]),
        done=torch.cat([p.done.cpu().bool() for p in parts]),
        info={k: torch.cat([p.info[k].cpu() for p in parts]) for k in parts[0].info},
    )


def _frame_keys(model: RewardModel, frames: Mapping[str, Any]) -> list[str]:
    """The model's cameras, plus their depth images when the rows carry them."""
    return [*model.cameras, *(f"{c}_depth" for c in model.cameras if f"{c}_depth" in frames)]


def require_inputs(model: RewardModel, frames: Any, state: Any) -> str | None:
    """What ``model`` needs and the rows lack (one phrase), or None."""
    frames, state = set(frames), set(state)
    lacking = [f"frames of camera {c!r}" for c in model.cameras if c not in frames]
    lacking += [f"state {k!r}" for k in model.state_keys if k not in state]
    if not lacking:
        return None
    return f"the reward model needs {', '.join(lacking)}; the rows have frames {sorted(frames)} and state {sorted(state)}"


# -- datasets ------------------------------------------------------------------------------------------


def observation_parts(space: gym.Space) -> tuple[list[str], list[str]]:
    """``(camera keys, state keys)`` of a dataset's observation space: uint8 image Boxes (and
    ``<camera>_depth`` images) are frames, other Boxes named state."""
    if not isinstance(space, gym.spaces.Dict):
        return [], []
    cameras, state = [], []
    for key, sub in space.spaces.items():
        image = isinstance(sub, gym.spaces.Box) and (
            (sub.dtype == np.uint8 and len(sub.shape) == 3)
            or (key.endswith("_depth") and len(sub.shape) == 2)
        )
        (cameras if image else state).append(key)
    return cameras, state


def relabel_dataset(
    dataset: Any, name: str, model: RewardModel, out: str, batch_size: int, command: str
) -> dict:
    """Write ``out`` (a new Minari id in the local store, or a new directory ending in ``<name>-v<N>``)
    from the opened Minari ``dataset`` (called ``name``) with ``model``'s labels; returns a summary.

    Refused in one line (``ValueError``, nothing written): an ``out`` that exists or is the input, or a
    dataset without the frames or state the model needs. A model error mid-way removes what was written.
    """
    import minari

    cameras, state_keys = observation_parts(dataset.observation_space)
    missing = require_inputs(model, cameras, state_keys)
    if missing:
        raise ValueError(f"relabel: dataset {name}: {missing}")
    root, dataset_id = _target(out, name)
    source_meta = dict(dataset.storage.metadata)
    if source_meta.get("image_convention") == "opengl" and hasattr(model, "bottom_up"):
        # The demos store robosuite's frames in OpenGL row order (bottom row first); a VLM model flips
        # them upright when told, as the loop tells it from the env.
        model.bottom_up = True
    ids = [int(i) for i in dataset.episode_indices]
    episode_meta = list(dataset.storage.get_episode_metadata(ids))
    outcomes: list[dict] = []

    def episodes() -> Iterator:
        from minari.data_collector import EpisodeBuffer

        for meta, ep in zip(episode_meta, dataset.iterate_episodes(ids), strict=True):
            steps = len(ep.rewards)
            obs = ep.observations
            labels = label_rows(
                model,
                {k: obs[k][1:] for k in cameras},
                {k: obs[k][1:] for k in state_keys},
                np.full(steps, ep.id, dtype=np.int64),
                np.arange(steps, dtype=np.int64),
                batch_size,
            )
            infos = {"success": np.concatenate([[False], labels.success.numpy()])}
            for key, value in labels.info.items():
                infos[key] = np.concatenate([[np.nan], value.double().numpy()])
            if ep.infos and "success" in ep.infos:
                infos["env_success"] = np.asarray(ep.infos["success"], dtype=bool)
            infos["env_reward"] = np.concatenate([[np.nan], np.asarray(ep.rewards, dtype=np.float64)])
            outcomes.append(
                {"success": bool(labels.success.any()), "env_success": bool(np.any(ep.terminations))}
            )
            yield EpisodeBuffer(
                id=len(outcomes) - 1,
                seed=meta.get("seed"),
                observations=obs,
                actions=np.asarray(ep.actions),
                rewards=labels.reward.double().tolist(),
                terminations=labels.done.tolist(),
                truncations=np.asarray(ep.truncations, dtype=bool).tolist(),
                infos=infos,
            )

    relabel_meta = {
        "relabelled_from": name,
        "reward_model": type(model).__name__,
        "reward_model_hash": model.model_hash,
        "reward_prompt_hash": prompt_hash(model),
        "relabel_command": command,
    }
    with _store(root), warnings.catch_warnings():
        # Minari warns that the dataset has no env spec (robosuite tasks are not Gymnasium-registered;
        # the metadata names the task), as when the demos were made.
        warnings.filterwarnings("ignore", message="`eval_env` is set to None|env_spec is None")
        try:
            written = minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=episodes(),
                observation_space=dataset.observation_space,
                action_space=dataset.action_space,
                algorithm_name=f"{source_meta.get('algorithm_name', name)}, relabelled by {type(model).__name__}",
                author=source_meta.get("author") or "o2o",
                author_email=source_meta.get("author_email") or "o2o@users.noreply.github.com",
                code_permalink="rl/rewards/relabel.py",
                description=f"{name} relabelled by reward model {model.model_hash}; made by '{command}'",
                data_format="hdf5",
                jpeg_encoding=False,
            )
            kept = {k: v for k, v in source_meta.items() if k not in written.storage.metadata}
            written.storage.update_episode_metadata(
                [
                    {**_plain(m), "model_success": o["success"]}
                    for m, o in zip(episode_meta, outcomes, strict=True)
                ]
            )
            summary = {
                **relabel_meta,
                "episodes": len(outcomes),
                "model_success_rate": float(np.mean([o["success"] for o in outcomes])),
            }
            written.storage.update_metadata({**kept, **summary})
        except BaseException:
            path = minari.storage.get_dataset_path(dataset_id)
            if path.is_dir():
                shutil.rmtree(path)
            raise
    return {"dataset": out, **summary}


def prompt_hash(model: RewardModel) -> str:
    """16 hex digits of the model's prompt text (a VLM model's ``question``; its ``prompt_hash`` when
    it states one), or ``"none"`` for a model without a prompt."""
    stated = getattr(model, "prompt_hash", None)
    if stated:
        return str(stated)
    question = getattr(model, "question", None)
    return hashlib.sha256(question.encode()).hexdigest()[:16] if isinstance(question, str) else "none"


def _plain(meta: dict) -> dict:
    """An episode's metadata without the keys Minari writes itself."""
    return {k: v for k, v in meta.items() if k not in ("id", "total_steps")}


def _target(out: str, source: str) -> tuple[str | None, str]:
    """``(store root or None for the local store, dataset id)`` to write ``out`` to."""
    import minari

    if out == source:
        raise ValueError(f"relabel: out={out} is the input dataset; relabelling never overwrites it")
    if os.sep in out and (out.startswith((os.sep, ".", "~")) or Path(out).parent.is_dir()):
        path = Path(out).expanduser().resolve()
        if path.exists():
            raise ValueError(f"relabel: out={out} already exists; choose a new directory")
        if not DATASET_ID.match(path.name):
            raise ValueError(f"relabel: out={out}: the directory's name must be a Minari '<name>-v<N>'")
        return str(path.parent), path.name
    if not DATASET_ID.match(out):
        raise ValueError(
            f"relabel: out={out} is neither a Minari id ('<namespace>/<name>-v<N>') nor a directory path"
        )
    if out in minari.list_local_datasets():
        raise ValueError(
            f"relabel: dataset {out} already exists in the local Minari store; choose another id"
        )
    return None, out


@contextlib.contextmanager
def _store(root: str | None) -> Iterator[None]:
    """Minari writes under ``MINARI_DATASETS_PATH``: point it at ``root`` for the duration."""
    if root is None:
        yield
        return
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = root
    try:
        yield
    finally:
        if before is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = before
