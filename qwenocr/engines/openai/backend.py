"""The engine for OpenAI-compatible servers: each page one streamed chat completion.

The page image goes out as a `data:` URI (`encode`), thinking is switched off through
`chat_template_kwargs`, and the answer is read as it streams (`stream`). Which server,
retries and the key's secrecy are the client's work (`client`).

The page's deadline reaches the engine as a `deadline` attribute on `on_piece`
(`time.monotonic()` seconds; the pipeline sets it for `--page-timeout`): a server can
keep a request busy without sending page text, so the engine must stop on its own.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from typing import Any, Callable, Dict, Optional, Sequence, Union

from qwenocr.engines.base import Generation, GenerationSettings, PieceCallback
from qwenocr.engines.openai.client import (
    BACKOFF_BASE_S,
    BACKOFF_MAX_S,
    COOLDOWN_S,
    ERROR_BODY_LIMIT,
    JSON_BODY_LIMIT,
    Budget,
    DeadlinePassed,
    Server,
    ServerClient,
    read_limited,
    server_list,
)
from qwenocr.engines.openai.encode import encode_image
from qwenocr.engines.openai.stream import Progress, from_json, read_stream
from qwenocr.errors import BackendError, UsageError

log = logging.getLogger(__name__)


class OpenAIBackend(ServerClient):
    """Pages as chat completions on one or more OpenAI-compatible servers."""

    name = "openai"
    concurrency: int
    # The server decides how large an image it takes; pages are rendered within the
    # renderer's own cap and the --max-image-tokens budget.
    max_image_tokens: Optional[int] = None

    def __init__(
        self,
        base_urls: Union[str, Sequence[str]],
        model: Optional[str] = None,
        api_key: Optional[str] = None,
        concurrency: int = 4,
        timeout: float = 600,
        max_retries: int = 5,
        *,
        image_format: str = "auto",
        cooldown: float = COOLDOWN_S,
        backoff_base: float = BACKOFF_BASE_S,
        backoff_max: float = BACKOFF_MAX_S,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        adaptive: bool = True,
    ):
        base_urls = server_list(base_urls)
        if concurrency < 1:
            raise UsageError(f"--concurrency must be at least 1 (got {concurrency})")
        if image_format not in ("auto", "png", "jpeg"):
            raise UsageError(f"image format must be auto, png or jpeg (got {image_format!r})")
        super().__init__(
            base_urls,
            api_key,
            timeout,
            max_retries,
            cooldown=cooldown,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            sleep=sleep,
            clock=clock,
            concurrency=concurrency,
            adaptive=adaptive,
        )
        self.concurrency = int(concurrency)
        self.image_format = image_format
        self._model = model or None
        self._model_lock = threading.Lock()

    def __repr__(self) -> str:  # never the key
        urls = ", ".join(s.display for s in self._pool.servers)
        return f"OpenAIBackend([{urls}], model={self._model!r}, concurrency={self.concurrency})"

    @property
    def model(self) -> Optional[str]:
        return self._model

    def resolve_model(self) -> str:
        """The model to request: the one given, else the first the server lists.

        Call it once before a run to fail early when no server answers; `generate`
        calls it too. Thread-safe; asks the server only once.
        """
        with self._model_lock:
            if self._model is None:
                models = self.list_models()
                if not models:
                    raise BackendError(
                        "the server lists no models",
                        hint="pass the model name with --api-model",
                    )
                self._model = models[0]
                log.info("using model %s (first of %d listed by the server)", self._model, len(models))
            return self._model

    def generate(
        self,
        image: Any,
        prompt: str,
        settings: GenerationSettings,
        on_piece: Optional[PieceCallback] = None,
    ) -> Generation:
        model = self.resolve_model()
        body = json.dumps(self.request_body(model, encode_image(image, self.image_format), prompt, settings)).encode()
        progress = Progress()  # shared by the attempts: a retry does not repeat what on_piece saw
        deadline = page_deadline(on_piece)

        def attempt(server: Server) -> Generation:
            return self._stream_once(server, body, on_piece, progress, deadline)

        try:
            return self._with_retries(attempt, what="generating", deadline=deadline)
        except DeadlinePassed as passed:
            # The page's time is up: what the last attempt produced, ended like an abort
            # from on_piece (the pipeline marks the page `timeout`).
            if isinstance(passed.partial, Generation):
                return passed.partial
            return Generation(text="", output_tokens=0, prompt_tokens=None, finish_reason="aborted")

    @staticmethod
    def request_body(model: str, image_url: str, prompt: str, settings: GenerationSettings) -> Dict[str, Any]:
        """The chat-completions request for one page (public so tests and docs can show it)."""
        body: Dict[str, Any] = {
            "model": model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": image_url}},
                        {"type": "text", "text": prompt},
                    ],
                }
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "seed": settings.seed,
            # Qwen 3.5 27B and larger think by default; OCR needs the answer only.
            # vLLM, SGLang and llama.cpp's server pass this to the chat template.
            "chat_template_kwargs": {"enable_thinking": False},
        }
        if settings.top_k and settings.top_k > 0:
            body["top_k"] = settings.top_k  # vLLM, SGLang, llama.cpp, Ollama accept it
        if settings.repetition_penalty is not None:
            # vLLM/SGLang spell it repetition_penalty, llama.cpp repeat_penalty; each
            # server ignores the other's spelling.
            body["repetition_penalty"] = settings.repetition_penalty
            body["repeat_penalty"] = settings.repetition_penalty
        return body

    def _stream_once(
        self,
        server: Server,
        body: bytes,
        on_piece: Optional[PieceCallback],
        progress: Progress,
        deadline: Optional[float] = None,
    ) -> Generation:
        def read(response: http.client.HTTPResponse, budget: Budget) -> Generation:
            if response.status != 200:
                error = read_limited(response, ERROR_BODY_LIMIT, "the error", budget, truncate=True)
                self._raise_for_status(server, response.status, response.headers, error)
            content_type = response.getheader("Content-Type", "") or ""
            if "text/event-stream" not in content_type:
                # Some servers ignore stream=true and answer in one JSON document.
                raw = read_limited(response, JSON_BODY_LIMIT, "the answer", budget)
                return from_json(raw, on_piece, progress)
            return read_stream(response, on_piece, progress, budget)

        return self._exchange(
            server,
            "POST",
            "/chat/completions",
            body,
            self.timeout,
            read,
            stream=True,
            tls_hint="use the server's proper certificate, or http:// inside a trusted network",
            page_deadline=deadline,
        )


def page_deadline(on_piece: Optional[PieceCallback]) -> Optional[float]:
    """The page's deadline carried by `on_piece` (see the module docstring), if any."""
    value = getattr(on_piece, "deadline", None)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
