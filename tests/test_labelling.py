"""Rows labelled by a reward model: pending rows, label writes, the sync and async labeller, model
outages, MC returns, relabelling, and a run that resumes exactly with rows still pending."""

from __future__ import annotations

import csv
import logging
import threading

import gymnasium as gym
import numpy as np
import pytest
import torch

import rl.train
from envs.autoreset import EpisodeStats
from envs.vector import VecStep
from rl.buffers import MixedSampler, ObsSpec, ReplayBuffer, RolloutBuffer, RowContext
from rl.checkpoint import load_checkpoint
from rl.config import compose_config
from rl.data.dataset import mc_return_to_go
from rl.loops import build
from rl.loops.labelling import Labeller, RolloutLabeller, relabel_buffer
from rl.rewards import Labels, RewardModel, RewardModelError
from tests.conftest import train_until_checkpoint
from tests.envs.pixel_toy import SIZE

VIEW = {"frames/camera": ((SIZE, SIZE, 3), torch.uint8), "state/x": ((1,), torch.float32)}


class XModel(RewardModel):
    """A stand-in with hand-computable labels: reward = ``scale * x`` of the reached state (named
    state), success = done = the camera's bright column in the last two columns (x >= ~0.8). Down
    (``RewardModelError``) while ``down`` is set, or while the newest row of a batch belongs to one of
    ``down_episodes``."""

    cameras = ("camera",)
    state_keys = ("x",)

    def __init__(self, scale: float = 1.0, down_episodes: tuple[int, ...] = ()) -> None:
        self.scale, self.down, self.down_episodes = scale, False, down_episodes
        self.calls: list[list[int]] = []  # episode ids of each answered batch
        self.gate: threading.Event | None = None  # when set, label waits for it

    def label(self, batch):
        if self.gate is not None:
            self.gate.wait(10)
        if self.down or int(batch.episode[-1]) in self.down_episodes:
            raise RewardModelError("stand-in server down")
        self.calls.append(batch.episode.tolist())
        x = batch.state["x"][:, 0]
        success = batch.frames["camera"][:, 0, :, 0].float().argmax(1) >= SIZE - 2
        return Labels(reward=self.scale * x, success=success, done=success)

    def identity(self) -> bytes:
        return f"x-model {self.scale}".encode()


def frame(x: float) -> np.ndarray:
    from tests.envs.pixel_toy import PixelToyEnv

    env = PixelToyEnv()
    env.x = x
    return env._obs()["camera"]


def view_step(xs: list[float], ended: tuple[int, ...] = ()) -> VecStep:
    """One vector step of len(xs) copies reaching x = xs[j] (obs = [x, 0]); copies in ``ended`` end
    their episode (time limit)."""
    n = len(xs)
    obs = torch.tensor([[x, 0.0] for x in xs])
    truncated = torch.zeros(n, dtype=torch.bool)
    truncated[list(ended)] = True
    return VecStep(
        obs=obs,
        next_obs=obs,
        reward=torch.full((n,), 123.0),  # the env's reward: never used with a model
        terminated=torch.zeros(n, dtype=torch.bool),
        truncated=truncated,
        episodes=tuple(EpisodeStats(j, 0.0, 1, xs[j] >= 0.9, 0.0) for j in ended),
        reward_view={
            "frames/camera": torch.from_numpy(np.stack([frame(x) for x in xs])),
            "state/x": torch.tensor([[x] for x in xs]),
        },
    )


def labelled_buffer(capacity: int = 64, **kwargs) -> ReplayBuffer:
    spec = ObsSpec.from_space(gym.spaces.Box(-np.inf, np.inf, (2,), np.float32))
    return ReplayBuffer(capacity, spec, 1, labelled=True, view_spec=VIEW, **kwargs)


def add_rows(buffer: ReplayBuffer, xs: list[float], first_episode: int = 0) -> None:
    """One row per x, one add each, marked by its action (= its serial)."""
    for i, x in enumerate(xs):
        step = view_step([x])
        context = RowContext(step.reward_view, torch.tensor([first_episode]), torch.tensor([i]))
        action = torch.tensor([[float(buffer.rows_added)]])
        buffer.add(step.obs, action, None, step.next_obs, step.terminated, context)


def test_pending_rows_hold_nan_and_are_never_sampled_across_the_ring_wrap():
    buffer = labelled_buffer(capacity=8)
    add_rows(buffer, [0.1] * 6)
    assert len(buffer) == 0 and torch.isnan(buffer.reward[:6]).all()
    with pytest.raises(RuntimeError, match="wait for labels"):
        buffer.sample(4)
    assert not MixedSampler(None, buffer, 0.0).ready(1)
    serial, rows = buffer.pending(4)
    assert serial == 0 and rows.tolist() == [0, 1, 2, 3]
    buffer.write_labels(0, torch.ones(4), torch.zeros(4), torch.zeros(4, dtype=torch.bool), "m")
    assert len(buffer) == 4 and MixedSampler(None, buffer, 0.0).ready(4)
    assert set(buffer.sample(500).action[:, 0].tolist()) == {0.0, 1.0, 2.0, 3.0}
    # Wrap: 12 rows in a ring of 8 keep serials 4..11; label 4..9, so 4..9 are sampled, 10 and 11 not.
    add_rows(buffer, [0.1] * 6)
    serial, rows = buffer.pending(6)
    assert serial == 4 and rows.tolist() == [4, 5, 6, 7, 0, 1]
    buffer.write_labels(4, torch.ones(6), torch.zeros(6), torch.zeros(6, dtype=torch.bool), "m")
    batch = buffer.sample(1000)
    assert set(batch.action[:, 0].tolist()) == {4.0, 5.0, 6.0, 7.0, 8.0, 9.0}
    assert torch.isfinite(batch.reward).all()
    # Rows the ring overwrote while pending are skipped: 8 more rows drop serials 10 and 11 unlabelled.
    add_rows(buffer, [0.1] * 8)
    assert buffer.pending(100)[0] == 12 and buffer.labelled_upto == 12


def test_labels_go_through_the_buffers_scale_and_bias_and_record_the_model():
    buffer = labelled_buffer(reward_scale=2.0, reward_bias=-1.0)
    add_rows(buffer, [0.1, 0.2, 0.3])
    serial, rows = buffer.pending(3)
    done = torch.tensor([False, True, False])
    buffer.write_labels(serial, torch.tensor([0.5, 1.0, 0.0]), done, done, "hash-a")
    assert buffer.reward[:3].tolist() == [0.0, 1.0, -1.0]
    assert buffer.terminated[:3].tolist() == [0.0, 1.0, 0.0]
    buffer.relabel(rows[:1], torch.tensor([3.0]), torch.tensor([False]), torch.tensor([False]), "hash-b")
    assert buffer.reward[0] == 5.0 and buffer.label_models == ["hash-a", "hash-b"]
    assert buffer.label_model[:3].tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="labelled buffer takes rows with a context"):
        buffer.add(torch.zeros(1, 2), torch.zeros(1, 1), torch.zeros(1), torch.zeros(1, 2), torch.zeros(1))


def test_sync_labeller_labels_each_step_and_writes_mc_returns_at_the_episode_end():
    buffer = labelled_buffer()
    model = XModel()
    labeller = Labeller(model, buffer, num_envs=2, mode="sync", batch=64)
    xs = [[0.0, 0.5], [0.5, 1.0], [1.0, 0.25]]
    for t, row in enumerate(xs):
        labeller.add(torch.zeros(2, 2), torch.zeros(2, 1), view_step(row, ended=(0, 1) if t == 2 else ()))
    assert len(buffer) == 6 and buffer.reward[:6].tolist() == [x for row in xs for x in row]
    assert buffer.episode[:6].tolist() == [0, 1, 0, 1, 0, 1] and buffer.episode_step[:6].tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]
    returns = mc_return_to_go(np.array([0.0, 0.5, 1.0], np.float32), np.array([0, 0, 1], bool), buffer.gamma)
    assert torch.allclose(buffer.mc_return[[0, 2, 4]], torch.from_numpy(returns))
    # Both episodes reached x = 1.0 (labelled successes, terminals); the env says success only for
    # copy 0's, whose last state is the success state (the fake's env check): one false positive.
    assert buffer.terminated[:6].tolist() == [0, 0, 0, 1, 1, 0]
    assert labeller.drain() == {
        "label_lag_rows": 0.0, "label_success": 1.0, "env_success": 0.5, "label_false_positive": 0.5
    }  # fmt: skip
    # New episodes take fresh ids and start at step 0.
    labeller.add(torch.zeros(2, 2), torch.zeros(2, 1), view_step([0.1, 0.85]))
    assert buffer.episode[6:8].tolist() == [2, 3] and buffer.episode_step[6:8].tolist() == [0, 0]


def test_async_labeller_labels_oldest_first_in_batches_and_catches_up():
    buffer = labelled_buffer(capacity=256)
    model = XModel()
    model.gate = threading.Event()  # hold the worker until control has gone ahead
    labeller = Labeller(model, buffer, num_envs=1, mode="async", batch=8)
    try:
        for t in range(40):
            labeller.add(
                torch.zeros(1, 2), torch.zeros(1, 1), view_step([t / 40], ended=(0,) if t % 10 == 9 else ())
            )
        metrics = labeller.drain()
        assert metrics["label_lag_rows"] >= 32 and metrics["label_lag_s"] >= 0.0  # control did not wait
        model.gate.set()
        assert labeller.wait_idle(timeout=20)
    finally:
        labeller.close()
    # The worker may have taken the first row before the rest arrived; then batches of 8 at most.
    assert all(len(c) <= 8 for c in model.calls) and len(model.calls) <= 6
    assert [e for c in model.calls for e in c] == [t // 10 for t in range(40)]  # oldest first
    assert torch.allclose(buffer.reward[:40], torch.arange(40) / 40)
    assert torch.isfinite(buffer.mc_return[:40]).all()
    assert labeller.drain()["label_lag_rows"] == 0


def test_a_model_that_is_down_leaves_rows_waiting_then_recovers(caplog):
    buffer = labelled_buffer()
    model = XModel()
    labeller = Labeller(model, buffer, num_envs=1, mode="sync", batch=64)
    model.down = True
    with caplog.at_level(logging.WARNING, logger="rl.loops.labelling"):
        for t in range(5):
            labeller.add(
                torch.zeros(1, 2), torch.zeros(1, 1), view_step([0.1 * t], ended=(0,) if t == 4 else ())
            )
    assert [r.message for r in caplog.records if "cannot label" in r.message] == [
        "reward model cannot label (stand-in server down): 1 rows wait, the run goes on"
    ]  # once per outage, not once per step
    assert len(buffer) == 0 and torch.isnan(buffer.reward[:5]).all()  # never 0
    assert torch.isinf(buffer.mc_return[:5]).all()  # the episode ended, its labels did not arrive
    assert labeller.drain() == {"label_lag_rows": 5.0}
    model.down = False
    labeller.add(torch.zeros(1, 2), torch.zeros(1, 1), view_step([0.9]))
    assert len(buffer) == 6
    assert torch.allclose(buffer.reward[:6], torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 0.9]))
    returns = mc_return_to_go(
        np.array([0.0, 0.1, 0.2, 0.3, 0.4], np.float32), np.eye(5, dtype=bool)[4], buffer.gamma
    )
    assert torch.allclose(buffer.mc_return[:5], torch.from_numpy(returns))
    assert "labels again" in caplog.text


def test_async_labeller_keeps_control_going_through_an_outage(caplog):
    buffer = labelled_buffer()
    model = XModel()
    model.down = True
    labeller = Labeller(model, buffer, num_envs=1, mode="async", batch=4, retry_s=0.01)
    try:
        with caplog.at_level(logging.WARNING, logger="rl.loops.labelling"):
            for t in range(10):
                labeller.add(torch.zeros(1, 2), torch.zeros(1, 1), view_step([0.05 * t]))
            assert not labeller.wait_idle(timeout=0.2)
            assert labeller.drain()["label_model_down"] == 1.0 and len(buffer) == 0
            model.down = False
            assert labeller.wait_idle(timeout=20)
    finally:
        labeller.close()
    assert sum("cannot label" in r.message for r in caplog.records) == 1
    assert torch.allclose(buffer.reward[:10], 0.05 * torch.arange(10))


def test_relabel_buffer_rewrites_rewards_model_ids_and_mc_returns():
    buffer = labelled_buffer()
    labeller = Labeller(XModel(), buffer, num_envs=1, mode="sync", batch=64)
    for t in range(4):
        labeller.add(
            torch.zeros(1, 2), torch.zeros(1, 1), view_step([0.25 * t], ended=(0,) if t == 2 else ())
        )
    new = XModel(scale=2.0)
    assert relabel_buffer(buffer, new, batch=3) == 4
    assert torch.allclose(buffer.reward[:4], torch.tensor([0.0, 0.5, 1.0, 1.5]))
    assert buffer.label_model[:4].tolist() == [1] * 4 and buffer.label_models[1] == new.model_hash
    returns = mc_return_to_go(np.array([0.0, 0.5, 1.0], np.float32), np.array([0, 0, 1], bool), buffer.gamma)
    assert torch.allclose(buffer.mc_return[:3], torch.from_numpy(returns))
    assert torch.isinf(buffer.mc_return[3])  # its episode is still running


def test_a_resume_with_a_changed_model_relabels_the_buffer():
    buffer = labelled_buffer()
    labeller = Labeller(XModel(), buffer, num_envs=1, mode="sync", batch=64)
    for t in range(3):
        labeller.add(
            torch.zeros(1, 2), torch.zeros(1, 1), view_step([0.25 * t], ended=(0,) if t == 2 else ())
        )
    saved = labeller.state_dict()
    changed = Labeller(XModel(scale=4.0), buffer, num_envs=1, mode="sync", batch=64)
    changed.load_state_dict(saved, episodes_restart=True)
    assert torch.allclose(buffer.reward[:3], torch.tensor([0.0, 1.0, 2.0]))
    assert buffer.label_model[:3].tolist() == [1, 1, 1]
    returns = mc_return_to_go(np.array([0.0, 1.0, 2.0], np.float32), np.array([0, 0, 1], bool), buffer.gamma)
    assert torch.allclose(buffer.mc_return[:3], torch.from_numpy(returns))


def test_on_policy_rollout_waits_for_its_labels_and_scales_them():
    rollout = RolloutBuffer(3, 1, 2, 1, reward_scale=10.0, reward_bias=1.0)
    model = XModel()
    model.gate = threading.Event()
    labeller = RolloutLabeller(model, num_envs=1, mode="async")
    try:
        for x in [0.1, 0.2, 0.95]:
            labeller.add(rollout.t, view_step([x]))
            zeros = torch.zeros(1)
            rollout.add(torch.zeros(1, 2), torch.zeros(1, 1), zeros, torch.full((1,), torch.nan), zeros,
                        torch.zeros(1, dtype=torch.bool), torch.zeros(1, dtype=torch.bool), zeros)  # fmt: skip
        assert torch.isnan(rollout.reward).all()  # acting went on without labels
        model.gate.set()
        metrics = labeller.write_all(rollout)
    finally:
        labeller.close()
    assert torch.allclose(rollout.reward[:, 0], torch.tensor([2.0, 3.0, 10.5]))
    assert rollout.terminated[:, 0].tolist() == [0.0, 0.0, 1.0]
    assert metrics == {"label_success_rate": pytest.approx(1 / 3)}


# ---------------------------------------------------------------------------------------------
# Whole runs

VIEW_TOY = [
    "env.name=view-toy",
    "env.id=ViewToy",
    "env.family=tests.envs.view_toy:make_view_toy",
    "env.score_name=null",
    "env_mode=sync",
    "reward=classifier",  # built by the stand-in below (monkeypatched factory)
    "agent=sac",
    "agent.critic_hidden=[16,16]",
    "agent.actor_hidden=[16,16]",
    "agent.batch_size=8",
    "buffer_capacity=200",
    "threads=1",
    "steps.online=40",
    "steps.warmup=5",
    "steps.checkpoint_every=10",
    "steps.eval_episodes=0",
    "progress=false",
]


def metrics(run_dir) -> list[tuple]:
    with (run_dir / "metrics.csv").open() as f:
        return [tuple(r.values()) for r in csv.DictReader(f) if r["metric"] != "steps_per_second"]


def test_a_sync_labelled_run_resumes_exactly_with_its_pending_rows_labelled_again(tmp_path, monkeypatch):
    """SAC on the view toy, labelled by the stand-in, which is down while the newest row belongs to
    episode 5 (env steps 26-30): the checkpoint at step 30 holds those 5 rows pending; the resumed run
    labels them again and logs what the uninterrupted run logs."""
    monkeypatch.setattr(build, "build_reward_model", lambda cfg, device: XModel(down_episodes=(5,)))
    cfg = compose_config([*VIEW_TOY, "steps.log_every=1"])
    reference = tmp_path / "reference"
    rl.train.train(cfg, reference)
    rows = metrics(reference)
    assert {r[3] for r in rows} >= {"label_lag_rows", "label_success", "env_success", "critic_loss"}
    assert ("30", "online", "30", "label_lag_rows", "5") in rows

    stopped = tmp_path / "stopped"
    train_until_checkpoint(cfg, stopped, 30, monkeypatch)
    saved = load_checkpoint(stopped / "checkpoints/last.pt")["online_buffer"]
    assert saved["rows_added"] - saved["labels"]["labelled_upto"] == 5
    assert torch.isnan(saved["reward"][25:30]).all() and torch.isfinite(saved["reward"][:25]).all()
    rl.train.train(cfg, stopped)
    assert metrics(stopped) == metrics(reference)
    final = [load_checkpoint(d / "checkpoints/last.pt")["online_buffer"] for d in (reference, stopped)]
    assert torch.isfinite(final[0]["reward"]).all()
    for key in ("reward", "terminated", "mc_return"):
        assert torch.equal(final[0][key], final[1][key]), key


def test_the_run_gives_calibration_to_models_that_take_it_and_refuses_an_env_without_a_view(monkeypatch):
    class Calibrated(XModel):
        def set_calibration(self, calibration):
            self.calibration = calibration

    model = Calibrated()
    monkeypatch.setattr(build, "build_reward_model", lambda cfg, device: model)
    run = build.build_run(compose_config(VIEW_TOY))
    try:
        assert run.online_buffer.labelled and set(run.online_buffer.view) == set(VIEW)
        camera = model.calibration["camera"]
        assert torch.equal(camera.intrinsics, torch.eye(3, dtype=torch.float64)) and camera.height == SIZE
    finally:
        run.close()
    pixel_toy = ["env.family=tests.envs.pixel_toy:make_pixel_toy", "agent=sac"]
    with pytest.raises(ValueError, match=r"does not show the model \['frames/camera', 'state/x'\]"):
        build.build_run(compose_config([*VIEW_TOY, *pixel_toy]))
    model = Calibrated()
    model.frame_shape = (SIZE + 8, SIZE + 8, 3)  # a classifier trained on larger frames
    with pytest.raises(
        ValueError,
        match=rf"renders reward camera camera at \({SIZE}, {SIZE}, 3\), the model takes \({SIZE + 8}, {SIZE + 8}, 3\)$",
    ):
        build.build_run(compose_config(VIEW_TOY))


def test_an_async_labelled_run_writes_each_label_to_its_own_row(tmp_path, monkeypatch):
    """The same run with the labeller in the background: it finishes, logs the lag, and every row
    labelled by then holds its own next state's x (the stand-in's label), scaled by the buffer."""
    monkeypatch.setattr(build, "build_reward_model", lambda cfg, device: XModel())
    cfg = compose_config([*VIEW_TOY, "reward.mode=async", "reward.label_batch=4", "env.reward_scale=2.0",
                          "steps.log_every=1000"])  # fmt: skip
    rl.train.train(cfg, tmp_path / "run")
    logged = metrics(tmp_path / "run")
    assert {"label_lag_rows", "label_lag_s", "label_model_down"} <= {r[3] for r in logged}
    # Episodes whose labels arrive between episode ends and log steps are logged when they arrive.
    assert {"label_success", "env_success", "label_false_positive"} <= {r[3] for r in logged}
    saved = load_checkpoint(tmp_path / "run/checkpoints/last.pt")["online_buffer"]
    labelled = saved["labels"]["labelled_upto"]
    assert labelled > 0
    x = saved["next_obs"]["_"][:labelled, 0]
    assert torch.allclose(saved["reward"][:labelled], 2.0 * x)
    assert torch.isnan(saved["reward"][labelled:]).all()


def test_an_on_policy_run_learns_from_labelled_rollouts(tmp_path, monkeypatch):
    """ReinFlow on the view toy with the stand-in in async mode: each rollout reaches the update with
    every reward labelled (x of the state the step reached, the next row's obs within an episode)."""
    from rl.agents.reinflow import ReinFlow

    monkeypatch.setattr(build, "build_reward_model", lambda cfg, device: XModel())
    seen, update_rollout = [], ReinFlow.update_rollout

    def capture(self, rollout, last_obs):
        seen.append((rollout.obs[:, :, 0].clone(), rollout.reward.clone(), rollout.truncated.clone()))
        return update_rollout(self, rollout, last_obs)

    monkeypatch.setattr(ReinFlow, "update_rollout", capture)
    off_policy = [o for o in VIEW_TOY if not o.startswith("agent")]
    cfg = compose_config([
        *off_policy, "agent=reinflow", "agent.hidden=[16,16,16]", "agent.critic_hidden=[16,16,16]",
        "agent.noise_hidden=[8]", "agent.normalize_obs=false", "agent.batch_size=16", "agent.minibatch=8",
        "agent.epochs=1", "agent.repeat_samples=1", "num_envs=2", "rollout_steps=8", "steps.online=16",
        "reward.mode=async",
    ])  # fmt: skip
    rl.train.train(cfg, tmp_path / "run")
    assert len(seen) == 2
    for x, reward, truncated in seen:
        assert torch.isfinite(reward).all()
        within = truncated[:-1] == 0  # the next row continues the episode
        assert torch.equal(reward[:-1][within], x[1:][within])
    assert "label_success_rate" in {r[3] for r in metrics(tmp_path / "run")}


BRIDGE_IDS = ("ids/episode", "ids/step", "ids/obs_id")


def bridge_step(x: float, episode: int, step: int, obs_id: int) -> VecStep:
    """One copy's step from the bridge: ``view_step`` with the server's key of the reached observation."""
    result = view_step([x])
    ids = dict(zip(BRIDGE_IDS, (torch.tensor([v]) for v in (episode, step, obs_id)), strict=True))
    return VecStep(**{**result.__dict__, "reward_view": {**result.reward_view, **ids}})


def test_rows_from_the_bridge_have_their_labels_appended_to_the_label_log(tmp_path):
    """Async labels, held back and then released in batches of 4, land in the log under the server's
    keys with the values the buffer holds; rows without ids write no log; an id float32 cannot keep
    exactly is refused rather than logged under a wrong key."""
    from rl.data.label_log import read_label_log

    spec = ObsSpec.from_space(gym.spaces.Box(-np.inf, np.inf, (2,), np.float32))
    view = {**VIEW, **{k: ((), torch.float32) for k in BRIDGE_IDS}}
    buffer = ReplayBuffer(64, spec, 1, labelled=True, view_spec=view)
    model = XModel(scale=2.0)
    model.gate = threading.Event()
    labeller = Labeller(model, buffer, num_envs=1, mode="async", batch=4)
    labeller.open_label_log(tmp_path)
    try:
        for t in range(10):
            labeller.add(torch.zeros(1, 2), torch.zeros(1, 1), bridge_step(t / 10, 7, t + 1, 100 + t))
        model.gate.set()
        assert labeller.wait_idle(timeout=20)
    finally:
        labeller.close()
    records = read_label_log(tmp_path / "labels.jsonl")
    assert [r.key for r in records] == [(7, t + 1, 100 + t) for t in range(10)]
    assert [r.reward for r in records] == pytest.approx([2 * t / 10 for t in range(10)])
    assert [r.reward for r in records] == pytest.approx(buffer.reward[:10].tolist())
    assert {r.model for r in records} == {model.model_hash} and {r.p for r in records} == {None}

    plain = Labeller(XModel(), labelled_buffer(), num_envs=1, mode="sync", batch=4)
    plain.open_label_log(tmp_path / "plain")
    plain.add(torch.zeros(1, 2), torch.zeros(1, 1), view_step([0.5]))
    assert plain.label_log is None and not (tmp_path / "plain").exists()

    big = Labeller(XModel(), ReplayBuffer(8, spec, 1, labelled=True, view_spec=view), 1, "sync", 4)
    big.open_label_log(tmp_path / "big")
    with pytest.raises(ValueError, match="observation id at or past 16777216 cannot be kept exactly"):
        big.add(torch.zeros(1, 2), torch.zeros(1, 1), bridge_step(0.5, 0, 1, 2**24 + 1))
    big.close()
