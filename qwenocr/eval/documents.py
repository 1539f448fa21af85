"""The two sides of `qwenocr eval` read into pages: Markdown/text with page markers or
form feeds, qwenocr JSON, or JSONL. Errors in the inputs raise `InputError` (exit 3).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

from qwenocr.errors import InputError


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
    records: List[Any] = []
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
