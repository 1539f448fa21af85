"""The llama.cpp engine: a GGUF model and its vision projector through llama-cpp-python.

Vision goes through `MTMDChatHandler`, which renders the GGUF's own chat template. The
handler does not pass `enable_thinking` on by itself, so `_ThinkingOffHandler` adds it:
Qwen 3.5's larger models think by default, and thinking makes OCR slow or empty.
The native library logs a lot; its log callbacks are replaced so that nothing is
printed unless --verbose (and stdout is guarded by the caller in any case).
"""

from __future__ import annotations

import base64
import ctypes
import io
from pathlib import Path
from typing import List, Optional

from PIL import Image

from qwenocr.backends.base import Generation, GenerationSettings, PieceCallback
from qwenocr.errors import BackendError, EngineMissingError

# llama.cpp caps Qwen-VL images at 4,096 visual tokens.
MAX_IMAGE_TOKENS = 4096

_log_callbacks: list = []  # keep ctypes callbacks alive for as long as the process runs


def _install_log_filter(verbose: bool) -> None:
    import sys

    import llama_cpp

    @llama_cpp.llama_log_callback
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


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    # PNG keeps text edges exact; the image is already at its final size.
    image.save(buffer, format="PNG", optimize=False, compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


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

        class _ThinkingOffHandler(MTMDChatHandler):
            def __call__(self, **kwargs):
                kwargs["enable_thinking"] = False
                return super().__call__(**kwargs)

        _install_log_filter(verbose)
        try:
            handler = _ThinkingOffHandler(clip_model_path=str(mmproj_path), verbose=verbose)
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
            raise BackendError(f"llama.cpp could not load {Path(model_path).name}: {error}", "check that the GGUF and its mmproj belong together") from None
        self.n_ctx = n_ctx

    def generate(
        self,
        image: Image.Image,
        prompt: str,
        settings: GenerationSettings,
        on_piece: Optional[PieceCallback] = None,
    ) -> Generation:
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": _data_uri(image)}},
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
        return Generation(text="".join(pieces), output_tokens=tokens, prompt_tokens=None, finish_reason=finish)

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.close()
            self._llm = None
