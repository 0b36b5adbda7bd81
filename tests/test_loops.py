"""What ``build_run`` decides from a config: reward normalisation, the schedule, the termination rule."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl.config import compose_config
from rl.data import load_dataset
from rl.loops import build_run
from rl.loops.evaluate import evaluate

SMALL_IQL = ["agent=iql", "agent.hidden=[16,16]", "agent.batch_size=8", "steps.eval_episodes=0", "threads=1"]


@pytest.mark.parametrize("agent", ["iql", "famo2o_iql"])  # both official scripts scale locomotion rewards
def test_return_range_scale_multiplies_every_buffers_reward_by_1000_over_the_return_range(
    hopper_d4rl_file, agent
):
    overrides = [
        *SMALL_IQL,
        f"agent={agent}",
        f"dataset.source=d4rl:{hopper_d4rl_file}",
        "env.reward_scale=2.0",
    ]
    cfg = compose_config(overrides)
    returns = load_dataset(f"d4rl:{hopper_d4rl_file}").episode_returns
    run = build_run(cfg)
    try:
        expected = 2.0 * 1000.0 / (returns.max() - returns.min())
        assert run.reward_scale == pytest.approx(expected)
        assert run.offline_buffer.reward_scale == run.online_buffer.reward_scale == run.reward_scale
        raw = load_dataset(f"d4rl:{hopper_d4rl_file}").rewards[:5]
        np.testing.assert_allclose(run.offline_buffer.reward[:5].numpy(), raw * expected, rtol=1e-5)
    finally:
        run.close()


def test_return_range_scale_without_a_dataset_is_refused_by_name():
    cfg = compose_config([*SMALL_IQL, "agent.normalize_obs=false", "steps.online=10"])
    with pytest.raises(ValueError, match=r"agent.return_range_scale=1000.0 .* needs a dataset"):
        build_run(cfg)


def test_an_agent_without_the_normalisation_keeps_the_envs_scale_and_uni_o4_gets_the_fall_rule(
    hopper_d4rl_file,
):
    cfg = compose_config(["agent=sac", "env.reward_scale=3.0", "steps.eval_episodes=0", "steps.online=10"])
    run = build_run(cfg)
    assert run.reward_scale == 3.0 and run.schedule.offline == 0
    run.close()
    stages = ["agent.critic_steps=2", "agent.bc_steps=2", "agent.dynamics_steps=2", "agent.improve_steps=2"]
    cfg = compose_config(
        ["agent=unio4", *stages, f"dataset.source=d4rl:{hopper_d4rl_file}", "steps.eval_episodes=0"]
    )
    run = build_run(cfg)
    assert run.schedule.offline == run.agent.offline_steps == 4  # the agent's stages, not steps.offline
    assert run.agent.model.termination is not None  # Hopper's fall rule reached the model rollouts
    run.close()
    cfg.steps.offline = 7
    with pytest.raises(
        ValueError, match=r"steps.offline=7: agent unio4 sets its own offline length \(4 updates"
    ):
        build_run(cfg)


class _SucceedsInEvenEpisodes(gym.Env):
    """Three steps per episode; episodes reset with an even seed report success at step 2 and go on."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        self.t, self.even = 0, seed % 2 == 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), 0.0, False, self.t == 3, {"success": self.even and self.t == 2}


def test_evaluation_success_rate_counts_a_success_at_any_step_of_an_episode():
    class Still:
        device = torch.device("cpu")

        def act(self, obs, deterministic):
            return torch.zeros(1, 1)

    result = evaluate(Still(), _SucceedsInEvenEpisodes(), episodes=4, seed=10, normalizer=None)
    assert result["success_rate"] == 0.5 and result["length"] == 3.0


def test_evaluation_is_a_function_of_the_weights_and_leaves_trainings_random_stream_alone():
    class DrawsNoise:  # as ReinFlow's chain: even the deterministic action starts from a draw
        device = torch.device("cpu")

        def act(self, obs, deterministic):
            return torch.randn(1, 1)

    def returns_under(global_seed: int) -> tuple[float, torch.Tensor]:
        torch.manual_seed(global_seed)
        env = _RewardIsTheAction()
        result = evaluate(DrawsNoise(), env, episodes=2, seed=10, normalizer=None)
        return result["return"], torch.randn(3)

    first, after_first = returns_under(0)
    second, after_second = returns_under(1)
    assert first == second  # the same weights, whatever the training stream's state
    torch.manual_seed(0)
    untouched = torch.randn(3)
    assert torch.equal(after_first, untouched)  # training draws what it would have without evaluating
    assert not torch.equal(after_second, untouched)


class _RewardIsTheAction(_SucceedsInEvenEpisodes):
    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, float(action[0]), terminated, truncated, info
