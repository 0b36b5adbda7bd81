"""``make(cfg)``: one env of a registered family, with actions rescaled to [-1, 1].

Families register a builder in ``FAMILIES``; every builder returns an env with a Box action space,
and ``make`` rescales that space to [-1, 1] so agents never see the simulator's own bounds. Builders
of heavy simulators import them inside the builder, so importing ``envs`` stays cheap.

A package that provides its own env and must not be known here names it by import path instead,
as gymnasium's ``entry_point`` does: ``family: "package.module:factory"``, called with
``**cfg.kwargs``. The arm bridge is such a package (``conf/env/real.yaml`` names
``real_robot.client_env:make_bridge_env``), so ``envs`` never imports ``real_robot``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from envs.chunking import chunked
from envs.config import EnvConfig
from envs.robosuite_adapter import make_robosuite
from envs.robotics import make_robotics
from envs.wrappers import terminate_on_success

Builder = Callable[[EnvConfig], gym.Env]


def make_gymnasium(cfg: EnvConfig) -> gym.Env:
    """Any registered Gymnasium id (the MuJoCo v5 locomotion suite in practice)."""
    if cfg.id not in gym.registry:
        raise ValueError(f"env.id: unknown Gymnasium id {cfg.id!r} (env.name={cfg.name!r})")
    kwargs = dict(cfg.kwargs)
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    try:
        env = gym.make(cfg.id, **kwargs)
    except TypeError as e:  # an unknown constructor keyword
        raise ValueError(f"env.kwargs: {cfg.id!r} rejected {sorted(cfg.kwargs)}: {e}") from None
    return terminate_on_success(env, cfg, family_default=False)


def import_path_builder(path: str) -> Builder:
    """The builder of a ``"package.module:factory"`` family: ``factory(**cfg.kwargs)``."""
    module_name, _, attribute = path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"env.family: cannot import {path!r} ({e})") from None

    def build(cfg: EnvConfig) -> gym.Env:
        try:
            return factory(**cfg.kwargs)
        except TypeError as e:
            raise ValueError(f"env.kwargs: {path} rejected {sorted(cfg.kwargs)}: {e}") from None

    return build


FAMILIES: dict[str, Builder] = {
    "gymnasium": make_gymnasium,
    "robotics": make_robotics,
    "robosuite": make_robosuite,
}


def family_builder(cfg: EnvConfig) -> Builder:
    """The registered builder for ``cfg.family`` (or its import path), or a ValueError naming the field."""
    if ":" in cfg.family:
        return import_path_builder(cfg.family)
    if cfg.family not in FAMILIES:
        raise ValueError(
            f"env.family: unknown family {cfg.family!r}; known: {sorted(FAMILIES)} or 'package.module:factory'"
        )
    return FAMILIES[cfg.family]


def make(cfg: EnvConfig) -> gym.Env:
    """Build one env of ``cfg.family`` with actions rescaled to [-1, 1]."""
    return make_with(family_builder(cfg), cfg)


def make_with(builder: Builder, cfg: EnvConfig) -> gym.Env:
    """``make`` with the builder already looked up (subprocess workers receive the builder itself,
    so families registered at run time work under the spawn start method too)."""
    env = builder(cfg)
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"env {cfg.id!r}: o2o agents need a Box action space, got {space}")
    if not (np.all(space.low == -1.0) and np.all(space.high == 1.0)):
        env = gym.wrappers.RescaleAction(env, -1.0, 1.0)
    return chunked(env, cfg.action_chunk, cfg.obs_history)
