"""Control rate kept by the online loop while a slow reward model labels in the background.

    .venv/bin/python -m experiments.bench.labelling [--seconds 20] [--num-envs 1] [--delay 0.5]

The trainer's acting loop on robosuite Lift from state (one batched SAC ``act`` per vector step and
``collect_step``, the function ``rl.loops.off_policy.online_phase`` calls; learning left out, it costs
every arm the same), in three arms timed in alternating turns (``experiments.bench.envs.round_robin``,
so a load change hits each alike):

- ``env_reward``: the env's own reward, no reward camera: today's loop;
- ``env_reward_camera``: the env's reward, but the env also renders the 84x84 ``agentview`` reward
  camera each step (what a camera reward costs before any model runs);
- ``async_slow_model``: the camera, and rows labelled by an async ``Labeller`` whose model takes
  ``--delay`` seconds per frame (500 ms: a VLM; it sleeps, like a remote server, so it takes no CPU),
  in batches of 64.

The goal (issue 16) is ``async_slow_model / env_reward >= 0.9``; the figure that isolates the
labeller is ``async_slow_model / env_reward_camera`` (rendering the camera is the env's cost, not the
labeller's). Prints one JSON object with the threads and the load before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

# Run as a file, this module's folder heads sys.path and its name would shadow the envs package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import envs  # noqa: E402
from envs import EnvConfig  # noqa: E402
from experiments.bench.envs import Stepper, round_robin  # noqa: E402
from rl.agents import build_agent  # noqa: E402
from rl.agents.sac import SACConfig  # noqa: E402
from rl.buffers import ObsSpec, ReplayBuffer  # noqa: E402
from rl.loops.labelling import Labeller  # noqa: E402
from rl.loops.off_policy import collect_step  # noqa: E402
from rl.rewards import Labels, RewardModel  # noqa: E402

LIFT = dict(name="lift", id="Lift", family="robosuite", score_name=None)
CAMERA = "agentview"


class SlowModel(RewardModel):
    """A stand-in VLM: ``delay`` seconds per frame, reward 0 (the figure is control, not labels)."""

    cameras = (CAMERA,)

    def __init__(self, delay: float) -> None:
        self.delay, self.frames = delay, 0

    def label(self, batch):
        time.sleep(self.delay * len(batch))
        self.frames += len(batch)
        zeros = torch.zeros(len(batch), dtype=torch.bool)
        return Labels(reward=torch.zeros(len(batch)), success=zeros, done=zeros)

    def identity(self) -> bytes:
        return f"slow {self.delay}".encode()


def arm(
    num_envs: int, camera: bool, delay: float | None, kwargs: dict
) -> tuple[Stepper, envs.VecEnv, Labeller | None]:
    """One arm's acting loop (see the module docstring)."""
    cfg = EnvConfig(**LIFT, reward_cameras=[CAMERA] if camera else [], reward_state=camera, kwargs=kwargs)
    vec = envs.make_vec(cfg, num_envs, mode="sync" if num_envs == 1 else "async")
    space = vec.single_observation_space
    action_dim = int(vec.single_action_space.shape[0])
    agent = build_agent(SACConfig(), int(np.prod(space.shape)), action_dim, torch.device("cpu"))
    labelled = delay is not None
    view = ObsSpec.from_space(vec.reward_view_space).columns if labelled else None
    buffer = ReplayBuffer(100_000, ObsSpec.from_space(space), action_dim, labelled=labelled, view_spec=view)
    labeller = Labeller(SlowModel(delay), buffer, num_envs, "async", batch=64) if labelled else None
    state = {"obs": vec.reset(seed=0), "rows": [[] for _ in range(num_envs)]}

    def step() -> None:
        action = agent.act(state["obs"])
        state["obs"] = collect_step(vec, state["obs"], action, buffer, state["rows"], labeller).obs

    return (step, num_envs), vec, labeller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="timing window per arm")
    parser.add_argument("--num-envs", type=int, default=1, help="env copies (1: in process)")
    parser.add_argument("--delay", type=float, default=0.5, help="the slow model's seconds per frame")
    parser.add_argument("--collision-meshes", action="store_true", help="render collision meshes (cheaper)")
    args = parser.parse_args()
    kwargs = {"render_visual_mesh": False, "render_collision_mesh": True} if args.collision_meshes else {}
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    arms = {
        "env_reward": arm(args.num_envs, camera=False, delay=None, kwargs=kwargs),
        "env_reward_camera": arm(args.num_envs, camera=True, delay=None, kwargs=kwargs),
        "async_slow_model": arm(args.num_envs, camera=True, delay=args.delay, kwargs=kwargs),
    }
    try:
        rates = round_robin({name: stepper for name, (stepper, _, _) in arms.items()}, args.seconds)
        labeller = arms["async_slow_model"][2]
        lag = labeller.drain()
        labelled_frames = labeller.model.frames
    finally:
        for _, vec, labeller_ in arms.values():
            if labeller_ is not None:
                labeller_.close()
            vec.close()
    goal = rates["async_slow_model"] / rates["env_reward"]
    report = {
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
        "command": " ".join(["python -m experiments.bench.labelling", *sys.argv[1:]]),
        "torch_threads": torch.get_num_threads(),
        "labeller_threads": 1,
        "num_envs": args.num_envs,
        "seconds_per_arm": args.seconds,
        "model_seconds_per_frame": args.delay,
        "collision_meshes": args.collision_meshes,
        "env_steps_per_second": {k: round(v, 1) for k, v in rates.items()},
        "async_over_env_reward": round(goal, 3),
        "async_over_env_reward_camera": round(rates["async_slow_model"] / rates["env_reward_camera"], 3),
        "camera_over_env_reward": round(rates["env_reward_camera"] / rates["env_reward"], 3),
        "slow_model": {
            "frames_labelled": labelled_frames,
            "lag_rows_at_end": lag["label_lag_rows"],
            "lag_seconds_at_end": round(lag["label_lag_s"], 1),
        },
        "load": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "targets": {"async_slow_model / env_reward >= 0.9": {"value": round(goal, 3), "met": goal >= 0.9}},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    gym.logger.min_level = 40
    main()
