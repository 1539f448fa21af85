"""Small PDFs with known text layers, built in code (nothing checked in).

Used by tests/test_textlayer.py and reusable by the `--mode auto` tests: each builder
returns the PDF as bytes, one page per call unless said otherwise.

- `born_digital_pdf`: real text drawn with the standard Helvetica font (usable).
- `image_only_pdf`: a page that is only a picture, like a scan (no text).
- `stamped_scan_pdf`: a scan with a one-line stamp of real text at the bottom.
- `ocr_layer_pdf`: a scan with a full text layer on top (an earlier OCR).
- `garbled_pdf`: text whose ToUnicode map sends every code into the private-use area
  (or control characters), which is what a broken font map looks like to PDFium.
- `soup_pdf`: Helvetica text made of random Latin-1 glyphs and symbols.
- `mixed_pdf`: several of the above as pages of one document, in order.
"""

from __future__ import annotations

import ctypes
import io
import random
from typing import List, Sequence

LETTER = (612, 792)

PARAGRAPH = (
    "The parties agree that the deliverables described in schedule A shall be provided "
    "no later than thirty days after signature, and that any delay must be notified in writing."
)


def body_lines(count: int = 40, width: int = 80) -> List[str]:
    words = (PARAGRAPH + " ") * (count * width // len(PARAGRAPH) + 2)
    lines, line = [], ""
    for word in words.split():
        if len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
            if len(lines) == count:
                break
        else:
            line = f"{line} {word}".strip()
    return lines


def _add_text(pdf, page, font, text: str, x: float, y: float, size: float = 11) -> None:
    import pypdfium2.raw as raw

    obj = raw.FPDFPageObj_CreateTextObj(pdf, font, size)
    buffer = ctypes.create_string_buffer((text + "\0").encode("utf-16-le"))
    raw.FPDFText_SetText(obj, ctypes.cast(buffer, ctypes.POINTER(raw.FPDF_WCHAR)))
    raw.FPDFPageObj_Transform(obj, 1, 0, 0, 1, x, y)
    raw.FPDFPage_InsertObject(page, obj)


def _add_scan_image(pdf, page, size=LETTER, seed: int = 0) -> None:
    import pypdfium2 as pdfium
    from PIL import Image, ImageDraw

    picture = Image.new("L", (size[0] // 2, size[1] // 2), 235)
    draw = ImageDraw.Draw(picture)
    rng = random.Random(seed)
    for row in range(30, picture.height - 30, 12):  # grey bars that look like lines of print
        draw.rectangle((30, row, rng.randint(150, picture.width - 30), row + 5), fill=60)
    image = pdfium.PdfImage.new(pdf)
    image.set_bitmap(pdfium.PdfBitmap.from_pil(picture))
    image.set_matrix(pdfium.PdfMatrix().scale(size[0], size[1]))
    page.insert_obj(image)


def _build(pages: Sequence[dict]) -> bytes:
    """Pages described as dicts: {"lines": [...], "image": bool, "stamp": str, "y0": float}."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    pdf = pdfium.PdfDocument.new()
    font = raw.FPDFText_LoadStandardFont(pdf, b"Helvetica")
    for index, spec in enumerate(pages):
        size = spec.get("size", LETTER)
        page = pdf.new_page(*size)
        if spec.get("image"):
            _add_scan_image(pdf, page, size, seed=index)
        y = spec.get("y0", size[1] - 60)
        for line in spec.get("lines", ()):
            _add_text(pdf, page, font, line, 60, y)
            y -= 16
        if spec.get("stamp"):
            _add_text(pdf, page, font, spec["stamp"], 60, 20, size=8)
        page.gen_content()
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def born_digital_pdf(lines: Sequence[str] | None = None) -> bytes:
    return _build([{"lines": list(lines) if lines is not None else body_lines()}])


def title_page_pdf(title: str = "Annual Report 2025") -> bytes:
    """A born-digital page with one short line and no graphics."""
    return _build([{"lines": [title], "y0": 400}])


def image_only_pdf() -> bytes:
    return _build([{"image": True}])


def stamped_scan_pdf(stamp: str = "CONFIDENTIAL - BATES ACME-000123 - Received 2024-03-01 by fax") -> bytes:
    return _build([{"image": True, "stamp": stamp}])


def ocr_layer_pdf() -> bytes:
    return _build([{"image": True, "lines": body_lines()}])


def soup_pdf(seed: int = 7) -> bytes:
    rng = random.Random(seed)
    glyphs = "ÐçÞÿþý§¶¤¿¬±µ×÷ØæÆ#$%&*{}|~^" + "".join(chr(c) for c in range(0xC0, 0x100))
    lines = ["".join(rng.choice(glyphs + " ") for _ in range(70)) for _ in range(40)]
    return _build([{"lines": lines}])


# A hand-written PDF: PDFium can't *write* a broken ToUnicode map, so we spell one out.
_TOUNICODE = b"""/CIDInit /ProcSet findresource begin
12 dict begin
begincmap
/CMapName /Broken def
1 begincodespacerange
<00> <FF>
endcodespacerange
1 beginbfrange
<20> <7E> <%s>
endbfrange
endcmap
CMapName currentdict /CMap defineresource pop
end
end"""


def garbled_pdf(target: str = "E020", lines: Sequence[str] | None = None) -> bytes:
    """Helvetica text whose ToUnicode map sends codes 0x20..0x7E to `target`.. (hex).

    "E020" = private-use area; "0001" = control characters.
    """
    lines = list(lines) if lines is not None else body_lines()
    content = b"".join(
        b"BT /F1 11 Tf 60 %d Td (%s) Tj ET\n" % (LETTER[1] - 60 - 16 * i, line.encode("latin-1"))
        for i, line in enumerate(lines)
    )
    cmap = _TOUNICODE % target.encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>"
        % LETTER,
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /ToUnicode 6 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(cmap) + cmap + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def mixed_pdf() -> bytes:
    """Four pages: born-digital, image-only, stamped scan, glyph soup (in that order)."""
    rng = random.Random(3)
    soup = ["".join(rng.choice("ÐçÞÿþý§¶¤¿¬±µ×÷ØæÆ#$%&* ") for _ in range(70)) for _ in range(40)]
    return _build(
        [
            {"lines": body_lines()},
            {"image": True},
            {"image": True, "stamp": "BATES ACME-000123"},
            {"lines": soup},
        ]
    )


def _truetype_bytes() -> bytes:
    """A TrueType font program: the one Pillow embeds as its default font (Pillow 10.1+),
    else DejaVu Sans where the system has it."""
    from pathlib import Path

    from PIL import ImageFont

    font = ImageFont.load_default()
    source = getattr(font, "path", None)
    if isinstance(source, io.BytesIO):
        return source.getvalue()
    for candidate in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/Library/Fonts/Arial.ttf"):
        if Path(candidate).is_file():
            return Path(candidate).read_bytes()
    raise FileNotFoundError("no TrueType font to embed")


def embedded_font_pdf(pages: int = 2) -> bytes:
    """Pages of text in an embedded TrueType font (a CID font with its font program,
    widths and ToUnicode map in the file), as word processors write them: the font
    program itself is parsed by FreeType inside PDFium."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    program = _truetype_bytes()
    pdf = pdfium.PdfDocument.new()
    buffer = ctypes.create_string_buffer(program, len(program))
    font = raw.FPDFText_LoadFont(
        pdf, ctypes.cast(buffer, ctypes.POINTER(ctypes.c_uint8)), len(program), raw.FPDF_FONT_TRUETYPE, True
    )
    if not font:
        raise RuntimeError("PDFium refused the TrueType font")
    for number in range(1, pages + 1):
        page = pdf.new_page(*LETTER)
        y = LETTER[1] - 60
        for line in body_lines(30)[: 20 + number]:
            _add_text(pdf, page, font, f"{number}: {line}", 60, y)
            y -= 16
        page.gen_content()
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()
