"""Tell a blank page from the pixels, so the model is never asked to read one.

Vision-language models asked to transcribe an empty page tend to invent text (olmOCR
shipped that bug), and a blank page still costs a full generation. A page is blank when,
once its slow variations are taken away, almost no pixel stands out from the paper.

The criterion
-------------
1. Thumbnail. Grayscale (transparency on white paper), box-averaged to about twice the
   final size, then each 2x2 cell replaced by its second-darkest value (and, for light
   ink on dark pages such as slides, its second-brightest), for a long side of about
   500 pixels (factor 4 for a 1600x2000 render). Averaging dilutes what is small in
   both directions (noise, JPEG mosquito noise, a dust speck) by the area, a stroke
   only by its width; the rank step then ignores a pixel that stands out alone in its
   cell, while a stroke, crossing at least two pixels of a cell, keeps its contrast.
2. Local background: medians of 16x16-pixel blocks of the thumbnail, smoothed back to
   its size. Grey or yellowed paper, the brightness gradient of a scan or a phone photo,
   and the shadow of a book's gutter all belong to the background, not the content.
   (The page's dominant tone is the special case of a flat page.)
3. Ink: pixels that differ from the local background by more than max(12, 6 sigma) grey
   levels, sigma being the page's own noise (median absolute deviation), so a noisy scan
   raises its own bar. Ink pixels with no ink neighbour are dropped (surviving noise is
   isolated, strokes are not), and so is a 2% margin on every side, where scanners leave
   borders and paper edges.
4. Blank when fewer than 12 ink pixels remain (0.006% of the thumbnail).

Measured on the synthetic 1600x2000 pages of tests/test_blank.py: white, grey paper
with noise sigma 8 or 20, a scan with a lighting gradient and a gutter shadow, JPEG at
quality 30, a thin grey frame at the sheet's edge, salt noise on 0.2% of the pixels
and a 6-pixel dust speck leave 0 to 4 ink pixels (salt on 0.5%: up to 10). The word
"Page 3" in 10-pixel type leaves 14, a 30-character line of it about 70, a faint
1-pixel pencil line 16 and a 2-pixel pencil signature about 100. The criterion errs
towards "not blank", since a false "not blank" costs one model call and a false "blank"
loses a page: a 12-pixel blot, or salt noise on 1% of the pixels, counts as content.
About 10-15 ms for a 1600x2000 RGB image on a small machine, a third of it in Pillow's
grayscale conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Pillow and numpy are imported when a page is checked, not on import.
    import numpy as np
    from PIL import Image

__all__ = ["BlankStats", "is_blank", "measure"]

TARGET_SIDE = 500  # thumbnail long side, in pixels (after integer box reduction)
BLOCK = 16  # local-background block, in thumbnail pixels
MIN_CONTRAST = 12  # grey levels; the floor of the ink threshold on a clean page
NOISE_SIGMAS = 6.0  # the ink threshold in units of the page's own noise
MARGIN = 0.02  # fraction of each side ignored (scanner borders, paper edges)
MAX_INK_PIXELS = 12  # a page with fewer ink pixels than this is blank


@dataclass(frozen=True)
class BlankStats:
    """What `measure` saw; `blank` is the verdict."""

    ink_pixels: int  # thumbnail pixels counted as ink
    threshold: float  # grey levels from the background that made a pixel ink
    noise: float  # estimated noise sigma, in grey levels
    background: float  # median grey level of the page (its dominant tone)
    factor: int  # how many page pixels make one thumbnail pixel, per side
    blank: bool


def is_blank(image: "Image.Image", *, max_ink_pixels: int = MAX_INK_PIXELS) -> bool:
    """True if the page has no content worth sending to the model."""
    return measure(image, max_ink_pixels=max_ink_pixels).blank


def measure(image: "Image.Image", *, max_ink_pixels: int = MAX_INK_PIXELS) -> BlankStats:
    """Measure a page's ink against its own background (see the module docstring)."""
    import numpy as np

    gray = _grayscale(image)
    factor = max(1, max(gray.size) // TARGET_SIDE)
    # Box averages down to twice the thumbnail size, then rank statistics of 2x2 cells
    # (step 1 of the module docstring).
    box = max(1, factor // 2)
    if box > 1:
        gray = gray.reduce(box)
    half = np.asarray(gray)
    if factor >= 2 and min(half.shape) >= 2:
        dark, light = _second_extremes(half)
        factor = 2 * box
    else:
        dark = light = half
        factor = box
    dark = dark.astype(np.int16)
    light = light.astype(np.int16)

    # Darker-than-paper ink (the usual) and lighter-than-paper ink (slides, negatives),
    # each against its own local background.
    deviation = np.maximum(_local_background(dark) - dark, light - _local_background(light))
    h, w = deviation.shape

    # Noise from the page itself: on a blank page nearly every pixel is background, and
    # on a busy page the median ignores the content.
    noise = 1.4826 * _median(np.abs(deviation))
    threshold = max(float(MIN_CONTRAST), NOISE_SIGMAS * noise)

    my, mx = int(round(h * MARGIN)), int(round(w * MARGIN))
    ink = deviation[my : h - my or None, mx : w - mx or None] > threshold
    ink_pixels = int(np.count_nonzero(_drop_isolated(ink)))
    return BlankStats(
        ink_pixels=ink_pixels,
        threshold=threshold,
        noise=noise,
        background=_median(dark),
        factor=factor,
        blank=ink_pixels < max_ink_pixels,
    )


def _grayscale(image: "Image.Image") -> "Image.Image":
    """8-bit grayscale, transparency composited on white paper, high bit depth scaled."""
    from PIL import Image

    mode = image.mode
    if mode == "L":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("L")
    if mode in ("I", "F") or mode.startswith("I;16"):
        import numpy as np

        values = np.asarray(image, dtype=np.float32)
        top = float(values.max()) if values.size else 0.0
        scale = 255.0 / (65535.0 if top > 255 else 255.0)
        return Image.fromarray(np.clip(values * scale, 0, 255).astype(np.uint8), "L")
    return image.convert("L")


def _second_extremes(a: "np.ndarray") -> "tuple[np.ndarray, np.ndarray]":
    """Second-darkest and second-brightest of each 2x2 cell.

    A lone outlier in a cell (a noise pixel, a speck) is ignored, while a stroke, which
    crosses at least two pixels of the cell, keeps its full contrast.
    """
    import numpy as np

    h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
    p, q, r, s = a[0:h:2, 0:w:2], a[0:h:2, 1:w:2], a[1:h:2, 0:w:2], a[1:h:2, 1:w:2]
    lo1, hi1 = np.minimum(p, q), np.maximum(p, q)
    lo2, hi2 = np.minimum(r, s), np.maximum(r, s)
    second_lowest = np.minimum(np.maximum(lo1, lo2), np.minimum(hi1, hi2))
    second_highest = np.maximum(np.minimum(hi1, hi2), np.maximum(lo1, lo2))
    return second_lowest, second_highest


def _local_background(thumb: "np.ndarray") -> "np.ndarray":
    """The paper's smooth tone around every thumbnail pixel (int16 array).

    Medians of BLOCK x BLOCK blocks, computed as medians of 4x4 box averages (sixteen
    numbers per block instead of 256: fast, and still blind to a line of text crossing
    the block), then smoothed back to the thumbnail's size.
    """
    import numpy as np
    from PIL import Image

    h, w = thumb.shape
    small = Image.fromarray(thumb.astype(np.uint8), "L")
    sub = max(1, BLOCK // 4)
    if min(h, w) >= BLOCK:
        small = small.reduce(sub)
    means = np.asarray(small, dtype=np.float32)
    sh, sw = means.shape
    k = 4 if min(sh, sw) >= 4 else 1
    bh, bw = sh // k, sw // k
    blocks = means[: bh * k, : bw * k].reshape(bh, k, bw, k).transpose(0, 2, 1, 3)
    medians = np.median(blocks.reshape(bh, bw, k * k), axis=2).astype(np.float32)
    smooth = Image.fromarray(medians, "F").resize((w, h), Image.Resampling.BILINEAR)
    return np.rint(np.asarray(smooth)).astype(np.int16)


def _median(values: "np.ndarray") -> float:
    """Median of small non-negative integers, by counting, on every other row and column.

    Used for the noise level and the paper's tone: a quarter of the pixels estimate
    both as well as all of them, in a quarter of the time.
    """
    import numpy as np

    values = values[::2, ::2]
    counts = np.bincount(values.ravel().astype(np.intp))
    return float(np.searchsorted(np.cumsum(counts), (values.size + 1) // 2))


def _drop_isolated(ink: "np.ndarray") -> "np.ndarray":
    """Keep ink pixels that have at least one ink pixel among their 8 neighbours."""
    import numpy as np

    if ink.size == 0:
        return ink
    padded = np.pad(ink, 1)
    neighbours = np.zeros(ink.shape, dtype=np.uint8)
    h, w = ink.shape
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy != 1 or dx != 1:
                neighbours += padded[dy : dy + h, dx : dx + w]
    return ink & (neighbours > 0)
