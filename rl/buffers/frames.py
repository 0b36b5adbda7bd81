"""Frame-deduplicated storage for the replay buffer's uint8 (pixel) observation columns.

Storing ``obs`` and ``next_obs`` per row keeps every frame twice, since the next observation of a
transition is the observation of the same env copy's following transition. ``FrameRing`` keeps each
frame once, in a ring of ``slots`` frames written oldest-first; the replay buffer keeps per row two
integer indices into it, ``obs_idx`` and ``next_idx`` (8 bytes a row against 21,168 for an 84x84x3
frame), and sampling gathers the frames through them on the device.

What is written per row of an append (in row order, so frame age follows row order):

- the next frame, always;
- the obs frame only when it is not already stored: ``prev`` says, per row, either ``NO_FRAME`` (write
  it), ``CHAIN`` (it equals the next frame of the previous row of the same append: consecutive rows of
  a dataset) or the slot of a stored frame that holds exactly this observation.

The replay buffer fills ``prev`` by comparing contents, never by trusting a flag: for a vector-env
``add`` of n rows, row j is compared with the next frame written for row j by the previous ``add``
(``candidates``), and dataset rows with the previous row's ``next_obs``. At an episode end that
comparison fails (the copy's new obs is its reset frame, while the final frame stays stored as the
ended row's next frame), so both are kept; after a resume that reset the env it fails too. A wrong
``prev`` therefore cannot happen; a missed one only costs one frame.

The ring is bounded, so an old frame is eventually overwritten while a row may still point at it.
``owner[slot]`` is the serial number (count of rows added before it) of the row whose *obs* is that
frame; every write reports the newest owner among the slots it overwrites, and the replay buffer
drops every row up to that serial from the sampleable window. An obs frame is never newer than its
row's next frame, so checking obs frames suffices, and dropping the oldest rows keeps the window
contiguous. A stored frame is reused only if it survives the whole append in progress (``write``),
so a row is never created pointing at a frame that is being overwritten.

With ``slots = capacity * (1 + slack)`` this never drops a row as long as episodes are longer than
``1 / slack`` steps (each episode costs one frame more than its rows: its reset frame); shorter
episodes make the buffer hold fewer than ``capacity`` rows, never wrong ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

NO_FRAME = -1
"""``prev`` value: the row's obs is not stored yet; write it."""
CHAIN = -2
"""``prev`` value: the row's obs equals the next frame of the previous row in the same append."""


class FrameRing:
    def __init__(self, columns: dict[str, tuple[int, ...]], slots: int, device: torch.device) -> None:
        if slots < 3:
            raise ValueError(f"a frame ring needs at least 3 slots, got {slots}")
        if slots >= 2**31:
            raise ValueError(f"{slots} frame slots do not fit the buffer's int32 frame indices")
        self.columns = columns
        self.device = device
        self.slots = slots
        self.frames = {k: self._zeros(slots, shape) for k, shape in columns.items()}
        self.ptr = 0
        """Slot of the next frame to write; slot ``ptr - 1`` holds the newest frame."""
        self.owner = np.full(slots, -1, dtype=np.int64)
        """Serial of the row whose obs frame is in this slot, -1 if none (host bookkeeping, 8 B/slot)."""
        self.last_next = np.zeros(0, dtype=np.int64)
        """Slots of the next frames written by the last append, in row order: the reuse candidates."""

    def _zeros(self, slots: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.zeros((slots, *shape), dtype=torch.uint8, device=self.device)

    def age(self, slots: np.ndarray) -> np.ndarray:
        """Frames written after each slot's frame; it is overwritten once ``age + new >= self.slots``."""
        return (self.ptr - 1 - slots) % self.slots

    def candidates(self, obs: dict[str, torch.Tensor]) -> np.ndarray:
        """``prev`` for a vector-env add: row j reuses the previous append's j-th next frame when that
        frame holds exactly ``obs[j]`` (the copy's episode went on), else ``NO_FRAME``.

        The comparison runs on the buffer's device; on an accelerator reading its n-byte result is the
        one synchronisation of ``add`` (the env step has just copied the observation from the host).
        """
        n = next(iter(obs.values())).shape[0]
        prev = np.full(n, NO_FRAME, dtype=np.int64)
        m = min(n, len(self.last_next))
        if m == 0:
            return prev
        candidate = self.last_next[:m]
        index = torch.from_numpy(candidate).to(self.device)
        same = torch.ones(m, dtype=torch.bool, device=self.device)
        for key, value in obs.items():
            stored = self.frames[key].index_select(0, index)
            same &= (stored == value[:m]).flatten(1).all(1)
        prev[:m] = np.where(same.cpu().numpy(), candidate, NO_FRAME)
        return prev

    def write(
        self,
        first_row: int,
        obs: dict[str, torch.Tensor],
        next_obs: dict[str, torch.Tensor],
        prev: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Store the frames of rows ``first_row, first_row + 1, ...`` (uint8 tensors on the device).

        Returns each row's obs slot and next slot, and the newest row serial whose obs frame was
        overwritten (-1 if none): that row and all older ones must leave the sampleable window.
        Appends larger than half the ring are written in pieces, so that no piece writes a slot twice.
        """
        n = len(prev)
        # A stored frame is reused only if it survives the whole append, counted as if no reuse
        # happened (the age of a slot that was overwritten meanwhile would read as young).
        most = n + int((prev != CHAIN).sum())
        prev = np.where((prev >= 0) & (self.age(prev) + most >= self.slots), NO_FRAME, prev)
        step = (self.slots - 1) // 2  # a piece writes at most 2 * step < slots frames
        obs_slots = np.empty(n, dtype=np.int64)
        next_slots = np.empty(n, dtype=np.int64)
        evicted = -1
        for start in range(0, n, step):
            stop = min(start + step, n)
            piece = prev[start:stop].copy()
            if piece[0] == CHAIN:  # the previous piece's last next frame: the newest, it survives
                piece[0] = next_slots[start - 1] if start > 0 else NO_FRAME
            obs_slots[start:stop], next_slots[start:stop], dropped = self._write(
                first_row + start,
                {k: v[start:stop] for k, v in obs.items()},
                {k: v[start:stop] for k, v in next_obs.items()},
                piece,
            )
            evicted = max(evicted, dropped)
        self.last_next = next_slots
        return obs_slots, next_slots, evicted

    def _write(
        self,
        first_row: int,
        obs: dict[str, torch.Tensor],
        next_obs: dict[str, torch.Tensor],
        prev: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        n = len(prev)
        fresh = prev == NO_FRAME
        counts = 1 + fresh  # per row, in order: [its obs frame,] its next frame
        ends = np.cumsum(counts)
        total = int(ends[-1])
        slots = (self.ptr + np.arange(total)) % self.slots
        next_slots = slots[ends - 1]
        obs_slots = prev.copy()
        obs_slots[fresh] = slots[ends[fresh] - 2]
        chained = np.flatnonzero(prev == CHAIN)  # never row 0: ``write`` resolves that one
        obs_slots[chained] = next_slots[chained - 1]

        evicted = int(self.owner[slots].max())
        self.owner[slots] = -1
        self.owner[obs_slots] = first_row + np.arange(n)

        next_index = torch.from_numpy(next_slots).to(self.device)
        fresh_rows = np.flatnonzero(fresh)
        fresh_index = torch.from_numpy(obs_slots[fresh_rows]).to(self.device)
        fresh_source = torch.from_numpy(fresh_rows).to(self.device)
        for key, frames in self.frames.items():
            frames.index_copy_(0, next_index, next_obs[key])
            if len(fresh_rows):
                frames.index_copy_(0, fresh_index, obs[key].index_select(0, fresh_source))
        self.ptr = (self.ptr + total) % self.slots
        return obs_slots, next_slots, evicted

    def resize(self, slots: int, keep: bool) -> np.ndarray | None:
        """Give the ring ``slots`` slots (at least as many as now).

        ``keep``: the frames move, oldest first, to slots ``0 .. old slots - 1``; returns each old
        slot's new slot so the caller can remap its row indices. Without ``keep`` (no row points into
        the ring) the old storage is freed before the new one is allocated, so memory never doubles.
        """
        if slots < self.slots:
            raise ValueError(f"a frame ring only grows ({self.slots} -> {slots} slots)")
        old_slots, ptr = self.slots, self.ptr
        remap = None
        for key in list(self.frames):
            if not keep:
                del self.frames[key]  # free before allocating the new storage
                self.frames[key] = self._zeros(slots, self.columns[key])
                continue
            old, new = self.frames[key], self._zeros(slots, self.columns[key])
            new[: old_slots - ptr] = old[ptr:]  # oldest frames first
            new[old_slots - ptr : old_slots] = old[:ptr]
            self.frames[key] = new
            del old
        owner = np.full(slots, -1, dtype=np.int64)
        if keep:
            order = (ptr + np.arange(old_slots)) % old_slots
            remap = np.empty(old_slots, dtype=np.int64)
            remap[order] = np.arange(old_slots)
            owner[:old_slots] = self.owner[order]
            self.last_next = remap[self.last_next]
            self.ptr = old_slots % slots
        else:
            self.last_next = np.zeros(0, dtype=np.int64)
            self.ptr = 0
        self.owner, self.slots = owner, slots
        return remap

    def state_dict(self, referenced: np.ndarray) -> dict[str, Any]:
        """The frames at ``referenced`` slots (those the saved rows point at) and the reuse candidates;
        other slots are never read again before being overwritten, so they are not saved."""
        keep = np.union1d(referenced, self.last_next).astype(np.int64)
        index = torch.from_numpy(keep).to(self.device)
        return {
            "slots": self.slots,
            "ptr": self.ptr,
            "saved_slots": torch.from_numpy(keep),
            # index_select makes compact copies: a view would save the whole ring.
            "frames": {k: v.index_select(0, index).cpu() for k, v in self.frames.items()},
            "last_next": torch.from_numpy(self.last_next.copy()),
        }

    def load_state_dict(self, state: dict[str, Any], obs_slots: np.ndarray, rows: np.ndarray) -> None:
        """Restore ``state``; ``obs_slots[i]`` is the obs frame of the live row with serial ``rows[i]``."""
        if set(state["frames"]) != set(self.frames):
            raise ValueError("replay buffer: checkpoint pixel columns do not match this buffer")
        for key, saved in state["frames"].items():
            if saved.shape[1:] != self.frames[key].shape[1:]:
                raise ValueError(f"replay buffer: pixel column {key!r} has another shape in the checkpoint")
        if state["slots"] != self.slots:
            # fill_from_dataset (reserve_frames) may have grown the ring of the saved buffer.
            for key in list(self.frames):
                del self.frames[key]
                self.frames[key] = self._zeros(state["slots"], self.columns[key])
            self.slots = state["slots"]
        index = state["saved_slots"].to(self.device)
        for key, saved in state["frames"].items():
            self.frames[key].index_copy_(0, index, saved.to(self.device))
        self.ptr = state["ptr"]
        self.last_next = state["last_next"].numpy().astype(np.int64)
        # Owners older than the window do not matter (eviction keeps the newest of them), so the
        # live rows' obs slots rebuild the bookkeeping exactly.
        self.owner = np.full(self.slots, -1, dtype=np.int64)
        self.owner[obs_slots] = rows
