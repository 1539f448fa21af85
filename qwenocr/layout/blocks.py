"""The `Block`: one positioned element of a page, and its JSON shape.

A page in layout mode is a list of blocks in reading order. Each block has a `type`
(`BLOCK_TYPES`), a `bbox` in page coordinates (`[x0, y0, x1, y1]`: PDF points for a PDF,
origin at the page's top-left corner as displayed, i.e. after its /Rotate, y growing
downwards; pixels of the rendered image for an image input; null when the model gave
none), and either `text` or, for tables, `html`. Headings carry a `level` (1-6).

The same shape is what other producers of blocks (the text layer) write as plain dicts:
`check_block` is the one validator, used for checkpoints read back from disk.
docs/output-formats.md documents the shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple

# What a block can be. "text" is what could not be read as structure (the model's answer
# was not HTML, or text stood outside every element): the answer is kept, as text.
BLOCK_TYPES = (
    "heading",
    "paragraph",
    "list",
    "table",
    "figure",
    "formula",
    "caption",
    "header",
    "footer",
    "footnote",
    "code",
    "text",
)
# Running headers and footers (page numbers included): left out of the Markdown with
# --drop-headers-footers, always kept in the JSON.
HEADER_FOOTER = ("header", "footer")

BBox = Tuple[float, float, float, float]


@dataclass
class Block:
    type: str  # one of BLOCK_TYPES
    bbox: Optional[BBox] = None  # page coordinates (see the module docstring), or None
    text: Optional[str] = None  # every type but "table"
    html: Optional[str] = None  # "table" only: sanitised HTML (rowspan/colspan kept)
    level: Optional[int] = None  # "heading" only: 1-6

    def to_dict(self) -> dict:
        """The JSON shape: type, bbox, then text or html (and level for a heading)."""
        record: dict = {"type": self.type, "bbox": None if self.bbox is None else [round(v, 2) for v in self.bbox]}
        if self.html is not None:
            record["html"] = self.html
        else:
            record["text"] = self.text or ""
        if self.level is not None:
            record["level"] = self.level
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "Block":
        """A block from its JSON shape (as `check_block` accepts it)."""
        bbox = record.get("bbox")
        return cls(
            type=record["type"],
            bbox=None if bbox is None else (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])),
            text=record.get("text"),
            html=record.get("html"),
            level=record.get("level"),
        )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_block(record: Any) -> Optional[str]:
    """What is wrong with a block's JSON shape, or None when it is valid.

    Unknown types are accepted (a newer qwenocr, or another producer, may add some) as
    long as they are strings; everything else is checked strictly.
    """
    if not isinstance(record, Mapping):
        return "a block is not an object"
    if not isinstance(record.get("type"), str) or not record["type"]:
        return "a block has no type"
    bbox = record.get("bbox")
    if bbox is not None:
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
            return "a block's bbox is not four numbers"
    has_text, has_html = "text" in record, "html" in record
    if has_text == has_html:
        return "a block needs text or html"
    if not isinstance(record["text" if has_text else "html"], str):
        return "a block's text is not a string"
    level = record.get("level")
    if level is not None and not (isinstance(level, int) and not isinstance(level, bool) and 1 <= level <= 6):
        return "a heading's level is not 1-6"
    return None


def check_blocks(records: Any) -> Optional[str]:
    """What is wrong with a page's `blocks`, or None when every block is valid."""
    if not isinstance(records, list):
        return "blocks is not a list"
    for record in records:
        problem = check_block(record)
        if problem:
            return problem
    return None


def from_dicts(records: Sequence[Mapping[str, Any]]) -> List[Block]:
    return [Block.from_dict(record) for record in records]
