"""ReinFlow and the DPPO baseline: the chain's likelihood by hand, ratio 1 before the first step,
sigma -> 0 is the ODE, BC keeps both modes, chunks and histories at episode boundaries, resume,
official checkpoints, and malformed datasets refused in one line."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from envs.chunking import ActionChunking
from rl.agents.base import Phase
from rl.agents.dppo import DPPO, DPPOConfig
from rl.agents.reinflow import ReinFlow, ReinFlowConfig
from rl.buffers import RolloutBuffer
from rl.buffers.batch import Batch
from rl.config import compose_config
from rl.data.chunks import action_valid, chunk_dataset
from rl.data.dataset import Dataset, DatasetInfo
from rl.nets.actors import GaussianActor
from rl.nets.flow import euler_sample
from tests.envs.toy_env import make_toy

CPU = torch.device("cpu")
TINY = {"hidden": [16, 16, 16], "critic_hidden": [16, 16, 16], "normalize_obs": False}


def reinflow(obs_dim: int = 3, action_dim: int = 4, **fields) -> ReinFlow:
    return ReinFlow(ReinFlowConfig(**{**TINY, "noise_hidden": [8], **fields}), obs_dim, action_dim, CPU)


def batch(obs: torch.Tensor, action: torch.Tensor) -> Batch:
    zeros = torch.zeros(len(obs))
    return Batch(obs, action, zeros, obs, zeros, zeros)


def fill_rollout(agent, steps: int, envs: int, obs_dim: int, action_dim: int) -> RolloutBuffer:
    rollout = RolloutBuffer(steps, envs, obs_dim, action_dim)
    for _ in range(steps):
        obs = torch.randn(envs, obs_dim)
        action, log_prob, value = agent.policy_step(obs)
        rollout.add(
            obs,
            action,
            log_prob,
            torch.randn(envs),
            value,
            torch.zeros(envs),
            torch.zeros(envs),
            torch.zeros(envs),
        )
    return rollout


# -- the chain --------------------------------------------------------------------------------------


def test_chain_log_likelihood_of_a_two_step_one_dimensional_chain_by_hand():
    agent = reinflow(obs_dim=1, action_dim=1, denoising_steps=2, sigma_min=0.1, sigma_max=0.4)
    agent.set_phase(Phase.ONLINE)
    with torch.no_grad():  # velocity 0.6 everywhere; noise net output 0 -> sigma = sqrt(0.1 * 0.4) = 0.2
        agent.actor.head.output.weight.zero_()
        agent.actor.head.output.bias.fill_(0.6)
        agent.noise.net[-1].weight.zero_()
        agent.noise.net[-1].bias.zero_()
    chain = torch.tensor([[[0.5], [0.7], [0.9]]])
    # means: clip(0.5 + 0.6 / 2) = 0.8, clip(0.7 + 0.3) = 1.0
    log_n = lambda x, mu, s: -0.5 * math.log(2 * math.pi) - math.log(s) - (x - mu) ** 2 / (2 * s * s)  # noqa: E731
    expected = (log_n(0.5, 0.0, 1.0) + log_n(0.7, 0.8, 0.2) + log_n(0.9, 1.0, 0.2)) / 3  # 3 terms, 1 number
    assert expected == pytest.approx(0.0290198, abs=1e-6)
    log_prob, entropy, sigma = agent.chain_log_prob(torch.zeros(1, 1), chain)
    assert log_prob.item() == pytest.approx(expected, abs=1e-6)
    assert sigma.item() == pytest.approx(0.2)
    h = lambda s: 0.5 * math.log(2 * math.pi * math.e * s * s)  # noqa: E731
    assert entropy.item() == pytest.approx((h(1.0) + 2 * h(0.2)) / 3, abs=1e-6)


def test_with_sigma_going_to_zero_the_chain_is_the_deterministic_euler_ode():
    agent = reinflow(sigma_min=1e-9, sigma_max=1e-9)
    agent.set_phase(Phase.ONLINE)
    obs = torch.randn(6, 3)
    torch.manual_seed(3)
    chain, _, _ = agent.sample_chain(obs)
    torch.manual_seed(3)
    x = x0 = torch.randn(6, 4)  # the chain's first draw
    assert torch.equal(chain[:, 0], x0)
    cond = agent.actor.encode(obs)
    with torch.no_grad():
        for k in range(4):  # every point of the chain is the ODE's after k + 1 of K = 4 steps
            velocity, _ = agent.actor(x, torch.full((6,), k / 4), torch.full((6,), 0.25), cond)
            x = (x + velocity / 4).clamp(-1.0, 1.0)
            assert torch.allclose(chain[:, k + 1], x, atol=1e-6)
        assert torch.allclose(chain[:, -1], euler_sample(agent.actor, cond, x0, 4), atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: reinflow(minibatch=7, epochs=2, repeat_samples=3),
    lambda: DPPO(DPPOConfig(**TINY, denoising_steps=6, ft_steps=3, minibatch=7, epochs=2), 3, 4, CPU),
], ids=["reinflow", "dppo"])  # fmt: skip
def test_ppo_ratio_is_exactly_one_at_the_first_minibatch_of_the_first_epoch(make):
    agent = make()
    agent.set_phase(Phase.ONLINE)
    torch.manual_seed(0)
    rollout = fill_rollout(agent, steps=4, envs=5, obs_dim=3, action_dim=4)
    metrics = agent.update_rollout(rollout, torch.randn(5, 3))
    # Exactly 0 here; in general the rollout's batch and a minibatch differ in size, which may change
    # float rounding (a Lift run logged 3e-7): 1e-6 is the official check's threshold.
    assert metrics["first_ratio_error"].item() <= 1e-6
    assert metrics["minibatches"].item() > 2  # later minibatches moved the policy: the check is not vacuous
    assert metrics["approx_kl"].item() > 0


def test_the_official_rollout_time_grid_would_break_the_first_ratio(monkeypatch):
    """What the check above guards against (pitfall 1): sampling on ``linspace(0, 1, K)`` while
    scoring on ``k / K``."""
    import rl.agents.reinflow as module

    agent = reinflow(minibatch=7, epochs=1, repeat_samples=1)
    agent.set_phase(Phase.ONLINE)

    def official_rollout_grid(k: int, steps: int, batch: int, device: torch.device):
        return torch.full((batch,), k / (steps - 1), device=device), torch.full(
            (batch,), 1.0 / steps, device=device
        )

    monkeypatch.setattr(module, "step_times", official_rollout_grid)
    rollout = fill_rollout(agent, steps=4, envs=5, obs_dim=3, action_dim=4)
    monkeypatch.undo()
    # ~6e-4 with this fresh tiny network, whose velocity hardly depends on t yet: far above 1e-6
    assert agent.update_rollout(rollout, torch.randn(5, 3))["first_ratio_error"].item() > 1e-4


def test_critic_warmup_leaves_the_actor_and_noise_net_untouched():
    agent = reinflow(minibatch=8, epochs=1, repeat_samples=1, critic_warmup_iterations=1)
    agent.set_phase(Phase.ONLINE)

    def snapshot(*modules: torch.nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for m in modules for p in m.parameters()])

    actor, critic = snapshot(agent.actor, agent.noise), snapshot(agent.critic)
    agent.update_rollout(fill_rollout(agent, 3, 4, 3, 4), torch.randn(4, 3))
    assert torch.equal(snapshot(agent.actor, agent.noise), actor)
    assert not torch.equal(snapshot(agent.critic), critic)
    agent.update_rollout(fill_rollout(agent, 3, 4, 3, 4), torch.randn(4, 3))
    assert not torch.equal(snapshot(agent.actor, agent.noise), actor)


def test_sigma_max_is_held_then_decays_by_cosine_to_its_floor():
    agent = reinflow(
        sigma_min=0.1, sigma_max=0.3, iterations=100, noise_hold_fraction=0.5, noise_final_ratio=0.5
    )
    trace = {}
    for itr in (0, 50, 75, 100, 150):
        agent.iteration.fill_(itr)
        trace[itr] = agent.sigma_bounds()[1]
    assert trace[0] == trace[50] == pytest.approx(0.3)
    assert trace[75] == pytest.approx(0.25)  # halfway down the cosine to 0.5 * 0.3 + 0.5 * 0.1 = 0.2
    assert trace[100] == trace[150] == pytest.approx(0.2)


def test_evaluation_needs_no_noise_net():
    agent = reinflow()
    agent.set_phase(Phase.ONLINE)
    agent.noise = None  # deployment: the noise net is discarded
    assert agent.act(torch.randn(2, 3), deterministic=True).shape == (2, 4)


# -- behaviour cloning ------------------------------------------------------------------------------


def test_bc_on_a_bimodal_dataset_keeps_both_modes_where_a_gaussian_policy_averages_them():
    torch.manual_seed(0)
    obs = torch.zeros(512, 1)
    action = torch.where(torch.arange(512) % 2 == 0, 0.8, -0.8).unsqueeze(-1)
    flow = reinflow(obs_dim=1, action_dim=1, hidden=[64, 64, 64], batch_size=256, ema_decay=0.9, bc_lr=3e-3)
    gaussian = GaussianActor(1, 1, [64, 64])
    optimizer = torch.optim.Adam(gaussian.parameters(), lr=3e-3)
    for _ in range(300):
        rows = torch.randint(0, 512, (256,))
        flow.update(batch(obs[rows], action[rows]))
        loss = -gaussian.log_prob(obs[rows], action[rows]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    query = torch.zeros(2000, 1)
    flow_actions = flow.act(query, deterministic=True).squeeze(-1)
    with torch.no_grad():
        gaussian_actions = gaussian.sample(query).squeeze(-1)

    def shares(a: torch.Tensor) -> tuple[float, float, float]:
        return (
            ((a - 0.8).abs() < 0.2).float().mean().item(),
            ((a + 0.8).abs() < 0.2).float().mean().item(),
            (a.abs() < 0.4).float().mean().item(),
        )

    up, down, middle = shares(flow_actions)
    # K = 4 Euler steps of a 1-rectified flow still cut a few corners between the modes (~15%)
    assert up > 0.3 and down > 0.3 and middle < 0.2
    _, _, gaussian_middle = shares(gaussian_actions)
    assert gaussian_middle > 0.3  # its single mode sits between the data's two (N(0, 0.8): 38%)
    assert abs(gaussian.deterministic(torch.zeros(1, 1)).item()) < 0.2


def test_shortcut_bc_trains_and_dppo_bc_trains():
    torch.manual_seed(0)
    obs, action = torch.randn(64, 3), torch.rand(64, 4) * 2 - 1
    shortcut = reinflow(model="shortcut", cond_hidden=[8, 16])
    dppo = DPPO(DPPOConfig(**TINY, denoising_steps=6, ft_steps=3), 3, 4, CPU)
    first = [shortcut.update(batch(obs, action))["bc_loss"], dppo.update(batch(obs, action))["bc_loss"]]
    for _ in range(30):
        last = [shortcut.update(batch(obs, action))["bc_loss"], dppo.update(batch(obs, action))["bc_loss"]]
    assert last[0] < first[0] and last[1] < first[1]


# -- chunks and histories at episode boundaries -----------------------------------------------------


def test_chunk_rows_repeat_the_first_observation_and_the_last_action_and_end_with_their_episode():
    # Two episodes, observation = [episode, t]: 3 steps ending in a termination, 2 steps truncated.
    obs = np.array([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1]], np.float32)
    next_obs = np.array([[0, 1], [0, 2], [0, 3], [1, 1], [1, 2]], np.float32)
    data = Dataset(
        obs, np.array([[1], [2], [3], [4], [5]], np.float32), np.array([1, 2, 3, 4, 5], np.float32), next_obs,
        np.array([0, 0, 1, 0, 0], bool), np.array([0, 0, 0, 0, 1], bool), DatasetInfo("hand"),
    )  # fmt: skip
    rows = chunk_dataset(data, action_chunk=2, obs_history=2)
    # row order: episode 0 chains t = (0, 2), (1); episode 1 chains t = (3), (4)
    assert rows.observations.tolist() == [
        [0, 0, 0, 0],
        [0, 1, 0, 2],
        [0, 0, 0, 1],
        [1, 0, 1, 0],
        [1, 0, 1, 1],
    ]
    assert rows.actions.tolist() == [[1, 2], [3, 3], [2, 3], [4, 5], [5, 5]]
    assert rows.rewards.tolist() == [3, 3, 5, 9, 5]
    assert rows.next_observations.tolist() == [
        [0, 1, 0, 2],
        [0, 2, 0, 3],
        [0, 2, 0, 3],
        [1, 1, 1, 2],
        [1, 1, 1, 2],
    ]
    assert rows.terminated.tolist() == [False, True, True, False, False]
    assert rows.truncated.tolist() == [False, False, False, True, True]
    assert action_valid(data, 2).tolist() == [
        [True, True],
        [True, False],
        [True, True],
        [True, True],
        [True, False],
    ]
    assert rows.num_episodes == 4  # one per chain: returns-to-go run along chains of chunks
    assert chunk_dataset(data, 1, 1) is data


def test_chunk_env_repeats_the_first_observation_and_stops_the_chunk_at_the_episode_end():
    env = ActionChunking(gym.wrappers.RescaleAction(make_toy(None), -1.0, 1.0), action_chunk=3, obs_history=2)
    assert env.action_space.shape == (3,) and env.observation_space.shape == (6,)
    obs, _ = env.reset(seed=0)
    u = obs[2]
    np.testing.assert_allclose(obs, [0, 0, u, 0, 0, u])
    # raw actions 0, 1.8 (> 1.5 terminates), 0: the third is never executed
    obs, reward, terminated, truncated, info = env.step(np.array([0.0, 0.9, 0.0]))
    np.testing.assert_allclose(obs, [0, 1, u, 0, 2, u])
    assert reward == pytest.approx((0 + 1) + (1.8 + 2)) and terminated and not truncated
    assert info["success"] and info["score_reward"] == 3.0
    obs, _ = env.reset()
    env.step(np.zeros(3))
    obs, reward, terminated, truncated, _ = env.step(np.zeros(3))  # the time limit (4) cuts after one step
    assert truncated and not terminated and reward == pytest.approx(4.0)
    np.testing.assert_allclose(obs, [1, 3, obs[2], 1, 4, obs[2]])


# -- a policy trained elsewhere ---------------------------------------------------------------------


def official_flow_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """ReinFlow's FlowMLP (horizon 2, action dim 1, cond dim 3, time_dim 16, mlp_dims [8, 8, 8],
    residual_style) as ReFlow saves it: under ``network.``."""
    shapes = {
        "time_embedding.1.weight": (32, 16), "time_embedding.1.bias": (32,),
        "time_embedding.3.weight": (16, 32), "time_embedding.3.bias": (16,),
        "mlp_mean.layers.0.weight": (8, 2 + 16 + 3), "mlp_mean.layers.0.bias": (8,),
        "mlp_mean.layers.1.l1.weight": (8, 8), "mlp_mean.layers.1.l1.bias": (8,),
        "mlp_mean.layers.1.l2.weight": (8, 8), "mlp_mean.layers.1.l2.bias": (8,),
        "mlp_mean.layers.2.weight": (2, 8), "mlp_mean.layers.2.bias": (2,),
    }  # fmt: skip
    return {f"network.{k}": torch.randn(s, generator=generator) * 0.5 for k, s in shapes.items()}


def official_velocity(
    w: dict[str, torch.Tensor], x: torch.Tensor, t: torch.Tensor, obs: torch.Tensor
) -> torch.Tensor:
    """The official FlowMLP's forward, written out from its source."""
    w = {k.removeprefix("network."): v for k, v in w.items()}
    freq = torch.exp(torch.arange(8) * -(math.log(10000) / 7))
    emb = torch.cat([(t[:, None] * freq).sin(), (t[:, None] * freq).cos()], -1)
    time = F.linear(F.mish(F.linear(emb, w["time_embedding.1.weight"], w["time_embedding.1.bias"])),
                    w["time_embedding.3.weight"], w["time_embedding.3.bias"])  # fmt: skip
    h = F.linear(torch.cat([x, time, obs], -1), w["mlp_mean.layers.0.weight"], w["mlp_mean.layers.0.bias"])
    block = F.linear(F.relu(h), w["mlp_mean.layers.1.l1.weight"], w["mlp_mean.layers.1.l1.bias"])
    h = h + F.linear(F.relu(block), w["mlp_mean.layers.1.l2.weight"], w["mlp_mean.layers.1.l2.bias"])
    return F.linear(h, w["mlp_mean.layers.2.weight"], w["mlp_mean.layers.2.bias"])


def test_a_policy_saved_by_the_official_code_loads_through_the_key_map(tmp_path):
    generator = torch.Generator().manual_seed(0)
    path = tmp_path / "state_40.pt"
    torch.save(
        {"epoch": 40, "model": official_flow_state(generator), "ema": official_flow_state(generator)}, path
    )
    checkpoint = torch.load(path, weights_only=True)

    agent = reinflow(obs_dim=3, action_dim=2, hidden=[8, 8, 8], denoising_steps=2)
    low, high = torch.tensor([0.0, -1.0, 2.0]), torch.tensor([1.0, 1.0, 6.0])
    agent.load_official(
        checkpoint, obs_range=(low, high)
    )  # the EMA weights, as the official fine-tuning loads
    agent.set_phase(Phase.ONLINE)
    obs, x, t = torch.randn(5, 3), torch.randn(5, 2), torch.rand(5)
    ours, _ = agent.actor(x, t, None, agent.actor.encode(obs))
    normalised = 2 * (obs - low) / (high - low + 1e-6) - 1  # what the official env wrapper feeds it
    assert torch.allclose(ours, official_velocity(checkpoint["ema"], x, t, normalised), atol=1e-5)

    wrong = reinflow(obs_dim=3, action_dim=2, hidden=[16, 16, 16])
    with pytest.raises(ValueError, match=r"official checkpoint: head.input.weight has shape \(8, 21\)"):
        wrong.load_official(checkpoint)
    with pytest.raises(ValueError, match=r"official checkpoint: key 'mlp_mean.layers.1.norm1.weight'"):
        agent.load_official(
            {"ema": {**checkpoint["ema"], "network.mlp_mean.layers.1.norm1.weight": torch.ones(8)}}
        )


# -- through rl.train -------------------------------------------------------------------------------


def metrics(run_dir: Path) -> list[tuple]:
    with (run_dir / "metrics.csv").open() as f:
        return [tuple(r.values()) for r in csv.DictReader(f) if r["metric"] != "steps_per_second"]


def test_resume_mid_fine_tuning_logs_what_an_uninterrupted_run_logs(tmp_path, hopper_d4rl_file, monkeypatch):
    from rl.train import train

    cfg = compose_config([
        "agent=reinflow", "agent.hidden=[16,16,16]", "agent.critic_hidden=[16,16,16]", "agent.noise_hidden=[8]",
        "agent.batch_size=32", "agent.minibatch=16", "agent.epochs=2", "agent.repeat_samples=2",
        "agent.iterations=4", "agent.critic_warmup_iterations=1", f"dataset.source=d4rl:{hopper_d4rl_file}",
        "env.action_chunk=2", "num_envs=2", "rollout_steps=16", "steps.offline=10", "steps.online=64",
        "steps.checkpoint_every=16", "steps.eval_every=32", "steps.eval_episodes=1", "steps.log_every=4",
        "progress=false",
    ])  # fmt: skip
    train(cfg, tmp_path / "reference")

    calls, update_rollout = [], ReinFlow.update_rollout

    def interrupted(self, rollout, last_obs):
        calls.append(1)
        if len(calls) == 3:  # after two rollouts were learnt from and checkpointed
            raise KeyboardInterrupt
        return update_rollout(self, rollout, last_obs)

    monkeypatch.setattr(ReinFlow, "update_rollout", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed")
    monkeypatch.setattr(ReinFlow, "update_rollout", update_rollout)
    train(cfg, tmp_path / "killed")

    reference = metrics(tmp_path / "reference")
    assert metrics(tmp_path / "killed") == reference
    assert sum(r[1] == "online" and r[3] == "first_ratio_error" for r in reference) == 4
    assert reference[-1][2] == str(64 * 2)  # env_steps counts the 64 chunks' 128 env steps


def test_a_dataset_with_the_wrong_action_size_is_refused_in_one_line_naming_file_and_field(tmp_path):
    from rl.loops import build_run

    path = tmp_path / "two-actions.hdf5"
    with h5py.File(path, "w") as f:
        for key, value in {
            "observations": np.zeros((4, 11), np.float32), "actions": np.zeros((4, 2), np.float32),
            "rewards": np.zeros(4), "terminals": np.zeros(4, bool), "timeouts": np.array([0, 0, 0, 1], bool),
        }.items():  # fmt: skip
            f.create_dataset(key, data=value)
    cfg = compose_config(
        ["agent=reinflow", f"dataset.source=d4rl:{path}", "env.action_chunk=4", "steps.eval_episodes=0"]
    )
    with pytest.raises(ValueError) as refused:
        build_run(cfg)
    # the step the data recorded is compared with one env step, not with the 4-step chunk
    assert str(refused.value) == (
        f"dataset d4rl:{path}: 'actions' have shape (2,), the env's action space (3,)"
    )
