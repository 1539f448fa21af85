"""Blank-page detection on pages built in the test: scans that are empty but dirty,
and pages that hold very little but must still be read."""

from __future__ import annotations

import ctypes
import io
import math
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from qwenocr.pages.blank import is_blank, measure

W, H = 1600, 2000  # a US-letter-ish page rendered at about 190 dpi


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def white() -> Image.Image:
    return Image.new("RGB", (W, H), "white")


def grey_paper(level: float = 228, sigma: float = 8, seed: int = 0) -> Image.Image:
    """Recycled grey paper with sensor noise."""
    values = _rng(seed).normal(level, sigma, (H, W))
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8)).convert("RGB")


def scanned_gradient(seed: int = 1) -> Image.Image:
    """Uneven scanner lighting plus the dark shadow of a book's gutter on the left."""
    y = np.linspace(0, 1, H)[:, None]
    x = np.linspace(0, 1, W)[None, :]
    values = 245 - 40 * x - 25 * y - 60 * np.exp(-((x / 0.06) ** 2))
    values = values + _rng(seed).normal(0, 6, (H, W))
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8)).convert("RGB")


def jpeg(image: Image.Image, quality: int = 30) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def salt(image: Image.Image, fraction: float, seed: int = 2) -> Image.Image:
    values = np.array(image)
    values[_rng(seed).random(values.shape[:2]) < fraction] = 0
    return Image.fromarray(values)


def speck(image: Image.Image, radius: int = 3) -> Image.Image:
    ImageDraw.Draw(image).ellipse((800 - radius, 1000 - radius, 800 + radius, 1000 + radius), fill=(40, 40, 40))
    return image


def faint_border(image: Image.Image) -> Image.Image:
    # The edge of the sheet, as a flatbed scanner sees it: a thin grey frame.
    ImageDraw.Draw(image).rectangle((5, 5, W - 6, H - 6), outline=(200, 200, 200), width=3)
    return image


def one_line(
    image: Image.Image,
    text: str = "Signed: J. Smith, 3 March 2024",
    size: int = 10,
    fill: tuple[int, int, int] = (0, 0, 0),
) -> Image.Image:
    ImageDraw.Draw(image).text((200, 1000), text, font=ImageFont.load_default(size=size), fill=fill)
    return image


def pencil_signature(image: Image.Image, grey: int = 175, width: int = 2) -> Image.Image:
    points = [(1000 + t * 3, 1700 + 25 * math.sin(t / 6.0) + 8 * math.sin(t / 1.7)) for t in range(90)]
    ImageDraw.Draw(image).line(points, fill=(grey, grey, grey), width=width)
    return image


BLANK = {
    "white": white,
    "grey paper, noise sigma 8": grey_paper,
    "grey paper, noise sigma 20": lambda: grey_paper(sigma=20),
    "scan with gradient and gutter shadow": scanned_gradient,
    "jpeg of noisy grey paper": lambda: jpeg(grey_paper(sigma=6)),
    "salt noise on 0.2% of pixels": lambda: salt(white(), 0.002),
    "one speck of dust": lambda: speck(white()),
    "faint border": lambda: faint_border(white()),
    "dark slide background": lambda: Image.new("RGB", (W, H), (20, 30, 90)),
    "border, dust and noise together": lambda: speck(faint_border(jpeg(grey_paper(235, 5)))),
}

NOT_BLANK = {
    "one line of 10-px text": lambda: one_line(white()),
    "one line of light grey text": lambda: one_line(white(), fill=(150, 150, 150)),
    "'Page 3' in 10-px type": lambda: one_line(white(), "Page 3"),
    "text on a gradient scan": lambda: one_line(scanned_gradient()),
    "text on very noisy paper": lambda: one_line(grey_paper(sigma=20)),
    "text in a jpeg": lambda: jpeg(one_line(grey_paper(sigma=6))),
    "pencil signature": lambda: pencil_signature(white()),
    "faint thin pencil signature": lambda: pencil_signature(white(), grey=205, width=1),
    "pencil signature on a gradient scan": lambda: pencil_signature(scanned_gradient(), grey=165),
    "pencil signature on noisy paper": lambda: pencil_signature(grey_paper(235, 8), grey=170),
    "white text on a dark slide": lambda: one_line(Image.new("RGB", (W, H), (20, 30, 90)), fill=(255, 255, 255)),
}


@pytest.mark.parametrize("name", list(BLANK))
def test_empty_pages_are_blank(name: str) -> None:
    stats = measure(BLANK[name]())
    assert stats.blank, stats


@pytest.mark.parametrize("name", list(NOT_BLANK))
def test_pages_with_a_little_content_are_not_blank(name: str) -> None:
    stats = measure(NOT_BLANK[name]())
    assert not stats.blank, stats


def test_margins_between_blank_and_not_blank() -> None:
    # The verdicts above are not knife-edge: one line of text is well clear of the
    # threshold, dirt well below it.
    assert measure(one_line(white())).ink_pixels >= 40
    assert measure(pencil_signature(white())).ink_pixels >= 60
    assert measure(speck(white())).ink_pixels <= 6
    assert measure(scanned_gradient()).ink_pixels == 0


def test_noise_raises_the_threshold() -> None:
    clean, noisy = measure(white()), measure(grey_paper(sigma=20))
    assert clean.noise == 0 and clean.threshold == 12
    assert noisy.threshold > 2 * clean.threshold
    assert 220 <= noisy.background <= 236


# --------------------------------------------------------------------------------------
# Pages as the pipeline gets them: rendered from a PDF by PDFium.
# --------------------------------------------------------------------------------------


def _pdf(text: str | None) -> bytes:
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    doc = pdfium.PdfDocument.new()
    page = doc.new_page(612, 792)
    if text is not None:
        obj = pdfium_c.FPDFPageObj_NewTextObj(doc, b"Helvetica", ctypes.c_float(9))
        wide = (text + "\x00").encode("utf-16-le")
        pdfium_c.FPDFText_SetText(obj, ctypes.cast(ctypes.c_char_p(wide), ctypes.POINTER(pdfium_c.FPDF_WCHAR)))
        pdfium_c.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 72, 400)
        pdfium_c.FPDFPage_InsertObject(page, obj)
        assert pdfium_c.FPDFPage_GenerateContent(page)
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def _render(data: bytes, dpi: int = 200) -> Image.Image:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(data)
    try:
        return doc[0].render(scale=dpi / 72).to_pil()
    finally:
        doc.close()


def test_pdf_page_with_a_little_text_is_not_blank() -> None:
    data = _pdf("Received 12 March 2024 - J. Smith")
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(data)
    assert "Received 12 March" in doc[0].get_textpage().get_text_bounded()
    doc.close()
    for dpi in (72, 150, 200, 300):
        assert not is_blank(_render(data, dpi)), dpi


def test_empty_pdf_page_is_blank() -> None:
    for dpi in (72, 200, 300):
        assert is_blank(_render(_pdf(None), dpi))


def test_pdf_made_by_pillow_from_a_scan() -> None:
    # A scanned page wrapped in a PDF by Pillow, rendered back by PDFium.
    for page, expected in ((one_line(scanned_gradient()), False), (scanned_gradient(), True)):
        buf = io.BytesIO()
        page.save(buf, "PDF", resolution=190)
        assert is_blank(_render(buf.getvalue(), 150)) is expected


# --------------------------------------------------------------------------------------
# Image modes and sizes.
# --------------------------------------------------------------------------------------


def test_image_modes() -> None:
    page = one_line(white())
    for mode in ("L", "1", "P", "CMYK", "LA", "RGBA", "I", "F"):
        assert not is_blank(page.convert(mode)), mode
        assert is_blank(white().convert(mode)), mode
    # 16-bit grayscale scans.
    deep = np.asarray(page.convert("L"), dtype=np.uint16) * 257
    assert not is_blank(Image.fromarray(deep))
    assert is_blank(Image.fromarray(np.full((H, W), 60000, dtype=np.uint16)))


def test_transparent_page_is_paper() -> None:
    clear = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    assert is_blank(clear)
    ImageDraw.Draw(clear).text((200, 1000), "Only this line", font=ImageFont.load_default(size=12), fill=(0, 0, 0, 255))
    assert not is_blank(clear)


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (7, 3), (15, 15), (3, 2000), (2000, 3), (300, 400), (5000, 7000)])
def test_any_size_is_handled(size: tuple[int, int]) -> None:
    assert is_blank(Image.new("L", size, 255))


def test_small_and_huge_pages_with_text() -> None:
    small = Image.new("L", (425, 550), 255)
    ImageDraw.Draw(small).text((40, 200), "Signed: J. Smith", font=ImageFont.load_default(size=10), fill=0)
    assert not is_blank(small)
    huge = Image.new("L", (5100, 6600), 255)  # 600 dpi letter
    ImageDraw.Draw(huge).text((600, 3000), "Signed: J. Smith, 3 March", font=ImageFont.load_default(size=30), fill=0)
    assert not is_blank(huge)


def test_fast_on_a_1600x2000_page() -> None:
    page = one_line(grey_paper(sigma=6))
    measure(page)
    timings = []
    for _ in range(7):
        start = time.perf_counter()
        measure(page)
        timings.append(time.perf_counter() - start)
    # Measured 10-15 ms on a loaded 2-core machine; the bound only catches a blow-up.
    assert sorted(timings)[3] < 0.25, timings
