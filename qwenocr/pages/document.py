"""Opening an input: sniff what it is, open it as the right kind of `Document`, pick pages.

The front door of the pages room. `open_document` trusts a file's content, not its
name: a PDF becomes a `GuardedPdfDocument` (opened, read and rendered by PDFium in a
guarded child process unless `timeout` is None: renderguard.py), an image
an `ImageDocument` (images.py). A `Document` knows its page count and renders one page
at a time, at the size `RenderSettings` asks for (sizing.py).

Every failure a user's file can cause is an `InputError` (or `EncryptedError`) with one
line saying what is wrong and what to do; nothing here lets an OS, PDFium or Pillow
exception through. `parse_page_ranges` reads `--pages` against a document's page count.
`page_readers` gives the scan several readers of one document, to render pages in
parallel where that helps (a guarded PDF: one child process each).

Imports go one way: document -> renderguard -> pdf -> base/sizing, and images -> base/sizing.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Tuple, Union

from qwenocr.errors import InputError, UsageError
from qwenocr.pages.base import Document, display_name
from qwenocr.pages.images import IMAGE_SUFFIXES, ImageDocument
from qwenocr.pages.renderguard import DEFAULT_TIMEOUT, GuardedPdfDocument
from qwenocr.pages.sizing import RenderSettings, image_tokens

if TYPE_CHECKING:
    from PIL import Image

# What callers outside the room need, from one place.
__all__ = [
    "IMAGE_SUFFIXES",
    "Document",
    "display_name",
    "RenderSettings",
    "image_tokens",
    "open_document",
    "embedded_images",
    "page_geometry",
    "page_readers",
    "parse_page_ranges",
    "sniff_kind",
]


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


def open_document(
    path: Union[str, Path],
    password: Optional[str] = None,
    data: Optional[bytes] = None,
    timeout: Optional[float] = DEFAULT_TIMEOUT,
) -> Document:
    """Open an input by sniffing its content (not trusting its name).

    `path` "-" with `data` is stdin. Raises InputError/EncryptedError with one-line messages.
    The document's `name` (and every message) shows the path as `display_name` does.
    A PDF is opened, read and rendered in a guarded child process, each step within
    `timeout` seconds (pass `RenderSettings.timeout`, i.e. `--render-timeout`); with
    None it is opened in this process, without a limit (renderguard.py).
    """
    name = display_name(str(path))
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
        return GuardedPdfDocument(source, name, password, timeout)
    return ImageDocument(source, name)


def page_geometry(document: Document, number: int) -> Optional[Tuple[float, float, int]]:
    """Page `number`'s size in PDF points as displayed (after /Rotate, as rendered) and its
    rotation in degrees clockwise; None for an image input (its boxes stay in pixels).
    Read-only; layout mode maps the model's boxes with it (qwenocr/layout/coords.py). A
    guarded PDF asks its render child (renderguard's `geometry` request)."""
    own = getattr(document, "page_geometry", None)
    if not callable(own):
        return None
    width, height, rotation = own(number)
    return width, height, rotation


def embedded_images(
    document: Document,
    number: int,
    boxes: List[Tuple[float, float, float, float]],
    max_pixels: int,
    timeout: Optional[float],
) -> List[Optional["Image.Image"]]:
    """For each figure box (points on page `number` as displayed), the PDF's own image
    object it is, at its own pixels (pdf.PdfDocument.embedded_images has the rule), or
    None: no match, or an input with no image objects (an image input). A guarded PDF
    decodes them in its render child within `timeout` seconds (None: in this process)."""
    if isinstance(document, GuardedPdfDocument):
        return document.embedded_images(number, boxes, max_pixels, timeout)
    own = getattr(document, "embedded_images", None)  # a PdfDocument: in this process
    if callable(own):
        return list(own(number, boxes, max_pixels))
    return [None] * len(boxes)


def page_readers(document: Document, count: int) -> List[Document]:
    """Up to `count` readers of `document` that can render pages at the same time:
    `document` itself first, then readers of their own that the caller must close.

    Only a guarded PDF has more than one: each further reader renders in a child process
    of its own. A PDF rendered in this process (`--render-timeout 0`) is serialised by
    PDFium's lock, and an image is decoded in this process by Pillow from one open file
    (a frame is a seek on it, cheap next to any model's page): one reader each.
    """
    readers: List[Document] = [document]
    if isinstance(document, GuardedPdfDocument):
        while len(readers) < count:
            reader = document.reader()
            if reader is None:
                break
            readers.append(reader)
    return readers
