"""The llama.cpp engine: a GGUF model and its vision projector through llama-cpp-python.

Vision goes through `MTMDChatHandler`, which renders the GGUF's own chat template. The
handler does not pass `enable_thinking` on by itself, so `_PageHandler` adds it: Qwen
3.5's larger models think by default, and thinking makes OCR slow or empty.
The native library logs a lot; its log callbacks are replaced so that nothing is
printed unless --verbose (and stdout is guarded by the caller in any case).

Two costs of the stock handler are avoided, because with a small model they were most
of qwenocr's overhead per page (docs/performance.md):
- it compiles the chat template anew for every request (about 35 ms for Qwen 3.5's
  template on a 2-core machine): `_cache_chat_templates` compiles each one once;
- it takes images as data URIs, so a page would be PNG-encoded, base64-encoded and
  decoded again (about 40 ms at 1,536 visual tokens): the page goes to the handler as
  an uncompressed BMP in memory instead (about 3 ms), never as a string.
"""

from __future__ import annotations

import ctypes
import io
from pathlib import Path
from typing import List, Optional

from PIL import Image

from qwenocr.engines.base import Generation, GenerationSettings, PieceCallback
from qwenocr.errors import BackendError, EngineMissingError

# llama.cpp caps Qwen-VL images at 4,096 visual tokens.
MAX_IMAGE_TOKENS = 4096

_log_callbacks: list = []  # keep ctypes callbacks alive for as long as the process runs


def _install_log_filter(verbose: bool) -> None:
    import sys

    import llama_cpp

    from qwenocr.interrupts import register_callback

    @llama_cpp.llama_log_callback
    @register_callback  # C calls it: a Ctrl-C must not be raised (and lost) in here
    def forward(level: int, text: bytes, user_data) -> None:
        if verbose:
            sys.stderr.write(text.decode("utf-8", "replace"))

    _log_callbacks.append(forward)
    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
    try:
        import llama_cpp.mtmd_cpp as mtmd_cpp

        mtmd_cpp.mtmd_log_set(forward, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(forward, ctypes.c_void_p(0))
    except (ImportError, AttributeError):
        pass


def _bmp_bytes(image: Image.Image) -> bytes:
    """The page as an uncompressed BMP: lossless like PNG, but encoding is a copy."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="BMP")
    return buffer.getvalue()


def _free_sampler(llm) -> None:
    """Free the page's native sampler chain now, not at some later garbage collection.

    llama-cpp-python makes a new sampler chain for every request and frees the old one
    only through a reference cycle (the chain's free callback closes over its owner), so
    chains pile up until Python's cyclic collector runs, each holding native buffers the
    size of the vocabulary (Qwen 3.5: 248k entries). Over a long document that made the
    peak RSS climb by tens of MB (docs/performance.md); freed per page, it stays flat.
    The next request makes its own chain, as it always does.
    """
    sampler = getattr(llm, "_sampler", None)
    if sampler is not None and hasattr(sampler, "close"):
        sampler.close()
        llm._sampler = None


_PAGE_URL = "qwenocr:page"  # what the messages name the page by (see _PageHandler)

_template_cache: dict = {}


def _cache_chat_templates() -> None:
    """Make llama-cpp-python's chat handlers compile each chat template once per process.

    `MTMDChatHandler.__call__` builds a fresh sandboxed Jinja environment and compiles
    the GGUF's template on every request. A compiled template does not change, so the
    environment class it uses is swapped (in this process only) for one whose
    `from_string` returns the template compiled before for the same source and the same
    settings. If a llama-cpp-python release no longer has that name, nothing is changed
    and requests simply compile as before.
    """
    try:
        from llama_cpp import llama_chat_format
    except ImportError:
        return
    base = getattr(llama_chat_format, "ImmutableSandboxedEnvironment", None)
    if base is None or getattr(base, "_qwenocr_caching", False):
        return

    class CachingEnvironment(base):  # type: ignore[misc, valid-type]
        _qwenocr_caching = True

        def from_string(self, source, globals=None, template_class=None):
            if globals or template_class is not None or not isinstance(source, str):
                return super().from_string(source, globals, template_class)
            key = (
                source,
                self.trim_blocks,
                self.lstrip_blocks,
                tuple(sorted(self.extensions)),
                tuple(sorted((name, id(function)) for name, function in self.filters.items())),
            )
            template = _template_cache.get(key)
            if template is None:
                template = _template_cache[key] = super().from_string(source)
            return template

    llama_chat_format.ImmutableSandboxedEnvironment = CachingEnvironment


class LlamaCppBackend:
    name = "llama.cpp"
    concurrency = 1
    max_image_tokens = MAX_IMAGE_TOKENS

    def __init__(
        self,
        model_path: Path,
        mmproj_path: Path,
        *,
        n_ctx: int = 8192,
        n_gpu_layers: int = -1,
        tensor_split: Optional[List[float]] = None,
        n_threads: Optional[int] = None,
        verbose: bool = False,
    ):
        try:
            import llama_cpp
            from llama_cpp.llama_chat_format import MTMDChatHandler
        except ImportError:
            raise EngineMissingError(
                "the llama.cpp engine (llama-cpp-python) is not installed",
                'install it with: pip install "qwenocr[llama]" (add CMAKE_ARGS="-DGGML_CUDA=on" for NVIDIA GPUs)',
            ) from None

        class _PageHandler(MTMDChatHandler):
            """Thinking off; page images handed over as bytes, not data URIs."""

            page: Optional[bytes] = None  # the BMP of the page being read

            def __call__(self, **kwargs):
                kwargs["enable_thinking"] = False
                return super().__call__(**kwargs)

            def load_image(self, image_url: str) -> bytes:
                return self.page if image_url == _PAGE_URL and self.page is not None else super().load_image(image_url)

        _install_log_filter(verbose)
        _cache_chat_templates()
        try:
            handler = _PageHandler(clip_model_path=str(mmproj_path), verbose=verbose)
            # Threads: llama.cpp's own default (half the logical CPUs, i.e. the physical
            # cores on most machines) is faster than one thread per hyperthread.
            extra = {"n_threads": n_threads} if n_threads else {}
            self._llm = llama_cpp.Llama(
                model_path=str(model_path),
                chat_handler=handler,
                n_ctx=n_ctx,
                n_gpu_layers=n_gpu_layers,
                tensor_split=tensor_split,
                verbose=verbose,
                **extra,
            )
        except (ValueError, RuntimeError) as error:
            raise BackendError(
                f"llama.cpp could not load {Path(model_path).name}: {error}",
                "check that the GGUF and its mmproj belong together",
            ) from None
        self._handler = handler
        self.n_ctx = n_ctx

    def generate(
        self,
        image: Image.Image,
        prompt: str,
        settings: GenerationSettings,
        on_piece: Optional[PieceCallback] = None,
    ) -> Generation:
        # The handler asks for the image by its URL; this one names the bytes it holds.
        self._handler.page = _bmp_bytes(image)
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": _PAGE_URL}},
                    {"type": "text", "text": prompt},
                ],
            }
        ]
        # The KV cache must hold the page's image tokens, the prompt and the output.
        self._llm.reset()
        stream = self._llm.create_chat_completion(
            messages=messages,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            min_p=0.0,
            repeat_penalty=settings.repetition_penalty or 1.0,
            seed=settings.seed,
            stream=True,
        )
        pieces: List[str] = []
        tokens = 0
        finish = "stop"
        try:
            for chunk in stream:
                choice = chunk["choices"][0]
                piece = choice.get("delta", {}).get("content") or ""
                if piece:
                    tokens += 1
                    pieces.append(piece)
                    if on_piece is not None and on_piece(piece) is False:
                        finish = "aborted"
                        break
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        except ValueError as error:  # e.g. the prompt does not fit n_ctx
            raise BackendError(f"llama.cpp failed on this page: {error}") from None
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            _free_sampler(self._llm)
            self._handler.page = None
        return Generation(text="".join(pieces), output_tokens=tokens, prompt_tokens=None, finish_reason=finish)

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.close()
            self._llm = None
