"""Success from a local Hugging Face ``transformers`` image-text model loaded from a directory
(``reward.path``), on CPU or CUDA: the same yes/no question as ``vlm_http`` (``YesNoRewardModel``),
scored without generating. One forward pass over the chat-templated prompt gives the next-token
logits; P(yes) = softmax over the yes and no variants the tokenizer has as single tokens ("yes",
" Yes", "NO", ...): sigmoid(logsumexp(yes logits) - logsumexp(no logits)).

Loading: ``AutoProcessor`` and ``AutoModelForImageTextToText`` with ``local_files_only``, so nothing
is ever downloaded; the directory must hold a model ``save_pretrained`` wrote (config, weights,
tokenizer, processor with a chat template: LLaVA, Idefics3/SmolVLM, Qwen2-VL, PaliGemma-style models).
A missing directory, one that does not load, or a tokenizer without a yes or no token is refused in
one line. The model hash covers every file in the directory (read once at build: a few seconds for a
multi-GB model), so other weights or another processor never share a hash.

Decisions: rows are scored in one batch (the loop's ``label_batch``), padded by the processor, and the
logits are read at each row's last attended position, so left or right padding both work. The
model keeps the dtype it was saved with; the device is what ``build_reward_model`` passes
(``reward.device``, else the run's).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rl.rewards.base import RewardModelConfigError
from rl.rewards.vlm_http import YesNoRewardModel

YES = ("yes", "Yes", "YES", " yes", " Yes", " YES")
NO = ("no", "No", "NO", " no", " No", " NO")


def directory_hash(path: Path) -> str:
    """sha256 over every file's relative name and bytes, in sorted order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def single_token_ids(tokenizer: Any, variants: tuple[str, ...]) -> list[int]:
    """The ids of the variants the tokenizer encodes as one known token."""
    ids = set()
    for text in variants:
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if len(encoded) == 1 and encoded[0] != tokenizer.unk_token_id:
            ids.add(encoded[0])
    return sorted(ids)


class LocalVlmRewardModel(YesNoRewardModel):
    """The yes/no success model run in this process (module docstring)."""

    def __init__(self, cfg: Any, device: torch.device) -> None:
        super().__init__(cfg)
        if not cfg.path or not Path(cfg.path).is_dir():
            raise RewardModelConfigError(f"reward.path: {cfg.path!r} is not a model directory")
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.path = Path(cfg.path).resolve()
        self.device = torch.device(device)
        try:
            self.processor = AutoProcessor.from_pretrained(self.path, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RewardModelConfigError(
                f"reward.path: cannot load a VLM from {self.path}: {reason}"
            ) from None
        self.model.to(self.device).eval()
        if not getattr(self.processor, "chat_template", None):
            raise RewardModelConfigError(
                f"reward.path: {self.path} has no chat template to put the question in"
            )
        tokenizer = self.processor.tokenizer
        self.yes_ids, self.no_ids = single_token_ids(tokenizer, YES), single_token_ids(tokenizer, NO)
        if not self.yes_ids or not self.no_ids or set(self.yes_ids) & set(self.no_ids):
            raise RewardModelConfigError(
                f"reward.path: {self.path}'s tokenizer has no single token for yes and no"
            )
        self.weights = directory_hash(self.path)

    def prompt(self, cameras: int) -> str:
        """The chat-templated user turn: the camera images, then the question; the assistant's turn opened."""
        content = [{"type": "image"} for _ in range(cameras)] + [{"type": "text", "text": self.question}]
        messages = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    @torch.no_grad()
    def p_yes(self, images: list[list[np.ndarray]]) -> torch.Tensor:
        if not images:
            return torch.zeros(0)
        text = self.prompt(len(images[0]))
        inputs = self.processor(
            text=[text] * len(images), images=[list(row) for row in images], return_tensors="pt", padding=True
        ).to(self.device)
        logits = self.model(**inputs).logits.float()
        mask = inputs["attention_mask"]
        last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
        next_token = logits[torch.arange(len(images), device=logits.device), last]
        margin = torch.logsumexp(next_token[:, self.yes_ids], 1) - torch.logsumexp(
            next_token[:, self.no_ids], 1
        )
        return torch.sigmoid(margin).cpu()

    def settings(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def close(self) -> None:
        """Free the model's memory (a GPU holds it otherwise until the process ends)."""
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def build(cfg: Any, device: torch.device) -> LocalVlmRewardModel:
    """``reward=vlm_local``: loads ``reward.path`` onto ``device``."""
    return LocalVlmRewardModel(cfg, device)
