import h5py
import numpy as np
import pytest

import envs
from rl.data import ScoreNormalizer, check_dataset, load_dataset
from tests.conftest import DOOR_HUMAN, MINARI_ID, random_hopper_rollout, write_d4rl_file

HOPPER = envs.make(envs.EnvConfig())


def test_minari_dataset_recorded_by_datacollector_loads_with_its_reference_scores(minari_store):
    import minari

    dataset = load_dataset(f"minari:{MINARI_ID}")
    reference = minari.load_dataset(MINARI_ID)
    assert len(dataset) == reference.total_steps
    assert dataset.num_episodes == reference.total_episodes
    assert dataset.observations.shape[1:] == (11,) and dataset.actions.shape[1:] == (3,)
    # within an episode the next observation is the following row's observation
    inside = ~dataset.episode_ends[:-1]
    assert np.array_equal(dataset.next_observations[:-1][inside], dataset.observations[1:][inside])
    first = next(iter(reference.iterate_episodes()))
    assert np.isclose(dataset.episode_returns[0], first.rewards.sum())
    info = dataset.info
    assert (info.env_id, info.ref_min_score, info.ref_max_score) == ("Hopper-v5", -20.0, 3000.0)
    normalizer = ScoreNormalizer.for_run("hopper", info.ref_min_score, info.ref_max_score)
    assert normalizer.source == "dataset metadata"
    assert np.isclose(normalizer(1490.0), 50.0)
    assert np.isclose(normalizer(1490.0) / 100, minari.get_normalized_score(reference, np.array(1490.0)))


def test_d4rl_file_with_next_observations_keeps_every_row(hopper_d4rl_file):
    dataset = load_dataset(f"d4rl:{hopper_d4rl_file}")
    with h5py.File(hopper_d4rl_file) as f:
        assert len(dataset) == len(f["rewards"])
        assert np.array_equal(dataset.terminated, f["terminals"][:])
        assert np.array_equal(dataset.next_observations, f["next_observations"][:].astype(np.float32))
    check_dataset(dataset, HOPPER.observation_space, HOPPER.action_space, clip_actions=False)


def test_sha256_names_the_rows_and_changes_with_any_value_or_dtype(hopper_d4rl_file, capsys):
    from dataclasses import replace

    from rl.data import Dataset, DatasetInfo
    from rl.data.__main__ import main

    source = f"d4rl:{hopper_d4rl_file}"
    first = load_dataset(source)
    assert load_dataset(source).sha256() == first.sha256()  # a second load of the same file
    rewards = first.rewards.copy()
    rewards[7] += 1e-3
    assert replace(first, rewards=rewards).sha256() != first.sha256()
    same_values = replace(first, actions=first.actions.astype(np.float64))
    assert same_values.sha256() != first.sha256()  # another dtype is another copy
    assert main(["digest", source]) == 0
    assert capsys.readouterr().out == f"{first.sha256()}  {source}\n"
    assert main(["digest", "d4rl:/nonexistent.hdf5"]) == 2
    assert capsys.readouterr().err.strip() == "o2o: error: dataset d4rl:/nonexistent.hdf5: no such file"

    # Dict observations: the same arrays under the same keys in another order are the same data.
    def frames(order: list[str]) -> Dataset:
        columns = {"pixels": np.zeros((2, 4, 4, 3), np.uint8), "state": np.ones((2, 3), np.float32)}
        obs = {k: columns[k] for k in order}
        flags = np.array([False, True])
        return Dataset(
            obs, np.zeros((2, 1), np.float32), np.zeros(2), obs, flags, ~flags, DatasetInfo("test")
        )

    assert frames(["pixels", "state"]).sha256() == frames(["state", "pixels"]).sha256()


def test_d4rl_file_without_next_observations_drops_timeout_rows(tmp_path):
    obs = np.arange(12, dtype=np.float32).reshape(6, 2)
    columns = {
        "observations": obs,
        "actions": np.zeros((6, 1), np.float32),
        "rewards": np.arange(6, dtype=np.float32),
        "terminals": np.array([0, 1, 0, 0, 0, 0], bool),
        "timeouts": np.array([0, 0, 0, 1, 0, 0], bool),
    }
    dataset = load_dataset(f"d4rl:{write_d4rl_file(tmp_path / 'x.hdf5', columns)}")
    # episode A = rows 0-1 (terminal), B = rows 2-3 (timeout: row 3 dropped), C = rows 4-5 (file ends: row 5 dropped)
    assert dataset.rewards.tolist() == [0, 1, 2, 4]
    assert dataset.terminated.tolist() == [False, True, False, False]
    assert dataset.truncated.tolist() == [False, False, True, True]
    assert dataset.next_observations[0].tolist() == obs[1].tolist()
    assert dataset.next_observations[2].tolist() == obs[3].tolist()
    assert dataset.info.extra == {"file_steps": 6, "dropped_rows": 2}


def test_real_d4rl_door_human_source_file():
    dataset = load_dataset(f"d4rl:{DOOR_HUMAN}")
    assert dataset.info.extra["file_steps"] == 6729
    assert dataset.num_episodes == 25
    assert len(dataset) == 6729 - 25  # each episode's final time-out step has no successor
    assert dataset.observations.shape[1:] == (39,) and dataset.actions.shape[1:] == (28,)
    assert not dataset.terminated.any()
    door = ScoreNormalizer.d4rl("door")
    assert np.isclose(door(-56.512833), 0.0) and np.isclose(door(2880.5693087298737), 100.0)


def test_actions_outside_the_env_bounds_are_refused_unless_clipping_is_asked_for():
    from gymnasium.spaces import Box

    dataset = load_dataset(f"d4rl:{DOOR_HUMAN}")
    obs_space, act_space = Box(-np.inf, np.inf, (39,)), Box(-1.0, 1.0, (28,))
    with pytest.raises(
        ValueError, match=r"'actions' exceed the env's bounds \[-1, 1\].*dataset.clip_actions=true"
    ):
        check_dataset(dataset, obs_space, act_space, clip_actions=False)
    clipped = check_dataset(dataset, obs_space, act_space, clip_actions=True)
    assert np.abs(clipped.actions).max() <= 1 - 1e-5


def test_d4rl_reference_table_is_d4rls():
    assert ScoreNormalizer.d4rl("hopper")(3234.3) == pytest.approx(100.0)
    assert ScoreNormalizer.d4rl("hopper")(-20.272305) == pytest.approx(0.0)
    assert ScoreNormalizer.d4rl("halfcheetah")(5927.410524) == pytest.approx(50.0)
    assert ScoreNormalizer.for_run(None) is None
    with pytest.raises(ValueError, match=r"no D4RL reference scores for task 'hopperr'"):
        ScoreNormalizer.d4rl("hopperr")


# -- bad input: one clear line naming the file and the field ------------------------------------------


def _bad_file(tmp_path, **changes):
    columns = random_hopper_rollout(40, seed=3)
    for key, value in changes.items():
        if value is None:
            columns.pop(key)
        else:
            columns[key] = value(columns[key])
    return write_d4rl_file(tmp_path / "bad.hdf5", columns)


def test_nan_in_a_column_is_named_with_its_row(tmp_path):
    def poison(r):
        r = r.copy()
        r[17] = np.nan
        return r

    dataset = load_dataset(f"d4rl:{_bad_file(tmp_path, rewards=poison)}")
    with pytest.raises(ValueError, match=r"bad.hdf5: 'rewards' holds NaN or inf \(first at row 17\)"):
        check_dataset(dataset, HOPPER.observation_space, HOPPER.action_space, False)


def test_missing_key_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"bad.hdf5: missing key\(s\) \['timeouts'\]"):
        load_dataset(f"d4rl:{_bad_file(tmp_path, timeouts=None)}")


def test_shapes_that_do_not_match_the_env_are_refused(tmp_path):
    wide = load_dataset(f"d4rl:{_bad_file(tmp_path, actions=lambda a: np.concatenate([a, a], 1))}")
    with pytest.raises(ValueError, match=r"'actions' have shape \(6,\), the env's action space \(3,\)"):
        check_dataset(wide, HOPPER.observation_space, HOPPER.action_space, False)
    door = load_dataset(f"d4rl:{DOOR_HUMAN}")
    with pytest.raises(
        ValueError, match=r"'observations' have shape \(39,\), the env's observation space \(11,\)"
    ):
        check_dataset(door, HOPPER.observation_space, HOPPER.action_space, True)


def test_rows_that_disagree_in_length_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"'terminals' has 39 rows, 'rewards' has 40"):
        load_dataset(f"d4rl:{_bad_file(tmp_path, terminals=lambda t: t[:-1])}")


def test_unreadable_or_unknown_sources(tmp_path, minari_store):
    text = tmp_path / "notes.hdf5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match=r"notes.hdf5: not a readable hdf5 file"):
        load_dataset(f"d4rl:{text}")
    with pytest.raises(ValueError, match=r"no such file"):
        load_dataset(f"d4rl:{tmp_path / 'absent.hdf5'}")
    with pytest.raises(ValueError, match=r"unknown source 'd5rl'"):
        load_dataset("d5rl:hopper")
    with pytest.raises(ValueError, match=r"not '<source>:<id>'"):
        load_dataset("hopper-medium-v2")
    with pytest.raises(
        ValueError, match=r"not in the local Minari store.*minari download mujoco/hopper/medium-v0"
    ):
        load_dataset("minari:mujoco/hopper/medium-v0")


def test_the_file_is_read_off_the_main_thread(monkeypatch, hopper_d4rl_file):
    # The learner's speed after a load depends on it (rl.data.loaders.load_dataset's docstring):
    # a read made by the main thread leaves its allocations in the arena the learner uses.
    import threading

    from rl.data import loaders

    readers = []
    read = loaders.load_d4rl_hdf5

    def spy(path):
        readers.append(threading.current_thread())
        return read(path)

    monkeypatch.setattr(loaders, "load_d4rl_hdf5", spy)
    dataset = load_dataset(f"d4rl:{hopper_d4rl_file}")
    assert len(dataset) > 0 and len(readers) == 1
    assert readers[0] is not threading.main_thread() and not readers[0].is_alive()
