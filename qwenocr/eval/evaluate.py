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

This module is what the CLI calls; the parts live beside it: documents (reading),
normalize, distance, scores and checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from qwenocr.eval.checks import Check, CheckResult, read_checks, run_checks
from qwenocr.eval.documents import Document, read_document
from qwenocr.eval.scores import Scores, score

# What `qwenocr eval` calls: read both sides (and the checks), evaluate, render.
__all__ = ["Evaluation", "evaluate", "read_checks", "read_document", "render"]


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
            if not self.scores.exact:
                inexact = tuple(p.number for p in self.scores.pages if not p.exact)
                where = "the texts" if self.scores.alignment == "document" else f"page {_numbers(inexact)}"
                notes.append(
                    f"{where}: too large and too different for an exact edit distance; "
                    "the edits shown are an upper bound"
                )
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
                exact=s.exact,
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

    style: Dict[str, Any] = dict(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
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
