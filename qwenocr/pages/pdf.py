"""PDFs through pypdfium2, rendered in this process: the one module that calls PDFium.

PDFium is not thread-safe, so every call into it goes through `PDFIUM_LOCK`, here and
nowhere else: callers get images and text layers, never a PDFium page.

A page is rendered at the size sizing.py picks from the token budget or the DPI. Pages
of absurd declared size are drawn at a bounded scale and resized, so a hostile page
can't make PDFium allocate gigabytes. A file or page that takes PDFium too long, or
too much memory (a Flate bomb inflated at open or by a page's content), is a different
problem (a PDFium call can't be interrupted): renderguard.py runs this same class in a
child process, open and text layers included, with a deadline and a memory cap.

Layout mode's figures on born-digital pages come from here too (`embedded_images`): a
figure whose box is one image object's is that image, at its own pixels, as the page shows
it (see the function for the rule).

Every failure a user's file can cause is an `InputError` (or `EncryptedError`) with one
line saying what is wrong and what to do; nothing here lets a PDFium exception through.
"""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union

from PIL import Image

from qwenocr.errors import EncryptedError, InputError, QwenOCRError
from qwenocr.pages.base import Document
from qwenocr.pages.sizing import RenderSettings, target_size

if TYPE_CHECKING:
    from qwenocr.pages.textlayer import PageText

# A rendered bitmap may hold at most this many times the target's pixels before it is
# resized down: pages of absurd aspect ratio (a 1e6 x 10 pt strip) would otherwise make
# PDFium allocate gigabytes for a bitmap that ends up a few thousand pixels wide.
RENDER_OVERSHOOT = 4

PDFIUM_LOCK = threading.RLock()

# A figure is an embedded image when their boxes (on the page as displayed) overlap this
# much (intersection over union): the model's or the text layer's box is the image's, give
# or take a margin.
EMBEDDED_MIN_IOU = 0.85
# ... and no other image covers more than this share of the figure (a figure made of
# several images is cropped from the page, which shows them all).
EMBEDDED_OTHER_SHARE = 0.05
# An image declaring more pixels than this is not decoded for a figure (the crop, at a
# bounded resolution, stands in): 64 MP, 256 MB as RGBA.
MAX_EMBEDDED_PIXELS = 1 << 26


class PdfDocument(Document):
    """A PDF held open by PDFium; pages are rendered in this process, without a deadline."""

    kind = "pdf"

    def __init__(self, source: Union[Path, bytes], name: str, password: Optional[str] = None):
        import pypdfium2 as pdfium

        self.name = name
        self._pdfium = pdfium
        self._doc: Any = None
        with PDFIUM_LOCK:
            try:
                # Bytes are wrapped so that pdfium reads from our buffer; a path is opened
                # by pdfium itself (no copy of a large file in memory).
                self._doc = pdfium.PdfDocument(source if isinstance(source, bytes) else str(source), password=password)
            except pdfium.PdfiumError as error:
                raise _pdf_open_error(error, name, password, source) from None
            self.page_count = len(self._doc)
            # Form fields are drawn with their values. pypdfium2's PDFium is built
            # without a JavaScript engine (V8), so a PDF's scripts never run.
            try:
                self._doc.init_forms()
            except pdfium.PdfiumError:
                pass
        if self.page_count == 0:
            self.close()
            raise InputError(f"{name}: the PDF has no pages", "check the file; there is nothing to OCR")

    def render(self, number: int, settings: RenderSettings) -> Image.Image:
        with PDFIUM_LOCK:
            page = self._load_page(number)
            try:
                width_pt, height_pt = page.get_size()
                if not (width_pt > 0 and height_pt > 0) or not math.isfinite(width_pt * height_pt):
                    raise InputError(f"{self.name}: page {number} has no area (size {width_pt}x{height_pt} pt)")
                if settings.dpi is not None:
                    natural_w, natural_h = width_pt * settings.dpi / 72, height_pt * settings.dpi / 72
                else:
                    natural_w, natural_h = width_pt, height_pt
                # Whatever size the page declares (1e6 x 1e6 pt included), the target
                # stays within the token budget and the engine's cap.
                w, h = target_size(natural_w, natural_h, settings)
                scale = max(w / width_pt, h / height_pt)
                if width_pt * height_pt * scale * scale > RENDER_OVERSHOOT * w * h:
                    scale = math.sqrt(RENDER_OVERSHOOT * w * h / (width_pt * height_pt))
                # draw_forms renders form field appearances; rotation=0 means "as the page
                # says" (pdfium applies /Rotate itself).
                bitmap = page.render(scale=scale, rotation=0, draw_annots=True, may_draw_forms=True)
                image = bitmap.to_pil()
            except self._pdfium.PdfiumError as error:
                raise InputError(
                    f"{self.name}: page {number} could not be rendered ({error})",
                    "the page is damaged; the other pages are read",
                ) from None
            except MemoryError:
                raise InputError(f"{self.name}: page {number} needs more memory to render than is free") from None
            finally:
                page.close()
        image = image.convert("RGB")
        if image.size != (w, h):
            image = image.resize((w, h), Image.Resampling.LANCZOS)
        return image

    def page_geometry(self, number: int) -> tuple[float, float, int]:
        """Page `number`'s size in points as displayed (after its /Rotate: what `render`
        draws) and its rotation in degrees clockwise. Read-only; layout mode maps the
        model's boxes with it (qwenocr/layout/coords.py)."""
        with PDFIUM_LOCK:
            page = self._load_page(number)
            try:
                width, height = page.get_size()  # PDFium swaps the sides for a quarter turn
                return float(width), float(height), int(page.get_rotation())
            except self._pdfium.PdfiumError as error:
                raise InputError(f"{self.name}: page {number}: its size could not be read ({error})") from None
            finally:
                page.close()

    def text_layer(self, number: int) -> PageText:
        """The page's text and its geometry, read under the lock; the page is closed again."""
        from qwenocr.pages.textlayer import extract

        with PDFIUM_LOCK:
            page = self._load_page(number)
            try:
                return extract(page)
            finally:
                page.close()

    def embedded_images(
        self, number: int, boxes: Sequence[Tuple[float, float, float, float]], max_pixels: int
    ) -> List[Optional[Image.Image]]:
        """For each figure box (points on the page as displayed): the page's image object it
        is, as an RGB image at its own pixels (at most `max_pixels`, scaled down to that),
        turned and flipped as the page shows it; None where no image object matches.

        The rule: exactly one image object in the page's own content (not inside a form
        XObject, whose placement is not known here), drawn upright or turned by quarter
        turns (not skewed), overlaps the box with an IoU of at least EMBEDDED_MIN_IOU; no
        other image covers more than EMBEDDED_OTHER_SHARE of the box; and no text is drawn
        over the image (labels on a chart would be lost). The image is drawn by PDFium with
        its masks (transparency over white) at one pixel per image pixel."""
        with PDFIUM_LOCK:
            page = self._load_page(number)
            try:
                return _embedded_images(self._pdfium, self._doc, page, boxes, max_pixels)
            except self._pdfium.PdfiumError as error:
                raise InputError(f"{self.name}: page {number}: its images could not be read ({error})") from None
            finally:
                page.close()

    def _load_page(self, number: int) -> Any:
        """The pdfium page; lock held. A page object PDFium can't load is an InputError."""
        if self._doc is None:
            raise InputError(f"{self.name}: page {number}: the document is closed")
        try:
            return self._doc[number - 1]
        except self._pdfium.PdfiumError as error:
            raise InputError(
                f"{self.name}: page {number} could not be loaded ({error})",
                "the page is damaged; the other pages are read",
            ) from None

    def close(self) -> None:
        with PDFIUM_LOCK:
            if self._doc is not None:
                self._doc.close()
                self._doc = None


def _pdf_open_error(
    error: Exception, name: str, password: Optional[str], source: Union[Path, bytes, None] = None
) -> QwenOCRError:
    code = getattr(error, "err_code", None)
    import pypdfium2.raw as raw

    if code == raw.FPDF_ERR_PASSWORD:
        if password:
            return EncryptedError(
                f"{name}: the password is wrong", "check --password / QWENOCR_PDF_PASSWORD / --password-file"
            )
        return EncryptedError(
            f"{name}: the PDF is encrypted and needs a password",
            "pass it with QWENOCR_PDF_PASSWORD=… or --password-file FILE (or --password)",
        )
    if code == raw.FPDF_ERR_SECURITY:
        return EncryptedError(
            f"{name}: the PDF uses an unsupported security handler", "decrypt it first, e.g. with qpdf --decrypt"
        )
    if code == raw.FPDF_ERR_FILE:
        return InputError(f"{name}: the file could not be read", "check that it exists and is readable")
    # PDFium refuses a document whose page tree is empty as if it were damaged: say
    # what it really is when the file shows it plainly.
    if source is not None and _declares_no_pages(source):
        return InputError(f"{name}: the PDF has no pages", "check the file; there is nothing to OCR")
    return InputError(
        f"{name}: not a valid PDF, or the file is damaged or truncated",
        "try repairing it, e.g. with qpdf or by printing it to PDF again",
    )


_PAGE_TREE_EMPTY = re.compile(rb"/Type\s*/Pages\b[^>]*?/Kids\s*\[\s*\]|/Kids\s*\[\s*\][^>]*?/Type\s*/Pages\b")
_PAGE_OBJECT = re.compile(rb"/Type\s*/Page(?![sA-Za-z0-9])")
_SMALL_PDF = 1 << 20


def _declares_no_pages(source: Union[Path, bytes]) -> bool:
    """A small, uncompressed PDF with an empty /Kids and no /Type /Page object anywhere."""
    try:
        if isinstance(source, bytes):
            data = source if len(source) <= _SMALL_PDF else b""
        else:
            data = source.read_bytes() if source.stat().st_size <= _SMALL_PDF else b""
    except OSError:
        return False
    return bool(data) and bool(_PAGE_TREE_EMPTY.search(data)) and not _PAGE_OBJECT.search(data)


Rect = Tuple[float, float, float, float]


def _iou(a: Rect, b: Rect) -> float:
    inter = _overlap(a, b)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _overlap(a: Rect, b: Rect) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _embedded_images(
    pdfium: Any, doc: Any, page: Any, boxes: Sequence[Rect], max_pixels: int
) -> List[Optional[Image.Image]]:
    """PdfDocument.embedded_images on an open page; lock held."""
    import pypdfium2.raw as pdfium_c

    from qwenocr.pages.textlayer import _display_rect

    left, bottom, right, top = page.get_cropbox()
    width, height = right - left, top - bottom
    rotation = int(page.get_rotation()) % 360

    def display(bounds: Any) -> Rect:
        x0, y0, x1, y1 = bounds
        return _display_rect((x0 - left, y0 - bottom, x1 - left, y1 - bottom), width, height, rotation)

    images = []  # (display rect, the object or None where it can't be placed)
    texts = []
    kinds = (pdfium_c.FPDF_PAGEOBJ_IMAGE, pdfium_c.FPDF_PAGEOBJ_TEXT)
    for obj in page.get_objects(filter=kinds, max_depth=4):
        rect = display(obj.get_bounds() if hasattr(obj, "get_bounds") else obj.get_pos())  # pypdfium2 5 / 4
        if obj.type == pdfium_c.FPDF_PAGEOBJ_TEXT:
            texts.append(rect)
            continue
        a, b, c, d, _, _ = obj.get_matrix().get()
        square = (abs(b) < 1e-6 and abs(c) < 1e-6) or (abs(a) < 1e-6 and abs(d) < 1e-6)
        images.append((rect, obj if obj.level == 0 and square else None))
    found: List[Optional[Image.Image]] = []
    for box in boxes:
        area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
        matches = [(rect, obj) for rect, obj in images if _iou(rect, box) >= EMBEDDED_MIN_IOU]
        others = [rect for rect, obj in images if _overlap(rect, box) > EMBEDDED_OTHER_SHARE * area]
        if len(matches) != 1 or len(others) != 1 or matches[0][1] is None:
            found.append(None)
            continue
        rect, obj = matches[0]
        if any(rect[0] <= (t[0] + t[2]) / 2 <= rect[2] and rect[1] <= (t[1] + t[3]) / 2 <= rect[3] for t in texts):
            found.append(None)  # text drawn over the image: the crop keeps it
            continue
        found.append(_image_pixels(pdfium, pdfium_c, doc, page, obj, rotation, max_pixels))
    return found


def _image_pixels(
    pdfium: Any, pdfium_c: Any, doc: Any, page: Any, obj: Any, rotation: int, max_pixels: int
) -> Optional[Image.Image]:
    """The image object drawn at one pixel per image pixel (fewer beyond `max_pixels`),
    turned and flipped as its matrix and the page's /Rotate show it, over white."""
    px_w, px_h = obj.get_px_size() if hasattr(obj, "get_px_size") else obj.get_size()  # pypdfium2 5 / 4
    if px_w <= 0 or px_h <= 0 or px_w * px_h > MAX_EMBEDDED_PIXELS:
        return None
    scale = min(1.0, math.sqrt(max_pixels / (px_w * px_h)))
    w, h = max(1, round(px_w * scale)), max(1, round(px_h * scale))
    original = obj.get_matrix()
    a, b, c, d, _, _ = original.get()
    # The same orientation, scaled to w x h pixels: PDFium draws it with its masks.
    if abs(b) < 1e-6 and abs(c) < 1e-6:
        matrix = pdfium.PdfMatrix(math.copysign(w, a), 0, 0, math.copysign(h, d), 0, 0)
    else:  # a quarter turn: the image's width runs along the page's height
        matrix = pdfium.PdfMatrix(0, math.copysign(w, b), math.copysign(h, c), 0, 0, 0)
    obj.set_matrix(matrix)
    try:
        raw = pdfium_c.FPDFImageObj_GetRenderedBitmap(doc, page, obj)
    finally:
        obj.set_matrix(original)
    if not raw:
        return None
    drawn = pdfium.PdfBitmap.from_raw(raw).to_pil()
    if drawn.mode in ("RGBA", "LA"):
        white = Image.new("RGBA", drawn.size, (255, 255, 255, 255))
        drawn = Image.alpha_composite(white, drawn.convert("RGBA"))
    drawn = drawn.convert("RGB")
    # The page's /Rotate turns what is drawn on it clockwise.
    turns = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}
    return drawn.transpose(turns[rotation]) if rotation in turns else drawn
