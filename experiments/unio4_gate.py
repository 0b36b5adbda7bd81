"""Claim 4 of the warm-start study: after issue 17's fixes, does Uni-O4's AM-Q gate accept fewer
improvement steps that lower the real policy's return than before them?

    .venv/bin/python -m experiments.unio4_gate [--dataset walker2d-medium] [--seeds 0 1 2]
        [--episodes 10] [--out ~/o2o_runs/unio4_gate] [--report DIR] [-- <rl.train overrides>]

The gate (``rl/agents/unio4.py``): every ``ope_every`` improvement steps, each member's candidate
``pi_i`` is scored by AM-Q and replaces its behaviour policy ``pi_old_i`` where the score beats the
best so far. Two arms run the same improvement stage from the same stage 1, on the same batches:

- ``fixed`` (the agent's defaults since issue 17): AM-Q from one saved set of start states, model
  rollouts ended by the env's termination rule (a fall);
- ``before``: ``agent.amq_fixed_start=false agent.amq_env_termination=false``, the gate as it was:
  each gate scores on that step's batch (a candidate against a best-so-far measured on other states),
  and rollouts end by the learned termination head or the seen-state box, which holds fallen states.

At every gate, each member's candidate is rolled out in the real env (``--episodes`` episodes,
deterministic, the same episode seeds for every policy of a seed), and its normalised score is
compared, paired, with its behaviour policy's on the same episodes (known from when that policy was
accepted; the BC member's is measured at the start). A step **lowers the real return** when the
candidate scores below its behaviour policy. ``gates.csv`` holds one row per (seed, arm, gate,
member); gate 0 is the BC start, identical in both arms (a check that they share stage 1).

Stage 1 (IQL critics, ensemble BC, dynamics) runs once per seed, to one update short of its end, and
is saved (``<out>/seed<S>/stage1.pt``); each arm loads it, reseeds torch and the buffer's sampler the
same way, and runs stage 1's last update itself (where the first best-so-far is scored under the
arm's own gate) and the improvement stage. Its size is a visible choice: by default the o2o_family
preset's stage 1 (``+experiment=o2o_family_unio4``: 128x128 networks) with ``--stage1`` updates,
and the paper's improvement stage (10,000 steps, a gate every 100); the paper's stage 1 (2M critic
updates on 1024x1024 critics) runs about 3 updates/s here. Overrides after ``--`` go to every run.
Finished (seed, arm) jobs are skipped when the command runs again. ``--report DIR`` writes
``DIR/table.md`` and ``DIR/gates.csv`` from the finished rows and runs nothing.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rl.checkpoint import load_checkpoint, save_checkpoint

ARMS = {"fixed": [], "before": ["agent.amq_fixed_start=false", "agent.amq_env_termination=false"]}
FIELDS = ("seed", "arm", "gate", "member", "amq", "amq_best", "accepted", "candidate", "behaviour")


class MemberPolicy:
    """What ``rl.loops.evaluate`` asks of an agent (``act``, ``device``), for one member of a policy
    ensemble: its mean action, clamped as the agent's own ``act``."""

    def __init__(self, policies: torch.nn.Module, member: int, device: torch.device) -> None:
        self.policies, self.device = policies, device
        self.member = torch.tensor([member], device=device)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.policies.member_dist(obs, self.member).mean.clamp(-1.0, 1.0)


def compose_run(overrides: Sequence[str]):  # -> rl.loops.Run
    from rl.config import compose_config
    from rl.loops import build_run

    return build_run(compose_config(overrides))


def run_overrides(dataset: str, seed: int, episodes: int, stage1: int, extra: Sequence[str]) -> list[str]:
    return [
        "+experiment=o2o_family_unio4", f"dataset={dataset}", f"seed={seed}", "threads=1", "compile=false",
        "progress=false", f"steps.eval_episodes={episodes}", "steps.offline=0", "steps.online=0",
        f"agent.critic_steps={stage1}", f"agent.bc_steps={stage1}", f"agent.dynamics_steps={stage1}",
        "agent.improve_steps=10000", *extra,
    ]  # fmt: skip


def reseed(run, seed: int) -> None:
    """The same random streams in both arms from the end of the shared stage 1."""
    torch.manual_seed(seed)
    run.offline_buffer.generator.manual_seed(seed + 1)


def stage1(path: Path, overrides: Sequence[str]) -> None:
    """Stage 1 to one update short of its end, saved to ``path`` (skipped when it exists)."""
    if path.exists():
        return
    run = compose_run(overrides)
    agent = run.agent
    for _ in range(agent.improvement_start - 1):
        agent.update(run.offline_buffer.sample(agent.batch_size))
    save_checkpoint(path, {"kind": "agent", "agent": agent.state_dict()})
    run.close()


def audit_arm(seed: int, arm: str, stage1_path: Path, overrides: Sequence[str], episodes: int) -> list[dict]:
    """The arm's last stage-1 update and improvement stage, with every gate's decisions checked in the
    real env; one row per (gate, member)."""
    from rl.loops.evaluate import evaluate

    run = compose_run(overrides)
    agent = run.agent
    agent.load_state_dict(load_checkpoint(stage1_path, kind="agent")["agent"])
    reseed(run, 1000 + seed)
    episode_seed = 10_000 * (seed + 1)

    def real(policies: torch.nn.Module, member: int) -> float:
        result = evaluate(MemberPolicy(policies, member, run.device), run.eval_env, episodes, episode_seed,
                          run.normalizer)  # fmt: skip
        return result["normalized_score"]

    agent.update(run.offline_buffer.sample(agent.batch_size))  # the last FIT update: J* and pi_old
    members = range(agent.cfg.num_policies)
    behaviour = [real(agent.behaviour, i) for i in members]
    best = agent.best_score.tolist()
    rows = [
        dict(seed=seed, arm=arm, gate=0, member=i, amq=best[i], amq_best=best[i], accepted="",
             candidate=behaviour[i], behaviour=behaviour[i])
        for i in members
    ]  # fmt: skip
    gate = 0
    while agent.updates < agent.stages_end:
        replaced = agent.replacements.clone()
        metrics = agent.update(run.offline_buffer.sample(agent.batch_size))
        if "amq_replaced" not in metrics:
            continue
        gate += 1
        accepted = (agent.replacements > replaced).tolist()
        score, best = agent.last_score.tolist(), agent.best_score.tolist()
        for i in members:
            candidate = real(agent.actor, i)
            rows.append(dict(seed=seed, arm=arm, gate=gate, member=i, amq=score[i], amq_best=best[i],
                             accepted=int(accepted[i]), candidate=candidate, behaviour=behaviour[i]))  # fmt: skip
            if accepted[i]:
                behaviour[i] = candidate
    run.close()
    return rows


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def append_rows(path: Path, rows: list[dict]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per arm, over every (seed, gate, member) decision: how many the gate accepted, how many of those
    lowered the real score, how many rejected steps would have raised it, and the real score of the
    policy the agent would fine-tune (the member with the best AM-Q after the last gate, its
    behaviour policy) against the BC start's best member."""
    summary: dict[str, dict[str, float]] = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        decisions = [r for r in mine if int(r["gate"]) > 0]
        if not decisions:
            continue
        accepted = [r for r in decisions if r["accepted"] == "1"]
        rejected = [r for r in decisions if r["accepted"] == "0"]
        lowered = [r for r in accepted if float(r["candidate"]) < float(r["behaviour"])]
        missed = [r for r in rejected if float(r["candidate"]) > float(r["behaviour"])]
        chosen, start = [], []
        for seed in sorted({r["seed"] for r in mine}, key=int):
            runs = [r for r in mine if r["seed"] == seed]
            last = max(int(r["gate"]) for r in runs)
            final = [r for r in runs if int(r["gate"]) == last]
            pick = max(final, key=lambda r: float(r["amq_best"]))
            # its behaviour policy's score after the last gate: the candidate's if accepted there
            chosen.append(float(pick["candidate"] if pick["accepted"] == "1" else pick["behaviour"]))
            start.append(max(float(r["behaviour"]) for r in runs if r["gate"] == "0"))
        summary[arm] = {
            "seeds": len(chosen),
            "decisions": len(decisions),
            "accepted": len(accepted),
            "accept_rate": len(accepted) / len(decisions),
            "accepted_lowering": len(lowered),
            "lowering_share_of_accepted": len(lowered) / len(accepted) if accepted else float("nan"),
            "lowering_share_of_decisions": len(lowered) / len(decisions),
            "rejected_raising": len(missed),
            "bc_best_score": float(np.mean(start)),
            "final_score": float(np.mean(chosen)),
            "final_score_std": float(np.std(chosen)),
        }
    return summary


def table(rows: list[dict]) -> str:
    summary = summarise(rows)
    lines = [
        "| arm | seeds | gate decisions | accepted (rate) | accepted that lowered the real score "
        "(share of accepted) | rejected that would have raised it | best BC member | policy it would "
        "fine-tune |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, s in summary.items():
        lines.append(
            f"| {arm} | {s['seeds']} | {s['decisions']} | {s['accepted']} ({s['accept_rate']:.2f}) | "
            f"{s['accepted_lowering']} ({s['lowering_share_of_accepted']:.2f}) | {s['rejected_raising']} | "
            f"{s['bc_best_score']:.1f} | {s['final_score']:.1f} ± {s['final_score_std']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="walker2d-medium")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--stage1", type=int, default=20_000, help="critic, BC and dynamics updates")
    parser.add_argument("--out", type=Path, default=Path.home() / "o2o_runs" / "unio4_gate")
    parser.add_argument("--report", type=Path, help="write table.md and gates.csv here and run nothing")
    parser.add_argument("overrides", nargs="*", help="rl.train overrides for every run (after --)")
    args = parser.parse_args(argv)
    csv_path = args.out / "gates.csv"
    if args.report is not None:
        rows = read_rows(csv_path)
        if not rows:
            raise SystemExit(f"unio4_gate: no finished rows in {csv_path}")
        args.report.mkdir(parents=True, exist_ok=True)
        (args.report / "gates.csv").write_text(csv_path.read_text())
        (args.report / "table.md").write_text(table(rows))
        print(table(rows), end="")
        return
    for seed in args.seeds:
        overrides = run_overrides(args.dataset, seed, args.episodes, args.stage1, args.overrides)
        stage1_path = args.out / f"seed{seed}" / "stage1.pt"
        for arm, switches in ARMS.items():
            done = {(r["seed"], r["arm"]) for r in read_rows(csv_path)}
            if (str(seed), arm) in done:
                continue
            stage1(stage1_path, overrides)
            rows = audit_arm(seed, arm, stage1_path, [*overrides, *switches], args.episodes)
            append_rows(csv_path, rows)
            print(f"unio4_gate: seed {seed} arm {arm}: {sum(r['accepted'] == 1 for r in rows)} of "
                  f"{sum(r['gate'] > 0 for r in rows)} gate decisions accepted", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
