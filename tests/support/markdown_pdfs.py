"""Born-digital PDFs typeset in code from known Markdown (nothing checked in).

`markdown_pdf(parts)` lays out a small Markdown subset with PDFium's standard fonts
(Helvetica, Helvetica-Bold), as a word processor would: `#`/`##`/`###` headings in
larger bold type, paragraphs wrapped to the column (long words hyphenated at the end of a
line, as justified text does), `- ` and `1. ` lists with hanging indents, pipe tables
drawn as aligned cells, `![alt](figure)` as an embedded image. Each part is
(markdown, columns): a part in two columns flows down the left column, then the right.
`/Rotate` can be set on the page; the text is then drawn turned the other way, so that
it reads upright as displayed (as a landscape page in a portrait document does).
The text-layer tests and benchmarks/bench_textlayer.py compare what `PageText.layout`
recovers with the Markdown that made the page.
"""

from __future__ import annotations

import ctypes
import io
import re
from typing import List, Sequence, Tuple

PAGE = (612, 792)
MARGIN = 60
BODY = 10.0
LEADING = 13.0
PARAGRAPH_GAP = 8.0
GUTTER = 24.0
HEADINGS = {1: 18.0, 2: 14.0, 3: 11.0}


# Per /Rotate: the display's reading direction and "up" in PDF user space, so that text
# drawn with them reads upright once the viewer turns the page.
_AXES = {0: ((1, 0), (0, 1)), 90: ((0, 1), (-1, 0)), 180: ((-1, 0), (0, -1)), 270: ((0, -1), (1, 0))}


class _Typesetter:
    """Draws at display coordinates (points from the top-left of the page as shown, y
    down), whatever the page's /Rotate."""

    def __init__(self, pdf, page, fonts, page_size, rotate: int = 0):
        self.pdf, self.page, self.fonts = pdf, page, fonts
        self.width, self.height = page_size  # as displayed
        self.rotate = rotate
        self.pending: List[Tuple[float, float, object]] = []  # (top, x, text object), not yet on the page

    def user_point(self, u: float, v: float) -> Tuple[float, float]:
        """Display point -> PDF user space (the inverse of textlayer's _display_rect)."""
        w, h = self.width, self.height
        return {0: (u, h - v), 90: (v, u), 180: (w - u, v), 270: (h - v, w - u)}[self.rotate]

    def matrix(self, u: float, v: float, sx: float = 1.0, sy: float = 1.0) -> Tuple[float, ...]:
        (ax, ay), (ux, uy) = _AXES[self.rotate]
        return (ax * sx, ay * sx, ux * sy, uy * sy, *self.user_point(u, v))

    def measure(self, text: str, size: float, bold: bool = False) -> float:
        import pypdfium2.raw as raw

        obj = self._object(text, size, bold)
        left, bottom, right, top = ctypes.c_float(), ctypes.c_float(), ctypes.c_float(), ctypes.c_float()
        raw.FPDFPageObj_GetBounds(obj, left, bottom, right, top)
        raw.FPDFPageObj_Destroy(obj)
        return right.value - left.value

    def _object(self, text: str, size: float, bold: object):
        import pypdfium2.raw as raw

        obj = raw.FPDFPageObj_CreateTextObj(self.pdf, self.fonts[bold], size)
        buffer = ctypes.create_string_buffer((text + "\0").encode("utf-16-le"))
        raw.FPDFText_SetText(obj, ctypes.cast(buffer, ctypes.POINTER(raw.FPDF_WCHAR)))
        return obj

    def draw(self, text: str, x: float, top: float, size: float, bold: object = False) -> None:
        """Text whose line box starts `top` points below the page's top edge."""
        import pypdfium2.raw as raw

        obj = self._object(text, size, bold)
        raw.FPDFPageObj_Transform(obj, *self.matrix(x, top + size))
        self.pending.append((top + size, x, obj))

    def flush(self, across: bool = False) -> None:
        """Put the drawn text on the page: in drawing order, or `across` the page line by
        line (left column's line, then the right one's), as some generators write it."""
        import pypdfium2.raw as raw

        for _baseline, _x, obj in sorted(self.pending, key=lambda p: (round(p[0]), p[1])) if across else self.pending:
            raw.FPDFPage_InsertObject(self.page, obj)
        self.pending.clear()

    def wrap(self, text: str, width: float, size: float, bold: bool = False) -> List[str]:
        """Lines that fit `width`; a word that doesn't fit is hyphenated when long enough."""
        lines: List[str] = []
        line = ""
        for word in text.split():
            candidate = f"{line} {word}".strip()
            if self.measure(candidate, size, bold) <= width:
                line = candidate
                continue
            if len(word) >= 7 and word.isalpha():
                for cut in range(len(word) - 3, 2, -1):  # the longest head that fits, with its hyphen
                    head = f"{line} {word[:cut]}-".strip()
                    if self.measure(head, size, bold) <= width:
                        lines.append(head)
                        line = word[cut:]
                        break
                else:
                    lines.append(line)
                    line = word
                continue
            if line:
                lines.append(line)
            line = word
        if line:
            lines.append(line)
        return lines


def _blocks(markdown: str) -> List[Tuple[str, object]]:
    """The Markdown subset as (kind, content): heading (level, text), paragraph text,
    list [items], table [[cells]], figure alt."""
    out: List[Tuple[str, object]] = []
    for chunk in re.split(r"\n\s*\n", markdown.strip()):
        if chunk.strip().startswith("```"):
            out.append(("code", chunk.strip().splitlines()[1:-1]))
            continue
        lines = [line.strip() for line in chunk.strip().splitlines()]
        first = lines[0]
        heading = re.match(r"^(#{1,3})\s+(.*)$", first)
        if heading:
            out.append(("heading", (len(heading.group(1)), heading.group(2))))
        elif first.startswith("!["):
            out.append(("figure", first))
        elif first.startswith("|"):
            rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
            out.append(("table", [row for row in rows if not all(set(c) <= set("-: ") for c in row)]))
        elif re.match(r"^(- |\d+\. )", first):
            out.append(("list", lines))
        else:
            out.append(("paragraph", " ".join(lines)))
    return out


def markdown_pdf(
    parts: Sequence[Tuple[str, int]],
    rotate: int = 0,
    page_size=PAGE,
    across: bool = False,
    header: str = "",
    footer: str = "",
    stamp: str = "",
) -> bytes:
    """One page typeset from `parts` ((markdown, columns) each, top to bottom);
    `page_size` is the page as displayed; `across`: the text is stored line by line
    across the page rather than column by column, so PDFium's own order mixes columns;
    `header`/`footer`: a running head and a page number, 8-point, in the margins;
    `stamp`: a line turned a quarter (reading upwards) in the left margin, as arXiv
    stamps its preprints."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw
    from PIL import Image, ImageDraw

    pdf = pdfium.PdfDocument.new()
    fonts = {
        False: raw.FPDFText_LoadStandardFont(pdf, b"Helvetica"),
        True: raw.FPDFText_LoadStandardFont(pdf, b"Helvetica-Bold"),
        "mono": raw.FPDFText_LoadStandardFont(pdf, b"Courier"),
    }
    page = pdf.new_page(*(page_size[::-1] if rotate in (90, 270) else page_size))
    setter = _Typesetter(pdf, page.raw, fonts, page_size, rotate)
    top = MARGIN
    full = page_size[0] - 2 * MARGIN
    for markdown, columns in parts:
        width = (full - GUTTER * (columns - 1)) / columns
        blocks = _blocks(markdown)
        # Two columns: the blocks are split where the left column's height is about half.
        heights = [_height(setter, kind, content, width) for kind, content in blocks]
        split = len(blocks)
        if columns == 2:
            total, running = sum(heights), 0.0
            for index, h in enumerate(heights):
                running += h
                if running >= total / 2:
                    split = index + 1
                    break
        column_tops = []
        for column, chunk in enumerate((blocks[:split], blocks[split:]) if columns == 2 else (blocks,)):
            y = top
            x = MARGIN + column * (width + GUTTER)
            for kind, content in chunk:
                y = _draw(setter, pdf, page, kind, content, x, y, width, Image, ImageDraw)
            column_tops.append(y)
        top = max(column_tops) + PARAGRAPH_GAP
    if header:
        setter.draw(header, MARGIN, 28, 8.0)
    if footer:
        setter.draw(footer, page_size[0] / 2, page_size[1] - 36, 8.0)
    setter.flush(across)
    if stamp:
        import pypdfium2.raw as raw_c

        obj = setter._object(stamp, 14.0, False)
        raw_c.FPDFPageObj_Transform(obj, 0, 1, -1, 0, 36, 200)  # reads bottom to top
        raw_c.FPDFPage_InsertObject(page.raw, obj)
    if rotate:
        page.set_rotation(rotate)
    page.gen_content()
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def _height(setter: _Typesetter, kind: str, content, width: float) -> float:
    if kind == "paragraph":
        return len(setter.wrap(str(content), width, BODY)) * LEADING + PARAGRAPH_GAP
    if kind == "list":
        return sum(len(setter.wrap(item, width - 14, BODY)) for item in content) * LEADING + PARAGRAPH_GAP  # type: ignore[union-attr]
    if kind == "heading":
        return HEADINGS[content[0]] * 1.4 + PARAGRAPH_GAP  # type: ignore[index]
    if kind in ("table", "code"):
        return len(content) * LEADING + PARAGRAPH_GAP  # type: ignore[arg-type]
    return 80 + PARAGRAPH_GAP


def _draw(
    setter: _Typesetter, pdf, page, kind: str, content, x: float, y: float, width: float, Image, ImageDraw
) -> float:
    if kind == "heading":
        level, text = content
        size = HEADINGS[level]
        for line in setter.wrap(text, width, size, bold=True):
            setter.draw(line, x, y, size, bold=True)
            y += size * 1.4
        return y + PARAGRAPH_GAP
    if kind == "paragraph":
        for line in setter.wrap(str(content), width, BODY):
            setter.draw(line, x, y, BODY)
            y += LEADING
        return y + PARAGRAPH_GAP
    if kind == "list":
        for item in content:
            marker, text = item.split(" ", 1)
            setter.draw("•" if marker == "-" else marker, x, y, BODY)
            for line in setter.wrap(text, width - 14, BODY):
                setter.draw(line, x + 14, y, BODY)
                y += LEADING
        return y + PARAGRAPH_GAP
    if kind == "code":  # Courier, its indentation kept
        for line in content:
            indent = len(line) - len(line.lstrip())
            if line.strip():
                setter.draw(line.strip(), x + indent * 0.6 * BODY, y, BODY, bold="mono")
            y += LEADING
        return y + PARAGRAPH_GAP
    if kind == "table":
        cell = width / max(len(content[0]), 1)
        for row_index, row in enumerate(content):
            for column, text in enumerate(row):
                setter.draw(text, x + column * cell, y, BODY, bold=row_index == 0)
            y += LEADING
        return y + PARAGRAPH_GAP
    # A figure: a grey picture embedded as an image object, 80 points high.
    import pypdfium2 as pdfium

    picture = Image.new("RGB", (200, 80), (200, 200, 200))
    ImageDraw.Draw(picture).ellipse((20, 10, 180, 70), fill=(60, 90, 160))
    image = pdfium.PdfImage.new(pdf)
    image.set_bitmap(pdfium.PdfBitmap.from_pil(picture))
    image.set_matrix(pdfium.PdfMatrix(*setter.matrix(x, y + 80, width * 0.8, 80)))
    page.insert_obj(image)
    return y + 80 + PARAGRAPH_GAP


# --- scoring: what the test and the benchmark assert/print ---------------------------


def words(markdown: str) -> List[str]:
    """The words of Markdown, without its syntax (heading marks, list markers, pipes)."""
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)|<!--.*?-->|<[^>]+>", " ", markdown)
    text = re.sub(r"(?m)^\s*(#{1,6}|[-*•]|\d+[.)])\s+", " ", text)
    text = re.sub(r"(?m)^\s*\|?[-:| ]+\|?\s*$", " ", text)
    return [w for w in re.split(r"[\s|\\]+", text) if w]


def word_order_similarity(expected: str, got: str) -> float:
    """1.0 when the words come out in the same order (difflib's ratio over word lists)."""
    import difflib

    return difflib.SequenceMatcher(None, words(expected), words(got), autojunk=False).ratio()


def structure_counts(markdown: str) -> dict:
    """Headings, paragraphs, list items, table rows and code blocks in Markdown."""
    counts = {"headings": 0, "paragraphs": 0, "list_items": 0, "table_rows": 0, "code_blocks": 0}
    for chunk in re.split(r"\n\s*\n", markdown.strip()):
        lines = [line for line in chunk.strip().splitlines() if line.strip()]
        if not lines:
            continue
        first = lines[0].lstrip()
        if first.startswith("```"):
            counts["code_blocks"] += 1
        elif re.match(r"^#{1,6}\s", first):
            counts["headings"] += 1
        elif first.startswith("|") or first.startswith("<table"):
            counts["table_rows"] += (
                sum(1 for line in lines if not re.match(r"^\|[-:| ]+\|$", line))
                if first.startswith("|")
                else first.count("<tr")
            )
        elif re.match(r"^([-*•]|\d+[.)])\s", first):
            counts["list_items"] += sum(1 for line in lines if re.match(r"^\s*([-*•]|\d+[.)])\s", line))
        elif first.startswith("![") or first.startswith("<!--"):
            continue
        else:
            counts["paragraphs"] += 1
    return counts


# Known documents: the tests and the benchmark use the same ones.
PARAGRAPHS = [
    "Structured extraction of born-digital documents depends on the geometry of every character, "
    "because the text layer alone keeps neither paragraphs nor headings, and a reader expects "
    "both to survive the conversion unchanged.",
    "Hyphenation splits a considerable number of words at the end of a line, particularly in narrow "
    "columns, and the extractor must reassemble them without leaving stray characters behind.",
    "Reading order matters just as much: a two-column article read straight across mixes sentences "
    "from both columns into nonsense that no downstream application can repair afterwards.",
    "Tables and figures interrupt the flow of the text, yet their positions must be preserved so that "
    "the output looks like the page the author designed and published.",
]

SINGLE = (
    "# Extracting Structure from Text Layers\n\n"
    + PARAGRAPHS[0]
    + "\n\n## Method\n\n"
    + PARAGRAPHS[1]
    + "\n\n- first item of the list with enough words to wrap onto a second line of text\n"
    "- second item\n- third item\n\n" + PARAGRAPHS[2] + "\n\n### Results\n\n" + PARAGRAPHS[3] + "\n"
)

TWO_COLUMNS = [
    ("# A Two-Column Article\n\n" + PARAGRAPHS[0], 1),
    (
        "## Introduction\n\n"
        + PARAGRAPHS[1]
        + "\n\n"
        + PARAGRAPHS[2]
        + "\n\n## Approach\n\n"
        + PARAGRAPHS[3]
        + "\n\n"
        + PARAGRAPHS[0],
        2,
    ),
]

TABLE_AND_FIGURE = (
    "# Measurements\n\n"
    + PARAGRAPHS[0]
    + "\n\n| Model | Pages | Score |\n| --- | --- | --- |\n| small | 120 | 0.91 |\n| large | 480 | 0.95 |\n\n"
    "![a chart](figure)\n\n" + PARAGRAPHS[3] + "\n"
)

CODE = (
    "# Usage\n\n"
    + PARAGRAPHS[2]
    + "\n\n```\ndef read(path):\n    with open(path) as stream:\n        return stream.read()\n```\n\n"
    + PARAGRAPHS[3]
    + "\n"
)

DOCUMENTS = {
    "code": [(CODE, 1)],
    "single-column": [(SINGLE, 1)],
    "two-columns": TWO_COLUMNS,
    "table-and-figure": [(TABLE_AND_FIGURE, 1)],
}


def document_markdown(parts: Sequence[Tuple[str, int]]) -> str:
    return "\n\n".join(markdown.strip() for markdown, _ in parts) + "\n"


def superscript_pdf() -> Tuple[bytes, str]:
    """An author line with superscript affiliation marks drawn as their own raised,
    smaller text objects (as LaTeX and word processors do), then a paragraph; and the
    Markdown it should come back as."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    pdf = pdfium.PdfDocument.new()
    fonts = {
        False: raw.FPDFText_LoadStandardFont(pdf, b"Helvetica"),
        True: raw.FPDFText_LoadStandardFont(pdf, b"Helvetica-Bold"),
    }
    page = pdf.new_page(*PAGE)
    setter = _Typesetter(pdf, page.raw, fonts, PAGE)
    x, top = float(MARGIN), float(MARGIN)
    for text, raised in (("Alice Smith", False), ("1", True), (", Bob Jones", False), ("2", True)):
        size = 6.0 if raised else BODY
        setter.draw(text, x, top - (1.0 if raised else 0.0), size)
        x += setter.measure(text, size)
    for number, line in enumerate(setter.wrap(PARAGRAPHS[0], PAGE[0] - 2 * MARGIN, BODY)):
        setter.draw(line, MARGIN, top + 2 * LEADING + number * LEADING, BODY)
    setter.flush()
    page.gen_content()
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue(), "Alice Smith1, Bob Jones2\n\n" + PARAGRAPHS[0] + "\n"
