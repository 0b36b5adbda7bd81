"""Imports point one way (docs/DESIGN.md, "Who may import whom"): a static walk of every module's
imports, including those inside functions, against the table below."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

# package -> the packages of this repository it may import (itself always). Entry points (below)
# may import anything.
MAY_IMPORT = {
    "rl.nets": set(),
    "rl.data": set(),
    "rl.checkpoint": set(),
    "rl.run_files": set(),
    "rl.buffers": {"rl.data"},
    "rl.agents": {"rl.nets", "rl.buffers"},
    "rl.rewards": {"rl.nets", "rl.data", "rl.checkpoint"},
    "rl.config": {"rl.agents", "rl.rewards", "envs"},
    "rl.loops": {
        "rl.agents",
        "rl.buffers",
        "rl.data",
        "rl.nets",
        "rl.checkpoint",
        "rl.config",
        "rl.rewards",
        "rl.run_files",
        "envs",
    },
    "rl.generate": {"rl.data", "rl.nets", "rl.checkpoint", "envs"},
    "envs": set(),
    "real_robot": {"rl.data"},  # the arm's log converts to a Dataset; never a learner
}
ENTRY_POINTS = {
    "rl.train",
    "rl.sweep",
    "rl.report",
    "rl.quickstart",
    "rl.plot",
    "rl.calibration",
    "rl.data.__main__",
    "rl.rewards.__main__",
}
PACKAGES = ("rl", "envs", "real_robot")


def owner(module: str) -> str | None:
    """The table row a module belongs to: the longest key that is the module or a parent of it."""
    keys = [k for k in MAY_IMPORT if module == k or module.startswith(k + ".")]
    return max(keys, key=len) if keys else None


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def test_every_module_imports_only_what_the_table_allows():
    wrong = []
    for module, path in sorted(modules().items()):
        if module in ENTRY_POINTS or module == "rl":
            continue
        row = owner(module)
        assert row is not None, f"{module} belongs to no row of MAY_IMPORT: add its package to the table"
        for name in sorted(imports_of(path)):
            target = owner(name) or name
            if target != row and target not in MAY_IMPORT[row]:
                wrong.append(f"{module} imports {name}")
    assert not wrong, "imports against the table:\n" + "\n".join(wrong)


def test_the_walk_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from real_robot.client_env import make_bridge_env\n")
    assert imports_of(source) == {"real_robot.client_env"}
    assert owner("rl.loops.off_policy") == "rl.loops" and owner("rl.data.loaders") == "rl.data"


def test_the_analysis_tools_load_without_torch():
    # rl.plot, rl.calibration and rl.report redraw results pages from CSVs: torch's import alone
    # would triple the time a redraw takes.
    code = "import sys, rl.plot, rl.calibration, rl.report; print(sorted({'torch', 'hydra._internal'} & set(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
