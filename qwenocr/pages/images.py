"""Images as documents: a PNG/JPEG/WebP/BMP is one page, a multi-frame TIFF/GIF one page a frame.

Pillow decodes the image once, when it is opened, so that a truncated or hostile file
fails before the model loads. Its guard against decompression bombs stays on, with a
limit a large-format scan still fits in. Every failure a user's file can cause is an
`InputError` with one line saying what is wrong; no Pillow exception gets through.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Iterator, Union

from PIL import Image, ImageOps

from qwenocr.errors import InputError
from qwenocr.pages.base import Document
from qwenocr.pages.sizing import RenderSettings, target_size

# Pillow logs some complaints about a damaged file ("More samples per pixel than can be
# decoded") at WARNING; with no handler configured, Python's last-resort handler would
# print them as stray lines on stderr. The damage shows as an error or in the pixels.
logging.getLogger("PIL").addHandler(logging.NullHandler())

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
        _quiet_libtiff()
        try:
            with _pillow_warnings():
                self._image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
                self._image.load()
                self.page_count = getattr(self._image, "n_frames", 1) or 1
                self._check_frames()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise _too_large(name, str(error).split(",")[0]) from None
        except MemoryError:
            raise InputError(
                f"{name}: the image is too large to decode in the memory that is free", "scale it down"
            ) from None
        except Exception as error:  # noqa: BLE001 - the file's fault: see _pillow_warnings
            raise InputError(
                f"{name}: the image could not be decoded ({_describe(error)})",
                "check that the file is a valid PNG, JPEG, TIFF or WebP",
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
            with _pillow_warnings():
                self._image.seek(number - 1)
                frame = ImageOps.exif_transpose(self._image.copy())
                frame = _flatten(frame)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise _too_large(f"{self.name}: frame {number}", str(error).split(",")[0]) from None
        except MemoryError:
            raise InputError(f"{self.name}: frame {number} is too large to decode in the memory that is free") from None
        except Exception as error:  # noqa: BLE001 - the file's fault: see _pillow_warnings
            raise InputError(f"{self.name}: frame {number} could not be decoded ({_describe(error)})") from None
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


# Pillow's decoders report a damaged file with whatever the parsing code happened to
# raise: OSError and ValueError mostly, but also TypeError ("Missing dimensions" from a
# TIFF without its size tags), SyntaxError, EOFError, IndexError, KeyError, struct.error
# (all seen from mutated files in tests/test_fuzz.py). Inside the Pillow calls every
# exception is the file's fault, and becomes its one-line InputError.


@contextlib.contextmanager
def _pillow_warnings() -> Iterator[None]:
    """Pillow's warnings about a damaged file ("Corrupt EXIF data", "Tag data larger than
    file") would be stray lines on stderr: silenced, as the damage shows in the pixels
    or in an error. The decompression-bomb warning (between Pillow's limit and twice it)
    becomes an error: such an image is too large anyway."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


_libtiff_quiet = False


def _quiet_libtiff() -> None:
    """Stop libtiff printing its complaints about a damaged TIFF ("Using code not yet in
    table.", "LZWDecode: Not enough data at scanline …") straight to stderr, from C: stray
    lines where only qwenocr's own may appear. Pillow reports the damage anyway, as an
    exception or in the pixels. libtiff's handlers are global: set to none once, on the
    copy of libtiff that Pillow loaded (found in /proc/self/maps; Linux only, elsewhere
    the lines stay)."""
    global _libtiff_quiet
    if _libtiff_quiet:
        return
    _libtiff_quiet = True
    try:
        import ctypes
        import os

        from PIL import _imaging  # noqa: F401 - loads Pillow's libtiff

        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split()[-1] for line in maps if "/libtiff" in line and ".so" in line}
        for path in paths:
            library = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0))
            for setter in ("TIFFSetErrorHandler", "TIFFSetWarningHandler"):
                function = getattr(library, setter)
                function.restype = ctypes.c_void_p
                function.argtypes = [ctypes.c_void_p]
                function(None)
    except (OSError, AttributeError, ImportError):  # no /proc, no such library: the lines stay
        pass


def _describe(error: Exception) -> str:
    text = " ".join(str(error).split())[:200]
    return (
        text if text and not isinstance(error, (TypeError, IndexError, KeyError)) else f"{type(error).__name__}: {text}"
    )


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
