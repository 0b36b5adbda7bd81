"""What happens between steps, the same for every loop: count episodes, log, evaluate, checkpoint.

``Bookkeeper.after_step`` fires each of these when the phase's step count crosses its interval (or
the phase ends). Loops call it once per step they take and never decide a cadence themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

import envs
from rl.checkpoint import save_checkpoint
from rl.loops import run_state
from rl.loops.build import Run
from rl.loops.evaluate import evaluate
from rl.loops.logger import RunLogger
from rl.loops.run_state import LoopState


class Bookkeeper:
    def __init__(self, run: Run, state: LoopState, run_dir: Path, logger: RunLogger) -> None:
        self.run, self.state, self.run_dir, self.logger = run, state, run_dir, logger

    def finish_episodes(self, episodes: tuple[envs.EpisodeStats, ...]) -> dict[str, float]:
        """Count the episodes that just ended; their mean statistics."""
        state, normalizer = self.state, self.run.normalizer
        state.episodes += len(episodes)
        state.recent_returns = (state.recent_returns + [e.episode_return for e in episodes])[-10:]
        result = {
            "episode_return": float(np.mean([e.episode_return for e in episodes])),
            "episode_length": float(np.mean([e.length for e in episodes])),
        }
        if normalizer is not None:
            result["episode_score"] = float(np.mean([normalizer(e.score_return) for e in episodes]))
        return result

    def after_step(
        self,
        phase: str,
        phase_step: int,
        metrics: dict[str, Any],
        phase_end: bool,
        stride: int = 1,
        may_save: bool = True,
        log_metrics: bool = False,
    ) -> None:
        """Log, evaluate and checkpoint when ``phase_step`` crosses their intervals (or the phase ends);
        ``stride`` is how many steps the last call advanced (``num_envs`` online). ``log_metrics``
        logs this step's metrics whatever the interval: an on-policy update's come once a rollout."""
        steps, state, logger = self.run.cfg.steps, self.state, self.logger

        def due(every: int) -> bool:
            return every > 0 and phase_step // every != (phase_step - stride) // every

        log_now = due(steps.log_every) or phase_end or log_metrics
        if log_now and metrics:
            metrics = {**metrics, "steps_per_second": logger.steps_per_second(state.step)}
        # Per-episode figures are logged when they arrive: an episode's end, and (with a reward model)
        # the moment its last label arrives, which an async labeller decides.
        if "episode_return" in metrics or "label_success" in metrics or log_now:
            logger.log(state.step, phase, state.env_steps, metrics)
        if self.run.eval_env is not None and (due(steps.eval_every) or phase_end):
            self.evaluate(phase, phase_end)
        if due(steps.snapshot_every):
            self.save_agent(f"agent_step{state.step}.pt")
        checkpoint_due = state.step // steps.checkpoint_every != state.saved_step // steps.checkpoint_every
        if may_save and (checkpoint_due or phase_end):
            run_state.save(self.run, state, self.run_dir)
        logger.advance(state.step, phase)

    def evaluate(self, phase: str, phase_end: bool) -> None:
        """Evaluate the agent now and log it as ``phase``'s; at a phase's end, also its summary."""
        state = self.state
        result = evaluate(
            self.run.agent,
            self.run.eval_env,
            self.run.cfg.steps.eval_episodes,
            seed=10_000 * (self.run.cfg.seed + 1),
            normalizer=self.run.normalizer,
        )
        self.logger.log(
            state.step,
            phase,
            state.env_steps,
            {f"eval_{k}" if k != "normalized_score" else k: v for k, v in result.items()},
        )
        if phase_end:
            state.summary[phase] = {"step": state.step, **result}

    def save_agent(self, name: str) -> None:
        save_checkpoint(
            self.run_dir / "checkpoints" / name,
            {
                "kind": "agent",
                "agent_config": OmegaConf.to_container(self.run.cfg.agent),
                "agent": self.run.agent.state_dict(),
            },
        )
