"""Versioned prompt files for the VLM reward models, and how they are read.

A prompt is a text file named ``<task>_<question>_v<N>.txt`` with Python ``str.format`` placeholders
(``{instruction}``, and whatever else its reader documents). A prompt is never edited in place once a
run has used it: a changed question is a new version, so a model hash (which covers the prompt's
text) and the file name both tell which question labelled a row.

Decision: a relative path is read from the repository root (where the versioned files live), not
from the working directory, so ``reward.prompt=rl/rewards/prompts/lift_success_v2.txt`` means the
same file from any directory; an absolute path is read as is.
"""

from __future__ import annotations

from pathlib import Path

from rl.rewards.base import RewardModelConfigError

REPOSITORY = Path(__file__).resolve().parents[3]


def load_prompt(path: str, **fields: str) -> str:
    """The prompt file's text with its placeholders filled from ``fields``; a missing file, an
    unknown placeholder or a field the text never uses is refused in one line."""
    file = Path(path) if Path(path).is_absolute() else REPOSITORY / path
    if not file.is_file():
        raise RewardModelConfigError(f"reward.prompt: no prompt file {file}")
    text = file.read_text()
    try:
        filled = text.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise RewardModelConfigError(
            f"reward.prompt: {file} has a placeholder it cannot fill: {exc!r}"
        ) from None
    unused = [name for name in fields if "{" + name + "}" not in text]
    if unused:
        raise RewardModelConfigError(f"reward.prompt: {file} never uses {unused}: is it the right prompt?")
    return filled
