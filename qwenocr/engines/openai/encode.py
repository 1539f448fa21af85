"""A page image as the `data:` URI of a chat message: PNG, or JPEG when that is smaller."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any, List, Optional, overload

# zlib level for page PNGs: 1 is twice as fast as 6 and the bytes don't matter on a
# LAN (23 KB against 13 KB for an A4 page at 150 DPI).
PNG_ZLIB_LEVEL = 1


def encode_image(image: Any, image_format: str = "auto") -> str:
    """The page as a `data:` URI: PNG, or JPEG when that is smaller (scans, photos).

    This runs for every page on the client, so it is kept cheap (16 pages in flight
    against a fast server mean tens of pages a second to encode):
    - a page rendered in RGB whose pixels are all grey is sent as greyscale, which is
      exact and three times less to compress (most document pages);
    - JPEG is encoded first (fast), then PNG only until it grows past the JPEG's size,
      so a scan (where PNG is many times larger) costs little extra.

    A `data:image/...` string passes through unchanged: a caller that already holds
    the page as JPEG/PNG bytes (a scan's embedded JPEG) need not re-encode it.
    """
    from PIL import Image

    if isinstance(image, str) and image.startswith("data:image/"):
        return image
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    image = _flatten(image)
    if image_format == "png":
        return _data_uri("image/png", _png(image))
    jpeg = _jpeg(image)
    if image_format == "jpeg":
        return _data_uri("image/jpeg", jpeg)
    png = _png(image, limit=len(jpeg))
    return _data_uri("image/png", png) if png is not None else _data_uri("image/jpeg", jpeg)


@overload
def _png(image: Any, limit: None = None) -> bytes: ...
@overload
def _png(image: Any, limit: int) -> Optional[bytes]: ...


def _png(image: Any, limit: Optional[int] = None) -> Optional[bytes]:
    """The image (mode L or RGB) as PNG, or None once it would exceed `limit` bytes.

    Written here rather than with Pillow because Pillow's PNG encoder holds the GIL
    (pages in flight could not encode in parallel) and its adaptive row filters cost
    twice the time for nothing on document pages: an A4 page at 150 DPI came out at
    23 KB in 12 ms here against 24.5 KB in 22 ms. Rows go unfiltered into zlib, which
    releases the GIL while it compresses.
    """
    width, height = image.size
    channels = 1 if image.mode == "L" else 3
    stride = width * channels
    pixels = image.tobytes()
    deflate = zlib.compressobj(PNG_ZLIB_LEVEL)
    parts: List[bytes] = []
    size = 0
    rows = max(1, (1 << 20) // (stride + 1))  # about 1 MB of raw rows per zlib call
    for first in range(0, height, rows):
        block = b"".join(
            b"\x00" + pixels[row * stride : (row + 1) * stride] for row in range(first, min(height, first + rows))
        )
        part = deflate.compress(block)
        size += len(part)
        if limit is not None and size > limit:
            return None  # larger than the alternative: stop paying for it
        parts.append(part)
    parts.append(deflate.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", b"".join(parts)),
            _png_chunk(b"IEND", b""),
        ]
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _jpeg(image: Any) -> bytes:
    out = io.BytesIO()
    # Quality 90 keeps text edges crisp (below ~85 ringing blurs small print); 4:4:4
    # chroma keeps coloured text as sharp as black.
    image.save(out, format="JPEG", quality=90, subsampling=0 if image.mode == "RGB" else -1)
    return out.getvalue()


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _flatten(image: Any) -> Any:
    """RGB or L, transparency on white; RGB that is all grey becomes L (exactly)."""
    from PIL import Image

    if image.mode not in ("RGB", "L"):
        if "A" in image.mode or "transparency" in image.info:
            rgba = image.convert("RGBA")
            canvas = Image.new("RGB", image.size, "white")
            canvas.paste(rgba, mask=rgba.getchannel("A"))
            image = canvas
        elif image.mode in ("1", "I", "I;16", "F"):
            image = image.convert("L")
        else:
            image = image.convert("RGB")
    if image.mode == "RGB":
        # A sparse sample with one coloured pixel proves colour, so most colour pages
        # skip the full-size check (which alone can prove grey).
        sample = image.resize((max(1, image.width // 16), max(1, image.height // 16)), Image.Resampling.NEAREST)
        grey = _grey_channel(image) if _grey_channel(sample) is not None else None
        if grey is not None:
            image = grey
    return image


def _grey_channel(image: Any) -> Any:
    """The image as one channel if R, G and B are equal everywhere, else None."""
    from PIL import ImageChops

    r, g, b = image.split()
    if ImageChops.difference(r, g).getbbox() is None and ImageChops.difference(g, b).getbbox() is None:
        return r
    return None
