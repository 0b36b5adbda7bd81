"""Pixels end to end (issue 20): the agents' shared image encoder (who trains it, the target copy),
refused observation spaces, pixel datasets (Minari Dict, D4RL layout with image keys, the demos' state
layout, camera mismatches), exact resume on a toy pixel env, a pixel dataset through ``rl.train``
offline then online, a CLI run on ``env=lift-pixels`` and the bridge with the sim server's two cameras.

Encoder shapes and the random shift itself are tests/test_encoders.py's."""

from __future__ import annotations

import copy
import csv
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch

import rl.train
from rl.agents import AGENTS, Phase, build_agent
from rl.buffers import Batch, ObsSpec, RolloutBuffer
from rl.checkpoint import load_checkpoint
from rl.config import compose_config
from rl.data import Dataset, DatasetInfo, check_dataset, load_dataset
from rl.nets import EncoderConfig
from tests.conftest import REPO, train_until_checkpoint
from tests.envs.pixel_toy import SIZE, make_pixel_toy
from tests.real_robot.conftest import keys_dir, start_server  # noqa: F401  (the bridge's fixtures)
from tests.test_agents import SMALL

CPU = torch.device("cpu")
ACT = 2
SPACE = gym.spaces.Dict(
    {
        "camera": gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8),
        "state": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
    }
)
TINY = EncoderConfig(feature_dim=8, filters=8, proprio_dim=4, pad=2)
IMAGE_AGENTS = sorted(name for name, (cls, _) in AGENTS.items() if cls.takes_images and not cls.on_policy)
"""The off-policy image agents (DrQ's sharing); ReinFlow and DPPO have their own tests below."""
TOY_ENV = [
    "env.name=pixel-toy",
    "env.id=PixelToy",
    "env.family=tests.envs.pixel_toy:make_pixel_toy",
    "env.score_name=null",
]
TINY_ENCODER = [
    "agent.encoder.feature_dim=8",
    "agent.encoder.filters=8",
    "agent.encoder.proprio_dim=4",
    "agent.encoder.pad=2",
]
SMALL_RUN = [
    "agent.critic_hidden=[32,32]",
    "agent.actor_hidden=[32,32]",
    "agent.batch_size=16",
    "buffer_capacity=1000",
    "threads=1",
    "progress=false",
]


def make(name: str, **overrides):
    torch.manual_seed(0)
    cfg = AGENTS[name][1](**{**SMALL[name], "encoder": TINY, **overrides})
    return build_agent(cfg, None, ACT, CPU, obs_space=SPACE)


def pixel_obs(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "camera": torch.randint(0, 256, (n, SIZE, SIZE, 3), generator=g, dtype=torch.uint8),
        "state": torch.randn(n, 3, generator=g),
    }


def pixel_batch(n: int, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=pixel_obs(n, g),
        action=torch.rand(n, ACT, generator=g) * 2 - 1,
        reward=torch.randn(n, generator=g),
        next_obs=pixel_obs(n, g),
        terminated=(torch.rand(n, generator=g) < 0.1).float(),
        mc_return=torch.randn(n, generator=g),
    )


def critics(agent):
    """(critic, its optimizer, target critic) of any image-taking agent."""
    owner = agent.ac if hasattr(agent, "ac") else agent.iql
    return owner.critic, owner.critic_optimizer, owner.target_critic


# -- who trains the encoder ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "phase"), [(name, Phase.OFFLINE) for name in IMAGE_AGENTS] + [("wsrl", Phase.ONLINE)]
)
def test_only_the_critic_loss_sends_gradients_into_the_encoder(name, phase):
    agent = make(name)
    agent.set_phase(phase)
    critic, critic_optimizer, _ = critics(agent)
    encoder_params = list(critic.encoder.parameters())
    # Only the critic's optimizer holds the encoder; every other optimizer leaves it alone.
    optimized = {
        key: {id(p) for group in part.param_groups for p in group["params"]}
        for key, part in agent.parts().items()
        if isinstance(part, torch.optim.Optimizer)
    }
    assert {id(p) for p in encoder_params} <= optimized["critic_optimizer"]
    assert all(
        not ids & {id(p) for p in encoder_params} for k, ids in optimized.items() if k != "critic_optimizer"
    )

    gradients = []
    for p in encoder_params:
        p.register_hook(lambda grad: gradients.append(grad))
    before = [p.detach().clone() for p in encoder_params]
    agent.update(pixel_batch(agent.batch_size))
    critic_steps = int(critic_optimizer.state[encoder_params[0]]["step"])
    assert critic_steps == (agent.cfg.utd if name == "sac" or phase is Phase.ONLINE else 1)
    # One gradient per parameter per critic step, and none from the actor, V, temperature or pi_b.
    assert len(gradients) == len(encoder_params) * critic_steps
    assert any(not torch.equal(b, p) for b, p in zip(before, encoder_params, strict=True))


def test_the_target_encoder_is_the_polyak_average_of_the_critics_encoder():
    agent = make("sac", utd=1)
    critic, _, target = critics(agent)
    target_before = copy.deepcopy(target.encoder.state_dict())
    agent.update(pixel_batch(agent.batch_size))
    tau = agent.cfg.tau
    online, averaged = critic.encoder.state_dict(), target.encoder.state_dict()
    for key, value in online.items():
        expected = (1 - tau) * target_before[key] + tau * value
        torch.testing.assert_close(averaged[key], expected if value.is_floating_point() else value)
    assert not torch.equal(
        averaged["cameras.camera.project.0.weight"], online["cameras.camera.project.0.weight"]
    )


def test_acting_reads_unshifted_frames_through_the_critics_encoder():
    agent = make("sac")
    obs = pixel_obs(4, torch.Generator().manual_seed(3))
    action = agent.act(obs, deterministic=True)
    assert torch.equal(action, agent.act(obs, deterministic=True))  # no random shift when acting
    with torch.no_grad():
        assert torch.equal(action, agent.ac.actor.deterministic(agent.ac.critic.encoder(obs)))
    assert agent.act(obs).shape == (4, ACT) and agent.act(obs).abs().max() <= 1


def test_a_pixel_agent_checkpoint_round_trips_and_refuses_other_cameras():
    agent = make("calql")
    agent.update(pixel_batch(agent.batch_size))
    copy_ = make("calql")
    copy_.load_state_dict(agent.state_dict())
    obs = pixel_obs(3, torch.Generator().manual_seed(5))
    assert torch.equal(agent.act(obs, True), copy_.act(obs, True))
    wider = gym.spaces.Dict({**SPACE.spaces, "camera": gym.spaces.Box(0, 255, (24, 24, 3), np.uint8)})
    other = build_agent(
        AGENTS["calql"][1](**{**SMALL["calql"], "encoder": TINY}), None, ACT, CPU, obs_space=wider
    )
    with pytest.raises(ValueError, match=r"checkpoint 'critic.encoder.cameras.camera"):
        other.load_state_dict(agent.state_dict())


@pytest.mark.parametrize(
    ("name", "space", "expected"),
    [
        ("unio4", SPACE, r"agent unio4: cannot take the observation space Dict\('camera'.* \(it learns from state vectors only\); choices: a 1-D float Box \(state\) for any agent, or a Dict .* for agent=sac\|cql"),
        ("sac", gym.spaces.Discrete(4), r"agent sac: cannot take the observation space Discrete\(4\); choices: a 1-D float Box"),
        ("iql", SPACE["camera"], r"agent iql: cannot take the observation space Box\(0, 255, \(16, 16, 3\), uint8\); choices: .*a Dict of \(H, W, C\) uint8 cameras"),
        ("sac", gym.spaces.Dict({"camera": gym.spaces.Box(0, 255, (3, 16, 16), np.uint8)}), r"observation space 'camera': Box\(0, 255, \(3, 16, 16\), uint8\) cannot be encoded; accepted: a camera as an \(H, W, C\)"),
    ],
)  # fmt: skip
def test_observation_spaces_an_agent_cannot_take_are_refused_in_one_line(name, space, expected):
    cfg = AGENTS[name][1](**{**SMALL[name], "encoder": TINY})
    with pytest.raises(ValueError, match=expected) as refused:
        build_agent(cfg, None, ACT, CPU, obs_space=space)
    assert "\n" not in str(refused.value)


# -- on-policy generative policies: ReinFlow and DPPO -------------------------------------------------


def encoder_weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))


@pytest.mark.parametrize("name", ["reinflow", "dppo"])
def test_generative_policies_train_their_encoder_by_bc_then_fine_tune_it_with_an_exact_first_ratio(name):
    """BC trains the policy's encoder (shifted frames) and the EMA follows it; going online, the value
    net's encoder starts from the EMA's; one PPO iteration on a rollout of dict observations moves
    the actor's and the value net's encoders, with the ratio 1 at the first minibatch (the update
    reads the frames the rollout acted on, un-shifted)."""
    agent = make(name)
    policy_encoder, ema_encoder = agent.policy.cond.encoder, agent.ema.cond.encoder
    before, ema_before = encoder_weights(policy_encoder), encoder_weights(ema_encoder)
    for _ in range(3):
        agent.update(pixel_batch(agent.batch_size))
    assert changed(before, policy_encoder) and changed(ema_before, ema_encoder)
    assert agent.critic[0] is not agent.ema.cond.encoder  # the value net has its own encoder

    agent.set_phase(Phase.ONLINE)
    value_encoder = agent.critic[0]
    for ours, ema in zip(value_encoder.state_dict().values(), ema_encoder.state_dict().values(), strict=True):
        assert torch.equal(ours, ema)
    steps, envs, g = 4, 2, torch.Generator().manual_seed(3)
    rollout = RolloutBuffer(steps, envs, ObsSpec.from_space(SPACE), ACT)
    assert rollout.obs["camera"].dtype == torch.uint8
    for _ in range(steps):
        obs = pixel_obs(envs, g)
        action, log_prob, value = agent.policy_step(obs)
        assert action.shape == (envs, ACT) and value.shape == (envs,)
        done = torch.zeros(envs)
        rollout.add(obs, action, log_prob, torch.randn(envs, generator=g), value, done, done, done)
    actor_before, value_before = encoder_weights(agent.actor.cond.encoder), encoder_weights(value_encoder)
    metrics = agent.update_rollout(rollout, pixel_obs(envs, g))
    assert float(metrics["first_ratio_error"]) < 1e-5
    assert changed(actor_before, agent.actor.cond.encoder) and changed(value_before, value_encoder)
    deterministic = agent.act(pixel_obs(envs, g), deterministic=True)
    assert deterministic.shape == (envs, ACT) and deterministic.abs().max() <= 1.0


def test_a_pixel_dataset_trains_reinflow_offline_then_online_and_resumes_exactly(tmp_path, monkeypatch):
    """ReinFlow on the toy pixel env: BC on a D4RL-layout pixel file, then PPO from the camera and the
    proprio; a run stopped after its checkpoint at the end of the first rollout continues to the
    same numbers and the same weights as an uninterrupted one."""
    data = write_pixel_d4rl(tmp_path / "toy.hdf5", toy_episodes(6), next_observations=False)
    cfg = compose_config([
        "agent=reinflow", *TOY_ENV, *TINY_ENCODER, f"dataset.source=d4rl:{data}", "agent.hidden=[32,32,32]",
        "agent.critic_hidden=[32]", "agent.noise_hidden=[16]", "agent.batch_size=16", "agent.minibatch=8",
        "agent.repeat_samples=1", "agent.epochs=2", "agent.iterations=2", "num_envs=2", "rollout_steps=10",
        "steps.offline=10", "steps.online=20", "steps.checkpoint_every=10", "steps.eval_every=10",
        "steps.eval_episodes=1", "steps.log_every=10", "threads=1", "progress=false",
    ])  # fmt: skip
    reference = tmp_path / "reference"
    rl.train.train(cfg, reference)
    phases = {(r[1], r[3]) for r in metrics(reference)}
    assert {("offline", "bc_loss"), ("online", "first_ratio_error"), ("online", "eval_return")} <= phases

    stopped = tmp_path / "stopped"
    train_until_checkpoint(cfg, stopped, 20, monkeypatch)
    rl.train.train(cfg, stopped)
    assert metrics(stopped) == metrics(reference)
    final = [
        load_checkpoint(d / "checkpoints/agent_final.pt")["agent"]["state"] for d in (reference, stopped)
    ]
    assert_identical(final[0], final[1])


# -- pixel datasets --------------------------------------------------------------------------------


def toy_episodes(episodes: int, seed: int = 0) -> list[dict]:
    """Episodes of the toy pixel env under a seeded random policy that never reaches the wall (they
    end at the time limit): observations (T + 1 per episode) and the transitions' columns."""
    env, rng, out = make_pixel_toy(), np.random.default_rng(seed), []
    for _ in range(episodes):
        obs, _ = env.reset()
        episode = {"obs": [obs], "actions": [], "rewards": [], "terminated": [], "truncated": []}
        done = False
        while not done:
            action = rng.uniform(-1, 0.5, 1).astype(np.float32)
            obs, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(
                ("obs", "actions", "rewards", "terminated", "truncated"),
                (obs, action, reward, terminated, truncated),
                strict=True,
            ):
                episode[key].append(value)
            done = terminated or truncated
        out.append(episode)
    return out


def write_pixel_d4rl(path: Path, episodes: list[dict], next_observations: bool) -> Path:
    """The D4RL layout with ``observations`` as a group of per-key datasets. With
    ``next_observations`` a row is a transition; without them (D4RL's raw files) the next row holds
    the next observation, and each episode also stores its last observation, in a row with
    ``timeouts`` set that the loader drops."""
    rows = []  # (obs, next obs, action, reward, terminal, timeout)
    for e in episodes:
        steps = len(e["actions"])
        for t in range(steps):
            timeout = next_observations and e["truncated"][t]
            rows.append(
                (e["obs"][t], e["obs"][t + 1], e["actions"][t], e["rewards"][t], e["terminated"][t], timeout)
            )
        if not next_observations:
            rows.append((e["obs"][steps], None, np.zeros(1, np.float32), 0.0, False, True))
    with h5py.File(path, "w") as f:
        for key in ("camera", "state"):
            f[f"observations/{key}"] = np.stack([r[0][key] for r in rows])
            if next_observations:
                f[f"next_observations/{key}"] = np.stack([r[1][key] for r in rows])
        f["actions"] = np.stack([r[2] for r in rows]).astype(np.float32)
        f["rewards"] = np.array([r[3] for r in rows], np.float32)
        f["terminals"] = np.array([r[4] for r in rows])
        f["timeouts"] = np.array([r[5] for r in rows])
    return path


@pytest.mark.parametrize("next_observations", [True, False])
def test_d4rl_layout_with_image_keys_loads_dict_observations_frames_kept_uint8(tmp_path, next_observations):
    episodes = toy_episodes(3)
    path = write_pixel_d4rl(tmp_path / "toy.hdf5", episodes, next_observations)
    dataset = check_dataset(
        load_dataset(f"d4rl:{path}"), make_pixel_toy().observation_space, gym.spaces.Box(-1, 1, (1,)), False
    )
    steps = sum(len(e["actions"]) for e in episodes)
    assert len(dataset) == steps and dataset.num_episodes == 3
    assert dataset.observations["camera"].dtype == np.uint8 and dataset.observations["camera"].shape == (
        steps,
        SIZE,
        SIZE,
        3,
    )
    first = episodes[0]
    for t in range(len(first["actions"])):
        for key in ("camera", "state"):
            np.testing.assert_array_equal(dataset.observations[key][t], first["obs"][t][key])
            np.testing.assert_array_equal(dataset.next_observations[key][t], first["obs"][t + 1][key])
    np.testing.assert_allclose(dataset.actions[: len(first["actions"])], np.stack(first["actions"]))  # fmt: skip


def test_d4rl_layout_refuses_malformed_image_keys_by_name(tmp_path):
    path = write_pixel_d4rl(tmp_path / "toy.hdf5", toy_episodes(1), next_observations=True)
    with h5py.File(path, "a") as f:
        del f["observations/camera"]
        f["observations/camera"] = np.zeros((5, SIZE, SIZE), np.uint8)
    with pytest.raises(
        ValueError, match=r"'observations/camera' holds uint8 images, which must be \(rows, H, W, C\)"
    ):
        load_dataset(f"d4rl:{path}")


def test_minari_dict_dataset_loads_with_frames(tmp_path, monkeypatch):
    import minari
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    episodes = toy_episodes(2)
    buffers = [
        EpisodeBuffer(
            id=i,
            observations={key: np.stack([o[key] for o in e["obs"]]) for key in ("camera", "state")},
            actions=np.stack(e["actions"]),
            rewards=e["rewards"],
            terminations=e["terminated"],
            truncations=e["truncated"],
        )
        for i, e in enumerate(episodes)
    ]
    env = make_pixel_toy()
    minari.create_dataset_from_buffers(
        dataset_id="o2otest/pixeltoy/random-v0",
        buffer=buffers,
        observation_space=env.observation_space,
        action_space=env.action_space,
        algorithm_name="random",
        code_permalink="tests/test_pixels.py",
        author="o2o tests",
        author_email="none",
    )
    dataset = check_dataset(
        load_dataset("minari:o2otest/pixeltoy/random-v0"), env.observation_space, env.action_space, False
    )
    assert len(dataset) == sum(len(e["actions"]) for e in episodes)
    assert dataset.observations["camera"].dtype == np.uint8
    np.testing.assert_array_equal(dataset.next_observations["camera"][0], episodes[0]["obs"][1]["camera"])


def demo_like(cameras: dict[str, int], state_dim: int = 53, layout: bool = True) -> Dataset:
    """Rows shaped like the scripted demos: cameras of the given sizes and the full state vector."""
    n = 4
    obs = {key: np.zeros((n, size, size, 3), np.uint8) for key, size in cameras.items()}
    obs["state"] = np.arange(n * state_dim, dtype=np.float32).reshape(n, state_dim)
    extra = {"state_layout": {"object_state_dim": 10, "state_dim": 53}} if layout else {}
    return Dataset(
        obs, np.zeros((n, 7), np.float32), np.zeros(n, np.float32), copy.deepcopy(obs),
        np.zeros(n, bool), np.array([0, 0, 0, 1], bool), DatasetInfo("minari:o2o/lift/expert-v0", extra=extra),
    )  # fmt: skip


def lift_pixels_space(cameras: dict[str, int]) -> gym.spaces.Dict:
    return gym.spaces.Dict(
        {key: gym.spaces.Box(0, 255, (size, size, 3), np.uint8) for key, size in cameras.items()}
        | {"state": gym.spaces.Box(-np.inf, np.inf, (43,), np.float64)}
    )


def test_the_demos_serve_the_state_env_and_the_pixel_env_with_its_proprio_part():
    actions = gym.spaces.Box(-1, 1, (7,))
    demos = demo_like({"agentview": 84, "robot0_eye_in_hand": 84})
    pixels = check_dataset(
        demos, lift_pixels_space({"agentview": 84, "robot0_eye_in_hand": 84}), actions, False
    )
    np.testing.assert_array_equal(pixels.observations["state"], demos.observations["state"][:, 10:])
    np.testing.assert_array_equal(pixels.next_observations["state"], demos.observations["state"][:, 10:])
    one_camera = check_dataset(demos, lift_pixels_space({"agentview": 84}), actions, False)
    assert set(one_camera.observations) == {"agentview", "state"}  # cameras the env lacks are left out
    state = check_dataset(demos, gym.spaces.Box(-np.inf, np.inf, (53,)), actions, False)
    np.testing.assert_array_equal(state.observations, demos.observations["state"])
    with pytest.raises(ValueError, match=r"'observations/state' shape \(53,\) != env \(43,\)"):
        check_dataset(
            demo_like({"agentview": 84}, layout=False), lift_pixels_space({"agentview": 84}), actions, False
        )


@pytest.mark.parametrize(
    ("held", "wanted", "expected"),
    [
        ({"agentview": 84, "robot0_eye_in_hand": 84}, {"agentview": 64}, r"cameras agentview 84x84x3 do not match the env's agentview 64x64x3"),
        ({"agentview": 84}, {"agentview": 84, "robot0_eye_in_hand": 84}, r"cameras agentview 84x84x3 do not match the env's agentview 84x84x3, robot0_eye_in_hand 84x84x3"),
        ({}, {"front": 64}, r"cameras none do not match the env's front 64x64x3"),
    ],
)  # fmt: skip
def test_a_dataset_whose_cameras_do_not_match_the_env_is_refused_naming_both(held, wanted, expected):
    with pytest.raises(ValueError, match=rf"^dataset minari:o2o/lift/expert-v0: {expected}$"):
        check_dataset(demo_like(held), lift_pixels_space(wanted), gym.spaces.Box(-1, 1, (7,)), False)


# -- runs ----------------------------------------------------------------------------------------------


def metrics(run_dir: Path) -> list[tuple]:
    with (run_dir / "metrics.csv").open() as f:
        return [tuple(r.values()) for r in csv.DictReader(f) if r["metric"] != "steps_per_second"]


def test_a_pixel_dataset_trains_offline_then_online_and_resumes_exactly(tmp_path, monkeypatch):
    """Cal-QL on the toy pixel env: offline on a D4RL-layout pixel file, then online with half of each
    batch from it; a run stopped after its online checkpoint at step 30 (an episode boundary: the toy
    env restarts its episodes exactly) continues to the same numbers and the same weights."""
    data = write_pixel_d4rl(tmp_path / "toy.hdf5", toy_episodes(6), next_observations=False)
    cfg = compose_config([
        "agent=calql", *TOY_ENV, *TINY_ENCODER, *SMALL_RUN, f"dataset.source=d4rl:{data}", "agent.cql_samples=2",
        "offline_ratio=0.5", "steps.offline=20", "steps.online=20", "steps.warmup=5",
        "steps.checkpoint_every=10", "steps.eval_every=10", "steps.eval_episodes=1", "steps.log_every=1",
    ])  # fmt: skip
    reference = tmp_path / "reference"
    summary = rl.train.train(cfg, reference)
    assert set(summary) == {"offline", "online"}
    phases = {(r[1], r[3]) for r in metrics(reference)}
    assert {("offline", "cql_gap"), ("offline", "eval_return"), ("online", "critic_loss")} <= phases
    assert {("online", "episode_return"), ("online", "eval_return")} <= phases

    stopped = tmp_path / "stopped"
    train_until_checkpoint(cfg, stopped, 30, monkeypatch)
    assert max(int(r[0]) for r in metrics(stopped)) == 30
    rl.train.train(cfg, stopped)
    assert metrics(stopped) == metrics(reference)
    final = [
        load_checkpoint(d / "checkpoints/agent_final.pt")["agent"]["state"] for d in (reference, stopped)
    ]
    assert_identical(final[0], final[1])


def assert_identical(a, b, where: str = "agent") -> None:
    """Every tensor and value of two agent states equal, walking dicts and lists."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.slow
def test_cli_run_on_lift_pixels(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable, "-m", "rl.train", "agent=sac", "env=lift-pixels", "env.image_size=32",
            "env.max_episode_steps=20", "env_mode=sync", "steps.online=40", "steps.warmup=24",
            "steps.eval_episodes=1", *SMALL_RUN, f"hydra.run.dir={run_dir}",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "agent sac | env lift-pixels" in result.stdout and "after online: return" in result.stdout
    rows = metrics(run_dir)
    updates = [r[0] for r in rows if r[3] == "critic_loss"]
    assert updates == ["40"]  # logged at the phase's end: 16 updates after 24 warm-up steps
    assert any(r[3] == "eval_return" for r in rows)


def test_the_bridge_with_two_sim_cameras_trains_from_pixels_and_its_log_exports_the_frames(
    start_server,  # noqa: F811
    keys_dir,  # noqa: F811
    tmp_path,
):
    from real_robot.convert import log_to_dataset, write_d4rl_hdf5

    # A learner that updates between steps answers late on a loaded machine: wide staleness and
    # watchdog limits keep every action applied, so the log holds exactly the 12 transitions.
    server = start_server(
        cameras=("front", "wrist"),
        max_episode_steps=6,
        max_action_age_ms=10_000,
        hold_after_ms=10_000,
        stop_after_ms=20_000,
    )
    cfg = compose_config([
        "agent=sac", "env=real", f"env.kwargs.address={server.address}", f"env.kwargs.keys_dir={keys_dir}",
        "+env.kwargs.pixels=true", *TINY_ENCODER, *SMALL_RUN, "steps.online=12", "steps.warmup=4",
        "agent.batch_size=4",  # updates from the 5th step: the online buffer holds a batch
    ])  # fmt: skip
    summary = rl.train.train(cfg, tmp_path / "run")
    assert summary["online"]["step"] == 12
    rows = metrics(tmp_path / "run")
    assert [r[0] for r in rows if r[3] == "critic_loss"][-1] == "12"

    dataset = log_to_dataset(server.recorder.path)
    cameras = ("front", "wrist")
    for key in cameras:
        frames = dataset.observations[key]
        assert frames.dtype == np.uint8 and frames.shape[1:] == (64, 64, 3) and len(dataset) == 12
        assert frames.std() > 0  # rendered images, not blanks
    write_d4rl_hdf5(dataset, tmp_path / "recorded.hdf5")
    image = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    space = gym.spaces.Dict(
        {"state": gym.spaces.Box(-np.inf, np.inf, (25,), np.float32)} | dict.fromkeys(cameras, image)
    )
    loaded = check_dataset(
        load_dataset(f"d4rl:{tmp_path / 'recorded.hdf5'}"), space, gym.spaces.Box(-1, 1, (7,)), True
    )
    for key in cameras:
        np.testing.assert_array_equal(loaded.observations[key], dataset.observations[key])
        np.testing.assert_array_equal(loaded.next_observations[key], dataset.next_observations[key])
