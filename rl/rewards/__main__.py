"""``python -m rl.rewards train-classifier key=value ...`` and ``python -m rl.rewards relabel key=value ...``.

An entry point: it may import anything (the demo datasets' opener in ``rl.generate``, Hydra's config
composition in ``rl.sweep``). Every refusal is one line, ``o2o: error: ...``, with exit status 2 (bad
input) or 1 (a reward model that could not label; nothing is written then).

Arguments are parsed by OmegaConf against the command's dataclass (as Hydra parses a run's), not by
``rl.generate``'s ``parse_key_values``: that one reads ints, bools and strings only, and these commands
take floats (``precision_target=0.95``, ``reward.threshold=0.8``).
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm import tqdm

from rl.generate.demos import open_dataset
from rl.rewards import RewardConfig, RewardModelError, build_reward_model
from rl.rewards.classifier import TrainClassifierConfig, frames_from_minari, save_classifier, train_classifier
from rl.rewards.relabel import relabel_dataset

USAGE = (
    "usage: python -m rl.rewards train-classifier dataset=<minari id or dir>[,<another>] [cameras=agentview[,cam]] "
    "[out=classifier.pt] [steps=300] [batch=64] [seed=0] [precision_target=0.95] [holdout=0.2] [lr=3e-4] "
    "[backbone=conv|resnet10] [weights=<state_dict file>] [filters=32] [head=spatial_embedding] [pad=4] "
    "[threads=0] [progress=true]\n"
    "       python -m rl.rewards relabel dataset=<minari id or dir> out=<new minari id or dir> reward=<name> "
    "[reward.<field>=<value> ...] [device=cpu] [threads=0]\n"
    "reward names and fields: conf/reward/*.yaml, docs/rewards.md"
)


@dataclass
class RelabelArgs:
    dataset: str = ""
    out: str = ""
    device: str = "cpu"
    threads: int = 0


def parse(args: list[str], schema: type) -> object:
    """``key=value`` arguments into ``schema`` (a dataclass), typed by OmegaConf; one line on error."""
    for arg in args:
        if "=" not in arg:
            raise ValueError(f"argument {arg!r}: expected key=value")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(args))
    except OmegaConfBaseException as err:
        raise ValueError(str(err).splitlines()[0]) from None
    return OmegaConf.to_object(merged)


def reward_config(overrides: list[str]) -> RewardConfig:
    """The ``reward`` group composed as a run composes it (``conf/reward/<name>.yaml`` + overrides)."""
    from rl.config import check_values
    from rl.sweep import expand

    master, _ = expand(overrides, multirun=False)
    check_values(OmegaConf.masked_copy(master, ["reward"]))
    return OmegaConf.to_object(master.reward)


def train_command(argv: list[str]) -> int:
    cfg = parse(argv, TrainClassifierConfig)
    cfg.command = shlex.join(["python", "-m", "rl.rewards", "train-classifier", *argv])
    cfg.check()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    names = [name for name in cfg.dataset.split(",") if name]
    data = frames_from_minari([(name, open_dataset(name)) for name in names], cfg.camera_list())
    bar = tqdm(total=cfg.steps, disable=not cfg.progress, desc="train-classifier", unit="step")

    def on_step(step: int, loss: float) -> None:
        bar.update()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")

    net, metrics = train_classifier(data, cfg, on_step)
    bar.close()
    report = save_classifier(Path(cfg.out), net, metrics, cfg)
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    print(f"o2o: held-out {metrics['held_out']}: {json.dumps(shown)}")
    print(
        f"o2o: wrote {cfg.out} and {report}; use it with reward=classifier reward.path={Path(cfg.out).resolve()}"
    )
    return 0


def relabel_command(argv: list[str]) -> int:
    reward_args = [a for a in argv if a.startswith(("reward=", "reward."))]
    args = parse([a for a in argv if a not in reward_args], RelabelArgs)
    if not args.dataset or not args.out:
        raise ValueError("relabel: dataset=<minari id or dir> and out=<new minari id or dir> are required")
    if not any(a.startswith("reward=") for a in reward_args):
        raise ValueError("relabel: reward=<name> is required (conf/reward/: classifier, vlm_http, ...)")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = reward_config(reward_args)
    dataset = open_dataset(args.dataset)
    model = build_reward_model(cfg, torch.device(args.device))
    if model is None:
        raise ValueError(
            "relabel: reward=env is the env's own reward, already in the dataset; name a reward model"
        )
    command = shlex.join(["python", "-m", "rl.rewards", "relabel", *argv])
    try:
        summary = relabel_dataset(dataset, args.dataset, model, args.out, cfg.label_batch, command)
    finally:
        model.close()
    print(f"o2o: wrote {args.out}: {json.dumps(summary)}")
    return 0


COMMANDS = {"train-classifier": train_command, "relabel": relabel_command}


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if argv[:1] and argv[0] in COMMANDS:
        try:
            return COMMANDS[argv[0]](argv[1:])
        except (ValueError, HydraException) as err:  # RewardModelConfigError is a ValueError
            message = f"{err}: {err.__cause__}" if isinstance(err, HydraException) and err.__cause__ else err
            print(f"o2o: error: {str(message).splitlines()[0]}", file=sys.stderr)
            return 2
        except RewardModelError as err:
            print(f"o2o: error: the reward model could not label (nothing written): {err}", file=sys.stderr)
            return 1
    if not argv:
        print(USAGE, file=sys.stderr)
    else:
        print(
            f"o2o: error: unknown command {argv[0]!r}: one of {', '.join(COMMANDS)} (--help)", file=sys.stderr
        )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
