"""Reset-free forward/backward practice (envs/reset_free.py, rl/loops/reset_free.py).

Logic on a fake one-dimensional scene (a point on a line: forward = reach x >= 1, backward = come
back to x <= 0), counted through its own reset calls; one short real robosuite Lift check.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from envs import FAMILIES
from envs.config import EnvConfig
from envs.reset_free import BACKWARD, FORWARD, SCENES, ResetFreeConfig, ResetFreeEnv
from rl.checkpoint import load_checkpoint
from rl.config import compose_config
from rl.loops import Bookkeeper, LoopState, RunLogger, build_run, run_phases, run_state
from rl.loops import reset_free as reset_free_loop
from rl.rewards import LabelInput, Labels, PerTaskLabels, RewardModel, RewardModelError

UP, DOWN, STAY = np.array([1.0], np.float32), np.array([-1.0], np.float32), np.array([0.0], np.float32)


class Line(gym.Env):
    """x moves by the action; counts its own resets."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, cfg: EnvConfig | None = None) -> None:
        self.x, self.resets = 0.0, 0

    def reset(self, *, seed=None, options=None):
        self.x, self.resets = 0.0, self.resets + 1
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x += float(action[0])
        return np.array([self.x], np.float32), 0.0, False, False, {}


class LineTasks:
    def __init__(self, config: ResetFreeConfig) -> None:
        self.human_resets = 0

    def anchor(self, env):
        pass

    def success(self, env, task, info):
        return env.unwrapped.x >= 1.0 if task == FORWARD else env.unwrapped.x <= 0.0

    def human_reset(self, env):
        env.unwrapped.x = 0.0
        self.human_resets += 1
        return np.array([0.0], np.float32)


def practice(step_limit: int = 3, **options) -> tuple[ResetFreeEnv, Line]:
    line = Line()
    env = ResetFreeEnv(line, LineTasks(ResetFreeConfig()), ResetFreeConfig(**options), step_limit)
    env.reset(seed=0)
    return env, line


def episode(env: ResetFreeEnv, action: np.ndarray) -> tuple[bool, bool, np.ndarray]:
    """Act until the practice episode ends; (terminated, truncated, first obs of the next one)."""
    while True:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            return terminated, truncated, env.reset()[0]


def test_success_switches_the_task_without_resetting_the_scene():
    env, line = practice()
    assert env.task == FORWARD and line.resets == 1
    terminated, _, obs = episode(env, UP)
    assert terminated and env.task == BACKWARD
    np.testing.assert_array_equal(obs, [1.0, 0.0, 1.0])  # the scene kept x = 1; task one-hot: backward
    terminated, _, obs = episode(env, DOWN)
    assert terminated and env.task == FORWARD
    np.testing.assert_array_equal(obs, [0.0, 1.0, 0.0])
    assert line.resets == 1 and env.counts.env_resets == 1
    assert env.counts.episodes == [1, 1] and env.counts.successes == [1, 1]


def test_failure_retries_the_same_task_from_where_the_scene_is():
    env, line = practice(step_limit=3, human_after=0, safety_after=0)
    env.step(np.array([0.5], np.float32))
    terminated, truncated, obs = episode(env, STAY)
    assert truncated and not terminated and env.task == FORWARD
    np.testing.assert_array_equal(obs, [0.5, 1.0, 0.0])
    assert line.resets == 1 and env.counts.episodes == [1, 0] and env.failures == 1


def test_safety_reset_after_n_consecutive_failures_is_a_counted_real_reset():
    env, line = practice(step_limit=2, human_after=0, safety_after=3)
    episode(env, UP)  # a forward success, then backward fails twice ...
    episode(env, UP)
    episode(env, UP)
    assert line.resets == 1 and env.failures == 2
    episode(env, UP)  # ... and a third time: the safety reset
    assert line.resets == 2 and line.x == 0.0
    assert env.counts.env_resets == 2 and env.counts.safety_resets == 1
    assert env.task == FORWARD and env.failures == 0


def test_human_fallback_every_k_failures_is_counted_and_restarts_forward():
    env, line = practice(step_limit=2, human_after=2, safety_after=5)
    episode(env, UP)  # forward succeeds at x = 1
    episode(env, UP)  # backward fails (x = 3)
    assert env.task == BACKWARD and env.counts.human_resets == 0
    _, _, obs = episode(env, UP)  # second consecutive failure: the human puts it back
    np.testing.assert_array_equal(obs, [0.0, 1.0, 0.0])
    assert env.counts.human_resets == 1 and env.tasks.human_resets == 1 and line.resets == 1
    assert env.failures == 2  # a human reset does not clear the count towards the safety reset


def test_successes_per_reset_by_hand():
    """human_after=2, safety_after=5, one step per episode:
    1 fwd ok, 2 bwd ok, 3 fwd ok, 4 bwd fail, 5 bwd fail (2 in a row: human, back to fwd),
    6 fwd fail, 7 fwd fail (4 in a row: human), 8 fwd fail (5: safety reset), 9 fwd ok.
    Forward successes 3; env resets 2 (the first and the safety one), human resets 2 -> 3 / 4."""
    env, line = practice(step_limit=1, human_after=2, safety_after=5)
    for action in (UP, DOWN, UP, UP, UP, STAY, STAY, STAY, UP):
        episode(env, action)
    counts = env.counts
    assert counts.successes == [3, 1] and counts.episodes == [6, 3]
    assert (counts.env_resets, counts.human_resets, counts.safety_resets) == (2, 2, 1)
    assert counts.successes_per_reset == pytest.approx(3 / 4)
    assert counts.metrics()["successes_per_reset"] == pytest.approx(0.75)
    assert line.resets == 2 and env.task == BACKWARD


def test_episodic_mode_resets_every_episode_and_stays_forward():
    env, line = practice(step_limit=2, mode="episodic")
    episode(env, UP)
    episode(env, STAY)
    episode(env, UP)
    assert line.resets == 4 and env.task == FORWARD
    assert env.counts.episodes == [3, 0] and env.counts.successes == [2, 0]
    assert env.counts.successes_per_reset == pytest.approx(2 / 4)


def test_a_seeded_reset_is_always_real_and_starts_forward():
    env, line = practice()
    episode(env, UP)
    assert env.task == BACKWARD
    env.reset(seed=3)
    assert line.resets == 2 and env.task == FORWARD and env.counts.env_resets == 2


def test_a_labelled_success_replaces_the_predicate():
    env, _ = practice(step_limit=5)
    calls = []
    env.set_success_fn(FORWARD, lambda obs, info: calls.append(float(obs[0])) or len(calls) == 2)
    _, reward, terminated, _, info = env.step(STAY)
    assert (reward, terminated, info["success"]) == (0.0, False, False)
    _, reward, terminated, _, info = env.step(STAY)  # the predicate says no (x = 0); the labels say yes
    assert (reward, terminated, info["success"]) == (1.0, True, True)
    assert calls == [0.0, 0.0]
    env.set_success_fn(FORWARD, None)
    env.reset()
    assert env.task == BACKWARD


def test_bad_options_are_one_line():
    with pytest.raises(ValueError, match=r"env.kwargs.reset_free: unknown keys \['humans'\]"):
        ResetFreeConfig.from_kwargs({"humans": 1})
    with pytest.raises(ValueError, match="mode: must be one of"):
        ResetFreeConfig.from_kwargs({"mode": "forever"})


@pytest.fixture
def line_family(monkeypatch):
    monkeypatch.setitem(FAMILIES, "line", lambda cfg: gym.wrappers.TimeLimit(Line(cfg), 10**9))
    monkeypatch.setitem(SCENES, "Line", LineTasks)


def test_no_env_reset_between_practice_episodes_through_the_vector_env(line_family):
    cfg = EnvConfig(
        name="line", id="Line", family="reset_free", score_name=None, max_episode_steps=2,
        kwargs={"reset_free": {"family": "line", "human_after": 0, "safety_after": 0}},
    )  # fmt: skip
    vec = envs.make_vec(cfg, 1, "cpu", "sync")
    vec.reset(seed=0)
    for _ in range(9):  # forward succeeds at once, then four 2-step backward episodes fail
        result = vec.step(np.array([[1.0]], np.float32))
    line = vec._copies.envs[0].unwrapped
    assert line.resets == 1 and line.x == 9.0  # retried from where it was, never reset
    assert len(result.episodes) == 1 and result.next_obs[0, -2:].tolist() == [0.0, 1.0]


def line_run(online: int):
    overrides = [
        "agent=sac", "agent.critic_hidden=[16,16]", "agent.actor_hidden=[16,16]", "agent.batch_size=8",
        "env=lift", "env.name=line", "env.id=Line", "env.family=reset_free", "env.max_episode_steps=3",
        "+env.kwargs.reset_free={family: line, human_after: 2, safety_after: 4}",
        f"steps.online={online}", "steps.warmup=20", "steps.eval_episodes=0", "steps.log_every=20",
        "steps.checkpoint_every=1000", "buffer_capacity=200", "progress=false", "env_mode=sync",
    ]  # fmt: skip
    return build_run(compose_config(overrides))


def practise(run, state: LoopState, run_dir: Path) -> None:
    logger = RunLogger(run_dir, run.schedule.total, state.step, False)
    reset_free_loop.online_phase(run, state, Bookkeeper(run, state, run_dir, logger))
    logger.close()


def test_the_loop_logs_the_practice_counters(line_family, tmp_path):
    run = line_run(60)
    assert reset_free_loop.applies(run)
    state = LoopState.start(run)
    run_phases(run, state, tmp_path)  # the dispatch rl.train uses picks the reset-free phase
    practice_env = reset_free_loop.practice_env(run)
    counts = practice_env.counts
    assert sum(counts.episodes) == state.episodes > 0
    assert counts.env_resets == practice_env.env.unwrapped.resets
    summary = state.summary["reset_free"]
    assert summary["successes_per_reset"] == pytest.approx(
        counts.successes[FORWARD] / (counts.env_resets + counts.human_resets)
    )
    logged = Path(tmp_path / "metrics.csv").read_text()
    assert "successes_per_reset" in logged and "human_resets" in logged


def test_a_resumed_run_continues_the_counts_and_counts_its_reset(line_family, tmp_path):
    first = line_run(40)
    state = LoopState.start(first)
    practise(first, state, tmp_path)
    saved = reset_free_loop.practice_env(first).counts
    payload = load_checkpoint(tmp_path / run_state.LAST_CHECKPOINT)
    second = line_run(80)  # the same run, given more steps
    resumed = run_state.restore(second, payload)
    assert resumed.step == 40 and resumed.episodes == sum(saved.episodes)
    practise(second, resumed, tmp_path)
    counts = reset_free_loop.practice_env(second).counts
    assert sum(counts.episodes) == resumed.episodes > sum(saved.episodes)
    fresh = second.env.envs[0].unwrapped.resets  # the resume's own two, then its safety resets
    assert counts.env_resets == saved.env_resets + 1 + (fresh - 2)
    assert counts.human_resets >= saved.human_resets and counts.successes[FORWARD] >= saved.successes[FORWARD]


def test_lift_forward_backward_and_the_scripted_human_without_a_reset():
    """Real robosuite Lift, one env.reset(): the scripted expert lifts the cube (forward success); the
    backward episode starts from the lifted scene, puts the cube down where it started and opens the
    gripper (backward success); the forward task then fails to its step limit and the scripted human
    puts the cube back (human_after=1)."""
    from envs.scripted import ScriptedExpert

    cfg = EnvConfig(
        name="lift", id="Lift", family="reset_free", score_name=None, max_episode_steps=60,
        kwargs={"reset_free": {"human_after": 1, "safety_after": 0}},
    )  # fmt: skip
    env = envs.make(cfg)
    counts, robosuite_env = env.get_wrapper_attr("counts"), env.unwrapped
    suite = robosuite_env.suite
    resets = []
    original_reset = robosuite_env.reset
    robosuite_env.reset = lambda **kw: resets.append(1) or original_reset(**kw)

    def cube() -> np.ndarray:
        return suite.sim.data.body_xpos[suite.cube_body_id].copy()

    env.reset(seed=0)
    start = cube()
    expert = ScriptedExpert(env)
    expert.reset(0)
    terminated, truncated = False, False
    while not (terminated or truncated):
        _, reward, terminated, truncated, info = env.step(expert.act())
    assert terminated and info["success"] and info["env_success"] and reward == 1.0
    lifted = cube()
    obs, _ = env.reset()
    assert obs[-2:].tolist() == [0.0, 1.0] and len(resets) == 1 and np.array_equal(cube(), lifted)

    eef_site = suite.robots[0].eef_site_id["right"]
    opening = 0
    while True:  # carry it back over its start, lower it to rest there, then open the gripper
        eef = suite.sim.data.site_xpos[eef_site]
        target = start + (eef - cube()) + np.array([0.0, 0.0, 0.01])
        action = np.zeros(7, np.float32)
        if opening == 0 and np.linalg.norm(target - eef) > 0.01:
            action[:3], action[6] = np.clip((target - eef) / 0.05, -1, 1), 1.0
        else:
            opening, action[6] = opening + 1, -1.0
        _, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert terminated and info["success"] and reward == 1.0 and opening > 0
    obs, _ = env.reset()
    assert obs[-2:].tolist() == [1.0, 0.0] and counts.successes == [1, 1] and len(resets) == 1

    while not env.step(np.zeros(7, np.float32))[3]:  # the forward task fails to its step limit
        pass
    aside = start + np.array([0.1, 0.1, 0.0])  # the cube knocked away meanwhile
    suite.sim.data.set_joint_qpos(suite.cube.joints[0], np.concatenate([aside, [1.0, 0.0, 0.0, 0.0]]))
    obs, _ = env.reset()  # one failure: the scripted human puts the cube back
    assert counts.human_resets == 1 and counts.env_resets == 1 and len(resets) == 1
    assert obs[-2:].tolist() == [1.0, 0.0] and np.linalg.norm(cube()[:2] - start[:2]) < 1e-6
    tasks = env.get_wrapper_attr("tasks")
    assert tasks.success(robosuite_env, BACKWARD, {}) and not tasks.success(robosuite_env, FORWARD, {})


class BrightIsSuccess(RewardModel):
    """Success when the reward camera's frame is bright; down (RewardModelError) when asked to be."""

    cameras = ("agentview",)
    down = False

    def __init__(self) -> None:
        self.seen: list[LabelInput] = []

    def label(self, batch: LabelInput) -> Labels:
        self.seen.append(batch)
        if self.down:
            raise RewardModelError("server down")
        success = batch.frames["agentview"].float().mean(dim=(1, 2, 3)) > 100
        return Labels(reward=success.float(), success=success, done=success)

    def identity(self) -> bytes:
        return b"bright"


def test_the_forward_switch_follows_the_reward_model_on_the_reward_view():
    env, _ = practice(step_limit=3)
    model = BrightIsSuccess()
    env.set_success_fn(FORWARD, reset_free_loop.labelled_success(model, env))
    dark = {"frames/agentview": np.zeros((4, 4, 3), np.uint8), "state/cube_pos": np.zeros(3, np.float32)}
    bright = {**dark, "frames/agentview": np.full((4, 4, 3), 200, np.uint8)}
    success = env.success_fns[FORWARD]
    assert not success(None, {"reward_view": dark})
    env.steps = 2
    assert success(None, {"reward_view": bright})
    batch = model.seen[-1]
    assert batch.frames["agentview"].shape == (1, 4, 4, 3) and batch.state["cube_pos"].shape == (1, 3)
    assert batch.step.tolist() == [2] and batch.episode.tolist() == [0]
    model.down = True  # cannot say now: not a success, the episode runs on to its step limit
    assert not success(None, {"reward_view": bright})
    with pytest.raises(ValueError, match="needs the env's reward view"):
        success(None, {})


class LineWithView(Line):
    """The line with a one-camera reward view whose brightness is 200 where x >= 1, else 0."""

    reward_view_space = gym.spaces.Dict({"frames/agentview": gym.spaces.Box(0, 255, (4, 4, 3), np.uint8)})

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        frame = np.full((4, 4, 3), 200 if self.x >= 1.0 else 0, np.uint8)
        return obs, reward, terminated, truncated, {**info, "reward_view": {"frames/agentview": frame}}


def test_the_practice_view_carries_each_steps_task_and_verdict_for_the_labeller():
    env = ResetFreeEnv(LineWithView(), LineTasks(ResetFreeConfig()), ResetFreeConfig(), 3)
    env.reset(seed=0)
    # what the vector env reads: the outermost layout, the inner camera plus the two task flags
    space = envs.autoreset._outermost(gym.wrappers.PassiveEnvChecker(env), "reward_view_space")
    assert set(space.spaces) == {"frames/agentview", "state/task", "state/task_success"}
    views = []
    for action in (UP, STAY, DOWN):  # forward succeeds at x=1; backward succeeds at x=0
        *_, terminated, _, info = env.step(action)
        views.append(info["reward_view"])
        if terminated:
            env.reset()
    assert [(v["state/task"][0], v["state/task_success"][0]) for v in views] == [(0, 1), (1, 0), (1, 1)]
    assert [v["frames/agentview"][0, 0, 0] for v in views] == [200, 200, 0]


def test_per_task_labels_take_the_model_forward_and_the_env_verdict_backward():
    model = BrightIsSuccess()
    labels = PerTaskLabels(model)
    # rows: forward bright, forward dark, backward bright (cube still up: not put back), backward done
    frames = torch.tensor([200, 0, 200, 0], dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 4, 4, 3)
    batch = LabelInput(
        frames={"agentview": frames},
        state={"task": torch.tensor([[0.0], [0.0], [1.0], [1.0]]),
               "task_success": torch.tensor([[1.0], [0.0], [0.0], [1.0]])},
        episode=torch.zeros(4, dtype=torch.int64),
        step=torch.arange(4),
    )  # fmt: skip
    got = labels.label(batch)
    assert got.reward.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert got.success.tolist() == got.done.tolist() == [True, False, False, True]
    assert labels.model_hash == model.model_hash and labels.cameras == model.cameras
    assert set(labels.state_keys) == {"task", "task_success"}
