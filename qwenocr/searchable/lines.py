"""A block's text as lines inside its box: what the text layer writes, and where.

The model gives one box per block (a paragraph, a table, a list), not per line or word,
so the lines are estimated: the block's own line breaks are kept (list items, table
rows, the lines of a heading or an address), and long lines are wrapped at spaces into as
many visual lines as the box's shape suggests for its amount of text (characters about
half as wide as a line is tall, lines 1.2 times the text size apart). Each line gets an
equal share of the box's height; its width is its share of the widest line, so that a
paragraph's short last line is short. Right-to-left lines (mostly Arabic or Hebrew
letters) sit at the box's right edge.

That is block-level positioning: a search hit or a selection lands on the right block
and about the right line, not on the exact word (docs/searchable-pdf.md).
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple

from qwenocr.layout.parse import table_rows

Box = Tuple[float, float, float, float]  # x0, y0, x1, y1; origin top-left, y down

CHAR_ASPECT = 0.5  # a character's width over the text size, on average (Latin)
LINE_SPACING = 1.2  # line pitch over the text size
BODY_SIZE = 11.0  # points: the text size assumed for a page's text that has no boxes
# Markdown list markers the layout parser adds to list items, not printed on the page as such.
_BULLET = re.compile(r"^\s*[-*+]\s+")


@dataclass(frozen=True)
class Line:
    text: str
    box: Box
    rtl: bool = False


def block_text_lines(block: Mapping) -> List[str]:
    """The text lines of a block in its JSON shape: table rows (cells joined by spaces),
    list items without their Markdown bullet, other blocks' own lines. Empty lines go."""
    html = block.get("html")
    if isinstance(html, str):
        return [" ".join(cell[0] for cell in row if cell[0]) for row in table_rows(html) if any(c[0] for c in row)]
    text = block.get("text") or ""
    lines = text.splitlines()
    if block.get("type") == "list":
        lines = [_BULLET.sub("", line) for line in lines]
    return [" ".join(line.split()) for line in lines if line.strip()]


def is_rtl(text: str) -> bool:
    """Whether most of the strongly directional letters of `text` read right to left."""
    rtl = ltr = 0
    for char in text:
        direction = unicodedata.bidirectional(char)
        if direction in ("R", "AL"):
            rtl += 1
        elif direction == "L":
            ltr += 1
    return rtl > ltr


def _wrap(text: str, pieces: int) -> List[str]:
    """`text` in about `pieces` lines of similar length, broken at spaces where there are any."""
    if pieces <= 1 or len(text) < 2:
        return [text]
    target = len(text) / pieces
    words = text.split(" ")
    if len(words) == 1:  # no spaces (CJK, or one long word): break between characters
        step = max(1, math.ceil(target))
        return [text[i : i + step] for i in range(0, len(text), step)]
    out: List[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if current and len(candidate) > target * 1.05 and len(out) < pieces - 1:
            out.append(current)
            current = word
        else:
            current = candidate
    out.append(current)
    return out


def layout_lines(texts: Sequence[str], box: Box) -> List[Line]:
    """`texts` (a block's lines) laid out in `box`, one `Line` per visual line."""
    texts = [t for t in texts if t.strip()]
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    if not texts or width <= 0 or height <= 0:
        return []
    total = sum(len(t) for t in texts)
    # n lines of total/n characters each fill the width when
    # (total / n) * CHAR_ASPECT * (height / n / LINE_SPACING) == width.
    visual = max(len(texts), round(math.sqrt(total * CHAR_ASPECT * height / (LINE_SPACING * width))))
    visual = min(visual, total)
    if visual > len(texts):
        wrapped: List[str] = []
        for text in texts:
            wrapped += _wrap(text, max(1, round(visual * len(text) / total)))
        texts = wrapped
    pitch = height / len(texts)
    longest = max(len(t) for t in texts)
    lines = []
    for index, text in enumerate(texts):
        share = width * len(text) / longest
        rtl = is_rtl(text)
        left = x1 - share if rtl else x0
        top = y0 + index * pitch
        lines.append(Line(text, (left, top, left + share, top + pitch), rtl))
    return lines


def page_fill_lines(texts: Sequence[str], box: Box, size: float = BODY_SIZE) -> List[Line]:
    """A page's text without boxes: from the top of `box` down, at body-text `size`
    (points), wrapped to its width; lines closer together when they would not fit."""
    x0, y0, x1, y1 = box
    width = x1 - x0
    if width <= 0 or y1 <= y0:
        return []
    per_line = max(1, int(width / (CHAR_ASPECT * size)))
    wrapped: List[str] = []
    for text in texts:
        if text.strip():
            wrapped += _wrap(text, math.ceil(len(text) / per_line))
    if not wrapped:
        return []
    pitch = min(size * LINE_SPACING, (y1 - y0) / len(wrapped))
    lines = []
    for index, text in enumerate(wrapped):
        share = min(width, len(text) * CHAR_ASPECT * pitch)
        rtl = is_rtl(text)
        left = x1 - share if rtl else x0
        top = y0 + index * pitch
        lines.append(Line(text, (left, top, left + share, top + pitch), rtl))
    return lines


def block_lines(block: Mapping, box: Optional[Box] = None) -> List[Line]:
    """A block's lines in `box` (default: the block's own bbox); none without a box or text."""
    if box is None:
        bbox = block.get("bbox")
        if not bbox:
            return []
        box = (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))
    return layout_lines(block_text_lines(block), box)


_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.M)
_MD_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$", re.M)
_MD_EMPHASIS = re.compile(r"(\*\*|__|(?<!\w)[*_](?=\S)|(?<=\S)[*_](?!\w))")
_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_HTML_TAG = re.compile(r"<[^>]+>")


def plain_text(markdown: str) -> str:
    """The words of a page's Markdown, as printed: no heading marks, emphasis, table rules
    or pipes, image links or HTML tags (tables kept as HTML become their cells' text)."""
    import html

    text = _MD_IMAGE.sub(r"\1", markdown)
    text = re.sub(r"</(td|th)>", " ", text, flags=re.I)
    text = re.sub(r"</tr>|<br\s*/?>", "\n", text, flags=re.I)
    text = html.unescape(_HTML_TAG.sub("", text))
    text = _MD_TABLE_RULE.sub("", text)
    text = _MD_HEADING.sub("", text)
    text = _MD_EMPHASIS.sub("", text)
    text = "\n".join(" ".join(line.replace("|", " ").split()) for line in text.splitlines())
    return "\n".join(line for line in text.splitlines() if line)


_WEAK = {"EN", "AN", "NSM", "CS", "ES", "ET", "BN"}
# Paired punctuation a reader mirrors in a right-to-left run (Unicode's Bidi_Mirroring_Glyph, common pairs).
_PAIRS = "()[]{}<>«»‹›⁅⁆⁽⁾₍₎〈〉《》「」『』【】〔〕〖〗〘〙〚〛"
_MIRROR = {**dict(zip(_PAIRS[::2], _PAIRS[1::2], strict=True)), **dict(zip(_PAIRS[1::2], _PAIRS[::2], strict=True))}


def _direction(char: str) -> str:
    """L (left to right), R (right to left), W (weak: digits, their separators, marks), N (neutral)."""
    bidi = unicodedata.bidirectional(char)
    if bidi == "L":
        return "L"
    if bidi in ("R", "AL"):
        return "R"
    return "W" if bidi in _WEAK else "N"


def visual_order(text: str) -> str:
    """`text` (in reading order) in the order its characters appear from left to right.

    The text layer draws every line left to right; readers turn right-to-left runs back
    into reading order when they extract text, as for any PDF. Which order they expect
    is the inverse of what they do: this is the rule PDFium applies to a line (runs of
    one direction class; the line is right to left when it has at least as many
    right-to-left runs as left-to-right ones; right-to-left runs, and neutral ones on a
    right-to-left line, are reversed; on a right-to-left line the runs' order is reversed
    too, mirroring brackets). The rule is its own inverse, so PDFium (Chrome's viewer) gets the reading order
    back exactly; pdf.js and poppler, with the full Unicode bidi algorithm, agree on
    lines of one direction and may order mixed lines differently."""
    runs: List[Tuple[str, str]] = []
    for char in text:
        kind = _direction(char)
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1] + char)
        else:
            runs.append((kind, char))
    right = sum(1 for kind, _ in runs if kind == "R")
    left = sum(1 for kind, _ in runs if kind == "L")
    rtl_line = right > 0 and right >= left
    pieces = [
        "".join(_MIRROR.get(c, c) for c in reversed(run)) if kind == "R" or (kind == "N" and rtl_line) else run
        for kind, run in runs
    ]
    return "".join(reversed(pieces) if rtl_line else pieces)
