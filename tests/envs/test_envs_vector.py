"""make_vec: same-step autoreset against a hand-written sequence, seeding, modes agreeing, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils import seeding
from toy_env import fail_on_reset, make_toy

import envs
from envs import EnvConfig, EpisodeStats

MODES = ["sync", "async"]


@pytest.fixture
def toy_cfg(monkeypatch: pytest.MonkeyPatch) -> EnvConfig:
    monkeypatch.setitem(envs.FAMILIES, "toy", make_toy)
    return EnvConfig(name="toy", id="Toy", family="toy", score_name=None)


def u(seed: int) -> float:
    return float(seeding.np_random(seed)[0].uniform())


@pytest.mark.parametrize("mode", MODES)
def test_autoreset_matches_hand_written_sequence(toy_cfg: EnvConfig, mode: str) -> None:
    with envs.make_vec(toy_cfg, 2, mode=mode) as vec:
        obs = vec.reset(seed=10)
        u0, u1 = u(10), u(11)
        torch.testing.assert_close(obs, torch.tensor([[0, 0, u0], [0, 0, u1]], dtype=torch.float32))

        step = vec.step(torch.tensor([[0.0], [0.0]]))  # raw actions 0: both continue
        torch.testing.assert_close(step.next_obs, torch.tensor([[0, 1, u0], [0, 1, u1]], dtype=torch.float32))
        assert step.obs is step.next_obs and step.episodes == ()
        torch.testing.assert_close(step.reward, torch.tensor([1.0, 1.0]))

        # Copy 0 terminates (1.7 is clipped to 1, i.e. raw 2 > 1.5). Its transition ends in the true
        # final observation; the observation to act on next is the new episode's first one, drawn
        # from copy 0's own generator (no reseeding).
        step = vec.step(np.array([[1.7], [0.0]]))
        u0_next = float(seeding.np_random(10)[0].uniform(size=2)[1])
        torch.testing.assert_close(step.next_obs, torch.tensor([[0, 2, u0], [0, 2, u1]], dtype=torch.float32))
        torch.testing.assert_close(step.obs, torch.tensor([[1, 0, u0_next], [0, 2, u1]], dtype=torch.float32))
        assert step.terminated.tolist() == [True, False] and step.truncated.tolist() == [False, False]
        torch.testing.assert_close(step.reward, torch.tensor([4.0, 2.0]))
        assert step.episodes == (EpisodeStats(0, 5.0, 2, True, 3.0),)

        step = vec.step(np.zeros((2, 1)))
        torch.testing.assert_close(
            step.next_obs, torch.tensor([[1, 1, u0_next], [0, 3, u1]], dtype=torch.float32)
        )

        # Copy 1 hits the 4-step time limit: truncated, not terminated, and its transition still
        # carries the true final observation to bootstrap from.
        step = vec.step(np.zeros((2, 1)))
        u1_next = float(seeding.np_random(11)[0].uniform(size=2)[1])
        torch.testing.assert_close(
            step.next_obs, torch.tensor([[1, 2, u0_next], [0, 4, u1]], dtype=torch.float32)
        )
        torch.testing.assert_close(
            step.obs, torch.tensor([[1, 2, u0_next], [1, 0, u1_next]], dtype=torch.float32)
        )
        assert step.terminated.tolist() == [False, False] and step.truncated.tolist() == [False, True]
        assert step.done.tolist() == [False, True]
        assert step.episodes == (EpisodeStats(1, 10.0, 4, False, 10.0),)

        step = vec.step(np.zeros((2, 1)))  # both act in their new episodes
        torch.testing.assert_close(
            step.next_obs, torch.tensor([[1, 3, u0_next], [1, 1, u1_next]], dtype=torch.float32)
        )


@pytest.mark.parametrize("mode", MODES)
def test_seed_gives_each_copy_its_own_stream_and_repeats(toy_cfg: EnvConfig, mode: str) -> None:
    with envs.make_vec(toy_cfg, 3, mode=mode) as vec:
        first = vec.reset(seed=3)
        assert first[:, 2].tolist() == pytest.approx([u(3), u(4), u(5)], abs=1e-6)
        assert vec.reset(seed=3)[:, 2].tolist() == first[:, 2].tolist()


def test_bad_actions_and_arguments_raise_clear_errors(toy_cfg: EnvConfig) -> None:
    with envs.make_vec(toy_cfg, 2, mode="sync") as vec:
        with pytest.raises(RuntimeError, match="reset"):
            vec.step(np.zeros((2, 1)))
        vec.reset(seed=0)
        with pytest.raises(ValueError, match=r"actions: expected shape \(2, 1\)"):
            vec.step(np.zeros((3, 1)))
    with pytest.raises(ValueError, match="n must be >= 1"):
        envs.make_vec(toy_cfg, 0)
    with pytest.raises(ValueError, match="mode"):
        envs.make_vec(toy_cfg, 2, mode="threads")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"env\.family"):
        envs.make_vec(EnvConfig(family="nope"), 2)


def test_worker_errors_reach_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(envs.FAMILIES, "broken", fail_on_reset)
    vec = envs.make_vec(EnvConfig(id="Broken", family="broken"), 2, mode="async")
    with vec, pytest.raises(RuntimeError, match="simulator crashed"):
        vec.reset(seed=0)


# --- real MuJoCo ------------------------------------------------------------------------------

CHEETAH = EnvConfig(name="halfcheetah", id="HalfCheetah-v5", max_episode_steps=6, score_name="halfcheetah")


def single_env_rollout(cfg: EnvConfig, seed: int, actions: np.ndarray) -> tuple[list, list]:
    """The ground truth for one copy: a plain env, reset by hand when an episode ends.
    Returns per step (next_obs, reward, terminated, truncated) and the obs to act on next."""
    env = envs.make(cfg)
    env.reset(seed=seed)
    transitions, next_to_act = [], []
    for action in actions:
        next_obs, reward, terminated, truncated, _ = env.step(action)
        transitions.append((next_obs, reward, terminated, truncated))
        if terminated or truncated:
            next_obs, _ = env.reset()
        next_to_act.append(next_obs)
    env.close()
    return transitions, next_to_act


@pytest.mark.parametrize("mode", MODES)
def test_mujoco_vector_env_matches_single_envs(mode: str) -> None:
    n, steps = 2, 14  # two truncations per copy at the 6-step limit
    actions = np.random.default_rng(0).uniform(-1, 1, size=(steps, n, 6)).astype(np.float32)
    with envs.make_vec(CHEETAH, n, mode=mode) as vec:
        assert vec.max_episode_steps == 6  # the copies' limit, also through the workers' handshake
        vec.reset(seed=5)
        results = [vec.step(torch.from_numpy(a)) for a in actions]
    for i in range(n):
        transitions, next_to_act = single_env_rollout(CHEETAH, 5 + i, actions[:, i])
        for t, (step, (next_obs, reward, terminated, truncated)) in enumerate(
            zip(results, transitions, strict=True)
        ):
            np.testing.assert_allclose(step.next_obs[i].numpy(), next_obs, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(step.obs[i].numpy(), next_to_act[t], rtol=1e-6, atol=1e-6)
            assert step.reward[i].item() == pytest.approx(reward, rel=1e-6)
            assert (step.terminated[i].item(), step.truncated[i].item()) == (terminated, truncated)
    assert [bool(s.truncated.all()) for s in results].count(True) == 2
    ended = [e for s in results for e in s.episodes]
    assert sorted(e.env_index for e in ended) == [0, 0, 1, 1] and {e.length for e in ended} == {6}


def test_in_process_state_resumes_the_running_episodes_exactly() -> None:
    cfg = EnvConfig(name="hopper", id="Hopper-v5", max_episode_steps=7)
    actions = np.random.default_rng(1).uniform(-1, 1, size=(12, 3, 3)).astype(np.float32)
    with envs.make_vec(cfg, 3, mode="sync") as vec:
        vec.reset(seed=0)
        for a in actions[:5]:
            vec.step(a)
        state = vec.get_state()
        expected = [vec.step(a) for a in actions[5:]]
    with envs.make_vec(cfg, 3, mode="sync") as resumed:
        resumed.reset(seed=123)  # a different start: the snapshot must overwrite all of it
        obs = resumed.set_state(state)
        torch.testing.assert_close(obs, expected[0].obs.new_tensor(state["obs"]))
        for a, want in zip(actions[5:], expected, strict=True):
            got = resumed.step(a)
            torch.testing.assert_close(got.next_obs, want.next_obs, rtol=0, atol=0)
            torch.testing.assert_close(got.reward, want.reward, rtol=0, atol=0)
            assert got.truncated.tolist() == want.truncated.tolist()
            assert got.episodes == want.episodes


def test_subprocess_vector_env_has_no_snapshot() -> None:
    with envs.make_vec(CHEETAH, 2, mode="async") as vec:
        vec.reset(seed=0)
        assert vec.get_state() is None


def test_auto_mode_steps_cheap_envs_in_process() -> None:
    with envs.make_vec(CHEETAH, 4) as vec:
        assert isinstance(vec, envs.InProcessVecEnv)


def test_a_dead_worker_is_reported(toy_cfg: EnvConfig) -> None:
    vec = envs.make_vec(toy_cfg, 2, mode="async")
    with vec:
        vec.reset(seed=0)
        vec._processes[1].kill()
        vec._processes[1].join()
        with pytest.raises(RuntimeError, match="worker 1 died"):
            vec.step(np.zeros((2, 1)))


def test_config_errors_in_workers_stay_one_line_value_errors() -> None:
    with pytest.raises(ValueError, match=r"^env\.id: unknown Gymnasium id 'Hoppr-v5'") as error:
        envs.make_vec(EnvConfig(id="Hoppr-v5"), 2, mode="async")
    assert "\n" not in str(error.value)
