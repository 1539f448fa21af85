"""The invisible font of the text layer: every character one blank glyph, real Unicode.

The approach Tesseract and OCRmyPDF use for their text layers, generalised: a Type 0
font with `Identity-H` encoding over a CIDFontType2 whose every CID is drawn with the
same glyph (`CIDToGIDMap`), and a `ToUnicode` map saying which character each CID stands
for. Search, selection and copy read that map, so any Unicode works (CJK, Arabic, math,
characters outside the BMP) without a font that has their shapes. The text is drawn in
render mode 3 (invisible), and the glyph has no area anyway (one contour that is a line
from the descender to the ascender): nothing can be filled, whatever a reader does. It is
not empty because readers measure glyph boxes: PDFium drops a one-character word whose
glyph has no box (measured), so a lone "A" or "1" would not be found.

Unlike Tesseract's font, whose CIDs are UTF-16 code units (so characters beyond U+FFFF
break apart), CIDs here are handed out per document in order of first use and the
ToUnicode map is written from what was used: one CID per code point, any code point.

The TrueType program embedded as FontFile2 is built here (a few hundred bytes, the ten
tables a strict reader asks for), so no font file ships with qwenocr.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Tuple

FONT_NAME = "GlyphLessFont"
UNITS_PER_EM = 1000
# Every glyph's advance, in thousandths of the font size: the text layer scales each line
# horizontally (Tz) so that its glyphs span the line's box whatever this is.
GLYPH_WIDTH = 500
ASCENT, DESCENT = 800, -200  # the glyph box a reader's selection highlight spans
MAX_CID = 0xFFFF  # Identity-H codes are two bytes; CID 0 is .notdef


def _checksum(data: bytes) -> int:
    padded = data + b"\0" * (-len(data) % 4)
    return sum(struct.unpack(f">{len(padded) // 4}I", padded)) & 0xFFFFFFFF


def _name_table(names: Dict[int, str]) -> bytes:
    records, strings = [], b""
    for name_id, value in sorted(names.items()):
        encoded = value.encode("utf-16-be")
        records.append(struct.pack(">HHHHHH", 3, 1, 0x409, name_id, len(encoded), len(strings)))
        strings += encoded
    header = struct.pack(">HHH", 0, len(records), 6 + 12 * len(records))
    return header + b"".join(records) + strings


def _line_glyph() -> bytes:
    """A simple glyph of one contour with two on-curve points, (0, DESCENT) and
    (GLYPH_WIDTH, ASCENT): a box for readers to measure, no area to fill."""
    header = struct.pack(">hhhhh", 1, 0, DESCENT, GLYPH_WIDTH, ASCENT)
    contour = struct.pack(">HH", 1, 0)  # end point of the contour; no instructions
    points = bytes([0x01, 0x01]) + struct.pack(">hh", 0, GLYPH_WIDTH) + struct.pack(">hh", DESCENT, ASCENT - DESCENT)
    glyph = header + contour + points
    return glyph + b"\0" * (-len(glyph) % 4)


def truetype_program() -> bytes:
    """A valid TrueType font of two glyphs (.notdef, empty, and the line), advance 500."""
    glyphs = 2
    line = _line_glyph()
    tables = {
        b"OS/2": struct.pack(
            ">HhHHHhhhhhhhhhhh10s4I4sHHHhhhHHIIhhHHH",
            4,
            GLYPH_WIDTH,
            400,
            5,
            0,  # version, avg width, weight, width class, fsType: installable
            650,
            600,
            0,
            75,
            650,
            600,
            0,
            350,
            50,
            250,
            0,  # sub/superscript, strikeout, family class
            b"\0" * 10,
            0,
            0,
            0,
            0,
            b"QOCR",  # panose, Unicode ranges, vendor
            0x40,
            0x20,
            0xFFFF,  # fsSelection: regular; first and last character
            ASCENT,
            DESCENT,
            0,
            ASCENT,
            -DESCENT,
            1,
            0,  # typographic and Windows metrics, code pages
            500,
            700,
            0,
            32,
            1,  # x-height, cap height, default char, break char, max context
        ),  # fmt: skip
        # One format 4 segment (the required 0xFFFF end): readers use CIDToGIDMap, not this.
        b"cmap": struct.pack(">HHHHI", 0, 1, 3, 1, 12)
        + struct.pack(">HHHHHHHHHHHH", 4, 24, 0, 2, 2, 0, 0, 0xFFFF, 0, 0xFFFF, 1, 0),
        b"glyf": line,  # .notdef is empty (zero length in loca)
        b"head": struct.pack(
            ">IIIIHHqqhhhhHHhhh",
            0x00010000,
            0x00010000,
            0,
            0x5F0F3CF5,
            0x000B,
            UNITS_PER_EM,
            0,
            0,
            0,
            DESCENT,
            GLYPH_WIDTH,
            ASCENT,
            0,
            8,
            2,
            0,
            0,
        ),  # fmt: skip
        b"hhea": struct.pack(
            ">IhhhHhhhhhhhhhhhH",
            0x00010000,
            ASCENT,
            DESCENT,
            0,
            GLYPH_WIDTH,
            0,
            0,
            GLYPH_WIDTH,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            glyphs,
        ),  # fmt: skip
        b"hmtx": struct.pack(">HhHh", GLYPH_WIDTH, 0, GLYPH_WIDTH, 0),
        b"loca": struct.pack(">HHH", 0, 0, len(line) // 2),
        b"maxp": struct.pack(">IHHHHHHHHHHHHHH", 0x00010000, glyphs, 2, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0),
        b"name": _name_table({1: FONT_NAME, 2: "Regular", 4: FONT_NAME, 6: FONT_NAME}),
        b"post": struct.pack(">IIhhIIIII", 0x00030000, 0, -100, 50, 1, 0, 0, 0, 0),
    }
    count = len(tables)
    search = 16 * (1 << (count.bit_length() - 1))
    directory = struct.pack(">IHHHH", 0x00010000, count, search, count.bit_length() - 1, count * 16 - search)
    offset = len(directory) + 16 * count
    entries, body = b"", b""
    for tag in sorted(tables):
        data = tables[tag]
        entries += struct.pack(">4sIII", tag, _checksum(data), offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    font = bytearray(directory + entries + body)
    # head.checkSumAdjustment, at byte 8 of the head table, makes the whole file sum to a constant.
    head_offset = offset + sum(len(tables[t]) + (-len(tables[t]) % 4) for t in sorted(tables) if t < b"head")
    struct.pack_into(">I", font, head_offset + 8, (0xB1B0AFBA - _checksum(bytes(font))) & 0xFFFFFFFF)
    return bytes(font)


class CharacterCodes:
    """The CIDs of one document's text layer: one per code point, handed out on first use.

    `encode` turns text into the two-byte codes of a `Tj`; `to_unicode` writes the CMap
    that maps them back, once the document's text is all in."""

    def __init__(self) -> None:
        self._codes: Dict[str, int] = {}
        self._chars: List[str] = [""]  # CID 0 is .notdef

    def encode(self, text: str) -> bytes:
        out = bytearray()
        for char in text:
            code = self._codes.get(char)
            if code is None:
                if len(self._chars) > MAX_CID:  # 65 535 distinct characters in one document
                    char = "\ufffd"
                    code = self._codes.get(char)
                if code is None:
                    code = len(self._chars)
                    self._codes[char] = code
                    self._chars.append(char)
            out += code.to_bytes(2, "big")
        return bytes(out)

    @property
    def used(self) -> int:
        """The highest CID handed out."""
        return len(self._chars) - 1

    def cid_to_gid_map(self) -> bytes:
        """Every CID drawn with glyph 1, the line (CID 0 keeps .notdef)."""
        return b"\0\0" + b"\0\x01" * self.used

    def to_unicode(self) -> bytes:
        """The ToUnicode CMap: each CID to its character, in UTF-16BE (surrogates beyond the BMP)."""
        pairs: List[Tuple[int, str]] = list(enumerate(self._chars))[1:]
        lines = [
            "/CIDInit /ProcSet findresource begin",
            "12 dict begin",
            "begincmap",
            "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def",
            "/CMapName /Adobe-Identity-UCS def",
            "/CMapType 2 def",
            "1 begincodespacerange",
            "<0000> <FFFF>",
            "endcodespacerange",
        ]
        for start in range(0, len(pairs), 100):  # at most 100 entries per block (PDF 32000 9.10.3)
            chunk = pairs[start : start + 100]
            lines.append(f"{len(chunk)} beginbfchar")
            lines += [f"<{cid:04X}> <{char.encode('utf-16-be').hex().upper()}>" for cid, char in chunk]
            lines.append("endbfchar")
        lines += ["endcmap", "CMapName currentdict /CMap defineresource pop", "end", "end"]
        return ("\n".join(lines) + "\n").encode("ascii")
