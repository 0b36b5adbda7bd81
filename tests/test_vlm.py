"""The VLM success models: an OpenAI-compatible server started here (log-probabilities, strict parse,
malformed answers, 5xx, timeouts, unreachable, auth, images) and a tiny random LLaVA saved to a
temp dir and loaded through the real local path."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from rl.rewards import RewardConfig
from rl.rewards.base import LabelInput, RewardModelConfigError, RewardModelError
from rl.rewards.vlm_http import build, p_yes_from_choice
from rl.rewards.vlm_local import LocalVlmRewardModel


def reward_cfg(**changes) -> RewardConfig:
    return replace(RewardConfig(name="vlm_http", timeout_s=2.0, retries=2, backoff_s=0.001), **changes)


def batch(rows: int, cameras=("agentview",), seed: int = 0) -> LabelInput:
    generator = torch.Generator().manual_seed(seed)
    frames = {
        c: torch.randint(0, 256, (rows, 12, 16, 3), dtype=torch.uint8, generator=generator) for c in cameras
    }
    return LabelInput(
        frames=frames, state={}, episode=torch.zeros(rows, dtype=torch.long), step=torch.arange(rows)
    )


def completion(text: str, top: dict[str, float] | None = None) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if top is not None:
        alternatives = [{"token": t, "logprob": lp} for t, lp in top.items()]
        choice["logprobs"] = {"content": [{"token": text, "logprob": 0.0, "top_logprobs": alternatives}]}
    return {"id": "x", "object": "chat.completion", "choices": [choice]}


class FakeServer:
    """A chat-completions server on 127.0.0.1:0. ``answers`` is a queue of (status, body, delay) for
    POSTs (the last one repeats); every request is recorded."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict | str, float]] = [(200, completion("yes"), 0.0)]
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def reply(self, status: int, body: dict | str) -> None:
                data = (json.dumps(body) if isinstance(body, dict) else body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                server.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers)})
                self.reply(200, {"object": "list", "data": [{"id": "local-vlm"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(
                    {"method": "POST", "path": self.path, "headers": dict(self.headers), "body": body}
                )
                status, answer, delay = (
                    server.answers.pop(0) if len(server.answers) > 1 else server.answers[0]
                )
                time.sleep(delay)
                with contextlib.suppress(OSError):  # the client may have given up waiting
                    self.reply(status, answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def posts(self) -> list[dict]:
        return [r for r in self.requests if r["method"] == "POST"]


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


def test_log_probabilities_give_p_yes_over_the_yes_and_no_variants(server):
    # " Yes" 0.5 + "yes" 0.1 against "No" 0.3; "The" is neither: P(yes) = 0.6 / 0.9
    top = {" Yes": math.log(0.5), "yes": math.log(0.1), "No": math.log(0.3), "The": math.log(0.1)}
    server.answers = [(200, completion("Yes", top), 0.0)]
    model = build(reward_cfg(url=server.url, success_reward=2.0), torch.device("cpu"))
    labels = model.label(batch(2))
    assert torch.allclose(labels.info["p_success"], torch.full((2,), 2 / 3))
    assert labels.reward.tolist() == [2.0, 2.0] and labels.success.tolist() == [True, True]
    assert labels.done.tolist() == [True, True]
    strict = build(reward_cfg(url=server.url, threshold=0.7), torch.device("cpu"))
    assert strict.label(batch(1)).reward.tolist() == [0.0]
    body = server.posts()[0]["body"]
    assert body["logprobs"] is True and body["top_logprobs"] > 0 and body["model"] == "local-vlm"
    assert body["temperature"] == 0.0


def test_without_log_probabilities_the_answer_is_parsed_strictly(server):
    server.answers = [(200, completion(" Yes."), 0.0), (200, completion("no\n"), 0.0)]
    model = build(reward_cfg(url=server.url), torch.device("cpu"))
    labels = model.label(batch(2))
    assert labels.info["p_success"].tolist() == [1.0, 0.0] and labels.reward.tolist() == [1.0, 0.0]
    assert len(server.posts()) == 2  # one request per row


@pytest.mark.parametrize("answer", ["Maybe", "Yes, the cube is lifted", "", "yesno"])
def test_a_malformed_answer_leaves_the_rows_pending(server, answer):
    server.answers = [(200, completion(answer), 0.0)]
    model = build(reward_cfg(url=server.url), torch.device("cpu"))
    with pytest.raises(RewardModelError, match="not yes or no"):
        model.label(batch(1))


def test_a_malformed_completion_is_a_pending_row_not_a_crash(server):
    server.answers = [(200, "<html>proxy error</html>", 0.0)]
    model = build(reward_cfg(url=server.url), torch.device("cpu"))
    with pytest.raises(RewardModelError, match="malformed completion"):
        model.label(batch(1))


def test_top_logprobs_without_yes_or_no_fall_back_to_the_text():
    choice = completion("no", {"The": -0.1, "A": -2.0})["choices"][0]
    assert p_yes_from_choice(choice) == 0.0


def test_a_5xx_is_retried_and_then_succeeds(server):
    server.answers = [(503, {"error": "overloaded"}, 0.0), (200, completion("yes"), 0.0)]
    model = build(reward_cfg(url=server.url, retries=2), torch.device("cpu"))
    assert model.label(batch(1)).success.tolist() == [True]
    assert len(server.posts()) == 2


def test_a_4xx_is_not_retried(server):
    server.answers = [(400, {"error": "bad request"}, 0.0)]
    model = build(reward_cfg(url=server.url, retries=3), torch.device("cpu"))
    with pytest.raises(RewardModelError, match="HTTP 400"):
        model.label(batch(1))
    assert len(server.posts()) == 1


def test_a_server_slower_than_the_timeout_is_retried_then_the_rows_wait(server):
    server.answers = [(200, completion("yes"), 0.6)]
    model = build(reward_cfg(url=server.url, timeout_s=0.15, retries=1), torch.device("cpu"))
    with pytest.raises(RewardModelError, match="after 2 attempts"):
        model.label(batch(1))
    assert len(server.posts()) == 2


def test_an_unreachable_server_is_refused_at_build_in_one_line(server):
    url = server.url
    server.httpd.shutdown()
    server.httpd.server_close()
    with pytest.raises(RewardModelConfigError, match="unreachable") as refused:
        build(reward_cfg(url=url, timeout_s=0.5), torch.device("cpu"))
    assert "\n" not in str(refused.value)


def test_a_missing_prompt_file_is_refused_in_one_line_before_any_request(server, tmp_path):
    missing = tmp_path / "lift_success_v9.txt"
    with pytest.raises(RewardModelConfigError, match="no prompt file") as refused:
        build(reward_cfg(url=server.url, prompt=str(missing)), torch.device("cpu"))
    assert "\n" not in str(refused.value) and server.requests == []


def test_the_api_key_comes_from_the_named_environment_variable(server, monkeypatch):
    monkeypatch.setenv("O2O_TEST_VLM_KEY", "s3cret")
    build(reward_cfg(url=server.url, api_key_env="O2O_TEST_VLM_KEY"), torch.device("cpu")).label(batch(1))
    assert all(r["headers"]["Authorization"] == "Bearer s3cret" for r in server.requests)
    monkeypatch.delenv("O2O_TEST_VLM_KEY")
    server.requests.clear()
    build(reward_cfg(url=server.url, api_key_env="O2O_TEST_VLM_KEY"), torch.device("cpu")).label(batch(1))
    assert server.requests and all("Authorization" not in r["headers"] for r in server.requests)


def test_frames_arrive_as_png_data_urls_of_every_camera_upright(server):
    model = build(reward_cfg(url=server.url, cameras=["agentview", "wrist"]), torch.device("cpu"))
    sent = batch(2, cameras=("agentview", "wrist"), seed=3)
    model.bottom_up = True
    model.label(sent)
    for row, request in enumerate(server.posts()):
        content = request["body"]["messages"][0]["content"]
        assert [part["type"] for part in content] == ["image_url", "image_url", "text"]
        assert content[2]["text"] == model.question and "lift the red cube" in model.question
        for camera, part in zip(("agentview", "wrist"), content[:2], strict=True):
            prefix, payload = part["image_url"]["url"].split(",", 1)
            assert prefix == "data:image/png;base64"
            decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))))
            assert np.array_equal(decoded, sent.frames[camera][row].numpy()[::-1])  # flipped upright


def test_a_batch_without_the_camera_is_refused_in_one_line(server):
    model = build(reward_cfg(url=server.url, cameras=["frontview"]), torch.device("cpu"))
    with pytest.raises(RewardModelConfigError, match="needs camera 'frontview'"):
        model.label(batch(1))


def test_the_hash_covers_prompt_model_and_threshold_not_the_url(server, tmp_path):
    def model_hash(**changes) -> str:
        return build(reward_cfg(**({"url": server.url} | changes)), torch.device("cpu")).model_hash

    base = model_hash()
    assert model_hash(url=server.url + "/", timeout_s=9.0, retries=0) == base
    assert model_hash(threshold=0.6) != base
    assert model_hash(model="other-vlm") != base
    assert model_hash(instruction="open the door") != base
    prompt = tmp_path / "lift_success_v2.txt"
    prompt.write_text("Is it done? {instruction}")
    assert model_hash(prompt=str(prompt)) != base


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"timeout_s": 0.0}, "timeout_s"),
        ({"cameras": []}, "at least one camera"),
    ],
)
def test_bad_settings_are_refused_in_one_line(server, changes, message):
    with pytest.raises(RewardModelConfigError, match=message):
        build(reward_cfg(url=server.url, **changes), torch.device("cpu"))


# --- the local back end: a tiny random LLaVA saved with save_pretrained, loaded from its directory ---

WORDS = ["<unk>", "<pad>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:", "yes", "no", "Yes", "No", "cube"]
CHAT_TEMPLATE = (
    "{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
    "{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def save_tiny_llava(path, seed: int) -> None:
    """A 1-layer CLIP vision tower and 1-layer Llama with a word-level tokenizer built here."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    vocab = {word: i for i, word in enumerate(WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    text = LlamaConfig(
        vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(
        LlavaConfig(vision_config=vision, text_config=text, image_token_index=4)
    ).save_pretrained(path)
    images = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    LlavaProcessor(
        image_processor=images, tokenizer=fast, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    ).save_pretrained(path)  # fmt: skip


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_llava")
    save_tiny_llava(path, seed=0)
    return path


def local_cfg(path, **changes) -> RewardConfig:
    return replace(RewardConfig(name="vlm_local", path=str(path), cameras=["agentview", "wrist"]), **changes)


def test_the_local_vlm_gives_a_deterministic_probability_and_thresholds_it(tiny_vlm):
    model = LocalVlmRewardModel(local_cfg(tiny_vlm), torch.device("cpu"))
    rows = batch(3, cameras=("agentview", "wrist"), seed=1)
    p = model.label(rows).info["p_success"]
    assert p.shape == (3,) and p.dtype == torch.float32 and bool(((p > 0) & (p < 1)).all())
    again = LocalVlmRewardModel(local_cfg(tiny_vlm), torch.device("cpu"))
    assert torch.equal(again.label(rows).info["p_success"], p)
    one = LocalVlmRewardModel(local_cfg(tiny_vlm), torch.device("cpu")).label(
        LabelInput({c: f[1:2] for c, f in rows.frames.items()}, {}, rows.episode[:1], rows.step[:1])
    )
    assert torch.allclose(one.info["p_success"], p[1:2], atol=1e-6)  # a row's P(yes) is its own
    at = float(p[0])
    assert LocalVlmRewardModel(local_cfg(tiny_vlm, threshold=at), torch.device("cpu")).label(rows).success[0]
    above = LocalVlmRewardModel(local_cfg(tiny_vlm, threshold=at + 1e-4), torch.device("cpu")).label(rows)
    assert not above.success[0] and above.reward[0] == 0.0
    assert model.label(batch(0, cameras=("agentview", "wrist"))).reward.shape == (0,)


def test_p_yes_is_the_softmax_over_the_yes_and_no_tokens(tiny_vlm, monkeypatch):
    model = LocalVlmRewardModel(local_cfg(tiny_vlm), torch.device("cpu"))
    assert model.yes_ids == [7, 9] and model.no_ids == [8, 10]

    def forward(**inputs):  # next-token probabilities yes .3, Yes .1, no .2, cube .4 (No ~0)
        logits = torch.full((*inputs["input_ids"].shape, len(WORDS)), -60.0)
        logits[:, -1, [7, 9, 8, 11]] = torch.log(torch.tensor([0.3, 0.1, 0.2, 0.4]))
        return type("Output", (), {"logits": logits})()

    monkeypatch.setattr(model.model, "forward", forward)
    p = model.label(batch(2, cameras=("agentview", "wrist"))).info["p_success"]
    assert torch.allclose(p, torch.full((2,), 0.4 / 0.6), atol=1e-5)  # "cube" takes no part


def test_a_missing_or_invalid_model_directory_is_refused_in_one_line(tmp_path):
    with pytest.raises(RewardModelConfigError, match="not a model directory"):
        LocalVlmRewardModel(local_cfg(tmp_path / "nowhere"), torch.device("cpu"))
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(RewardModelConfigError, match="cannot load a VLM") as refused:
        LocalVlmRewardModel(local_cfg(tmp_path), torch.device("cpu"))
    assert "\n" not in str(refused.value)


def test_the_local_hash_covers_the_weights(tiny_vlm, tmp_path):
    save_tiny_llava(tmp_path, seed=1)
    first = LocalVlmRewardModel(local_cfg(tiny_vlm), torch.device("cpu")).model_hash
    assert LocalVlmRewardModel(local_cfg(tiny_vlm), torch.device("cpu")).model_hash == first
    assert LocalVlmRewardModel(local_cfg(tmp_path), torch.device("cpu")).model_hash != first
