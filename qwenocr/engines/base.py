"""The one interface every engine implements: load, run one page, close.

A backend turns (page image, prompt, settings) into text. It streams pieces of text to
an `on_piece` callback as they are generated; the callback returns False to stop the
generation early (the repetition guard and the page timeout use this). Backends never
print: anything the native library writes is kept off stdout by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol

from PIL import Image

# Called with each new piece of text; return False to stop generating.
PieceCallback = Callable[[str], bool]


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings for one page. Greedy by default: OCR wants the likeliest text."""

    max_tokens: int = 4096
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: Optional[float] = None
    seed: int = 0


@dataclass
class Generation:
    """What one page's generation produced."""

    text: str
    output_tokens: int
    prompt_tokens: Optional[int] = None
    # "stop" (the model ended), "length" (max_tokens reached), "aborted" (on_piece said stop)
    finish_reason: str = "stop"


class Backend(Protocol):
    """An inference engine with a loaded model."""

    name: str  # "mlx", "llama.cpp", "openai", "fake"
    # How many pages may be in flight at once (1 for local engines; N for servers).
    concurrency: int

    def generate(
        self,
        image: Image.Image,
        prompt: str,
        settings: GenerationSettings,
        on_piece: Optional[PieceCallback] = None,
    ) -> Generation: ...

    def close(self) -> None: ...
