"""Success from a vision-language model behind an OpenAI-compatible chat-completions server (vLLM,
Ollama, llama.cpp's server, or any server that speaks the protocol): the yes/no question of a
versioned prompt file, asked about the reward camera's frames (RoboFuME's VLM reward, spec §3.4).

Per row, one request: the frames of every reward camera as base64 PNG data URLs (in ``cfg.cameras``
order), then the question. P(yes) comes from the first answer token's log-probabilities when the
server returns them (``logprobs``/``top_logprobs``): the softmax restricted to the yes and no variants
among the top tokens (" Yes", "yes", "NO", ...), so a threshold means something (spec §3.5: the
"Yes"-substring rule has no threshold). Without log-probabilities the answer is parsed strictly:
exactly yes or no after trimming whitespace and punctuation, P(yes) = 1 or 0; anything else is a
malformed answer. Reward = ``success_reward`` where P(yes) >= ``threshold`` (0.5 when unset), else 0.

Failures: an unreachable server at build (a ``GET {url}/models`` probe) or a missing prompt file is
refused in one line (``RewardModelConfigError``); at label time timeouts, connection errors, 429 and
5xx are retried ``retries`` times with exponential backoff (``backoff_s * 2**attempt``), then, like a
malformed answer or a 4xx, raise ``RewardModelError``: the rows stay pending, never a 0, never a crash.

The API key is read from the environment variable named by ``api_key_env`` (absent: no
``Authorization`` header, as local servers expect), never from the config, so it is not saved with
the run. The model hash covers the prompt text, model name, threshold, reward and cameras, not the
URL, key, timeouts or retries (the same model on another host labels the same).

Decisions: rows are asked one request each, in order (a chat completion is one conversation); a
server that batches concurrent requests would go faster with a pool, left for when a slow server is
measured. Frames are sent upright: frames stored bottom-up (robosuite's OpenGL row order) are flipped
when ``bottom_up`` is set, which the loop sets from the env (a VLM reads an upside-down scene badly).
"""

from __future__ import annotations

import abc
import base64
import http.client
import io
import json
import math
import os
import string
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import torch

from rl.rewards.base import LabelInput, Labels, RewardModel, RewardModelConfigError, RewardModelError
from rl.rewards.prompts import load_prompt

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
"""HTTP statuses worth asking again: overload and server-side failures."""
TOP_LOGPROBS = 20
"""How many first-token alternatives to ask for (OpenAI's maximum; vLLM and llama.cpp accept it)."""
ANSWER_TOKENS = 4
"""Room for "Yes." and little else: a longer answer is malformed anyway."""


def png_data_url(image: np.ndarray) -> str:
    """A (H, W, 3) uint8 RGB image as a ``data:image/png;base64,...`` URL (Pillow comes with matplotlib)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), mode="RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def camera_frames(batch: LabelInput, cameras: tuple[str, ...], bottom_up: bool) -> list[list[np.ndarray]]:
    """Per row, the upright (H, W, 3) uint8 frame of each camera; a camera the batch lacks, or a
    frame of another layout, is refused in one line (a wiring error, not a pending row)."""
    per_camera = []
    for camera in cameras:
        frames = batch.frames.get(camera)
        if frames is None:
            raise RewardModelConfigError(
                f"reward model needs camera {camera!r}; the batch has {sorted(batch.frames)}"
            )
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise RewardModelConfigError(
                f"camera {camera!r}: frames must be (B, H, W, 3) uint8, got {tuple(frames.shape)} {frames.dtype}"
            )
        array = frames.cpu().numpy()
        per_camera.append(array[:, ::-1] if bottom_up else array)
    return [[frames[row] for frames in per_camera] for row in range(len(batch))]


def normalised_word(text: str) -> str:
    """``text`` trimmed of whitespace and punctuation, lower-cased: " Yes." -> "yes"."""
    return text.strip().strip(string.punctuation + string.whitespace).lower()


class ChatClient:
    """A minimal OpenAI-compatible chat-completions client on the standard library. Shared by the
    yes/no success model here and KAGI's keypoint proposer."""

    def __init__(
        self, url: str, model: str, api_key_env: str, timeout_s: float, retries: int, backoff_s: float
    ) -> None:
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise RewardModelConfigError(
                f"reward: timeout_s must be > 0, retries and backoff_s >= 0 (got {timeout_s}, {retries}, {backoff_s})"
            )
        self.url, self.model = url.rstrip("/"), model
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        key = os.environ.get(api_key_env, "")
        self.headers = {"Content-Type": "application/json"} | (
            {"Authorization": f"Bearer {key}"} if key else {}
        )

    def probe(self) -> None:
        """One cheap ``GET {url}/models``: refuse to start against a server that is not there."""
        request = urllib.request.Request(self.url + "/models", headers=self.headers, method="GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise RewardModelConfigError(
                f"VLM server at {self.url} refused GET /models: HTTP {exc.code}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RewardModelConfigError(f"VLM server unreachable at {self.url}: {reason}") from None

    def complete(self, content: list[dict[str, Any]], max_tokens: int, logprobs: bool) -> dict[str, Any]:
        """One user message -> the server's first choice (``message`` and maybe ``logprobs``), after
        retrying what is worth retrying; ``RewardModelError`` when it cannot be had."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }
        if logprobs:
            body |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
        data = json.dumps(body).encode()
        failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url + "/chat/completions", data=data, headers=self.headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                failure = f"HTTP {exc.code}"
                if exc.code in RETRY_STATUS:
                    continue
                raise RewardModelError(f"VLM server at {self.url} answered {failure}") from None
            except TimeoutError:
                failure = f"no answer within {self.timeout_s} s"
                continue
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                failure = f"connection failed ({getattr(exc, 'reason', exc)})"
                continue
            return self._first_choice(raw)
        raise RewardModelError(f"VLM server at {self.url}: {failure} after {self.retries + 1} attempts")

    def _first_choice(self, raw: bytes) -> dict[str, Any]:
        try:
            choice = json.loads(raw)["choices"][0]
            if not isinstance(choice["message"]["content"], str):
                raise TypeError("content is not a string")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise RewardModelError(f"VLM server at {self.url} sent a malformed completion: {exc!r}") from None
        return choice


def p_yes_from_choice(choice: dict[str, Any]) -> float:
    """P(yes) from a completion's first token's log-probabilities when they name yes or no, else the
    strict parse of its text (1.0 or 0.0); a malformed answer raises ``RewardModelError``."""
    content = (choice.get("logprobs") or {}).get("content") or []
    if content and isinstance(content[0], dict):
        mass = {"yes": 0.0, "no": 0.0}
        for alternative in content[0].get("top_logprobs") or []:
            word = normalised_word(str(alternative.get("token", "")))
            if word in mass and isinstance(alternative.get("logprob"), int | float):
                mass[word] += math.exp(alternative["logprob"])
        if mass["yes"] + mass["no"] > 0:
            return mass["yes"] / (mass["yes"] + mass["no"])
    answer = normalised_word(choice["message"]["content"])
    if answer not in ("yes", "no"):
        raise RewardModelError(f"VLM answered {choice['message']['content'][:80]!r}, not yes or no")
    return 1.0 if answer == "yes" else 0.0


class YesNoRewardModel(RewardModel):
    """A success model from P(yes) to a yes/no question about the reward frames; subclasses say how
    P(yes) is had (``p_yes``) and what else decides it (``settings``)."""

    bottom_up: bool = False
    """Frames are stored bottom-up (robosuite's OpenGL row order): flip them before the model sees them."""

    def __init__(self, cfg: Any) -> None:
        threshold = 0.5 if cfg.threshold is None else float(cfg.threshold)
        if not 0.0 < threshold <= 1.0:
            raise RewardModelConfigError(
                f"reward.threshold: P(yes) threshold must be in (0, 1], got {threshold}"
            )
        if not cfg.cameras:
            raise RewardModelConfigError("reward.cameras: a VLM reward needs at least one camera")
        self.cameras = tuple(cfg.cameras)
        self.threshold, self.success_reward = threshold, float(cfg.success_reward)
        self.question = load_prompt(cfg.prompt, instruction=cfg.instruction)

    @abc.abstractmethod
    def p_yes(self, images: list[list[np.ndarray]]) -> torch.Tensor:
        """(B,) float32 P(yes) for each row's upright camera frames."""

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """What besides the question and threshold decides the labels (model name, weights hash)."""

    def label(self, batch: LabelInput) -> Labels:
        p = self.p_yes(camera_frames(batch, self.cameras, self.bottom_up))
        success = p >= self.threshold
        reward = success.to(torch.float32) * self.success_reward
        return Labels(reward=reward, success=success, done=success.clone(), info={"p_success": p})

    def identity(self) -> bytes:
        decided_by = {
            "kind": type(self).__name__,
            "question": self.question,
            "threshold": self.threshold,
            "success_reward": self.success_reward,
            "cameras": self.cameras,
        } | self.settings()
        return json.dumps(decided_by, sort_keys=True).encode()


class HttpVlmRewardModel(YesNoRewardModel):
    """The yes/no success model asked over HTTP (module docstring)."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.client = ChatClient(
            cfg.url, cfg.model, cfg.api_key_env, cfg.timeout_s, cfg.retries, cfg.backoff_s
        )
        self.client.probe()

    def p_yes(self, images: list[list[np.ndarray]]) -> torch.Tensor:
        answers = []
        for row in images:
            content = [{"type": "image_url", "image_url": {"url": png_data_url(frame)}} for frame in row]
            content.append({"type": "text", "text": self.question})
            answers.append(p_yes_from_choice(self.client.complete(content, ANSWER_TOKENS, logprobs=True)))
        return torch.tensor(answers, dtype=torch.float32)

    def settings(self) -> dict[str, Any]:
        return {"model": self.client.model}


def build(cfg: Any, device: torch.device) -> HttpVlmRewardModel:
    """``reward=vlm_http``: the server is probed now, so a wrong URL fails before the run starts.
    ``device`` is unused (the server holds the model)."""
    return HttpVlmRewardModel(cfg)
