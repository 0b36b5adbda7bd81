"""The main job: ``python -m rl.quickstart``: data -> pre-training -> WSRL fine-tuning -> curves.

1. Generate a ``medium`` dataset of ``env`` (HalfCheetah-v5 by default; Hopper-v5 or Walker2d-v5) the
   D4RL way (``rl.data generate``), unless it exists. HalfCheetah is the default because its episodes
   never end early: on Hopper the online phase unlearned in every diagnostic and a score is mostly
   when the hopper falls, while on HalfCheetah the same demo gained on all three tuning seeds
   (results/quickstart/README.md, the third round).
2. ``rl.train agent=wsrl``: CQL pre-training with WSRL's critic ensemble, then online SAC with no
   offline data after a warm-up in which the pre-trained policy acts; one run per seed.
3. ``rl.plot``: ``curves.png`` and ``table.md`` (normalised score after offline and after online).

``scale=demo`` (default) fits a 2-core CPU in about 20 minutes per seed by shrinking what the
learner computes; each reduction is one entry of ``DEMO_OVERRIDES`` (and listed in the README).
``scale=paper`` drops them all and uses the spec's defaults: 10 critics, 256x256 networks, 10 CQL
samples per proposal, UTD 4, 250k offline and 500k online steps, a 5000-step warm-up.

    python -m rl.quickstart [seeds=0,1,2] [env=hopper|halfcheetah|walker2d] [scale=demo|paper]
                            [dataset_size=N] [out=runs/quickstart]
                            [any rl.train override, e.g. agent.num_critics=10 steps.online=50000]

Arguments that are not the quickstart's own go to ``rl.train`` after the scale's overrides, so they
win: ``scale=demo agent.num_critics=10`` is the demo with the paper's ensemble.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from rl.generate.locomotion import BEHAVIOUR_DIR, ENVS, GenerateConfig, generate, parse_key_values

DEMO_OVERRIDES = [
    "agent.num_critics=2",  # paper: 10 critics (a 10-critic CQL update runs at ~4/s here)
    "agent.critic_hidden=[128,128]",  # paper: 256x256
    "agent.actor_hidden=[128,128]",  # paper: 256x256
    "agent.cql_samples=4",  # paper: 10 actions per CQL proposal
    # paper: 250k pre-training steps. 27.5k is where the critic turns warm on both HalfCheetah and
    # Hopper: the first 2,500-update window whose Q is within 25% of the data's MC returns and moved
    # < 5% (rl.calibration on seeds 100-102, results/quickstart/tuning_halfcheetah and tuning; the
    # rule was stated before those runs).
    "steps.offline=27500",
    "steps.online=15000",  # paper: 500k online steps
    "steps.warmup=2000",  # paper: 5000 warm-up steps
    # The schedule is 9-30x shorter than the paper's, so the learning rates that must settle within
    # it are raised: at 1e-4 the temperature is still ~0.8 after 5k steps (target entropy not
    # reached, the warm-up's actions nearly uniform). Kept when the pre-training grew from 5k to
    # 27.5k, as the rule that chose 27.5k fixed every other setting.
    "agent.actor_lr=3e-4",  # paper: 1e-4
    "agent.temperature_lr=3e-3",  # paper: 1e-4
    "steps.eval_every=500",  # paper: every 20k steps (the table averages the last 3 per phase)
    "steps.eval_episodes=5",  # paper: 20 episodes
]
LAST_EVALUATIONS = 3
"""The table's scores average each seed's last 3 evaluations of a phase: one evaluation of a Hopper
policy swings between falling and hopping (3 and 95 at consecutive evaluations of the same run)."""
PAPER_OVERRIDES = [
    "steps.offline=250000",
    "steps.online=500000",
    "steps.eval_every=20000",
    "steps.eval_episodes=20",
]


@dataclass
class QuickstartConfig:
    seeds: str = "0"
    """Comma-separated seeds; they run one after another."""
    env: str = "halfcheetah"
    """The locomotion task whose committed behaviour policies make the data (``rl/data/behaviour``)."""
    scale: str = "demo"
    dataset_size: int = 100_000
    """Steps of the generated medium dataset (D4RL: 1M)."""
    out: str = "runs/quickstart"
    threads: int = 0
    """torch threads per run (0: torch's default); 1 when other work shares the cores."""
    progress: bool = True


def behaviour_fingerprint(env: str) -> str:
    """A short hash of the behaviour policies, so a dataset made with older policies is never reused."""
    digest = hashlib.sha1()
    for level in ("medium", "expert"):
        path = BEHAVIOUR_DIR / f"{env}-{level}.pt"
        digest.update(path.read_bytes() if path.is_file() else b"missing")
    return digest.hexdigest()[:8]


def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return 0
    own = {f.name for f in fields(QuickstartConfig)}
    train_overrides = [arg for arg in argv if arg.partition("=")[0] not in own]
    try:
        cfg = parse_key_values([arg for arg in argv if arg not in train_overrides], QuickstartConfig)
        if cfg.scale not in ("demo", "paper"):
            raise ValueError(f"scale={cfg.scale!r}: choose demo or paper")
        if cfg.env not in ENVS:
            raise ValueError(f"env={cfg.env!r}: choose one of {', '.join(ENVS)}")
        dataset_id = f"o2o/{cfg.env}/medium-{cfg.dataset_size}-{behaviour_fingerprint(cfg.env)}-v0"
        import minari

        if dataset_id not in minari.list_local_datasets():
            generate(
                GenerateConfig(
                    env=cfg.env,
                    level="medium",
                    size=cfg.dataset_size,
                    dataset_id=dataset_id,
                    progress=cfg.progress,
                )
            )
    except ValueError as err:
        print(f"o2o: error: {err}", file=sys.stderr)
        return 2
    out = Path(cfg.out)
    overrides = DEMO_OVERRIDES if cfg.scale == "demo" else PAPER_OVERRIDES
    command = [
        sys.executable,
        "-m",
        "rl.train",
        "-m",
        "agent=wsrl",
        f"env={cfg.env}",
        f"dataset=minari:{dataset_id}",
        f"dataset.name={cfg.env}-medium",
        f"seed={cfg.seeds}",
        *overrides,
        *train_overrides,
        f"progress={str(cfg.progress).lower()}",
        f"threads={cfg.threads}",
        f"hydra.sweep.dir={out}",
    ]
    print("o2o:", " ".join(command[1:]), flush=True)
    if subprocess.run(command).returncode != 0:
        return 1
    plot = [sys.executable, "-m", "rl.plot", str(out), "--out", str(out), "--last", str(LAST_EVALUATIONS)]
    return subprocess.run(plot).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
