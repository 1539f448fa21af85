"""Blocks -> the page's Markdown.

Each block becomes what Markdown has for it: a heading `#`-line, a paragraph, list lines,
a `$$` display formula, a fenced code block. Tables follow one rule (documented in
docs/output-formats.md): a table whose every row has the same number of cells, with no
merged cell (rowspan/colspan) and no table inside a cell, is a pipe table (its first
row the header row); any other table is kept as its HTML, which Markdown renders as it
is, since a pipe table cannot hold merged cells. A figure leaves an HTML comment where it
stood (`<!-- figure -->`), its own text (labels, if the model read any) after it; its
caption follows as a paragraph. Headers and footers are paragraphs, left out with
`drop_headers_footers`; the JSON keeps them either way.
"""

from __future__ import annotations

from typing import List, Sequence

from qwenocr.layout.blocks import HEADER_FOOTER, Block
from qwenocr.layout.parse import table_rows


def to_markdown(blocks: Sequence[Block], drop_headers_footers: bool = False) -> str:
    parts: List[str] = []
    for block in blocks:
        if drop_headers_footers and block.type in HEADER_FOOTER:
            continue
        text = block_markdown(block)
        if text:
            parts.append(text)
    return "\n\n".join(parts)


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
