"""A replay buffer of preallocated tensors on the training device.

Transitions enter only through ``ReplayBuffer.add``, which is therefore the one place where
``reward * scale + bias`` is applied; Monte-Carlo returns-to-go are computed from the stored,
scaled rewards (``write_mc_returns``), so Cal-QL's floor and the TD targets see the same rewards.
Sampling is index generation plus gather on the device; the write pointer and fill level are host
integers, so neither adding nor sampling waits on the device.

Float (state) observation columns are stored per row, ``obs`` and ``next_obs`` alike. uint8 (pixel)
columns are stored once per frame in a ``FrameRing`` (``rl/buffers/frames.py``), which the rows
point into with ``obs_idx`` / ``next_idx``: the next frame of a transition is the obs frame of the
same copy's following one, so storing both per row would keep every frame twice. The ring is
bounded, so a pixel buffer drops its oldest rows early when their frames are overwritten (only with
episodes shorter than ``1 / FRAME_SLACK`` steps); ``len()`` always counts the rows that may be
sampled, which are the newest ``len()`` rows added.

Rows labelled by a reward model (``labelled=True``; the labeller is ``rl/loops/labelling.py``) enter
*pending*: their reward is NaN until ``write_labels`` gives it, and they are never sampled. Labels
arrive oldest first, so the labelled rows are a prefix of insertion order and one serial cursor,
``labelled_upto``, bounds sampling (no mask to scan): ``len()`` counts the rows older than it. A row
the ring overwrites while still pending is lost, and the cursor skips it. Each row of a labelled
buffer also keeps what its labels came from, so the whole buffer can be relabelled when the model
changes: the reward view of its next state (the reward camera's frames and the named state), its
episode id and step, the env's own ``terminated`` (a label's ``done`` is or-ed onto it), the labelled
``success``, and which model labelled it (an index into ``label_models``, a short table of model
hashes; -1 while pending). The reward frames are one per row (a row's next state), so they live in
per-row uint8 columns rather than the ``FrameRing``: the ring shares a frame between one row's
``next_obs`` and the next row's ``obs``, and reward frames have no such pairs to share.

Datasets enter through ``fill_from_dataset`` (``from_dataset.py``), which appends in chunks with
``extend``; ``sampler.py`` mixes an offline and an online buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rl.buffers.batch import Batch, Obs
from rl.buffers.frames import FrameRing
from rl.data.dataset import mc_return_to_go

ARRAY_KEY = "_"  # internal key for array (non-dict) observations
FRAME_SLACK = 0.05
"""Frame slots beyond one per row, as a fraction of the capacity: each episode costs one frame more
than its rows (its reset frame), so episodes longer than ~20 steps never shrink the buffer, and the
pixel storage stays near 1.05x the raw frames of a full buffer (the target is <= 1.1x)."""
MIN_EXTRA_FRAMES = 64
"""...and at least this many, so that small buffers also hold the first frames of a few env copies."""
LABEL_COLUMNS = ("episode", "episode_step", "env_terminated", "success", "label_model")
"""Per-row columns of a labelled buffer besides the reward view (module docstring)."""


@dataclass(frozen=True)
class RowContext:
    """What a labelled buffer keeps per row besides the transition, for n rows: the reward view of each
    row's next state (``frames/<camera>``, ``state/<name>``; may be empty), its episode id and its
    step within that episode (0 = the episode's first transition)."""

    view: dict[str, torch.Tensor]
    episode: torch.Tensor
    step: torch.Tensor


@dataclass(frozen=True)
class ObsSpec:
    """Shapes and dtypes of the observation columns: one entry for array observations, one per key for dicts."""

    columns: dict[str, tuple[tuple[int, ...], torch.dtype]]
    is_dict: bool

    @staticmethod
    def from_space(space: gym.Space) -> ObsSpec:
        if isinstance(space, gym.spaces.Dict):
            return ObsSpec({k: (s.shape, _torch_dtype(s.dtype)) for k, s in space.spaces.items()}, True)
        return ObsSpec({ARRAY_KEY: (space.shape, _torch_dtype(space.dtype))}, False)


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    # Pixels stay uint8 (4x smaller); everything else is stored as float32.
    return torch.uint8 if dtype == np.uint8 else torch.float32


class _RowWriter:
    """Writes ``n`` consecutive ring rows from ``start``: through a slice when they do not wrap (one
    ``copy_`` per column, converting dtype and device on the way), else through an index. Acting adds
    a few rows per env step, where a handful of small torch ops cost as much as the env."""

    def __init__(self, start: int, n: int, capacity: int, device: torch.device) -> None:
        self.index = (start + torch.arange(n)) % capacity  # CPU int64: the rows, returned to callers
        self.slice = slice(start, start + n) if start + n <= capacity else None
        self.dev_index = None if self.slice is not None else self.index.to(device)

    def write(self, column: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        if self.slice is not None:
            return column[self.slice].copy_(values)
        column[self.dev_index] = values.to(column.device, column.dtype)
        return column[self.dev_index]

    def fill(self, column: torch.Tensor, value: float) -> None:
        if self.slice is not None:
            column[self.slice].fill_(value)
        else:
            column[self.dev_index] = value


class ReplayBuffer:
    """Rows in a ring of ``capacity``; pixel frames in a ``FrameRing`` (see the module docstring).

    ``frame_capacity``: the frame ring's slots (pixel buffers only); default ``capacity`` plus
    ``FRAME_SLACK``, at least ``MIN_EXTRA_FRAMES``. ``reserve_frames`` grows it when a dataset needs more.
    ``labelled``: rows wait for a reward model's labels (module docstring); ``view_spec``: the reward
    view's columns they keep, name -> (shape, dtype), as ``VecStep.reward_view`` has them.
    """

    def __init__(
        self,
        capacity: int,
        obs_spec: ObsSpec,
        action_dim: int,
        device: torch.device | str = "cpu",
        reward_scale: float = 1.0,
        reward_bias: float = 0.0,
        gamma: float = 0.99,
        seed: int = 0,
        frame_capacity: int | None = None,
        labelled: bool = False,
        view_spec: dict[str, tuple[tuple[int, ...], torch.dtype]] | None = None,
    ) -> None:
        if capacity <= 0:
            raise ValueError(f"replay buffer capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.obs_spec = obs_spec
        self.device = torch.device(device)
        self.reward_scale, self.reward_bias, self.gamma = reward_scale, reward_bias, gamma

        def column(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros((capacity, *shape), dtype=dtype, device=self.device)

        floats = {k: shape for k, (shape, dtype) in obs_spec.columns.items() if dtype != torch.uint8}
        pixels = {k: shape for k, (shape, dtype) in obs_spec.columns.items() if dtype == torch.uint8}
        self.obs = {k: column(shape) for k, shape in floats.items()}
        self.next_obs = {k: column(shape) for k, shape in floats.items()}
        self.ring: FrameRing | None = None
        if pixels:
            if frame_capacity is None:
                frame_capacity = capacity + max(int(np.ceil(FRAME_SLACK * capacity)), MIN_EXTRA_FRAMES)
            self.ring = FrameRing(pixels, frame_capacity, self.device)
            # Row -> frame slot; int32 halves the per-row cost and index_select gathers as fast.
            self.obs_idx = column((), torch.int32)
            self.next_idx = column((), torch.int32)
        self.action = column((action_dim,))
        self.reward = column(())
        self.terminated = column(())
        self.mc_return = torch.full((capacity,), -torch.inf, device=self.device)
        self.labelled = labelled
        self.labelled_upto = 0
        """Serial of the oldest row still waiting for a label (labelled buffers; else unused)."""
        self.label_models: list[str] = []
        if labelled:
            self.view = {k: column(shape, dtype) for k, (shape, dtype) in (view_spec or {}).items()}
            self.episode = column((), torch.int64)
            self.episode_step = column((), torch.int32)
            self.env_terminated = column(())
            self.success = column((), torch.bool)
            self.label_model = column((), torch.int16)
        elif view_spec:
            raise ValueError("replay buffer: a reward view is kept only by a labelled buffer")
        self.ptr = 0
        self.size = 0
        self.rows_added = 0
        """Rows ever added; a row's serial is the count before it, and ``ptr == rows_added % capacity``."""
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        """Rows that may be sampled: all stored rows, except a labelled buffer's pending ones."""
        if not self.labelled:
            return self.size
        return max(0, min(self.size, self.labelled_upto - self.oldest_serial))

    @property
    def oldest_serial(self) -> int:
        """Serial of the oldest stored row."""
        return self.rows_added - self.size

    @property
    def frames(self) -> dict[str, torch.Tensor]:
        """The pixel columns' frame storage (empty without uint8 columns)."""
        return {} if self.ring is None else self.ring.frames

    def add(
        self,
        obs: Obs,
        action: torch.Tensor,
        raw_reward: torch.Tensor,
        next_obs: Obs,
        terminated: torch.Tensor,
        context: RowContext | None = None,
    ) -> torch.Tensor:
        """Append a batch of transitions (leading dim n); returns their row indices (CPU int64).

        A labelled buffer takes ``raw_reward=None`` and the rows' ``context``: they wait for labels.

        Row j of a batch is taken to continue row j of the previous ``add`` (copy j of a vector env):
        its pixel obs is stored again only if it differs from that row's next frame (episode ends,
        resets), which is checked on the contents, so any batch is stored correctly.
        """
        n = action.shape[0]
        if n > self.capacity:
            raise ValueError(f"adding {n} transitions to a buffer of capacity {self.capacity}")
        obs_columns, next_columns = self.columns_on_device(obs), self.columns_on_device(next_obs)
        prev = None
        if self.ring is not None:
            prev = self.ring.candidates({k: obs_columns[k] for k in self.ring.columns})
        return self.extend(obs_columns, action, raw_reward, next_columns, terminated, prev, context)

    def extend(
        self,
        obs: dict[str, torch.Tensor],
        action: torch.Tensor,
        raw_reward: torch.Tensor | None,
        next_obs: dict[str, torch.Tensor],
        terminated: torch.Tensor,
        prev: np.ndarray | None,
        context: RowContext | None = None,
    ) -> torch.Tensor:
        """Append rows given as columns already on the device (``columns_on_device``); ``prev`` says,
        per row, which stored frame its pixel obs repeats (``FrameRing.write``; None without pixels).
        Returns the rows' indices (CPU int64)."""
        n = action.shape[0]
        if self.labelled != (raw_reward is None) or self.labelled != (context is not None):
            raise ValueError(
                "replay buffer: a labelled buffer takes rows with a context and no reward, any other "
                "buffer rows with a reward"
            )
        rows = self._rows(n)
        for key in self.obs:
            rows.write(self.obs[key], obs[key])
            rows.write(self.next_obs[key], next_obs[key])
        oldest = self.rows_added - self.size  # serial of the oldest sampleable row
        if self.ring is not None:
            pixels = self.ring.columns
            obs_slots, next_slots, evicted = self.ring.write(
                self.rows_added,
                {k: obs[k] for k in pixels},
                {k: next_obs[k] for k in pixels},
                prev,
            )
            rows.write(self.obs_idx, torch.from_numpy(obs_slots))
            rows.write(self.next_idx, torch.from_numpy(next_slots))
            oldest = max(oldest, evicted + 1)
        rows.write(self.action, action)
        if context is None:
            reward = rows.write(self.reward, raw_reward)
            if (self.reward_scale, self.reward_bias) != (1.0, 0.0):
                rows.write(self.reward, self.scale_reward(reward))
        else:  # pending: a missing label is NaN, never 0 (and never sampled)
            rows.fill(self.reward, torch.nan)
            for key, column in self.view.items():
                rows.write(column, context.view[key])
            rows.write(self.episode, context.episode)
            rows.write(self.episode_step, context.step)
            rows.write(self.env_terminated, terminated)
            rows.fill(self.success, False)
            rows.fill(self.label_model, -1)
        rows.write(self.terminated, terminated)
        rows.fill(self.mc_return, -torch.inf)
        self.rows_added += n
        self.ptr = self.rows_added % self.capacity
        self.size = self.rows_added - max(oldest, self.rows_added - self.capacity)
        return rows.index

    def _rows(self, n: int) -> _RowWriter:
        return _RowWriter(self.ptr, n, self.capacity, self.device)

    def scale_reward(self, raw_reward: torch.Tensor) -> torch.Tensor:
        """``raw * reward_scale + reward_bias``: env rewards at ``add`` and model labels alike."""
        return raw_reward * self.reward_scale + self.reward_bias

    def pending(self, limit: int) -> tuple[int, torch.Tensor]:
        """The oldest pending rows, at most ``limit``: the serial of the first and their ring
        positions, oldest first (empty when none waits). Rows the ring overwrote while pending are
        skipped for good."""
        self.labelled_upto = max(self.labelled_upto, self.oldest_serial)
        count = min(limit, self.rows_added - self.labelled_upto)
        return self.labelled_upto, self.positions(self.labelled_upto, count)

    def positions(self, serial: int, count: int) -> torch.Tensor:
        """Ring positions of the ``count`` rows from ``serial`` on (CPU int64)."""
        return (serial + torch.arange(count)) % self.capacity

    def row_context(self, positions: torch.Tensor) -> RowContext:
        """The stored context of ``positions`` (compact copies, safe to read while rows are added)."""
        index = positions.to(self.device)
        return RowContext(
            view={k: v.index_select(0, index) for k, v in self.view.items()},
            episode=self.episode.index_select(0, index),
            step=self.episode_step.index_select(0, index),
        )

    def model_index(self, model_hash: str) -> int:
        """The ``label_models`` index of ``model_hash``, added on first use."""
        if model_hash not in self.label_models:
            self.label_models.append(model_hash)
        return self.label_models.index(model_hash)

    def write_labels(
        self,
        serial: int,
        raw_reward: torch.Tensor,
        done: torch.Tensor,
        success: torch.Tensor,
        model_hash: str,
    ) -> torch.Tensor:
        """Label the oldest pending rows, from ``serial`` (``pending``'s answer) on, and move the
        cursor past them; rows the ring overwrote meanwhile are skipped. Returns the positions written."""
        if serial != self.labelled_upto:
            raise ValueError(f"labels for row {serial}, but the oldest pending row is {self.labelled_upto}")
        n = int(raw_reward.shape[0])
        skip = min(n, max(0, self.oldest_serial - serial))
        positions = self.positions(serial + skip, n - skip)
        self.relabel(positions, raw_reward[skip:], done[skip:], success[skip:], model_hash)
        self.labelled_upto = serial + n
        return positions

    def relabel(
        self,
        positions: torch.Tensor,
        raw_reward: torch.Tensor,
        done: torch.Tensor,
        success: torch.Tensor,
        model_hash: str,
    ) -> None:
        """Write labels for stored rows: the reward through ``scale_reward``, ``terminated`` as the
        env's or the label's ``done``, the success and the model's index. Does not move the cursor."""
        if not self.labelled:
            raise ValueError("replay buffer: only a labelled buffer takes a reward model's labels")
        index = positions.to(self.device)
        model = self.model_index(model_hash)
        self.reward[index] = self.scale_reward(raw_reward.to(self.device, torch.float32))
        done = done.to(self.device, torch.float32)
        self.terminated[index] = torch.maximum(self.env_terminated.index_select(0, index), done)
        self.success[index] = success.to(self.device, torch.bool)
        self.label_model[index] = model

    def write_mc_returns(self, episode_rows: torch.Tensor) -> None:
        """Fill the return-to-go of one finished episode, given its row indices in time order."""
        rewards = self.reward[episode_rows.to(self.device)].cpu().numpy()
        ends = np.zeros(len(rewards), dtype=bool)
        ends[-1] = True
        returns = mc_return_to_go(rewards, ends, self.gamma)
        self.mc_return[episode_rows.to(self.device)] = torch.from_numpy(returns).to(self.device)

    def set_mc_returns(self, rows: torch.Tensor, returns: torch.Tensor) -> None:
        """Write precomputed returns-to-go for ``rows`` (a dataset's, computed per episode)."""
        self.mc_return[rows.to(self.device)] = returns.to(self.device, torch.float32)

    def reserve_frames(self, needed: int) -> None:
        """Grow the frame ring, if needed, so ``needed`` new frames fit beside those the buffer's rows
        still use; rows keep pointing at their frames."""
        if self.ring is None:
            return
        if self.size == 0:
            if needed > self.ring.slots:
                self.ring.resize(needed, keep=False)
            return
        live = self.obs_idx.index_select(0, self._window_rows()).cpu().numpy()
        in_use = int(self.ring.age(live.astype(np.int64)).max()) + 1
        if in_use + needed > self.ring.slots:
            remap = torch.from_numpy(self.ring.resize(in_use + needed, keep=True)).to(self.device)
            for column in (self.obs_idx, self.next_idx):
                column.copy_(remap.index_select(0, column.long()).to(torch.int32))

    def sample(self, n: int) -> Batch:
        count = len(self)
        if count == 0:
            raise RuntimeError("sampling from an empty replay buffer (or one whose rows all wait for labels)")
        index = torch.randint(0, count, (n,), device=self.device, generator=self.generator)
        # Pending rows are the newest: the labelled ones start at the oldest row, even in a full ring.
        start = self._window_start() if count == self.size else self.oldest_serial % self.capacity
        if start:  # only after a pixel buffer dropped rows early; host integers, no synchronisation
            index = (index + start) % self.capacity
        return self.gather(index)

    def gather(self, index: torch.Tensor) -> Batch:
        # index_select is about twice as fast as advanced indexing for a row gather on CPU.
        def rows(column: torch.Tensor) -> torch.Tensor:
            return column.index_select(0, index)

        obs, next_obs = {}, {}
        if self.ring is not None:
            obs_slots, next_slots = rows(self.obs_idx), rows(self.next_idx)
            for key, frames in self.ring.frames.items():
                obs[key] = frames.index_select(0, obs_slots)
                next_obs[key] = frames.index_select(0, next_slots)
        for key in self.obs:
            obs[key] = rows(self.obs[key])
            next_obs[key] = rows(self.next_obs[key])
        order = list(self.obs_spec.columns)
        return Batch(
            obs=self._as_obs({k: obs[k] for k in order}),
            action=rows(self.action),
            reward=rows(self.reward),
            next_obs=self._as_obs({k: next_obs[k] for k in order}),
            terminated=rows(self.terminated),
            mc_return=rows(self.mc_return),
        )

    def _window_start(self) -> int:
        """Ring position of the oldest sampleable row: 0 unless a pixel buffer dropped rows early
        (a full buffer is the whole ring, taken from position 0)."""
        if self.size == self.capacity:
            return 0
        return (self.rows_added - self.size) % self.capacity

    def _window_rows(self) -> torch.Tensor:
        """Ring positions of the sampleable rows, oldest first when some were dropped early."""
        return ((self._window_start() + torch.arange(self.size)) % self.capacity).to(self.device)

    def state_dict(self) -> dict[str, Any]:
        """Only the sampleable rows (and the frames they use) are saved, so a checkpoint's size follows
        the data, not the capacity."""
        start = self._window_start()
        window = None if start == 0 else self._window_rows()

        def filled(column: torch.Tensor) -> torch.Tensor:
            if window is not None:
                return column.index_select(0, window).cpu()  # a compact copy
            # clone(): a slice is a view, and torch.save would write the whole preallocated storage.
            return column[: self.size].clone().cpu()

        state = {
            "capacity": self.capacity,
            "ptr": self.ptr,
            "size": self.size,
            "rows_added": self.rows_added,
            "row_start": start,
            "obs": {k: filled(v) for k, v in self.obs.items()},
            "next_obs": {k: filled(v) for k, v in self.next_obs.items()},
            "action": filled(self.action),
            "reward": filled(self.reward),
            "terminated": filled(self.terminated),
            "mc_return": filled(self.mc_return),
            "generator": self.generator.get_state(),
        }
        if self.labelled:
            state["labels"] = {
                "labelled_upto": self.labelled_upto,
                "label_models": list(self.label_models),
                "view": {k: filled(v) for k, v in self.view.items()},
                **{name: filled(getattr(self, name)) for name in LABEL_COLUMNS},
            }
        if self.ring is not None:
            state["obs_idx"], state["next_idx"] = filled(self.obs_idx), filled(self.next_idx)
            referenced = torch.cat([state["obs_idx"], state["next_idx"]]).numpy().astype(np.int64)
            state["frames"] = self.ring.state_dict(referenced)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(
                f"replay buffer: checkpoint capacity {state['capacity']} != configured {self.capacity}"
            )
        if (
            set(state["obs"]) != set(self.obs)
            or ("frames" in state) != (self.ring is not None)
            or state["action"].shape[1:] != self.action.shape[1:]
        ):
            raise ValueError("replay buffer: checkpoint observation/action columns do not match this buffer")
        size, ptr, rows_added, start = state["size"], state["ptr"], state["rows_added"], state["row_start"]
        positions = (start + np.arange(size)) % self.capacity
        window = torch.from_numpy(positions).to(self.device)

        def restore(column: torch.Tensor, saved: torch.Tensor) -> None:
            column.index_copy_(0, window, saved.to(self.device, column.dtype))

        for key in self.obs:
            if state["obs"][key].shape[1:] != self.obs[key].shape[1:]:
                raise ValueError(
                    f"replay buffer: observation column {key!r} has another shape in the checkpoint"
                )
            restore(self.obs[key], state["obs"][key])
            restore(self.next_obs[key], state["next_obs"][key])
        for name in ("action", "reward", "terminated", "mc_return"):
            restore(getattr(self, name), state[name])
        if ("labels" in state) != self.labelled:
            raise ValueError("replay buffer: checkpoint and buffer differ in waiting for reward-model labels")
        if self.labelled:
            labels = state["labels"]
            if set(labels["view"]) != set(self.view):
                raise ValueError("replay buffer: checkpoint reward-view columns do not match this buffer")
            for key, column in self.view.items():
                restore(column, labels["view"][key])
            for name in LABEL_COLUMNS:
                restore(getattr(self, name), labels[name])
            self.labelled_upto, self.label_models = labels["labelled_upto"], list(labels["label_models"])
        if self.ring is not None:
            restore(self.obs_idx, state["obs_idx"])
            restore(self.next_idx, state["next_idx"])
            # A full buffer is saved from position 0, not oldest first: serials follow the positions.
            serials = rows_added - 1 - (ptr - 1 - positions) % self.capacity
            self.ring.load_state_dict(state["frames"], state["obs_idx"].numpy().astype(np.int64), serials)
        self.ptr, self.size, self.rows_added = ptr, size, rows_added
        self.generator.set_state(state["generator"])

    def columns_on_device(self, obs: Obs) -> dict[str, torch.Tensor]:
        """The observation's columns on the buffer's device, in their stored dtypes."""
        return {
            key: value.to(self.device, self.obs_spec.columns[key][1])
            for key, value in self._columns(obs).items()
        }

    def _columns(self, obs: Obs) -> dict[str, torch.Tensor]:
        if self.obs_spec.is_dict:
            if not isinstance(obs, dict):
                raise TypeError("this buffer stores dict observations")
            return obs
        return {ARRAY_KEY: obs}

    def _as_obs(self, columns: dict[str, torch.Tensor]) -> Obs:
        return columns if self.obs_spec.is_dict else columns[ARRAY_KEY]
