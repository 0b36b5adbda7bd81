"""Turn a bridge log into an o2o ``Dataset`` (and a D4RL-layout hdf5 file) so recorded runs train offline.

``python -m real_robot.convert <run.o2olog> <out.hdf5>`` writes the D4RL keys (observations, actions,
rewards, terminals, timeouts, next_observations, plus infos/intervened), which
``rl.train dataset=d4rl:<out.hdf5>`` reads.

Observations are what ``env=real`` observes: the flat state vector of the spec's ``obs_keys``; from
a server with cameras, what ``BridgeEnv(pixels=True)`` observes, a dict of that ``state`` and each
camera's frame under the camera's name (``front``, ``wrist``), for every camera of the
log's spec (named, in order, in ``info.extra['cameras']`` and the file's ``cameras`` attribute),
stored as the groups ``observations/state`` and ``observations/<camera>`` (frames
gzip-compressed, losslessly). ``rl.data.check_dataset`` fits such a file to the env that trains on
it: a state-only env takes its ``state``, an env observing some of the cameras takes those (a camera
or an image size the file lacks is refused in one line naming both sides).

A transition is ``(obs at step k, applied action, obs at step k+1)`` within one episode, where the
action is the *applied* one from the log (after the governor's clipping, or the human's), not the
one the policy asked for: that is what the arm did. Rejected commands moved nothing and make no
transition. An episode's last transition is ``terminated`` when the task said so, otherwise
``truncated`` (time limit, watchdog, e-stop, a new reset, or the log ending). This is the one
module of real_robot that imports learner code (``rl.data.dataset``), as the design allows.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from real_robot import protocol
from real_robot.recorder import read_log
from rl.data.dataset import Dataset, DatasetInfo
from rl.data.label_log import labels_by_key, read_label_log

UNLABELLED = ("refuse", "env")


def log_to_dataset(path: str | Path) -> Dataset:
    path = Path(path)
    obs_keys: list[str] | None = None
    task = None
    cameras: list[str] = []
    columns: dict[str, list[Any]] = {
        k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated", "human", "key")
    }
    previous: dict[str, Any] | None = None  # the last observation of the current episode
    applied: dict[str, Any] | None = None  # the action applied after it, if any
    finished = None  # an episode that terminated

    def close_episode() -> None:
        if columns["terminated"] and not columns["terminated"][-1]:
            columns["truncated"][-1] = True

    for record in read_log(path):
        kind = record["kind"]
        if kind == "header":
            obs_keys, task = record["spec"]["obs_keys"], record["spec"]["task"]
            cameras = list(record["spec"].get("cameras") or {})
        elif kind == "applied":
            applied = record
        elif kind == "obs":
            if obs_keys is None:
                raise ValueError(f"{path}: observation before the header record")
            if record["episode"] == finished:
                continue  # steps a client took after the task terminated are not the learner's episode
            observation = protocol.observation(record, obs_keys, cameras)
            continues = (
                previous is not None
                and applied is not None
                and record["episode"] == previous["episode"]
                and record["step"] == previous["step"] + 1
                and applied["obs_id"] == previous["obs_id"]
            )
            if continues:
                columns["obs"].append(previous["observation"])
                columns["action"].append(np.asarray(applied["applied"], np.float32))
                columns["reward"].append(float(record["reward"]))
                columns["next_obs"].append(observation)
                columns["terminated"].append(bool(record["terminated"]))
                columns["truncated"].append(False)
                columns["human"].append(applied["source"] == "human")
                columns["key"].append((record["episode"], record["step"], record["obs_id"]))
            elif previous is None or record["episode"] != previous["episode"]:
                close_episode()
            previous, applied = {**record, "observation": observation}, None
            if record["terminated"]:
                finished, previous = record["episode"], None
    close_episode()

    if not columns["reward"]:
        raise ValueError(
            f"{path}: no complete transitions (an episode needs a RESET and at least one applied ACT)"
        )
    return Dataset(
        observations=_stack(columns["obs"]),
        actions=np.stack(columns["action"]),
        rewards=np.asarray(columns["reward"], np.float32),
        next_observations=_stack(columns["next_obs"]),
        terminated=np.asarray(columns["terminated"]),
        truncated=np.asarray(columns["truncated"]),
        info=DatasetInfo(
            source=f"bridge:{path}",
            env_id=f"real-{task}",
            extra={
                "intervened": np.asarray(columns["human"]),
                "obs_keys": obs_keys,
                "cameras": cameras,
                "reached": columns["key"],
            },
        ),
    )


def join_labels(
    dataset: Dataset, labels: str | Path, model: str | None = None, unlabelled: str = "refuse"
) -> Dataset:
    """``dataset`` (from ``log_to_dataset``) with the rewards and successes of a label log (module docstring)."""
    if unlabelled not in UNLABELLED:
        raise ValueError(f"--unlabelled must be one of {UNLABELLED}, got {unlabelled!r}")
    by_key = labels_by_key(read_label_log(labels), model)
    reached = dataset.info.extra["reached"]
    found = [by_key.get(key) for key in reached]
    missing = [key for key, label in zip(reached, found, strict=True) if label is None]
    if missing and unlabelled == "refuse":
        episode, step, obs_id = missing[0]
        raise ValueError(
            f"{labels}: {len(missing)} of {len(reached)} transitions have no label (first: episode {episode}, "
            f"step {step}, obs {obs_id}); --unlabelled env keeps the server's reward for them"
        )
    models = sorted({label.model for label in found if label is not None})
    if not models:
        raise ValueError(f"{labels}: no label matches this log's observations")
    labelled = np.array([label is not None for label in found])
    rewards = np.array(
        [dataset.rewards[i] if label is None else label.reward for i, label in enumerate(found)], np.float32
    )
    success = np.array([label is not None and label.success for label in found])
    p = np.array([np.nan if label is None or label.p is None else label.p for label in found], np.float32)
    ended_at_success = success & dataset.truncated
    return replace(
        dataset,
        rewards=rewards,
        terminated=dataset.terminated | ended_at_success,
        truncated=dataset.truncated & ~ended_at_success,
        info=replace(
            dataset.info,
            extra={**dataset.info.extra, "labelled": labelled, "success": success, "p_success": p,
                   "label_model": ",".join(models)},
        ),
    )  # fmt: skip


def _stack(observations: list[Any]) -> Any:
    if isinstance(observations[0], dict):
        return {key: np.stack([o[key] for o in observations]) for key in observations[0]}
    return np.stack(observations)


def write_d4rl_hdf5(dataset: Dataset, out: str | Path) -> None:
    import h5py

    with h5py.File(out, "w") as f:
        for name in ("observations", "next_observations"):
            obs = getattr(dataset, name)
            for key, column in obs.items() if isinstance(obs, dict) else [(None, obs)]:
                path = name if key is None else f"{name}/{key}"
                f.create_dataset(path, data=column, compression="gzip" if column.dtype == np.uint8 else None)
        f["actions"] = dataset.actions
        f["rewards"] = dataset.rewards
        f["terminals"] = dataset.terminated
        f["timeouts"] = dataset.truncated
        f["infos/intervened"] = dataset.info.extra["intervened"]
        if "label_model" in dataset.info.extra:
            for name in ("labelled", "success", "p_success"):
                f[f"infos/{name}"] = dataset.info.extra[name]
            f.attrs["label_model"] = dataset.info.extra["label_model"]
        f.attrs["source"] = dataset.info.source
        f.attrs["env_id"] = dataset.info.env_id
        if dataset.info.extra.get("cameras"):
            f.attrs["cameras"] = dataset.info.extra["cameras"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m real_robot.convert", description=__doc__.splitlines()[0])
    parser.add_argument("log", help="a .o2olog file written by the arm server")
    parser.add_argument("out", help="the hdf5 file to write (D4RL key layout)")
    parser.add_argument("--labels", help="a label log of the learner's reward model, to take rewards from")
    parser.add_argument("--model", help="with --labels: use only this model hash's labels")
    parser.add_argument(
        "--unlabelled", choices=UNLABELLED, default="refuse", help="with --labels: rows without a label"
    )
    args = parser.parse_args(argv)
    try:
        dataset = log_to_dataset(args.log)
        if args.labels is not None:
            dataset = join_labels(dataset, args.labels, args.model, args.unlabelled)
    except (OSError, ValueError) as exc:
        print(f"convert: {exc}", file=sys.stderr)
        return 2
    write_d4rl_hdf5(dataset, args.out)
    print(f"wrote {len(dataset)} transitions in {dataset.num_episodes} episodes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
