"""Edit distance and fuzzy search for `qwenocr eval`.

The distance comes from rapidfuzz. Its full algorithm costs len(a) * len(b) / 64 steps
whatever the answer, which for a 1 MB unpaged document against a 1 MB reference is
about half a minute of a 2-core VM (the cause of the slow `eval` on whole documents);
a band around the diagonal that grows until it holds the answer costs
max(len) * distance / 64 instead, exact, and milliseconds for similar texts.
Only where even the band would pass a work budget (large texts that differ a lot) is
the distance an estimate: see `edit_distance`. The fuzzy search of the checks (where a snippet occurs
with at most k edits, Sellers' problem) has no counterpart there: it is Hyyrö's
bit-parallel form of Myers' algorithm, with Python's unbounded integers as the bit
vectors, so a step over the text is a dozen big-integer operations done in C.
"""

from __future__ import annotations

import math
from typing import Dict, Hashable, List, NamedTuple, Sequence, Tuple

# Cells of the dynamic-programming matrix one distance may cost (a cell is 1/64 of a
# bit-parallel step): about a second on a 2-core VM. Below it every distance is exact.
WORK_BUDGET = 3 * 10**10


class Distance(NamedTuple):
    edits: int
    exact: bool  # False: an upper bound (pieces of the texts paired in order), see edit_distance


def levenshtein(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """The exact Levenshtein distance between two sequences (strings, or lists of words).

    Insertions, deletions and substitutions each cost 1. rapidfuzz computes it (in C++,
    bit-parallel): about ten times faster than the same algorithm in pure Python. The
    hint makes it start with a narrow band and widen it (doubling) only as needed, so
    the cost follows the distance rather than the product of the lengths.
    """
    from rapidfuzz.distance import Levenshtein

    return int(Levenshtein.distance(a, b, score_hint=max(64, abs(len(a) - len(b)))))


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable], budget: int = WORK_BUDGET) -> Distance:
    """The Levenshtein distance, exact unless that would cost more than `budget` cells.

    Exact whenever len(a) * len(b) fits the budget, or the distance is at most
    budget / max(len(a), len(b)) (a band that wide fits it): every normal page, and any
    large pair of similar texts. Otherwise both sides are cut into the same number of
    pieces, at the same fractions of their lengths, and the pieces' distances are summed:
    an upper bound (pairing the pieces in order is one way to edit a into b), close to
    the truth when the texts run in step.
    """
    from rapidfuzz.distance import Levenshtein

    longer = max(len(a), len(b))
    if len(a) * len(b) <= budget:
        return Distance(levenshtein(a, b), True)
    band = budget // longer
    if abs(len(a) - len(b)) <= band:  # else the distance is beyond the band anyway
        edits = int(Levenshtein.distance(a, b, score_cutoff=band, score_hint=max(64, abs(len(a) - len(b)))))
        if edits <= band:
            return Distance(edits, True)
    pieces = math.ceil(len(a) * len(b) / budget)
    total = 0
    for i in range(pieces):
        total += levenshtein(
            a[len(a) * i // pieces : len(a) * (i + 1) // pieces],
            b[len(b) * i // pieces : len(b) * (i + 1) // pieces],
        )
    return Distance(total, False)


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
