"""What one page produced: the record shared by the pipeline, the checkpoint and the writers.

Statuses (documented in docs/output-formats.md):
- "ok": the model read the page and stopped by itself.
- "blank": the page was blank from the pixels; the model was not called.
- "repetition": the model looped even after a retry; `text` keeps what came before the loop.
- "truncated": the page hit --max-tokens; `text` is what was produced up to there.
- "timeout": --page-timeout passed; `text` is what was produced up to there.
- "error": the page could not be rendered or the engine failed; see `error`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

STATUSES = ("ok", "blank", "repetition", "truncated", "timeout", "error")
# Statuses where the page's text is complete and trustworthy as far as qwenocr can tell.
GOOD_STATUSES = ("ok", "blank")


@dataclass
class PageResult:
    number: int  # 1-based, as a PDF viewer counts
    text: str
    status: str
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
    extra: dict = field(default_factory=dict)

    def to_record(self) -> dict:
        """The JSON shape of a page (also what the checkpoint stores)."""
        record = asdict(self)
        record.pop("extra")
        record.update(self.extra)
        return record

    @classmethod
    def from_record(cls, record: dict) -> "PageResult":
        known = {name for name in cls.__dataclass_fields__ if name != "extra"}
        return cls(
            **{key: value for key, value in record.items() if key in known},
            extra={key: value for key, value in record.items() if key not in known},
        )
