"""The schedule of a run: build it, run its phases, keep its state.

- ``build``: ``build_run(cfg) -> Run``, everything a run trains with;
- ``run_state``: the loop's counters and the run's one checkpoint (save, read once, restore);
- ``off_policy`` / ``on_policy``: the phase loops (``reset_free``: the off-policy one on RoboFuME's
  forward/backward practice env); ``labelling``: reward-model labels for the online buffer; ``bookkeeping``: logging, evaluation and
  checkpoints between steps; ``evaluate``, ``logger``.
Loops own steps, evaluation, checkpoints and logging, never a loss.
"""

from __future__ import annotations

from pathlib import Path

from rl.loops import off_policy, on_policy, reset_free
from rl.loops.bookkeeping import Bookkeeper
from rl.loops.build import Run, build_run
from rl.loops.logger import RunLogger
from rl.loops.run_state import LoopState


def run_phases(run: Run, state: LoopState, run_dir: Path) -> dict[str, dict[str, float]]:
    """Run whatever is left of the schedule from ``state``: the offline phase, then the online one
    (on-policy rollouts for agents that learn from them). Returns the summary of each phase's end."""
    schedule = run.schedule
    logger = RunLogger(run_dir, schedule.total, state.step, run.cfg.progress)
    books = Bookkeeper(run, state, run_dir, logger)
    if state.step == 0 and run.dataset_score is not None:  # once per run: a resume has it logged
        logger.log(0, "offline", 0, {"dataset_normalized_score": run.dataset_score})
    try:
        if state.step < schedule.offline:
            off_policy.offline_phase(run, state, books)
        elif state.step == 0 and run.cfg.checkpoint is not None and run.eval_env is not None:
            # Fine-tuning a pre-trained checkpoint: its score before it acts, as the end of the
            # offline phase it had elsewhere, so curves and tables start from what it was given.
            books.evaluate("offline", phase_end=True)
        if state.step < schedule.total:
            if run.agent.on_policy:
                online = on_policy.online_phase
            elif reset_free.applies(run):
                online = reset_free.online_phase
            else:
                online = off_policy.online_phase
            online(run, state, books)
            if run.eval_env is None and state.recent_returns:
                state.summary["online"] = {
                    "step": state.step,
                    "return": sum(state.recent_returns) / len(state.recent_returns),
                }
        books.save_agent("agent_final.pt")  # marks the run finished (rl.report, rl.sweep), offline-only too
    finally:
        logger.close()
    return state.summary


__all__ = ["LoopState", "Run", "build_run", "run_phases"]
