"""The reset-free online phase (RoboFuME, spec §3.2): off-policy practice through ``envs.reset_free``.

The schedule is ``off_policy.online_phase`` itself (its ``collect_step``, its update cadence: one
``agent.update`` per env step after warm-up, Cal-QL's mixed batches when ``offline_ratio > 0``);
what this phase adds is the practice env's bookkeeping. Each time practice episodes end, the
``ResetFreeEnv`` counters are logged beside the episode statistics: episodes and successes per task,
env resets, human resets, safety resets, and ``successes_per_reset`` (forward successes / (env
resets + human resets)), RoboFuME's figure. The phase's summary holds their final values.

The episodic baseline is the same phase on the same family with ``mode: episodic``: forward task
only, a real reset every episode, so ``successes_per_reset`` is its success rate and the two compare
at the same env-step budget (``conf/experiment/robofume_lift_episodic.yaml``).

Success signal: the practice env decides task switches from its state predicates. With a reward
model (``reward=<name>``, ``run.reward_model``, the one the labeller uses) the forward task's
success is the model's verdict on the reward camera's frame of each step instead
(``labelled_success``), as on a real cell where nothing else can say it; the backward task keeps its predicate (a real cell needs a backward success model too: not built).
That verdict is asked synchronously inside the env step, once per step, because the episode must
end on the step of the success; it suits a classifier (milliseconds), not a VLM at hundreds of
milliseconds (there the step limit and the human fallback end episodes). A model that cannot label
now (``RewardModelError``) counts as "not yet a success": the episode goes on to its step limit.
The rewards stored in the buffer are labelled as in any run (``rl.loops.labelling``), through
``rl.rewards.PerTaskLabels`` (``build_run`` wraps the model in it because the practice env's reward
view carries ``state/task_success``): forward rows by the model, backward rows by the practice env's
own verdict (a forward-task model knows nothing of putting the cube back).

One scene, one robot: ``num_envs=1``, in this process (the env is reached through the vector env to
read its counters and hand it the success signal).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

import envs
from envs.reset_free import FORWARD, ResetCounts, ResetFreeEnv, SuccessFn
from rl.loops import off_policy
from rl.loops.bookkeeping import Bookkeeper
from rl.loops.build import Run
from rl.loops.run_state import LoopState
from rl.rewards import LabelInput, PerTaskLabels, RewardModel, RewardModelError

FAMILY = "reset_free"
SUMMARY = "reset_free"
"""The key of the counters in ``LoopState.summary``, which every checkpoint saves: a resumed run
continues them (the scene is reset at a resume: robosuite has no snapshot, so that counts as one
more env reset)."""


def applies(run: Run) -> bool:
    """Whether ``run`` practises reset-free (its env is of the ``reset_free`` family)."""
    return run.cfg.env.family == FAMILY


class PracticeBookkeeper(Bookkeeper):
    """The run's ``Bookkeeper``, with the practice env's counters added to every episode's metrics."""

    def __init__(self, books: Bookkeeper, practice: ResetFreeEnv) -> None:
        super().__init__(books.run, books.state, books.run_dir, books.logger)
        self.practice = practice

    def finish_episodes(self, episodes: tuple[envs.EpisodeStats, ...]) -> dict[str, float]:
        counts = self.practice.counts.metrics()
        self.state.summary[SUMMARY] = {"step": self.state.step, **counts}  # saved with every checkpoint
        return super().finish_episodes(episodes) | counts


def online_phase(run: Run, state: LoopState, books: Bookkeeper) -> None:
    practice = practice_env(run)
    saved = state.summary.get(SUMMARY)
    if saved is not None:  # a resumed run: its counts go on, and the resume itself reset the scene
        practice.counts = ResetCounts.from_metrics(saved)
        practice.counts.env_resets += 1
    if run.reward_model is not None:
        model = run.reward_model  # build_run wrapped it to label stored rows per task
        forward_model = model.model if isinstance(model, PerTaskLabels) else model
        practice.set_success_fn(FORWARD, labelled_success(forward_model, practice))
    off_policy.online_phase(run, state, PracticeBookkeeper(books, practice))
    state.summary[SUMMARY] = {"step": state.step, **practice.counts.metrics()}


def practice_env(run: Run) -> ResetFreeEnv:
    """The one ``ResetFreeEnv`` under ``run.env``, or a ValueError naming the setting that prevents it."""
    if run.cfg.num_envs != 1:
        raise ValueError(f"num_envs={run.cfg.num_envs}: reset-free practice runs one scene (num_envs=1)")
    if not isinstance(run.env, envs.InProcessVecEnv):
        raise ValueError(
            f"env_mode={run.cfg.env_mode}: reset-free practice needs the env in this process (env_mode=sync)"
        )
    env: gym.Env = run.env.envs[0]
    while not isinstance(env, ResetFreeEnv):
        if not isinstance(env, gym.Wrapper):
            raise ValueError(f"env.family={run.cfg.env.family}: no reset-free env inside this vector env")
        env = env.env
    return env


def labelled_success(model: RewardModel, practice: ResetFreeEnv) -> SuccessFn:
    """``fn(obs, info) -> bool``: ``model``'s success on the reward view of the step just taken."""

    def success(obs: Any, info: dict[str, Any]) -> bool:
        view = info.get("reward_view")
        if view is None:
            raise ValueError(
                "reset-free: a reward model's success needs the env's reward view (env.reward_cameras)"
            )
        batch = LabelInput(
            frames={k.removeprefix("frames/"): _one(v) for k, v in view.items() if k.startswith("frames/")},
            state={k.removeprefix("state/"): _one(v) for k, v in view.items() if k.startswith("state/")},
            episode=torch.tensor([sum(practice.counts.episodes)]),
            step=torch.tensor([practice.steps]),
        )
        try:
            return bool(model.label(batch).success[0])
        except RewardModelError:
            return False

    return success


def _one(value: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(value))[None]
