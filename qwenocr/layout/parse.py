"""The model's document-parsing HTML -> `Block`s in reading order.

Qwen-VL's "qwenvl html" answer (FACTS §11) is HTML with a `data-bbox` on each element:
`<h1 data-bbox="..">`, `<p>`, `<table>` (rowspan/colspan for merged cells),
`<div class="image">`, `<div class="formula">`, `<div class="caption">`, `<header>`,
`<footer>`... Models write it imperfectly: tags left open, closed twice or out of order,
the answer cut off by --max-tokens mid-tag, a code fence around it, a `<think>` block
before it, or plain Markdown instead. Nothing here raises on any of that: Python's own
tolerant `html.parser` builds a small tree (closing what the model left open), elements
become blocks, and text that stands outside every element, or an answer with no HTML at
all, is kept as a "text" block. Boxes stay in model coordinates here; coords.py maps them.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Dict, List, Optional, Tuple, Union

from qwenocr.layout.blocks import BBox, Block
from qwenocr.layout.coords import PageGeometry, parse_bbox, to_page, union

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_CUT_TAG = re.compile(r"<[a-zA-Z/!][^<>]*$")
_STRAY_THINK = re.compile(r"</?think>", re.IGNORECASE)
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n(.*?)(?:\n?```\s*)?$", re.DOTALL)
# An answer counts as HTML when it holds at least one of the tags the prompt asks for.
_HTML_TAG = re.compile(r"<(?:h[1-6]|p|div|table|ul|ol|li|img|header|footer|section|body|html|figure|span)\b", re.I)

_VOID = frozenset({"img", "br", "hr", "meta", "input", "link", "col", "source", "wbr", "area", "base"})
_DROPPED = frozenset({"head", "title", "style", "script", "svg", "math-annotation"})
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
# An open element that a new one closes implicitly, as HTML does (<p> by a block, <li>
# by the next <li>, cells and rows by the next cell or row).
_CLOSED_BY: Dict[str, frozenset] = {
    "p": frozenset(
        {
            "p",
            "div",
            "table",
            "ul",
            "ol",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "header",
            "footer",
            "figure",
            "section",
            "pre",
            "blockquote",
        }
    ),
    "li": frozenset({"li"}),
    "td": frozenset({"td", "th", "tr"}),
    "th": frozenset({"td", "th", "tr"}),
    "tr": frozenset({"tr"}),
}
# Words in a class (or the tag itself) that say what a container is.
_CLASS_TYPES: Tuple[Tuple[Tuple[str, ...], str], ...] = (
    (("caption", "figcaption", "figure_caption", "table_caption", "image_caption"), "caption"),
    (("formula", "equation", "math", "isolate_formula"), "formula"),
    (("image", "figure", "chart", "picture", "photo", "img", "graphic", "seal"), "figure"),
    (("header", "page_header", "page-header", "running_header"), "header"),
    (("footer", "page_footer", "page-footer", "page_number", "page-number", "pagenumber", "running_footer"), "footer"),
    (("footnote", "footnotes"), "footnote"),
    (("title", "doc_title", "section_title", "heading"), "heading"),
    (("code", "algorithm"), "code"),
    (("list",), "list"),
    (("table",), "table"),
)
_TABLE_TAGS = frozenset({"table", "thead", "tbody", "tfoot", "tr", "td", "th", "caption"})
_BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "table",
        "ul",
        "ol",
        "li",
        "header",
        "footer",
        "figure",
        "figcaption",
        "section",
        "article",
        "aside",
        "nav",
        "main",
        "pre",
        "blockquote",
        "address",
        "img",
        "body",
        "html",
    }
    | set(_HEADINGS)
)


class Node:
    __slots__ = ("tag", "attrs", "children", "parent")

    def __init__(self, tag: str, attrs: Dict[str, str], parent: Optional["Node"]):
        self.tag = tag
        self.attrs = attrs
        self.children: List[Union["Node", str]] = []
        self.parent = parent


class _TreeBuilder(HTMLParser):
    """A forgiving DOM: any tag soup becomes a tree; nothing raises."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.stack: List[Node] = [self.root]
        self.skipping = 0  # inside <head>, <style>, <script>...

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        tag = tag.lower()
        if self.skipping or tag in _DROPPED:
            if tag not in _VOID:
                self.skipping += 1
            return
        # Implicit closes: a new block ends an open paragraph, a cell the previous cell.
        while len(self.stack) > 1 and tag in _CLOSED_BY.get(self.stack[-1].tag, ()):
            self.stack.pop()
        node = Node(tag, {k.lower(): (v or "") for k, v in attrs}, self.stack[-1])
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag.lower() not in _VOID and not self.skipping and len(self.stack) > 1 and self.stack[-1].tag == tag.lower():
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        tag = tag.lower()
        if self.skipping:
            if tag in _DROPPED or tag not in _VOID:
                self.skipping -= 1
            return
        # Close up to the matching open element; an end tag with none open is ignored.
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        if not self.skipping and data:
            self.stack[-1].children.append(data)


def strip_answer(answer: str) -> str:
    """The answer without any <think>...</think> (an unclosed one runs to the end) or a
    code fence around the whole of it."""
    answer = _THINK.sub("", answer)
    answer = _STRAY_THINK.sub("", answer)
    fenced = _FENCE.match(answer)
    if fenced:
        answer = fenced.group(1)
    return answer.strip()


def parse_html(answer: str) -> List[Tuple[Block, Optional[BBox]]]:
    """The blocks of a model answer, in its order, each with its box in model coordinates.

    The Block's own bbox is left None: the caller maps the model box to the page.
    """
    answer = strip_answer(answer)
    if not answer:
        return []
    if not _HTML_TAG.search(answer):
        return [(Block("text", text=answer), None)]
    # A tag cut off by the end of the answer would reach the page as text.
    answer = _CUT_TAG.sub("", answer)
    builder = _TreeBuilder()
    try:
        builder.feed(answer)
        builder.close()
    except Exception:  # html.parser is forgiving, but a page must never fail here
        return [(Block("text", text=_plain(answer)), None)]
    out: List[Tuple[Block, Optional[BBox]]] = []
    _walk(builder.root, out)
    return out


def _class_type(node: Node) -> Optional[str]:
    words = re.split(r"[\s,]+", (node.attrs.get("class", "") + " " + node.attrs.get("data-type", "")).lower())
    words = [w for w in words if w]
    for names, kind in _CLASS_TYPES:
        if any(word in names for word in words):
            return kind
    return None


def _own_box(node: Node) -> Optional[BBox]:
    return parse_bbox(node.attrs.get("data-bbox") or node.attrs.get("bbox"))


def _box(node: Node) -> Optional[BBox]:
    """The element's own box, else the union of its descendants' boxes."""
    own = _own_box(node)
    if own is not None:
        return own
    found: List[BBox] = []

    def collect(n: Node) -> None:
        for child in n.children:
            if isinstance(child, Node):
                box = _own_box(child)
                if box is not None:
                    found.append(box)
                else:
                    collect(child)

    collect(node)
    return union(found)


def _has_block_children(node: Node) -> bool:
    return any(isinstance(child, Node) and child.tag in _BLOCK_TAGS for child in node.children)


def _walk(node: Node, out: List[Tuple[Block, Optional[BBox]]]) -> None:
    """Blocks from `node`'s children; loose text between elements becomes "text" blocks."""
    loose: List[str] = []

    def flush() -> None:
        text = _normalise("".join(loose))
        loose.clear()
        if text:
            out.append((Block("text", text=text), None))

    for child in node.children:
        if isinstance(child, str):
            loose.append(child)
            continue
        if child.tag not in _BLOCK_TAGS:  # inline (<b>, <span>, <sup>...) between blocks
            loose.append(_text(child))
            continue
        flush()
        _element(child, out)
    flush()


def _element(node: Node, out: List[Tuple[Block, Optional[BBox]]]) -> None:
    tag = node.tag
    kind = _class_type(node)
    box = _box(node)
    if tag in _HEADINGS:
        if kind not in ("header", "footer", "caption"):
            out.append((Block("heading", text=_normalise(_text(node)), level=_HEADINGS[tag]), box))
            return
    if tag == "table" or (kind == "table" and _find(node, "table") is not None):
        table = node if tag == "table" else _find(node, "table")
        assert table is not None
        caption = _find(table, "caption")
        if caption is not None:
            text = _normalise(_text(caption))
            if text:
                out.append((Block("caption", text=text), _box(caption)))
        out.append((Block("table", html=table_html(table)), box))
        return
    if tag in ("ul", "ol") and kind is None:
        text = list_markdown(node)
        if text:
            out.append((Block("list", text=text), box))
        return
    if tag == "img":
        out.append((Block(kind or "figure", text=_normalise(node.attrs.get("alt", ""))), box))
        return
    if tag == "figure" or kind == "figure":
        # A figure's own text (labels in a chart) stays with it; its caption becomes a
        # block of its own, right after it.
        captions = [
            c for c in node.children if isinstance(c, Node) and (c.tag == "figcaption" or _class_type(c) == "caption")
        ]
        inner = [c for c in node.children if not (isinstance(c, Node) and c in captions)]
        text = _normalise("".join(_text(c) if isinstance(c, Node) else c for c in inner))
        alts = [n.attrs.get("alt", "") for n in _all(node, "img") if n.attrs.get("alt")]
        out.append((Block("figure", text=text or _normalise(" ".join(alts))), box))
        for caption in captions:
            out.append((Block("caption", text=_normalise(_text(caption))), _box(caption)))
        return
    if tag == "figcaption":
        kind = "caption"
    if tag in ("header", "footer") and kind is None:
        kind = tag
    if kind == "formula":
        out.append((Block("formula", text=_normalise(_text(node), keep_lines=True)), box))
        return
    if tag == "pre" or kind == "code":
        out.append((Block("code", text=_text(node).strip("\n")), box))
        return
    if kind in ("header", "footer", "caption", "footnote", "heading"):
        text = _normalise(_text(node))
        if text:
            level = 1 if kind == "heading" else None
            out.append((Block(kind, text=text, level=level), box))
        return
    if kind == "list" and _find(node, "li") is not None:
        text = list_markdown(node)
        if text:
            out.append((Block("list", text=text), box))
        return
    if _has_block_children(node):  # a container: its children are the blocks
        _walk(node, out)
        return
    text = _normalise(_text(node))
    if text:
        out.append((Block("paragraph", text=text), box))


def _find(node: Node, tag: str) -> Optional[Node]:
    for child in node.children:
        if isinstance(child, Node):
            if child.tag == tag:
                return child
            found = _find(child, tag)
            if found is not None:
                return found
    return None


def _all(node: Node, tag: str) -> List[Node]:
    found: List[Node] = []
    for child in node.children:
        if isinstance(child, Node):
            if child.tag == tag:
                found.append(child)
            found.extend(_all(child, tag))
    return found


def _text(node: Node) -> str:
    """The element's text; <br> and block ends as line breaks."""
    parts: List[str] = []
    for child in node.children:
        if isinstance(child, str):
            parts.append(child)
        elif child.tag == "br":
            parts.append("\n")
        elif child.tag == "img":
            parts.append(child.attrs.get("alt", ""))
        else:
            inner = _text(child)
            if child.tag in _BLOCK_TAGS or child.tag in ("tr",):
                parts.append("\n" + inner + "\n")
            elif child.tag in ("td", "th"):
                parts.append(" " + inner + " ")
            else:
                parts.append(inner)
    return "".join(parts)


def _normalise(text: str, keep_lines: bool = True) -> str:
    """Runs of spaces as one, blank lines dropped, each line trimmed."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    return ("\n" if keep_lines else " ").join(lines)


def _plain(answer: str) -> str:
    return _normalise(html.unescape(re.sub(r"<[^>]*>", " ", answer)))


def list_markdown(node: Node) -> str:
    """A <ul>/<ol> as Markdown list lines; nested lists indented."""
    lines: List[str] = []

    def walk(lst: Node, depth: int) -> None:
        ordered = lst.tag == "ol"
        number = 0
        items = [c for c in lst.children if isinstance(c, Node) and c.tag == "li"]
        if not items:  # a list of bare text lines
            for line in _normalise(_text(lst)).splitlines():
                lines.append("  " * depth + "- " + line)
            return
        for item in items:
            number += 1
            nested = [c for c in item.children if isinstance(c, Node) and c.tag in ("ul", "ol")]
            own = "".join(_text(c) if isinstance(c, Node) else c for c in item.children if c not in nested)
            marker = f"{number}." if ordered else "-"
            text = " ".join(_normalise(own).splitlines())
            lines.append("  " * depth + f"{marker} {text}".rstrip())
            for sub in nested:
                walk(sub, depth + 1)

    walk(node, 0)
    return "\n".join(lines)


def table_html(table: Node) -> str:
    """The table as clean HTML: table structure and rowspan/colspan only, cell text
    escaped (a nested table kept, cleaned the same way)."""

    def cell_content(cell: Node) -> str:
        parts: List[str] = []
        for child in cell.children:
            if isinstance(child, str):
                parts.append(html.escape(child, quote=False))
            elif child.tag == "table":
                parts.append(table_html(child))
            elif child.tag == "br":
                parts.append("<br>")
            else:
                parts.append(cell_content(child))
        return " ".join("".join(parts).split()) if "<table" not in "".join(parts) else "".join(parts).strip()

    def render(node: Node) -> str:
        if node.tag in ("td", "th"):
            attrs = ""
            for name in ("rowspan", "colspan"):
                value = node.attrs.get(name, "").strip()
                if value.isdigit() and int(value) > 1:
                    attrs += f' {name}="{int(value)}"'
            return f"<{node.tag}{attrs}>{cell_content(node)}</{node.tag}>"
        if node.tag == "caption":
            return ""  # a block of its own
        inner = "".join(render(c) for c in node.children if isinstance(c, Node) and c.tag in _TABLE_TAGS)
        return f"<{node.tag}>{inner}</{node.tag}>"

    return render(table)


def table_rows(table_html_text: str) -> List[List[Tuple[str, int, int, bool]]]:
    """Rows of (cell text, rowspan, colspan, holds a table) from `table_html`'s output."""
    builder = _TreeBuilder()
    builder.feed(table_html_text)
    builder.close()
    table = _find(builder.root, "table")
    if table is None:
        return []
    rows: List[List[Tuple[str, int, int, bool]]] = []

    def visit(node: Node) -> None:
        for child in node.children:
            if not isinstance(child, Node):
                continue
            if child.tag == "tr":
                cells = [c for c in child.children if isinstance(c, Node) and c.tag in ("td", "th")]
                rows.append(
                    [
                        (
                            " ".join(_text(c).split()),
                            _span(c.attrs.get("rowspan")),
                            _span(c.attrs.get("colspan")),
                            _find(c, "table") is not None,
                        )
                        for c in cells
                    ]
                )
            elif child.tag in ("thead", "tbody", "tfoot"):
                visit(child)

    visit(table)
    return rows


def _span(value: Optional[str]) -> int:
    value = (value or "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 1


def page_blocks(answer: str, image_size: Tuple[int, int], page: PageGeometry, coords: str = "relative") -> List[Block]:
    """The blocks of a model answer with their boxes in page coordinates (coords.py)."""
    blocks: List[Block] = []
    for block, box in parse_html(answer):
        if box is not None:
            block.bbox = to_page(box, image_size, page, coords)
        blocks.append(block)
    return blocks
