"""How large a page image to make: the visual-token budget, or an explicit DPI.

Qwen 3.5's vision tower turns every 32x32 pixel block into one token (patch 16, spatial
merge 2), so a page is scaled until its token count just fits the budget
(`max_image_tokens`), and both sides are snapped to multiples of 32. `--dpi` is the
explicit alternative; it is still capped at what the engine accepts.

Pure arithmetic, shared by every kind of document (pdf.py, images.py) and by the render
process (renderguard.py); nothing here opens a file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from qwenocr.defaults import DEFAULT_MAX_IMAGE_TOKENS

# One visual token covers a 32x32 pixel block (patch 16 x spatial merge 2).
TOKEN_SIDE = 32
# The Qwen 3.5 processor's pixel bounds (FACTS §4): at least 64 tokens' worth.
MIN_PIXELS = 65_536
MAX_PIXELS = 16_777_216


@dataclass(frozen=True)
class RenderSettings:
    """How big a page image to make: a visual-token budget, or a fixed DPI."""

    max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS
    dpi: Optional[float] = None
    # The most tokens the engine accepts for one image (llama.cpp caps Qwen-VL at 4096).
    engine_max_tokens: int = MAX_PIXELS // (TOKEN_SIDE * TOKEN_SIDE)
    # Seconds one PDF page may take to render, in a child process that is killed after
    # that (renderguard.py); None renders in this process, without a limit.
    timeout: Optional[float] = None


def image_tokens(width: int, height: int) -> int:
    """Visual tokens the model spends on an image of this size (after 32-px snapping)."""
    return max(1, round(width / TOKEN_SIDE)) * max(1, round(height / TOKEN_SIDE))


def fit_to_budget(width: float, height: float, max_tokens: int) -> tuple[int, int]:
    """The largest (w, h), multiples of 32 with the aspect ratio kept, within max_tokens.

    width/height are the natural size in any unit; the result is in pixels.
    """
    if width <= 0 or height <= 0:
        raise ValueError("page has no area")
    max_tokens = max(MIN_PIXELS // (TOKEN_SIDE * TOKEN_SIDE), max_tokens)
    scale = math.sqrt(max_tokens * TOKEN_SIDE * TOKEN_SIDE / (width * height))
    # Snap down so we never exceed the budget; then grow the short side if there is room.
    w = max(1, math.floor(width * scale / TOKEN_SIDE))
    h = max(1, math.floor(height * scale / TOKEN_SIDE))
    while w * h > max_tokens and (w > 1 or h > 1):
        if w >= h:
            w -= 1
        else:
            h -= 1
    return w * TOKEN_SIDE, h * TOKEN_SIDE


def target_size(width_px: float, height_px: float, settings: RenderSettings) -> tuple[int, int]:
    """Final pixel size for a page of this natural size (pixels at the requested DPI,
    or PDF points / native pixels when the token budget decides)."""
    cap = settings.engine_max_tokens
    if settings.dpi is None:
        return fit_to_budget(width_px, height_px, min(settings.max_image_tokens, cap))
    w = max(TOKEN_SIDE, round(width_px / TOKEN_SIDE) * TOKEN_SIDE)
    h = max(TOKEN_SIDE, round(height_px / TOKEN_SIDE) * TOKEN_SIDE)
    if w * h < MIN_PIXELS:  # below the processor's minimum: grow to it
        return fit_to_budget(width_px, height_px, MIN_PIXELS // (TOKEN_SIDE * TOKEN_SIDE))
    if (w // TOKEN_SIDE) * (h // TOKEN_SIDE) > cap:  # more than the engine takes: shrink
        return fit_to_budget(width_px, height_px, cap)
    return w, h
