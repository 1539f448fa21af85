"""Markdown reduced to its words, so that `qwenocr eval` compares content, not syntax."""

from __future__ import annotations

import html
import re
import unicodedata

_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_FENCE = re.compile(r"^\s*(```|~~~)")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_THEMATIC_BREAK = re.compile(r"^\s*([-*_=])(\s*\1){2,}\s*$")
_HEADING = re.compile(r"^\s*#{1,6}(\s+|$)")
_CLOSING_HASHES = re.compile(r"\s+#+\s*$")
_QUOTE = re.compile(r"^\s*(>\s?)+")
_BULLET = re.compile(r"^\s*[-*+\u2022]\s+(\[[ xX]\]\s+)?")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(\s[^<>]*)?/?>")
_ESCAPABLE = "\\`*_{}[]()#+-.!|>~"
_ESCAPE = re.compile(r"\\([" + re.escape(_ESCAPABLE) + "])")
# Escaped characters wait in Unicode noncharacters (U+FDD0...), which text never holds.
_PARK = {c: chr(0xFDD0 + i) for i, c in enumerate(_ESCAPABLE)}
_UNPARK = str.maketrans({parked: c for c, parked in _PARK.items()})
_STRONG = re.compile(r"\*\*|__|~~|`")
_EMPHASIS_OPEN = re.compile(r"(?<![\w*_])[*_]+(?=\S)")
_EMPHASIS_CLOSE = re.compile(r"(?<=\S)[*_]+(?![\w*_])")
_TYPOGRAPHY = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
        "\u00ad": None,
        "\u200b": None,
        "\u200c": None,
        "\u200d": None,
        "\ufeff": None,
    }
)


def normalize(text: str) -> str:
    """Reduce Markdown (or plain text) to its words, so that scoring compares content.

    The rules, in order (docs/commands.md repeats them):

    1. Unicode NFKC (ligatures, full-width forms, non-breaking spaces, "…" to "...").
    2. HTML comments go (qwenocr's `<!-- page N -->` markers among them).
    3. Per line: code fences, table rule rows (`|---|:--:|`), thematic breaks and
       setext underlines go; heading `#`s, blockquote `>`s, and bullet markers
       (`-`, `*`, `+`, `•`, with a task box) go. Ordered-list numbers stay: they are
       part of the text (clause "3." of a contract).
    4. Inline: images become their alt text, links their text; HTML tags become a
       space, entities their character; table pipes become a space; emphasis and
       code markers (`**`, `__`, `~~`, backticks, and `*`/`_` at the edge of a word)
       go; backslash escapes lose the backslash.
    5. Typographic quotes become ASCII quotes and dashes a hyphen; soft hyphens and
       zero-width characters go.
    6. All whitespace runs become one space; the ends are trimmed.

    Case, punctuation, digits and LaTeX are kept: they are OCR errors when wrong.
    """
    text = unicodedata.normalize("NFKC", text)
    text = _HTML_COMMENT.sub(" ", text)
    lines = []
    for line in text.splitlines():
        if _FENCE.match(line) or _TABLE_RULE.match(line) or _THEMATIC_BREAK.match(line):
            continue
        if _HEADING.match(line):
            line = _CLOSING_HASHES.sub("", _HEADING.sub("", line))
        line = _QUOTE.sub("", line)
        line = _BULLET.sub("", line)
        lines.append(line)
    text = "\n".join(lines)
    # Escaped characters are literal text: park them while the Markdown syntax is
    # removed, and bring them back at the end.
    text = _ESCAPE.sub(lambda m: _PARK[m.group(1)], text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _TAG.sub(" ", text)
    text = _STRONG.sub("", text)
    text = _EMPHASIS_OPEN.sub("", text)
    text = _EMPHASIS_CLOSE.sub("", text)
    text = html.unescape(text)
    text = text.replace("|", " ")
    text = text.translate(_TYPOGRAPHY)
    text = text.translate(_UNPARK)
    return " ".join(text.split())
