"""What one page produced: the record shared by the pipeline, the checkpoint and the writers.

Statuses (documented in docs/output-formats.md), each spelled here only:
- "ok": the model read the page and stopped by itself (or the PDF's text layer was used).
- "blank": the page was blank from the pixels; the model was not called.
- "repetition": the model looped even after a retry; `text` keeps what came before the loop.
- "truncated": the page hit --max-tokens; `text` is what was produced up to there.
- "timeout": --page-timeout passed; `text` is what was produced up to there.
- "error": the page could not be rendered or the engine failed; see `error`.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from qwenocr.layout.blocks import check_blocks

OK = "ok"
BLANK = "blank"
REPETITION = "repetition"
TRUNCATED = "truncated"
TIMEOUT = "timeout"
ERROR = "error"

# The page's text is complete and trustworthy as far as qwenocr can tell.
GOOD_STATUSES = (OK, BLANK)
# The model was stopped: `text` is what it wrote up to there, and may be incomplete.
INCOMPLETE_STATUSES = (REPETITION, TRUNCATED, TIMEOUT)
STATUSES = GOOD_STATUSES + INCOMPLETE_STATUSES + (ERROR,)
SOURCES = ("model", "text-layer", "none")

# A str can hold a UTF-16 surrogate on its own (a server's JSON may send "\\ud800"); such
# a str can't be encoded as UTF-8, so every writer (and the checkpoint) would fail on it.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class PageResult:
    number: int  # 1-based, as a PDF viewer counts
    text: str
    status: str  # one of STATUSES
    source: str = "model"  # "model", "text-layer", or "none" (blank/error)
    output_tokens: int = 0
    prompt_tokens: Optional[int] = None
    seconds: float = 0.0
    attempts: int = 0
    image_width: Optional[int] = None
    image_height: Optional[int] = None
    image_tokens: Optional[int] = None
    error: Optional[str] = None
    resumed: bool = False  # taken from the checkpoint of an earlier, interrupted run
    # Layout mode: the page's blocks (qwenocr/layout/blocks.py), in reading order; None
    # (and no "blocks" key in the record) without it.
    blocks: Optional[List[dict]] = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Here rather than in each writer: whatever made the page, its text can be written.
        if isinstance(self.text, str):
            self.text = clean_text(self.text)
        if isinstance(self.error, str):
            self.error = clean_text(self.error)

    @property
    def failed(self) -> bool:
        """No text at all: never checkpointed (a rerun tries the page again), and the run is PARTIAL."""
        return self.status == ERROR

    def to_record(self) -> dict:
        """The JSON shape of a page (also what the checkpoint stores)."""
        record = asdict(self)
        record.pop("extra")
        if record["blocks"] is None:  # without layout mode the shape is what it always was
            record.pop("blocks")
        record.update(self.extra)
        return record

    @classmethod
    def from_record(cls, record: dict) -> "PageResult":
        known = {name for name in cls.__dataclass_fields__ if name != "extra"}
        return cls(
            **{key: value for key, value in record.items() if key in known},
            extra={key: value for key, value in record.items() if key not in known},
        )


def clean_text(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD, so that it encodes as UTF-8."""
    return _LONE_SURROGATE.sub("\ufffd", text)


class InvalidRecord(ValueError):
    """A saved page record that is not what `PageResult.to_record` writes."""


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _optional_count(value: Any) -> bool:
    return value is None or _count(value)


def _seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _optional_str(value: Any) -> bool:
    return value is None or isinstance(value, str)


# The fields of a record besides number, text and status: (is it valid, what it is).
# Missing ones take PageResult's defaults; `resumed` is set by the reader, never trusted.
_OPTIONAL_FIELDS: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "source": (lambda v: v in SOURCES, "one of " + ", ".join(SOURCES)),
    "output_tokens": (_count, "a count"),
    "prompt_tokens": (_optional_count, "a count or null"),
    "seconds": (_seconds, "a duration"),
    "attempts": (_count, "a count"),
    "image_width": (_optional_count, "a count or null"),
    "image_height": (_optional_count, "a count or null"),
    "image_tokens": (_optional_count, "a count or null"),
    "error": (_optional_str, "a string or null"),
    "resumed": (lambda v: isinstance(v, bool), "true or false"),
    "blocks": (lambda v: check_blocks(v) is None, "a list of blocks (type, bbox, text or html)"),
}
# The extra keys qwenocr itself writes (pipeline.py), with their own fields.
_TEXT_LAYER_FIELDS: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "usable": (lambda v: isinstance(v, bool), "true or false"),
    "reason": (lambda v: isinstance(v, str), "a string"),
    "chars": (_count, "a count"),
}
# Degrees clockwise a page was turned before the model read it (auto-rotate, pipeline.py);
# the key is absent when it was not turned.
ROTATION_FIXES = (90, 180, 270)
# Layout mode's page geometry (pipeline.py): the unit and convention of the blocks' boxes.
_LAYOUT_FIELDS: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "width": (_seconds, "a size"),
    "height": (_seconds, "a size"),
    "unit": (lambda v: v in ("pt", "px"), "pt or px"),
    "rotation": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), "degrees or null"),
    "coords": (lambda v: v in ("relative", "absolute", "text-layer"), "relative, absolute or text-layer"),
}


def checked_record(page: int, record: Any) -> dict:
    """The record of page `page` read back from a checkpoint, checked field by field.

    A checkpoint is a file on disk: anything may have changed it. A record is trusted
    into the output only if it is what `to_record` writes for that very page: `number`
    equal to `page`, a known status other than "error" (failed pages are never saved),
    `text` a string, every other field of its type. Unknown keys are dropped, so nothing
    foreign reaches the output. Raises InvalidRecord saying what is wrong.
    """
    if not isinstance(record, Mapping):
        raise InvalidRecord("not a JSON object")
    number = record.get("number")
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise InvalidRecord("no page number" if "number" not in record else "its number is not a page number")
    if number != page:
        raise InvalidRecord(f"it holds page {number}")
    status = record.get("status")
    if status not in STATUSES or status == ERROR:
        raise InvalidRecord("no status" if "status" not in record else "not a status a finished page has")
    text = record.get("text")
    if not isinstance(text, str):
        raise InvalidRecord("no text" if "text" not in record else "its text is not a string")
    clean: Dict[str, Any] = {"number": number, "text": clean_text(text), "status": status}
    for name, (valid, what) in _OPTIONAL_FIELDS.items():
        if name in record:
            if not valid(record[name]):
                raise InvalidRecord(f"{name} is not {what}")
            clean[name] = record[name]
    if isinstance(clean.get("error"), str):
        clean["error"] = clean_text(clean["error"])
    if "text_layer" in record:
        layer = record["text_layer"]
        if not isinstance(layer, Mapping):
            raise InvalidRecord("text_layer is not an object")
        checked = {}
        for name, (valid, what) in _TEXT_LAYER_FIELDS.items():
            if name not in layer or not valid(layer[name]):
                raise InvalidRecord(f"text_layer.{name} is not {what}")
            checked[name] = clean_text(layer[name]) if isinstance(layer[name], str) else layer[name]
        clean["text_layer"] = checked
    if "rotation_fix" in record:
        fix = record["rotation_fix"]
        if isinstance(fix, bool) or fix not in ROTATION_FIXES:
            raise InvalidRecord("rotation_fix is not 90, 180 or 270")
        clean["rotation_fix"] = fix
    if "layout" in record:
        layout = record["layout"]
        if not isinstance(layout, Mapping):
            raise InvalidRecord("layout is not an object")
        for name, (valid, what) in _LAYOUT_FIELDS.items():
            if name not in layout or not valid(layout[name]):
                raise InvalidRecord(f"layout.{name} is not {what}")
        clean["layout"] = {name: layout[name] for name in _LAYOUT_FIELDS}
    if isinstance(clean.get("blocks"), list):  # text that any writer can encode, as for `text`
        clean["blocks"] = [
            {key: clean_text(value) if isinstance(value, str) else value for key, value in block.items()}
            for block in clean["blocks"]
        ]
    return clean


def status_counts(results: Iterable[PageResult]) -> Dict[str, int]:
    """How many pages ended with each status, in order of first appearance."""
    counts: Dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    return counts
