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

from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, Optional

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
    extra: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """No text at all: never checkpointed (a rerun tries the page again), and the run is PARTIAL."""
        return self.status == ERROR

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


def status_counts(results: Iterable[PageResult]) -> Dict[str, int]:
    """How many pages ended with each status, in order of first appearance."""
    counts: Dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    return counts
