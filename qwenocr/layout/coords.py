"""Model coordinates to page coordinates.

The model sees the rendered page image and answers with boxes in one of two
conventions (FACTS §11, docs/output-formats.md):
- "relative" (the default): 0-1000 on each axis, whatever the image size, as Qwen3-VL's
  grounding does (and Qwen 3.5, most likely, after it);
- "absolute": pixels of the image the model was given, as Qwen2.5-VL did.

The rendered image is the page as displayed: PDFium applies the page's /Rotate when it
renders, and the image spans the whole (crop box of the) page, each axis stretched on
its own to a multiple of the vision patch. So a box maps to page coordinates by one
scale per axis, from image to page size *as displayed* (`PageGeometry`, width and
height after rotation). Origin top-left, y downwards, as in the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from qwenocr.layout.blocks import BBox

COORDS = ("relative", "absolute")
RELATIVE_SCALE = 1000.0

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class PageGeometry:
    """The page as displayed: its size (after /Rotate) in `unit`, and the rotation applied.

    unit: "pt" for a PDF page; "px" when only the rendered image is known (an image
    input: its boxes are then in pixels of the image sent to the model).
    """

    width: float
    height: float
    unit: str = "pt"
    rotation: Optional[int] = 0  # degrees clockwise (/Rotate); None when not known

    def to_dict(self) -> dict:
        return {
            "width": round(self.width, 2),
            "height": round(self.height, 2),
            "unit": self.unit,
            "rotation": self.rotation,
        }


def parse_bbox(value: Optional[str]) -> Optional[BBox]:
    """`data-bbox` as the model wrote it ("x1 y1 x2 y2", "x1,y1,x2,y2", "[x1, y1, x2, y2]")
    -> four numbers ordered (x0 <= x1, y0 <= y1), or None when it is not four numbers."""
    if not value:
        return None
    numbers = _NUMBER.findall(value)
    if len(numbers) != 4:
        return None
    try:
        x0, y0, x1, y1 = (float(n) for n in numbers)
    except ValueError:
        return None
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def to_page(box: BBox, image_size: Tuple[int, int], page: PageGeometry, coords: str = "relative") -> BBox:
    """A model box -> page coordinates, clamped to the page."""
    if coords == "relative":
        scale_w = scale_h = RELATIVE_SCALE
    else:
        scale_w, scale_h = float(image_size[0]), float(image_size[1])
    fx, fy = page.width / scale_w, page.height / scale_h
    x0, y0, x1, y1 = box

    def clamp(value: float, limit: float) -> float:
        return min(max(value, 0.0), limit)

    return (
        clamp(x0 * fx, page.width),
        clamp(y0 * fy, page.height),
        clamp(x1 * fx, page.width),
        clamp(y1 * fy, page.height),
    )


def union(boxes: Sequence[BBox]) -> Optional[BBox]:
    """The smallest box around `boxes`, or None for none."""
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
