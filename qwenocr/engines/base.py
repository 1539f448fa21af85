"""The one interface every engine implements: run one page, say its limits, close.

A backend is built with its model already loaded (`engines.factory` builds them) and
turns (page image, prompt, settings) into text. It streams pieces of text to an
`on_piece` callback as they are generated; the callback returns False to stop the
generation early (the repetition guard and the page timeout use this). Backends never
print: anything the native library writes is kept off stdout by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol, runtime_checkable

from PIL import Image

from qwenocr.defaults import DEFAULT_MAX_OUTPUT_TOKENS

# Called with each new piece of text; return False to stop generating.
PieceCallback = Callable[[str], bool]


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings for one page. Greedy by default: OCR wants the likeliest text."""

    max_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
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


@runtime_checkable
class Backend(Protocol):
    """An inference engine with its model loaded: everything a scan reads from one.

    tests/test_engine_contract.py checks every engine class (and the tests' fake) against
    this list, so an attribute a caller reads cannot go missing from one engine.
    """

    name: str  # "mlx", "llama.cpp", "openai", "fake": what messages call the engine
    # How many pages may be in flight at once (1 for local engines; N for servers).
    concurrency: int
    # The most visual tokens per page the engine accepts (pages are rendered no larger);
    # None when the engine sets no limit of its own (a server decides for itself).
    max_image_tokens: Optional[int]

    def generate(
        self,
        image: Image.Image,
        prompt: str,
        settings: GenerationSettings,
        on_piece: Optional[PieceCallback] = None,
    ) -> Generation:
        """Read one page; thread-safe up to `concurrency` calls at once."""
        ...

    def close(self) -> None:
        """Free the model (or the server connections); in-flight calls may fail."""
        ...
