"""Catch a runaway repetition loop while a model's tokens stream in.

Vision-language OCR models sometimes get stuck: they repeat one token (`the the the`,
`||||||`), one sentence, one table row or a whole paragraph until `max_tokens` runs out.
That wastes minutes per page and buries the real text under garbage. The pipeline feeds
every piece of generated text to a `RepetitionGuard`; when `feed()` returns True it stops
the generation, retries with other sampling, and if the page still loops keeps
`text[:guard.loop_start]`, the text before the loop.

Documents repeat themselves legitimately too, and a false alarm costs a page its text,
so the criterion is deliberately narrow.

The criterion
-------------
A loop is an *exact* periodic tail: the last L characters of the text have period d
(each character equals the one d places before it), so they hold k = L // d whole copies
of a unit u (the last d characters, a rotation of the repeated piece). Loops in OCR
output are exact because a stuck decoder replays the same tokens. Legitimate look-alikes
are not: a list's lines differ (`Item 1`, `Item 2`), a numeric column's rows differ in
their digits, and a table of contents interrupts its dot leaders with titles and page
numbers. So a loop needs enough copies *and* enough characters, and how many depends on
what the unit carries. Content is counted as the distinct letters and digits of the
unit, after dropping markup that carries none (HTML tags, entities such as `&nbsp;`,
LaTeX control words such as `\\hline` or `\\cdots`):

============  ====================================  ==========  =========================
class         the unit                              copies k ≥  covering L ≥ (characters)
============  ====================================  ==========  =========================
content       ≥ 3 distinct letters/digits           4           200
low-content   1-2 distinct (`| 0 `, `N/A`, `ha `)   12          400
separator     none, within a line (`.`, `|---`)     2           400
blank-rows    none, spanning lines (`| | |\\n`)     40          640
blank-lines   only whitespace, spanning lines       2           32
whitespace    only spaces, within a line            2           256
============  ====================================  ==========  =========================

Why these numbers: the content row lets a long unit (a paragraph, a table row) be
caught at its fourth copy, while a short unit (`the `, `Total `) needs 200 characters,
about 50 tokens, so `ha ha ha`, a form with three identical signature lines or four
identical 30-character rows stay legitimate. Low-content units are what a sparse table
is made of (`| 0 | 0 |`, `N/A`, `No`), so they need three times as much. Units with no
content at all are separators, and the longest legitimate separator runs are dot leaders
(under ~150 characters), table borders (`|---|---|`, a few hundred for a very wide
table), lines of underscores on forms, and empty table rows (a blank form rarely has
more than ~30 of them on a page). Wide (CJK) characters count as 3 toward the character
thresholds because each is about one token, as are ~3-4 Latin characters.

What is deliberately not caught: near-exact loops (the copies differ by a character),
counting loops (`Item 1`, `Item 2`, ... ad infinitum) and a page that truly is the same
label printed 30 times, which looks exactly like a loop and is reported as one.

Where the loop starts: `loop_start` is the end of the *first* copy (the model usually
read that copy from the page and then got stuck replaying it), moved forward to the next
line start when the unit spans lines, or word start when it has spaces, because the
periodic run often begins a few characters early, where the text before it happens to
end like the unit.

HTML answers (layout mode)
--------------------------
With --layout the model answers document-parsing HTML (`<p data-bbox="x0 y0 x1 y1">`,
tables of hundreds of `<tr><td>..</td></tr>`), and the pipeline builds the guard with
`html=True`. Counted as text, HTML both trips the criterion and slips past it: tags
inflate every unit (`<td>0</td>` is ten characters where Markdown has `| 0 `), so twelve
rows of zeros or a one-line table of empty rows look like a loop; and a looping model
moves the box on as it replays an element (`data-bbox="80 130 ..."`, `"80 152 ..."`), so
its copies are not exact and are never caught. So in HTML mode the checks look at a
*view* of the answer in which every tag is one character that stands for the tag with
its box masked (same tag and attributes, any box: same character), weighing 1 like the
Markdown syntax it replaces, and elements that are a line of the page (`p`, `li`, `tr`,
headings, `div`...) count as line breaks: their closing tag (or opening tag, for a
`</tr>` left out) makes a unit "span lines". The criterion is then the table above,
with one change (`HTML_RULES`): a content-free unit within one line needs 200
characters, not 400, because in HTML that is only ever a soup of empty cells (`<td></td>`
x 100 is already 400 tokens); dot leaders and underscores stay far below it. So a
paragraph or row replayed with creeping boxes is caught at the same copy as the same
loop in Markdown (the 4th for a paragraph, ~7 for a table row), empty fields and rows at
the 40th, empty cells at ~100 in one row; a ledger of 320 rows, a form with 25 identical
writing lines and 30 empty rows on one line, or 12 rows of zeros are not loops. The loop
start moves to an element boundary (after `</p>`, `</tr>` or before `<tr>`), and the
positions and unit reported are in the answer, never the view, so the text kept ends
with whole elements and parses into the blocks before the loop.

Cost
----
The guard checks at fixed text positions, every `check_every` (32) characters, whatever
the piece sizes, so detection does not depend on how the engine chunks its output and
`find_loop(text)` reports exactly what a guard fed `text` piece by piece reports. Each
check looks only at a bounded tail window (8192 characters). The candidate periods are
the distances to earlier occurrences of the last 8 characters (`str.rfind`, nearest
first); for each, the length of the periodic tail is measured by comparing slices
(galloping search). After a candidate's run is measured, the search skips every period
inside that run (by the Fine-Wilf theorem none can be a loop with another primitive
unit) and looks for the whole run plus the character before it, which a longer loop
must contain; in a table of contents that jumps over every dot of every earlier leader
at once. At most 64 candidates are examined per check. Feeding is O(1) per piece between
checks, and the tail buffer is trimmed, so memory for the scan stays bounded. Measured:
200,000 characters fed in 3-character pieces take 0.14-0.24 s (6,250 checks). The HTML
view is built only when a check point may have been reached (the view grows no faster
than the text), with one regular-expression pass over the new text; a `<` is held back
until the text after it shows whether it is a tag, so the view, like the checks, does not
depend on how the text is chunked. Measured (benchmarks/bench_guard_layout.py, 2 shared
cores): 0.7-1.5 us a token on layout HTML, against 0.4-0.6 us for the plain guard.
"""

from __future__ import annotations

import re
import zlib
from bisect import bisect_left
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Set

__all__ = ["LoopRules", "HTML_RULES", "Loop", "RepetitionGuard", "find_loop", "detect_loop"]

# Markup that carries no document content: HTML tags, HTML entities, LaTeX control words.
_MARKUP = re.compile(r"<[^<>\n]{1,80}>|&#?\w{1,10};|\\[A-Za-z]+")
# Each check looks for earlier occurrences of this many last characters.
_NEEDLE = 8
# Characters from the CJK radicals block upwards are "wide": about one token each.
_WIDE_FROM = 0x2E80
_WIDE_WEIGHT = 3


@dataclass(frozen=True)
class LoopRules:
    """The thresholds of the criterion in the module docstring; override any per guard."""

    min_repeats: int = 4  # content: at least this many copies...
    min_chars: int = 200  # ...covering at least this many characters
    min_distinct: int = 3  # distinct letters/digits that make a unit "content"
    low_content_repeats: int = 12
    low_content_chars: int = 400
    separator_chars: int = 400  # a content-free unit within a line
    blank_row_repeats: int = 40  # a content-free unit spanning lines (empty table rows)
    blank_row_chars: int = 640
    whitespace_chars: int = 256
    # Markdown never needs more than one blank line in a row: a run of this many
    # whitespace characters that spans lines is a model emitting newlines forever.
    blank_lines_chars: int = 32
    max_period: int = 2000  # longest unit considered (a long paragraph)
    window: int = 8192  # how far back a check looks; must hold min_repeats long units
    check_every: int = 32  # characters between checks: the detection delay
    max_candidates: int = 64  # candidate periods examined per check

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LoopRules.{name} must be a positive integer, not {value!r}")
        if self.window < 2 * self.max_period:
            raise ValueError("LoopRules.window must be at least twice max_period")


DEFAULT_RULES = LoopRules()
# Layout mode's answers (`RepetitionGuard(html=True)`): see "HTML answers" above.
HTML_RULES = LoopRules(separator_chars=200)


@dataclass(frozen=True)
class Loop:
    """A detected loop. Positions are indices into the text fed so far."""

    start: int  # keep text[:start]: everything before the second copy
    region_start: int  # where the periodic run begins (the first copy included)
    period: int  # length of the repeated unit
    repeats: int  # whole copies when detected
    unit: str  # one copy (a rotation of it: it ends where the check happened)
    kind: str  # "content", "low-content", "separator", "blank-rows", "blank-lines" or "whitespace"


class RepetitionGuard:
    """Fed the growing text piece by piece; says when it has started looping.

    `RepetitionGuard(min_repeats=5)` overrides one threshold of `LoopRules`.
    """

    def __init__(self, rules: Optional[LoopRules] = None, *, html: bool = False, **overrides: int) -> None:
        rules = rules or (HTML_RULES if html else DEFAULT_RULES)
        self.rules = replace(rules, **overrides) if overrides else rules
        self.html = html
        self.scans = 0  # checks performed: bounded by len(text) / check_every + 1
        self._pieces: list[str] = []
        self._joined: Optional[str] = ""
        # The text the checks look at: the text itself, or in HTML mode its view (_HtmlView).
        self._n = 0
        self._view = _HtmlView() if html else None
        self._raw_unviewed = 0  # HTML mode: characters fed since the view was last brought up to date
        # The tail of the (viewed) text that checks look at; _buf[0] is view[_buf_start].
        self._buf = ""
        self._buf_start = 0
        self._pending: list[str] = []
        self._next_check = self.rules.check_every
        self._checked_upto = 0
        self._loop: Optional[Loop] = None

    # -- feeding ---------------------------------------------------------------------

    def feed(self, piece: str) -> bool:
        """Add generated text; True once a loop has been detected (it stays True)."""
        if piece:
            self._pieces.append(piece)
            self._joined = None
            if self._loop is None:
                if self._view is None:
                    self._pending.append(piece)
                    self._n += len(piece)
                else:
                    self._view.push(piece)
                    self._raw_unviewed += len(piece)
                    # The view grows by at most what was fed (and held back), so it cannot
                    # have reached the next check point before this much arrived: O(1) per piece.
                    if self._raw_unviewed + self._view.held < self._next_check - self._n:
                        return False
                    self._pull_view(final=False)
                if self._n >= self._next_check:
                    self._run_checks()
        return self._loop is not None

    def finish(self) -> bool:
        """Check the very end of the text too (the stream ended between check points)."""
        if self._loop is None and self._view is not None:
            self._pull_view(final=True)
        if self._loop is None and self._n > self._checked_upto:
            self._absorb()
            self._check(self._n)
        return self._loop is not None

    def _pull_view(self, final: bool) -> None:
        assert self._view is not None
        viewed = self._view.pull(final)
        self._raw_unviewed = 0
        if viewed:
            self._pending.append(viewed)
            self._n += len(viewed)

    # -- results ---------------------------------------------------------------------

    @property
    def text(self) -> str:
        """All the text fed so far."""
        if self._joined is None:
            self._joined = "".join(self._pieces)
            self._pieces = [self._joined]
        return self._joined

    @property
    def loop(self) -> Optional[Loop]:
        return self._loop

    @property
    def looping(self) -> bool:
        return self._loop is not None

    @property
    def loop_start(self) -> Optional[int]:
        """Index in `text` where the loop begins, or None while there is none."""
        return self._loop.start if self._loop else None

    @property
    def text_before_loop(self) -> str:
        """The text to keep: everything before the loop (all of it if none)."""
        text = self.text
        return text[: self._loop.start] if self._loop else text

    # -- internals -------------------------------------------------------------------

    def _absorb(self) -> None:
        if self._pending:
            self._buf += "".join(self._pending)
            self._pending = []

    def _run_checks(self) -> None:
        self._absorb()
        every = self.rules.check_every
        while self._next_check <= self._n:
            if self._check(self._next_check):
                return
            self._next_check += every
        # Keep enough tail for the next check point (which lies beyond _n).
        window = self.rules.window
        if len(self._buf) > 2 * window:
            cut = len(self._buf) - window
            self._buf = self._buf[cut:]
            self._buf_start += cut
            if self._view is not None:
                self._view.forget_before(self._buf_start)

    def _check(self, end_abs: int) -> bool:
        self.scans += 1
        self._checked_upto = end_abs
        end = end_abs - self._buf_start
        lo = max(0, end - self.rules.window)
        found = _scan(self._buf, lo, end, self.rules, self._view.marks if self._view else None)
        if found is None:
            return False
        offset = self._buf_start
        start, region_start = found.start + offset, found.region_start + offset
        if self._view is not None:
            # Positions in the view -> positions in the text; the unit is reported as text.
            unit_end = self._view.raw_at(end_abs)
            unit_start = self._view.raw_at(end_abs - found.period)
            start, region_start = self._view.raw_at(start), self._view.raw_at(region_start)
            text = self.text
            found = replace(found, unit=text[unit_start:unit_end], period=unit_end - unit_start)
        self._loop = replace(found, start=start, region_start=region_start)
        return True


def detect_loop(
    text: str, rules: Optional[LoopRules] = None, *, html: bool = False, **overrides: int
) -> Optional[Loop]:
    """The loop a `RepetitionGuard` fed `text` would report (at its end included)."""
    guard = RepetitionGuard(rules, html=html, **overrides)
    guard.feed(text)
    guard.finish()
    return guard.loop


def find_loop(text: str, rules: Optional[LoopRules] = None, *, html: bool = False, **overrides: int) -> Optional[int]:
    """Where the first loop in `text` begins (keep `text[:index]`), or None."""
    loop = detect_loop(text, rules, html=html, **overrides)
    return loop.start if loop else None


# -- HTML answers: the view the checks look at --------------------------------------

# A whole tag on one line: the name, then attributes (the box among them).
_TAG_AT = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]{0,30})(?=[\s/>])([^<>\n]{0,300})>")
# What a tag not yet finished may look like: hold it back until it is (or cannot be).
_TAG_START = re.compile(r"<(?:/?(?:[A-Za-z][A-Za-z0-9:-]{0,30}(?:[\s/][^<>\n]{0,300})?)?)?\Z")
_BOX_ATTR = re.compile(r"""\s*\b(?:data-)?bbox\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]*)""", re.IGNORECASE)
# Elements that are a line of the page: their end (and a line break) ends a "line" of the
# view, their start begins one (a row whose </tr> the model left out still ends the last).
_LINE_ELEMENTS = frozenset(
    {"p", "div", "li", "ul", "ol", "tr", "table", "thead", "tbody", "tfoot", "caption", "header", "footer"}
    | {"section", "article", "figure", "figcaption", "blockquote", "pre", "body", "html", "dl", "dt", "dd"}
    | {f"h{n}" for n in range(1, 7)}
)
_LINE_BREAKS = frozenset({"br", "hr"})
# One private-use character per distinct tag: neither a letter nor a digit, so a tag is
# markup without content, as in _MARKUP; `_weight` counts it as one character.
_CODE_FROM = 0xE000
_CODES = 0xF8FF - 0xE000


class _Marks:
    """Which view characters stand for tags that end or begin a line of the page."""

    def __init__(self) -> None:
        self.ends: Set[str] = set()
        self.opens: Set[str] = set()
        self.breaks: Set[str] = set()  # <br>, <hr>: a run of them is a run of blank lines

    def spans_lines(self, unit: str) -> bool:
        return "\n" in unit or not self.ends.isdisjoint(unit) or not self.opens.isdisjoint(unit)


class _HtmlView:
    """The text with every tag replaced by one character that stands for the tag with
    its box masked, built piece by piece; maps view positions back to text positions.

    A `<` is decided as soon as the text after it shows whether it starts a tag (a whole
    tag on one line, at most ~330 characters) or not; until then it is held back, so
    the view does not depend on how the text arrives in pieces.
    """

    def __init__(self) -> None:
        self.marks = _Marks()
        self._codes: Dict[str, str] = {}
        self._parts: List[str] = []
        self._held = ""
        self._n = 0  # view characters so far
        # Tags in the view since the last trim: their view positions, and for each the
        # text characters minus view characters up to and including it.
        self._tag_at: List[int] = []
        self._extra: List[int] = []
        self._extra_base = 0  # the same, for the tags trimmed away

    def push(self, piece: str) -> None:
        self._parts.append(piece)

    @property
    def held(self) -> int:
        """Characters pulled but held back (an unfinished tag)."""
        return len(self._held)

    def pull(self, final: bool) -> str:
        """The view of the text pushed since the last pull (all of it when `final`)."""
        raw = self._held + "".join(self._parts)
        self._parts = []
        self._held = ""
        out: List[str] = []
        v = self._n
        extra = self._extra[-1] if self._extra else self._extra_base
        i, n = 0, len(raw)
        while i < n:
            j = raw.find("<", i)
            if j < 0:
                j = n
            if j > i:
                out.append(raw[i:j])
                v += j - i
            if j == n:
                break
            tag = _TAG_AT.match(raw, j)
            if tag is not None:
                out.append(self._code(tag.group(1) == "/", tag.group(2).lower(), tag.group(3)))
                extra += tag.end() - j - 1
                self._tag_at.append(v)
                self._extra.append(extra)
                v += 1
                i = tag.end()
            elif not final and _TAG_START.match(raw, j):
                self._held = raw[j:]
                break
            else:
                out.append("<")
                v += 1
                i = j + 1
        self._n = v
        return "".join(out)

    def raw_at(self, view_pos: int) -> int:
        """The position in the text of the view's position `view_pos`."""
        k = bisect_left(self._tag_at, view_pos)
        return view_pos + (self._extra[k - 1] if k else self._extra_base)

    def forget_before(self, view_pos: int) -> None:
        k = bisect_left(self._tag_at, view_pos)
        if k:
            self._extra_base = self._extra[k - 1]
            del self._tag_at[:k], self._extra[:k]

    def _code(self, closing: bool, name: str, attrs: str) -> str:
        attrs = _BOX_ATTR.sub("", attrs).strip().rstrip("/").strip()
        key = ("/" if closing else "") + name + (" " + attrs if attrs else "")
        code = self._codes.get(key)
        if code is not None:
            return code
        if len(self._codes) < _CODES:
            code = chr(_CODE_FROM + len(self._codes))
            self._codes[key] = code
        else:  # a pathological answer: thousands of distinct tags share codes
            code = chr(_CODE_FROM + zlib.crc32(key.encode()) % _CODES)
        if name in _LINE_BREAKS:
            self.marks.ends.add(code)
            self.marks.breaks.add(code)
        elif closing and name in _LINE_ELEMENTS:
            self.marks.ends.add(code)
        elif name in _LINE_ELEMENTS:
            self.marks.opens.add(code)
        return code


# -- the scan ------------------------------------------------------------------------


def _scan(s: str, lo: int, end: int, rules: LoopRules, marks: Optional["_Marks"] = None) -> Optional[Loop]:
    """Look for a loop ending at s[end], using only s[lo:end]. Positions relative to s."""
    q = min(_NEEDLE, end - lo - 1)
    if q < 1:
        return None
    needle = s[end - q : end]
    bound = end - 1  # occurrences must end before this: period >= 1
    for _ in range(rules.max_candidates):
        j = s.rfind(needle, lo, bound)
        if j < 0:
            return None
        period = end - len(needle) - j
        if period > rules.max_period:
            return None
        run = period + _common_suffix(s, end, end - period, end - period - lo)
        loop = _judge(s, end, period, run, rules, marks)
        if loop is not None:
            return loop
        # Inside a run of period d, no other period d' <= run - d can be a loop (Fine-Wilf):
        # jump past them all.
        bound = end - max(period, run - period) - 1
        if run >= len(needle):
            # A loop with a longer primitive unit holds this whole run plus the character
            # before it at its own distance, so search for that: in a table of contents
            # this skips every dot of every earlier leader in one `rfind`.
            if end - run - 1 < lo:
                return None
            needle = s[end - run - 1 : end]
        if bound - lo < len(needle):
            return None
    return None


def _common_suffix(s: str, a: int, b: int, limit: int) -> int:
    """Length of the longest common suffix of s[:a] and s[:b], at most `limit`."""
    matched = 0
    step = 16
    while True:
        n = min(step, limit - matched)
        if n <= 0:
            return matched
        if s[a - matched - n : a - matched] == s[b - matched - n : b - matched]:
            matched += n
            step *= 2
            continue
        good, bad = 0, n  # a block of `good` matches, one of `bad` does not
        while bad - good > 1:
            mid = (good + bad) // 2
            if s[a - matched - mid : a - matched] == s[b - matched - mid : b - matched]:
                good = mid
            else:
                bad = mid
        return matched + good


def _judge(s: str, end: int, period: int, run: int, rules: LoopRules, marks: Optional["_Marks"]) -> Optional[Loop]:
    """Is a tail of `run` characters with period `period` a loop? Cheap tests first."""
    repeats = run // period
    if repeats < 2 or run * _WIDE_WEIGHT < min(rules.min_chars, rules.whitespace_chars, rules.blank_lines_chars):
        return None
    unit = s[end - period : end]
    kind = _classify(unit, rules.min_distinct, marks)
    need_repeats, need_chars = _thresholds(kind, rules)
    if repeats < need_repeats:
        return None
    tags = marks is not None
    if repeats * _weight(unit, tags) + _weight(s[end - run : end - repeats * period], tags) < need_chars:
        return None
    if (unit + unit).find(unit, 1) < period:
        return None  # not a primitive unit; its own period is the loop to report
    region_start = end - run
    start = _snap(s, region_start + period, min(region_start + 2 * period, end), unit, marks)
    return Loop(start, region_start, period, repeats, unit, kind)


def _snap(s: str, start: int, limit: int, unit: str, marks: Optional["_Marks"] = None) -> int:
    """Move the loop start forward to a natural boundary, within one copy.

    The periodic run often begins a few characters before the first copy, where the
    text before it happens to end like the unit (`points. ` before `...months. `), so
    region start + period cuts the first copy short. Moving to the next line start (for
    units spanning lines) or word start (for units with spaces) keeps it whole. In HTML
    mode an element boundary counts as a line start: after a closing block tag (`</tr>`,
    `</p>`) or a line break, or before an opening block tag, so the text kept is whole
    elements.
    """
    if marks is not None and marks.spans_lines(unit):
        for p in range(start, limit):
            before, here = s[p - 1], s[p]
            if (before == "\n" or before in marks.ends) and here != "\n" or here in marks.opens:
                return p
        return start
    if "\n" in unit:
        boundary = "\n"
    elif any(c.isspace() for c in unit):
        boundary = ""
    else:
        return start
    for p in range(start, limit):
        before, here = s[p - 1], s[p]
        if boundary:
            if before == "\n" and here != "\n":
                return p
        elif before.isspace() and not here.isspace():
            return p
    return start


def _thresholds(kind: str, rules: LoopRules) -> tuple[int, int]:
    if kind == "content":
        return rules.min_repeats, rules.min_chars
    if kind == "low-content":
        return rules.low_content_repeats, rules.low_content_chars
    if kind == "separator":
        return 2, rules.separator_chars
    if kind == "blank-rows":
        return rules.blank_row_repeats, rules.blank_row_chars
    if kind == "blank-lines":
        return 2, rules.blank_lines_chars
    return 2, rules.whitespace_chars


def _classify(unit: str, min_distinct: int, marks: Optional["_Marks"] = None) -> str:
    if not unit.strip():
        return "blank-lines" if "\n" in unit else "whitespace"
    if marks is not None and all(c.isspace() or c in marks.breaks for c in unit):
        return "blank-lines"  # <br> after <br>: HTML's blank lines
    distinct = len(set(_content_chars(unit)))
    if distinct == 0:
        spans = marks.spans_lines(unit) if marks is not None else "\n" in unit
        return "blank-rows" if spans else "separator"
    return "content" if distinct >= min_distinct else "low-content"


def _content_chars(unit: str) -> list[str]:
    """The letters and digits of one copy of a periodic unit, markup excluded.

    The unit is a rotation that may cut a tag or command in two, so markup is found in
    three copies and only the middle copy is counted.
    """
    d = len(unit)
    tripled = unit * 3
    covered = bytearray(3 * d)
    for m in _MARKUP.finditer(tripled):
        if m.end() > d and m.start() < 2 * d:
            covered[m.start() : m.end()] = b"\x01" * (m.end() - m.start())
    return [c for i, c in enumerate(tripled[d : 2 * d], d) if not covered[i] and c.isalnum()]


def _weight(text: str, tags: bool = False) -> int:
    """Length in Latin-equivalent characters: a wide (CJK) character counts as 3; in an
    HTML view (`tags`) a tag's character counts as 1, like the Markdown it stands for."""
    wide = sum(1 for c in text if ord(c) >= _WIDE_FROM)
    if tags:
        wide -= sum(1 for c in text if _CODE_FROM <= ord(c) < _CODE_FROM + _CODES)
    return len(text) + (_WIDE_WEIGHT - 1) * wide
