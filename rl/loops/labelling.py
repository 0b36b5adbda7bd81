"""Labelling rows with a reward model: inline (``sync``) or by a background worker (``async``).

With ``reward=<model>`` the env's reward is not used. Each vector step's transitions enter the online
buffer *pending* (``ReplayBuffer``, ``labelled=True``: NaN reward, never sampled) with what the model
labels them from: the reward view of their next state (``VecStep.reward_view``: the reward camera's
frames and the named state), their episode id and step. ``Labeller`` then labels the oldest pending
rows in batches of ``reward.label_batch`` and writes the labels through the buffer's one
``reward * scale + bias`` path; a label's ``done`` is or-ed onto the env's ``terminated``
(bootstrapping stops at a labelled success).

- ``sync``: after each vector step, before anything samples. Deterministic, so a resumed run equals
  one that never stopped (the exact-resume tests run this way).
- ``async``: a daemon thread labels while control goes on; control never waits for it (it only
  shares a lock for the buffer writes, microseconds). Rows wait until labelled; the lag (rows, and
  seconds since the oldest pending row was added) is logged. Updates start once labelled rows exist.

A model that raises ``RewardModelError`` (server down, malformed answer) leaves its rows pending: the
run logs one warning per outage, retries (every ``reward.backoff_s`` seconds in async mode, at each
vector step in sync mode), keeps acting, and logs the recovery. A missing label is never written as
0. Anything else a model raises is a bug and stops the run (from the worker: at the next vector step).

Monte-Carlo returns (Cal-QL's floor) of an episode are written when its last row is labelled, never
before, from the labelled rewards. At the same moment the episode's ``label_success`` (any labelled
success) and ``env_success`` (the env's own check, where it has one) are logged, so a study can count
false-positive successes during RL (``label_false_positive``).

On resume the buffer's pending rows are simply the rows past its label cursor: they are labelled
again, oldest first. The labeller's own state (episode ids, steps, the rows of episodes in progress
and of ended episodes awaiting labels) is saved with the run (``state_dict``).

The on-policy loop has no replay buffer: ``RolloutLabeller`` labels each step of a rollout (inline, or
on a one-thread executor in async mode) and ``write_all`` waits for the rollout's labels before the
update, retrying while the model is down (an update cannot run without them).

The bridge's label log (``env=real``): rows whose reward view carries the server's observation key
(``ids/episode``, ``ids/step``, ``ids/obs_id``, ``real_robot/client_env.py``) have each label appended,
as it is written, to ``<run_dir>/labels.jsonl`` (``rl.data.label_log``, crash-safe: a label the log
holds survives the learner being killed), which ``real_robot.convert --labels`` joins with the
server's log. ``rl.train.train`` opens it (``open_label_log``) before a resume requeues pending rows,
so their labels reach the log too; a row labelled twice (again after a resume) keeps its last label
there. A relabel after a model change (``relabel_buffer``) is not logged: the log keeps what each
model said when it labelled, and ``convert --model`` picks one.

``relabel_buffer`` relabels every labelled row of a buffer with another model (and rewrites the MC
returns of the ended episodes), for when the model changes: a resume whose model hash differs from
the checkpoint's (same config, new weights or prompt) relabels the online buffer before going on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import envs
from envs.vector import TensorObs
from rl.buffers import ReplayBuffer, RolloutBuffer, RowContext
from rl.data.label_log import LabelLogWriter, LabelRecord
from rl.rewards import LabelInput, Labels, RewardModel, RewardModelError
from rl.rewards.relabel import label_rows

LABEL_MODES = ("sync", "async")
LABEL_LOG = "labels.jsonl"
"""The bridge's label log in the run directory (module docstring)."""
IDS = ("ids/episode", "ids/step", "ids/obs_id")
"""Reward-view columns with the server's key of the observation a row reached (the bridge's)."""
EXACT_IDS = 2**24
"""The buffer keeps view columns other than frames as float32, exact for integers below this."""
log = logging.getLogger(__name__)


def label_input(context: RowContext) -> LabelInput:
    """A model's input from stored rows (on the host): ``frames/<camera>`` -> ``frames[camera]``,
    ``state/<name>`` -> ``state[name]``."""
    view = {k: v.cpu() for k, v in context.view.items()}
    frames = {k.removeprefix("frames/"): v for k, v in view.items() if k.startswith("frames/")}
    state = {k.removeprefix("state/"): v for k, v in view.items() if k.startswith("state/")}
    return LabelInput(frames=frames, state=state, episode=context.episode.cpu(), step=context.step.cpu())


def label_stored(model: RewardModel, context: RowContext, batch: int) -> Labels:
    """Label stored rows through ``rl.rewards.relabel.label_rows``, the one labelling path datasets
    use too (``batch`` rows per model call), checked row for row."""
    rows = label_input(context)
    labels = label_rows(model, rows.frames, rows.state, rows.episode, rows.step, batch)
    return checked_labels(labels, len(rows), model)


def checked_labels(labels: Labels, rows: int, model: RewardModel) -> Labels:
    """``labels`` if it has one label per row, else a one-line error naming the model."""
    for name in ("reward", "success", "done"):
        shape = tuple(getattr(labels, name).shape)
        if shape != (rows,):
            raise ValueError(f"reward model {type(model).__name__}: {name} of shape {shape} for {rows} rows")
    if not torch.isfinite(labels.reward).all():
        raise ValueError(f"reward model {type(model).__name__}: a reward that is not finite")
    return labels


def label_records(view: dict[str, torch.Tensor], labels: Labels, model_hash: str) -> list[LabelRecord]:
    """The label log's records of labelled rows whose reward ``view`` carries the server's ids."""
    ids = torch.stack([view[k].reshape(-1).double().cpu() for k in IDS], 1)
    if (ids >= EXACT_IDS).any() or (ids != ids.round()).any():
        raise ValueError(
            f"label log: a server observation id at or past {EXACT_IDS} cannot be kept exactly; restart the "
            "arm server (its ids start again) and log into a new run directory"
        )
    p = labels.info.get("p_success")
    return [
        LabelRecord(
            episode=int(e), step=int(s), obs_id=int(o), model=model_hash, reward=float(r), success=bool(ok),
            p=None if p is None else float(p[i]),
        )
        for i, ((e, s, o), r, ok) in enumerate(zip(ids.tolist(), labels.reward.tolist(), labels.success.tolist(),
                                                   strict=True))
    ]  # fmt: skip


def open_label_log(view_keys: Any, run_dir: Path) -> LabelLogWriter | None:
    """The run's label log when its rows carry the server's ids (``view_keys``), else None."""
    return LabelLogWriter(run_dir / LABEL_LOG) if set(IDS) <= set(view_keys) else None


class Outage:
    """Logs a model outage once when it starts and once when it ends."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.count = 0

    def failed(self, error: RewardModelError, pending: int) -> None:
        if self.since is None:
            self.since, self.count = time.monotonic(), self.count + 1
            log.warning("reward model cannot label (%s): %d rows wait, the run goes on", error, pending)

    def recovered(self) -> None:
        if self.since is not None:
            log.warning("reward model labels again after %.1f s", time.monotonic() - self.since)
            self.since = None

    @property
    def down(self) -> bool:
        return self.since is not None


@dataclass
class EpisodeCounter:
    """Each copy's episode id and step within it: ids are unique over the run (copy j starts with
    id j; each new episode takes the next free id)."""

    episode: torch.Tensor
    step: torch.Tensor
    next_episode: int

    @staticmethod
    def start(n: int) -> EpisodeCounter:
        return EpisodeCounter(torch.arange(n), torch.zeros(n, dtype=torch.int64), n)

    def context(self, view: dict[str, torch.Tensor] | None) -> RowContext:
        """The context of this vector step's rows (before ``advance``)."""
        return RowContext(view=view or {}, episode=self.episode.clone(), step=self.step.clone())

    def advance(self, ended: list[int]) -> None:
        self.step += 1
        for j in ended:
            self.episode[j], self.step[j] = self.next_episode, 0
            self.next_episode += 1

    def restart_all(self) -> None:
        """Every copy starts a new episode (a resume that could not restore the env)."""
        self.advance(list(range(len(self.episode))))


@dataclass
class _EndedEpisode:
    serials: list[int]
    env_success: bool


@dataclass
class _Tally:
    """Episodes whose labels all arrived since the last ``drain``."""

    label_success: list[float] = field(default_factory=list)
    env_success: list[float] = field(default_factory=list)


class Labeller:
    """Labels an off-policy run's online buffer (module docstring). The loop calls ``add`` for each
    vector step and ``drain`` for the metrics; ``close`` stops the worker."""

    def __init__(self, model: RewardModel, buffer: ReplayBuffer, num_envs: int, mode: str, batch: int,
                 retry_s: float = 0.5) -> None:  # fmt: skip
        if mode not in LABEL_MODES:
            raise ValueError(f"reward.mode must be one of {LABEL_MODES}, got {mode!r}")
        if batch < 1:
            raise ValueError(f"reward.label_batch must be >= 1, got {batch}")
        if not buffer.labelled:
            raise ValueError("labeller: the buffer does not wait for labels (labelled=False)")
        self.model, self.buffer, self.mode, self.batch, self.retry_s = model, buffer, mode, batch, retry_s
        self.model_hash = model.model_hash
        self.counter = EpisodeCounter.start(num_envs)
        self.running: list[list[int]] = [[] for _ in range(num_envs)]
        """Serials of each copy's episode in progress."""
        self.ended: deque[_EndedEpisode] = deque()
        """Ended episodes whose last row waits for its label, in order of their ends."""
        self.outage = Outage()
        self.lock = threading.RLock()
        """Held for every buffer access that may overlap the worker's: adds, label reads and writes,
        and a checkpoint's snapshot of the buffer with this labeller's state (``run_state.save``).
        Sampling takes no lock: it reads only rows below the label cursor, which moves after their
        labels are written (an episode's MC returns may land while a batch is gathered: that batch
        then sees them as not yet written, -inf, as it would a moment earlier)."""
        self._added: deque[tuple[int, float]] = deque()  # (serial after an add, when): the lag in seconds
        self._tally = _Tally()
        self._rows_labelled = self._successes = 0
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.label_log: LabelLogWriter | None = None
        """The bridge's label log (``open_label_log``), None until opened or for rows without ids."""
        if mode == "async":
            self._thread = threading.Thread(target=self._work, name="labeller", daemon=True)
            self._thread.start()

    # -- the loop's side --------------------------------------------------------------------------

    def add(self, obs: TensorObs, action: torch.Tensor, result: envs.VecStep) -> torch.Tensor:
        """Add one vector step's transitions as pending rows; label them now in sync mode. Returns
        their buffer rows."""
        self._raise_worker_error()
        ended = [e.env_index for e in result.episodes]
        with self.lock:
            first = self.buffer.rows_added
            context = self.counter.context(result.reward_view)
            rows = self.buffer.add(obs, action, None, result.next_obs, result.terminated, context)
            self._added.append((self.buffer.rows_added, time.monotonic()))
            for j, serials in enumerate(self.running):
                serials.append(first + j)
            for episode in result.episodes:
                j = episode.env_index
                self.ended.append(_EndedEpisode(self.running[j], episode.success))
                self.running[j] = []
            self.counter.advance(ended)
        if self.mode == "sync":
            self.label_pending()
        else:
            self._wake.set()
        return rows

    def open_label_log(self, run_dir: Path) -> None:
        """Append the labels of rows from the bridge to ``<run_dir>/labels.jsonl`` from now on."""
        with self.lock:
            self.label_log = open_label_log(self.buffer.view, run_dir)

    def label_pending(self) -> None:
        """Label every pending row now, stopping at the first ``RewardModelError`` (rows wait)."""
        try:
            while self._label_batch():
                pass
        except RewardModelError as error:
            self.outage.failed(error, self.lag_rows)

    def drain(self) -> dict[str, float]:
        """Metrics since the last call: the label lag, and the episodes whose labels all arrived."""
        self._raise_worker_error()
        with self.lock:
            tally, self._tally = self._tally, _Tally()
            metrics: dict[str, float] = {"label_lag_rows": float(self.lag_rows)}
            if self.mode == "async":
                metrics["label_lag_s"] = time.monotonic() - self._added[0][1] if self._added else 0.0
                metrics["label_model_down"] = float(self.outage.down)
        if tally.label_success:
            label, env = torch.tensor(tally.label_success), torch.tensor(tally.env_success)
            metrics["label_success"] = float(label.mean())
            metrics["env_success"] = float(env.mean())
            metrics["label_false_positive"] = float((label * (1 - env)).mean())
        return metrics

    @property
    def lag_rows(self) -> int:
        return self.buffer.rows_added - max(self.buffer.labelled_upto, self.buffer.oldest_serial)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no row is pending (async mode; tests and benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.lag_rows and time.monotonic() < deadline:
            self._raise_worker_error()
            time.sleep(0.005)
        return self.lag_rows == 0

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=10)
            self._thread = None
        if self.label_log is not None:
            self.label_log.close()

    # -- labelling ----------------------------------------------------------------------------------

    def _label_batch(self) -> bool:
        """Label the oldest pending rows (up to ``batch``); False when none was pending."""
        with self.lock:
            serial, positions = self.buffer.pending(self.batch)
            if len(positions) == 0:
                return False
            context = self.buffer.row_context(positions)
        labels = label_stored(self.model, context, self.batch)
        self.outage.recovered()
        with self.lock:
            self.buffer.write_labels(serial, labels.reward, labels.done, labels.success, self.model_hash)
            if self.label_log is not None:
                self.label_log.write(label_records(context.view, labels, self.model_hash))
            while self._added and self._added[0][0] <= self.buffer.labelled_upto:
                self._added.popleft()
            self._finish_episodes()
        return True

    def _finish_episodes(self) -> None:
        """MC returns and success tallies of the ended episodes whose rows are all labelled."""
        buffer = self.buffer
        while self.ended and self.ended[0].serials[-1] < buffer.labelled_upto:
            episode = self.ended.popleft()
            kept = [s for s in episode.serials if s >= buffer.oldest_serial]  # the ring may drop old rows
            if not kept:
                continue
            rows = torch.tensor(kept) % buffer.capacity
            buffer.write_mc_returns(rows)
            self._tally.label_success.append(float(buffer.success[rows.to(buffer.device)].any()))
            self._tally.env_success.append(float(episode.env_success))

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                if self._label_batch():
                    continue
                self._wake.wait(timeout=1.0)
                self._wake.clear()
            except RewardModelError as error:
                self.outage.failed(error, self.lag_rows)
                self._stop.wait(self.retry_s)
            except BaseException as error:  # a bug: the loop re-raises it
                self._error = error
                return

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the labelling worker failed: {self._error!r}") from self._error

    # -- resume -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "model_hash": self.model_hash,
                "episode": self.counter.episode.clone(),
                "step": self.counter.step.clone(),
                "next_episode": self.counter.next_episode,
                "running": [list(s) for s in self.running],
                "ended": [(list(e.serials), e.env_success) for e in self.ended],
            }

    def load_state_dict(self, state: dict[str, Any], episodes_restart: bool) -> None:
        """Restore; ``episodes_restart``: the env could not be restored, so every copy starts a new
        episode (the rows of the interrupted ones keep their labels but get no MC returns, as without
        a reward model). Rows still pending are labelled again, oldest first."""
        with self.lock:
            self.counter = EpisodeCounter(
                state["episode"].clone(), state["step"].clone(), state["next_episode"]
            )
            self.running = [list(s) for s in state["running"]]
            self.ended = deque(_EndedEpisode(list(s), success) for s, success in state["ended"])
            self._added = deque([(self.buffer.rows_added, time.monotonic())] if self.lag_rows else [])
            if episodes_restart:
                self.counter.restart_all()
                self.running = [[] for _ in self.running]
        if state["model_hash"] != self.model_hash:
            self._relabel_after_change(state["model_hash"])
        if self.mode == "sync":
            self.label_pending()
        else:
            self._wake.set()

    def _relabel_after_change(self, old_hash: str) -> None:
        """The model's identity changed since the checkpoint (same config, new weights or prompt):
        relabel every labelled row with it; if it is down, the rows not reached keep the old labels
        (each row records its model) and the run goes on."""
        log.warning("the reward model changed since the checkpoint (%s -> %s): relabelling the online "
                    "buffer", old_hash, self.model_hash)  # fmt: skip
        try:
            with self.lock:
                relabel_buffer(self.buffer, self.model, self.batch)
        except RewardModelError as error:
            log.warning("relabelling stopped (%s): the rest of the rows keep the old model's labels", error)


class RolloutLabeller:
    """Labels an on-policy rollout's steps (module docstring): ``add`` after each vector step,
    ``write_all`` before the update."""

    def __init__(self, model: RewardModel, num_envs: int, mode: str, retry_s: float = 0.5) -> None:
        if mode not in LABEL_MODES:
            raise ValueError(f"reward.mode must be one of {LABEL_MODES}, got {mode!r}")
        self.model, self.mode, self.retry_s = model, mode, retry_s
        self.counter = EpisodeCounter.start(num_envs)
        self.outage = Outage()
        self._steps: list[tuple[int, LabelInput, Future[Labels] | Labels | None]] = []
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="labeller") if mode == "async" else None
        self.label_log: LabelLogWriter | None = None
        self._log_dir: Path | None = None
        self._model_hash = ""
        self._ids: list[dict[str, torch.Tensor]] = []  # each queued step's server ids, with a label log

    def open_label_log(self, run_dir: Path) -> None:
        """Append the labels of rollout steps from the bridge to ``<run_dir>/labels.jsonl`` (module
        docstring); opened at the first step, whose reward view says whether rows carry ids."""
        self._log_dir, self._model_hash = run_dir, self.model.model_hash

    def add(self, t: int, result: envs.VecStep) -> None:
        """Queue the labels of rollout step ``t`` (labelled now in sync mode if the model answers)."""
        view = result.reward_view or {}
        if self._log_dir is not None:
            self.label_log, self._log_dir = open_label_log(view, self._log_dir), None
        if self.label_log is not None:
            self._ids.append({k: view[k] for k in IDS})
        batch = label_input(self.counter.context(result.reward_view))
        self.counter.advance([e.env_index for e in result.episodes])
        labels: Future[Labels] | Labels | None
        if self._executor is not None:
            labels = self._executor.submit(self._label_retrying, batch)
        else:
            try:
                labels = self._label(batch)
            except RewardModelError as error:
                self.outage.failed(error, len(batch))
                labels = None
        self._steps.append((t, batch, labels))

    def write_all(self, rollout: RolloutBuffer) -> dict[str, float]:
        """Wait for every queued step's labels and write them into ``rollout``; the rows' success rate."""
        successes = rows = 0
        for i, (t, batch, labels) in enumerate(self._steps):
            if isinstance(labels, Future):
                labels = labels.result()
            elif labels is None:
                labels = self._label_retrying(batch)
            rollout.write_labels(t, labels.reward, labels.done)
            if self.label_log is not None:
                self.label_log.write(label_records(self._ids[i], labels, self._model_hash))
            successes += int(labels.success.sum())
            rows += len(batch)
        self._steps, self._ids = [], []
        return {"label_success_rate": successes / rows} if rows else {}

    def _label(self, batch: LabelInput) -> Labels:
        labels = label_rows(self.model, batch.frames, batch.state, batch.episode, batch.step, len(batch))
        labels = checked_labels(labels, len(batch), self.model)
        self.outage.recovered()
        return labels

    def _label_retrying(self, batch: LabelInput) -> Labels:
        while True:
            try:
                return self._label(batch)
            except RewardModelError as error:
                self.outage.failed(error, len(batch))
                time.sleep(self.retry_s)

    def state_dict(self) -> dict[str, Any]:
        return {"episode": self.counter.episode.clone(), "step": self.counter.step.clone(),
                "next_episode": self.counter.next_episode}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any], episodes_restart: bool) -> None:
        self.counter = EpisodeCounter(state["episode"].clone(), state["step"].clone(), state["next_episode"])
        if episodes_restart:
            self.counter.restart_all()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self.label_log is not None:
            self.label_log.close()


def relabel_buffer(buffer: ReplayBuffer, model: RewardModel, batch: int = 64) -> int:
    """Relabel every labelled row of ``buffer`` with ``model`` (pending rows are left to the labeller),
    then rewrite the MC returns of the episodes that had them. Returns the rows relabelled. A
    ``RewardModelError`` propagates; the rows relabelled before it keep the new model's hash."""
    first, end = buffer.oldest_serial, max(buffer.labelled_upto, buffer.oldest_serial)
    model_hash = model.model_hash
    for start in range(first, end, batch):
        positions = buffer.positions(start, min(batch, end - start))
        labels = checked_labels(
            model.label(label_input(buffer.row_context(positions))), len(positions), model
        )
        buffer.relabel(positions, labels.reward, labels.done, labels.success, model_hash)
    # Episodes whose MC returns were written (all their rows labelled): recompute them, in row order.
    positions = buffer.positions(first, end - first)
    index = positions.to(buffer.device)
    finished = torch.isfinite(buffer.mc_return.index_select(0, index)).cpu()
    episodes = buffer.episode.index_select(0, index).cpu()
    for episode in episodes[finished].unique().tolist():
        buffer.write_mc_returns(positions[finished & (episodes == episode)])
    return end - first
