"""olmOCR-Bench-style text checks: a snippet is present, a snippet is absent, one snippet
comes before another; each optionally fuzzy (`max_diffs`).
"""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional

from qwenocr.errors import InputError
from qwenocr.eval.distance import find_starts
from qwenocr.eval.documents import Document
from qwenocr.eval.normalize import normalize

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
