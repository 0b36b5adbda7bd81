"""Issue 17's peer side by side: o2o's CQL and IQL against d3rlpy 2.8.1's on the same data, with the
same number of gradient updates, scored by the same evaluation episodes.

    .venv/bin/python -m experiments.peer_d3rlpy [--algos cql iql] [--seeds 0 1 2] [--updates 20000]
        [--episodes 10] [--dataset hopper-medium] [--impls o2o d3rlpy] [--out ~/o2o_runs/peer_d3rlpy]

Each (implementation, algorithm, seed) is one job; finished jobs are rows of ``<out>/scores.csv`` and
are skipped when the command runs again, so it resumes job by job. ``--report DIR`` writes the
table (``DIR/table.md``, ``DIR/scores.csv``) from the finished rows and runs nothing.

- **o2o**: ``rl.train agent=<algo> dataset=<dataset> steps.offline=<updates> steps.online=0`` with
  the agent's defaults (the official settings the fidelity issue settled; IQL's actor cosine over
  ``--updates``, as d3rlpy's below), one torch thread, as a subprocess; its score is the
  ``normalized_score`` it logs at the last update.
- **o2o-bf16** (only when named in ``--impls``): the same o2o run with ``precision=bf16``, the
  learning check that decides whether bf16 may become a default; tested against o2o's float32 rows
  with the same spread rule.
- **d3rlpy**: its own D4RL-locomotion reproduction settings (``reproductions/offline/{cql,iql}.py``
  of the d3rlpy repository): CQL with 256x256 networks, actor/critic/temperature rates 1e-4/3e-4/1e-4,
  a learned alpha from e with threshold 10, conservative weight 5 (its choice for every dataset but
  the ``-v0`` medium ones), 10 action samples; IQL with rates 3e-4, expectile 0.7, weight temperature
  3, max weight 100, the return-based reward scale x1000 and the actor's cosine schedule, whose
  length (500k there) is set to ``--updates`` here, as their script sets it to its own run length.
  Batch 256 for both. The data is the same rows, loaded by o2o's loader into d3rlpy's ``MDPDataset``
  (episodes cut where o2o's are: terminals and time-outs).
- **The same evaluation**: both policies go through ``rl.loops.evaluate.evaluate`` on the env the
  preset names, with o2o's episode seeds for the run's seed (``10_000 * (seed + 1) + i``),
  deterministic actions, and the same score normaliser (the dataset's reference scores).

"Within the spread" (the issue's test): the difference of the two means is less than the larger of
the two standard deviations across seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
FIELDS = ("impl", "algo", "seed", "updates", "episodes", "normalized_score")


def o2o_score(
    algo: str, dataset: str, seed: int, updates: int, episodes: int, run_dir: Path, precision: str = "fp32"
) -> float:
    command = [
        sys.executable, "-m", "rl.train", f"agent={algo}", f"dataset={dataset}", f"seed={seed}",
        f"steps.offline={updates}", "steps.online=0", f"steps.eval_every={updates}",
        f"steps.eval_episodes={episodes}", f"precision={precision}", "threads=1", "progress=false",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    if algo == "iql":  # the actor's cosine over this run, as d3rlpy's T_max (CORL: over its 1M)
        command.append(f"agent.actor_lr_decay_steps={updates}")
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
    with (run_dir / "metrics.csv").open() as f:
        scores = [
            float(r["value"])
            for r in csv.DictReader(f)
            if r["metric"] == "normalized_score" and int(r["step"]) == updates
        ]
    if len(scores) != 1:
        raise SystemExit(f"peer_d3rlpy: {run_dir}/metrics.csv has no normalized_score at step {updates}")
    return scores[0]


class D3rlpyPolicy:
    """A fitted d3rlpy algorithm as ``evaluate`` calls an o2o agent: ``act(obs, deterministic)``."""

    device = torch.device("cpu")

    def __init__(self, algo: object) -> None:
        self.algo = algo

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return torch.as_tensor(self.algo.predict(obs.numpy()))


def d3rlpy_config(algo: str, updates: int) -> object:
    import d3rlpy

    encoder = d3rlpy.models.encoders.VectorEncoderFactory([256, 256])
    if algo == "cql":
        return d3rlpy.algos.CQLConfig(
            actor_learning_rate=1e-4, critic_learning_rate=3e-4, temp_learning_rate=1e-4,
            alpha_learning_rate=3e-4, initial_alpha=float(np.e), actor_encoder_factory=encoder,
            critic_encoder_factory=encoder, batch_size=256, n_action_samples=10, alpha_threshold=10,
            conservative_weight=5.0,
        )  # fmt: skip
    return d3rlpy.algos.IQLConfig(
        actor_learning_rate=3e-4, critic_learning_rate=3e-4,
        actor_optim_factory=d3rlpy.optimizers.AdamFactory(
            lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=updates)
        ),
        batch_size=256, weight_temp=3.0, max_weight=100.0, expectile=0.7,
        reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0),
    )  # fmt: skip


def d3rlpy_score(algo: str, dataset: str, seed: int, updates: int, episodes: int) -> float:
    import d3rlpy

    import envs
    from rl.config import compose_config
    from rl.data import ScoreNormalizer, load_dataset
    from rl.loops.evaluate import evaluate

    cfg = compose_config([f"dataset={dataset}", f"seed={seed}"])
    data = load_dataset(cfg.dataset.source)
    timeouts = data.truncated.copy()
    timeouts[-1] = timeouts[-1] or not data.terminated[-1]  # d3rlpy needs the last episode closed
    mdp = d3rlpy.dataset.MDPDataset(
        observations=data.observations,
        actions=data.actions,
        rewards=data.rewards,
        terminals=data.terminated.astype(np.float32),
        timeouts=timeouts.astype(np.float32),
    )
    torch.set_num_threads(1)
    d3rlpy.seed(seed)
    learner = d3rlpy_config(algo, updates).create(device="cpu:0")
    learner.fit(
        mdp,
        n_steps=updates,
        n_steps_per_epoch=updates,
        show_progress=False,
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
    )
    env = envs.make(cfg.env)
    normalizer = ScoreNormalizer.for_run(cfg.env.score_name, data.info.ref_min_score, data.info.ref_max_score)
    try:
        result = evaluate(D3rlpyPolicy(learner), env, episodes, 10_000 * (seed + 1), normalizer)
    finally:
        env.close()
    return result["normalized_score"]


def read_scores(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def table(rows: list[dict[str, str]]) -> tuple[str, dict]:
    """Markdown table of mean ± std per (algo, impl), and the issue's spread test per algorithm."""
    by: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        by.setdefault((r["algo"], r["impl"]), []).append(float(r["normalized_score"]))
    lines = [
        "| algorithm | implementation | seeds | normalised score (mean ± std) | per seed |",
        "|---|---|---|---|---|",
    ]
    verdicts = {}
    for (algo, impl), scores in sorted(by.items()):
        lines.append(
            f"| {algo} | {impl} | {len(scores)} | {np.mean(scores):.1f} ± {np.std(scores):.1f} | "
            f"{', '.join(f'{s:.1f}' for s in scores)} |"
        )
    for algo in sorted({a for a, _ in by}):
        for ours_impl, theirs_impl in (("o2o", "d3rlpy"), ("o2o-bf16", "o2o")):
            ours, theirs = by.get((algo, ours_impl)), by.get((algo, theirs_impl))
            if ours and theirs:
                gap = float(np.mean(ours) - np.mean(theirs))
                spread = float(max(np.std(ours), np.std(theirs)))
                verdicts[f"{algo}: {ours_impl} against {theirs_impl}"] = {
                    "difference_of_means": round(gap, 2),
                    "larger_std": round(spread, 2),
                    "within_spread_or_above": gap >= 0 or abs(gap) < spread,
                }
    return "\n".join(lines) + "\n", verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["cql", "iql"], choices=["cql", "iql"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--dataset", default="hopper-medium")
    parser.add_argument(
        "--impls", nargs="+", default=["o2o", "d3rlpy"], choices=["o2o", "o2o-bf16", "d3rlpy"]
    )
    parser.add_argument("--out", type=Path, default=Path.home() / "o2o_runs" / "peer_d3rlpy")
    parser.add_argument("--report", type=Path, help="write table.md and scores.csv here and stop")
    args = parser.parse_args()
    scores_path = args.out / "scores.csv"
    if args.report is not None:
        rows = read_scores(scores_path)
        text, verdicts = table(rows)
        args.report.mkdir(parents=True, exist_ok=True)
        (args.report / "table.md").write_text(text)
        (args.report / "scores.csv").write_text(scores_path.read_text())
        print(text + json.dumps(verdicts, indent=2))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    done = {(r["impl"], r["algo"], r["seed"], r["updates"], r["episodes"]) for r in read_scores(scores_path)}
    for algo in args.algos:
        for seed in args.seeds:
            for impl in args.impls:
                key = (impl, algo, str(seed), str(args.updates), str(args.episodes))
                if key in done:
                    continue
                if impl.startswith("o2o"):
                    run_dir = args.out / f"{impl}-{algo}-{args.dataset}-s{seed}"
                    precision = "bf16" if impl == "o2o-bf16" else "fp32"
                    score = o2o_score(
                        algo, args.dataset, seed, args.updates, args.episodes, run_dir, precision
                    )
                else:
                    score = d3rlpy_score(algo, args.dataset, seed, args.updates, args.episodes)
                new = not scores_path.is_file()
                with scores_path.open("a", newline="") as f:
                    writer = csv.writer(f)
                    if new:
                        writer.writerow(FIELDS)
                    writer.writerow([*key, f"{score:.4f}"])
                print(f"{impl} {algo} seed {seed}: {score:.1f}", flush=True)
    print(table(read_scores(scores_path))[0])


if __name__ == "__main__":
    main()
