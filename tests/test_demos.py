"""The demo contract: scripted experts above their stated floors, demo datasets whose rows are what
``env=lift`` and ``env=lift-pixels`` observe, and malformed demo datasets refused by field."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import EnvConfig

pytest.importorskip("robosuite")

import minari
from minari.data_collector import EpisodeBuffer

from envs.scripted import SUCCESS_FLOOR, success_rate
from rl.generate import demos
from rl.generate.demos import DemoConfig, Recipe, check_demo_dataset, generate_demos, plan_episodes

ONE_CUT_SHORT = Recipe(expert_noise_std=0.05, noisy_fraction=0.0, noisy_noise_std=0.6, cut_short_fraction=0.5)


def robosuite(name: str, task: str, **fields) -> EnvConfig:
    return EnvConfig(name=name, id=task, family="robosuite", score_name=None, **fields)


@pytest.fixture(scope="module")
def lift_env():
    env = envs.make(robosuite("lift", "Lift"))
    yield env
    env.close()


def test_scripted_lift_expert_is_above_its_stated_floor(lift_env) -> None:
    assert success_rate(lift_env, 5, seed=0) >= SUCCESS_FLOOR["Lift"]


def test_scripted_can_expert_is_above_its_stated_floor() -> None:
    env = envs.make(robosuite("can", "PickPlaceCan"))
    assert success_rate(env, 2, seed=0) >= SUCCESS_FLOOR["PickPlaceCan"]
    env.close()


def test_episode_plan_has_the_recipes_shares_and_is_seeded() -> None:
    plan = plan_episodes(demos.RECIPES["expert"], 50, seed=3)
    assert [sum(p.kind == kind for p in plan) for kind in demos.KINDS] == [40, 5, 5]
    assert {p.noise_std for p in plan if p.kind == "noisy"} == {0.6}
    assert [p.reset_seed for p in plan[:2]] == [3_000_000, 3_000_001]
    assert all(0.5 <= p.cut_fraction < 1.0 for p in plan)
    assert plan == plan_episodes(demos.RECIPES["expert"], 50, seed=3)
    assert [p.kind for p in plan] != [p.kind for p in plan_episodes(demos.RECIPES["expert"], 50, seed=4)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari")))
        # Two episodes: one expert attempt and one cut short.
        patch.setitem(demos.RECIPES, "expert", ONE_CUT_SHORT)
        yield patch


@pytest.fixture(scope="module")
def lift_demos(store) -> minari.MinariDataset:
    dataset_id = generate_demos(
        DemoConfig(env="lift", level="expert", episodes=2, image_size=32, progress=False)
    )
    return check_demo_dataset(dataset_id, need_success=True, action_dim=7)


def test_rows_are_what_the_state_and_pixel_envs_observe(lift_demos, lift_env) -> None:
    expert_id = next(
        m["id"] for m in lift_demos.storage.get_episode_metadata(range(2)) if m["kind"] == "expert"
    )
    episode = lift_demos[int(expert_id)]
    obs = episode.observations
    assert set(obs) == {"state", "agentview", "robot0_eye_in_hand"}
    assert (
        obs["agentview"].shape == (len(episode.actions) + 1, 32, 32, 3) and obs["agentview"].dtype == np.uint8
    )
    replayed = [lift_env.reset(seed=int(expert_id))[0]]  # episode i of seed 0 resets with seed i
    replayed += [lift_env.step(action)[0] for action in episode.actions]
    np.testing.assert_array_equal(obs["state"], np.stack(replayed))
    pixel_env = envs.make(robosuite("lift-pixels", "Lift", obs_mode="pixels", image_size=32))
    first, _ = pixel_env.reset(seed=int(expert_id))
    object_dim = lift_demos.storage.metadata["state_layout"]["object_state_dim"]
    np.testing.assert_array_equal(obs["state"][0, object_dim:], first["state"])
    for camera in ("agentview", "robot0_eye_in_hand"):
        np.testing.assert_array_equal(obs[camera][0], first[camera])
    pixel_env.close()


def test_success_flags_rewards_and_episode_kinds(lift_demos) -> None:
    kinds = {}
    for meta in lift_demos.storage.get_episode_metadata(range(2)):
        episode = lift_demos[int(meta["id"])]
        kinds[meta["kind"]] = episode
        success = episode.infos["success"]
        assert len(success) == len(episode.rewards) + 1 and not success[0]
        np.testing.assert_array_equal(episode.rewards, success[1:].astype(float))  # sparse reward
        assert bool(meta["success"]) == bool(success[-1])
    expert, cut = kinds["expert"], kinds["cut-short"]
    assert expert.infos["success"][-1] and expert.terminations[-1] and not expert.truncations[-1]
    assert not cut.infos["success"].any() and cut.truncations[-1] and not cut.terminations.any()
    metadata = lift_demos.storage.metadata
    assert metadata["episode_kinds"] == {
        "expert": {"episodes": 1, "successes": 1},
        "noisy": {"episodes": 0, "successes": 0},
        "cut-short": {"episodes": 1, "successes": 0},
    }
    assert (metadata["expert_success_rate"], metadata["success_rate"]) == (1.0, 0.5)
    assert (metadata["env"], metadata["robosuite_task"], metadata["seed"]) == ("lift", "Lift", 0)
    assert np.abs(expert.actions).max() <= 1.0


def test_generation_is_deterministic_and_refuses_to_overwrite(lift_demos) -> None:
    # One episode again: episode 0 resets with the same seed and draws the same noise, so its rows
    # are the first rows of the original's episode 0 (which may have been cut short there).
    again = generate_demos(
        DemoConfig(env="lift", episodes=1, image_size=32, dataset_id="o2otest/lift/again-v0", progress=False)
    )
    first, second = lift_demos[0], minari.load_dataset(again)[0]
    steps = min(len(first.actions), len(second.actions))
    np.testing.assert_array_equal(first.actions[:steps], second.actions[:steps])
    for key in first.observations:
        np.testing.assert_array_equal(
            first.observations[key][: steps + 1], second.observations[key][: steps + 1]
        )
    with pytest.raises(ValueError, match="already exists"):
        generate_demos(DemoConfig(env="lift", episodes=2, image_size=32, progress=False))


def test_bad_generation_arguments_are_named(store) -> None:
    with pytest.raises(ValueError, match=r"env='hopper'.*\['can', 'lift'\]"):
        generate_demos(DemoConfig(env="hopper"))
    with pytest.raises(ValueError, match=r"level='medium'"):
        generate_demos(DemoConfig(level="medium"))
    with pytest.raises(ValueError, match=r"episodes=0"):
        generate_demos(DemoConfig(episodes=0))


def _write_tiny(dataset_id: str, action_dim: int, infos: dict | None) -> None:
    steps = 3
    observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (4,), np.float64)})
    action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
    minari.create_dataset_from_buffers(
        dataset_id=dataset_id,
        buffer=[
            EpisodeBuffer(
                observations={"state": np.zeros((steps + 1, 4))},
                actions=np.zeros((steps, action_dim), np.float32),
                rewards=[0.0] * steps,
                terminations=[False] * steps,
                truncations=[False] * (steps - 1) + [True],
                infos=infos,
            )
        ],
        observation_space=observation_space,
        action_space=action_space,
    )


@pytest.mark.filterwarnings("ignore::UserWarning")  # minari asks tiny test datasets for authors and specs
def test_malformed_demo_datasets_are_refused_naming_dataset_and_field(store) -> None:
    _write_tiny("o2otest/lift/six-actions-v0", action_dim=6, infos={"success": np.zeros(4, bool)})
    with pytest.raises(
        ValueError, match=r"^demo dataset o2otest/lift/six-actions-v0: 'actions' have shape \(6,\)"
    ):
        check_demo_dataset("o2otest/lift/six-actions-v0", need_success=True, action_dim=7)

    _write_tiny("o2otest/lift/no-success-v0", action_dim=7, infos=None)
    with pytest.raises(
        ValueError, match=r"^demo dataset o2otest/lift/no-success-v0: episode 0: no 'infos/success'"
    ):
        check_demo_dataset("o2otest/lift/no-success-v0", need_success=True, action_dim=7)
    check_demo_dataset("o2otest/lift/no-success-v0", need_success=False, action_dim=7)  # BC needs no flags

    _write_tiny("o2otest/lift/short-success-v0", action_dim=7, infos={"success": np.zeros(3, bool)})
    with pytest.raises(ValueError, match=r"'infos/success' has 3 flags for 4 observations"):
        check_demo_dataset("o2otest/lift/short-success-v0", need_success=True, action_dim=7)

    with pytest.raises(
        ValueError, match=r"^demo dataset o2otest/lift/absent-v0: neither a dataset directory"
    ):
        check_demo_dataset("o2otest/lift/absent-v0", need_success=False, action_dim=7)


def test_cli_refuses_bad_demo_arguments_in_one_line(capsys) -> None:
    from rl.data.__main__ import main

    assert main(["generate", "env=lift", "level=superb"]) == 2
    assert (
        capsys.readouterr().err
        == "o2o: error: generate: level='superb' is not one of ['expert', 'mixed'] for env=lift\n"
    )
    assert main(["generate", "env=can", "episodes=many"]) == 2
    assert capsys.readouterr().err.strip().endswith("episodes='many': not a valid int")
