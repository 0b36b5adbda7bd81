"""Labels for a scene practised as two tasks (reset-free practice, envs/reset_free.py): a model of the
forward task's success labels the forward rows, and the env's own verdict labels the others.

A success model is trained for one task (a lifted cube); on rows practising the way back it would
reward the wrong thing. The practice env adds ``state/task`` (0 forward, 1 backward) and
``state/task_success`` (its verdict on the task of that step) to every step's reward view, and
``rl.loops.build`` wraps the run's model in ``PerTaskLabels`` whenever the view carries them.
"""

from __future__ import annotations

import torch

from rl.rewards.base import LabelInput, Labels, RewardModel

FORWARD_TASK = 0
TASK_KEYS = ("task", "task_success")
"""The named state a practice env's reward view adds (``state/<key>``)."""


class PerTaskLabels(RewardModel):
    """``model``'s labels for forward rows; for the other rows the env's verdict on their task (reward 1
    and done on success, as the env's own reward). Same identity and hash as ``model``: the env's
    verdict is fixed by the run's config, so a resume does not relabel."""

    def __init__(self, model: RewardModel) -> None:
        self.model = model
        self.cameras, self.frame_shape = model.cameras, model.frame_shape
        self.state_keys = (*model.state_keys, *TASK_KEYS)

    def label(self, batch: LabelInput) -> Labels:
        labels = self.model.label(batch)
        other_task = batch.state["task"][:, 0] != FORWARD_TASK
        verdict = batch.state["task_success"][:, 0] > 0.5
        return Labels(
            reward=torch.where(other_task, verdict.to(labels.reward.dtype), labels.reward),
            success=torch.where(other_task, verdict, labels.success),
            done=torch.where(other_task, verdict, labels.done),
            info=labels.info,
        )

    def identity(self) -> bytes:
        return self.model.identity()

    def close(self) -> None:
        self.model.close()
