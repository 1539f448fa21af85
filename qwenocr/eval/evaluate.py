"""Score OCR output against ground truth: error rates per page and text checks.

This is what `qwenocr eval` runs. It reads the two documents into pages, normalises
Markdown away (rules in `normalize`), and reports:

- the character error rate (CER) and word error rate (WER) per page and overall: the
  Levenshtein distance from the reference to the output divided by the reference's
  length; overall is the total edits over the total reference length, so long pages
  weigh more than short ones (the usual corpus-level definition);
- olmOCR-Bench-style checks from a JSONL file: a snippet is present, a snippet is
  absent, one snippet comes before another; each optionally fuzzy (`max_diffs`).

Nothing here prints. Errors in the inputs raise `InputError` (exit 3) with one line.

The edit distance is Hyyrö's bit-parallel form of Myers' algorithm, with Python's
unbounded integers as the bit vectors: the DP table's column is one integer, so a
step over the text is a dozen big-integer operations done in C. That is O(n·m/30)
steps (CPython digits are 30 bits) and O(m) bits of memory: a 10,000-character page against another
takes 50-130 ms on a 2-core VM (the textbook table: about 70 s), with no compiled
dependency.
"""

from __future__ import annotations

import html
import json
import re
import sys
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

from qwenocr.errors import InputError

# --------------------------------------------------------------------------------------
# Edit distance


def levenshtein(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """The Levenshtein distance between two sequences (strings, or lists of words).

    Insertions, deletions and substitutions each cost 1.
    """
    # Common prefixes and suffixes cost nothing and are common in OCR output.
    start = 0
    limit = min(len(a), len(b))
    while start < limit and a[start] == b[start]:
        start += 1
    end_a, end_b = len(a), len(b)
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a -= 1
        end_b -= 1
    a, b = a[start:end_a], b[start:end_b]
    if len(a) < len(b):
        a, b = b, a  # the shorter one becomes the bit vector
    if not b:
        return len(a)
    peq = _match_vectors(b).get
    m = len(b)
    mask = (1 << m) - 1
    high = 1 << (m - 1)
    pv, mv, score = mask, 0, m
    for symbol in a:
        eq = peq(symbol, 0)
        xv = eq | mv
        xh = ((((eq & pv) + pv) & mask) ^ pv) | eq
        ph = mv | ((xh | pv) ^ mask)  # x ^ mask is ~x within m bits
        mh = pv & xh
        if ph & high:
            score += 1
        elif mh & high:
            score -= 1
        # Shifting a 1 into the horizontal deltas is what makes this the global
        # distance: the DP's top row is 0, 1, 2, ... (see `_match_ends` for 0, 0, 0).
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = mh | ((xv | ph) ^ mask)
        mv = ph & xv
    return score


def _match_vectors(pattern: Sequence[Hashable]) -> Dict[Hashable, int]:
    peq: Dict[Hashable, int] = {}
    bit = 1
    for symbol in pattern:
        peq[symbol] = peq.get(symbol, 0) | bit
        bit <<= 1
    return peq


def _match_ends(pattern: str, text: str, max_diffs: int) -> Tuple[List[int], int]:
    """Where `pattern` occurs in `text` with at most `max_diffs` edits (Sellers' problem).

    Returns the end index (exclusive) of every matching substring, and the fewest
    edits of any substring, which says how close a failed search came.
    """
    m = len(pattern)
    peq = _match_vectors(pattern)
    mask = (1 << m) - 1
    high = 1 << (m - 1)
    pv, mv, score = mask, 0, m
    best = m
    ends = []
    for j, symbol in enumerate(text):
        eq = peq.get(symbol, 0)
        xv = eq | mv
        xh = ((((eq & pv) + pv) & mask) ^ pv) | eq
        ph = mv | ((xh | pv) ^ mask)  # x ^ mask is ~x within m bits
        mh = pv & xh
        if ph & high:
            score += 1
        elif mh & high:
            score -= 1
        ph = (ph << 1) & mask  # a match may start anywhere: the top row is all 0
        mh = (mh << 1) & mask
        pv = mh | ((xv | ph) ^ mask)
        mv = ph & xv
        if score <= max_diffs:
            ends.append(j + 1)
        best = min(best, score)
    return ends, best


def find_starts(needle: str, haystack: str, max_diffs: int = 0) -> Tuple[List[int], int]:
    """Start offsets of the (fuzzy) occurrences of `needle`, and the fewest edits found.

    A fuzzy search yields where matches end; searching the reversed strings yields
    where they start, exactly, which the order checks need.
    """
    if max_diffs <= 0:
        starts = []
        at = haystack.find(needle)
        while at != -1:
            starts.append(at)
            at = haystack.find(needle, at + 1)
        if starts:
            return starts, 0
        return [], _match_ends(needle, haystack, len(needle))[1] if needle and haystack else len(needle)
    ends, best = _match_ends(needle[::-1], haystack[::-1], max_diffs)
    return sorted(len(haystack) - end for end in ends), best


# --------------------------------------------------------------------------------------
# Normalisation

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


# --------------------------------------------------------------------------------------
# Reading documents


@dataclass(frozen=True)
class Page:
    number: int
    text: str


@dataclass(frozen=True)
class Document:
    """A document as pages. `paged` is False for text with no page structure at all."""

    source: str
    pages: Tuple[Page, ...]
    paged: bool

    def text(self) -> str:
        return "\n\n".join(page.text for page in self.pages)


# qwenocr's Markdown page separator, "<!-- page 3 -->" or "<!-- page 3 (repetition) -->"
# (output.page_marker writes it; this reads it back).
_PAGE_MARKER = re.compile(r"^[ \t]*<!--\s*page\s+(\d+)(\s*\([^)\n]*\))?\s*-->[ \t]*$", re.I | re.M)
# The notes qwenocr adds to its Markdown ("> **qwenocr:** page 3: the model repeated
# itself...") are not text of the page.
_QWENOCR_NOTE = re.compile(r"^[ \t]*> \*\*qwenocr:\*\*.*$\n?", re.M)


def read_document(path: Path | str, role: str = "output") -> Document:
    """Read OCR output or a reference: Markdown/text, qwenocr JSON or JSONL; `-` is stdin."""
    name = str(path)
    if name == "-":
        data = sys.stdin.buffer.read()
        suffix = ""
    else:
        file = Path(path)
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{role} file not found: {name}") from None
        except IsADirectoryError:
            raise InputError(f"{role} {name} is a directory; give one file") from None
        except OSError as error:
            raise InputError(f"can't read {role} {name}: {error.strerror or error}") from None
        suffix = file.suffix.lower()
    if data.startswith(b"%PDF"):
        raise InputError(f"{name} is a PDF, not OCR output", "run `qwenocr scan` on it first and score that")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{name} is not UTF-8 text (bad byte at offset {error.start})") from None
    return parse_document(text, source=name, suffix=suffix)


def parse_document(text: str, source: str = "<text>", suffix: str = "") -> Document:
    """Parse text into pages: JSON/JSONL when it is (or the suffix says so), else Markdown."""
    stripped = text.lstrip()
    if suffix in (".json", ".jsonl", ".ndjson") or stripped[:1] in ("{", "["):
        parsed = _parse_json_pages(text, source, strict=suffix in (".json", ".jsonl", ".ndjson"))
        if parsed is not None:
            return parsed
    return _parse_text_pages(text, source)


def _parse_text_pages(text: str, source: str) -> Document:
    markers = list(_PAGE_MARKER.finditer(text))
    if markers:
        text = _QWENOCR_NOTE.sub("", text)
        markers = list(_PAGE_MARKER.finditer(text))
        pages = []
        leading = text[: markers[0].start()]
        for i, marker in enumerate(markers):
            end = markers[i + 1].start() if i + 1 < len(markers) else len(text)
            body = text[marker.end() : end]
            if i == 0 and leading.strip():
                body = leading + "\n" + body  # text before the first marker is not dropped
            pages.append(Page(int(marker.group(1)), body.strip("\n")))
        return Document(source, _unique(pages, source), paged=True)
    if "\f" in text:
        parts = text.split("\f")
        if parts and not parts[-1].strip():
            parts.pop()  # pdftotext and friends end every page, the last one too, with \f
        return Document(source, tuple(Page(i + 1, part) for i, part in enumerate(parts)), paged=True)
    return Document(source, (Page(1, text),), paged=False)


def _parse_json_pages(text: str, source: str, strict: bool) -> Optional[Document]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        records = _parse_jsonl(text, source, first_error=error, strict=strict)
        if records is None:
            return None
        return _pages_from_records(records, source, what="JSONL")
    if isinstance(value, dict) and "pages" in value:
        if not isinstance(value["pages"], list):
            raise InputError(f'{source}: "pages" is not a list')
        return _pages_from_records([(None, p) for p in value["pages"]], source, what="JSON")
    if isinstance(value, dict) and "text" in value:
        return _pages_from_records([(1, value)], source, what="JSON")
    if isinstance(value, list) and value and all(isinstance(item, dict) and "pages" in item for item in value):
        if len(value) == 1:  # `scan --format json` with several inputs writes an array
            return _parse_json_pages(json.dumps(value[0]), source, strict=True)
        raise InputError(f"{source} holds {len(value)} documents", "score one document at a time")
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return _pages_from_records([(None, p) for p in value], source, what="JSON")
    if strict:
        raise InputError(f'{source}: expected a qwenocr JSON document ({{"pages": [{{"number": 1, "text": ...}}]}})')
    return None


def _parse_jsonl(text: str, source: str, first_error: json.JSONDecodeError, strict: bool):
    records = []
    for line_number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if not strict and not records:
                return None  # not JSON after all: Markdown that starts with "[" or "{"
            raise InputError(f"{source}, line {line_number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{source}, line {line_number}: expected a JSON object per line")
        records.append((line_number, record))
    return records


def _pages_from_records(records, source: str, what: str) -> Document:
    pages = []
    for index, (line_number, record) in enumerate(records):
        where = f"{source}, line {line_number}" if line_number else f"{source}, page entry {index + 1}"
        if not isinstance(record, dict):
            raise InputError(f'{where}: expected an object with "number" and "text"')
        if "text" not in record:
            continue  # a header or summary record of a JSONL stream, not a page
        number = record.get("number", record.get("page", index + 1))
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise InputError(f"{where}: page number {number!r} is not a whole number >= 1")
        page_text = record["text"]
        if page_text is None:
            page_text = ""  # a page that failed in the run: scored as empty output
        if not isinstance(page_text, str):
            raise InputError(f'{where}: "text" is not a string')
        pages.append(Page(number, page_text))
    if not pages:
        raise InputError(f'{source}: no pages in this {what} (expected objects with "number" and "text")')
    return Document(source, _unique(pages, source), paged=True)


def _unique(pages: List[Page], source: str) -> Tuple[Page, ...]:
    seen = set()
    for page in pages:
        if page.number in seen:
            raise InputError(f"{source}: page {page.number} appears twice", "score one document at a time")
        seen.add(page.number)
    return tuple(sorted(pages, key=lambda page: page.number))


# --------------------------------------------------------------------------------------
# Error rates


@dataclass(frozen=True)
class PageScore:
    number: int
    ref_chars: int
    ref_words: int
    char_edits: int
    word_edits: int
    out_chars: int
    out_words: int
    missing: bool = False  # the output has no such page: scored as empty

    @property
    def cer(self) -> Optional[float]:
        return _rate(self.char_edits, self.ref_chars)

    @property
    def wer(self) -> Optional[float]:
        return _rate(self.word_edits, self.ref_words)


def _rate(edits: int, length: int) -> Optional[float]:
    if length:
        return edits / length
    # An empty reference page: perfect if the output is empty too, and otherwise
    # undefined (no denominator) but not hidden: the edits still count overall.
    return 0.0 if edits == 0 else None


@dataclass(frozen=True)
class Scores:
    pages: Tuple[PageScore, ...]
    alignment: str  # "page" (by page number) or "document" (whole texts)
    unscored_pages: Tuple[int, ...]  # output pages the reference does not cover

    @property
    def char_edits(self) -> int:
        return sum(p.char_edits for p in self.pages)

    @property
    def word_edits(self) -> int:
        return sum(p.word_edits for p in self.pages)

    @property
    def ref_chars(self) -> int:
        return sum(p.ref_chars for p in self.pages)

    @property
    def ref_words(self) -> int:
        return sum(p.ref_words for p in self.pages)

    @property
    def cer(self) -> Optional[float]:
        return _rate(self.char_edits, self.ref_chars)

    @property
    def wer(self) -> Optional[float]:
        return _rate(self.word_edits, self.ref_words)

    @property
    def missing_pages(self) -> Tuple[int, ...]:
        return tuple(p.number for p in self.pages if p.missing)


def score_page(number: int, output: str, reference: str, normalized: bool = True, missing: bool = False) -> PageScore:
    """CER and WER of one page. With `normalized`, both texts go through `normalize` first."""
    if normalized:
        output, reference = normalize(output), normalize(reference)
    out_words, ref_words = output.split(), reference.split()
    return PageScore(
        number=number,
        ref_chars=len(reference),
        ref_words=len(ref_words),
        char_edits=levenshtein(output, reference),
        word_edits=levenshtein(out_words, ref_words),
        out_chars=len(output),
        out_words=len(out_words),
        missing=missing,
    )


def score(output: Document, reference: Document, normalized: bool = True) -> Scores:
    """Score a document against its reference, page by page where both have pages.

    If either side has no page structure (plain text without markers or form feeds),
    the whole texts are compared as one page. Otherwise pages pair by number: a
    reference page the output lacks is scored as empty output (all deletions), and
    output pages the reference doesn't cover are left out and listed as unscored.
    """
    if not output.paged or not reference.paged:
        page = score_page(1, output.text(), reference.text(), normalized)
        return Scores((page,), "document", ())
    by_number = {page.number: page.text for page in output.pages}
    pages = []
    for ref_page in reference.pages:
        out_text = by_number.get(ref_page.number)
        pages.append(score_page(ref_page.number, out_text or "", ref_page.text, normalized, missing=out_text is None))
    covered = {page.number for page in reference.pages}
    unscored = tuple(page.number for page in output.pages if page.number not in covered)
    return Scores(tuple(pages), "page", unscored)


# --------------------------------------------------------------------------------------
# Checks

CHECK_TYPES = ("present", "absent", "order")


@dataclass(frozen=True)
class Check:
    """One olmOCR-Bench-style check, as read from a line of the checks file."""

    line: int
    type: str
    text: str = ""  # present / absent
    before: str = ""  # order
    after: str = ""  # order
    page: Optional[int] = None
    max_diffs: int = 0
    case_sensitive: bool = True
    id: Optional[str] = None

    def describe(self) -> str:
        if self.type == "order":
            return f"{_clip(self.before)!r} before {_clip(self.after)!r}"
        return repr(_clip(self.text))


@dataclass(frozen=True)
class CheckResult:
    check: Check
    passed: bool
    detail: str


def read_checks(path: Path | str) -> List[Check]:
    """Read a checks file: one JSON object per line (blank lines and `#` lines skipped)."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"checks file not found: {name}") from None
    except IsADirectoryError:
        raise InputError(f"checks {name} is a directory; give a .jsonl file") from None
    except UnicodeDecodeError:
        raise InputError(f"checks file {name} is not UTF-8 text") from None
    except OSError as error:
        raise InputError(f"can't read checks file {name}: {error.strerror or error}") from None
    checks = [
        parse_check(line, n, name)
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not checks:
        raise InputError(f"checks file {name} has no checks (one JSON object per line)")
    return checks


def parse_check(line: str, line_number: int = 1, source: str = "<checks>") -> Check:
    where = f"{source}, line {line_number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(f"{where}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object")
    kind = record.get("type")
    if kind not in CHECK_TYPES:
        raise InputError(f"{where}: unknown check type {kind!r} (supported: {', '.join(CHECK_TYPES)})")
    fields = ("before", "after") if kind == "order" else ("text",)
    values = {}
    for name in fields:
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{where}: a {kind!r} check needs a non-empty string {name!r}")
        values[name] = value
    page = record.get("page")
    if page is not None and (isinstance(page, bool) or not isinstance(page, int) or page < 1):
        raise InputError(f'{where}: "page" must be a page number >= 1')
    max_diffs = record.get("max_diffs", 0)
    if isinstance(max_diffs, bool) or not isinstance(max_diffs, int) or max_diffs < 0:
        raise InputError(f'{where}: "max_diffs" must be a whole number >= 0')
    case_sensitive = record.get("case_sensitive", True)
    if not isinstance(case_sensitive, bool):
        raise InputError(f'{where}: "case_sensitive" must be true or false')
    check_id = record.get("id")
    return Check(
        line=line_number,
        type=kind,
        page=page,
        max_diffs=max_diffs,
        case_sensitive=case_sensitive,
        id=None if check_id is None else str(check_id),
        **values,
    )


class _SearchText:
    """The output's text as one string (normalised or not), knowing where each page starts."""

    def __init__(self, output: Document, normalized: bool):
        self.normalized = normalized
        self.page_texts = {page.number: self._prepare(page.text) for page in output.pages}
        self.paged = output.paged
        self.numbers = [page.number for page in output.pages]
        self.offsets = []
        parts = []
        offset = 0
        for number in self.numbers:
            self.offsets.append(offset)
            parts.append(self.page_texts[number])
            offset += len(self.page_texts[number]) + 1
        self.whole = "\n".join(parts)

    def _prepare(self, text: str) -> str:
        return normalize(text) if self.normalized else text

    def page_at(self, offset: int) -> int:
        return self.numbers[max(0, bisect_right(self.offsets, offset) - 1)]


def run_checks(checks: Iterable[Check], output: Document, normalized: bool = True) -> List[CheckResult]:
    """Run each check on the output (normalised like the scoring unless `normalized` is False)."""
    search = _SearchText(output, normalized)
    return [_run_check(check, search) for check in checks]


def _run_check(check: Check, search: _SearchText) -> CheckResult:
    if check.page is not None:
        if check.page not in search.page_texts:
            return CheckResult(check, check.type == "absent", f"the output has no page {check.page}")
        haystack, page_of = search.page_texts[check.page], (lambda _offset: check.page)
    else:
        haystack, page_of = search.whole, search.page_at

    def prepare(snippet: str) -> str:
        snippet = search._prepare(snippet)
        return snippet if check.case_sensitive else snippet.lower()

    if not check.case_sensitive:
        haystack = haystack.lower()
    allowed = f"{check.max_diffs} allowed"

    def where(offset: int) -> str:
        return f"on page {page_of(offset)}" if search.paged else f"at character {offset}"

    if check.type in ("present", "absent"):
        starts, best = find_starts(prepare(check.text), haystack, check.max_diffs)
        if check.type == "present":
            if starts:
                return CheckResult(check, True, f"found {where(starts[0])}")
            return CheckResult(check, False, f"not found (closest: {best} edits, {allowed})")
        if starts:
            return CheckResult(check, False, f"found {where(starts[0])}")
        return CheckResult(check, True, "not found")
    before, _ = find_starts(prepare(check.before), haystack, check.max_diffs)
    after, _ = find_starts(prepare(check.after), haystack, check.max_diffs)
    if not before or not after:
        missing = " and ".join(name for name, found in (("'before'", before), ("'after'", after)) if not found)
        return CheckResult(check, False, f"{missing} not found")
    # As olmOCR-Bench does: pass when some occurrence of `before` starts before some
    # occurrence of `after` (repeated headers must not fail a check).
    if before[0] < after[-1]:
        return CheckResult(check, True, f"in order ({where(before[0])}, then {where(after[-1])})")
    return CheckResult(check, False, f"out of order ('after' {where(after[-1])}, 'before' {where(before[0])})")


def _clip(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------------------
# The whole evaluation, and its report


@dataclass(frozen=True)
class Evaluation:
    output: str
    reference: Optional[str]
    normalized: bool
    scores: Optional[Scores] = None
    checks: Optional[Tuple[CheckResult, ...]] = None
    checks_source: Optional[str] = None

    @property
    def checks_passed(self) -> int:
        return sum(1 for result in self.checks or () if result.passed)

    @property
    def pass_rate(self) -> Optional[float]:
        return self.checks_passed / len(self.checks) if self.checks else None

    def warnings(self) -> List[str]:
        """What a user should know about how the pages were paired."""
        notes = []
        if self.scores is not None:
            if self.scores.missing_pages:
                notes.append(f"the output has no page {_numbers(self.scores.missing_pages)}: scored as empty")
            if self.scores.unscored_pages:
                notes.append(f"the reference has no page {_numbers(self.scores.unscored_pages)}: not scored")
        return notes

    def to_dict(self) -> Dict[str, Any]:
        """The `--json` report: rates are fractions (0.05 is 5%), null where undefined."""
        report: Dict[str, Any] = {
            "output": self.output,
            "reference": self.reference,
            "normalized": self.normalized,
            "cer": None,
            "wer": None,
        }
        if self.scores is not None:
            s = self.scores
            report.update(
                cer=s.cer,
                wer=s.wer,
                char_edits=s.char_edits,
                ref_chars=s.ref_chars,
                word_edits=s.word_edits,
                ref_words=s.ref_words,
                alignment=s.alignment,
                unscored_pages=list(s.unscored_pages),
            )
        report["pages"] = [
            {
                "number": p.number,
                "cer": p.cer,
                "wer": p.wer,
                "ref_chars": p.ref_chars,
                "ref_words": p.ref_words,
                "char_edits": p.char_edits,
                "word_edits": p.word_edits,
                "out_chars": p.out_chars,
                "out_words": p.out_words,
                "missing": p.missing,
            }
            for p in (self.scores.pages if self.scores else ())
        ]
        if self.checks is None:
            report["checks"] = None
        else:
            report["checks"] = {
                "file": self.checks_source,
                "results": [
                    {
                        "line": r.check.line,
                        "id": r.check.id,
                        "type": r.check.type,
                        **(
                            {"before": r.check.before, "after": r.check.after}
                            if r.check.type == "order"
                            else {"text": r.check.text}
                        ),
                        "page": r.check.page,
                        "max_diffs": r.check.max_diffs,
                        "passed": r.passed,
                        "detail": r.detail,
                    }
                    for r in self.checks
                ],
                "passed": self.checks_passed,
                "total": len(self.checks),
                "pass_rate": self.pass_rate,
            }
        return report


def evaluate(
    output: Document,
    reference: Optional[Document] = None,
    checks: Optional[Sequence[Check]] = None,
    normalized: bool = True,
    checks_source: Optional[str] = None,
) -> Evaluation:
    return Evaluation(
        output=output.source,
        reference=reference.source if reference else None,
        normalized=normalized,
        scores=score(output, reference, normalized) if reference is not None else None,
        checks=tuple(run_checks(checks, output, normalized)) if checks is not None else None,
        checks_source=checks_source,
    )


def render(evaluation: Evaluation) -> list:
    """Rich renderables for the terminal report (the CLI prints them to stdout)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    style = dict(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    parts: list = []
    if evaluation.scores is not None:
        s = evaluation.scores
        table = Table(
            title=f"{evaluation.output} against {evaluation.reference}",
            caption="Chars, Words: edits / length of the reference",
            title_justify="left",
            caption_justify="left",
            **style,
        )
        table.add_column("Page", justify="right", no_wrap=True)
        table.add_column("CER", justify="right")
        table.add_column("WER", justify="right")
        table.add_column("Chars", justify="right")
        table.add_column("Words", justify="right")
        for p in s.pages:
            label = "all" if s.alignment == "document" else str(p.number) + (" (missing)" if p.missing else "")
            table.add_row(
                label,
                _percent(p.cer),
                _percent(p.wer),
                f"{p.char_edits}/{p.ref_chars}",
                f"{p.word_edits}/{p.ref_words}",
            )
        if s.alignment == "page" and len(s.pages) > 1:
            table.add_section()
            table.add_row(
                "overall",
                _percent(s.cer),
                _percent(s.wer),
                f"{s.char_edits}/{s.ref_chars}",
                f"{s.word_edits}/{s.ref_words}",
                style="bold",
            )
        parts.append(table)
    if evaluation.checks is not None:
        if parts:
            parts.append(Text(""))
        table = Table(title=f"Checks from {evaluation.checks_source}", title_justify="left", **style)
        table.add_column("Line", justify="right")
        table.add_column("Type")
        table.add_column("Check")
        table.add_column("Result", no_wrap=True)
        table.add_column("Detail")
        for r in evaluation.checks:
            page = f" (page {r.check.page})" if r.check.page is not None else ""
            table.add_row(
                str(r.check.line),
                r.check.type,
                r.check.describe() + page,
                Text("pass", style="green") if r.passed else Text("FAIL", style="red"),
                r.detail,
            )
        parts.append(table)
        parts.append(
            Text(
                f"Checks passed: {evaluation.checks_passed}/{len(evaluation.checks)} ({_percent(evaluation.pass_rate)})"
            )
        )
    return parts


def _percent(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def _numbers(numbers: Sequence[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:10])
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")
