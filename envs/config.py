"""The environment config: the contract between Hydra's ``env/`` group and ``envs.make``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EnvConfig:
    name: str = "hopper"
    """Short name: run directories, plots and the D4RL reference-score table use it."""
    id: str = "Hopper-v5"
    """The simulator's id: a Gymnasium id (gymnasium, robotics) or a robosuite task name (Lift, ...)."""
    family: str = "gymnasium"
    """Which factory builds it: gymnasium (MuJoCo v5), robotics (gymnasium-robotics), robosuite."""
    max_episode_steps: int | None = None
    """Override the registered time limit; None keeps the registered (or family's) one."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the simulator's constructor (they override family conventions)."""
    score_name: str | None = "hopper"
    """Key into the D4RL reference-score table for normalised scores; None when the env has none."""
    reward_scale: float = 1.0
    """Rewards enter every buffer as ``reward * reward_scale + reward_bias`` (applied once, there)."""
    reward_bias: float = 0.0
    """Added after ``reward_scale``; see there."""
    terminate_on_success: bool | None = None
    """End the episode at the first step with ``info["success"]``; None keeps the family's convention
    (AntMaze and robosuite: yes; the others: no)."""
    obs_keys: list[str] | None = None
    """robotics: which keys of a dict observation to concatenate, in this order; None keeps the
    family's D4RL/Minari layout (e.g. AntMaze ``[achieved_goal, observation]``)."""
    obs_mode: str = "state"
    """robosuite: ``state`` (one flat vector) or ``pixels`` (a dict of camera images plus ``state``)."""
    cameras: list[str] = field(default_factory=lambda: ["agentview", "robot0_eye_in_hand"])
    """robosuite pixels: camera names, each an ``(H, W, 3)`` uint8 image under its own key."""
    image_size: int = 84
    """robosuite pixels: height and width of every camera image."""
    fast_render: bool = True
    """robosuite pixels: RL render settings on CPU (no multisampling, shadows, reflections, skybox)."""
    robot: str = "Panda"
    """robosuite: the arm."""
    controller: str = "OSC_POSE"
    """robosuite: the arm's part controller (OSC_POSE, OSC_POSITION, JOINT_VELOCITY, ...)."""
    action_chunk: int = 1
    """Actions per agent step, executed open loop (``envs/chunking.py``): the agent's action is a flat
    chunk of ``action_chunk`` env actions. 1: no chunking."""
    obs_history: int = 1
    """Observations the agent sees per step, oldest first (``envs/chunking.py``). 1: the current one."""
    reward_cameras: list[str] = field(default_factory=list)
    """The reward camera(s): rendered for the state each step reached and handed to the loop beside
    the observation (``info["reward_view"]``), never to the policy. robosuite only; the run sets it
    from ``reward.cameras`` when a reward model reads frames."""
    reward_state: bool = False
    """Also hand the loop the env's named state (``eef_pos``, ``gripper_qpos``, object poses such as
    ``cube_pos``) beside the reward frames; set by the run when the reward model reads state."""
    reward_image_size: int = 84
    """Height and width of the reward camera images (the run sets it from ``reward.image_size``)."""
    reward_depth: bool = False
    """Also render each reward camera's depth (``<camera>_depth``, (H, W) float32 metres)."""
