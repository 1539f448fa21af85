"""A text layer's characters -> lines -> blocks -> Markdown, like the model's.

`textlayer.extract` reads every character of a page from PDFium (its text, its loose box
turned into page coordinates as displayed, its font size and boldness, PDFium's own
end-of-line hyphen flag) and hands them to `build_lines`, in the render child; only the
lines cross the process boundary. `page_layout` then rebuilds the page's structure from
those lines, as a pure function:

1. lines: PDFium's order, broken where PDFium breaks a line and also where the text jumps
   (a column gutter, a table cell, a move back to the left); a fragment that sits on the
   line before it (a superscript, a footnote mark, a run PDFium put on its own line) is
   joined back to it, so that authors' marks no longer end a line;
2. tables: two or more rows of short cells in aligned columns become one table item;
3. reading order: a region is cut at a vertical gutter that only wide items (titles,
   figures, full-width paragraphs) cross; each band between the wide items reads its
   left side, then its right side (recursively: three columns work too);
4. code: lines in a fixed-pitch font stay lines, indented as on the page; a table of
   contents keeps one entry a line;
5. turned text (an arXiv stamp in the margin, an axis label) is kept out of the flow
   and comes after it, one paragraph per line;
6. running headers and footers: short lines in the top or bottom margin, apart from
   the text, become `header`/`footer` blocks (first and last);
7. blocks: within a column, a new paragraph starts at a larger gap than the column's
   usual line pitch, a first-line indent, a change of size or weight, or after a short
   line that ends a sentence; headings are lines larger than the body text (one level
   per size, largest first) or short, wholly bold lines; list items start with a bullet
   or a number; end-of-line hyphens are undone when a lower-case word continues.

Blocks use the layout room's `Block` (type, bbox in points from the page's top-left,
after its /Rotate, text), so that a text-layer page and a model page in layout mode have
the same shape, and the Markdown is made from them by the same code
(`qwenocr.layout.markdown`).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from html import escape
from typing import List, NamedTuple, Optional, Sequence, Tuple

from qwenocr.layout.blocks import Block
from qwenocr.layout.markdown import block_markdown

# (x0, y0, x1, y1) in points, origin at the page's top-left corner as displayed, y down.
Rect = Tuple[float, float, float, float]


class Char(NamedTuple):
    """One character as PDFium reads it (`text` "\\n" for a line break PDFium made)."""

    text: str
    box: Rect
    size: float
    bold: bool
    hyphen: bool = False  # PDFium's end-of-line hyphen
    mono: bool = False  # a fixed-pitch font
    upright: bool = True  # reads left to right as displayed (not sideways or upside down)


@dataclass(frozen=True)
class TextLine:
    """A run of text on one line of one column; what crosses the process boundary."""

    text: str
    box: Rect
    size: float  # font size of most of its characters, points
    bold: bool  # (nearly) all its letters are bold
    hyphen: bool = False  # ends with a hyphen that splits a word
    mono: bool = False  # (nearly) all in a fixed-pitch font: code
    sideways: bool = False  # text turned on the page (an arXiv stamp, an axis label)

    def to_list(self) -> list:
        # Not rounded: the parent's PageText equals the child's (JSON keeps floats exact).
        return [self.text, list(self.box), self.size, self.bold, self.hyphen, self.mono, self.sideways]

    @classmethod
    def from_list(cls, row: Sequence) -> "TextLine":
        text, box, size, bold, hyphen, mono, sideways = row
        x0, y0, x1, y1 = (float(v) for v in box)
        return cls(str(text), (x0, y0, x1, y1), float(size), bool(bold), bool(hyphen), bool(mono), bool(sideways))


@dataclass(frozen=True)
class TextLayout:
    """A page rebuilt from its text layer: Markdown and blocks (as dicts, reading order)."""

    markdown: str
    blocks: List[dict]


# --- thresholds (in font sizes, "em", unless said otherwise) -------------------------

# A horizontal jump larger than this inside one PDFium line is a gutter or a cell
# boundary: justified text stretches word spaces to about 1 em at most.
SPLIT_GAP_EM = 1.5
# A list item's text may stand this far from its lone bullet or number.
MARKER_GAP_EM = 5.0
# A space is inserted between joined fragments further apart than this.
SPACE_GAP_EM = 0.15
# A new paragraph starts when the line pitch exceeds the column's usual pitch by this.
PARAGRAPH_PITCH = 1.3
# Larger than the body text by this factor: a heading.
HEADING_SIZE = 1.08
# A bold line longer than this is emphasis, not a heading.
MAX_BOLD_HEADING_CHARS = 90
# A gutter is at least this wide (points) and at least this many items sit on each side.
MIN_GUTTER = 8.0
MIN_COLUMN_ITEMS = 2
# Items at least this share of the region's width count as "wide" (they may cross a gutter).
WIDE_SHARE = 0.55
# Table cells: at most this long on average; a two-column page's lines are longer.
MAX_CELL_CHARS = 30
# Running headers and footers: short lines within this share of the page's height from
# its top or bottom edge, at least this many body sizes away from the rest of the text.
MARGIN_SHARE = 0.08
MARGIN_GAP_EM = 1.5
MAX_MARGIN_CHARS = 100
# Beyond this many lines a "page" is hostile or absurd: tables and columns are not looked
# for (both cost more than linear time), the lines are read top to bottom.
MAX_LAYOUT_LINES = 5000
# Gutter candidates tried per region: the widest few.
MAX_GUTTERS = 6
# A row of more cells than this is no table row (and keeps the search linear).
MAX_TABLE_COLUMNS = 30
# Images smaller than this share of the page are decorations (rules, logos' bits).
MIN_FIGURE_SHARE = 0.005

_HYPHENS = ("-", "\u00ad", "\x02", "\u2010")
_BULLET = re.compile(r"^([•◦▪▫‣⁃∙●○■□➢➤►\-–*\uf0b7\uf0a7])\s+")
_NUMBERED = re.compile(r"^(\(?\d{1,3}[.)]|\(?[a-z][.)]|\(?[ivx]{1,4}[.)])\s+")
_LONE_MARKER = re.compile(r"^([•◦▪▫‣⁃∙●○■□➢➤►\-–*\uf0b7\uf0a7]|\(?\d{1,3}[.)]|\(?[a-z][.)])$")
# A table of contents' entry: dot leaders, then a page number (or roman numeral).
_TOC_ENTRY = re.compile(r"(?:\.\s?){4,}\s*[\divxlcIVXLC]{1,6}$")
_SENTENCE_END = (".", "!", "?", ":", "”", '"')
_MD_START = re.compile(r"^(#{1,6}\s|>|[-+*]\s|\d+[.)]\s|[=]{3,}\s*$|-{3,}\s*$|\*{3,}\s*$|_{3,}\s*$)")


# --- characters -> lines (in the render child) ---------------------------------------


def build_lines(chars: Sequence[Char]) -> List[TextLine]:
    """Group characters into line fragments (see the module docstring, step 1)."""
    fragments: List[List[Char]] = []
    current: List[Char] = []
    pending_space = False
    for char in chars:
        if char.text in ("\n", "\r"):
            if current:
                fragments.append(current)
            current, pending_space = [], False
            continue
        if char.text.isspace() or not char.text:
            pending_space = bool(current)
            continue
        if current and (current[-1].upright != char.upright or char.upright and _breaks(current, char)):
            fragments.append(current)
            current, pending_space = [], False
        if pending_space and current:
            current.append(Char(" ", char.box, char.size, char.bold))
        current.append(char)
        pending_space = False
    if current:
        fragments.append(current)
    lines = [_line(fragment) for fragment in fragments]
    return _join_fragments([line for line in lines if line.text])


def _breaks(current: Sequence[Char], char: Char) -> bool:
    last = current[-1]
    size = max(last.size, char.size, 1.0)
    top, bottom = last.box[1], last.box[3]
    middle = (char.box[1] + char.box[3]) / 2
    if not (top - 0.2 * size <= middle <= bottom + 0.2 * size):
        return True  # another line
    gap = char.box[0] - last.box[2]
    return gap > SPLIT_GAP_EM * size or gap < -size  # a gutter or cell; or back to the left


def _line(chars: Sequence[Char]) -> TextLine:
    text = "".join(c.text for c in chars)
    hyphen = bool(chars) and (chars[-1].hyphen or chars[-1].text in _HYPHENS)
    if chars and chars[-1].text == "\x02":
        text = text[:-1] + "-"
    text = text.replace("\x02", "-").strip()
    weights: dict = {}
    for c in chars:
        if not c.text.isspace():
            weights[round(c.size * 2) / 2] = weights.get(round(c.size * 2) / 2, 0) + 1
    size = max(weights, key=lambda s: (weights[s], s)) if weights else 0.0
    letters = [c for c in chars if c.text.isalnum()]
    bold = bool(letters) and sum(c.bold for c in letters) >= 0.9 * len(letters)
    shown = [c for c in chars if not c.text.isspace()]
    mono = bool(shown) and sum(c.mono for c in shown) >= 0.9 * len(shown)
    visible = [c for c in chars if not c.text.isspace()] or list(chars)
    box = (
        min(c.box[0] for c in visible),
        min(c.box[1] for c in visible),
        max(c.box[2] for c in visible),
        max(c.box[3] for c in visible),
    )
    sideways = bool(chars) and not chars[0].upright
    return TextLine(text, box, size, bold, hyphen and not sideways, mono, sideways)


def _join_fragments(lines: Sequence[TextLine]) -> List[TextLine]:
    """Join a fragment to the one before it when it sits on the same line right after it
    (a superscript, a footnote mark, a run PDFium started a new line for)."""
    out: List[TextLine] = []
    for line in lines:
        if out:
            prev = out[-1]
            size = max(prev.size, line.size, 1.0)
            middle = (line.box[1] + line.box[3]) / 2
            gap = line.box[0] - prev.box[2]
            same_line = prev.box[1] - 0.1 * size <= middle <= prev.box[3] + 0.1 * size
            # A lone bullet or number is followed by its item's text, however wide the indent.
            reach = MARKER_GAP_EM if _LONE_MARKER.match(prev.text) else SPLIT_GAP_EM
            upright = not (prev.sideways or line.sideways)
            if upright and same_line and -0.5 * size <= gap <= reach * size and not prev.hyphen:
                space = " " if gap > SPACE_GAP_EM * size or reach == MARKER_GAP_EM else ""
                main = prev if len(prev.text) >= len(line.text) else line
                out[-1] = TextLine(
                    prev.text + space + line.text,
                    _union(prev.box, line.box),
                    main.size,
                    prev.bold and line.bold,
                    line.hyphen,
                    prev.mono and line.mono,
                )
                continue
        out.append(line)
    return out


# --- lines -> blocks -> Markdown -----------------------------------------------------


@dataclass
class _Item:
    box: Rect
    line: Optional[TextLine] = None
    kind: str = "line"  # "line", "figure", "table"
    html: str = ""
    text: str = ""


def page_layout(
    lines: Sequence[TextLine], figures: Sequence[Rect] = (), page_size: Tuple[float, float] = (0.0, 0.0)
) -> TextLayout:
    """The page's blocks in reading order and its Markdown (module docstring, steps 2-7)."""
    width, height = page_size
    sideways = [line for line in lines if line.sideways and line.text.strip()]
    lines = [line for line in lines if not line.sideways]
    items = [_Item(line.box, line) for line in lines if line.text.strip()]
    simple = len(items) > MAX_LAYOUT_LINES
    if not simple:  # code keeps its own columns
        items = _find_tables([i for i in items if not _is_code(i)]) + [i for i in items if _is_code(i)]
    area = max(width * height, 1.0)
    for box in figures:
        if (box[2] - box[0]) * (box[3] - box[1]) >= MIN_FIGURE_SHARE * area:
            items.append(_Item(box, kind="figure"))
    body = _body_size(lines)
    headers, items, footers = _margins(items, height, body)
    sizes = sorted({round(line.size * 2) / 2 for line in lines if line.size >= body * HEADING_SIZE}, reverse=True)
    levels = {size: min(index + 1, 6) for index, size in enumerate(sizes)}
    bold_level = min(len(sizes) + 1, 6)
    segments = [sorted(items, key=lambda i: (i.box[1], i.box[0]))] if simple else _reading_order(items, 0)
    blocks = [Block("header", i.box, text=i.line.text) for i in headers if i.line is not None]
    blocks += _blocks(segments, body, levels, bold_level)
    # Turned text reads apart from the page's flow: after it, top to bottom.
    blocks += [Block("paragraph", line.box, text=line.text) for line in sorted(sideways, key=lambda line: line.box[1])]
    blocks += [Block("footer", i.box, text=i.line.text) for i in footers if i.line is not None]
    parts = []
    for block in blocks:
        text = block_markdown(block) if block.type != "paragraph" else _escape_start(block.text or "")
        if text:
            parts.append(text)
    markdown = "\n\n".join(parts)
    return TextLayout(markdown + ("\n" if markdown else ""), [block.to_dict() for block in blocks])


def _is_code(item: _Item) -> bool:
    return item.line is not None and item.line.mono


def _margins(items: List[_Item], height: float, body: float) -> Tuple[List[_Item], List[_Item], List[_Item]]:
    """(headers, the rest, footers): short lines of body size or smaller in the top or
    bottom margin, set apart from the page's text (running heads, page numbers)."""
    if height <= 0:
        return [], items, []

    def plain(item: _Item) -> bool:
        line = item.line
        return line is not None and line.size <= body + 0.5 and len(line.text) <= MAX_MARGIN_CHARS

    headers = [i for i in items if i.kind == "line" and i.box[3] <= MARGIN_SHARE * height and plain(i)]
    footers = [i for i in items if i.kind == "line" and i.box[1] >= (1 - MARGIN_SHARE) * height and plain(i)]
    rest = [i for i in items if i not in headers and i not in footers]
    if not rest:
        return [], items, []
    gap = MARGIN_GAP_EM * body
    if headers and min(i.box[1] for i in rest) - max(i.box[3] for i in headers) < gap:
        rest, headers = rest + headers, []
    if footers and min(i.box[1] for i in footers) - max(i.box[3] for i in rest) < gap:
        rest, footers = rest + footers, []
    order = sorted(headers, key=lambda i: (i.box[1], i.box[0])), sorted(footers, key=lambda i: (i.box[1], i.box[0]))
    return order[0], rest, order[1]


def _body_size(lines: Sequence[TextLine]) -> float:
    weights: dict = {}
    for line in lines:
        key = round(line.size * 2) / 2
        weights[key] = weights.get(key, 0) + len(line.text)
    return max(weights, key=lambda s: (weights[s], -s)) if weights else 10.0


def _union(a: Rect, b: Rect) -> Rect:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _escape_start(text: str) -> str:
    return "\\" + text if _MD_START.match(text) else text


# --- tables --------------------------------------------------------------------------


def _find_tables(items: List[_Item]) -> List[_Item]:
    """Rows of two or more short cells, two or more rows in a row, columns aligned: one
    table item each (its cells leave the item list)."""
    rows: List[List[_Item]] = []
    top = bottom = 0.0
    for item in sorted(items, key=lambda i: ((i.box[1] + i.box[3]) / 2, i.box[0])):
        middle = (item.box[1] + item.box[3]) / 2
        if rows and len(rows[-1]) < MAX_TABLE_COLUMNS and top <= middle <= bottom:
            row = rows[-1]
            if all(not _overlap_x(i.box, item.box) for i in row):
                row.append(item)
                top, bottom = min(top, item.box[1]), max(bottom, item.box[3])
                continue
        rows.append([item])
        top, bottom = item.box[1], item.box[3]
    out: List[_Item] = []
    run: List[List[_Item]] = []

    def flush() -> None:
        if len(run) >= 2 and _aligned(run):
            cells = [sorted(row, key=lambda i: i.box[0]) for row in run]
            box = cells[0][0].box
            for row in cells:
                for cell in row:
                    box = _union(box, cell.box)
            out.append(_Item(box, kind="table", html=_table_html(cells)))
        else:
            for row in run:
                out.extend(row)
        run.clear()

    for row in rows:
        texts = [i.line.text for i in row if i.line is not None]
        tabular = len(row) >= 2 and sum(len(t) for t in texts) / len(row) <= MAX_CELL_CHARS
        if tabular and (not run or len(row) == len(run[0])):
            run.append(row)
            continue
        flush()
        if tabular:
            run.append(row)
        else:
            out.extend(row)
    flush()
    return out


def _overlap_x(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2]


def _aligned(rows: Sequence[Sequence[_Item]]) -> bool:
    """Every row's n-th cell starts or ends near the first row's n-th cell."""
    first = sorted(rows[0], key=lambda i: i.box[0])
    for row in rows[1:]:
        for a, b in zip(first, sorted(row, key=lambda i: i.box[0]), strict=False):  # rows are equal
            size = max(a.line.size if a.line else 10.0, 1.0)
            if abs(a.box[0] - b.box[0]) > 2 * size and abs(a.box[2] - b.box[2]) > 2 * size:
                if not _overlap_x(a.box, b.box):
                    return False
    return True


def _table_html(rows: Sequence[Sequence[_Item]]) -> str:
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell.line.text if cell.line else '')}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table>{body}</table>"


# --- reading order -------------------------------------------------------------------


def _reading_order(items: List[_Item], depth: int) -> List[List[_Item]]:
    """Segments (runs of items read top to bottom) in reading order."""
    items = sorted(items, key=lambda i: (i.box[1], i.box[0]))
    gutter = _gutter(items) if depth < 4 else None
    if gutter is None:
        return [items] if items else []
    a, b = gutter
    out: List[List[_Item]] = []
    band: List[_Item] = []

    def flush() -> None:
        left = [i for i in band if i.box[2] <= a]
        right = [i for i in band if i.box[0] >= b]
        out.extend(_reading_order(left, depth + 1))
        out.extend(_reading_order(right, depth + 1))
        band.clear()

    crossing = False
    for item in items:
        if item.box[0] < a and item.box[2] > b:  # crosses the gutter: ends the band
            if crossing and not band and out:
                out[-1].append(item)  # wide items in a row read as one run
            else:
                flush()
                out.append([item])
            crossing = True
        else:
            band.append(item)
            crossing = False
    flush()
    return out


def _gutter(items: Sequence[_Item]) -> Optional[Tuple[float, float]]:
    """The widest vertical strip that no narrow item crosses, with side-by-side items on
    both sides; None when the region is one column."""
    if len(items) < 2 * MIN_COLUMN_ITEMS:
        return None
    left_edge = min(i.box[0] for i in items)
    right_edge = max(i.box[2] for i in items)
    span = right_edge - left_edge
    if span <= 0:
        return None
    narrow = [i for i in items if i.box[2] - i.box[0] < WIDE_SHARE * span]
    intervals = sorted((i.box[0], i.box[2]) for i in narrow)
    gaps: List[Tuple[float, float]] = []
    reach = left_edge
    for x0, x1 in intervals:
        if x0 - reach >= MIN_GUTTER and reach > left_edge:
            gaps.append((reach, x0))
        reach = max(reach, x1)
    best: Optional[Tuple[float, float]] = None
    for a, b in sorted(gaps, key=lambda gap: gap[0] - gap[1])[:MAX_GUTTERS]:
        left = [i for i in narrow if i.box[2] <= a]
        right = [i for i in narrow if i.box[0] >= b]
        if len(left) < MIN_COLUMN_ITEMS or len(right) < MIN_COLUMN_ITEMS:
            continue
        # Side by side: the two sides share some height (not a left-aligned list
        # above a right-aligned signature).
        shared = min(max(i.box[3] for i in left), max(i.box[3] for i in right)) - max(
            min(i.box[1] for i in left), min(i.box[1] for i in right)
        )
        if shared <= 0:
            continue
        if best is None or b - a > best[1] - best[0]:
            best = (a, b)
    return best


# --- blocks within a column ----------------------------------------------------------


def _blocks(segments: Sequence[Sequence[_Item]], body: float, levels: dict, bold_level: int) -> List[Block]:
    """Blocks from the segments in reading order; a paragraph may run on from one
    segment into the next (the last line of a band above the columns, or a column's
    last line continued at the top of the next column)."""
    pitches: List[float] = []
    for segment in segments:
        lines = [i.line for i in segment if i.kind == "line" and i.line is not None]
        pitches.extend(
            b.box[3] - a.box[3]
            for a, b in zip(lines, lines[1:], strict=False)
            if abs(a.size - b.size) < 0.5 and 0 < b.box[3] - a.box[3] < 3 * max(a.size, 1.0)
        )
    pitch = statistics.median(pitches) if pitches else None
    edges = {}
    for segment in segments:
        lines = [i.line for i in segment if i.kind == "line" and i.line is not None]
        margin = min((line.box[0] for line in lines), default=0.0)
        right = max((line.box[2] for line in lines), default=0.0)
        for item in segment:
            edges[id(item)] = (margin, right)
    flat = [item for segment in segments for item in segment]

    blocks: List[Block] = []
    current: Optional[dict] = None  # {"kind", "level", "texts"/"items", "box", "last"}

    def close() -> None:
        nonlocal current
        if current is None:
            return
        if current["kind"] == "list":
            text = "\n".join(current["items"])
            blocks.append(Block("list", current["box"], text=text))
        elif current["kind"] == "code":
            blocks.append(Block("code", current["box"], text=_code_text(current["lines"])))
        elif current["kind"] == "heading":
            blocks.append(Block("heading", current["box"], text=current["text"], level=current["level"]))
        else:
            blocks.append(Block("paragraph", current["box"], text=current["text"]))
        current = None

    for item in flat:
        if item.kind != "line" or item.line is None:
            close()
            if item.kind == "table":
                blocks.append(Block("table", item.box, html=item.html))
            else:
                blocks.append(Block("figure", item.box, text=""))
            continue
        line = item.line
        if line.mono:  # code: its lines stay lines
            last = current["last"] if current is not None else None
            step = line.box[3] - last.box[3] if last is not None else -1.0
            if current is not None and current["kind"] == "code" and 0 <= step <= 2.5 * (pitch or 1.25 * line.size):
                current["lines"].append(line)
                current["box"] = _union(current["box"], line.box)
                current["last"] = line
                continue
            close()
            current = {"kind": "code", "lines": [line], "box": line.box, "last": line}
            continue
        level = _heading_level(line, body, levels, bold_level)
        marker = _BULLET.match(line.text) or _NUMBERED.match(line.text)
        kind = "heading" if level else ("list" if marker else "paragraph")
        prev: Optional[TextLine] = current["last"] if current else None
        if kind == "list" and marker and current is not None and current["kind"] == "paragraph" and prev is not None:
            # "- " or "2) " at the start of a wrapped line, mid-sentence, is not a list.
            if marker.group(1) in "-–*" or marker.group(1)[0].isalnum() or marker.group(1)[0] == "(":
                if not prev.text.rstrip().endswith(_SENTENCE_END) and not _gap_break(prev, line, pitch):
                    kind, marker = "paragraph", None
        new_block = (
            current is None
            or prev is None
            or current["kind"] == "code"
            or kind == "list"
            or current["kind"] == "heading"
            and (kind != "heading" or current["level"] != level)
            or current["kind"] != "heading"
            and kind == "heading"
            or _gap_break(prev, line, pitch)
            and not _runs_on(prev, line)
        )
        if not new_block and current is not None and prev is not None and current["kind"] == "paragraph":
            new_block = _paragraph_break(prev, line, *edges[id(item)])
        if not new_block and current is not None and current["kind"] == "list":
            if line.box[0] < current["indent"] - 0.5 * line.size:
                new_block = True  # back at the margin: the list is over
        if kind == "list" and current is not None and current["kind"] == "list" and prev is not None:
            if not _gap_break(prev, line, pitch, 2.0):  # next item of the same list
                current["items"].append(_list_item(line.text, marker))
                current["indent"] = line.box[0] + (_text_start(line, marker))
                current["box"] = _union(current["box"], line.box)
                current["last"] = line
                continue
        if new_block:
            close()
            if kind == "list":
                current = {
                    "kind": "list",
                    "items": [_list_item(line.text, marker)],
                    "box": line.box,
                    "last": line,
                    "indent": line.box[0] + _text_start(line, marker),
                }
            else:
                current = {"kind": kind, "level": level, "text": line.text, "box": line.box, "last": line}
            continue
        assert current is not None and prev is not None
        if current["kind"] == "list":
            current["items"][-1] = _join(current["items"][-1], line.text, prev.hyphen)
        else:
            current["text"] = _join(current["text"], line.text, prev.hyphen)
        current["box"] = _union(current["box"], line.box)
        current["last"] = line
    close()
    return blocks


def _code_text(lines: Sequence[TextLine]) -> str:
    """Code lines, indented as on the page (in characters of the fixed-pitch font);
    fragments on one baseline (aligned columns) share a row again."""
    widths = [(line.box[2] - line.box[0]) / len(line.text) for line in lines if len(line.text) >= 2]
    advance = max(statistics.median(widths), 1.0) if widths else 6.0
    left = min(line.box[0] for line in lines)
    rows: List[List[TextLine]] = []
    for line in sorted(lines, key=lambda line: line.box[3]):
        if rows and abs(rows[-1][0].box[3] - line.box[3]) < 0.3 * max(line.size, 1.0):
            rows[-1].append(line)
        else:
            rows.append([line])
    out = []
    for row in rows:
        text = ""
        for line in sorted(row, key=lambda line: line.box[0]):
            column = min(int(round((line.box[0] - left) / advance)), 120)
            text += " " * max(column - len(text), 1 if text else 0) + line.text
        out.append(text)
    return "\n".join(out)


def _heading_level(line: TextLine, body: float, levels: dict, bold_level: int) -> Optional[int]:
    if _TOC_ENTRY.search(line.text):
        return None  # a table of contents' entry, however it is set
    size = round(line.size * 2) / 2
    if size in levels and len(line.text) <= 3 * MAX_BOLD_HEADING_CHARS:
        return int(levels[size])
    if line.bold and abs(line.size - body) < 0.5 and len(line.text) <= MAX_BOLD_HEADING_CHARS:
        if not line.text.endswith((".", ",", ";")) and any(ch.isalpha() for ch in line.text):
            return bold_level
    return None


def _gap_break(prev: TextLine, line: TextLine, pitch: Optional[float], factor: float = PARAGRAPH_PITCH) -> bool:
    step = line.box[3] - prev.box[3]
    if step < 0:
        return True  # moved up: another column or region
    if abs(prev.size - line.size) >= 0.5 or prev.bold != line.bold and len(line.text) > 3:
        return True
    usual = pitch if pitch else 1.25 * max(prev.size, 1.0)
    return step > factor * usual


def _runs_on(prev: TextLine, line: TextLine) -> bool:
    """The next column (or band) continues the sentence: a line that moved up or left,
    same type, after a line without a sentence end, starting in lower case."""
    moved = line.box[3] < prev.box[3] or line.box[0] > prev.box[2] or line.box[2] < prev.box[0]
    same = abs(prev.size - line.size) < 0.5 and prev.bold == line.bold
    return moved and same and line.text[:1].islower() and not prev.text.rstrip().endswith(_SENTENCE_END)


def _paragraph_break(prev: TextLine, line: TextLine, margin: float, right: float) -> bool:
    size = max(line.size, 1.0)
    if _TOC_ENTRY.search(prev.text):
        return True  # a table of contents: one entry a line
    if line.box[0] > margin + 1.0 * size and line.box[0] > prev.box[0] + 0.5 * size:
        return True  # a first-line indent
    if prev.hyphen:
        return False
    # The line before ended early: the next line's first word would have fitted after
    # it. With a sentence end (or on a line under half the column) that is a paragraph's
    # last line; ragged-right text ends its lines short only by less than a word.
    advance = (line.box[2] - line.box[0]) / max(len(line.text), 1)
    first_word = len(line.text.split(" ", 1)[0])
    if right - prev.box[2] <= advance * (first_word + 1):
        return False
    return prev.text.rstrip().endswith(_SENTENCE_END) or prev.box[2] - prev.box[0] < 0.5 * (right - margin)


def _text_start(line: TextLine, marker: Optional[re.Match]) -> float:
    if marker is None or not line.text:
        return 0.0
    share = marker.end() / max(len(line.text), 1)
    return share * (line.box[2] - line.box[0])


def _list_item(text: str, marker: Optional[re.Match]) -> str:
    if marker is None:
        return "- " + text
    token = marker.group(1)
    rest = text[marker.end() :].strip()
    if token[0].isdigit() or token.strip("().").isalpha() and len(token) > 1:
        number = token.strip("(")
        if number[-1] == ")":
            number = number[:-1] + "."
        return f"{number} {rest}"
    return f"- {rest}"


def _join(text: str, more: str, hyphen: bool) -> str:
    """Two lines of one paragraph. An end-of-line hyphen between a letter and a lower-case
    word split that word and goes; before a capital or a digit it belongs to a compound
    ("Smith-Jones", "2019-2020") and stays, without a space."""
    if len(text) > 1 and text[-1] in _HYPHENS and text[-2].isalnum() and more[:1].isalnum():
        if text[-2].isalpha() and more[:1].islower():
            return text[:-1] + more
        return text[:-1] + "-" + more
    return text + " " + more
