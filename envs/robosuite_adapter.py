"""The ``robosuite`` family: robosuite manipulation tasks (Lift, PickPlaceCan, Door, Stack, ...)
behind the Gymnasium API, with the arm driven by a part controller (OSC_POSE by default).

Conventions:
- Reward: robosuite's sparse reward (``reward_shaping=False``): 1 on a step where the task is solved,
  else 0; ``info["success"]`` is the task's success check. The episode terminates at the first
  success (the family default of ``terminate_on_success``, as in robomimic's demos and RLPD/IBRL-style
  sparse-reward fine-tuning) and is truncated at ``max_episode_steps`` (default 500 at 20 Hz);
  robosuite's own horizon is switched off (``ignore_done=True``) so truncation is ours to report.
- Observation, ``obs_mode=state``: robosuite's GymWrapper layout, ``object-state`` then
  ``robot0_proprio-state`` concatenated (Lift: 10 + 43 numbers).
- Observation, ``obs_mode=pixels``: a dict with one ``(H, W, 3)`` uint8 image per camera, keyed by
  the camera's name, plus ``state``: ``robot0_proprio-state`` (object poses are privileged, so left
  out). Images keep robosuite's row order (``macros.IMAGE_CONVENTION``, OpenGL's bottom-up by
  default), the one robomimic's image datasets were recorded with.
- Rendering: offscreen through ``MUJOCO_GL`` (``egl`` unless set; ``osmesa`` also works). With
  ``fast_render`` the render context is rebuilt without multisampling, and shadows, reflections and
  the skybox are off: about 6x faster on a software renderer, with nearly the same images. What is
  left is vertex processing of the visual meshes (~350k vertices for Panda + table, ~12 ms a frame
  on llvmpipe); passing ``kwargs: {render_visual_mesh: false, render_collision_mesh: true}`` renders
  the coarse collision meshes instead (~2 ms a frame, different-looking images).
- Reward view (``reward_cameras`` / ``reward_state``): what a reward model sees of the state each
  step reached, apart from the observation (the policy may see state only while the reward model sees
  a camera, as on a real cell). ``info["reward_view"]`` holds ``frames/<camera>`` (H, W, 3) uint8 in
  the pixel observation's row order and render settings (the same render when that camera is also an
  observation), ``frames/<camera>_depth`` (H, W) float32 metres with ``reward_depth``, and
  ``state/<name>`` float32 vectors: ``eef_pos``, ``gripper_qpos`` and the task's object poses
  (robosuite's object observables named ``*_pos`` / ``*_quat`` / ``*_qpos``, relative ones such as
  ``gripper_to_cube_pos`` left out: Lift gives ``cube_pos`` and ``cube_quat``). ``reward_calibration``
  gives each reward camera's pinhole model, with intrinsics for the frames *as stored*: in OpenGL row
  order (row 0 at the bottom) the focal length's row component is negated, so ``K @ x_cam`` lands on
  (column, row) of the stored array either way. Calibration is read once, after the first reset: fixed
  cameras (``agentview``, ``frontview``) are exact; a camera on the arm moves and is not calibrated.
- Randomness: robosuite samples object placements and joint noise from the *global* numpy
  generator; each env keeps its own generator state and swaps it in around robosuite calls, so copies
  in one process do not share a stream and ``reset(seed=s)`` fixes the episode.
- ``hard_reset=False``: a reset keeps the compiled model and the render context instead of rebuilding
  both from XML. Model-level randomisation (Lift's cube size) therefore happens once, when the env is
  built, from a fixed seed, so every copy and every run has the same model. ``kwargs: {hard_reset:
  true}`` resamples it every episode (slower; the render settings are re-applied after each reload).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import mujoco
import numpy as np

from envs.config import EnvConfig
from envs.wrappers import terminate_on_success

DEFAULT_MAX_EPISODE_STEPS = 500
OBS_MODES = ("state", "pixels")
NAMED_STATE = {"robot0_eef_pos": "eef_pos", "robot0_gripper_qpos": "gripper_qpos"}
"""Robot observables in the reward view's named state, under arm-neutral names."""
OBJECT_POSE_SUFFIXES = ("_pos", "_quat", "_qpos")


def _controller_config(robot: str, controller: str) -> dict[str, Any]:
    """The robot's default composite controller with every arm driven by ``controller`` (the
    grippers keep their own)."""
    import robosuite
    from robosuite.controllers import load_composite_controller_config

    part_file = (
        Path(robosuite.__file__).parent / "controllers/config/default/parts" / f"{controller.lower()}.json"
    )
    if not part_file.exists():
        known = sorted(p.stem.upper() for p in part_file.parent.glob("*.json"))
        raise ValueError(f"env.controller: unknown robosuite part controller {controller!r}; known: {known}")
    arm_config = json.loads(part_file.read_text())
    config = load_composite_controller_config(robot=robot)
    for part in ("right", "left"):
        if part in config["body_parts"]:
            gripper = config["body_parts"][part].get("gripper")
            config["body_parts"][part] = {**arm_config, "gripper": gripper}
    return config


class RobosuiteEnv(gym.Env):
    """One robosuite task as a Gymnasium env (see the module docstring for the conventions)."""

    def __init__(self, cfg: EnvConfig):
        if cfg.obs_mode not in OBS_MODES:
            raise ValueError(f"env.obs_mode: must be one of {OBS_MODES}, got {cfg.obs_mode!r}")
        self.pixels = cfg.obs_mode == "pixels"
        self.reward_cameras = list(cfg.reward_cameras)
        self.reward_size, self.reward_depth = cfg.reward_image_size, cfg.reward_depth
        renders = self.pixels or bool(self.reward_cameras)
        if renders:
            os.environ.setdefault("MUJOCO_GL", "egl")  # read when robosuite is first imported
        import robosuite

        if cfg.id not in robosuite.ALL_ENVIRONMENTS:
            raise ValueError(f"env.id: unknown robosuite task {cfg.id!r} (env.name={cfg.name!r})")
        if cfg.robot not in robosuite.ALL_ROBOTS:
            raise ValueError(f"env.robot: unknown robosuite robot {cfg.robot!r}")
        kwargs: dict[str, Any] = dict(
            robots=cfg.robot,
            controller_configs=_controller_config(cfg.robot, cfg.controller),
            reward_shaping=False,
            has_renderer=False,
            has_offscreen_renderer=renders,
            use_camera_obs=self.pixels,
            ignore_done=True,
            hard_reset=False,
        )
        if self.pixels:
            kwargs.update(
                camera_names=list(cfg.cameras), camera_heights=cfg.image_size, camera_widths=cfg.image_size
            )
        kwargs.update(cfg.kwargs)
        self.cameras = list(cfg.cameras) if self.pixels else []
        self._global_rng_state = np.random.RandomState(0).get_state()  # the model's draws: fixed
        with self._own_global_rng():
            try:
                self.suite = robosuite.make(cfg.id, **kwargs)
            except TypeError as e:  # an unknown constructor keyword
                raise ValueError(
                    f"env.kwargs: robosuite {cfg.id!r} rejected {sorted(cfg.kwargs)}: {e}"
                ) from None
            observation = self.suite.reset()
        self.fast_render = renders and cfg.fast_render
        self._fast_context = None
        self._apply_render_settings()

        low, high = self.suite.action_spec
        self.action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        example = self._observation(observation)
        self.reward_view_space: gym.spaces.Dict | None = None
        """The layout of ``info["reward_view"]`` (None: no reward view), read by the vector envs."""
        if self.reward_cameras or cfg.reward_state:
            self._check_reward_cameras()
            view = self._reward_view(observation)
            self.reward_view_space = gym.spaces.Dict(
                {k: gym.spaces.Box(0, 255, v.shape, np.uint8) if v.dtype == np.uint8 else
                 gym.spaces.Box(-np.inf, np.inf, v.shape, np.float32) for k, v in view.items()}
            )  # fmt: skip
        if self.pixels:
            self.observation_space = gym.spaces.Dict(
                {
                    key: gym.spaces.Box(0, 255, value.shape, np.uint8)
                    if value.dtype == np.uint8
                    else gym.spaces.Box(-np.inf, np.inf, value.shape, np.float64)
                    for key, value in example.items()
                }
            )
        else:
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, example.shape, np.float64)

    @contextmanager
    def _own_global_rng(self) -> Iterator[None]:
        """Run robosuite with this env's generator state in numpy's global slot."""
        outside = np.random.get_state()
        np.random.set_state(self._global_rng_state)
        try:
            yield
        finally:
            self._global_rng_state = np.random.get_state()
            np.random.set_state(outside)

    def _apply_render_settings(self) -> None:
        """With ``fast_render``, rebuild the offscreen context without multisampling and switch
        shadows, reflections and the skybox off; a hard reset makes a new context, so check each time."""
        context = self.suite.sim._render_context_offscreen if self.fast_render else None
        if context is None or context is self._fast_context:
            return
        self._fast_context = context
        context.gl_ctx.make_current()
        self.suite.sim.model._model.vis.quality.offsamples = 0
        context.con.free()
        context._set_mujoco_context_and_buffers()
        for flag in (
            mujoco.mjtRndFlag.mjRND_SHADOW,
            mujoco.mjtRndFlag.mjRND_REFLECTION,
            mujoco.mjtRndFlag.mjRND_SKYBOX,
        ):
            context.scn.flags[flag] = 0

    def _make_context_current(self) -> None:
        """robosuite renders into whichever GL context is current; with several camera envs in one
        process, each would otherwise draw with the context of the last one built."""
        if self.suite.sim._render_context_offscreen is not None:
            self.suite.sim._render_context_offscreen.gl_ctx.make_current()

    def _observation(self, observation: dict[str, np.ndarray]) -> Any:
        if self.pixels:
            images = {camera: observation[f"{camera}_image"] for camera in self.cameras}
            return {**images, "state": observation["robot0_proprio-state"]}
        return np.concatenate([observation["object-state"], observation["robot0_proprio-state"]])

    def _check_reward_cameras(self) -> None:
        known = set(self.suite.sim.model.camera_names)
        unknown = [camera for camera in self.reward_cameras if camera not in known]
        if unknown:
            raise ValueError(f"env.reward_cameras: {unknown} not in this scene's cameras {sorted(known)}")

    def _reward_view(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The reward view of the state robosuite just computed ``observation`` for (module docstring)."""
        from robosuite import macros
        from robosuite.utils.camera_utils import get_real_depth_map
        from robosuite.utils.mjcf_utils import IMAGE_CONVENTION_MAPPING

        rows = IMAGE_CONVENTION_MAPPING[macros.IMAGE_CONVENTION]
        view: dict[str, np.ndarray] = {}
        size = self.reward_size
        for camera in self.reward_cameras:
            key = f"{camera}_image"
            if key in observation and observation[key].shape[:2] == (size, size) and not self.reward_depth:
                view[f"frames/{camera}"] = observation[key]  # the observation's own render
                continue
            image = self.suite.sim.render(
                camera_name=camera, width=size, height=size, depth=self.reward_depth
            )
            if self.reward_depth:
                image, depth = image
                metres = get_real_depth_map(self.suite.sim, depth[::rows])
                view[f"frames/{camera}_depth"] = metres.astype(np.float32)
            view[f"frames/{camera}"] = np.ascontiguousarray(image[::rows])
        for name, value in observation.items():
            named = NAMED_STATE.get(name)
            if named is None and self._is_object_pose(name):
                named = name
            if named is not None:
                view[f"state/{named}"] = np.asarray(value, dtype=np.float32)
        return view

    def _is_object_pose(self, name: str) -> bool:
        observable = self.suite._observables.get(name)
        return (
            observable is not None
            and observable.modality == "object"
            and name.endswith(OBJECT_POSE_SUFFIXES)
            and "_to_" not in name
        )

    def reward_calibration(self) -> dict[str, dict[str, Any]]:
        """Each reward camera's pinhole model for its frames as stored (module docstring):
        ``intrinsics`` (3, 3), ``extrinsics`` (4, 4, camera-to-world, OpenCV axes: x right, y down,
        z forward), float64, and the image ``height`` and ``width``."""
        from robosuite import macros
        from robosuite.utils.camera_utils import get_camera_extrinsic_matrix, get_camera_intrinsic_matrix

        size = self.reward_size
        calibration = {}
        for camera in self.reward_cameras:
            intrinsics = get_camera_intrinsic_matrix(self.suite.sim, camera, size, size)
            if macros.IMAGE_CONVENTION == "opengl":  # rows stored bottom-up: row = H - v
                intrinsics = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, size], [0.0, 0.0, 1.0]]) @ intrinsics
            extrinsics = get_camera_extrinsic_matrix(self.suite.sim, camera)
            calibration[camera] = {
                "intrinsics": intrinsics,
                "extrinsics": extrinsics,
                "height": size,
                "width": size,
            }
        return calibration

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._global_rng_state = np.random.RandomState(seed).get_state()
        self._make_context_current()
        with self._own_global_rng():
            observation = self.suite.reset()
        self._apply_render_settings()
        return self._observation(observation), {}

    def step(self, action: np.ndarray) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        self._make_context_current()
        with self._own_global_rng():
            observation, reward, _, _ = self.suite.step(action)
        info: dict[str, Any] = {"success": bool(self.suite._check_success())}
        if self.reward_view_space is not None:
            info["reward_view"] = self._reward_view(observation)
        return self._observation(observation), float(reward), False, False, info

    def close(self) -> None:
        self.suite.close()


def make_robosuite(cfg: EnvConfig) -> gym.Env:
    """A robosuite task with a time limit (default 500 steps) that terminates on success by default."""
    env = RobosuiteEnv(cfg)
    limit = cfg.max_episode_steps or DEFAULT_MAX_EPISODE_STEPS
    env = gym.wrappers.TimeLimit(env, max_episode_steps=limit)
    return terminate_on_success(env, cfg, family_default=True)
