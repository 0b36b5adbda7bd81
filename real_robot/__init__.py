"""The ROS-free arm bridge (see docs/real_robot.md)."""

import os

# The sim arm's camera renders offscreen; without an X display MuJoCo needs EGL, chosen before the
# first ``import mujoco`` (a user's own MUJOCO_GL, e.g. osmesa, wins).
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")
