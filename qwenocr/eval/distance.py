"""Edit distance and fuzzy search for `qwenocr eval`.

The distance comes from rapidfuzz. The fuzzy search of the checks (where a snippet occurs
with at most k edits, Sellers' problem) has no counterpart there: it is Hyyrö's
bit-parallel form of Myers' algorithm, with Python's unbounded integers as the bit
vectors, so a step over the text is a dozen big-integer operations done in C.
"""

from __future__ import annotations

from typing import Dict, Hashable, List, Sequence, Tuple


def levenshtein(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """The Levenshtein distance between two sequences (strings, or lists of words).

    Insertions, deletions and substitutions each cost 1. rapidfuzz computes it (in C++,
    bit-parallel): about ten times faster than the same algorithm in pure Python.
    """
    from rapidfuzz.distance import Levenshtein

    return int(Levenshtein.distance(a, b))


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
