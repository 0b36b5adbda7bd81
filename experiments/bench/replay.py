"""Replay buffer cost: sample latency and bytes per transition. Prints JSON.

    .venv/bin/python experiments/bench/replay.py [--rows 1000000] [--pixel-rows 20000]

- ``sample_256_us``: one ``ReplayBuffer.sample(256)`` (index generation + gather) from ``--rows``
  state transitions (obs 17, act 6), median over repeated calls; ``mixed_sample_256_us`` the same
  through a 50/50 ``MixedSampler``; ``numpy_gather_256_us`` the baseline of a plain numpy fancy-index
  gather of the same columns in the same process.
- ``bytes_per_transition``: the buffer's allocated bytes divided by its capacity, for the state buffer
  and for an 84x84x3 uint8 pixel buffer, against the raw bytes of one frame (the target is at most
  1.1x the frames it holds).
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


def allocated_bytes(buffer: ReplayBuffer) -> int:
    tensors = [
        *buffer.obs.values(),
        *buffer.next_obs.values(),
        buffer.action,
        buffer.reward,
        buffer.terminated,
        buffer.mc_return,
    ]
    return sum(t.numel() * t.element_size() for t in tensors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pixel-rows", type=int, default=20_000)
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

    pixel_spec = ObsSpec({"pixels": ((84, 84, 3), torch.uint8)}, True)
    pixels = ReplayBuffer(args.pixel_rows, pixel_spec, action_dim=6)
    frame_bytes = 84 * 84 * 3
    result = {
        "rows": args.rows,
        "sample_256_us": median_us(lambda: state.sample(256)),
        "mixed_sample_256_us": median_us(lambda: mixed.sample(256)),
        "numpy_gather_256_us": median_us(numpy_gather),
        "bytes_per_transition": {
            "state_obs17_act6": allocated_bytes(state) / args.rows,
            "pixels_84x84x3": allocated_bytes(pixels) / args.pixel_rows,
            "pixels_raw_frame": frame_bytes,
        },
    }
    ratio = result["bytes_per_transition"]["pixels_84x84x3"] / frame_bytes
    result["pixel_bytes_over_raw_frame"] = round(ratio, 3)
    result["targets"] = {"pixel buffer <= 1.1x raw frames": ratio <= 1.1}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
