"""A Gymnasium env over the bridge: what ``env=real`` gives any agent for its online phase.

``make_bridge_env(address=..., keys_dir=...)`` connects, takes the control lease (HELLO) and builds
its spaces from the server's spec: actions are ``Box(-1, 1, (7,))`` ee-delta commands
(dx, dy, dz, droll, dpitch, dyaw, gripper), observations a flat float32 ``Box`` of the spec's
``obs_keys``. One ``step`` is one ACT -> OBS round trip; the server's clock sets the control period,
so the env never sleeps.

Pixels (``pixels=True``): the observation is a ``Dict`` of ``state`` (that flat ``Box``) and, for each
observed camera, its uint8 ``(H, W, 3)`` frame under the camera's name (``front``, ``wrist``: the
layout ``envs.robosuite_adapter`` gives its cameras), at that camera's size from the spec (cameras
may differ). The
cameras are every server camera, or those named by ``cameras`` (``env.kwargs.cameras``); a name the
server lacks, an empty list, or ``cameras`` without ``pixels=True`` is refused in one line.
``real_robot.convert`` exports a log with the same keys, so a converted dataset trains an agent that
then acts through this env.

What a step returns when the server refuses the action: a *fatal* refusal (the e-stop is latched)
raises ``BridgeError``, because training must stop until an operator clears it. Any other refusal
(a stale action after a long pause, the watchdog having held or stopped the arm) ends the episode
with ``truncated=True``, the last observation and the reward of that observation (the arm did not
move, so the state and its reward are unchanged), and ``info["bridge_error"]`` naming the reason;
truncation bootstraps, so the learner is not told a false terminal.

``info`` after each step carries what was actually executed: ``applied_action`` (after the
governor's clipping, or the human's action), ``intervened`` and ``clipped``. A learner that stores
transitions should store ``applied_action``. ``info["success"]`` is the server task's own success
(its termination), which a run with a reward model compares its labels with (``env_success``).

Reward view (``reward=<model>``: a reward camera beside a state policy, as on a real cell): with a
camera on the server, ``reward_view_space`` and ``info["reward_view"]`` follow the contract of
``envs/robosuite_adapter.py``, built from what the OBS reply carries: ``frames/<camera>`` (H, W, 3)
uint8 for each of ``reward_cameras`` (None: every server camera), ``state/<name>`` float32 for
each state entry (``ee_pos`` and ``ee_quat`` under the arm-neutral ``eef_pos`` and ``eef_quat``), and
the server's key of the observation, ``ids/episode``, ``ids/step`` and ``ids/obs_id`` (int64 scalars),
with which the learner's labeller keys its label log (``rl.data.label_log``) so that
``real_robot.convert --labels`` can join the labels to the server's log. The policy's observation is
unchanged (state only unless ``pixels=True``; the reward cameras need not be the observed ones).
Decisions: the view is on by default whenever the server has a camera, because ``env=real`` is
built from ``env.kwargs`` only, so the run's ``env.reward_cameras`` cannot reach this env; the frames
are the server's, at the server camera's size (``reward.image_size`` must equal it; no resizing on
the learner side, so the model sees what the log holds).

Camera calibration (what KAGI lifts keypoints to 3D with): ``calibration=<file.json>``
(``env.kwargs.calibration``) names a JSON file with, per reward camera, ``intrinsics`` (3x3, pixels
of the frames as the server sends them), ``extrinsics`` (4x4 camera-to-world, OpenCV axes: x right,
y down, z forward; the world is the arm's base frame), ``height`` and ``width``. It is read and
checked when the env is made; each field that is wrong is named with the file. Without the file,
``reward_calibration()`` is None and a model that needs one is refused at build. The loop stores non-image view columns as float32, exact for ids below 2**24
(the labeller refuses larger ones rather than write a wrong key).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from real_robot import protocol
from real_robot.client import BridgeClient, BridgeError
from real_robot.keys import load_client_keys

STATE_NAMES = {"ee_pos": "eef_pos", "ee_quat": "eef_quat"}
"""Server state entries renamed in the reward view to the names robosuite's reward view uses."""
IDS = ("episode", "step", "obs_id")
"""The server's key of an observation, as the label log and ``real_robot.convert`` key it."""


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
        reward_cameras: list[str] | None = None,
        calibration: str | None = None,
        cameras: list[str] | None = None,
    ):
        self.client = BridgeClient(address, load_client_keys(keys_dir, key_name), timeout_s, client_name)
        self.server_spec = self.client.hello()
        self.reset_timeout_s = reset_timeout_s
        self.max_episode_steps = max_episode_steps or int(self.server_spec["max_episode_steps"])
        self.obs_keys = list(self.server_spec["obs_keys"])
        self.reward_view_space: gym.spaces.Dict | None = None
        """The layout of ``info["reward_view"]`` (None: no reward camera), read by the vector envs."""
        try:
            self._build_spaces(pixels, cameras, reward_cameras)
            self.calibration = (
                None if calibration is None else read_calibration(calibration, self.server_spec["cameras"])
            )
        except ValueError:
            self.close()  # the client holds sockets and the lease: a refused setting must not leak them
            raise
        self._last: protocol.Message | None = None
        self._steps = 0

    def _build_spaces(
        self, pixels: bool, cameras: list[str] | None, reward_cameras: list[str] | None
    ) -> None:
        """The observation, action and reward view spaces from the server's spec (module docstring)."""
        server_cameras = self.server_spec["cameras"]
        self.cameras = observed_cameras(pixels, cameras, server_cameras)
        """The cameras the policy observes (empty: state only)."""
        state_dim = sum(int(self.server_spec["obs_dims"][k]) for k in self.obs_keys)
        state_space = gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)
        if self.cameras:
            images = {
                camera: gym.spaces.Box(0, 255, tuple(server_cameras[camera]), np.uint8)
                for camera in self.cameras
            }
            self.observation_space = gym.spaces.Dict({"state": state_space, **images})
        else:
            self.observation_space = state_space
        self.action_space = gym.spaces.Box(-1.0, 1.0, (int(self.server_spec["action_dim"]),), np.float32)
        self.reward_cameras = list(server_cameras) if reward_cameras is None else list(reward_cameras)
        unknown = [camera for camera in self.reward_cameras if camera not in server_cameras]
        if unknown:
            raise ValueError(
                f"bridge env: reward_cameras {unknown} are not the server's cameras {sorted(server_cameras)}"
            )
        if self.reward_cameras:
            views = {
                f"frames/{c}": gym.spaces.Box(0, 255, tuple(server_cameras[c]), np.uint8)
                for c in self.reward_cameras
            }
            views |= {
                f"state/{STATE_NAMES.get(k, k)}": gym.spaces.Box(
                    -np.inf, np.inf, (int(self.server_spec["obs_dims"][k]),), np.float32
                )
                for k in self.obs_keys
            }
            views |= {f"ids/{k}": gym.spaces.Box(0, np.iinfo(np.int64).max, (), np.int64) for k in IDS}
            self.reward_view_space = gym.spaces.Dict(views)

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
            info = {"bridge_error": exc.code, "message": str(exc), "success": bool(last["terminated"])}
            if self.reward_view_space is not None:
                info["reward_view"] = self._reward_view(last)
            return self._observation(self._last), float(last["reward"]), False, True, info
        self._last = reply
        self._steps += 1
        body = reply.body
        info = {
            "applied_action": np.asarray(body["applied"]["applied"], np.float32),
            "intervened": body["applied"]["source"] == "human",
            "clipped": list(body["applied"]["clipped"]),
            "logged": body["logged"],
            "status": body["status"],
            "success": bool(body["terminated"]),
        }
        if self.reward_view_space is not None:
            info["reward_view"] = self._reward_view(body)
        truncated = self._steps >= self.max_episode_steps
        return self._observation(reply), float(body["reward"]), bool(body["terminated"]), truncated, info

    def reward_calibration(self) -> dict[str, dict[str, Any]] | None:
        """The reward cameras' calibration from the ``calibration`` file, None without one."""
        if self.calibration is None:
            return None
        return {
            camera: self.calibration[camera] for camera in self.reward_cameras if camera in self.calibration
        }

    def _observation(self, msg: protocol.Message) -> Any:
        return protocol.observation(msg.body, self.obs_keys, self.cameras)

    def _reward_view(self, body: dict[str, Any]) -> dict[str, np.ndarray]:
        """The reward view of the observation in ``body`` (module docstring)."""
        view = {f"frames/{c}": np.asarray(body["frames"][c]["image"], np.uint8) for c in self.reward_cameras}
        for key in self.obs_keys:
            view[f"state/{STATE_NAMES.get(key, key)}"] = np.asarray(body["state"][key], np.float32).ravel()
        view |= {f"ids/{k}": np.asarray(body[k], np.int64) for k in IDS}
        return view

    def close(self) -> None:
        if self.client.closed:
            return
        try:
            self.client.request(protocol.BYE, timeout_s=1.0)
        except (BridgeError, TimeoutError):
            pass  # the lease times out on its own; closing must not raise
        finally:
            self.client.close()


def observed_cameras(pixels: bool, cameras: list[str] | None, server_cameras: dict[str, Any]) -> list[str]:
    """The cameras a pixel observation holds (module docstring); a ValueError says what is wrong."""
    if not pixels:
        if cameras is not None:
            raise ValueError(f"bridge env: cameras={list(cameras)} needs pixels=True")
        return []
    if not server_cameras:
        raise ValueError(
            "bridge env: pixels=True but the server has no camera (start the sim with cameras=front)"
        )
    if cameras is None:
        return protocol.check_camera_names(list(server_cameras))
    if not cameras:
        raise ValueError(
            f"bridge env: cameras is empty; pixels=True observes one or more of the server's "
            f"cameras {sorted(server_cameras)}"
        )
    unknown = [camera for camera in cameras if camera not in server_cameras]
    if unknown:
        raise ValueError(
            f"bridge env: cameras {unknown} are not the server's cameras {sorted(server_cameras)}"
        )
    return protocol.check_camera_names(
        list(dict.fromkeys(cameras))
    )  # one key per camera, even if named twice


def read_calibration(path: str | Path, cameras: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The calibration file's cameras (module docstring), checked against the server's ``cameras``
    (name -> frame shape): a ValueError names the file and the first field that is wrong."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"bridge env: calibration file {path}: no such file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"bridge env: calibration file {path}: not JSON ({exc})") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"bridge env: calibration file {path}: expected an object of cameras")
    calibration = {}
    for camera, entry in raw.items():
        where = f"bridge env: calibration file {path}: camera {camera!r}"
        if camera not in cameras:
            raise ValueError(f"{where} is not one of the server's cameras {sorted(cameras)}")
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object with intrinsics, extrinsics, height, width")
        fields = {}
        for name, shape in (("intrinsics", (3, 3)), ("extrinsics", (4, 4))):
            try:
                value = np.asarray(entry[name], np.float64)
            except KeyError:
                raise ValueError(f"{where}: no {name}") from None
            except (TypeError, ValueError):
                raise ValueError(f"{where}: {name} is not a matrix of numbers") from None
            if value.shape != shape or not np.isfinite(value).all():
                raise ValueError(f"{where}: {name} must be a finite {shape[0]}x{shape[1]} matrix")
            fields[name] = value
        height, width = entry.get("height"), entry.get("width")
        if (height, width) != tuple(cameras[camera][:2]):
            raise ValueError(
                f"{where}: height, width = {height}, {width}, but the server sends "
                f"{cameras[camera][0]}x{cameras[camera][1]} frames"
            )
        calibration[camera] = {**fields, "height": int(height), "width": int(width)}
    return calibration


def make_bridge_env(**kwargs: Any) -> gym.Env:
    """Connect to an arm server; keyword arguments are ``BridgeEnv``'s (address, keys_dir, ...)."""
    return BridgeEnv(**kwargs)
