"""The llama.cpp engine: a GGUF model and its vision projector through llama-cpp-python.

Vision goes through `MTMDChatHandler`, which renders the GGUF's own chat template. The
handler does not pass `enable_thinking` on by itself, so `_PageHandler` adds it: Qwen
3.5's larger models think by default, and thinking makes OCR slow or empty.
The native library logs a lot; its log callbacks are replaced so that nothing is
printed unless --verbose (and stdout is guarded by the caller in any case).

What qwenocr changes inside llama-cpp-python to make a page cheaper (the chat template
compiled once, the page handed over as bytes, the sampler chain freed per page) lives in
`llamacpp_patches`, with the versions it was written for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, cast

from PIL import Image

from qwenocr.engines import llamacpp_patches
from qwenocr.engines.base import Generation, GenerationSettings, PieceCallback
from qwenocr.errors import BackendError, EngineMissingError

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_types import ChatCompletionRequestMessage, CreateChatCompletionStreamResponse

# llama.cpp caps Qwen-VL images at 4,096 visual tokens.
MAX_IMAGE_TOKENS = 4096


# The load errors both llama.cpp engines (this one and llamacpp_batch) say the same way.
def engine_missing() -> EngineMissingError:
    return EngineMissingError(
        "the llama.cpp engine (llama-cpp-python) is not installed",
        'install it with: pip install "qwenocr[llama]" (add CMAKE_ARGS="-DGGML_CUDA=on" for NVIDIA GPUs)',
    )


def model_load_error(model_path: Path, reason: object) -> BackendError:
    return BackendError(
        f"llama.cpp could not load {Path(model_path).name}: {reason}",
        "check that the GGUF and its mmproj belong together",
    )


def projector_load_error(mmproj_path: Path, reason: object) -> BackendError:
    return BackendError(
        f"llama.cpp could not load the vision projector {Path(mmproj_path).name}: {reason}",
        "the file may be truncated or damaged: download it again, or pass the mmproj made for this model",
    )


class LlamaCppBackend:
    name = "llama.cpp"
    concurrency = 1
    max_image_tokens: Optional[int] = MAX_IMAGE_TOKENS

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
        experts_on_cpu: bool = False,
    ):
        try:
            import llama_cpp
            from llama_cpp.llama_chat_format import MTMDChatHandler
        except ImportError:
            raise engine_missing() from None

        class _PageHandler(llamacpp_patches.PageHandoff, MTMDChatHandler):
            """Thinking off; page images handed over as bytes where the patches apply."""

            def __call__(self, **kwargs):
                kwargs["enable_thinking"] = False
                return super().__call__(**kwargs)

        llamacpp_patches.install(verbose)
        self._llm: Optional[Llama] = None
        try:
            handler = _PageHandler(clip_model_path=str(mmproj_path), verbose=verbose)
            # Threads: llama.cpp's own default (half the logical CPUs, i.e. the physical
            # cores on most machines) is faster than one thread per hyperthread.
            extra: Dict[str, Any] = {"n_threads": n_threads} if n_threads else {}
            # `Llama` reads its model parameters from llama_cpp.llama_cpp's defaults; an MoE
            # model placed "gpu+cpu-experts" keeps its experts in RAM (llamacpp_patches).
            with (
                llamacpp_patches.without_extra_buffer_types(llama_cpp.llama_cpp),
                llamacpp_patches.experts_on_cpu(llama_cpp.llama_cpp, experts_on_cpu) as self.experts_on_cpu,
            ):
                self._llm = llama_cpp.Llama(
                    model_path=str(model_path),
                    chat_handler=handler,
                    n_ctx=n_ctx,
                    n_gpu_layers=n_gpu_layers,
                    tensor_split=tensor_split,
                    # Flash attention: llama-cpp-python hands it on to the vision (mtmd)
                    # context too, where it keeps the attention scores from being
                    # materialised: at 2,048 visual tokens the 0.8B tower's peak went from
                    # 3.55 to 0.31 GB on a CPU, twice as fast, same text
                    # (docs/memory-measurements.md). The plan counts on it (fit/vision_memory).
                    flash_attn=True,
                    verbose=verbose,
                    **extra,
                )
        except (ValueError, RuntimeError) as error:
            raise model_load_error(model_path, error) from None
        try:
            # The projector too, now: the handler would load it on the first page, and a
            # damaged mmproj would then fail every page instead of the load.
            llamacpp_patches.load_projector(handler, self._llm)
        except (ValueError, RuntimeError) as error:
            self.close()
            raise projector_load_error(mmproj_path, error) from None
        self._handler = handler
        self.n_ctx = n_ctx

    def generate(
        self,
        image: Image.Image,
        prompt: str,
        settings: GenerationSettings,
        on_piece: Optional[PieceCallback] = None,
    ) -> Generation:
        llm = self._llm
        assert llm is not None, "generate() after close()"
        # The handler asks for the image by its URL.
        image_url = llamacpp_patches.hand_over_page(self._handler, image)
        messages: List[ChatCompletionRequestMessage] = [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image_url}},
                    {"type": "text", "text": prompt},
                ],
            }
        ]
        # The KV cache must hold the page's image tokens, the prompt and the output.
        llm.reset()
        response = llm.create_chat_completion(
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
        stream = cast(Iterator["CreateChatCompletionStreamResponse"], response)  # chunks, as stream=True asks
        pieces: List[str] = []
        tokens = 0
        finish = "stop"
        try:
            for chunk in stream:
                choice = chunk["choices"][0]
                content = choice.get("delta", {}).get("content")
                piece = content if isinstance(content, str) else ""
                if piece:
                    tokens += 1
                    pieces.append(piece)
                    if on_piece is not None and on_piece(piece) is False:
                        finish = "aborted"
                        break
                reason = choice.get("finish_reason")
                if reason:
                    finish = reason
        except ValueError as error:  # e.g. the prompt does not fit n_ctx
            raise BackendError(f"llama.cpp failed on this page: {error}") from None
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            llamacpp_patches.end_page(llm, self._handler)
        return Generation(text="".join(pieces), output_tokens=tokens, prompt_tokens=None, finish_reason=finish)

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.close()
            self._llm = None
