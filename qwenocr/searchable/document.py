"""A whole searchable PDF: the input's pages as they were, each page's text under it.

For a PDF input the file itself is the base: pikepdf (qpdf) opens it, every page the
model read gets its text layer (textlayer.py), and the rest of the file (fonts, images,
annotations, outlines, metadata, other pages) is saved as it was. Pages read from their
own text layer (`--mode auto`) already are searchable and are left alone, as are blank
and failed pages and pages outside `--pages`.

For an image input each frame becomes one page at the image's own resolution: its
pixels unchanged (a JPEG's own bytes when it needs no turning; others lossless), the page
size from its DPI (300 when the file does not say).

Positions: layout mode's blocks carry page coordinates (points for a PDF page as
displayed, pixels of the rendered image for an image input: `layout` says which, and its
size), scaled to the page here; a page turned upright for OCR (`rotation_fix`) has its
lines laid out upright and turned back with it. A page without blocks gets its text
over the whole page.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from qwenocr.errors import InputError
from qwenocr.searchable.lines import Line
from qwenocr.searchable.textlayer import (
    Matrix,
    TextLayer,
    compose,
    display_to_user,
    flate_stream,
    page_lines,
    save_options,
    turn_box,
    upright_to_display,
)

if TYPE_CHECKING:
    import pikepdf
    from PIL import Image

DEFAULT_IMAGE_DPI = 300.0  # an image that does not say its resolution: a common scan's


@dataclass
class Written:
    """What went into one searchable PDF."""

    pages: int  # pages in the output
    layered: int  # pages given a text layer
    lines: int  # lines of text placed


def _needs_layer(record: Mapping) -> bool:
    return record.get("source") == "model" and bool((record.get("text") or "").strip() or record.get("blocks"))


def placed_lines(record: Mapping, display: Tuple[float, float], to_user: Matrix) -> List[Tuple[Line, Matrix]]:
    """One page's lines, each with its map to the page's user space.

    `display` is the page's size as displayed (after /Rotate) in points; `to_user` maps
    that frame (y down) to user space."""
    layout = record.get("layout")
    frame = (float(layout["width"]), float(layout["height"])) if layout else display
    # The blocks' frame (layout's width x height, in its unit) -> the page as displayed.
    scale: Matrix = (display[0] / frame[0], 0.0, 0.0, display[1] / frame[1], 0.0, 0.0)
    turned = int(record.get("rotation_fix") or 0) % 360
    upright = (frame[1], frame[0]) if turned in (90, 270) else frame
    to_frame = upright_to_display(turned, upright)
    blocks = []
    for block in record.get("blocks") or ():
        bbox = block.get("bbox")
        if bbox and turned:
            block = {**block, "bbox": list(turn_box((bbox[0], bbox[1], bbox[2], bbox[3]), to_frame))}
        blocks.append(block)
    to_page = compose(to_user, compose(scale, to_frame))
    return [(line, to_page) for line in page_lines(blocks, record.get("text") or "", upright)]


def _inherited(page: "pikepdf.Page", key: str) -> Any:
    node: Any = page.obj
    while node is not None:
        if key in node:
            return node[key]
        node = node.get("/Parent")
    return None


def _page_frame(page: "pikepdf.Page") -> Tuple[Tuple[float, float], Matrix]:
    """The page's size as displayed, and the map from that frame to its user space: the
    visible area is the crop box within the media box (PDF 32000 14.11.2), as PDFium renders it."""
    media = [float(v) for v in (_inherited(page, "/MediaBox") or [0, 0, 612, 792])]
    crop_value = _inherited(page, "/CropBox")
    crop = [float(v) for v in crop_value] if crop_value is not None else media
    mx0, mx1 = sorted((media[0], media[2]))
    my0, my1 = sorted((media[1], media[3]))
    x0, y0 = max(min(crop[0], crop[2]), mx0), max(min(crop[1], crop[3]), my0)
    x1, y1 = min(max(crop[0], crop[2]), mx1), min(max(crop[1], crop[3]), my1)
    if x1 <= x0 or y1 <= y0:
        x0, y0, x1, y1 = mx0, my0, mx1, my1
    rotation = int(_inherited(page, "/Rotate") or 0) % 360
    size = (x1 - x0, y1 - y0) if rotation in (0, 180) else (y1 - y0, x1 - x0)
    return size, display_to_user((x0, y0, x1, y1), rotation)


def _save(pdf: "pikepdf.Pdf", out: BinaryIO, **extra: Any) -> None:
    # qpdf writes to a seekable stream; a pipe (stdout) gets the bytes afterwards.
    options = {**save_options(), **extra}
    if options.get("encryption"):  # encrypting rewrites every stream: qpdf then picks the levels
        options.pop("stream_decode_level")
    try:
        seekable = out.seekable()
    except (AttributeError, ValueError):
        seekable = False
    if seekable:
        pdf.save(out, **options)
        return
    buffer = io.BytesIO()
    pdf.save(buffer, **options)
    out.write(buffer.getbuffer())


def pdf_with_text(
    source: Union[Path, bytes], password: Optional[str], records: Sequence[Mapping], out: BinaryIO
) -> Written:
    """The PDF `source` with each model page's text laid under it, written to `out`."""
    import pikepdf

    name = "stdin" if isinstance(source, bytes) else str(source)
    try:
        pdf = pikepdf.open(io.BytesIO(source) if isinstance(source, bytes) else source, password=password or "")
    except pikepdf.PasswordError:
        raise InputError(f"{name}: the PDF needs a password to be written back", "pass it with --password") from None
    except pikepdf.PdfError as error:
        raise InputError(f"{name}: the PDF could not be read to add its text layer ({error})") from None
    with pdf:
        try:
            by_number: Dict[int, Mapping] = {int(r["number"]): r for r in records}
            layer = TextLayer(pdf)
            lines = 0
            for index, page in enumerate(pdf.pages):
                record = by_number.get(index + 1)
                if record is None or not _needs_layer(record):
                    continue
                display, to_user = _page_frame(page)
                lines += layer.add_page(page, placed_lines(record, display, to_user))
            layer.finish()
            # An encrypted input stays encrypted, with its own settings and passwords.
            _save(pdf, out, encryption=bool(pdf.is_encrypted))
        except pikepdf.PdfError as error:  # a damaged file qpdf opened but cannot write back
            raise InputError(
                f"{name}: the PDF could not be written back with its text layer ({error})",
                "repair it (e.g. qpdf in.pdf fixed.pdf) and run again: the pages read are kept",
            ) from None
        return Written(len(pdf.pages), layer.pages, lines)


def _frames(source: Union[Path, bytes]) -> Tuple["Image.Image", bool]:
    from PIL import Image

    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    # A JPEG that needs no turning and no conversion goes in as its own bytes.
    orientation = image.getexif().get(0x0112, 1)
    passthrough = image.format == "JPEG" and image.mode in ("L", "RGB") and orientation in (1, None)
    return image, passthrough


def _pixels(frame: "Image.Image") -> "Image.Image":
    """A frame in a mode PDF takes as is: 1-bit, grey or RGB (transparency over white)."""
    from PIL import Image

    if frame.mode in ("1", "L", "RGB"):
        return frame
    if frame.mode in ("RGBA", "LA", "P", "PA") or "transparency" in frame.info:
        rgba = frame.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if frame.mode.startswith("I"):  # 16/32-bit grey
        return frame.convert("L")
    return frame.convert("RGB")


def _image_stream(pdf: "pikepdf.Pdf", frame: "Image.Image", jpeg: Optional[bytes]) -> "pikepdf.Stream":
    import pikepdf

    spaces = {"1": pikepdf.Name.DeviceGray, "L": pikepdf.Name.DeviceGray, "RGB": pikepdf.Name.DeviceRGB}
    if jpeg is not None:
        stream = pikepdf.Stream(pdf, jpeg)
        stream.Filter = pikepdf.Name.DCTDecode
    else:
        stream = flate_stream(pdf, frame.tobytes())
    stream.Type = pikepdf.Name.XObject
    stream.Subtype = pikepdf.Name.Image
    stream.Width, stream.Height = frame.size
    stream.ColorSpace = spaces[frame.mode]
    stream.BitsPerComponent = 1 if frame.mode == "1" else 8
    return stream


def _dpi(image: "Image.Image") -> Tuple[float, float]:
    found = image.info.get("dpi")
    try:
        x, y = float(found[0]), float(found[1])  # type: ignore[index]
    except (TypeError, ValueError, IndexError):
        return DEFAULT_IMAGE_DPI, DEFAULT_IMAGE_DPI
    if not (10 <= x <= 10000 and 10 <= y <= 10000):  # absent (0), or nonsense
        return DEFAULT_IMAGE_DPI, DEFAULT_IMAGE_DPI
    return x, y


def images_with_text(source: Union[Path, bytes], records: Sequence[Mapping], out: BinaryIO) -> Written:
    """A PDF of one page per frame of the image `source`, each with its text under it."""
    import pikepdf
    from PIL import ImageOps

    image, passthrough = _frames(source)
    with image, pikepdf.new() as pdf:
        by_number: Dict[int, Mapping] = {int(r["number"]): r for r in records}
        layer = TextLayer(pdf)
        frames = getattr(image, "n_frames", 1) or 1
        lines = 0
        for number in range(1, frames + 1):
            image.seek(number - 1)
            frame = _pixels(ImageOps.exif_transpose(image.copy()))
            jpeg = None
            if passthrough and frames == 1:
                jpeg = source if isinstance(source, bytes) else Path(source).read_bytes()
            dpi_x, dpi_y = _dpi(image)
            width, height = frame.width * 72.0 / dpi_x, frame.height * 72.0 / dpi_y
            page = pdf.add_blank_page(page_size=(width, height))
            name = page.add_resource(_image_stream(pdf, frame, jpeg), pikepdf.Name.XObject, prefix="Scan")
            drawing = f"q {width:.4f} 0 0 {height:.4f} 0 0 cm {name} Do Q\n".encode("ascii")
            page.contents_add(pikepdf.Stream(pdf, drawing))
            record = by_number.get(number)
            if record is not None and _needs_layer(record):
                to_user = display_to_user((0.0, 0.0, width, height), 0)
                lines += layer.add_page(page, placed_lines(record, (width, height), to_user))
        layer.finish()
        _save(pdf, out)
        return Written(frames, layer.pages, lines)
