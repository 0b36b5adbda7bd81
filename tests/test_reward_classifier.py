"""The success classifier: it learns a visible success from tiny synthetic frames, its threshold and
metrics match values computed by hand, its checkpoint round-trips, and bad configs are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rl.rewards import LabelInput, RewardConfig, RewardModelConfigError, build_reward_model
from rl.rewards.classifier import (
    FrameSet,
    TrainClassifierConfig,
    binary_metrics,
    choose_threshold,
    drop_contradictions,
    roc_auc,
    save_classifier,
    split_episodes,
    train_classifier,
)

SIZE = 24
CAMERA = "agentview"


def square_episode(rng: np.random.Generator, steps: int, success: bool) -> tuple[np.ndarray, np.ndarray]:
    """``steps + 1`` noisy dark ``SIZE``x``SIZE`` frames; a successful episode's last frame shows a bright
    6x6 square somewhere (the success), and it alone is flagged. Returns ``(frames, success flags)``."""
    frames = rng.integers(0, 90, (steps + 1, SIZE, SIZE, 3), dtype=np.uint8)
    flags = np.zeros(steps + 1, dtype=bool)
    if success:
        y, x = rng.integers(2, SIZE - 8, 2)
        frames[-1, y : y + 6, x : x + 6] = 250
        flags[-1] = True
    return frames, flags


def square_frames(episodes: int, steps: int, seed: int) -> FrameSet:
    """Half the episodes succeed (one positive frame each), as the demos do."""
    rng = np.random.default_rng(seed)
    parts = [square_episode(rng, steps, success=i % 2 == 0) for i in range(episodes)]
    return FrameSet(
        {CAMERA: np.concatenate([f for f, _ in parts])},
        np.concatenate([s for _, s in parts]),
        np.repeat(np.arange(episodes), steps + 1),
    )


def tiny_config(**overrides) -> TrainClassifierConfig:
    fields = dict(dataset="synthetic", cameras=CAMERA, steps=200, batch=32, filters=8, feature_dim=16, pad=2)
    return TrainClassifierConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    data = square_frames(episodes=40, steps=5, seed=0)
    net, metrics = train_classifier(data, tiny_config())
    return data, net, metrics


def test_classifier_learns_a_visible_success_on_held_out_episodes(trained) -> None:
    _data, net, metrics = trained
    # 8 of 40 episodes held out (4 successful): 48 frames, 4 positives. Chance is AUC 0.5 and, at any
    # threshold, precision 4/48; calling nothing a success scores accuracy 44/48 = 0.917.
    assert metrics["held_out"] == {"episodes": 8, "frames": 48, "positives": 4}
    assert metrics["train"] == {"episodes": 32, "frames": 192, "positives": 16}
    assert metrics["roc_auc"] >= 0.95
    assert metrics["precision_target_met"] and metrics["precision"] >= 0.95
    assert metrics["recall"] >= 0.75 and metrics["accuracy"] > 44 / 48
    # The squares of fresh episodes, never seen, are told apart from fresh noise frames.
    fresh = square_frames(episodes=10, steps=3, seed=1)
    p = net.probabilities(fresh.frames)
    assert roc_auc(p, fresh.success) >= 0.95


def test_threshold_is_the_lowest_reaching_the_precision_target() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.2])
    labels = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    # By hand, precision of score >= t: t=0.9: 1/1, 0.8: 2/2, 0.7: 2/3, 0.6: 3/4, 0.4: 3/5, 0.2: 3/6.
    assert choose_threshold(scores, labels, 0.95) == (0.8, True)
    assert choose_threshold(scores, labels, 0.75) == (0.6, True)
    assert choose_threshold(scores, labels, 0.5) == (0.2, True)
    # Nothing reaches 1.0 when the top score is a negative: the most precise (0.8: 2/3) is kept.
    assert choose_threshold(np.array([0.9, 0.8, 0.3]), np.array([0, 1, 0], bool), 1.0) == (0.8, False)


def test_metrics_match_values_computed_by_hand() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.2])
    labels = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    # score >= 0.65 calls rows 0, 1, 2: 2 true positives of 3 called, of 3 positives; rows 2 and 3 wrong.
    assert binary_metrics(scores, labels, 0.65) == pytest.approx(
        {"accuracy": 4 / 6, "precision": 2 / 3, "recall": 2 / 3}
    )
    # Positives 0.9, 0.8, 0.6 against negatives 0.7, 0.4, 0.2: 3 + 3 + 2 of 9 pairs ordered right.
    assert roc_auc(scores, labels) == pytest.approx(8 / 9)
    # A tie between a positive and a negative counts half: (0.5 + 1) / 2.
    assert roc_auc(np.array([0.5, 0.5, 0.2]), np.array([1, 0, 0], bool)) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        roc_auc(np.array([0.1, 0.2]), np.array([0, 0], bool))


def test_split_is_by_episode_seeded_and_stratified() -> None:
    data = square_frames(episodes=20, steps=3, seed=0)
    train, held = split_episodes(data, holdout=0.2, seed=5)
    assert not set(data.episode[train]) & set(data.episode[held])
    assert len(train) + len(held) == len(data)
    held_episodes = np.unique(data.episode[held])
    assert len(held_episodes) == 4 and data.success[held].sum() == 2  # 2 of 10 successful, 2 of 10 failed
    assert (split_episodes(data, 0.2, seed=5)[1] == held).all()
    assert not np.array_equal(split_episodes(data, 0.2, seed=6)[1], held)


def test_a_negative_identical_to_a_positive_is_dropped() -> None:
    data = square_frames(episodes=4, steps=2, seed=0)
    data.frames[CAMERA][0] = data.frames[CAMERA][2]  # episode 0's reset frame copies its success frame
    kept = drop_contradictions(data)
    assert kept.dropped_identical == 1 and len(kept) == len(data) - 1 and kept.success.sum() == 2


def test_checkpoint_round_trip_and_labels(trained, tmp_path) -> None:
    data, net, metrics = trained
    path = tmp_path / "clf.pt"
    report = save_classifier(
        path, net, metrics, tiny_config(command="python -m rl.rewards train-classifier ...")
    )
    assert report == tmp_path / "clf.json"
    cfg = RewardConfig(
        name="classifier", path=str(path), cameras=[CAMERA], image_size=SIZE, success_reward=2.0
    )
    model = build_reward_model(cfg, torch.device("cpu"))
    assert model.cameras == (CAMERA,) and model.state_keys == () and model.threshold == metrics["threshold"]
    frames = torch.from_numpy(data.frames[CAMERA][:12])
    batch = LabelInput({CAMERA: frames}, {}, torch.zeros(12, dtype=torch.int64), torch.arange(12))
    labels = model.label(batch)
    p = torch.from_numpy(net.probabilities({CAMERA: frames}))
    assert torch.allclose(labels.info["p_success"], p)
    assert torch.equal(labels.success, p >= metrics["threshold"]) and labels.success.any()
    assert torch.equal(labels.done, labels.success)
    assert torch.equal(labels.reward, 2.0 * labels.success.float())
    # The hash is the weights, threshold and cameras: the same file gives the same hash, another
    # threshold another one.
    assert build_reward_model(cfg, torch.device("cpu")).model_hash == model.model_hash
    other = RewardConfig(**{**vars(cfg), "threshold": 0.99})
    assert build_reward_model(other, torch.device("cpu")).model_hash != model.model_hash

    # The proprio sanity check: a success also needs state["cube_pos"][:, 2] >= 0.85.
    sane = RewardConfig(**{**vars(cfg), "sanity_key": "cube_pos", "sanity_min": 0.85})
    checked = build_reward_model(sane, torch.device("cpu"))
    assert checked.state_keys == ("cube_pos",)
    z = torch.where(torch.arange(12) % 2 == 0, 0.9, 0.8)
    state = {"cube_pos": torch.stack([torch.zeros(12), torch.zeros(12), z], 1)}
    sane_labels = checked.label(LabelInput({CAMERA: frames}, state, batch.episode, batch.step))
    assert torch.equal(sane_labels.success, labels.success & (z >= 0.85))


def test_bad_classifier_configs_are_refused_in_one_line(trained, tmp_path) -> None:
    _data, net, metrics = trained
    path = tmp_path / "clf.pt"
    save_classifier(path, net, metrics, tiny_config())
    cpu = torch.device("cpu")
    cases = {
        "image_size": (
            RewardConfig(name="classifier", path=str(path), cameras=[CAMERA], image_size=84),
            rf"^reward.path={path}: a classifier of 24x24 frames, but reward.image_size=84$",
        ),
        "cameras": (
            RewardConfig(name="classifier", path=str(path), cameras=["robot0_eye_in_hand"], image_size=SIZE),
            r"a classifier of cameras \['agentview'\], but reward.cameras=\['robot0_eye_in_hand'\]$",
        ),
        "no path": (RewardConfig(name="classifier"), r"^reward=classifier needs reward.path="),
        "missing file": (
            RewardConfig(name="classifier", path=str(tmp_path / "absent.pt")),
            r"^reward.path: checkpoint .*absent.pt: no such file$",
        ),
        "unknown model": (
            RewardConfig(name="oracle"),
            r"^reward.name='oracle': not one of env, classifier, vlm_http",
        ),
    }
    for name, (cfg, message) in cases.items():
        with pytest.raises(RewardModelConfigError, match=message) as caught:
            build_reward_model(cfg, cpu)
        assert "\n" not in str(caught.value), name
    assert build_reward_model(RewardConfig(), cpu) is None  # reward=env: the env's own reward

    # A model built for 24x24 frames is handed 32x32 ones: refused, not resized.
    model = build_reward_model(RewardConfig(name="classifier", path=str(path), image_size=SIZE), cpu)
    wrong = LabelInput(
        {CAMERA: torch.zeros(2, 32, 32, 3, dtype=torch.uint8)},
        {},
        torch.zeros(2, dtype=torch.int64),
        torch.arange(2),
    )
    with pytest.raises(
        RewardModelConfigError, match=r"frames are \(32, 32, 3\), the classifier takes \(24, 24, 3\)"
    ):
        model.label(wrong)


def test_cli_refuses_bad_arguments_in_one_line(capsys) -> None:
    from rl.rewards.__main__ import main

    cases = [
        (
            ["train-classifier"],
            "o2o: error: train-classifier: dataset=<minari id or dataset directory> is required",
        ),
        (
            ["train-classifier", "dataset=x", "steps=many"],
            "o2o: error: Value 'many' of type 'str' could not be",
        ),
        (
            ["train-classifier", "dataset=x", "colour=red"],
            "o2o: error: Key 'colour' not in 'TrainClassifierConfig'",
        ),
        (
            ["train-classifier", "dataset=x", "precision_target=1.5"],
            "o2o: error: train-classifier: precision_target",
        ),
        (
            ["train-classifier", "dataset=o2otest/none/absent-v0"],
            "o2o: error: demo dataset o2otest/none/absent-v0",
        ),
        (["train-classifier", "verbose"], "o2o: error: argument 'verbose': expected key=value"),
        (["relabel", "dataset=x", "out=y-v0"], "o2o: error: relabel: reward=<name> is required"),
        (
            ["relabel", "dataset=x", "reward=classifier"],
            "o2o: error: relabel: dataset=<minari id or dir> and out=",
        ),
        (["classify"], "o2o: error: unknown command 'classify': one of train-classifier, relabel"),
    ]
    for argv, start in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(start) and err.count("\n") == 1, (argv, err)


def test_a_frozen_backbone_from_a_local_file_stays_as_loaded(tmp_path) -> None:
    from rl.nets.encoders import ResNet10

    weights = tmp_path / "resnet10.pt"
    torch.manual_seed(3)
    torch.save(ResNet10(3, filters=8).state_dict(), weights)
    cfg = tiny_config(steps=3, backbone="resnet10", weights=str(weights), out=str(tmp_path / "clf.pt"))
    net, metrics = train_classifier(square_frames(episodes=8, steps=2, seed=0), cfg)
    backbone = net.encoder.cameras[CAMERA].backbone.state_dict()
    loaded = torch.load(weights)
    assert all(torch.equal(backbone[k], loaded[k]) for k in loaded)  # frozen: untouched by training
    save_classifier(tmp_path / "clf.pt", net, metrics, cfg)
    model = build_reward_model(
        RewardConfig(name="classifier", path=str(tmp_path / "clf.pt"), image_size=SIZE), torch.device("cpu")
    )
    frames = {CAMERA: torch.from_numpy(square_frames(episodes=2, steps=1, seed=2).frames[CAMERA])}
    np.testing.assert_allclose(model.net.probabilities(frames, 4), net.probabilities(frames), rtol=1e-5)
