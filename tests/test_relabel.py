"""Relabelling: ``label_rows`` batches rows in order; ``python -m rl.rewards relabel`` writes a new dataset
whose rewards are the model's, records the model's hash, keeps what the input recorded, and refuses
a dataset without the model's frames, an existing output and the input itself, in one line each."""

from __future__ import annotations

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch
from minari.data_collector import EpisodeBuffer

from rl.rewards import LabelInput, Labels, RewardConfig, RewardModel, RewardModelError, build_reward_model
from rl.rewards.__main__ import main
from rl.rewards.relabel import label_rows, prompt_hash
from tests.test_reward_classifier import CAMERA, SIZE, square_episode

SOURCE = "o2otest/squares/demo-v0"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # minari asks tiny datasets for specs


class StepModel(RewardModel):
    """reward = the row's step, success on even steps; records the size of every batch it is handed."""

    cameras = ("cam",)
    state_keys = ("z",)

    def __init__(self, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.fail = fail

    def label(self, batch: LabelInput) -> Labels:
        if self.fail:
            raise RewardModelError("server down")
        self.sizes.append(len(batch))
        state = batch.state[self.state_keys[0]]
        assert batch.frames[self.cameras[0]].dtype == torch.uint8 and state.dtype == torch.float32
        even = batch.step % 2 == 0
        return Labels(batch.step.float(), even, even, {"z": state[:, 0]})

    def identity(self) -> bytes:
        return b"step"


def test_label_rows_batches_in_order_and_keeps_nothing_on_error() -> None:
    frames = {"cam": np.zeros((7, 4, 4, 3), np.uint8), "other": np.zeros((7, 4, 4, 3), np.uint8)}
    state = {"z": np.arange(7, dtype=np.float64)[:, None]}
    model = StepModel()
    labels = label_rows(model, frames, state, np.zeros(7, np.int64), np.arange(7), batch_size=3)
    assert model.sizes == [3, 3, 1]
    assert labels.reward.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert labels.success.tolist() == [True, False, True, False, True, False, True]
    assert labels.info["z"].tolist() == [0, 1, 2, 3, 4, 5, 6]
    with pytest.raises(RewardModelError, match="server down"):
        label_rows(StepModel(fail=True), frames, state, np.zeros(7, np.int64), np.arange(7), batch_size=3)
    with pytest.raises(
        ValueError, match=r"needs frames of camera 'cam', state 'z'; the rows have frames \[\]"
    ):
        label_rows(model, {}, {}, np.zeros(7, np.int64), np.arange(7), batch_size=3)


def test_prompt_hash_is_the_prompt_texts() -> None:
    assert prompt_hash(StepModel()) == "none"
    asking = StepModel()
    asking.question = "Is the red cube lifted off the table? Answer yes or no."
    # The first 16 hex digits of the text's sha256 (printed by sha256sum of the text without a newline).
    assert prompt_hash(asking) == "0993d3c67974b620"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A local Minari store holding a tiny frames dataset (the square means success) and a state-only one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari")))
        rng = np.random.default_rng(0)
        buffers = []
        for i in range(12):
            frames, flags = square_episode(rng, steps=4, success=i % 2 == 0)
            buffers.append(
                EpisodeBuffer(
                    id=i,
                    observations={CAMERA: frames, "state": rng.normal(size=(5, 3))},
                    actions=rng.uniform(-1, 1, (4, 2)).astype(np.float32),
                    rewards=flags[1:].astype(float).tolist(),
                    terminations=flags[1:].tolist(),
                    truncations=[False, False, False, not flags[-1]],
                    infos={"success": flags},
                )
            )
        space = gym.spaces.Dict(
            {
                CAMERA: gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8),
                "state": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64),
            }
        )
        minari.create_dataset_from_buffers(
            SOURCE,
            buffers,
            observation_space=space,
            action_space=gym.spaces.Box(-1, 1, (2,)),
            jpeg_encoding=False,
        )
        state_only = [
            EpisodeBuffer(
                observations={"state": b.observations["state"]},
                actions=b.actions,
                rewards=b.rewards,
                terminations=b.terminations,
                truncations=b.truncations,
            )
            for b in buffers[:2]
        ]
        minari.create_dataset_from_buffers(
            "o2otest/squares/state-v0",
            state_only,
            observation_space=gym.spaces.Dict({"state": space["state"]}),
            action_space=gym.spaces.Box(-1, 1, (2,)),
        )
        yield patch


@pytest.fixture(scope="module")
def classifier(store, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("clf") / "squares.pt"
    argv = ["train-classifier", f"dataset={SOURCE}", f"out={path}", "steps=60", "batch=16", "filters=8"]
    assert main([*argv, "feature_dim=16", "pad=2", "holdout=0.34", "progress=false"]) == 0
    return str(path)


def test_relabel_writes_the_models_rewards_and_records_its_hash(classifier, tmp_path, capsys) -> None:
    reward = [
        "reward=classifier",
        f"reward.path={classifier}",
        f"reward.image_size={SIZE}",
        "reward.label_batch=5",
    ]
    out = "o2otest/squares/relabelled-v0"
    assert main(["relabel", f"dataset={SOURCE}", f"out={out}", *reward]) == 0
    assert capsys.readouterr().out.startswith(f"o2o: wrote {out}: ")
    model = build_reward_model(
        RewardConfig(name="classifier", path=classifier, image_size=SIZE), torch.device("cpu")
    )
    source, relabelled = minari.load_dataset(SOURCE), minari.load_dataset(out)
    meta = relabelled.storage.metadata
    assert meta["reward_model_hash"] == model.model_hash and meta["relabelled_from"] == SOURCE
    assert meta["reward_prompt_hash"] == "none" and meta["relabel_command"].startswith(
        "python -m rl.rewards relabel"
    )
    assert relabelled.total_episodes == 12
    for before, after in zip(source.iterate_episodes(), relabelled.iterate_episodes(), strict=True):
        nxt = torch.from_numpy(before.observations[CAMERA][1:])
        p = torch.from_numpy(model.net.probabilities({CAMERA: nxt}))
        success = p >= model.threshold
        np.testing.assert_array_equal(after.rewards, success.float().numpy())
        np.testing.assert_array_equal(after.terminations, success.numpy())
        np.testing.assert_array_equal(after.truncations, before.truncations)
        np.testing.assert_array_equal(after.observations[CAMERA], before.observations[CAMERA])
        np.testing.assert_array_equal(after.actions, before.actions)
        np.testing.assert_array_equal(after.infos["success"], np.concatenate([[False], success.numpy()]))
        np.testing.assert_allclose(after.infos["p_success"][1:], p.numpy(), rtol=1e-6)
        np.testing.assert_array_equal(after.infos["env_success"], before.infos["success"])
        np.testing.assert_array_equal(after.infos["env_reward"][1:], before.rewards)
    # The classifier finds most squares: its rewards agree with the env's on most rows.
    agree = np.mean(
        [
            (a.rewards == b.rewards).mean()
            for a, b in zip(source.iterate_episodes(), relabelled.iterate_episodes(), strict=True)
        ]
    )
    assert agree >= 0.8
    # Writing it again is refused: a relabel never overwrites a dataset.
    assert main(["relabel", f"dataset={SOURCE}", f"out={out}", *reward]) == 2
    assert (
        capsys.readouterr().err
        == f"o2o: error: relabel: dataset {out} already exists in the local Minari store; choose another id\n"
    )
    # The input is untouched, and a directory output opens as a dataset too.
    assert minari.load_dataset(SOURCE)[0].rewards.tolist() == next(source.iterate_episodes()).rewards.tolist()
    folder = tmp_path / "relabel-v0"
    assert main(["relabel", f"dataset={SOURCE}", f"out={folder}", *reward]) == 0
    assert minari.MinariDataset(folder / "data").storage.metadata["reward_model_hash"] == model.model_hash


def test_relabel_refusals_are_one_line(classifier, tmp_path, capsys) -> None:
    reward = ["reward=classifier", f"reward.path={classifier}", f"reward.image_size={SIZE}"]
    cases = [
        (
            ["dataset=o2otest/squares/state-v0", "out=o2otest/squares/x-v0", *reward],
            "o2o: error: relabel: dataset o2otest/squares/state-v0: the reward model needs frames of camera "
            "'agentview'; the rows have frames [] and state ['state']",
        ),
        (
            [f"dataset={SOURCE}", f"out={SOURCE}", *reward],
            "o2o: error: relabel: out=o2otest/squares/demo-v0 is the input",
        ),
        (
            [
                f"dataset={SOURCE}",
                "out=o2otest/squares/y-v0",
                "reward=classifier",
                "reward.image_size=84",
                f"reward.path={classifier}",
            ],
            f"o2o: error: reward.path={classifier}: a classifier of 24x24 frames, but reward.image_size=84",
        ),
        (
            [f"dataset={SOURCE}", "out=o2otest/squares/y-v0", "reward=oracle"],
            "o2o: error: In 'config': Could not find 'reward/oracle'",
        ),
        (
            [f"dataset={SOURCE}", "out=o2otest/squares/y-v0", "reward=classifier"],
            "o2o: error: reward=classifier needs reward.path=",
        ),
        (
            [f"dataset={SOURCE}", "out=o2otest/squares/y-v0", "reward=env"],
            "o2o: error: relabel: reward=env is the env's own",
        ),
        (
            [f"dataset={SOURCE}", "out=not an id", *reward],
            "o2o: error: relabel: out=not an id is neither a Minari id",
        ),
    ]
    for argv, expected in cases:
        assert main(["relabel", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(expected) and err.count("\n") == 1, (argv, err)
    assert "o2otest/squares/x-v0" not in minari.list_local_datasets()
    assert "o2otest/squares/y-v0" not in minari.list_local_datasets()


def test_frames_stored_bottom_up_are_flagged_to_a_model_that_flips_them(store, tmp_path) -> None:
    from rl.rewards.relabel import relabel_dataset

    class Flipping(StepModel):
        cameras = (CAMERA,)
        state_keys = ("state",)
        bottom_up = False

    model = Flipping()
    relabel_dataset(minari.load_dataset(SOURCE), SOURCE, model, str(tmp_path / "upright-v0"), 8, "test")
    assert model.bottom_up is False  # the tiny dataset says nothing about its row order
    upright = minari.MinariDataset(tmp_path / "upright-v0" / "data")
    upright.storage.update_metadata({"image_convention": "opengl"})  # as the demos record robosuite's
    relabel_dataset(upright, "upright-v0", model, str(tmp_path / "flipped-v0"), 8, "test")
    assert model.bottom_up is True
    written = minari.MinariDataset(tmp_path / "flipped-v0" / "data")
    assert written.storage.metadata["image_convention"] == "opengl"  # the input's metadata is carried over
    assert next(ep.rewards.tolist() for ep in written.iterate_episodes()) == [0.0, 1.0, 2.0, 3.0]
