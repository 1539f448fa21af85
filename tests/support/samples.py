"""Small real input files built in code: multi-page PDFs and images with visible text.

Pages carry a large page number drawn in the image so that tests can tell pages apart
and so that no page looks blank to the blank-page detector (except where asked).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable, Optional

from PIL import Image, ImageDraw


def page_image(number: int, size=(850, 1100), blank: bool = False, text: Optional[str] = None) -> Image.Image:
    image = Image.new("RGB", size, "white")
    if not blank:
        draw = ImageDraw.Draw(image)
        label = text or f"Page {number}"
        for row in range(12):
            draw.text((60, 60 + row * 80), f"{label} - line {row + 1} of the sample text", fill="black")
        draw.rectangle((40, 40, size[0] - 40, size[1] - 40), outline="black", width=3)
    return image


def write_pdf(path: Path, pages: int = 3, blank_pages: Iterable[int] = (), size=(850, 1100)) -> Path:
    """An image-only PDF (like a scan) with `pages` pages; `blank_pages` are 1-based."""
    blank = set(blank_pages)
    images = [page_image(n, size, blank=n in blank) for n in range(1, pages + 1)]
    images[0].save(path, "PDF", resolution=100.0, save_all=True, append_images=images[1:])
    return path


def pdf_bytes(pages: int = 2) -> bytes:
    buffer = io.BytesIO()
    images = [page_image(n) for n in range(1, pages + 1)]
    images[0].save(buffer, "PDF", resolution=100.0, save_all=True, append_images=images[1:])
    return buffer.getvalue()


def write_rotated_pdf(path: Path, rotation: int = 90) -> Path:
    """A one-page portrait PDF whose page carries /Rotate `rotation`."""
    import pypdfium2 as pdfium

    source = path.with_suffix(".src.pdf")
    write_pdf(source, pages=1)
    document = pdfium.PdfDocument(str(source))
    document[0].set_rotation(rotation)
    document.save(str(path))
    document.close()
    source.unlink()
    return path


def write_tiff(path: Path, frames: int = 3) -> Path:
    images = [page_image(n, (600, 800)) for n in range(1, frames + 1)]
    images[0].save(path, "TIFF", save_all=True, append_images=images[1:])
    return path


def dark_quarter(image: Image.Image) -> str:
    """Which quarter of `image` is darkest ("top-left", ...): where a black mark went."""
    import numpy as np

    gray = image.convert("L")
    w, h = gray.size
    quarters = {
        "top-left": (0, 0, w // 2, h // 2),
        "top-right": (w // 2, 0, w, h // 2),
        "bottom-left": (0, h // 2, w // 2, h),
        "bottom-right": (w // 2, h // 2, w, h),
    }
    means = {name: float(np.asarray(gray.crop(box)).mean()) for name, box in quarters.items()}
    return min(means, key=lambda name: means[name])
