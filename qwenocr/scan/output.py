"""Markdown, JSON, JSONL and searchable-PDF writers (the shapes are documented in
docs/output-formats.md and docs/searchable-pdf.md).

Writers receive pages in page order as they finish. Markdown and JSONL are written
page by page (so a pipeline downstream sees each page at once); JSON is one object per
document, written when the document ends, and so is a PDF (it is the input's own file
with the text added). Writers never decide where bytes go: the caller hands them a
stream (stdout, or an atomically replaced file); a binary one for PDF (`is_binary`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Dict, List, Optional, Tuple, Type, Union, cast

from qwenocr import __version__
from qwenocr.pages.base import display_name
from qwenocr.scan.results import OK, REPETITION, TIMEOUT, TRUNCATED, PageResult, status_counts

log = logging.getLogger(__name__)

# Visible notes for pages whose text is not the whole page (Markdown has no status field).
_MARKDOWN_NOTES = {
    REPETITION: "the model repeated itself; the text after the loop was dropped",
    TRUNCATED: "the page hit --max-tokens; the text may be incomplete",
    TIMEOUT: "the page hit --page-timeout; the text may be incomplete",
}


@dataclass
class DocumentInfo:
    source: str  # the input's name as given ("-" for stdin)
    sha256: str
    page_count: int  # pages in the input
    pages_selected: List[int]
    model: dict = field(default_factory=dict)  # backend, model id/path, quant
    plan: Optional[dict] = None  # the hardware plan, when one was made
    settings: dict = field(default_factory=dict)
    # What the PDF writer builds on: the input's kind ("pdf" or "image"), its file (or
    # stdin's bytes) and password. Never written out.
    kind: str = ""
    origin: Union[Path, bytes, None] = field(default=None, repr=False)
    password: Optional[str] = field(default=None, repr=False)


def page_marker(number: int, status: str = OK) -> str:
    suffix = "" if status == OK else f" ({status})"
    return f"<!-- page {number}{suffix} -->"


# Lines of page text that a reader of our Markdown (`qwenocr eval`, a script splitting
# on markers) would take for our own structure: a `<!-- page N -->` or
# `<!-- document: ... -->` comment opening a line, or a `> **qwenocr:**` note.
_MARKER_LIKE = re.compile(r"^([ \t]*<!--)(?=\s*(?:page|document)\b)", re.I | re.M)
_NOTE_LIKE = re.compile(r"^([ \t]*>)(?=[ \t]*\*\*qwenocr:\*\*)", re.I | re.M)
ZERO_WIDTH_SPACE = "\u200b"


def escape_markers(text: str) -> str:
    """`text` with a zero-width space after the `<!--` (or `>`) of each line that looks
    like qwenocr's own page marker, document marker or note.

    Why this escape: the comment stays a comment (rendered Markdown looks the same, and
    `eval`'s normaliser drops it as it drops the original), the note stays a quote, and
    the normaliser removes zero-width spaces, so text scores exactly as before; but no
    longer matches a marker. An entity escape (`&lt;!--`) would show the comment as text.
    """
    text = _MARKER_LIKE.sub(lambda m: m.group(1) + ZERO_WIDTH_SPACE, text)
    return _NOTE_LIKE.sub(lambda m: m.group(1) + ZERO_WIDTH_SPACE, text)


def finite(value: Any) -> Any:
    """`value` with NaN and infinities (in nested dicts and lists too) turned into None.

    JSON has no such numbers: `json.dumps` writes them as bare `NaN`, which strict
    readers (jq, JavaScript, most languages) refuse. They reach us from servers' usage
    fields or sums of them; null says "unknown", which is what they mean.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(value: Any, indent: Optional[int] = None) -> str:
    """Strict JSON: non-finite numbers become null, never `NaN`."""
    return json.dumps(finite(value), ensure_ascii=False, indent=indent, allow_nan=False)


class Writer:
    """One output format on one stream: `begin`, `page` for each page in order, `end`
    for each document, then `close`. What a format has no use for does nothing."""

    def __init__(self, stream: IO[str], several_documents: bool = False):
        self.stream = stream
        self.several = several_documents

    def begin(self, info: DocumentInfo) -> None:
        pass

    def page(self, result: PageResult) -> None:
        pass

    def end(self, info: DocumentInfo, results: List[PageResult]) -> None:
        pass

    def close(self) -> None:
        self.stream.flush()


class MarkdownWriter(Writer):
    """Pages separated by `<!-- page N -->` lines; a `<!-- document: NAME -->` line
    starts each document when several share one stream."""

    def __init__(self, stream: IO[str], several_documents: bool = False):
        super().__init__(stream, several_documents)
        self._pages_written = 0

    def begin(self, info: DocumentInfo) -> None:
        if self.several:
            if self._pages_written:
                self.stream.write("\n")
            self.stream.write(f"<!-- document: {escape_markers(display_name(info.source))} -->\n\n")

    def page(self, result: PageResult) -> None:
        parts = [page_marker(result.number, result.status)]
        if result.failed:
            parts.append(f"> **qwenocr:** page {result.number} failed: {escape_markers(str(result.error))}")
        elif result.text.strip():
            parts.append(escape_markers(result.text.strip()))
        note = _MARKDOWN_NOTES.get(result.status)
        if note:
            parts.append(f"> **qwenocr:** page {result.number}: {note}.")
        self.stream.write("\n\n".join(parts) + "\n\n")
        self.stream.flush()
        self._pages_written += 1


class JsonlWriter(Writer):
    """One JSON object per page and line, flushed as soon as the page is done."""

    def __init__(self, stream: IO[str], several_documents: bool = False):
        super().__init__(stream, several_documents)
        self._source = ""

    def begin(self, info: DocumentInfo) -> None:
        self._source = display_name(info.source)  # a file name's bytes may not be UTF-8

    def page(self, result: PageResult) -> None:
        # "file" names the input; the page's own "source" says which path made the text.
        record = {"file": self._source, **result.to_record()}
        self.stream.write(dumps(record) + "\n")
        self.stream.flush()


class JsonWriter(Writer):
    """One document object per input; an array of them when several share a stream.
    Pages are not written one by one: the whole document is written at its end."""

    def __init__(self, stream: IO[str], several_documents: bool = False):
        super().__init__(stream, several_documents)
        self._documents: List[dict] = []

    def end(self, info: DocumentInfo, results: List[PageResult]) -> None:
        document = document_object(info, results)
        if self.several:
            self._documents.append(document)
        else:
            self.stream.write(dumps(document, indent=2) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.several:
            self.stream.write(dumps(self._documents, indent=2) + "\n")
        self.stream.flush()


class PdfWriter(Writer):
    """The input again as a searchable PDF (qwenocr/searchable), written when the document
    ends: one per stream, on a binary stream."""

    def __init__(self, stream: IO[Any], several_documents: bool = False):
        assert not several_documents, "one PDF per stream: the caller asks for -o DIR"
        super().__init__(stream, several_documents)

    def end(self, info: DocumentInfo, results: List[PageResult]) -> None:
        from qwenocr.searchable.document import images_with_text, pdf_with_text

        assert info.origin is not None, "the PDF writer needs the input itself"
        records = [result.to_record() for result in results]
        out = cast(BinaryIO, self.stream)  # run.py hands this writer a binary stream (is_binary)
        if info.kind == "pdf":
            written = pdf_with_text(info.origin, info.password, records, out)
        else:
            written = images_with_text(info.origin, records, out)
        self.stream.flush()
        log.info(
            f"{display_name(info.source)}: searchable PDF of {written.pages} page(s), "
            f"{written.layered} with a text layer ({written.lines} lines)"
        )


def document_object(info: DocumentInfo, results: List[PageResult]) -> dict:
    return {
        "source": display_name(info.source),
        "sha256": info.sha256,
        "page_count": info.page_count,
        "pages": [result.to_record() for result in results],
        "model": info.model,
        "plan": info.plan,
        "settings": info.settings,
        "totals": {
            "pages": len(results),
            "statuses": status_counts(results),
            "output_tokens": sum(r.output_tokens for r in results),
            "seconds": round(sum(r.seconds for r in results), 3),
        },
        "qwenocr_version": __version__,
    }


# Each format's writer, and the extension of its files under -o DIR.
_FORMATS: Dict[str, Tuple[Type[Writer], str]] = {
    "markdown": (MarkdownWriter, ".md"),
    "json": (JsonWriter, ".json"),
    "jsonl": (JsonlWriter, ".jsonl"),
    "pdf": (PdfWriter, ".pdf"),
}
FORMATS = tuple(_FORMATS)
BINARY_FORMATS = ("pdf",)


def is_binary(fmt: str) -> bool:
    """Whether the format's writer takes a binary stream."""
    return fmt in BINARY_FORMATS


def make_writer(fmt: str, stream: IO[Any], several_documents: bool = False) -> Writer:
    writer_class, _ = _FORMATS[fmt]
    return writer_class(stream, several_documents)


def extension(fmt: str) -> str:
    _, suffix = _FORMATS[fmt]
    return suffix
