"""PDFs through pypdfium2, rendered in this process: the one module that calls PDFium.

PDFium is not thread-safe, so every call into it goes through `PDFIUM_LOCK`, here and
nowhere else: callers get images and text layers, never a PDFium page.

A page is rendered at the size sizing.py picks from the token budget or the DPI. Pages
of absurd declared size are drawn at a bounded scale and resized, so a hostile page
can't make PDFium allocate gigabytes. A file or page that takes PDFium too long, or
too much memory (a Flate bomb inflated at open or by a page's content), is a different
problem (a PDFium call can't be interrupted): renderguard.py runs this same class in a
child process, open and text layers included, with a deadline and a memory cap.

Every failure a user's file can cause is an `InputError` (or `EncryptedError`) with one
line saying what is wrong and what to do; nothing here lets a PDFium exception through.
"""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

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
