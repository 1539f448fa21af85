"""The llama.cpp backend in process, on the tiny GGUF: what it changes in the stock
llama-cpp-python chat handler must not change what the model sees.

- Pages reach the handler as BMP bytes instead of PNG data URIs: the model's logits
  after the prompt must be bit-identical to those for the PNG data URI of the same page
  (and differ for another image, so the comparison can fail).
- The chat template is compiled once per process, not once per page.
- Each page's native sampler chain is freed when the page ends.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from tests.support import samples

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def backend(tiny_models):
    from qwenocr.engines.llamacpp import LlamaCppBackend

    engine = LlamaCppBackend(tiny_models.dense_gguf, tiny_models.dense_mmproj, n_ctx=1024)
    yield engine
    engine.close()


def _last_logits(backend) -> np.ndarray:
    import llama_cpp

    llm = backend._llm
    pointer = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)).copy()


def _one_token(backend, image: Image.Image) -> np.ndarray:
    from qwenocr.engines.base import GenerationSettings

    backend.generate(image, "OCR", GenerationSettings(max_tokens=1, temperature=0.0))
    return _last_logits(backend)


def _one_token_from_png_uri(backend, image: Image.Image) -> np.ndarray:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    backend._llm.create_chat_completion(
        messages=[
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": "OCR"}],
            }
        ],
        max_tokens=1,
        temperature=0.0,
    )
    return _last_logits(backend)


def test_bmp_handoff_gives_the_model_the_same_pixels_as_a_png_data_uri(backend):
    page = samples.page_image(1, (448, 576))
    ours = _one_token(backend, page)
    stock = _one_token_from_png_uri(backend, page)
    assert np.array_equal(ours, stock)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (576, 448, 3), dtype=np.uint8))
    assert not np.array_equal(ours, _one_token(backend, noise))


def test_chat_template_is_compiled_once_for_many_pages(backend, monkeypatch):
    from jinja2 import Environment

    from qwenocr.engines.base import GenerationSettings

    page = samples.page_image(2, (448, 576))
    backend.generate(page, "OCR", GenerationSettings(max_tokens=2, temperature=0.0))  # compiles it, if not yet
    compiled = []
    original = Environment.compile

    def counting(self, *args, **kwargs):
        compiled.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Environment, "compile", counting)
    for _ in range(3):
        backend.generate(page, "OCR", GenerationSettings(max_tokens=2, temperature=0.0))
    assert compiled == []


def test_native_sampler_chains_are_freed_page_by_page(backend):
    """llama-cpp-python frees a request's sampler chain only when Python's cyclic
    collector runs; the backend frees it when the page ends, so memory stays flat over
    a long document (docs/performance.md). With the collector off, no chain may be left."""
    import gc

    from llama_cpp._internals import LlamaSampler

    from qwenocr.engines.base import GenerationSettings

    page = samples.page_image(3, (448, 576))
    gc.collect()
    gc.disable()
    try:
        for _ in range(4):
            backend.generate(page, "OCR", GenerationSettings(max_tokens=2, temperature=1.0))
        alive = [obj for obj in gc.get_objects() if isinstance(obj, LlamaSampler) and obj.sampler is not None]
    finally:
        gc.enable()
    assert alive == []
