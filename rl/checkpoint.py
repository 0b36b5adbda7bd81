"""Checkpoints: written atomically, read with one clear error when they are not what a run needs.

A checkpoint is a ``torch.save`` of a plain dict. It is written to a temporary file and renamed
over the old one, so a kill at any moment leaves either the previous or the new checkpoint,
never half of one.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "o2o-checkpoint-v1"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


def load_checkpoint(path: Path, kind: str | None = None) -> dict[str, Any]:
    """The checkpoint at ``path``; with ``kind`` ("agent", "run"), refused unless it holds that kind."""
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise ValueError(f"checkpoint {path}: not readable ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path}: not an o2o checkpoint (format {FORMAT})")
    if kind is not None and payload.get("kind") != kind:
        raise ValueError(f"checkpoint {path}: holds a {payload.get('kind')!r} checkpoint, not {kind!r}")
    return payload


def without_optimizer_moments(agent_state: dict[str, Any]) -> dict[str, Any]:
    """An agent's ``state_dict()`` with every optimizer's per-parameter state (Adam's moments and step
    counts) dropped and its settings kept; loading it gives those optimizers fresh moments. For a
    committed snapshot whose fine-tuning never steps them (Uni-O4's offline optimizers: 3.1 of its
    5.0 MB); a warm start that goes on stepping its optimizers (WSRL, CQL) keeps them."""

    def is_optimizer(part: Any) -> bool:
        return isinstance(part, dict) and set(part) == {"state", "param_groups"}

    parts = {k: {**v, "state": {}} if is_optimizer(v) else v for k, v in agent_state["state"].items()}
    return {**agent_state, "state": parts}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rl.checkpoint", description="Tools for o2o checkpoint files."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    drop = commands.add_parser("drop-moments", help=without_optimizer_moments.__doc__.split(";")[0])
    drop.add_argument("source", type=Path, help="an agent checkpoint (checkpoints/agent_*.pt)")
    drop.add_argument("target", type=Path, help="where to write the smaller copy")
    args = parser.parse_args(argv)
    try:
        payload = load_checkpoint(args.source, kind="agent")
    except ValueError as err:
        print(f"o2o: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    payload = {k: v for k, v in payload.items() if k != "format"}
    save_checkpoint(args.target, {**payload, "agent": without_optimizer_moments(payload["agent"])})


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


if __name__ == "__main__":
    main()
