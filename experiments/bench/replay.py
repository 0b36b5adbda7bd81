"""Replay buffer cost: sample latency and bytes per transition. Prints JSON.

    .venv/bin/python experiments/bench/replay.py [--rows 1000000] [--pixel-rows 20000]
        [--copies 8] [--episode 500]

- ``sample_256_us``: one ``ReplayBuffer.sample(256)`` (index generation + gather) from ``--rows``
  state transitions (obs 17, act 6), median over repeated calls; ``mixed_sample_256_us`` the same
  through a 50/50 ``MixedSampler``; ``numpy_gather_256_us`` the baseline of a plain numpy fancy-index
  gather of the same columns in the same process.
- ``bytes_per_transition``: every tensor and numpy array the buffer holds (device storage, frame
  indices and host bookkeeping; see ``allocated_bytes``) divided by its capacity, for the state buffer
  and for an 84x84x3 uint8 pixel buffer of ``--pixel-rows``, against the raw bytes of one frame (the
  target is at most 1.1x the frames it holds). The pixel buffer is filled with 1.5x its capacity
  from ``--copies`` vector-env copies with staggered episodes of ``--episode`` steps (each episode
  stores one reset frame more than its rows), so the figure is for a full buffer that wrapped;
  ``pixel_rows_held`` shows that it holds its capacity. ``short_episodes`` repeats the fill with
  10-step episodes, where the frame ring (capacity + 5%) runs out first and the oldest rows leave
  early. ``pixel_add_us`` is one ``add`` of ``--copies`` transitions (mean), ``pixel_sample_256_us``
  one ``sample(256)`` from the pixel buffer (median).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from rl.buffers import MixedSampler, ObsSpec, ReplayBuffer


def median_us(fn, repeats: int = 2000) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e6, 1)


def allocated_bytes(buffer: ReplayBuffer) -> dict[str, int]:
    """Bytes of every tensor and numpy array the buffer holds, found by walking its attributes (and
    those of its frame ring), so nothing it allocates is left out: ``frames`` (uint8 pixel storage),
    ``rows`` (per-row columns, frame indices included) and ``host`` (numpy bookkeeping)."""
    out = {"frames": 0, "rows": 0, "host": 0}

    def visit(name: str, value) -> None:
        if isinstance(value, torch.Tensor):
            out["frames" if value.dtype == torch.uint8 else "rows"] += value.numel() * value.element_size()
        elif isinstance(value, np.ndarray):
            out["host"] += value.nbytes
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(f"{name}.{key}", item)
        elif type(value).__module__.startswith("rl.buffers"):
            for key, item in vars(value).items():
                visit(f"{name}.{key}", item)

    for key, value in vars(buffer).items():
        visit(key, value)
    return out


def fill_pixels(capacity: int, copies: int, episode: int, rows: int) -> tuple[ReplayBuffer, float]:
    """A pixel buffer after ``rows`` transitions from ``copies`` copies with staggered episodes of
    ``episode`` steps; frames come from a pool of distinct random frames, so a frame never equals
    the one before it. Returns the buffer and the mean time of one ``add`` in microseconds."""
    spec = ObsSpec({"pixels": ((84, 84, 3), torch.uint8)}, True)
    buffer = ReplayBuffer(capacity, spec, action_dim=6)
    pool = torch.randint(
        0, 256, (257, 84, 84, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    next_id = copies
    ids = torch.arange(copies)
    left = torch.tensor([episode - (j * episode) // copies for j in range(copies)])
    action, reward = torch.rand(copies, 6), torch.randn(copies)
    spent = 0.0
    steps = rows // copies
    for _ in range(steps):
        next_ids = torch.arange(next_id, next_id + copies)
        next_id += copies
        left -= 1
        done = left == 0
        obs, next_obs = pool[ids % 257], pool[next_ids % 257]
        start = time.perf_counter()
        buffer.add({"pixels": obs}, action, reward, {"pixels": next_obs}, done.float())
        spent += time.perf_counter() - start
        ids = next_ids
        if done.any():  # reset frames
            k = int(done.sum())
            ids[done] = torch.arange(next_id, next_id + k)
            next_id += k
            left[done] = episode
    return buffer, round(spent / steps * 1e6, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pixel-rows", type=int, default=20_000)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--episode", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)

    spec = ObsSpec({"_": ((17,), torch.float32)}, False)
    state = ReplayBuffer(args.rows, spec, action_dim=6)
    chunk = 100_000
    for start in range(0, args.rows, chunk):
        n = min(chunk, args.rows - start)
        obs = torch.randn(n, 17)
        state.add(obs, torch.rand(n, 6), torch.randn(n), obs, torch.zeros(n))
    online = ReplayBuffer(10_000, spec, action_dim=6)
    online.add(
        torch.randn(10_000, 17),
        torch.rand(10_000, 6),
        torch.randn(10_000),
        torch.randn(10_000, 17),
        torch.zeros(10_000),
    )
    mixed = MixedSampler(state, online, 0.5)
    columns = {
        k: np.random.randn(args.rows, d).astype(np.float32)
        for k, d in (("obs", 17), ("next_obs", 17), ("action", 6))
    }
    rng = np.random.default_rng(0)

    def numpy_gather() -> None:
        index = rng.integers(0, args.rows, 256)
        for column in columns.values():
            column[index]

    state_bytes = allocated_bytes(state)
    frame_bytes = 84 * 84 * 3
    pixels, add_us = fill_pixels(args.pixel_rows, args.copies, args.episode, args.pixel_rows * 3 // 2)
    pixel_bytes = allocated_bytes(pixels)
    result = {
        "rows": args.rows,
        "sample_256_us": median_us(lambda: state.sample(256)),
        "mixed_sample_256_us": median_us(lambda: mixed.sample(256)),
        "numpy_gather_256_us": median_us(numpy_gather),
        "pixel_sample_256_us": median_us(lambda: pixels.sample(256), repeats=300),
        "pixel_add_us": add_us,
        "bytes_per_transition": {
            "state_obs17_act6": sum(state_bytes.values()) / args.rows,
            "pixels_84x84x3": sum(pixel_bytes.values()) / args.pixel_rows,
            "pixels_84x84x3_parts": {k: v / args.pixel_rows for k, v in pixel_bytes.items()},
            "pixels_raw_frame": frame_bytes,
        },
        "pixel_rows": args.pixel_rows,
        "pixel_rows_held": len(pixels),
        "pixel_copies": args.copies,
        "pixel_episode": args.episode,
    }
    ratio = result["bytes_per_transition"]["pixels_84x84x3"] / frame_bytes
    result["pixel_bytes_over_raw_frame"] = round(ratio, 3)
    pixels = None  # free it before the next fill
    short, _ = fill_pixels(args.pixel_rows, args.copies, 10, args.pixel_rows * 3 // 2)
    result["short_episodes"] = {
        "episode": 10,
        "rows_held": len(short),
        "of_capacity": round(len(short) / args.pixel_rows, 3),
    }
    result["targets"] = {"pixel buffer <= 1.1x raw frames": ratio <= 1.1}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
