"""The MLX engine: mlx-vlm with a local MLX model directory (MXFP4, 8-bit or bf16).

On Apple Silicon it runs on the GPU through Metal; on Linux `mlx[cpu]` runs the same
code on the CPU (that is how the tests drive it). The chat template is applied with
`enable_thinking=False` so that the assistant turn starts with an empty think block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, cast

from PIL import Image

from qwenocr.engines.base import Generation, GenerationSettings, PieceCallback
from qwenocr.errors import BackendError, EngineMissingError

# The Qwen 3.5 processor's upper bound: 16,777,216 pixels = 16,384 visual tokens.
MAX_IMAGE_TOKENS = 16384


class MLXBackend:
    name = "mlx"
    concurrency = 1
    max_image_tokens: Optional[int] = MAX_IMAGE_TOKENS

    def __init__(self, model_dir: Path, *, verbose: bool = False):
        try:
            import mlx.core  # noqa: F401
            from mlx_vlm import load
        except ImportError:
            raise EngineMissingError(
                "the MLX engine (mlx, mlx-vlm) is not installed",
                'install it with: pip install "qwenocr[mlx]" (on Linux: "qwenocr[mlx-cpu]")',
            ) from None
        self.verbose = verbose
        # Any: mlx-vlm annotates its functions more narrowly than what they accept (its
        # processor protocol names methods that the loaded processors lack).
        self.model: Any
        self.processor: Any
        try:
            # Never run code shipped with a model: transformers refuses remote code unless
            # asked, and we say so explicitly. Weights are read from safetensors only.
            self.model, self.processor = load(str(model_dir), trust_remote_code=False)
        except (ValueError, FileNotFoundError, KeyError) as error:
            raise BackendError(
                f"mlx-vlm could not load {model_dir}: {error}",
                "check that it is an MLX model directory with its vision weights",
            ) from None
        self._config = self.model.config
        self._mask: Any = None  # an mlx array, or None when every embedding row has a token
        self._mask_computed = False

    def generate(
        self,
        image: Image.Image,
        prompt: str,
        settings: GenerationSettings,
        on_piece: Optional[PieceCallback] = None,
    ) -> Generation:
        import mlx.core as mx
        from mlx_vlm import stream_generate
        from mlx_vlm.prompt_utils import apply_chat_template

        # A string: messages come back only when asked for with return_messages=True.
        formatted = cast(
            str, apply_chat_template(self.processor, self._config, prompt, num_images=1, enable_thinking=False)
        )
        mx.random.seed(settings.seed)
        kwargs: Dict[str, Any] = dict(max_tokens=settings.max_tokens, temperature=settings.temperature)
        if settings.temperature > 0:
            kwargs.update(top_p=settings.top_p, top_k=settings.top_k or None)
        if settings.repetition_penalty:
            kwargs.update(repetition_penalty=settings.repetition_penalty)
        mask = self._unused_token_mask()
        if mask is not None:
            kwargs["logits_processors"] = [lambda tokens, logits: logits + mask]
        pieces: List[str] = []
        tokens = 0
        prompt_tokens = None
        finish = "stop"
        try:
            images: List[Any] = [image]  # mlx-vlm annotates `image` as paths; it takes PIL images as well
            for result in stream_generate(self.model, self.processor, formatted, image=images, **kwargs):
                tokens = result.generation_tokens or tokens + 1
                prompt_tokens = result.prompt_tokens or prompt_tokens
                if result.text:
                    pieces.append(result.text)
                    if on_piece is not None and on_piece(result.text) is False:
                        finish = "aborted"
                        break
                if result.finish_reason:
                    finish = result.finish_reason
        except (ValueError, RuntimeError) as error:
            raise BackendError(f"mlx-vlm failed on this page: {error}") from None
        if finish not in ("stop", "length", "aborted"):
            finish = "stop"
        if finish == "stop" and tokens >= settings.max_tokens:
            finish = "length"
        return Generation(text="".join(pieces), output_tokens=tokens, prompt_tokens=prompt_tokens, finish_reason=finish)

    def _unused_token_mask(self):
        """-inf for embedding rows the tokenizer has no token for, else None.

        Qwen checkpoints pad the vocabulary (248,320 rows for ~248,077 tokens); greedy
        decoding never picks a padding row, but sampling (the retry after a loop) can,
        and the detokenizer then fails on an id it does not know.
        """
        if not self._mask_computed:
            import mlx.core as mx

            tokenizer = getattr(self.processor, "tokenizer", self.processor)
            known = len(tokenizer)
            rows = getattr(getattr(self._config, "text_config", None), "vocab_size", None) or getattr(
                self._config, "vocab_size", None
            )
            if isinstance(self._config, dict):
                rows = (self._config.get("text_config") or {}).get("vocab_size") or self._config.get("vocab_size")
            if rows and rows > known:
                self._mask = mx.concatenate([mx.zeros((known,)), mx.full((rows - known,), -mx.inf)])
            self._mask_computed = True
        return self._mask

    def close(self) -> None:
        self.model = None
        self.processor = None
