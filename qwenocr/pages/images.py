"""Images as documents: a PNG/JPEG/WebP/BMP is one page, a multi-frame TIFF/GIF one page a frame.

Pillow decodes the image once, when it is opened, so that a truncated or hostile file
fails before the model loads. Its guard against decompression bombs stays on, with a
limit a large-format scan still fits in. Every failure a user's file can cause is an
`InputError` with one line saying what is wrong; no Pillow exception gets through.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Union

from PIL import Image, ImageOps

from qwenocr.errors import InputError
from qwenocr.pages.base import Document
from qwenocr.pages.sizing import RenderSettings, target_size

# Pillow refuses images above this pixel count as "decompression bombs"; we keep its
# guard, with a limit a large-format scan still fits in.
Image.MAX_IMAGE_PIXELS = 300_000_000

# What a directory given as input is searched for, besides PDFs (the content is sniffed
# when a file is opened; the suffix only picks files out of a directory).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif"}


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
                self.page_count = getattr(self._image, "n_frames", 1) or 1
                self._check_frames()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise _too_large(name, str(error).split(",")[0]) from None
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise InputError(
                f"{name}: the image could not be decoded ({error})",
                "check that the file is a valid PNG, JPEG, TIFF or WebP",
            ) from None
        except MemoryError:
            raise InputError(
                f"{name}: the image is too large to decode in the memory that is free", "scale it down"
            ) from None

    def _check_frames(self) -> None:
        """Every frame's declared size against the pixel limit, before any is decoded.

        Pillow checks only the first frame when it opens a file; a later frame of a
        TIFF is checked only when it is decoded, and between the limit and twice it
        only with a warning: a 576 MP second frame would be decoded (gigabytes) and
        print a raw warning. Seeking reads a frame's header, not its pixels.
        """
        limit = Image.MAX_IMAGE_PIXELS
        if limit is None or self.page_count < 2:
            return
        for index in range(1, self.page_count):
            self._image.seek(index)
            width, height = self._image.size
            if width * height > limit:
                raise _too_large(self.name, f"frame {index + 1} has {width * height} pixels, over the limit of {limit}")
        self._image.seek(0)

    def render(self, number: int, settings: RenderSettings) -> Image.Image:
        try:
            with warnings.catch_warnings():
                # As at open: Pillow's bomb warning becomes this page's error, not a stray line.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                self._image.seek(number - 1)
                frame = ImageOps.exif_transpose(self._image.copy())
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise _too_large(f"{self.name}: frame {number}", str(error).split(",")[0]) from None
        except (OSError, ValueError, EOFError) as error:
            raise InputError(f"{self.name}: frame {number} could not be decoded ({error})") from None
        frame = _flatten(frame)
        width: float
        height: float
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


def _too_large(name: str, detail: str) -> InputError:
    """The one error for an image (or a frame of one) over the pixel limit."""
    return InputError(f"{name}: the image is too large to decode ({detail})", "scale it down, or split it into pages")


def _flatten(image: Image.Image) -> Image.Image:
    """RGB on a white background (transparent scans would otherwise turn black)."""
    if image.mode in ("RGBA", "LA", "P") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
