"""Sideways and upside-down pages: which way a scanned page's text runs, from its pixels.

`detect(image)` says how many degrees clockwise (0, 90, 180, 270) the page image must be
turned for its text to read upright, with the evidence; `turn(image, degrees)` turns it.
No model call: a few numpy passes over the page, about 14 ms on a 1536-token page.
On 320 generated scans (benchmarks/bench_orientation.py, seeds 1 and 2: skewed, blurred,
noisy, JPEG'd, ragged and justified, one and two columns) it turned 84% the right way,
left the rest as they were, turned none the wrong way, and turned none of 80 upright, 20
photo, 20 blank and 20 one-line pages. Being sure matters more than being complete.

How it decides (the page as rendered: a PDF page's /Rotate is already applied):
1. Ink: the grey page is reduced by a whole factor (to under 2 * `WORK_SIDE` pixels on
   its long side) and thresholded (Otsu). A page with almost no ink (blank) or too much
   (a photo, a dark scan) is left as it is: the cues below are about lines of print.
2. Axis (0/180 against 90/270): lines of text make the ink profile across them (the sum
   of ink per row for horizontal text) alternate between lines and the gaps between
   them, while the profile along them varies far less. On a copy reduced `SMALL_FACTOR`
   times, each skew in `SKEWS` (+-4 degrees) is tried and the one whose profile has the
   most energy straightens the lines (Postl's method), for rows and for columns; there,
   the profile within each of a few strips is scored by its squared coefficient of
   variation (solid rows such as rules and frames left out). One axis must win by
   `AXIS_RATIO` (`AXIS_RATIO_SMALL` on a small image); the skew is undone before step 3.
3. Direction (0 against 180, 90 against 270): in Latin-script text the ink above a
   line's x-height band (ascenders: b d f h k l t, capitals, digits) outweighs the ink
   below it (descenders: g j p q y). For each line found in the strips' profiles, the
   ink above its dense core and below it are summed over the page; their normalised
   difference (`asymmetry`) is positive for upright text and negative upside down.
   Second cue (`alignment`): left-to-right lines start at the margin and end where the
   words run out (ragged, or a paragraph's short last line), so their left ends line up
   better than their right ends; upside down, the other way round. Each cue is counted
   in units of its bar (`MIN_ASYMMETRY`, `MIN_ALIGNMENT`): together they must reach two,
   neither may point the other way by more than half a bar, over `MIN_LINES` lines.

Only a confident answer turns a page (a wrong turn is worse than none): anything in
doubt, scripts without this asymmetry (Chinese, Japanese, Korean), vertical writing,
pages with a few words, answer 0 with the reason. A page written top to bottom (vertical
CJK) would look sideways; its asymmetry is weak, so it is usually left alone, but that is
not guaranteed. Right-to-left scripts (Arabic, Hebrew) line up on the right, which
reverses the second cue; they were not measured. For such documents the switch
(`--no-auto-rotate`) turns detection off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

# The page is looked at reduced by a whole factor to WORK_SIDE to 2 * WORK_SIDE pixels on its
# long side (as it is, when smaller): 10-point text on a 1536-token page (1408 pixels long)
# needs all its pixels to keep its ascenders apart from its x-height band.
WORK_SIDE = 1600
# Ink between these fractions of the page: below, blank or a few marks; above, a photo.
MIN_INK = 0.004
MAX_INK = 0.30
# The axis and the skew are found on the page reduced this many times, trying each skew.
SMALL_FACTOR = 4
SKEWS = tuple(step / 2 for step in range(-8, 9))  # -4 to +4 degrees
# Strips for the direction (after the skew is undone): columns of text keep apart.
STRIPS = 4
# One axis's profile score must beat the other's by this factor. Generated scans give
# 4 to 17, real ones at the usual page budget (1536 visual tokens, about 1100 x 1400 px)
# 1.35 to 1.9 (a typewritten page, a Wikipedia printout, a small page of large type:
# OCRmyPDF's test scans): 1.3 lets those through, and the direction cues after it still
# decide. Below LARGE_SIDE pixels on the long side body text is a few pixels tall and the
# profiles are not to be trusted that far (an upright 192 x 288 page scored 1 / 0.70 the
# wrong way): there the axis must win by AXIS_RATIO_SMALL. Measured with
# benchmarks/bench_orientation.py, generated and --real: no page turned the wrong way.
AXIS_RATIO = 1.3
AXIS_RATIO_SMALL = 2.5
LARGE_SIDE = 1000
# The direction: the bars of its two cues (see `detect`), over at least this many lines.
MIN_ASYMMETRY = 0.12
MIN_ALIGNMENT = 0.25
MIN_LINES = 6

TURNS = (0, 90, 180, 270)


@dataclass(frozen=True)
class Orientation:
    """What `detect` found: `turn` (degrees clockwise to make the text upright; 0 when
    upright or in doubt) and its evidence."""

    turn: int
    reason: str  # "upright", "turned", or why the page was left as it is
    ink: float = 0.0  # fraction of the (reduced) page that is ink
    axis_ratio: float = 0.0  # row score / column score (>1: text runs across the image)
    skew: float = 0.0  # degrees (counter-clockwise) that straightened the lines
    alignment: float = 0.0  # left ends lined up minus right ends (text made horizontal)
    asymmetry: float = 0.0  # ink above the lines' cores minus below, normalised (text made horizontal)
    lines: int = 0  # lines the asymmetry was measured on


def turn(image: "Image.Image", degrees: int) -> "Image.Image":
    """`image` turned `degrees` clockwise (0, 90, 180 or 270); the same image for 0."""
    from PIL import Image

    transposes = {
        90: Image.Transpose.ROTATE_270,  # Pillow's ROTATE_n turn counter-clockwise
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_90,
    }
    if degrees % 360 == 0:
        return image
    return image.transpose(transposes[degrees % 360])


def unturn_box(
    box: Tuple[float, float, float, float], turned_size: Tuple[float, float], degrees: int
) -> Tuple[float, float, float, float]:
    """A box in the frame of a page turned `degrees` clockwise (of size `turned_size`,
    in any unit) -> the same box on the page before the turn (origin top-left, y down)."""
    x0, y0, x1, y1 = box
    width, height = turned_size
    degrees %= 360
    if degrees == 90:  # the turned page's (u, v) was the page's (v, width_turned - u)
        return (y0, width - x1, y1, width - x0)
    if degrees == 180:
        return (width - x1, height - y1, width - x0, height - y0)
    if degrees == 270:  # the turned page's (u, v) was the page's (height_turned - v, u)
        return (height - y1, x0, height - y0, x1)
    return (x0, y0, x1, y1)


def _gray(image: "Image.Image") -> "Image.Image":
    """The page in grey, reduced by a whole factor to less than 2 * WORK_SIDE on its long side."""
    gray = image.convert("L")
    factor = max(1, max(gray.size) // WORK_SIDE)
    return gray.reduce(factor) if factor > 1 else gray


def _otsu(pixels: "np.ndarray") -> int:
    """The grey level that best separates ink from paper (Otsu's method)."""
    import numpy as np

    histogram = np.bincount(pixels.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    weight = np.cumsum(histogram)
    total = weight[-1]
    mean = np.cumsum(histogram * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean[-1] * weight - mean * total) ** 2 / (weight * (total - weight))
    between[~np.isfinite(between)] = 0
    return int(np.argmax(between))


def _profile_score(ink: "np.ndarray", strips: int) -> float:
    """How much the rows' ink alternates (lines and gaps), within vertical strips: the
    squared coefficient of variation of each strip's row profile, weighted by its ink."""
    import numpy as np

    width = ink.shape[1]
    edges = np.linspace(0, width, strips + 1).astype(int)
    score = weight = 0.0
    for left, right in zip(edges[:-1], edges[1:], strict=True):
        profile = ink[:, left:right].sum(axis=1, dtype=np.float64)
        # margins say nothing about lines, nor do solid rows (rules, frames, pictures)
        used = profile[(profile > 0) & (profile < 0.8 * (right - left))]
        if len(used) < 8:
            continue
        total = float(used.sum())
        score += float(used.var() / used.mean() ** 2) * total
        weight += total
    return score / weight if weight else 0.0


def _skew_scores(small: "Image.Image") -> Tuple[float, float, float, float]:
    """On a small ink image (ink white): for rows and for columns, the profile score at
    the skew that straightens them best, and that skew (degrees counter-clockwise).

    The skew is the one whose whole-width profile has the most energy (sum of squares):
    lines of text aligned with the rows pile their ink into few rows (Postl's method)."""
    import numpy as np
    from PIL import Image

    energy = [(-1.0, 0.0), (-1.0, 0.0)]
    for angle in SKEWS:
        ink = np.asarray(small.rotate(angle, resample=Image.Resampling.NEAREST) if angle else small) > 0
        for axis in (0, 1):
            profile = ink.sum(axis=1 - axis, dtype=np.float64)
            value = float(np.dot(profile, profile))
            if value > energy[axis][0]:
                energy[axis] = (value, angle)
    scores = []
    for axis, (_, angle) in enumerate(energy):
        ink = np.asarray(small.rotate(angle, resample=Image.Resampling.NEAREST) if angle else small) > 0
        scores.append(_profile_score(ink if axis == 0 else np.ascontiguousarray(ink.T), 3))
    return scores[0], energy[0][1], scores[1], energy[1][1]


def _asymmetry(ink: "np.ndarray") -> Tuple[float, int]:
    """Ink above the lines' dense cores minus below them, over their sum; the lines counted.
    `ink` has its text horizontal (either way up) and straight.

    A line's core is a run of rows denser than 40% of the strip's dense rows (the x-height
    band); the rows between two cores are split at their emptiest row, the part above it
    being the upper line's descenders, the part below the lower line's ascenders. Each
    side counts at most a core's height away from it (no headings' gaps, no margins).
    """
    import numpy as np

    width = ink.shape[1]
    edges = np.linspace(0, width, STRIPS + 1).astype(int)
    above = below = 0.0
    lines = 0
    for left, right in zip(edges[:-1], edges[1:], strict=True):
        profile = ink[:, left:right].sum(axis=1, dtype=np.float64)
        profile[profile >= 0.8 * (right - left)] = 0  # solid areas (rules, pictures) are no text
        text = profile[profile > 0]
        if len(text) < 8:
            continue
        cores = [(a, b) for a, b in _runs(profile >= 0.4 * np.percentile(text, 95)) if b - a >= 3]
        if not cores:
            continue
        # a core far taller than the strip's usual line is a picture or a block of marks
        tallest = 3 * float(np.median([b - a for a, b in cores]))
        cores = [(a, b) for a, b in cores if b - a <= tallest]
        for index, (top, bottom) in enumerate(cores):
            reach = bottom - top
            upper = cores[index - 1][1] if index else max(0, top - reach)
            lower = cores[index + 1][0] if index + 1 < len(cores) else min(len(profile), bottom + reach)
            # the middle of the emptiest rows between this core and its neighbours
            if index:
                upper = _split(profile, upper, top)
            if index + 1 < len(cores):
                lower = _split(profile, bottom, lower)
            upper, lower = max(upper, top - reach), min(lower, bottom + reach)
            above += float(profile[upper:top].sum())
            below += float(profile[bottom:lower].sum())
            lines += 1
    if above + below <= 0:
        return 0.0, lines
    return (above - below) / (above + below), lines


def _alignment(ink: "np.ndarray") -> Tuple[float, int]:
    """How much better the lines' left ends line up than their right ends (-1 to 1); the
    lines counted. `ink` has its text horizontal (either way up) and straight.

    Left-to-right text starts each line at the margin and ends where the words run out
    (ragged, or a paragraph's short last line): upside down, the ragged side is the left."""
    import numpy as np

    width = ink.shape[1]
    profile = ink.sum(axis=1, dtype=np.float64)
    profile[profile >= 0.8 * width] = 0
    text = profile[profile > 0]
    if len(text) < 8:
        return 0.0, 0
    lefts, rights = [], []
    for top, bottom in _runs(profile >= 0.4 * np.percentile(text, 95)):
        if bottom - top < 3:
            continue
        columns = np.flatnonzero(ink[top:bottom].sum(axis=0) >= 2)
        if len(columns) < 0.1 * width:
            continue
        lefts.append(columns[0])
        rights.append(columns[-1])
    if len(lefts) < MIN_LINES:
        return 0.0, len(lefts)
    tolerance = max(2.0, 0.01 * width)

    def aligned(ends: "List[int]") -> float:
        values = np.asarray(ends, dtype=np.float64)
        return float(np.mean(np.abs(values - np.median(values)) <= tolerance))

    return aligned(lefts) - aligned(rights), len(lefts)


def _split(profile: "np.ndarray", start: int, stop: int) -> int:
    """The middle of the rows of least ink in profile[start:stop] (start when empty): the
    same row seen from either side, and from either way up."""
    import numpy as np

    if stop <= start:
        return start
    gap = profile[start:stop]
    least = np.flatnonzero(gap == gap.min())
    return start + (int(least[0]) + int(least[-1]) + 1) // 2


def _runs(mask: "np.ndarray") -> List[Tuple[int, int]]:
    """The [start, stop) runs of True in a 1-D boolean array."""
    import numpy as np

    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    changes = np.flatnonzero(np.diff(padded))
    return list(zip(changes[0::2].tolist(), changes[1::2].tolist(), strict=True))


def detect(image: "Image.Image") -> Orientation:
    """How many degrees clockwise `image` must turn for its text to read upright."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(_gray(image))
    ink = pixels <= _otsu(pixels)
    fraction = float(ink.mean())
    if fraction < MIN_INK:
        return Orientation(0, "too little ink", ink=fraction)
    if fraction > MAX_INK:
        return Orientation(0, "too much ink for a text page (a photo?)", ink=fraction)
    mask = Image.fromarray(ink.astype(np.uint8) * 255)
    # The axis and the skew on a small copy (a cell with a third of ink is ink).
    small = mask.reduce(SMALL_FACTOR).point(lambda value: 255 if value >= 85 else 0)
    rows, row_skew, columns, column_skew = _skew_scores(small)
    ratio = rows / columns if columns > 0 else float("inf")
    bar = AXIS_RATIO if max(image.size) >= LARGE_SIDE else AXIS_RATIO_SMALL
    if ratio >= bar:
        sideways, skew = False, row_skew
    elif ratio > 0 and 1 / ratio >= bar:
        sideways, skew = True, column_skew
    else:
        return Orientation(0, "no clear text lines", ink=fraction, axis_ratio=ratio)
    if skew:
        mask = mask.rotate(skew, resample=Image.Resampling.NEAREST)
    straight = np.asarray(mask) > 0
    # Text running down the page is looked at turned a quarter clockwise.
    horizontal = np.rot90(straight, k=-1) if sideways else straight
    asymmetry, lines = _asymmetry(horizontal)
    alignment, _ = _alignment(horizontal)
    found: Dict[str, Any] = dict(
        ink=fraction, axis_ratio=ratio, skew=skew, asymmetry=asymmetry, alignment=alignment, lines=lines
    )
    if lines < MIN_LINES:
        return Orientation(0, "too few text lines", **found)
    # Each cue in units of its own bar; together they must clear two bars, and neither
    # may point the other way by more than half of one.
    votes = (asymmetry / MIN_ASYMMETRY, alignment / MIN_ALIGNMENT)
    way = 1 if sum(votes) > 0 else -1
    if abs(sum(votes)) < 2 or min(vote * way for vote in votes) < -0.5:
        return Orientation(0, "which way up is not clear", **found)
    degrees = (90 if sideways else 0) + (0 if way > 0 else 180)
    return Orientation(degrees, "turned" if degrees else "upright", **found)
