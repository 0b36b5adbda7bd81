"""Success classifier: frames labelled per second on CPU (84x84, batch 64).

    .venv/bin/python -m experiments.bench.reward_classifier [--rounds 5] [--batches 10] [--threads 1]
        [--checkpoint <classifier.pt>]

Prints JSON. The figure is ``ClassifierReward.label`` (the call the loop's labeller and the relabel
make) on batches of 64 random uint8 84x84 frames per camera: the default classifier of
``python -m rl.rewards train-classifier`` (DrQ's conv trunk, 32 filters, spatial-embedding head, one
camera), the same with both Lift cameras, and the ``--checkpoint`` classifier if given. Each figure is
the median over ``--rounds`` interleaved rounds of ``--batches`` label calls, so a change of load hits
all alike: rows (labelled transitions) and frames (rows x cameras) per second by the wall clock, and
this process's CPU time per batch (what other processes' load distorts least). ``load``: ``os.getloadavg()`` before and after (the machine is shared: compare ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from rl.nets import EncoderConfig
from rl.rewards import LabelInput, RewardConfig, build_reward_model
from rl.rewards.classifier import ClassifierReward, SuccessClassifier, TrainClassifierConfig

BATCH, SIZE = 64, 84


def default_model(cameras: list[str]) -> ClassifierReward:
    torch.manual_seed(0)
    defaults = TrainClassifierConfig()
    encoder = EncoderConfig(
        kind=defaults.backbone, feature_dim=defaults.feature_dim, filters=defaults.filters, head=defaults.head
    )
    return ClassifierReward(SuccessClassifier(cameras, SIZE, encoder), threshold=0.5, label_batch=BATCH)


def batch_for(model: ClassifierReward, g: torch.Generator) -> LabelInput:
    frames = {
        cam: torch.randint(0, 256, (BATCH, SIZE, SIZE, 3), generator=g, dtype=torch.uint8)
        for cam in model.cameras
    }
    return LabelInput(frames, {}, torch.zeros(BATCH, dtype=torch.int64), torch.arange(BATCH))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=10, help="label calls per round and figure")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--checkpoint", default=None, help="also time this trained classifier")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    models = {
        "default_agentview": default_model(["agentview"]),
        "default_two_cameras": default_model(["agentview", "robot0_eye_in_hand"]),
    }
    if args.checkpoint:
        models["checkpoint"] = build_reward_model(
            RewardConfig(name="classifier", path=args.checkpoint, label_batch=BATCH), torch.device("cpu")
        )
    g = torch.Generator().manual_seed(0)
    batches = {name: batch_for(model, g) for name, model in models.items()}
    for name, model in models.items():
        model.label(batches[name])  # warm-up (oneDNN picks its kernels on the first call)
    seconds: dict[str, list[float]] = {name: [] for name in models}
    cpu: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.batches):
                model.label(batches[name])
            seconds[name].append((time.perf_counter() - start) / args.batches)
            cpu[name].append((time.process_time() - start_cpu) / args.batches)
    result = {
        "what": "ClassifierReward.label on 64 random 84x84 uint8 frames per camera, CPU",
        "batch": BATCH,
        "image_size": SIZE,
        "torch_threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "batches_per_round": args.batches,
        "figures": {
            name: {
                "cameras": list(models[name].cameras),
                "rows_per_second": round(BATCH / statistics.median(seconds[name]), 1),
                "frames_per_second": round(
                    len(models[name].cameras) * BATCH / statistics.median(seconds[name]), 1
                ),
                "ms_per_batch": round(1000 * statistics.median(seconds[name]), 2),
                "cpu_ms_per_batch": round(1000 * statistics.median(cpu[name]), 2),
            }
            for name in models
        },
        "load": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
