"""``python -m rl.data generate|reference|check-door-reward key=value ...``, ``digest``,
``export-policy`` and ``export-medium-replay``.

An entry point: it may import the generation code (``rl.generate``), which the data modules never do.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rl.data import load_dataset
from rl.generate.adroit import ENVS as ADROIT_ENVS
from rl.generate.adroit import (
    ClonedConfig,
    RewardCheckConfig,
    check_door_reward,
    format_door_reward_check,
    generate_cloned,
)
from rl.generate.demos import ENVS as DEMO_ENVS
from rl.generate.demos import DemoConfig, generate_demos
from rl.generate.locomotion import (
    GenerateConfig,
    ReferenceConfig,
    export_medium_replay,
    export_policy,
    generate,
    measure_reference_scores,
    parse_key_values,
)

USAGE = (
    "usage: python -m rl.data generate env=<hopper|halfcheetah|walker2d> level=<random|medium|expert|"
    "medium-expert|medium-replay> [size=N] [seed=N] [dataset_id=ID]\n"
    "       python -m rl.data generate env=<lift|can> level=<expert|mixed> [episodes=N] [seed=N] "
    "[image_size=N] [dataset_id=ID]\n"
    "       python -m rl.data generate env=door level=cloned [size=N] [seed=N] [bc_steps=N] [noise_std=X] "
    "[demos=PATH] [dataset_id=ID]\n"
    "       python -m rl.data reference env=<hopper|halfcheetah|walker2d> [episodes=N] [seed=N]\n"
    "       python -m rl.data check-door-reward [demos=PATH] [tolerance=X]\n"
    "       python -m rl.data digest <minari:ID|d4rl:PATH|...>   (the sha256 a run records of its data)\n"
    "       python -m rl.data export-policy <checkpoints/agent_stepN.pt> <rl/data/behaviour/ENV-LEVEL.pt>\n"
    "       python -m rl.data export-medium-replay <run/checkpoints/last.pt> <env> <rows>"
)


def wrote(dataset_id: str) -> str:
    """The line after a generation: the new dataset's digest, so the copy can be named beside results."""
    source = f"minari:{dataset_id}"
    return f"o2o: wrote Minari dataset {dataset_id} (sha256 {load_dataset(source).sha256()}); train on it with dataset={source}"


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    try:
        if argv[:1] == ["generate"] and any(f"env={env}" in argv[1:] for env in DEMO_ENVS):
            print(wrote(generate_demos(parse_key_values(argv[1:], DemoConfig))))
            return 0
        if argv[:1] == ["generate"] and any(f"env={env}" in argv[1:] for env in ADROIT_ENVS):
            print(wrote(generate_cloned(parse_key_values(argv[1:], ClonedConfig))))
            return 0
        if argv[:1] == ["generate"]:
            print(wrote(generate(parse_key_values(argv[1:], GenerateConfig))))
            return 0
        if argv[:1] == ["reference"]:
            entry = measure_reference_scores(parse_key_values(argv[1:], ReferenceConfig))
            print(
                f"o2o: pinned reference scores min {entry['ref_min_score']:.1f}, "
                f"max {entry['ref_max_score']:.1f} ({entry['episodes']} episodes each)"
            )
            return 0
        if argv[:1] == ["check-door-reward"]:
            cfg = parse_key_values(argv[1:], RewardCheckConfig)
            print(format_door_reward_check(check_door_reward(cfg), cfg.tolerance))
            return 0
        if argv[:1] == ["digest"] and len(argv) == 2:
            print(f"{load_dataset(argv[1]).sha256()}  {argv[1]}")
            return 0
        if argv[:1] == ["export-policy"] and len(argv) == 3:
            export_policy(Path(argv[1]), Path(argv[2]))
            return 0
        if argv[:1] == ["export-medium-replay"] and len(argv) == 4 and argv[3].isdigit():
            path = export_medium_replay(Path(argv[1]), argv[2], int(argv[3]))
            print(f"o2o: wrote {path} and its manifest")
            return 0
    except ValueError as err:
        print(f"o2o: error: {err}", file=sys.stderr)
        return 2
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
