"""Character and word error rates per page and overall.

CER/WER: the Levenshtein distance from the reference to the output divided by the
reference's length; overall is the total edits over the total reference length, so long
pages weigh more than short ones (the usual corpus-level definition).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from qwenocr.eval.distance import edit_distance
from qwenocr.eval.documents import Document
from qwenocr.eval.normalize import normalize


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
    # False when an edit count is an upper bound, not exact (huge, very different texts:
    # distance.edit_distance says when)
    exact: bool = True

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
    def exact(self) -> bool:
        return all(p.exact for p in self.pages)

    @property
    def missing_pages(self) -> Tuple[int, ...]:
        return tuple(p.number for p in self.pages if p.missing)


def score_page(number: int, output: str, reference: str, normalized: bool = True, missing: bool = False) -> PageScore:
    """CER and WER of one page. With `normalized`, both texts go through `normalize` first."""
    if normalized:
        output, reference = normalize(output), normalize(reference)
    out_words, ref_words = output.split(), reference.split()
    chars, words = edit_distance(output, reference), edit_distance(out_words, ref_words)
    return PageScore(
        number=number,
        ref_chars=len(reference),
        ref_words=len(ref_words),
        char_edits=chars.edits,
        word_edits=words.edits,
        out_chars=len(output),
        out_words=len(out_words),
        missing=missing,
        exact=chars.exact and words.exact,
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
