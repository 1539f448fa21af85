"""A PDF page's own text layer: extract it, judge whether it can be trusted, format it.

This is the fast path of `--mode auto|text`: a born-digital page already carries its
text, and reading it takes milliseconds where a vision model takes seconds. The hard
part is knowing when *not* to trust it. A text layer can be

- absent (an image-only scan),
- a stamp: a Bates number, a header or a fax line on top of a scanned image, which is
  "text" but not the page,
- garbled: a font without a usable ToUnicode map makes PDFium hand back glyph ids as
  code points (private-use, control or random Latin-1 characters), `(cid:123)` runs or
  glyph names such as `g123`/`uni0041`.

`extract` also reads every character's box, font size and weight and groups them into
lines (`textmarkdown.build_lines`); `PageText.layout` rebuilds paragraphs, headings,
lists, columns and tables from them, as Markdown and blocks (qwenocr/pages/textmarkdown.py).

`assess` answers with a `TextLayerVerdict` whose `reason` says which of these it found,
so that a user can see why a page went to the model. The heuristics are deliberately
conservative: a page wrongly sent to the model costs seconds; a page wrongly taken
from a broken text layer costs correctness.

PDFium is not thread-safe: callers serialise every call that touches a document
(`PdfDocument.text_layer` holds `PDFIUM_LOCK` around `extract` and closes the page
after). `assess` and `to_markdown` are pure.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

from qwenocr.pages.textmarkdown import Char, Rect, TextLayout, TextLine, build_lines, page_layout

# (left, bottom, right, top) in PDF points, origin at the page's lower-left corner.
Box = Tuple[float, float, float, float]

# --- thresholds (why each value: see the comment next to it) ------------------------

# Private-use, replacement and control characters are what a broken font map produces.
# Real pages have a few (Symbol/Wingdings bullets map into the private-use area), so
# only a real share of them condemns the page.
MAX_BAD_SHARE = 0.10
# Share of non-letter, non-digit characters (after collapsing dot leaders and form
# underscores, which legitimately fill tables of contents and forms).
MAX_SYMBOL_SHARE = 0.50
# Share of characters sitting in "soup" tokens (letters glued to stray symbols, or two
# alphabets in one word).
MAX_SOUP_SHARE = 0.30
# Share of characters in `(cid:12)`, `g123`, `uni0041`, `.notdef` tokens.
MAX_GLYPHNAME_SHARE = 0.15
# Latin words of 4+ letters without a vowel: rare in any Latin-script language, common
# when a font's codes are shifted.
MAX_VOWELLESS_SHARE = 0.40
# Vowels among the letters of Latin words: 36-43% in English, German, Czech, Croatian,
# Polish and Welsh samples (measured); about 21% when a font's codes are shifted (a
# Caesar-like broken encoding turns only r, l, b, f, v, x into vowels).
MIN_VOWEL_SHARE = 0.28
MIN_LETTERS_FOR_VOWELS = 200
# Latin letters whose base letter is not a-z (þ, Ð, ß, æ…): a few percent in Icelandic
# or German, most of the text when glyph ids land in Latin-1.
MAX_EXOTIC_LATIN_SHARE = 0.30
# Latin letters inside 30+ character runs without a space: words lost their breaks.
MAX_LONG_RUN_SHARE = 0.50
LONG_RUN = 30
# Below this many non-space characters a statistic is noise; the page then only has to
# pass the hard checks (bad characters, glyph names).
MIN_CHARS_FOR_STATS = 40

# Enough text for the page: half a character per square inch (about 50 on A4/Letter).
# A page with a picture and a caption fails this and goes to the model, which is right.
MIN_CHARS_PER_SQ_INCH = 0.5
MIN_CHARS = 20

# Coverage: the page is cut into a grid; the text must touch enough rows and columns.
# A header/footer stamp touches one or two rows; a margin stamp one column.
GRID_ROWS = 20
GRID_COLS = 10
MIN_ROW_SHARE = 0.25
MIN_COL_SHARE = 0.30

# A page "without graphics" (images under 5% of the area, few vector paths) has nothing
# the text layer could be missing, so a short text layer is the whole page.
MAX_IMAGE_SHARE_FOR_TEXT_ONLY = 0.05
MAX_PATHS_FOR_TEXT_ONLY = 200
# Text over an image covering most of the page is an earlier OCR layer.
OCR_LAYER_IMAGE_SHARE = 0.60

_JOINERS = set("-'’.,/&_@:+–—·•()[]")
_GLYPHNAME = re.compile(
    r"\(cid:\d+\)|\.notdef|(?<![A-Za-z])(?:(?:g|glyph|gid|cid|afii)\d+|uni[0-9A-F]{4,6}|u[0-9A-F]{5,6})(?![A-Za-z])"
)
_LEADERS = re.compile(r"([^\w\s])\1{2,}")
_VOWELS = set("aeiouyAEIOUY")
# Alphabets that never share a word in real text. Greek is left out (ΔpH, αβ-test are
# normal in science), and so are signs named after themselves (µ, ª).
_MIXING_SCRIPTS = {"LATIN", "CYRILLIC", "ARMENIAN", "HEBREW", "ARABIC", "GEORGIAN"}


@dataclass(frozen=True)
class TextLayerVerdict:
    """Whether a page's text layer can stand in for OCR, and why (one line)."""

    usable: bool
    reason: str
    chars: int  # non-whitespace characters in the text layer
    # True when the text lies over an image covering most of the page: an OCR layer
    # someone else made. Usable by the same rules, but its quality is unknown.
    ocr_layer: bool = False


@dataclass(frozen=True)
class PageText:
    """What `extract` read from one page."""

    text: str
    width: float  # points
    height: float  # points
    boxes: Tuple[Box, ...]  # text segments, relative to the page's lower-left corner
    image_fraction: float  # share of the page covered by image objects (0…1)
    path_objects: int  # number of vector path objects
    # For the Markdown (textmarkdown.py): the page's lines and its images' boxes, in
    # points from the top-left corner of the page as displayed (after /Rotate), and
    # the page's size as displayed.
    lines: Tuple[TextLine, ...] = ()
    figures: Tuple[Rect, ...] = ()
    display_size: Tuple[float, float] = (0.0, 0.0)
    rotation: int = 0  # the page's /Rotate, degrees clockwise (0, 90, 180, 270)

    def layout(self) -> TextLayout:
        """The page as Markdown and blocks (paragraphs, headings, lists, columns, tables).

        Without lines (a page too dense to read character by character) the Markdown is
        `to_markdown`'s and there are no blocks; so it is if the layout code fails, since
        a bug there must cost the structure, never the page."""
        if self.lines:
            try:
                return page_layout(self.lines, self.figures, self.display_size)
            except Exception:  # noqa: BLE001 - see the docstring
                pass
        return TextLayout(to_markdown(self.text), [])

    def assess(self) -> TextLayerVerdict:
        return assess(
            self.text,
            self.width,
            self.height,
            self.boxes,
            image_fraction=self.image_fraction,
            path_objects=self.path_objects,
        )


# --- extraction (PDFium; callers serialise) -----------------------------------------


def extract(page: Any) -> PageText:
    """Read the text layer and its geometry from an open `pypdfium2.PdfPage`.

    Not thread-safe (PDFium): hold the document lock around this call.
    """
    import pypdfium2.raw as pdfium_c  # light (ctypes bindings), but only needed here

    left, bottom, right, top = page.get_cropbox()
    width, height = right - left, top - bottom
    rotation = int(page.get_rotation()) % 360
    textpage = page.get_textpage()
    try:
        text = textpage.get_text_range()
        boxes = []
        for index in range(textpage.count_rects()):
            l, b, r, t = textpage.get_rect(index)
            boxes.append((l - left, b - bottom, r - left, t - bottom))
        chars = _read_chars(textpage, left, bottom, width, height, rotation)
    finally:
        textpage.close()

    image_boxes = []
    path_objects = 0
    # max_depth reaches into form XObjects, where scanners like to put the page image.
    for obj in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE, pdfium_c.FPDF_PAGEOBJ_PATH), max_depth=4):
        if obj.type == pdfium_c.FPDF_PAGEOBJ_PATH:
            path_objects += 1
            continue
        bounds = obj.get_bounds() if hasattr(obj, "get_bounds") else obj.get_pos()  # pypdfium2 5 / 4
        l, b, r, t = bounds
        image_boxes.append((l - left, b - bottom, r - left, t - bottom))
    image_fraction = _area_share(image_boxes, width, height)
    lines = build_lines(chars)
    # An image under most of the page is a scan behind an OCR layer, not a figure.
    figures = tuple(
        _display_rect(box, width, height, rotation)
        for box in image_boxes
        if _area_share([box], width, height) < OCR_LAYER_IMAGE_SHARE
    )
    return PageText(
        text=text,
        width=float(width),
        height=float(height),
        boxes=tuple(boxes),
        image_fraction=image_fraction,
        path_objects=path_objects,
        lines=tuple(lines) if len(lines) <= MAX_PAGE_LINES else (),
        figures=figures,
        display_size=(float(height), float(width)) if rotation in (90, 270) else (float(width), float(height)),
        rotation=rotation,
    )


# Characters beyond this are not read one by one (a dense page has about 10,000): the
# page's Markdown is then its plain text (`to_markdown`), and reading stays fast.
MAX_LAYOUT_CHARS = 200_000
# More lines than this is no page (hostile, or a scatter plot of glyphs): no lines, so the
# Markdown is the plain text, and the render child's answer stays small.
MAX_PAGE_LINES = 20_000
# Text within about 18 degrees of horizontal reads as a line; steeper is turned text.
UPRIGHT_COS = 0.95
_HYPHEN_CODES = (0x2D, 0x02, 0xAD, 0x2010, 0xFFFE)
# Font flags (PDF 32000, 9.8.2): FixedPitch, ForceBold.
_FIXED_PITCH = 1
# Fixed-pitch fonts that don't set the flag (TeX's cmtt among them), by name.
_MONO_FONT = re.compile(r"mono|courier|consol|menlo|typewriter|inconsolata|^(cm|sf|lm|ec)tt|[-_ ]tt\d*$")
_FORCE_BOLD = 1 << 18


def _read_chars(textpage: Any, left: float, bottom: float, width: float, height: float, rotation: int) -> List[Char]:
    """Every character of the page with its loose box (as displayed), font size and
    weight; a newline where PDFium ends a line. Font facts are read once per text object."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    handle = textpage.raw
    count = pdfium_c.FPDFText_CountChars(handle)
    chars: List[Char] = []
    if count > MAX_LAYOUT_CHARS:
        return chars
    rect = pdfium_c.FS_RECTF()
    name = ctypes.create_string_buffer(128)
    flags = ctypes.c_int()
    # Bound once: this loop runs for every character of the page.
    get_unicode, get_box = pdfium_c.FPDFText_GetUnicode, pdfium_c.FPDFText_GetLooseCharBox
    get_object, is_hyphen = pdfium_c.FPDFText_GetTextObject, pdfium_c.FPDFText_IsHyphen
    address_of = ctypes.c_void_p.from_buffer  # the pointer's value; cheaper than ctypes.cast
    blank = (0.0, 0.0, 0.0, 0.0)
    last_object: Any = -1
    size, bold, mono, upright = 0.0, False, False, True
    for index in range(max(count, 0)):
        code = get_unicode(handle, index)
        if code in (10, 13):
            chars.append(Char("\n", blank, 0.0, False))
            continue
        if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            continue
        text = chr(code)
        if text.isspace():  # PDFium's generated spaces and the PDF's own: a word break
            chars.append(Char(" ", blank, 0.0, False))
            continue
        if not get_box(handle, index, ctypes.byref(rect)):
            continue
        text_object = get_object(handle, index)
        address = address_of(text_object).value
        if address != last_object:
            last_object = address
            size = float(pdfium_c.FPDFText_GetFontSize(handle, index))
            weight = pdfium_c.FPDFText_GetFontWeight(handle, index)
            pdfium_c.FPDFText_GetFontInfo(handle, index, name, len(name), ctypes.byref(flags))
            font = name.value.decode("latin-1", "replace").lower()
            bold = weight >= 600 or bool(flags.value & _FORCE_BOLD) or "bold" in font or "black" in font
            mono = bool(flags.value & _FIXED_PITCH) or bool(_MONO_FONT.search(font.split("+")[-1]))
            # The text's angle as displayed (PDFium: radians counter-clockwise in PDF
            # space; the page turns clockwise by its /Rotate).
            angle = pdfium_c.FPDFText_GetCharAngle(handle, index)
            upright = angle < 0 or math.cos(angle + math.radians(rotation)) > UPRIGHT_COS
        if rotation == 0:  # inline: the common case
            box = (rect.left - left, height - rect.top + bottom, rect.right - left, height - rect.bottom + bottom)
        else:
            box = _display_rect(
                (rect.left - left, rect.bottom - bottom, rect.right - left, rect.top - bottom), width, height, rotation
            )
        if not -1e7 < box[0] + box[1] + box[2] + box[3] < 1e7:
            continue  # a hostile matrix: infinite, NaN or absurd coordinates
        # PDFium reports a hyphen that ends a line (it hands it back as U+0002 or U+FFFE).
        hyphen = code in _HYPHEN_CODES and is_hyphen(handle, index) == 1
        chars.append(Char(text, box, size if size > 0 else box[3] - box[1], bold, hyphen, mono, upright))
    return chars


def _display_rect(box: Box, width: float, height: float, rotation: int) -> Rect:
    """A box in PDF space (origin lower-left of the crop box) -> points from the top-left
    corner of the page as displayed (its /Rotate applied clockwise), y down."""
    l, b, r, t = box
    l, r = sorted((l, r))
    b, t = sorted((b, t))
    if rotation == 90:
        return (b, l, t, r)
    if rotation == 180:
        return (width - r, b, width - l, t)
    if rotation == 270:
        return (height - t, width - r, height - b, width - l)
    return (l, height - t, r, height - b)


def read_page(page: Any) -> Tuple[PageText, TextLayerVerdict]:
    """`extract` then `assess`, for a page the caller holds open (under the PDFium lock)."""
    page_text = extract(page)
    return page_text, page_text.assess()


# --- judging -------------------------------------------------------------------------


def assess(
    text: str,
    page_width: float,
    page_height: float,
    char_boxes: Optional[Sequence[Box]] = None,
    *,
    image_fraction: Optional[float] = None,
    path_objects: Optional[int] = None,
) -> TextLayerVerdict:
    """Decide whether `text` (a page's text layer) can replace OCR of that page.

    `char_boxes` are character or line boxes in points relative to the page's lower-left
    corner; without them coverage can't be checked and only the text itself is judged.
    `image_fraction`/`path_objects` describe the page's graphics; when both say "none",
    a short text layer is accepted (there is nothing else on the page to read).
    """
    visible = [ch for ch in text if not ch.isspace()]
    chars = len(visible)
    if chars == 0:
        return TextLayerVerdict(False, "no text layer", 0)

    garbled = _garbled_reason(text, visible)
    if garbled:
        return TextLayerVerdict(False, f"garbled text layer: {garbled}", chars)

    text_only = (
        image_fraction is not None
        and image_fraction < MAX_IMAGE_SHARE_FOR_TEXT_ONLY
        and path_objects is not None
        and path_objects <= MAX_PATHS_FOR_TEXT_ONLY
    )
    ocr_layer = image_fraction is not None and image_fraction >= OCR_LAYER_IMAGE_SHARE
    if text_only:
        return TextLayerVerdict(True, f"text layer ({chars} chars; page has no graphics)", chars)

    area_sq_inch = max(page_width, 1.0) * max(page_height, 1.0) / (72.0 * 72.0)
    needed = max(MIN_CHARS, int(MIN_CHARS_PER_SQ_INCH * area_sq_inch))
    if chars < needed:
        return TextLayerVerdict(False, f"too little text for the page ({chars} chars, need {needed})", chars, ocr_layer)

    if char_boxes:
        rows, cols = _grid_coverage(char_boxes, page_width, page_height)
        if rows < MIN_ROW_SHARE or cols < MIN_COL_SHARE:
            return TextLayerVerdict(
                False,
                f"text covers only part of the page ({rows:.0%} of rows, {cols:.0%} of columns): a stamp or header",
                chars,
                ocr_layer,
            )
        where = f" over {rows:.0%} of the page height"
    else:
        where = ""
    kind = "earlier OCR layer over a scanned image" if ocr_layer else "text layer"
    return TextLayerVerdict(True, f"{kind} ({chars} chars{where})", chars, ocr_layer)


def _garbled_reason(text: str, visible: Sequence[str]) -> Optional[str]:
    """Why the text looks like the output of a broken font map, or None."""
    n = len(visible)
    bad = sum(1 for ch in visible if _is_bad(ch))
    if bad / n > MAX_BAD_SHARE:
        return f"{bad / n:.0%} private-use, replacement or control characters"

    glyph_chars = sum(len(m.group(0)) for m in _GLYPHNAME.finditer(text))
    if glyph_chars / n > MAX_GLYPHNAME_SHARE:
        return "glyph names or (cid:N) codes instead of text"

    if n < MIN_CHARS_FOR_STATS:
        return None

    # Dot leaders and form underscores are honest symbols: count each run once.
    collapsed = [ch for ch in _LEADERS.sub(r"\1", text) if not ch.isspace()]
    symbols = sum(1 for ch in collapsed if not _is_wordish(ch))
    if symbols / max(len(collapsed), 1) > MAX_SYMBOL_SHARE:
        return f"{symbols / len(collapsed):.0%} symbols"

    soup_chars = 0
    latin_letters = exotic_latin = long_run_letters = 0
    latin_words = vowelless = 0
    word_letters = word_vowels = 0
    for token in text.split():
        core = _strip_punct(token)
        if not core:
            continue
        if _is_soup(core):
            soup_chars += len(token)
            continue
        letters = [ch for ch in core if _script(ch) == "LATIN"]
        if not letters:
            continue
        latin_letters += len(letters)
        bases = [_base(ch) for ch in letters]
        exotic_latin += sum(1 for b in bases if not ("a" <= b.lower() <= "z"))
        if len(core) >= LONG_RUN:
            long_run_letters += len(letters)
        if len(letters) == len(core) and len(core) >= 2:
            vowels = sum(1 for b in bases if b in _VOWELS)
            word_letters += len(bases)
            word_vowels += vowels
            if len(core) >= 4:
                latin_words += 1
                vowelless += vowels == 0
    if soup_chars / n > MAX_SOUP_SHARE:
        return f"{soup_chars / n:.0%} of the text is glyph soup"
    if latin_letters >= MIN_CHARS_FOR_STATS:
        if exotic_latin / latin_letters > MAX_EXOTIC_LATIN_SHARE:
            return f"{exotic_latin / latin_letters:.0%} unusual Latin letters"
        if long_run_letters / latin_letters > MAX_LONG_RUN_SHARE:
            return "long runs of letters without spaces"
    if latin_words >= 10 and vowelless / latin_words > MAX_VOWELLESS_SHARE:
        return f"{vowelless / latin_words:.0%} of the words have no vowel"
    if word_letters >= MIN_LETTERS_FOR_VOWELS and word_vowels / word_letters < MIN_VOWEL_SHARE:
        return f"only {word_vowels / word_letters:.0%} vowels in the words"
    return None


@functools.lru_cache(maxsize=4096)
def _is_bad(ch: str) -> bool:
    cp = ord(ch)
    if 0xE000 <= cp <= 0xF8FF or cp >= 0xF0000:  # private use (BMP and planes 15/16)
        return True
    if cp in (0xFFFD, 0xFFFE, 0xFFFF):
        return True
    category = unicodedata.category(ch)
    # Cf (format: soft hyphen, zero-width joiner) is legitimate in real text.
    return category in ("Cc", "Cs", "Cn", "Co")


@functools.lru_cache(maxsize=4096)
def _is_wordish(ch: str) -> bool:
    # Combining marks (M*) carry the vowels of Indic and Thai scripts.
    return ch.isalnum() or unicodedata.category(ch).startswith("M")


@functools.lru_cache(maxsize=4096)
def _script(ch: str) -> str:
    if not ch.isalpha():
        return ""
    try:
        first = unicodedata.name(ch).split()[0]
    except ValueError:
        return "UNKNOWN"
    # Japanese mixes kana and kanji in one word; treat East Asian scripts as one.
    if first in ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "HALFWIDTH", "FULLWIDTH", "IDEOGRAPHIC"):
        return "CJK"
    return first


@functools.lru_cache(maxsize=4096)
def _base(ch: str) -> str:
    return unicodedata.normalize("NFD", ch)[0]


def _strip_punct(token: str) -> str:
    start, end = 0, len(token)
    while start < end and not _is_wordish(token[start]):
        start += 1
    while end > start and not _is_wordish(token[end - 1]):
        end -= 1
    return token[start:end]


def _is_soup(core: str) -> bool:
    """A token that no writing system produces: letters glued to stray symbols, or two
    alphabets inside one word (CJK next to Latin is normal and not counted)."""
    scripts = set()
    for ch in core:
        if _is_wordish(ch):
            script = _script(ch)
            if script in _MIXING_SCRIPTS:
                scripts.add(script)
        elif ch not in _JOINERS and not _is_cjk_punct(ch):
            return True
    return len(scripts) > 1


@functools.lru_cache(maxsize=1024)
def _is_cjk_punct(ch: str) -> bool:
    # Scripts written without spaces put their punctuation inside "tokens" (，。「」).
    return ord(ch) >= 0x2E80 and unicodedata.category(ch).startswith("P")


def _grid_coverage(boxes: Sequence[Box], width: float, height: float) -> Tuple[float, float]:
    """Share of the page's grid rows and columns that some text box touches."""
    rows = [False] * GRID_ROWS
    cols = [False] * GRID_COLS
    width, height = max(width, 1e-6), max(height, 1e-6)
    for l, b, r, t in boxes:
        l, r = sorted((l, r))
        b, t = sorted((b, t))
        if r <= 0 or t <= 0 or l >= width or b >= height:
            continue  # off the visible page
        for i in range(_cell(b, height, GRID_ROWS), _cell(t, height, GRID_ROWS) + 1):
            rows[i] = True
        for i in range(_cell(l, width, GRID_COLS), _cell(r, width, GRID_COLS) + 1):
            cols[i] = True
    return sum(rows) / GRID_ROWS, sum(cols) / GRID_COLS


def _cell(value: float, extent: float, count: int) -> int:
    return min(count - 1, max(0, int(value / extent * count)))


def _area_share(boxes: Sequence[Box], width: float, height: float) -> float:
    """Share of the page covered by the union of boxes (on a fine grid; overlaps count once)."""
    if not boxes or width <= 0 or height <= 0:
        return 0.0
    n = 50
    covered = set()
    for l, b, r, t in boxes:
        l, r = sorted((max(l, 0.0), min(r, width)))
        b, t = sorted((max(b, 0.0), min(t, height)))
        if r <= l or t <= b:
            continue
        x0, x1 = int(l / width * n), int(min(r / width * n, n - 1e-9))
        y0, y1 = int(b / height * n), int(min(t / height * n, n - 1e-9))
        for x in range(x0, x1 + 1):
            for y in range(y0, y1 + 1):
                covered.add((x, y))
    return len(covered) / (n * n)


# --- formatting ----------------------------------------------------------------------

_BULLETS = "•◦▪▫‣⁃∙●○■□➢➤►–\uf0b7\uf0a7\uf076\uf0d8"
_MD_LINE_START = re.compile(r"^(#{1,6}\s|>|[=]{3,}\s*$|-{3,}\s*$|\*{3,}\s*$|_{3,}\s*$)")


def to_markdown(text: str) -> str:
    """Light, honest Markdown from a text layer.

    Keeps the words and line breaks as the PDF has them; paragraphs are separated where
    the text layer has blank lines; bullet characters become list items. Nothing else is
    guessed (no headings, no tables): the model path does structure, this path does not
    pretend to. Characters that would turn a line into Markdown syntax by accident (a
    leading `#`, `>`, or a line of dashes) are escaped.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    text = "".join(ch for ch in text if ch in "\n\t" or not _is_bad(ch) or _is_bullet(ch))
    out = []
    blank = True  # suppress leading blank lines
    for raw in text.split("\n"):
        line = raw.rstrip().replace("\t", " ")
        if not line.strip():
            if not blank:
                out.append("")
            blank = True
            continue
        stripped = line.lstrip()
        if stripped[0] in _BULLETS and (len(stripped) == 1 or stripped[1].isspace()):
            line = "- " + stripped[1:].lstrip()
        else:
            line = stripped
            if _MD_LINE_START.match(line):
                line = "\\" + line
        out.append(line)
        blank = False
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + ("\n" if out else "")


def _is_bullet(ch: str) -> bool:
    return ch in _BULLETS
