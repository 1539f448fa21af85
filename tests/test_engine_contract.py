"""Every engine, and the tests' fake, keeps the `Backend` contract; no model is loaded.

A scan reads `name`, `concurrency` and `max_image_tokens` from whichever engine it runs
on and calls `generate` and `close`: each engine class must declare all of them (on the
class, or annotated there and set in `__init__`), with the protocol's parameters.
The llama.cpp patches keep to the llama-cpp-python versions they were written for.
"""

from __future__ import annotations

import inspect
import logging
from typing import List, Optional, Type

import pytest
from PIL import Image

from qwenocr.engines import llamacpp_patches
from qwenocr.engines.base import Backend
from qwenocr.engines.isolated import IsolatedEngine
from qwenocr.engines.llamacpp import LlamaCppBackend
from qwenocr.engines.llamacpp_batch import LlamaCppBatchBackend
from qwenocr.engines.mlx import MLXBackend
from qwenocr.engines.mlx_batch import MLXBatchBackend
from qwenocr.engines.openai import OpenAIBackend
from tests.support.fake_engine import FakeBackend

# Typed so that mypy checks each class against the protocol, too.
ENGINES: List[Type[Backend]] = [
    MLXBackend,
    MLXBatchBackend,
    LlamaCppBackend,
    LlamaCppBatchBackend,
    IsolatedEngine,
    OpenAIBackend,
    FakeBackend,
]

ATTRIBUTES = sorted(Backend.__annotations__)
METHODS = sorted(name for name, value in vars(Backend).items() if callable(value) and not name.startswith("_"))


def _declared(engine: type, attribute: str) -> bool:
    """Set on the class, or annotated on it (and so set by every `__init__`)."""
    return any(attribute in vars(cls) or attribute in vars(cls).get("__annotations__", {}) for cls in engine.__mro__)


def _missing(engine: type) -> List[str]:
    return [name for name in ATTRIBUTES + METHODS if not _declared(engine, name)]


def test_the_protocol_lists_what_a_scan_reads():
    assert ATTRIBUTES == ["concurrency", "max_image_tokens", "name"]
    assert METHODS == ["close", "generate"]


@pytest.mark.parametrize("engine", ENGINES, ids=lambda engine: engine.__name__)
def test_every_engine_declares_every_member(engine):
    assert _missing(engine) == []


@pytest.mark.parametrize("engine", ENGINES, ids=lambda engine: engine.__name__)
def test_every_engine_takes_what_callers_pass(engine):
    for method in METHODS:
        expected = inspect.signature(getattr(Backend, method)).parameters
        actual = inspect.signature(getattr(engine, method)).parameters
        assert list(actual) == list(expected), f"{engine.__name__}.{method}"
        for name, parameter in expected.items():
            assert actual[name].default == parameter.default, f"{engine.__name__}.{method}({name}=...)"
            assert actual[name].kind == parameter.kind, f"{engine.__name__}.{method}({name})"


@pytest.mark.parametrize(
    "engine, limit",
    [
        (MLXBackend, 16384),
        (LlamaCppBackend, 4096),
        (LlamaCppBatchBackend, 4096),
        (OpenAIBackend, None),
        (FakeBackend, None),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)),
)
def test_max_image_tokens_is_the_engines_own_limit_or_none(engine, limit):
    assert engine.max_image_tokens == limit


def test_engines_built_without_a_model_are_backends():
    fake = FakeBackend()
    server = OpenAIBackend(["http://127.0.0.1:9/v1"])  # no request until the first page
    try:
        for engine in (fake, server):
            assert isinstance(engine, Backend)
            assert isinstance(engine.name, str) and engine.name
            assert isinstance(engine.concurrency, int) and engine.concurrency >= 1
    finally:
        server.close()


def test_the_check_fails_when_a_member_is_missing():
    class Incomplete:
        name = "incomplete"
        concurrency = 1

        def generate(self, image, prompt, settings, on_piece=None): ...

        def close(self) -> None: ...

    assert _missing(Incomplete) == ["max_image_tokens"]
    assert not isinstance(Incomplete(), Backend)


# --- the llama.cpp patches ------------------------------------------------------------


@pytest.fixture
def llama_version(monkeypatch):
    """Pretend to run another llama-cpp-python version (the check is redone for it)."""
    llama_cpp = pytest.importorskip("llama_cpp")

    def pretend(version: str) -> None:
        monkeypatch.setattr(llama_cpp, "__version__", version)
        llamacpp_patches.active.cache_clear()

    yield pretend
    llamacpp_patches.active.cache_clear()  # redone for the real version when next asked


class _StockHandler:
    def load_image(self, image_url: str) -> bytes:
        return b"stock:" + image_url.encode()


class _Handler(llamacpp_patches.PageHandoff, _StockHandler):
    pass


class _Sampler:
    closed = False

    def close(self) -> None:
        self.closed = True


class _Llama:
    def __init__(self) -> None:
        self._sampler: Optional[_Sampler] = _Sampler()


@pytest.mark.parametrize(
    "version, written_for",
    [("0.3.36", True), ("0.3.40", True), ("0.3.36+cu124", True), ("0.3.35", False), ("0.4.0", False), ("dev", False)],
)
def test_patches_know_the_versions_they_were_written_for(version, written_for):
    assert llamacpp_patches.supports(version) is written_for


def test_the_ci_version_is_one_they_were_written_for():
    llama_cpp = pytest.importorskip("llama_cpp")
    assert llamacpp_patches.supports(llama_cpp.__version__)


def test_patches_apply_to_a_version_they_were_written_for(llama_version):
    llama_version("0.3.36")
    handler = _Handler()
    page = Image.new("RGB", (8, 4), "white")
    assert llamacpp_patches.hand_over_page(handler, page) == llamacpp_patches.PAGE_URL
    assert handler.load_image(llamacpp_patches.PAGE_URL).startswith(b"BM")
    assert handler.load_image("file.png") == b"stock:file.png"
    llm = _Llama()
    sampler = llm._sampler
    llamacpp_patches.end_page(llm, handler)
    assert sampler is not None and sampler.closed and llm._sampler is None
    assert handler.page is None


def test_patches_do_nothing_on_another_version_and_say_so_once(llama_version, monkeypatch, caplog):
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from llama_cpp import llama_chat_format

    caplog.set_level(logging.INFO, logger="qwenocr.engines.llamacpp_patches")
    monkeypatch.setattr(llama_chat_format, "ImmutableSandboxedEnvironment", ImmutableSandboxedEnvironment)
    llama_version("0.4.2")
    llamacpp_patches.cache_chat_templates()
    assert llama_chat_format.ImmutableSandboxedEnvironment is ImmutableSandboxedEnvironment
    handler = _Handler()
    assert llamacpp_patches.hand_over_page(handler, Image.new("RGB", (8, 4))).startswith("data:image/png;base64,")
    assert handler.page is None
    llm = _Llama()
    llamacpp_patches.end_page(llm, handler)
    assert llm._sampler is not None and not llm._sampler.closed
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 1 and "llama-cpp-python 0.4.2" in said[0] and "without them" in said[0]


def test_patches_do_nothing_where_an_internal_is_missing(llama_version, caplog):
    caplog.set_level(logging.INFO, logger="qwenocr.engines.llamacpp_patches")
    llama_version("0.3.36")

    class NoLoader(llamacpp_patches.PageHandoff):
        pass

    handler = NoLoader()
    for _ in range(2):
        assert llamacpp_patches.hand_over_page(handler, Image.new("L", (8, 4))).startswith("data:image/png;base64,")
        llamacpp_patches.end_page(object(), handler)
    said = sorted(record.getMessage() for record in caplog.records)
    assert len(said) == 2
    assert "Llama._sampler" in said[0] and "MTMDChatHandler.load_image" in said[1]
