"""envs.make: bad config fails with a one-line ValueError naming the field; actions end up in [-1, 1]."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import EnvConfig
from envs.wrappers import TerminateOnSuccess


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        (EnvConfig(family="nope"), r"env\.family"),
        (EnvConfig(id="Hoppr-v5"), r"env\.id"),
        (EnvConfig(kwargs={"not_a_kwarg": 1}), r"env\.kwargs"),
    ],
)
def test_bad_config_names_the_field(cfg: EnvConfig, field: str) -> None:
    with pytest.raises(ValueError, match=field) as error:
        envs.make(cfg)
    assert "\n" not in str(error.value)


def test_actions_are_rescaled_to_unit_box_and_success_termination_is_opt_in() -> None:
    env = envs.make(EnvConfig(name="humanoid", id="Humanoid-v5", terminate_on_success=True))  # bounds ±0.4
    assert np.all(env.action_space.low == -1.0) and np.all(env.action_space.high == 1.0)
    assert isinstance(env, gym.wrappers.RescaleAction) and isinstance(env.env, TerminateOnSuccess)
    default = envs.make(EnvConfig(name="humanoid", id="Humanoid-v5"))
    assert not isinstance(default.env, TerminateOnSuccess)
