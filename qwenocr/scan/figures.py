"""Figures in layout mode: each figure block written as a PNG, the PDF's own image or a crop.

Where the files go (`FigureTarget`, made per document by scan/run.py): with `-o out.md`
into `out_files/` beside it (the folder named after the output, whatever its format),
with `--figures DIR` into DIR; with stdout output and no `--figures` nowhere (the
Markdown keeps its `<!-- figure -->` comment). A file is named `page-003-figure-1.png`:
the page number (three digits at least) and the figure's place among the page's figure
blocks, counted in reading order (a figure that is skipped keeps its number, so the
names of the others do not depend on it). The block gains `"file"`: the path relative
to the output file's folder (what a Markdown viewer resolves), or, with stdout output,
the path as `--figures` gave it.

The resolution is chosen for the figure: a PDF page is rendered again, once for all its
figures, at the DPI that gives its smallest figure about `FIGURE_LONG_SIDE` pixels on the
long side, between `MIN_DPI` and `MAX_DPI`, the whole render capped at `MAX_PAGE_PIXELS`
(a poster-sized page is rendered smaller rather than in gigapixels). The render goes
through the document like any other (renderguard: in the child process, within
`--render-timeout`). An image input has no better resolution than the image sent to the
model (its pixels are the page's), so its figures are cropped from that.

On a born-digital page the figure may be the PDF's own image: when its box is one image
object's (pages/pdf.py `embedded_images` has the rule: IoU >= 0.85 on the page as
displayed, one image, no text over it), that image is written at its own pixels (at most
`MAX_PAGE_PIXELS`), turned and flipped as the page shows it, instead of a crop. It is
decoded in the render child within `--render-timeout`, like a render; when that fails the
figure is cropped. The block says which way its file was made: `"figure_source":
"embedded"` or `"crop"` (absent on a file kept from an earlier run, see below).

Pages the model read turned (`rotation_fix`, pages/orientation.py) have their boxes on the
page as displayed, so their figures are cut from it sideways: each file is turned by the
same correction, so that the figure stands upright as the model saw it.

Text-layer pages (`--mode auto`/`text`) get their figures the same way: their blocks'
figures are the page's image objects, so they are normally the embedded images.

A figure with no box, or a box with no area once clamped to the page (outside it, or
degenerate), gets no file; a render or a write that fails costs the figures of that page
(a notice says so), never the page. Files are written atomically (atomicio), and only
under names of this pattern: a rerun replaces its own files and touches nothing else.
A page resumed from the checkpoint keeps a figure file that is already there and makes
again only the missing ones.
"""

from __future__ import annotations

import io
import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from PIL import Image

from qwenocr.errors import QwenOCRError
from qwenocr.pages.base import Document
from qwenocr.pages.sizing import TOKEN_SIDE, RenderSettings

log = logging.getLogger(__name__)

# A figure is rendered so that its long side has about this many pixels ...
FIGURE_LONG_SIDE = 1600
# ... at no less than screen-and-print quality and no more than a scan's resolution.
MIN_DPI = 150.0
MAX_DPI = 300.0
# The re-rendered page, whatever its size: 16.7 MP (a Letter page at 300 dpi is 8.4 MP).
MAX_PAGE_PIXELS = 16_777_216
# A crop smaller than this on either side is no figure (a stray box, a rule).
MIN_SIDE_PX = 4


@dataclass(frozen=True)
class FigureTarget:
    """Where one document's figures go, and how its output refers to them."""

    directory: Path  # the files' folder (created at the first figure)
    link_base: Optional[Path] = None  # the output file's folder: links relative to it; None: as given

    def link(self, name: str) -> str:
        path = self.directory / name
        if self.link_base is None:
            return path.as_posix()
        try:
            return Path(os.path.relpath(path, self.link_base)).as_posix()
        except ValueError:  # another drive (Windows): no relative path exists
            return path.resolve().as_posix()


def figure_name(page: int, index: int) -> str:
    """`page-003-figure-1.png` for the first figure of page 3."""
    return f"page-{page:03d}-figure-{index}.png"


def figure_dpi(bbox: Tuple[float, float, float, float]) -> float:
    """The DPI that gives a figure of this box (in points) `FIGURE_LONG_SIDE` pixels on its
    long side, within MIN_DPI..MAX_DPI."""
    long_side = max(bbox[2] - bbox[0], bbox[3] - bbox[1], 1e-6)
    return min(MAX_DPI, max(MIN_DPI, FIGURE_LONG_SIDE * 72.0 / long_side))


def crop_box(
    bbox: Tuple[float, float, float, float], page_size: Tuple[float, float], image_size: Tuple[int, int]
) -> Optional[Tuple[int, int, int, int]]:
    """A box in page units -> the pixel box on an image of the whole displayed page (one
    scale per axis, as the render stretches each on its own), or None when it has no
    area worth a file."""
    page_w, page_h = page_size
    if not (page_w > 0 and page_h > 0) or not all(math.isfinite(v) for v in bbox):
        return None
    fx, fy = image_size[0] / page_w, image_size[1] / page_h
    x0 = min(max(math.floor(bbox[0] * fx), 0), image_size[0])
    y0 = min(max(math.floor(bbox[1] * fy), 0), image_size[1])
    x1 = min(max(math.ceil(bbox[2] * fx), 0), image_size[0])
    y1 = min(max(math.ceil(bbox[3] * fy), 0), image_size[1])
    if x1 - x0 < MIN_SIDE_PX or y1 - y0 < MIN_SIDE_PX:
        return None
    return x0, y0, x1, y1


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def add_figures(
    document: Document,
    number: int,
    blocks: List[dict],
    layout: Optional[dict],
    model_image: Optional[Image.Image],
    render: RenderSettings,
    target: FigureTarget,
    notice: Callable[[str], None],
    keep_existing: bool = False,
    turned: int = 0,
) -> None:
    """Write page `number`'s figure files and set each written figure block's `"file"`.

    `blocks` are the page's block dicts (changed in place: a `"file"` left from before is
    dropped first); `layout` its geometry (the page record's "layout": width, height,
    unit). `model_image`: the image the model saw, when there is one (an image input's
    figures are cropped from it). `keep_existing`: a resumed page: a file that is there
    already is linked as it is. `turned`: the page's `rotation_fix` (degrees clockwise the
    model's image was turned): each file is turned as much.
    """
    for block in blocks:
        block.pop("file", None)
        block.pop("figure_source", None)
    figures: List[Tuple[int, dict, Tuple[float, float, float, float]]] = []
    index = 0
    for block in blocks:
        if block.get("type") != "figure":
            continue
        index += 1
        bbox = block.get("bbox")
        if bbox is None or len(bbox) != 4:
            continue
        figures.append((index, block, (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))))
    if not figures or not layout:
        return
    page_size = (float(layout.get("width") or 0), float(layout.get("height") or 0))
    if keep_existing:
        missing = []
        for figure in figures:
            name = figure_name(number, figure[0])
            if (target.directory / name).is_file():
                figure[1]["file"] = target.link(name)
            else:
                missing.append(figure)
        figures = missing
        if not figures:
            return
    made: List[Tuple[int, dict, Image.Image, str]] = []  # index, block, the figure, its source
    if layout.get("unit") == "pt":  # a PDF page: its own images first
        embedded = _embedded(document, number, [bbox for _, _, bbox in figures], render)
        made = [
            (i, block, image, "embedded")
            for (i, block, _), image in zip(figures, embedded, strict=True)
            if image is not None
        ]
        done = {i for i, _, _, _ in made}
        figures = [figure for figure in figures if figure[0] not in done]
    made.extend(_crops(document, number, figures, layout, page_size, model_image, render, notice))
    from qwenocr.pages.orientation import turn

    for index, block, image, source in sorted(made, key=lambda item: item[0]):
        name = figure_name(number, index)
        try:
            target.directory.mkdir(parents=True, exist_ok=True)
            from qwenocr.atomicio import write_bytes

            write_bytes(target.directory / name, _png(turn(image, turned % 360)))
        except OSError as error:
            notice(f"page {number}: figure {index} was not saved: {target.directory / name}: {error.strerror or error}")
            continue
        block["file"] = target.link(name)
        block["figure_source"] = source


def _embedded(
    document: Document, number: int, boxes: List[Tuple[float, float, float, float]], render: RenderSettings
) -> List[Optional[Image.Image]]:
    """The page's own images for these boxes (None where a box is none), decoded like a
    render (in the child, within its deadline); all None when that fails: the crops
    stand in, so a failure here costs no figure."""
    from qwenocr.pages.document import embedded_images

    try:
        found = embedded_images(document, number, boxes, MAX_PAGE_PIXELS, render.timeout)
        if len(found) == len(boxes):
            return found
        log.warning(f"page {number}: {len(found)} embedded images for {len(boxes)} figures; figures cropped")
    except QwenOCRError as error:
        log.info(f"page {number}: its embedded images were not read, figures cropped: {error.one_line()}")
    except Exception as error:  # noqa: BLE001 - see the docstring
        log.info(f"page {number}: its embedded images were not read, figures cropped: {error}")
    return [None] * len(boxes)


def _crops(
    document: Document,
    number: int,
    figures: List[Tuple[int, dict, Tuple[float, float, float, float]]],
    layout: dict,
    page_size: Tuple[float, float],
    model_image: Optional[Image.Image],
    render: RenderSettings,
    notice: Callable[[str], None],
) -> List[Tuple[int, dict, Image.Image, str]]:
    """The figures cut from the page rendered again at their resolution (or from the
    model's image); a page that cannot be rendered costs its figures, with a notice."""
    if not figures:
        return []
    try:
        if layout.get("unit") == "pt":
            dpi = max(figure_dpi(bbox) for _, _, bbox in figures)
            settings = replace(render, dpi=dpi, engine_max_tokens=MAX_PAGE_PIXELS // (TOKEN_SIDE * TOKEN_SIDE))
            page = document.render(number, settings)
        else:  # pixels of the model's image: crop that image (rendered again when resumed)
            page = model_image if model_image is not None else document.render(number, render)
    except QwenOCRError as error:
        notice(f"page {number}: its figures were not saved: {error.one_line()}")
        return []
    except Exception as error:  # noqa: BLE001 - a page PDFium or Pillow chokes on costs its figures only
        notice(f"page {number}: its figures were not saved: the page could not be rendered ({error})")
        return []
    crops = []
    for index, block, bbox in figures:
        box = crop_box(bbox, page_size, page.size)
        if box is None:
            log.info(f"page {number}: figure {index} has no area on the page; no file")
            continue
        crops.append((index, block, page.crop(box), "crop"))
    return crops
