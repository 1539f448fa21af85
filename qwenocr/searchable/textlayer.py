"""Lines of text into a PDF page as an invisible text layer.

Each line is drawn in text render mode 3 (neither filled nor stroked: invisible, yet
searchable, selectable and copyable) with the glyphless font, its size the line's height
and its horizontal scale (Tz) set so that its characters span the line's width. The text
matrix carries the whole way from the frame the lines were laid out in (the page as
displayed, or as turned upright for OCR; y down) to the page's own user space (y up,
before /Rotate, offset by its crop box), so a line runs the way its text reads on screen.

The page's own content is left as it was: its content streams stay as they are, wrapped
between a `q` stream before and a `Q` after (so whatever graphics state they leave cannot
move the text), and the text goes in one new stream after them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, List, Mapping, Optional, Sequence, Tuple

from qwenocr.searchable.glyphless import ASCENT, FONT_NAME, GLYPH_WIDTH, CharacterCodes, truetype_program
from qwenocr.searchable.lines import Line, block_lines, visual_order

if TYPE_CHECKING:
    import pikepdf

# An affine map (a, b, c, d, e, f), as PDF writes matrices: x' = a x + c y + e, y' = b x + d y + f.
Matrix = Tuple[float, float, float, float, float, float]
IDENTITY: Matrix = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


def compose(outer: Matrix, inner: Matrix) -> Matrix:
    """`outer` after `inner`."""
    a1, b1, c1, d1, e1, f1 = outer
    a2, b2, c2, d2, e2, f2 = inner
    return (
        a1 * a2 + c1 * b2,
        b1 * a2 + d1 * b2,
        a1 * c2 + c1 * d2,
        b1 * c2 + d1 * d2,
        a1 * e2 + c1 * f2 + e1,
        b1 * e2 + d1 * f2 + f1,
    )


def apply(matrix: Matrix, x: float, y: float) -> Tuple[float, float]:
    a, b, c, d, e, f = matrix
    return (a * x + c * y + e, b * x + d * y + f)


def display_to_user(crop: Sequence[float], rotation: int) -> Matrix:
    """The page as displayed (points, origin top-left, y down, after /Rotate `rotation`
    degrees clockwise) -> its user space (the crop box's corners (x0, y0, x1, y1), y up)."""
    x0, y0, x1, y1 = crop
    rotation %= 360
    if rotation == 90:  # the displayed top-left is the crop box's bottom-left
        return (0.0, 1.0, 1.0, 0.0, x0, y0)
    if rotation == 180:
        return (-1.0, 0.0, 0.0, 1.0, x1, y0)
    if rotation == 270:
        return (0.0, -1.0, -1.0, 0.0, x1, y1)
    return (1.0, 0.0, 0.0, -1.0, x0, y1)


def upright_to_display(turned: int, upright_size: Tuple[float, float]) -> Matrix:
    """A page turned `turned` degrees clockwise for OCR (frame of size `upright_size`,
    y down) -> the page as displayed (pages/orientation.py's unturn_box, for points)."""
    width, height = upright_size
    turned %= 360
    if turned == 90:  # (u, v) upright was (v, width - u) displayed
        return (0.0, -1.0, 1.0, 0.0, 0.0, width)
    if turned == 180:
        return (-1.0, 0.0, 0.0, -1.0, width, height)
    if turned == 270:  # (u, v) upright was (height - v, u) displayed
        return (0.0, 1.0, -1.0, 0.0, height, 0.0)
    return IDENTITY


def turn_box(box: Tuple[float, float, float, float], to_display: Matrix) -> Tuple[float, float, float, float]:
    """A displayed box into the frame `to_display` maps from (its inverse, for the quarter turns)."""
    a, b, c, d, e, f = to_display
    det = a * d - b * c
    inverse: Matrix = (d / det, -b / det, -c / det, a / det, (c * f - d * e) / det, (b * e - a * f) / det)
    xs, ys = zip(*(apply(inverse, x, y) for x in (box[0], box[2]) for y in (box[1], box[3])), strict=True)
    return (min(xs), min(ys), max(xs), max(ys))


def _number(value: float) -> str:
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


class TextLayer:
    """The invisible text of one output document: one font shared by all its pages.

    `add_page` puts lines on a page; `finish` writes the font's character map once every
    page is in (the CIDs are handed out as text arrives)."""

    def __init__(self, pdf: "pikepdf.Pdf"):
        import pikepdf

        self._pdf = pdf
        self._codes = CharacterCodes()
        self._to_unicode = pikepdf.Stream(pdf, b"")
        self._cid_to_gid = pikepdf.Stream(pdf, b"")
        program = truetype_program()
        font_file = flate_stream(pdf, program)
        font_file.Length1 = len(program)
        name = pikepdf.Name("/" + FONT_NAME)
        descriptor = pikepdf.Dictionary(
            Type=pikepdf.Name.FontDescriptor,
            FontName=name,
            Flags=5,  # fixed pitch, symbolic
            FontBBox=[0, ASCENT - 1000, GLYPH_WIDTH, ASCENT],
            ItalicAngle=0,
            Ascent=ASCENT,
            Descent=ASCENT - 1000,
            CapHeight=ASCENT,
            StemV=80,
            FontFile2=font_file,
        )
        cid_font = pikepdf.Dictionary(
            Type=pikepdf.Name.Font,
            Subtype=pikepdf.Name.CIDFontType2,
            BaseFont=name,
            CIDSystemInfo=pikepdf.Dictionary(
                Registry=pikepdf.String("Adobe"), Ordering=pikepdf.String("Identity"), Supplement=0
            ),
            FontDescriptor=pdf.make_indirect(descriptor),
            DW=GLYPH_WIDTH,
            CIDToGIDMap=self._cid_to_gid,
        )
        self.font = pdf.make_indirect(
            pikepdf.Dictionary(
                Type=pikepdf.Name.Font,
                Subtype=pikepdf.Name.Type0,
                BaseFont=name,
                Encoding=pikepdf.Name("/Identity-H"),
                DescendantFonts=[pdf.make_indirect(cid_font)],
                ToUnicode=self._to_unicode,
            )
        )
        self.pages = 0

    def add_page(self, page: "pikepdf.Page", lines: Iterable[Tuple[Line, Matrix]]) -> int:
        """Draw `lines` (each with the map from its frame to the page's user space) on
        `page`, invisibly; returns how many lines were drawn."""
        import pikepdf

        drawn = self._operators(lines)
        if not drawn:
            return 0
        _own_resources(page)
        font_name = page.add_resource(self.font, pikepdf.Name.Font, prefix="QwenOCR")
        page.contents_add(pikepdf.Stream(self._pdf, b"q\n"), prepend=True)
        page.contents_add(flate_stream(self._pdf, b"\nQ\n" + self._text_object(drawn, str(font_name))))
        self.pages += 1
        return len(drawn)

    def set_only_content(self, page: "pikepdf.Page", lines: Iterable[Tuple[Line, Matrix]], font_name: str) -> int:
        """Make `lines` the whole content of an empty `page`, as one stream with the font
        under `font_name`: the shape of a text-only page another program grafts."""
        import pikepdf

        drawn = self._operators(lines)
        page.obj.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary({font_name: self.font}))
        page.obj.Contents = flate_stream(self._pdf, self._text_object(drawn, font_name) if drawn else b"")
        self.pages += bool(drawn)
        return len(drawn)

    def _operators(self, lines: Iterable[Tuple[Line, Matrix]]) -> List[bytes]:
        drawn: List[bytes] = []
        for line, to_user in lines:
            operators = self._line(line, to_user)
            if operators:
                drawn.append(operators)
        return drawn

    @staticmethod
    def _text_object(drawn: List[bytes], font_name: str) -> bytes:
        return b"BT\n3 Tr\n" + b"".join(drawn).replace(b"/FONT ", font_name.encode("ascii") + b" ") + b"ET\n"

    def _line(self, line: Line, to_user: Matrix) -> Optional[bytes]:
        x0, y0, x1, y1 = line.box
        size = y1 - y0
        text = line.text
        if size <= 0 or x1 <= x0 or not text:
            return None
        # Glyph space has y up; the line's frame has y down: the baseline sits ASCENT/1000
        # of the size below the line's top, so the glyph boxes fill the line exactly.
        baseline = y0 + size * ASCENT / 1000
        matrix = compose(to_user, (1.0, 0.0, 0.0, -1.0, x0, baseline))
        scale = 100.0 * (x1 - x0) / (len(text) * size * GLYPH_WIDTH / 1000)
        codes = self._codes.encode(visual_order(text)).hex().upper()
        return (
            f"/FONT {_number(size)} Tf {_number(scale)} Tz {' '.join(_number(v) for v in matrix)} Tm <{codes}> Tj\n"
        ).encode("ascii")

    def finish(self) -> None:
        """Write the character map of every CID handed out (call once, after the last page)."""
        import zlib

        import pikepdf

        self._to_unicode.write(zlib.compress(self._codes.to_unicode()), filter=pikepdf.Name.FlateDecode)
        self._cid_to_gid.write(zlib.compress(self._codes.cid_to_gid_map()), filter=pikepdf.Name.FlateDecode)


def save_options() -> dict:
    """How outputs are saved: nothing decoded, recompressed or compressed that was not so
    before (qpdf's defaults would compress the input's uncompressed streams and re-encode
    some others)."""
    import pikepdf

    return {"compress_streams": False, "stream_decode_level": pikepdf.StreamDecodeLevel.none, "recompress_flate": False}


def flate_stream(pdf: "pikepdf.Pdf", data: bytes) -> "pikepdf.Stream":
    """A stream of `data`, compressed here: the output is saved without recompressing
    anything (so that the input's own streams stay byte for byte), ours included."""
    import zlib

    import pikepdf

    stream = pikepdf.Stream(pdf, zlib.compress(data, 6))
    stream.Filter = pikepdf.Name.FlateDecode
    return stream


def _own_resources(page: "pikepdf.Page") -> None:
    """Give `page` its own /Resources when it inherits them from its page tree, so that
    adding the font to it cannot hide the inherited ones (or add the font to every page)."""
    import pikepdf

    node: Any = page.obj
    if "/Resources" in node:
        return
    while "/Parent" in node:
        node = node.Parent
        if "/Resources" in node:
            page.obj.Resources = pikepdf.Dictionary({key: value for key, value in node.Resources.items()})
            return
    page.obj.Resources = pikepdf.Dictionary()


def page_lines(blocks: Optional[Sequence[Mapping]], text: str, frame: Tuple[float, float]) -> List[Line]:
    """A page's lines in a frame of size `frame` (the blocks' own frame): its blocks' lines,
    or, when no block has a box, `text` (plain) from the top of the frame down."""
    from qwenocr.searchable.lines import page_fill_lines, plain_text

    lines: List[Line] = []
    placed = False
    for block in blocks or ():
        if block.get("bbox") and block.get("type") != "figure":
            placed = True
            lines += block_lines(block)
    if placed:
        return lines
    width, height = frame
    margin = 0.05 * min(width, height)  # text set over the page, inside a margin a reader expects
    return page_fill_lines(plain_text(text).splitlines(), (margin, margin, width - margin, height - margin))


def text_only_pdf(width_pt: float, height_pt: float, blocks: Sequence[Mapping], text: str) -> bytes:
    """A one-page PDF, `width_pt` x `height_pt` points, with nothing visible and the
    invisible text of `blocks` (boxes in points, origin top-left, y down) or, when none
    has a box, `text` over the page. What OCR engines hand OCRmyPDF to graft, in the
    shape its graft takes from Tesseract: one content stream, the font named /F1 (it
    leaves any other font name behind, and the text with it)."""
    import io

    import pikepdf

    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(width_pt, height_pt))
    page = pdf.pages[0]
    layer = TextLayer(pdf)
    to_user = display_to_user((0.0, 0.0, width_pt, height_pt), 0)
    layer.set_only_content(page, [(line, to_user) for line in page_lines(blocks, text, (width_pt, height_pt))], "/F1")
    layer.finish()
    out = io.BytesIO()
    pdf.save(out, **save_options())
    return out.getvalue()
