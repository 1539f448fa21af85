"""What every kind of input offers the scan: a page count and one page at a time.

A `Document` renders a single page on demand, so that memory stays flat however long
the document is, and hands out a PDF page's own text layer already read (with the page
closed again), so that no caller ever touches PDFium or its lock. The kinds live in
pdf.py and images.py; document.py opens the right one for a file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # Pillow and the text layer's types only; nothing is imported to run
    from PIL import Image

    from qwenocr.pages.sizing import RenderSettings
    from qwenocr.pages.textlayer import PageText


def display_name(name: str) -> str:
    """`name` as it is shown anywhere (outputs, progress, messages): valid UTF-8 always.

    On Linux a file name is bytes, and Python hands one that is not valid UTF-8 to us
    with each bad byte as a lone surrogate (surrogateescape), which no UTF-8 stream can
    write. Each such byte is shown as U+FFFD (the replacement character, as `ls` and
    editors do), so JSON stays valid and the rest of the name readable; the name used to
    open the file is never changed. docs/output-formats.md documents this.
    """
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that no byte stands for (not from the OS)
        return name.encode("utf-8", "replace").decode("utf-8")


class Document:
    """One opened input: a page count and on-demand rendering of single pages."""

    name: str  # shown in progress and output ("-" for stdin)
    kind: str  # "pdf" or "image"
    page_count: int

    def render(self, number: int, settings: RenderSettings) -> Image.Image:
        """Page `number` (1-based) as an RGB image of the size `settings` ask for."""
        raise NotImplementedError

    def text_layer(self, number: int) -> Optional[PageText]:
        """Page `number`'s own text layer, or None when this kind has none (images)."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> Document:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
