"""Inputs to page images: PDFs through pypdfium2, and PNG/JPEG/TIFF/WebP images.

A `Document` is one opened input. It knows its page count and renders one page at a
time, on demand, so that memory stays flat however long the document is. The render
size follows a visual-token budget (`max_image_tokens`): Qwen 3.5's vision tower turns
every 32x32 pixel block into one token (patch 16, spatial merge 2), so the page is
scaled until its token count just fits the budget, and both sides are snapped to
multiples of 32. `--dpi` is the explicit alternative; it is still capped at what the
engine accepts.

PDFium is not thread-safe, so every call into it goes through `PDFIUM_LOCK`.

A PDFium call can't be interrupted, and a hostile page can keep it busy for hours. With
`RenderSettings.timeout` set (the CLI's `--render-timeout`, 120 s by default), PDF pages
are rendered in a child process that is killed when a page takes longer
(`qwenocr/pages/renderguard.py`); the page becomes an error and the run goes on. Opening a
document and reading its page count stay in this process: they are linear in the file's
size.

Every failure a user's file can cause is an `InputError` (or `EncryptedError`) with one
line saying what is wrong and what to do; nothing here lets a PDFium or Pillow exception
through.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

from PIL import Image, ImageOps

from qwenocr.errors import EncryptedError, InputError, UsageError

# One visual token covers a 32x32 pixel block (patch 16 x spatial merge 2).
TOKEN_SIDE = 32
# The Qwen 3.5 processor's pixel bounds (FACTS §4): at least 64 tokens' worth.
MIN_PIXELS = 65_536
MAX_PIXELS = 16_777_216
DEFAULT_MAX_IMAGE_TOKENS = 1536
# A rendered bitmap may hold at most this many times the target's pixels before it is
# resized down: pages of absurd aspect ratio (a 1e6 x 10 pt strip) would otherwise make
# PDFium allocate gigabytes for a bitmap that ends up a few thousand pixels wide.
RENDER_OVERSHOOT = 4
# Pillow refuses images above this pixel count as "decompression bombs"; we keep its
# guard, with a limit a large-format scan still fits in.
Image.MAX_IMAGE_PIXELS = 300_000_000

PDFIUM_LOCK = threading.RLock()

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif"}


@dataclass(frozen=True)
class RenderSettings:
    """How big a page image to make: a visual-token budget, or a fixed DPI."""

    max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS
    dpi: Optional[float] = None
    # The most tokens the engine accepts for one image (llama.cpp caps Qwen-VL at 4096).
    engine_max_tokens: int = MAX_PIXELS // (TOKEN_SIDE * TOKEN_SIDE)
    # Seconds one PDF page may take to render, in a child process that is killed after
    # that (renderguard.py); None renders in this process, without a limit.
    timeout: Optional[float] = None


def image_tokens(width: int, height: int) -> int:
    """Visual tokens the model spends on an image of this size (after 32-px snapping)."""
    return max(1, round(width / TOKEN_SIDE)) * max(1, round(height / TOKEN_SIDE))


def fit_to_budget(width: float, height: float, max_tokens: int) -> tuple[int, int]:
    """The largest (w, h), multiples of 32 with the aspect ratio kept, within max_tokens.

    width/height are the natural size in any unit; the result is in pixels.
    """
    if width <= 0 or height <= 0:
        raise ValueError("page has no area")
    max_tokens = max(MIN_PIXELS // (TOKEN_SIDE * TOKEN_SIDE), max_tokens)
    scale = math.sqrt(max_tokens * TOKEN_SIDE * TOKEN_SIDE / (width * height))
    # Snap down so we never exceed the budget; then grow the short side if there is room.
    w = max(1, math.floor(width * scale / TOKEN_SIDE))
    h = max(1, math.floor(height * scale / TOKEN_SIDE))
    while w * h > max_tokens and (w > 1 or h > 1):
        if w >= h:
            w -= 1
        else:
            h -= 1
    return w * TOKEN_SIDE, h * TOKEN_SIDE


def target_size(width_px: float, height_px: float, settings: RenderSettings) -> tuple[int, int]:
    """Final pixel size for a page of this natural size (pixels at the requested DPI,
    or PDF points / native pixels when the token budget decides)."""
    cap = settings.engine_max_tokens
    if settings.dpi is None:
        return fit_to_budget(width_px, height_px, min(settings.max_image_tokens, cap))
    w = max(TOKEN_SIDE, round(width_px / TOKEN_SIDE) * TOKEN_SIDE)
    h = max(TOKEN_SIDE, round(height_px / TOKEN_SIDE) * TOKEN_SIDE)
    if w * h < MIN_PIXELS:  # below the processor's minimum: grow to it
        return fit_to_budget(width_px, height_px, MIN_PIXELS // (TOKEN_SIDE * TOKEN_SIDE))
    if (w // TOKEN_SIDE) * (h // TOKEN_SIDE) > cap:  # more than the engine takes: shrink
        return fit_to_budget(width_px, height_px, cap)
    return w, h


def parse_page_ranges(spec: Optional[str], page_count: int) -> List[int]:
    """'1-3,7,10-' (1-based, inclusive, as a PDF viewer counts) -> sorted page numbers.

    Raises UsageError for malformed specs and for ranges outside the document.
    """
    if spec is None or spec.strip() == "":
        return list(range(1, page_count + 1))
    pages: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                first_s, last_s = part.split("-", 1)
                first = int(first_s) if first_s.strip() else 1
                last = int(last_s) if last_s.strip() else page_count
            else:
                first = last = int(part)
        except ValueError:
            raise UsageError(
                f"invalid page range {part!r} in --pages {spec!r}",
                "use page numbers like 1-3,7,10- (1-based)",
            ) from None
        if first < 1 or last < first:
            raise UsageError(f"invalid page range {part!r} in --pages {spec!r}", "pages count from 1")
        if first > page_count:
            raise UsageError(f"--pages {spec!r} asks for page {first}, but the document has {page_count} page(s)")
        pages.update(range(first, min(last, page_count) + 1))
    if not pages:
        raise UsageError(f"--pages {spec!r} selects no page")
    return sorted(pages)


class Document:
    """One input: a page count and on-demand rendering of single pages."""

    name: str  # shown in progress and output ("-" for stdin)
    kind: str  # "pdf" or "image"
    page_count: int

    def render(self, number: int, settings: RenderSettings) -> Image.Image:
        raise NotImplementedError

    def text_layer(self, number: int) -> Optional[object]:
        """The pdfium page for text-layer extraction (PDFs only), else None."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> "Document":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PdfDocument(Document):
    kind = "pdf"

    def __init__(self, source: Union[Path, bytes], name: str, password: Optional[str] = None):
        import pypdfium2 as pdfium

        self.name = name
        self._pdfium = pdfium
        self._source = source
        self._password = password
        self._worker = None  # renderguard.RenderWorker, started on the first guarded render
        self._doc = None
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

    def page_size_pt(self, number: int) -> tuple[float, float]:
        with PDFIUM_LOCK:
            page = self._load_page(number)
            try:
                # get_size() follows /Rotate, so a landscape-rotated page reports its
                # displayed (rotated) width and height.
                return page.get_size()
            finally:
                page.close()

    def render(self, number: int, settings: RenderSettings) -> Image.Image:
        if settings.timeout is not None:
            return self._guarded_render(number, settings)
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

    def _guarded_render(self, number: int, settings: RenderSettings) -> Image.Image:
        from qwenocr.pages.renderguard import RenderWorker

        if self._worker is None or self._worker.timeout != settings.timeout:
            if self._worker is not None:
                self._worker.close()
            self._worker = RenderWorker(self._source, self.name, self._password, settings.timeout)
        return self._worker.render(number, settings)

    def _load_page(self, number: int):
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

    def text_layer(self, number: int):
        return self._load_page(number)

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()  # first: it can't be holding the lock, and it ends a wait
        with PDFIUM_LOCK:
            doc = getattr(self, "_doc", None)
            if doc is not None:
                doc.close()
                self._doc = None


class ImageDocument(Document):
    """A PNG/JPEG/WebP (one page) or a multi-frame TIFF/GIF (one page per frame)."""

    kind = "image"

    def __init__(self, source: Union[Path, bytes], name: str):
        self.name = name
        try:
            with warnings.catch_warnings():
                # Pillow only warns between its limit and twice it; a warning would be
                # a stray line on stderr, and such an image is too large anyway.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                self._image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
                self._image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise InputError(
                f"{name}: the image is too large to decode ({str(error).split(',')[0]})",
                "scale it down, or split it into pages",
            ) from None
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise InputError(
                f"{name}: the image could not be decoded ({error})",
                "check that the file is a valid PNG, JPEG, TIFF or WebP",
            ) from None
        except MemoryError:
            raise InputError(
                f"{name}: the image is too large to decode in the memory that is free", "scale it down"
            ) from None
        self.page_count = getattr(self._image, "n_frames", 1) or 1

    def render(self, number: int, settings: RenderSettings) -> Image.Image:
        try:
            self._image.seek(number - 1)
            frame = ImageOps.exif_transpose(self._image.copy())
        except (OSError, ValueError, EOFError) as error:
            raise InputError(f"{self.name}: frame {number} could not be decoded ({error})") from None
        frame = _flatten(frame)
        width, height = frame.size
        if settings.dpi is not None:
            # Scale from the image's own resolution to the requested DPI (72 if unknown).
            source_dpi = (self._image.info.get("dpi") or (72, 72))[0] or 72
            width, height = width * settings.dpi / source_dpi, height * settings.dpi / source_dpi
        w, h = target_size(width, height, settings)
        if frame.size != (w, h):
            frame = frame.resize((w, h), Image.Resampling.LANCZOS)
        return frame

    def close(self) -> None:
        self._image.close()


def _flatten(image: Image.Image) -> Image.Image:
    """RGB on a white background (transparent scans would otherwise turn black)."""
    if image.mode in ("RGBA", "LA", "P") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _pdf_open_error(error: Exception, name: str, password: Optional[str], source: Union[Path, bytes, None] = None):
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


def sniff_kind(head: bytes, name: str) -> str:
    """'pdf' or 'image' from the first bytes; raises InputError for anything else."""
    if head.lstrip(b"\x00\t\n\r\f ")[:5].startswith(b"%PDF") or b"%PDF-" in head[:1024]:
        return "pdf"
    signatures = (
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"II*\x00",
        b"MM\x00*",
        b"GIF87a",
        b"GIF89a",
        b"BM",
    )
    if head.startswith(signatures) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if not head:
        raise InputError(f"{name}: the file is empty")
    raise InputError(f"{name}: not a PDF or a supported image (PNG, JPEG, TIFF, WebP)", "check the file type")


def open_document(path: Union[str, Path], password: Optional[str] = None, data: Optional[bytes] = None) -> Document:
    """Open an input by sniffing its content (not trusting its name).

    `path` "-" with `data` is stdin. Raises InputError/EncryptedError with one-line messages.
    """
    name = str(path)
    if data is None:
        path = Path(path)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise InputError(f"{name}: no such file", "check the path") from None
        except PermissionError:
            raise InputError(
                f"{name}: permission denied", "check the permissions of the file and its directories"
            ) from None
        except OSError as error:
            raise InputError(f"{name}: could not be read ({error.strerror})", "check the path") from None
        if stat.S_ISDIR(info.st_mode):
            raise InputError(f"{name}: is a directory", "pass the files inside it")
        if not stat.S_ISREG(info.st_mode):
            # A FIFO or a device would block or never end; stdin is read with "-".
            raise InputError(f"{name}: not a regular file", "pass a PDF or image file; to read a pipe, use - for stdin")
        try:
            with open(path, "rb") as handle:
                head = handle.read(2048)
        except PermissionError:
            raise InputError(f"{name}: permission denied", "check the file's permissions") from None
        except OSError as error:
            raise InputError(f"{name}: could not be read ({error.strerror})") from None
        kind = sniff_kind(head, name)
        source: Union[Path, bytes] = path
    else:
        kind = sniff_kind(data[:2048], name)
        source = data
    if kind == "pdf":
        return PdfDocument(source, name, password)
    return ImageDocument(source, name)
