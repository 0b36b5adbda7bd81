"""Env stepping throughput: single env, vector env in process and in subprocesses, and the physics
floor (raw ``mujoco.mj_step`` on the same model, frame_skip substeps per env step), all in one run;
and the trainer's online collection loop (vector step, one batched SAC ``act``, replay add) against
a bare gymnasium env and the physics floor.

    .venv/bin/python -m experiments.bench.envs [--seconds 3] [--skip-pixels] [--only GROUP]

Prints one JSON object. Every figure is env steps per second (vector envs: copies x vector steps),
with random actions in [-1, 1] drawn beforehand; ratios compare figures from this same run. Not a
test: the machine is shared, so read ratios, and rerun when the load changes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable

# Run as a file, this module's folder heads sys.path and its name would shadow the envs package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import envs  # noqa: E402
from envs import EnvConfig  # noqa: E402
from rl.agents import build_agent  # noqa: E402
from rl.agents.sac import SACConfig  # noqa: E402
from rl.buffers import ObsSpec, ReplayBuffer  # noqa: E402
from rl.loops.off_policy import collect_step  # noqa: E402

HALFCHEETAH = EnvConfig(name="halfcheetah", id="HalfCheetah-v5", score_name="halfcheetah")
LIFT = EnvConfig(name="lift", id="Lift", family="robosuite", score_name=None)
VECTOR_SIZES = (2, 4, 8)
ONLINE_SIZES = (1, 2, 4, 8)
COMPILED_ACT_SIZES = (1, 8)
GROUPS = ("halfcheetah", "lift", "lift_pixels", "online_loop")

Stepper = tuple[Callable[[], None], int]
"""A function that advances some env(s), and how many env steps one call makes."""


def round_robin(steppers: dict[str, Stepper], seconds: float, turn: float = 0.05) -> dict[str, float]:
    """Env steps per second of each stepper, timed in alternating turns of ``turn`` seconds until each
    has run ``seconds`` in total: a load change on a shared machine then hits every figure alike,
    which keeps the ratios between them meaningful."""
    for step, _ in steppers.values():  # warm up (caches, lazy allocations, first renders)
        for _ in range(3):
            step()
    elapsed = dict.fromkeys(steppers, 0.0)
    env_steps = dict.fromkeys(steppers, 0)
    while min(elapsed.values()) < seconds:
        for name, (step, per_call) in steppers.items():
            start = time.perf_counter()
            while (spent := time.perf_counter() - start) < turn:
                step()
                env_steps[name] += per_call
            elapsed[name] += spent
    return {name: env_steps[name] / elapsed[name] for name in steppers}


def physics(model: mujoco.MjModel, substeps: int) -> Stepper:
    """One env step's worth of raw mj_step calls: the floor no env step can beat."""
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    return (lambda: mujoco.mj_step(model, data, nstep=substeps)), 1


def single(env) -> Stepper:
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(4096, *env.action_space.shape))
    count = iter(range(10**12))

    def step() -> None:
        _, _, terminated, truncated, _ = env.step(actions[next(count) % 4096])
        if terminated or truncated:
            env.reset()

    return step, 1


def vector(vec) -> Stepper:
    vec.reset(seed=0)
    actions = torch.rand(4096, vec.num_envs, *vec.single_action_space.shape) * 2 - 1
    count = iter(range(10**12))
    return (lambda: vec.step(actions[next(count) % 4096])), vec.num_envs


def online_loop(vec, act: Callable[[torch.Tensor], torch.Tensor], buffer: ReplayBuffer) -> Stepper:
    """The trainer's online phase without learning: one batched ``act`` (an agent's ``act``, or a
    compiled copy of it) per vector step and ``collect_step`` (the vector step, the replay add, the
    episode rows and MC returns), the very function ``rl.loops.off_policy.online_phase`` calls."""
    state = {"obs": vec.reset(seed=0), "rows": [[] for _ in range(vec.num_envs)]}
    for _ in range(3):  # a compiled act compiles here, outside the timed turns
        act(state["obs"])

    def step() -> None:
        action = act(state["obs"])
        state["obs"] = collect_step(vec, state["obs"], action, buffer, state["rows"]).obs

    return step, vec.num_envs


def numpy_act(actor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A lever measured, not used by the trainer: the tanh-Gaussian actor's sampling in numpy on views
    of its weights (``Tensor.numpy()`` shares memory, so optimizer steps show through), with the
    noise still drawn by ``torch.randn``. It differs from ``actor.sample`` by float rounding only."""
    linears = [m for m in actor.net if isinstance(m, torch.nn.Linear)]
    if len(linears) != len(actor.net) // 2 + 1:
        raise ValueError("numpy_act: takes an actor MLP of Linear and ReLU layers only (no LayerNorm)")
    layers = [(m.weight.detach().numpy().T, m.bias.detach().numpy()) for m in linears]
    mean, std = actor.obs_norm.mean.numpy(), actor.obs_norm.std.numpy()
    low, high = actor.log_std_min, actor.log_std_max

    def act(obs: torch.Tensor) -> torch.Tensor:
        x = (obs.numpy() - mean) / std
        for weight, bias in layers[:-1]:
            x = x @ weight
            x += bias
            np.maximum(x, 0.0, out=x)
        out = x @ layers[-1][0] + layers[-1][1]
        mu, log_std = np.split(out, 2, axis=-1)
        noise = torch.randn(mu.shape).numpy()
        return torch.from_numpy(np.tanh(mu + np.exp(np.clip(log_std, low, high)) * noise))

    return act


def vector_and_act(vec, act: Callable[[torch.Tensor], torch.Tensor]) -> Stepper:
    """The online loop without the replay add: one batched ``act`` and one vector step."""
    state = {"obs": vec.reset(seed=0)}

    def step() -> None:
        state["obs"] = vec.step(act(state["obs"])).obs

    return step, vec.num_envs


def vector_step_budget(figures: dict[str, float], n: int) -> dict[str, float]:
    """One vector step of the n-copy online loop split by the differences of the timed variants:
    the vector step itself (n env steps), ``act``, and the replay add with the episode bookkeeping."""
    per_step = {k: 1e6 * n / figures[f"{k}_n{n}"] for k in ("vector_only", "vector_and_act", "online_loop")}
    return {
        "vector_step": round(per_step["vector_only"], 1),
        "act": round(per_step["vector_and_act"] - per_step["vector_only"], 1),
        "replay_add_and_bookkeeping": round(per_step["online_loop"] - per_step["vector_and_act"], 1),
        "bare_env_steps": round(1e6 * n / figures["bare_single_env"], 1),
    }


def stepping_figures(cfg: EnvConfig, floor: Stepper, seconds: float) -> dict[str, float]:
    """Physics floor, single env, and vector envs of every size and mode, timed together."""
    to_close = [envs.make(cfg)]
    steppers = {"physics_floor": floor, "single_env": single(to_close[0])}
    for mode, label in (("sync", "in_process"), ("async", "subprocess")):
        for n in VECTOR_SIZES:
            to_close.append(envs.make_vec(cfg, n, mode=mode))
            steppers[f"{label}_n{n}"] = vector(to_close[-1])
    # One copy in one worker: against single_env, the price of the pipe and shared-memory round trip.
    to_close.append(envs.make_vec(cfg, 1, mode="async"))
    steppers["subprocess_n1"] = vector(to_close[-1])
    try:
        return {name: round(value, 1) for name, value in round_robin(steppers, seconds).items()}
    finally:
        for env in to_close:
            env.close()


def halfcheetah(seconds: float) -> dict:
    core = envs.make(HALFCHEETAH).unwrapped
    figures = stepping_figures(HALFCHEETAH, physics(core.model, core.frame_skip), seconds)
    floor = figures["physics_floor"]
    return {
        "env_steps_per_second": figures,
        "frame_skip": core.frame_skip,
        "over_physics_floor": {k: round(v / floor, 3) for k, v in figures.items() if k != "physics_floor"},
    }


def halfcheetah_online_loop(seconds: float) -> dict:
    """``online_loop_n{1,2,4,8}`` (in-process ``make_vec``, SAC with o2o's default 256x256 actor on
    CPU, a 200k-row replay buffer each) against a bare ``gymnasium.make`` env and the physics floor;
    ``online_loop_compiled_act_n{1,8}``: the same with ``torch.compile(agent.act)``, the acting lever
    the issue names (inductor's CPU kernels behind dynamo's guards).

    Where a vector step goes, n = 1 and 8: ``vector_only_n{n}`` steps the same vector env with
    pre-drawn actions, ``vector_and_act_n{n}`` adds the batched ``act``; differences of the three
    per-vector-step times price ``act`` and the replay add with its bookkeeping, all timed in the
    same turns. ``vector_only`` over the bare env is the loop's ceiling if acting and storing were
    free."""
    torch.manual_seed(0)
    bare = gym.make(HALFCHEETAH.id)
    core = bare.unwrapped
    steppers = {"physics_floor": physics(core.model, core.frame_skip), "bare_single_env": single(bare)}
    to_close = [bare]
    for n in ONLINE_SIZES:
        vec = envs.make_vec(HALFCHEETAH, n, mode="sync")
        to_close.append(vec)
        obs_space = vec.single_observation_space
        obs_dim, action_dim = int(np.prod(obs_space.shape)), vec.single_action_space.shape[0]
        agent = build_agent(SACConfig(), obs_dim, action_dim, torch.device("cpu"))
        buffer = ReplayBuffer(200_000, ObsSpec.from_space(obs_space), action_dim)
        steppers[f"online_loop_n{n}"] = online_loop(vec, agent.act, buffer)
        if n in COMPILED_ACT_SIZES:
            vec = envs.make_vec(HALFCHEETAH, n, mode="sync")
            to_close.append(vec)
            buffer = ReplayBuffer(200_000, ObsSpec.from_space(obs_space), action_dim)
            compiled_act = torch.compile(agent.act, dynamic=False)
            steppers[f"online_loop_compiled_act_n{n}"] = online_loop(vec, compiled_act, buffer)
            vec = envs.make_vec(HALFCHEETAH, n, mode="sync")
            to_close.append(vec)
            buffer = ReplayBuffer(200_000, ObsSpec.from_space(obs_space), action_dim)
            steppers[f"online_loop_numpy_act_n{n}"] = online_loop(vec, numpy_act(agent.ac.actor), buffer)
            to_close += [envs.make_vec(HALFCHEETAH, n, mode="sync") for _ in range(2)]
            steppers[f"vector_only_n{n}"] = vector(to_close[-2])
            steppers[f"vector_and_act_n{n}"] = vector_and_act(to_close[-1], agent.act)
    try:
        figures = {name: round(value, 1) for name, value in round_robin(steppers, seconds).items()}
    finally:
        for env in to_close:
            env.close()
    online = [k for k in figures if k.startswith(("online_loop", "vector_only"))]
    return {
        "env_steps_per_second": figures,
        "over_bare_single_env": {k: round(figures[k] / figures["bare_single_env"], 3) for k in online},
        "microseconds_per_vector_step": {f"n{n}": vector_step_budget(figures, n) for n in COMPILED_ACT_SIZES},
        "over_physics_floor": {
            k: round(v / figures["physics_floor"], 3) for k, v in figures.items() if k != "physics_floor"
        },
    }


def lift(seconds: float) -> dict:
    probe = envs.make(LIFT)
    suite = probe.unwrapped.suite
    substeps = round(suite.control_timestep / suite.model_timestep)
    figures = stepping_figures(LIFT, physics(suite.sim.model._model, substeps), seconds)
    probe.close()
    return {
        "env_steps_per_second": figures,
        "substeps": substeps,
        "over_single_env": {k: round(v / figures["single_env"], 3) for k, v in figures.items()},
    }


def lift_pixels(seconds: float) -> dict:
    """Two 84x84 cameras (agentview, wrist): robosuite's default render quality, the RL settings,
    and the RL settings drawing collision meshes instead of the detailed visual meshes; the state env
    as the reference."""
    camera = {**vars(LIFT), "obs_mode": "pixels", "image_size": 84}
    variants = {
        "state_only": EnvConfig(**vars(LIFT)),
        "default_render": EnvConfig(**{**camera, "fast_render": False}),
        "fast_render": EnvConfig(**camera),
        "fast_render_collision_meshes": EnvConfig(
            **{**camera, "kwargs": {"render_visual_mesh": False, "render_collision_mesh": True}}
        ),
    }
    built = {name: envs.make(cfg) for name, cfg in variants.items()}
    try:
        figures = round_robin({name: single(env) for name, env in built.items()}, seconds)
    finally:
        for env in built.values():
            env.close()
    return {
        "env_steps_per_second": {k: round(v, 1) for k, v in figures.items()},
        "over_state_only": {k: round(v / figures["state_only"], 3) for k, v in figures.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per figure")
    parser.add_argument("--skip-pixels", action="store_true", help="leave out the camera envs")
    parser.add_argument("--only", choices=GROUPS, action="append", help="run only this group (repeatable)")
    args = parser.parse_args()
    groups = set(args.only or GROUPS) - ({"lift_pixels"} if args.skip_pixels else set())
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(1)

    report: dict = {
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
        "seconds_per_figure": args.seconds,
    }
    targets = {}
    if "halfcheetah" in groups:
        cheetah = report["halfcheetah_v5"] = halfcheetah(args.seconds)
        in_process_n8 = cheetah["over_physics_floor"]["in_process_n8"]
        targets["halfcheetah_in_process_n8_over_physics_floor >= 0.6"] = {
            "value": in_process_n8,
            "met": in_process_n8 >= 0.6,
        }
    if "lift" in groups:
        robosuite = report["robosuite_lift_state"] = lift(args.seconds)
        speedup = robosuite["over_single_env"]["subprocess_n2"]
        targets["lift_subprocess_n2_over_single >= 1.7"] = {"value": speedup, "met": speedup >= 1.7}
    if "online_loop" in groups:
        loop = report["halfcheetah_v5_online_loop"] = halfcheetah_online_loop(args.seconds)
        for n, goal in ((8, 0.7), (1, 0.4)):  # issue 14's P4, on the default (eager) acting path
            over_bare = loop["over_bare_single_env"][f"online_loop_n{n}"]
            targets[f"halfcheetah_online_loop_n{n}_over_bare_single_env >= {goal}"] = {
                "value": over_bare,
                "met": over_bare >= goal,
                "ceiling_if_act_and_add_were_free": loop["over_bare_single_env"][f"vector_only_n{n}"],
            }
    if "lift_pixels" in groups:
        report["robosuite_lift_pixels_84"] = lift_pixels(args.seconds)
    report["targets"] = targets
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
