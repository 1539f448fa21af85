"""`qwenocr eval` on whole, unpaged documents of a megabyte (issue #12, defect 16).

The full edit-distance algorithm costs len(a) * len(b) / 64 steps whatever the answer:
a 1 MB text against a 1 MB reference gave no result in 120 s. Similar texts must now
be scored exactly in a few seconds; texts too large and too different for that get an
upper bound, flagged as such. No timing is asserted beyond a generous timeout.
"""

from __future__ import annotations

import json
import random

import pytest

from qwenocr.eval.distance import edit_distance, levenshtein
from qwenocr.eval.documents import Document, Page
from qwenocr.eval.scores import score
from tests.support.clirun import run_cli

SIZE = 1_000_000
EDITS = 300


def _similar_pair(seed: int = 12):
    """A 1 MB reference, and the same text with EDITS letters planted as "@" far apart.

    "@" occurs nowhere in the reference and normalisation leaves it alone, and each lands
    in a different word: so exactly EDITS character edits and EDITS word edits.
    """
    rng = random.Random(seed)
    words = ["invoice", "total", "amount", "payable", "within", "thirty", "days", "of", "receipt", "Ltd."]
    reference = " ".join(rng.choice(words) for _ in range(SIZE // 6))[:SIZE].rstrip()
    chars = list(reference)
    step = len(chars) // EDITS
    planted = 0
    for i in range(EDITS):
        at = i * step + step // 2
        while not chars[at].isalpha():
            at += 1
        chars[at] = "@"
        planted += 1
    return "".join(chars), reference, planted


def _unpaged(text: str, source: str) -> Document:
    return Document(source, (Page(1, text),), paged=False)


@pytest.mark.timeout(20)  # was over 30 s here before the fix, about 1 s after
def test_one_megabyte_against_one_megabyte_is_exact():
    output, reference, planted = _similar_pair()
    scores = score(_unpaged(output, "out.md"), _unpaged(reference, "ref.md"))
    assert scores.alignment == "document"
    assert scores.char_edits == planted == EDITS
    assert scores.word_edits == EDITS
    assert scores.exact


@pytest.mark.timeout(90)
def test_cli_scores_one_megabyte_unpaged_documents(tmp_path):
    output, reference, planted = _similar_pair(seed=7)
    (tmp_path / "out.txt").write_text(output)
    (tmp_path / "ref.txt").write_text(reference)
    result = run_cli("eval", tmp_path / "out.txt", tmp_path / "ref.txt", "--json", timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    report = json.loads(result.stdout)
    assert report["alignment"] == "document"
    assert (report["char_edits"], report["word_edits"], report["exact"]) == (planted, EDITS, True)


def test_normal_pages_stay_exact():
    rng = random.Random(3)
    for _ in range(200):
        a = "".join(rng.choice("ab c") for _ in range(rng.randrange(0, 60)))
        b = "".join(rng.choice("abc ") for _ in range(rng.randrange(0, 60)))
        assert edit_distance(a, b) == (levenshtein(a, b), True)


def test_beyond_the_budget_the_distance_is_a_flagged_upper_bound():
    rng = random.Random(5)
    a = "".join(rng.choice("abcdefgh ") for _ in range(4000))
    b = "".join(rng.choice("abcdefgh ") for _ in range(3000))
    exact = levenshtein(a, b)
    estimate = edit_distance(a, b, budget=200_000)
    assert not estimate.exact
    assert exact <= estimate.edits <= len(a)
    # Similar texts within the band stay exact even past the budget.
    c = a[:1000] + "X" + a[1001:]
    assert edit_distance(a, c, budget=200_000) == (1, True)


def test_the_report_says_when_the_edits_are_an_upper_bound(monkeypatch):
    from qwenocr.eval import distance
    from qwenocr.eval.evaluate import evaluate

    monkeypatch.setattr(distance, "WORK_BUDGET", 100)
    monkeypatch.setattr(distance.edit_distance, "__defaults__", (100,))
    out = _unpaged("the quick brown fox jumps over the lazy dog " * 5, "out.md")
    ref = _unpaged("a slow red cat sleeps under an eager bird " * 5, "ref.md")
    evaluation = evaluate(out, ref)
    assert evaluation.to_dict()["exact"] is False
    assert any("upper bound" in note for note in evaluation.warnings())
