"""The tiny checkpoints are real: each engine loads them and generates from an image.

These tests guard the fixtures the end-to-end tests stand on (built by
tests/fixtures/build_tiny_models.py): mlx-vlm loads the MXFP4 directories and renders the
Qwen 3.5 chat template with thinking off; llama-cpp-python loads the GGUF with its
vision projector and answers a chat completion that carries an image. Random weights
make the text meaningless, so only the plumbing is checked. Each test takes seconds.
"""

from __future__ import annotations

import base64
import io
import json

import pytest

pytestmark = pytest.mark.engine

KINDS = ["dense", "moe"]
NO_THINK_TAIL = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
PROMPT = "Read all the text in the image."
# 256x192 px is 8x6 visual tokens of 32x32 px: small enough for a fast test.
IMAGE_SIZE = (256, 192)
IMAGE_TOKENS = (IMAGE_SIZE[0] // 32) * (IMAGE_SIZE[1] // 32)


def page_image():
    from PIL import Image, ImageDraw

    image = Image.new("RGB", IMAGE_SIZE, "white")
    ImageDraw.Draw(image).text((16, 16), "Invoice 42\nTotal: 17.50", fill="black")
    return image


def test_manifest_lists_every_artefact(tiny_models):
    manifest = json.loads((tiny_models.root / "manifest.json").read_text())
    assert manifest["random_weights"] is True
    for kind in KINDS:
        mlx_config = json.loads((getattr(tiny_models, f"{kind}_mlx") / "config.json").read_text())
        assert mlx_config["quantization"]["mode"] == "mxfp4"
        assert mlx_config["quantization"]["group_size"] == 32
        hf_config = json.loads((getattr(tiny_models, f"{kind}_hf") / "config.json").read_text())
        assert hf_config["text_config"]["layer_types"] == ["linear_attention"] * 3 + ["full_attention"]
        assert getattr(tiny_models, f"{kind}_gguf").stat().st_size > 0
        assert getattr(tiny_models, f"{kind}_mmproj").stat().st_size > 0


@pytest.mark.parametrize("kind", KINDS)
def test_mlx_vlm_loads_and_generates(tiny_models, kind, tmp_path):
    from mlx_vlm import generate, load
    from mlx_vlm.prompt_utils import apply_chat_template

    model, processor = load(str(getattr(tiny_models, f"{kind}_mlx")))
    assert model.config.model_type == ("qwen3_5_moe" if kind == "moe" else "qwen3_5")

    prompt = apply_chat_template(processor, model.config, PROMPT, num_images=1, enable_thinking=False)
    assert prompt.endswith(NO_THINK_TAIL)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in prompt
    # The same template with thinking on opens a think block instead: the switch is real.
    thinking = apply_chat_template(processor, model.config, PROMPT, num_images=1, enable_thinking=True)
    assert thinking.endswith("<|im_start|>assistant\n<think>\n")

    image = tmp_path / "page.png"
    page_image().save(image)
    result = generate(model, processor, prompt, image=[str(image)], max_tokens=4, temperature=0.0, verbose=False)
    assert 1 <= result.generation_tokens <= 4
    assert result.prompt_tokens > IMAGE_TOKENS  # the image's tokens reached the model
    assert isinstance(result.text, str)


@pytest.mark.parametrize("kind", KINDS)
def test_llama_cpp_loads_and_completes_with_image(tiny_models, kind):
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import MTMDChatHandler

    handler = MTMDChatHandler(clip_model_path=str(getattr(tiny_models, f"{kind}_mmproj")), verbose=False)
    llm = Llama(
        model_path=str(getattr(tiny_models, f"{kind}_gguf")),
        chat_handler=handler,
        n_ctx=1024,
        n_threads=2,
        verbose=False,
    )
    try:
        assert llm.metadata["general.architecture"] == ("qwen35moe" if kind == "moe" else "qwen35")
        assert llm.metadata["tokenizer.ggml.pre"] == "qwen35"
        assert "enable_thinking" in llm.metadata["tokenizer.chat_template"]

        buf = io.BytesIO()
        page_image().save(buf, format="PNG")
        uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": uri}},
                    {"type": "text", "text": PROMPT},
                ],
            }
        ]
        out = llm.create_chat_completion(messages=messages, max_tokens=4, temperature=0.0)
        choice = out["choices"][0]
        assert choice["finish_reason"] in ("length", "stop")
        assert isinstance(choice["message"]["content"], str)
        assert 1 <= out["usage"]["completion_tokens"] <= 4
    finally:
        llm.close()
