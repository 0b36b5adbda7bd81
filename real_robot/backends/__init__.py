"""Arm backends. Hardware drivers are optional extras, imported only when their backend is chosen."""

from __future__ import annotations

from typing import Any

from real_robot.backends.base import ArmState, Backend, BackendFault, Frame

__all__ = ["ArmState", "Backend", "BackendFault", "Frame", "make_backend"]


def make_backend(name: str, **kwargs: Any) -> Backend:
    if name == "sim":
        from real_robot.backends.sim import SimBackend, SimFaults

        faults = {k: kwargs.pop(k) for k in list(kwargs) if k in SimFaults.__dataclass_fields__}
        return SimBackend(faults=SimFaults(**faults), **kwargs)
    if name == "franky":
        from real_robot.backends.franky_backend import FrankyBackend

        return FrankyBackend(**kwargs)
    if name == "ur_rtde":
        from real_robot.backends.ur_rtde_backend import URBackend

        return URBackend(**kwargs)
    raise ValueError(f"backend: unknown backend {name!r}; choose sim, franky or ur_rtde")
