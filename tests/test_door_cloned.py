"""door-cloned made by D4RL's recipe (rl/generate/adroit.py) from a small cut of the real human
demonstrations, and the reward check that tells whether AdroitHandDoor-v1's reward is the demos'."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest

import envs
from rl.data import D4RL_REF_SCORES, load_dataset
from rl.data.__main__ import main
from rl.generate import adroit
from tests.conftest import DOOR_HUMAN, write_d4rl_file

DEMO_ROWS = 30
"""Each of the two test demonstrations: the first 30 rows of the real demonstrations 0 and 1."""
SIZE = 520
"""D4RL's split of 520 rows: BC until the first episode end at or after row 260 (row 399: 2 episodes,
400 rows), then 120 demonstration rows: both test demonstrations twice."""


@pytest.fixture(scope="module")
def small_demos(tmp_path_factory) -> Path:
    with h5py.File(DOOR_HUMAN) as f:
        columns = {key: f[key][:] for key in ("observations", "actions", "rewards", "terminals", "timeouts")}
    second = int(np.flatnonzero(columns["timeouts"])[0]) + 1
    rows = np.r_[0:DEMO_ROWS, second : second + DEMO_ROWS]
    cut = {key: value[rows] for key, value in columns.items()}
    cut["timeouts"] = np.zeros(2 * DEMO_ROWS, dtype=bool)
    cut["timeouts"][[DEMO_ROWS - 1, 2 * DEMO_ROWS - 1]] = True
    assert np.abs(cut["actions"]).max() > 1.0  # the real demos exceed the bounds: clipping is exercised
    return write_d4rl_file(tmp_path_factory.mktemp("demos") / "door-demos.hdf5", cut)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari")))
        yield patch


def generate(small_demos: Path, dataset_id: str, **changes) -> str:
    fields = {"size": SIZE, "seed": 1, "bc_steps": 30, "demos": str(small_demos), "progress": False} | changes
    return adroit.generate_cloned(adroit.ClonedConfig(dataset_id=dataset_id, **fields))


@pytest.fixture(scope="module")
def cloned(store, small_demos) -> str:
    return generate(small_demos, "t/door/cloned-v0")


def test_layout_is_d4rls_and_half_the_rows_are_the_demonstrations_rows(cloned, small_demos) -> None:
    import minari

    raw = minari.load_dataset(cloned)
    kinds = [(m["kind"], m.get("demonstration")) for m in raw.storage.get_episode_metadata(range(6))]
    assert kinds == [("bc", None), ("bc", None), ("human", 0), ("human", 1), ("human", 0), ("human", 1)]
    meta = raw.storage.metadata
    assert (meta["rows"], meta["bc_rows"], meta["demo_rows"], meta["demo_copies"]) == (520, 400, 120, 2.0)
    assert (meta["ref_min_score"], meta["ref_max_score"]) == D4RL_REF_SCORES["door"]
    assert raw.env_spec.id == "AdroitHandDoor-v1"

    # As the trainer reads it: 200 BC transitions per episode, 29 per 30-row demonstration (its last
    # row has no recorded successor), no terminal, a time-out ending every episode.
    data = load_dataset(f"minari:{cloned}")
    assert len(data) == 2 * 200 + 4 * (DEMO_ROWS - 1) and data.num_episodes == 6
    assert not data.terminated.any()
    ends = np.cumsum([200, 200, 29, 29, 29, 29]) - 1
    np.testing.assert_array_equal(np.flatnonzero(data.truncated), ends)
    assert data.observations.shape[1:] == (39,) and np.abs(data.actions).max() <= 1.0

    with h5py.File(small_demos) as f:
        obs, actions, rewards = f["observations"][:], f["actions"][:], f["rewards"][:]
    for episode_id, demo in ((2, 0), (3, 1), (4, 0), (5, 1)):
        episode, rows = raw[episode_id], slice(demo * DEMO_ROWS, (demo + 1) * DEMO_ROWS)
        np.testing.assert_array_equal(episode.observations, obs[rows].astype(np.float64))
        np.testing.assert_array_equal(episode.actions, np.clip(actions[rows][:-1], -1.0, 1.0))
        np.testing.assert_array_equal(episode.rewards, rewards[rows][:-1])


def test_rollout_rows_are_the_saved_bc_policys_actions_with_d4rls_reward(cloned) -> None:
    import minari

    policy = adroit.load_bc_policy(cloned)
    episode = minari.load_dataset(cloned)[1]
    expected = np.stack([adroit.bc_action(policy, obs) for obs in episode.observations[:-1]])
    np.testing.assert_allclose(episode.actions, expected, atol=1e-6)
    assert np.abs(np.diff(episode.actions, axis=0)).max() > 0.01  # the policy acts, it is not constant

    # The same actions from the episode's reset seed reach the same states; the rows' reward is what
    # env=door pays (D4RL's), and the library's own minus 0.2 * |palm - handle| (D4RL subtracts 0.1 *
    # that distance, AdroitHandDoor-v1 adds it).
    env = envs.make(adroit.env_config("door"))
    obs, _ = env.reset(seed=1_000_001)
    np.testing.assert_array_equal(obs, episode.observations[0])
    env_rewards, library_rewards = [], []
    for t, action in enumerate(episode.actions):
        obs, reward, _, _, info = env.step(action)
        np.testing.assert_array_equal(obs, episode.observations[t + 1])
        env_rewards.append(reward)
        library_rewards.append(info["env_reward"])
    distance = np.linalg.norm(episode.observations[1:, 35:38], axis=1)
    np.testing.assert_allclose(episode.rewards, env_rewards, atol=1e-12)
    np.testing.assert_allclose(episode.rewards, np.array(library_rewards) - 0.2 * distance, atol=1e-9)
    env.close()


def test_action_noise_is_drawn_from_the_episodes_reset_seed(store, small_demos) -> None:
    import minari

    dataset_id = generate(small_demos, "t/door/noisy-v0", size=260, noise_std=0.3)
    policy = adroit.load_bc_policy(dataset_id)
    episode = minari.load_dataset(dataset_id)[0]
    rng = np.random.default_rng(1_000_000)  # episode 0 of seed 1 resets with 1_000_000
    expected = np.stack(
        [adroit.bc_action(policy, obs, rng.normal(0.0, 0.3, 28)) for obs in episode.observations[:-1]]
    )
    np.testing.assert_allclose(episode.actions, expected, atol=1e-6)
    assert minari.load_dataset(dataset_id).storage.metadata["demo_copies"] == 1.0


def test_the_same_seed_gives_the_same_dataset_and_another_seed_does_not(cloned, small_demos) -> None:
    again = load_dataset(f"minari:{generate(small_demos, 't/door/again-v0')}")
    first = load_dataset(f"minari:{cloned}")
    for column in ("observations", "actions", "rewards"):
        np.testing.assert_array_equal(getattr(again, column), getattr(first, column))
    other = load_dataset(f"minari:{generate(small_demos, 't/door/other-v0', seed=2)}")
    assert not np.array_equal(other.actions[:400], first.actions[:400])
    np.testing.assert_array_equal(other.actions[400:], first.actions[400:])  # the same demonstrations


# -- the reward check -----------------------------------------------------------------------------


class Line(gym.Env):
    """x moves by the action; reward -x^2 after the step."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,))
    action_space = gym.spaces.Box(-10.0, 10.0, (1,))

    def step(self, action):
        self.x += float(action[0])
        return np.array([self.x]), -(self.x**2), False, False, {}


def restore_line(env: Line, obs: np.ndarray) -> np.ndarray:
    env.x = float(obs[0])
    return np.array([env.x])


# By hand: from x = 1, actions 1, -2, 0.5 reach 2, 0, 0.5 with rewards -4, 0, -0.25.
OBS, ACTIONS, REWARDS = (
    np.array([[1.0], [2.0], [0.0], [0.5]]),
    np.array([[1.0], [-2.0], [0.5]]),
    np.array([-4.0, 0.0, -0.25]),
)
ENV_REWARD = {"env": lambda env, reward, next_obs, info: reward}


def test_reward_check_reports_an_exact_match_on_a_case_computed_by_hand() -> None:
    check = adroit.check_replay(Line(), restore_line, OBS, ACTIONS, REWARDS, 1e-9, ENV_REWARD)
    assert (check.transitions, check.replayed, check.max_reward_diff) == (3, 3, {"env": 0.0})


def test_reward_check_reports_a_perturbed_reward_and_stops_where_the_states_part() -> None:
    perturbed = REWARDS + np.array([0.0, 0.5, 0.0])
    check = adroit.check_replay(Line(), restore_line, OBS, ACTIONS, perturbed, 1e-9, ENV_REWARD)
    assert (check.replayed, check.max_reward_diff) == (3, {"env": 0.5})
    moved = OBS + np.array([[0.0], [0.0], [0.1], [0.1]])  # the recording disagrees from step 2 on
    check = adroit.check_replay(Line(), restore_line, moved, ACTIONS, perturbed, 1e-9, ENV_REWARD)
    assert (check.replayed, check.max_reward_diff) == (1, {"env": 0.0})


def test_door_state_is_restored_from_an_observation_and_its_recording_replays_exactly() -> None:
    env = envs.make(adroit.env_config("door"))
    obs, _ = env.reset(seed=4)
    rng = np.random.default_rng(0)
    observations, actions, rewards = [obs], rng.uniform(-1, 1, (15, 28)).astype(np.float32), []
    for action in actions:
        obs, reward, *_ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
    observations = np.stack(observations)
    env.reset(seed=9)  # another door position: the restore must find the recorded one
    # env=door pays D4RL's reward; the library's own (info["env_reward"]) adds 0.1 |palm - handle|
    # where D4RL's subtracts it, so the two differ by 0.2 |palm - handle| at every step.
    reward_of = ENV_REWARD | {"library": lambda env, r, next_obs, info: info["env_reward"]}
    check = adroit.check_replay(
        env, adroit.restore_door, observations, actions, np.array(rewards), 1e-6, reward_of
    )
    assert check.replayed == 15 and check.max_reward_diff["env"] < 1e-9
    distance = 0.2 * np.linalg.norm(observations[1:, 35:38], axis=1)
    assert check.max_reward_diff["library"] == pytest.approx(distance.max(), abs=1e-9)
    env.close()


# -- bad input: one line, non-zero exit ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "env=door", "level=expert"], "level='expert' is not one of ['cloned'] for env=door"),
        (
            ["generate", "env=door", "level=cloned", "size=259"],
            "the smallest size that holds each once is 260",
        ),
        (
            ["generate", "env=door", "level=cloned", "demos=/no/such/demos.hdf5"],
            "d4rl:/no/such/demos.hdf5: no such file",
        ),
        (["check-door-reward", "demos=/no/such/demos.hdf5"], "d4rl:/no/such/demos.hdf5: no such file"),
        (["check-door-reward", "tolerance=0"], "tolerance=0.0 must be > 0"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(args, message, small_demos, store, capsys) -> None:
    if any(arg.startswith("size=") for arg in args):
        args = [*args, f"demos={small_demos}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("o2o: error:") and err.count("\n") == 1 and message in err
