"""Blocks -> the page's Markdown.

Each block becomes what Markdown has for it: a heading `#`-line, a paragraph, list lines,
a `$$` display formula, a fenced code block. Tables follow one rule (documented in
docs/output-formats.md): a table whose every row has the same number of cells, with no
merged cell (rowspan/colspan) and no table inside a cell, is a pipe table (its first
row the header row); any other table is kept as its HTML, which Markdown renders as it
is, since a pipe table cannot hold merged cells. A figure whose file was written
(scan/figures.py) is an image link, `![Figure 1, page 3](out_files/page-003-figure-1.png)`;
one without a file leaves an HTML comment where it stood (`<!-- figure -->`). Its own text
(labels, if the model read any) comes after it, and its caption follows as a paragraph.
Headers and footers are paragraphs, left out with `drop_headers_footers`; the JSON keeps
them either way.
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence

from qwenocr.layout.blocks import HEADER_FOOTER, Block
from qwenocr.layout.parse import table_rows


def to_markdown(
    blocks: Sequence[Block],
    drop_headers_footers: bool = False,
    figure_files: Optional[Sequence[Optional[str]]] = None,
    page: Optional[int] = None,
) -> str:
    """The page's Markdown. `figure_files`, one per block (None where there is no file),
    links figure blocks to their image files; `page` is the page number in their alt text."""
    parts: List[str] = []
    figure = 0
    for index, block in enumerate(blocks):
        if block.type == "figure":
            figure += 1
        if drop_headers_footers and block.type in HEADER_FOOTER:
            continue
        link = figure_files[index] if figure_files is not None and index < len(figure_files) else None
        if block.type == "figure" and link:
            text = figure_markdown(block, link, figure, page)
        else:
            text = block_markdown(block)
        if text:
            parts.append(text)
    return "\n\n".join(parts)


# A link destination with spaces, parentheses or angle brackets must be written <...>
# (CommonMark), with < and > inside escaped.
_PLAIN_DESTINATION = re.compile(r"^[^\s()<>\\]+$")


def figure_markdown(block: Block, link: str, index: int, page: Optional[int]) -> str:
    """`![Figure 1, page 3](path)`, then the figure's own text if it has any."""
    alt = f"Figure {index}" + (f", page {page}" if page is not None else "")
    destination = link if _PLAIN_DESTINATION.match(link) else "<" + link.replace("<", "%3C").replace(">", "%3E") + ">"
    text = (block.text or "").strip()
    return f"![{alt}]({destination})" + (f"\n\n{text}" if text else "")


def block_markdown(block: Block) -> str:
    text = (block.text or "").strip()
    kind = block.type
    if kind == "table":
        return table_markdown(block.html or "")
    if kind == "heading":
        return f"{'#' * min(max(block.level or 1, 1), 6)} {' '.join(text.split())}" if text else ""
    if kind == "formula":
        if not text:
            return ""
        if text.startswith("$$") or text.startswith("\\[") or text.startswith("\\begin"):
            return text
        inner = text[1:-1].strip() if text.startswith("$") and text.endswith("$") and len(text) > 1 else text
        return f"$$\n{inner}\n$$"
    if kind == "code":
        return f"```\n{block.text or ''}\n```" if text else ""
    if kind == "figure":
        return "<!-- figure -->" + (f"\n\n{text}" if text else "")
    return text


def is_simple_table(rows: Sequence[Sequence[tuple]]) -> bool:
    """One cell count on every row, no merged cell, no table in a cell."""
    if not rows or not rows[0]:
        return False
    width = len(rows[0])
    for row in rows:
        if len(row) != width:
            return False
        for _text, rowspan, colspan, nested in row:
            if rowspan > 1 or colspan > 1 or nested:
                return False
    return True


def table_markdown(html_text: str) -> str:
    """A pipe table for a simple table, the HTML itself for any other (see the module docstring)."""
    rows = table_rows(html_text)
    if not rows:
        return ""
    if not is_simple_table(rows):
        return html_text

    def line(cells: Sequence[tuple]) -> str:
        return "| " + " | ".join(cell[0].replace("\\", "\\\\").replace("|", "\\|") for cell in cells) + " |"

    lines = [line(rows[0]), "| " + " | ".join("---" for _ in rows[0]) + " |"]
    lines.extend(line(row) for row in rows[1:])
    return "\n".join(lines)
