"""A corpus of broken and hostile inputs, built in code (nothing binary is checked in).

Used by tests/test_bad_inputs.py, tests/test_fuzz.py and tests/test_interrupt.py. Each
builder returns bytes (or writes a path); the PDFs are written by hand with `build_pdf`,
which lays out the objects and a correct cross-reference table, so that each file is
broken in exactly the one way its name says and no other.

- `not_a_pdf`: text in a file that will be named `.pdf`.
- `truncated_pdf`: the first half of a real PDF (an interrupted download).
- `corrupt_pdf`: a `%PDF` header followed by random bytes: nothing to repair.
- `garbage_xref_pdf`: a real PDF whose cross-reference table and trailer are garbage
  (PDFium rebuilds the table by scanning; qwenocr must not crash either way).
- `zero_page_pdf`: a valid PDF whose page tree has an empty /Kids.
- `encrypted_pdf`: AES-256 (R6) and RC4-128 (R3) encryption with a user password, made
  with pikepdf (a test-only dependency).
- `text_pdf`: pages with real text operators in Helvetica (content streams to fuzz).
- `absurd_size_pdf`: a page whose MediaBox is 1e6 x 1e6 pt (or 1e6 x 10 pt).
- `slow_render_pdf`: a page whose content draws a form XObject that draws the one below
  it `fanout` times, `depth` levels deep: fanout**depth draws from a few hundred bytes,
  the shape of the malformed forms that keep PDFium busy for minutes.
- `bad_page_pdf`: a three-page PDF whose second page object is not a page dictionary
  (PDFium counts it, and fails to load it).
- `corrupt_png`: a PNG whose IDAT (image data) is garbage after a valid header.
- `huge_png`: a PNG whose header declares 60000 x 60000 pixels (a decompression bomb).
- `metadata_bomb_pdf`, `content_bomb_pdf`: Flate bombs (`deflated_zeros`) in the
  catalog's /Metadata (inflated by PDFium at open) and in a page's content stream.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import List, Optional, Sequence

from tests.support import samples

PASSWORD = "s3cret pass"


def build_pdf(objects: Sequence[bytes], root: int = 1, version: bytes = b"1.4") -> bytes:
    """A PDF from object bodies (object i+1 is objects[i]) with a correct xref table."""
    out = io.BytesIO()
    out.write(b"%PDF-" + version + b"\n%\xe2\xe3\xcf\xd3\n")
    offsets: List[int] = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, root, xref))
    return out.getvalue()


def stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s >>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def _pages_pdf(page_bodies: Sequence[bytes], contents: Sequence[Optional[bytes]], resources: bytes = b"") -> bytes:
    """Catalog (1), page tree (2), then each page and its content stream."""
    objects: List[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    kids = []
    for body, content in zip(page_bodies, contents, strict=False):
        page_number = len(objects) + 1
        kids.append(b"%d 0 R" % page_number)
        if content is None:
            objects.append(body)
        else:
            objects.append(
                b"<< /Type /Page /Parent 2 0 R %s /Contents %d 0 R %s >>" % (body, page_number + 1, resources)
            )
            objects.append(stream(content))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(kids))
    return build_pdf(objects)


FONT = b"/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >>"


def text_content(label: str, lines: int = 30) -> bytes:
    rows = [b"BT /F1 11 Tf 72 740 Td 14 TL"]
    for line in range(1, lines + 1):
        rows.append(b"(%s - line %d: The quick brown fox jumps over the lazy dog.) '" % (label.encode(), line))
    rows.append(b"ET 0.5 w 50 50 512 692 re S")
    return b"\n".join(rows)


def text_pdf(pages: int = 2) -> bytes:
    """Pages of real text (Helvetica) and a frame, letter size."""
    return _pages_pdf(
        [b"/MediaBox [0 0 612 792]"] * pages,
        [text_content(f"Page {n}") for n in range(1, pages + 1)],
        FONT,
    )


def not_a_pdf() -> bytes:
    return b"Dear customer,\nthis is a plain text e-mail saved with a .pdf name.\n" * 20


def truncated_pdf() -> bytes:
    data = samples.pdf_bytes(pages=2)
    return data[: len(data) // 2]


def corrupt_pdf(seed: int = 4) -> bytes:
    rng = random.Random(seed)
    return b"%PDF-1.7\n" + bytes(rng.randrange(256) for _ in range(4096))


def garbage_xref_pdf(seed: int = 5) -> bytes:
    data = text_pdf(2)
    xref = data.rindex(b"xref\n")
    rng = random.Random(seed)
    return data[:xref] + bytes(rng.randrange(32, 127) for _ in range(len(data) - xref))


def zero_page_pdf() -> bytes:
    return build_pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"])


def encrypted_pdf(path: Path, password: str = PASSWORD, aes: bool = True) -> Path:
    """An encrypted copy of a small text PDF (needs pikepdf)."""
    import pikepdf

    with pikepdf.open(io.BytesIO(text_pdf(1))) as pdf:
        if aes:
            encryption = pikepdf.Encryption(user=password, owner=password + "-owner", R=6, aes=True)
        else:
            encryption = pikepdf.Encryption(user=password, owner=password + "-owner", R=3, aes=False, metadata=False)
        pdf.save(path, encryption=encryption)
    return path


def absurd_size_pdf(width: float = 1e6, height: float = 1e6) -> bytes:
    box = b"/MediaBox [0 0 %s %s]" % (repr(width).encode(), repr(height).encode())
    return _pages_pdf([box], [b"BT /F1 2000 Tf 100 100 Td (Huge page) Tj ET"], FONT)


def slow_render_pdf(depth: int = 7, fanout: int = 10, with_good_pages: bool = True) -> bytes:
    """Page 2 (of 3, or the only page) draws fanout**depth copies of a small path.

    Form i draws form i-1 `fanout` times; the page draws the top form. depth 7 x fanout
    10 keeps PDFium rendering for minutes on any machine, from a file of a few KB.
    """
    objects: List[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    # Forms: objects 3 .. 3+depth; form 0 (object 3) is a leaf.
    leaf = b"0 0 1 1 re f 0.2 0.2 m 0.8 0.8 l S"
    form_base = 3
    objects.append(stream(leaf, b"/Type /XObject /Subtype /Form /BBox [0 0 1 1]"))
    for level in range(1, depth + 1):
        below = form_base + level - 1
        body = b" ".join([b"q /X Do Q"] * fanout)
        objects.append(
            stream(
                body, b"/Type /XObject /Subtype /Form /BBox [0 0 1 1] /Resources << /XObject << /X %d 0 R >> >>" % below
            )
        )
    top = form_base + depth
    kids = []

    def add_page(content: bytes, resources: bytes) -> None:
        number = len(objects) + 1
        kids.append(b"%d 0 R" % number)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R %s >>" % (number + 1, resources)
        )
        objects.append(stream(content))

    if with_good_pages:
        add_page(text_content("Page 1"), FONT)
    add_page(b"q 500 0 0 700 50 50 cm /X Do Q", b"/Resources << /XObject << /X %d 0 R >> >>" % top)
    if with_good_pages:
        add_page(text_content("Page 3"), FONT)
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(kids))
    return build_pdf(objects)


def bad_page_pdf() -> bytes:
    """Three pages of text; the page tree's second kid is an array, not a page dictionary,
    so PDFium counts three pages but can't load the second."""
    objects: List[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R 5 0 R 6 0 R] /Count 3 >>",
    ]
    objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R %s >>" % FONT)
    objects.append(stream(text_content("Page 1")))
    objects.append(b"[1 2 3]")
    objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 7 0 R %s >>" % FONT)
    objects.append(stream(text_content("Page 3")))
    return build_pdf(objects)


def corrupt_png() -> bytes:
    image = samples.page_image(1, (200, 260))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4 : idat], "big")
    rng = random.Random(7)
    for i in range(idat + 4, idat + 4 + length):
        data[i] = rng.randrange(256)
    return bytes(data)


def huge_png() -> bytes:
    """A PNG whose header declares 60000 x 60000 pixels (3.6 gigapixels, ~10 GB decoded)
    over a few bytes of data: a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    samples.page_image(1, (400, 520)).save(buffer, "PNG")
    return buffer.getvalue()


def render_workers_of(pid: int) -> List[int]:
    """Render worker processes (qwenocr/pages/renderguard.py) that process `pid` started and
    that are still alive; Linux only (reads /proc). Each worker carries its parent's
    pid on its command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"qwenocr.pages.renderguard" in argv and str(pid).encode() in argv and state != "Z":
            found.append(int(entry.name))
    return found


def deflated_zeros(size: int) -> bytes:
    """A zlib (FlateDecode) stream that inflates to `size` zero bytes, built in
    milliseconds: after a full flush the compressor starts afresh, so every 16 MiB block
    of zeros compresses to the same bytes, which are repeated (about 1/1000 of `size`)."""
    import zlib

    block = 1 << 24
    compressor = zlib.compressobj(9)
    first = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    header, body = first[:2], first[2:]
    assert body == again  # the construction relies on it
    whole, rest = divmod(size, block)
    tail = zlib.compressobj(9)
    tail_body = b""
    if rest:
        tail_body = tail.compress(bytes(rest)) + tail.flush(zlib.Z_FULL_FLUSH)
        tail_body = tail_body[2:]
    # The end: an empty final stored block, then the Adler-32 of `size` zeros (a = 1,
    # b = size mod 65521).
    adler = ((size % 65521) << 16) | 1
    return header + body * whole + tail_body + b"\x01\x00\x00\xff\xff" + adler.to_bytes(4, "big")


def metadata_bomb_pdf(inflated: int = 2**30) -> bytes:
    """A one-page text PDF whose catalog's /Metadata stream is a Flate bomb: about 1 MB
    that inflates to `inflated` bytes. PDFium inflates /Metadata while it opens the
    document (FPDF_LoadDocument checks the XMP for unsupported features)."""
    bomb = deflated_zeros(inflated)
    return build_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R /Metadata 5 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R " + FONT + b" >>",
            stream(text_content("Page 1")),
            stream(bomb, b"/Type /Metadata /Subtype /XML /Filter /FlateDecode"),
        ]
    )


def content_bomb_pdf(inflated: int = 2**30) -> bytes:
    """A text page followed by a page whose content stream is a Flate bomb (`inflated`
    zero bytes from about 1/1000 of that): reading its text layer, or rendering it,
    inflates all of it."""
    return build_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R 5 0 R] /Count 2 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R " + FONT + b" >>",
            stream(text_content("Page 1")),
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 6 0 R " + FONT + b" >>",
            stream(deflated_zeros(inflated), b"/Filter /FlateDecode"),
        ]
    )
