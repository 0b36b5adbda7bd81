"""A Gymnasium env over the bridge: what ``env=real`` gives any agent for its online phase.

``make_bridge_env(address=..., keys_dir=...)`` connects, takes the control lease (HELLO) and builds
its spaces from the server's spec: actions are ``Box(-1, 1, (7,))`` ee-delta commands
(dx, dy, dz, droll, dpitch, dyaw, gripper), observations a flat float32 ``Box`` of the spec's
``obs_keys`` (with ``pixels=True`` and a camera on the server, a ``Dict`` of ``state`` and
``pixels``). One ``step`` is one ACT -> OBS round trip; the server's clock sets the control period,
so the env never sleeps.

What a step returns when the server refuses the action: a *fatal* refusal (the e-stop is latched)
raises ``BridgeError``, because training must stop until an operator clears it. Any other refusal
(a stale action after a long pause, the watchdog having held or stopped the arm) ends the episode
with ``truncated=True``, the last observation and the reward of that observation (the arm did not
move, so the state and its reward are unchanged), and ``info["bridge_error"]`` naming the reason;
truncation bootstraps, so the learner is not told a false terminal.

``info`` after each step carries what was actually executed: ``applied_action`` (after the
governor's clipping, or the human's action), ``intervened`` and ``clipped``. A learner that stores
transitions should store ``applied_action``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from real_robot import protocol
from real_robot.client import BridgeClient, BridgeError
from real_robot.keys import load_client_keys


class BridgeEnv(gym.Env):
    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(
        self,
        address: str = "tcp://127.0.0.1:5555",
        keys_dir: str = "keys",
        key_name: str = "client",
        timeout_s: float = 5.0,
        reset_timeout_s: float = 30.0,
        max_episode_steps: int | None = None,
        pixels: bool = False,
        client_name: str = "o2o-env",
    ):
        self.client = BridgeClient(address, load_client_keys(keys_dir, key_name), timeout_s, client_name)
        self.server_spec = self.client.hello()
        self.reset_timeout_s = reset_timeout_s
        self.max_episode_steps = max_episode_steps or int(self.server_spec["max_episode_steps"])
        self.obs_keys = list(self.server_spec["obs_keys"])
        state_dim = sum(int(self.server_spec["obs_dims"][k]) for k in self.obs_keys)
        state_space = gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)
        cameras = self.server_spec["cameras"]
        if pixels and not cameras:
            raise ValueError(
                "bridge env: pixels=True but the server has no camera (start it with camera=true)"
            )
        self.camera = next(iter(cameras)) if pixels else None
        if self.camera is None:
            self.observation_space = state_space
        else:
            image = gym.spaces.Box(0, 255, tuple(cameras[self.camera]), np.uint8)
            self.observation_space = gym.spaces.Dict({"state": state_space, "pixels": image})
        self.action_space = gym.spaces.Box(-1.0, 1.0, (int(self.server_spec["action_dim"]),), np.float32)
        self._last: protocol.Message | None = None
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        # Every episode starts by (re)taking the lease: a learner that was silent for longer than the
        # server's lease timeout (an offline phase, a checkpoint write) has lost it, and the server
        # lets the same key take it over at once.
        self.client.hello()
        server_seed = int(self.np_random.integers(2**31))
        self._last = self.client.request(
            protocol.RESET, {"seed": server_seed}, timeout_s=self.reset_timeout_s
        )
        self._steps = 0
        return self._observation(self._last), {"episode": self._last.body["episode"]}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        if self._last is None:
            raise RuntimeError("bridge env: call reset() before step()")
        action = np.asarray(action, dtype=np.float32).reshape(self.action_space.shape)
        try:
            reply = self.client.request(protocol.ACT, {"obs_id": self._last.body["obs_id"], "action": action})
        except BridgeError as exc:
            if exc.fatal:
                raise
            last = self._last.body
            return (
                self._observation(self._last),
                float(last["reward"]),
                False,
                True,
                {"bridge_error": exc.code, "message": str(exc)},
            )
        self._last = reply
        self._steps += 1
        body = reply.body
        info = {
            "applied_action": np.asarray(body["applied"]["applied"], np.float32),
            "intervened": body["applied"]["source"] == "human",
            "clipped": list(body["applied"]["clipped"]),
            "logged": body["logged"],
            "status": body["status"],
        }
        truncated = self._steps >= self.max_episode_steps
        return self._observation(reply), float(body["reward"]), bool(body["terminated"]), truncated, info

    def _observation(self, msg: protocol.Message) -> Any:
        state = protocol.flatten_state(msg.body["state"], self.obs_keys)
        if self.camera is None:
            return state
        return {"state": state, "pixels": np.asarray(msg.body["frames"][self.camera]["image"])}

    def close(self) -> None:
        if self.client.closed:
            return
        try:
            self.client.request(protocol.BYE, timeout_s=1.0)
        except (BridgeError, TimeoutError):
            pass  # the lease times out on its own; closing must not raise
        finally:
            self.client.close()


def make_bridge_env(**kwargs: Any) -> gym.Env:
    """Connect to an arm server; keyword arguments are ``BridgeEnv``'s (address, keys_dir, ...)."""
    return BridgeEnv(**kwargs)
