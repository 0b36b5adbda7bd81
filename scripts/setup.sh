#!/usr/bin/env bash
# Creates .venv and installs o2o into it. Safe to run again (it only installs what is missing).
#   O2O_TORCH   the torch requirement to install first (default: torch==2.13.0, the CPU build);
#               a GPU user sets e.g. O2O_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
#   O2O_EXTRAS  extras to install with the package (default: dev,robosuite,robotics,launchers,ray,vision)
set -euo pipefail
cd "$(dirname "$0")/.."
O2O_TORCH=${O2O_TORCH:-torch==2.13.0}
O2O_EXTRAS=${O2O_EXTRAS:-dev,robosuite,robotics,launchers,ray,vision}
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
# torch first: once it is installed, the package's torch>=2.13.0 is satisfied and pip never
# fetches a different (multi-GB CUDA) build to resolve another dependency.
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q $O2O_TORCH
.venv/bin/python -m pip install -q -e ".[${O2O_EXTRAS}]"
# Headless MuJoCo rendering: EGL (Mesa) or OSMesa. Install the system library when we can.
if ! ldconfig -p 2>/dev/null | grep -q -E 'libOSMesa|libEGL'; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q libosmesa6 libegl1 >/dev/null 2>&1 || echo "setup: could not install libosmesa6/libegl1; offscreen rendering will be unavailable" >&2
  fi
fi
