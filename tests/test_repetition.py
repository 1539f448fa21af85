"""The repetition guard: real loops are caught early, real documents never trip it."""

from __future__ import annotations

import random
import time

import pytest

from qwenocr.scan.repetition import (
    Loop,
    LoopRules,
    RepetitionGuard,
    detect_loop,
    find_loop,
)

RULES = LoopRules()

# --------------------------------------------------------------------------------------
# Looping output, as the models produce it: a good start, then the same tokens again and
# again until max_tokens. Each sample is (prefix the model got right, the repeated unit).
# --------------------------------------------------------------------------------------

INVOICE_HEAD = """# INVOICE No. 2024-0117

**Bill to:** Harbour Supplies Ltd, 14 Quay Street, Bristol BS1 4DJ

| # | Description | Qty | Unit price | Amount |
|---|-------------|----:|-----------:|-------:|
| 1 | Stainless hinge, 75 mm | 40 | 2.15 | 86.00 |
| 2 | Wood screw 4x30, box of 200 | 6 | 7.90 | 47.40 |
"""
INVOICE_ROW = "| 3 | Cabinet handle, brushed nickel | 24 | 3.60 | 86.40 |\n"

LETTER_HEAD = """Dear Ms Okafor,

Thank you for your letter of 3 March concerning the renewal of your tenancy. We have
reviewed the file and can confirm the following points. """
LETTER_SENTENCE = "The rent will remain unchanged for the next twelve months. "

ARTICLE_HEAD = "## 2. Methods\n\nSamples were collected at four sites along the river. "
PARAGRAPH = (
    "Water temperature, dissolved oxygen and conductivity were measured in situ with a "
    "calibrated multiparameter probe at a depth of 0.5 m, and two 1-litre grab samples "
    "were taken at each site for laboratory analysis of nitrate, phosphate and total "
    "suspended solids within 24 hours of collection.\n\n"
)

LEAFLET_HEAD = "### Directions for use\n\n- Clean and dry the affected area.\n"
LIST_ITEM = "- Apply a thin layer of cream twice daily.\n"

HTML_HEAD = "<table>\n<tr><th>Region</th><th>2022</th><th>2023</th></tr>\n"
HTML_ROW = "<tr><td>North-East</td><td>1,204</td><td>1,317</td></tr>\n"

LATEX_HEAD = "$$\nf(x) = "
LATEX_UNIT = "\\frac{1}{2} x^{2} + "

CJK_HEAD = "第三章 实验方法\n\n本研究采用"
CJK_UNIT = "的数据"

LOOPS = {
    "table row": (INVOICE_HEAD, INVOICE_ROW),
    "sentence": (LETTER_HEAD, LETTER_SENTENCE),
    "paragraph": (ARTICLE_HEAD, PARAGRAPH),
    "markdown list": (LEAFLET_HEAD, LIST_ITEM),
    "html table row": (HTML_HEAD, HTML_ROW),
    "latex term": (LATEX_HEAD, LATEX_UNIT),
    "single token": ("The results of the ", "the "),
    "pipe token": ("| Name | Value |\n|---|---|\n| a ", "|"),
    "cjk phrase": (CJK_HEAD, CJK_UNIT),
    "single cjk char": (CJK_HEAD, "的"),
    "blank lines": ("Page 3 of 7\n", "\n"),
    "spaces": ("Total:", " "),
    "zeros": ("| Year | Q1 | Q2 |\n|---|---|---|\n| 2020 | ", "0 | "),
}


def _looping(prefix: str, unit: str, chars: int = 20_000) -> str:
    return prefix + unit * (chars // len(unit) + 1)


def _feed(text: str, piece: int = 3, rules: LoopRules = RULES) -> tuple[RepetitionGuard, int]:
    """Feed like a streaming engine; return the guard and how much text it had seen."""
    guard = RepetitionGuard(rules)
    for i in range(0, len(text), piece):
        if guard.feed(text[i : i + piece]):
            break
    return guard, len(guard.text)


@pytest.mark.parametrize("name", list(LOOPS))
def test_loop_is_caught_and_the_text_before_it_kept(name: str) -> None:
    prefix, unit = LOOPS[name]
    text = _looping(prefix, unit)
    guard, seen = _feed(text)
    assert guard.looping, name
    kept = guard.text_before_loop
    # Everything the model got right survives, plus one copy of the repeated unit
    # (give or take where the periodic run happens to begin).
    assert kept.startswith(prefix.rstrip()[: len(prefix) - len(unit)])
    assert text.startswith(kept)
    assert len(kept) <= len(prefix) + len(unit)
    # What follows is the loop itself: copies of the unit (in some rotation).
    assert guard.text[guard.loop_start :][: len(unit)] in unit * 2
    # Early: within the class's threshold, plus one check interval and one copy.
    loop = guard.loop
    assert isinstance(loop, Loop)
    _, need_chars = {
        "content": (RULES.min_repeats, RULES.min_chars),
        "low-content": (RULES.low_content_repeats, RULES.low_content_chars),
        "separator": (2, RULES.separator_chars),
        "blank-rows": (RULES.blank_row_repeats, RULES.blank_row_chars),
        "whitespace": (2, RULES.whitespace_chars),
        "blank-lines": (2, RULES.blank_lines_chars),
    }[loop.kind]
    budget = max(need_chars, 4 * len(unit)) + RULES.check_every + 2 * len(unit)
    assert seen - len(prefix) <= budget, (name, seen - len(prefix), budget)


def test_loop_kinds() -> None:
    kinds = {name: detect_loop(_looping(*LOOPS[name])).kind for name in LOOPS}
    assert kinds["table row"] == "content"
    assert kinds["paragraph"] == "content"
    assert kinds["pipe token"] == "separator"
    assert kinds["zeros"] == "low-content"
    assert kinds["single cjk char"] == "low-content"
    assert kinds["blank lines"] == "blank-lines"


def test_paragraph_loop_caught_at_the_fourth_copy() -> None:
    text = _looping(ARTICLE_HEAD, PARAGRAPH)
    guard, seen = _feed(text)
    assert guard.loop.period == len(PARAGRAPH)
    assert seen <= len(ARTICLE_HEAD) + 4 * len(PARAGRAPH) + RULES.check_every
    assert guard.text_before_loop == ARTICLE_HEAD + PARAGRAPH


def test_table_row_loop_keeps_whole_rows() -> None:
    guard, _ = _feed(_looping(INVOICE_HEAD, INVOICE_ROW))
    assert guard.text_before_loop == INVOICE_HEAD + INVOICE_ROW


def test_single_token_loop_keeps_one_copy() -> None:
    guard, seen = _feed(_looping("The results of the ", "the "))
    assert guard.text_before_loop == "The results of the "
    assert seen < 19 + RULES.min_chars + 2 * RULES.check_every


def test_loop_after_the_model_recovered_is_still_found() -> None:
    # find_loop on a finished text reports a loop even if the model later broke out.
    text = LETTER_HEAD + LETTER_SENTENCE * 12 + "\n\nYours sincerely,\nJ. Marsh\n"
    assert find_loop(text) == len(LETTER_HEAD) + len(LETTER_SENTENCE)


# --------------------------------------------------------------------------------------
# Legitimate repetition: none of these may trip the guard.
# --------------------------------------------------------------------------------------


def _toc() -> str:
    rng = random.Random(7)
    titles = [
        "Introduction",
        "Scope of the review",
        "Background",
        "Legal framework",
        "Methodology",
        "Data sources",
        "Stakeholder interviews",
        "Findings",
        "Governance",
        "Financial sustainability",
        "Service quality",
        "Workforce",
        "Digital infrastructure",
        "Recommendations",
        "Implementation plan",
        "Monitoring and evaluation",
        "Risks",
        "Conclusion",
        "References",
        "Glossary",
    ]
    lines = ["# Contents", ""]
    page = 1
    for chapter, title in enumerate(titles, 1):
        head = f"{chapter}. {title} "
        lines.append(head + "." * (72 - len(head)) + f" {page}")
        for section in range(1, rng.randint(2, 5)):
            sub = f"    {chapter}.{section} {rng.choice(titles)} "
            page += rng.randint(1, 6)
            lines.append(sub + ". " * ((72 - len(sub)) // 2) + f"{page}")
        page += rng.randint(2, 9)
    # Some models use a Markdown table for a TOC, with long dash borders.
    lines += ["", "| Annex | Title | Page |", "|" + "-" * 20 + "|" + "-" * 50 + "|" + "-" * 8 + "|"]
    for annex in "ABCDEFGH":
        lines.append(f"| {annex} | Supporting tables {'.' * 40} | {page} |")
        page += 3
    return "\n".join(lines) + "\n"


def _big_table() -> str:
    rng = random.Random(11)
    cols = [
        "Code",
        "Station",
        "Jan",
        "Feb",
        "Mar",
        "Apr",
        "May",
        "Jun",
        "Jul",
        "Aug",
        "Sep",
        "Oct",
        "Nov",
        "Dec",
        "Total",
        "Notes",
    ]
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join([":---:"] * len(cols)) + "|"]
    for i in range(120):
        vals = [f"{rng.randint(0, 400) / 10:.1f}" if rng.random() > 0.15 else "" for _ in range(12)]
        notes = rng.choice(["", "", "", "estimated", "gauge repaired"])
        total = f"{rng.randint(100, 3000) / 10:.1f}"
        out.append(f"| S{i:03d} | Station {i} | " + " | ".join(vals) + f" | {total} | {notes} |")
    # A stretch of rows with nothing measured: blank cells only.
    for i in range(120, 135):
        out.append(f"| S{i:03d} | Station {i} |" + " |" * 14)
    return "\n".join(out) + "\n"


def _ledger() -> str:
    rng = random.Random(3)
    out = [
        "GENERAL LEDGER - ACCOUNT 4100 SALES",
        "=" * 78,
        f"{'Date':<12}{'Ref':<10}{'Description':<26}{'Debit':>10}{'Credit':>10}{'Balance':>10}",
        "-" * 78,
    ]
    balance = 0.0
    for day in range(1, 29):
        for _ in range(rng.randint(1, 4)):
            credit = rng.randint(1000, 900000) / 100
            balance += credit
            out.append(
                f"2024-02-{day:02d}  INV{rng.randint(10000, 99999):<7}{'Sale':<26}"
                f"{'':>10}{credit:>10.2f}{balance:>10.2f}"
            )
        out.append(f"{'':<12}{'':<10}{'':<26}{'':>10}{'':>10}{'':>10}")
    out += ["-" * 78, f"{'TOTAL':<48}{'0.00':>10}{balance:>10.2f}{balance:>10.2f}", "=" * 78]
    return "\n".join(out) + "\n"


LATEX_MATRIX = r"""The stiffness matrix of the free chain is
$$
K = \begin{pmatrix}
 2 & -1 & 0 & \cdots & 0 & 0 \\
 -1 & 2 & -1 & \cdots & 0 & 0 \\
 0 & -1 & 2 & \cdots & 0 & 0 \\
 \vdots & \vdots & \vdots & \ddots & \vdots & \vdots \\
 0 & 0 & 0 & \cdots & 2 & -1 \\
 0 & 0 & 0 & \cdots & -1 & 2
\end{pmatrix},
\qquad
Z = \begin{bmatrix}
0 & 0 & 0 & 0 & 0 & 0 & 0 & 0 \\
0 & 0 & 0 & 0 & 0 & 0 & 0 & 0 \\
0 & 0 & 0 & 0 & 0 & 0 & 0 & 0 \\
0 & 0 & 0 & 0 & 0 & 0 & 0 & 0 \\
0 & 0 & 0 & 0 & 0 & 0 & 0 & 0 \\
0 & 0 & 0 & 0 & 0 & 0 & 0 & 0 \\
0 & 0 & 0 & 0 & 0 & 0 & 0 & 0 \\
0 & 0 & 0 & 0 & 0 & 0 & 0 & 0
\end{bmatrix}
$$
\begin{array}{|c|c|c|c|}
\hline
 & & & \\ \hline
 & & & \\ \hline
 & & & \\ \hline
 & & & \\ \hline
\end{array}
"""

BLANK_FORM = (
    "## Visitor log\n\n| Date | Name | Company | Time in | Time out | Signature |\n"
    "|------|------|---------|---------|----------|-----------|\n"
    + "|      |      |         |         |          |           |\n" * 30
    + "\n"
    + "Signature: ________________________________\n" * 3
    + "\nName: ____________________  Date: ____________\n" * 3
    + "\n"
    + "<table>\n"
    + "<tr><td></td><td></td><td></td><td>&nbsp;</td></tr>\n" * 25
    + "</table>\n"
)

LEGIT = {
    "toc with dot leaders": _toc(),
    "big table with borders and numeric columns": _big_table(),
    "ledger": _ledger(),
    "latex matrices": LATEX_MATRIX,
    "similar list items": "".join(f"- Item {i}: spare part {i % 7}\n" for i in range(1, 301)),
    "numbered figures": "".join(f"Figure {i}. Cross-section at station {i * 25} m\n\n" for i in range(1, 80)),
    "horizontal rules": "Part one.\n\n---\n\n* * *\n\n___\n\n" + "=" * 120 + "\nPart two.\n" + "-" * 300 + "\n",
    "blank form": BLANK_FORM,
    "laughter and a signature block": "He said: ha ha ha ha ha ha ha!\n\n"
    + "Approved by: ________  Date: ______\n" * 4,
    "short cjk repetition": "他说：“好好好，谢谢谢谢。”\n" + "第1章 总则 …………………… 1\n第2章 范围 …………………… 7\n",
    "sparse yes/no table": "| Item | Mon | Tue | Wed | Thu | Fri |\n|---|---|---|---|---|---|\n"
    + "".join(f"| Check {i} | No | No | No | No | No |\n" for i in range(1, 30))
    + "| | N/A | N/A | N/A | N/A | N/A |\n" * 5,
}


@pytest.mark.parametrize("name", list(LEGIT))
def test_legitimate_repetition_is_not_a_loop(name: str) -> None:
    text = LEGIT[name]
    assert find_loop(text) is None, detect_loop(text)
    guard, _ = _feed(text, piece=2)
    guard.finish()
    assert not guard.looping


def test_legitimate_samples_are_really_repetitive() -> None:
    # Guard against a vacuous pass: these samples do contain long exact runs.
    assert "." * 30 in LEGIT["toc with dot leaders"]
    assert "|:---:|:---:|" in LEGIT["big table with borders and numeric columns"]
    assert "0 & 0 & 0 & 0" in LATEX_MATRIX
    assert BLANK_FORM.count("|      |      |") == 30


def test_a_real_document_with_a_loop_appended() -> None:
    # The same legitimate documents do trip it once the model gets stuck at their end.
    for name in ("toc with dot leaders", "ledger", "big table with borders and numeric columns"):
        text = LEGIT[name]
        last_line = text.rstrip("\n").rsplit("\n", 1)[-1] + "\n"
        looping = text + last_line * 60
        assert find_loop(looping) == len(text), name


# --------------------------------------------------------------------------------------
# Streaming: the result does not depend on how the text is chunked.
# --------------------------------------------------------------------------------------


def _chunks(text: str, rng: random.Random) -> list[str]:
    out, i = [], 0
    while i < len(text):
        n = rng.choice([1, 1, 2, 3, 4, 5, 8, 13, 40, 200])
        out.append(text[i : i + n])
        i += n
    return out


# Every legitimate sample in a row, and the same followed by a loop: longer than twice
# the window, so the guard's tail buffer is trimmed along the way.
ALL_LEGIT = "\n".join(LEGIT.values())
SAMPLES = {
    **{f"loop: {k}": _looping(*v, chars=6000) for k, v in LOOPS.items()},
    **{f"legit: {k}": v for k, v in LEGIT.items()},
    "legit: all in a row": ALL_LEGIT,
    "loop: after a long document": _looping(ALL_LEGIT + INVOICE_HEAD, INVOICE_ROW, 3000),
}


def test_long_samples_exceed_the_window() -> None:
    assert len(ALL_LEGIT) > 4 * RULES.window
    start = find_loop(SAMPLES["loop: after a long document"])
    assert start == len(ALL_LEGIT) + len(INVOICE_HEAD) + len(INVOICE_ROW)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_incremental_feeding_detects_at_the_same_point_as_find_loop(name: str) -> None:
    text = SAMPLES[name]
    expected = detect_loop(text)
    for piece in (1, 3, 32, 33, 1000, len(text)):
        guard = RepetitionGuard()
        for i in range(0, len(text), piece):
            if guard.feed(text[i : i + piece]):
                break
        guard.finish()
        assert guard.loop == expected, (name, piece)
    rng = random.Random(name)
    guard = RepetitionGuard()
    for chunk in _chunks(text, rng):
        if guard.feed(chunk):
            break
    guard.finish()
    assert guard.loop == expected
    assert text.startswith(guard.text)


def test_guard_keeps_all_text_and_stays_looping() -> None:
    guard = RepetitionGuard()
    text = _looping(LETTER_HEAD, LETTER_SENTENCE, 3000)
    results = [guard.feed(text[i : i + 5]) for i in range(0, len(text), 5)]
    assert guard.text == text
    assert results[-1] is True and results.count(True) == len(results) - results.index(True)
    assert guard.feed("") is True


def test_empty_and_tiny_inputs() -> None:
    assert find_loop("") is None
    assert find_loop("a") is None
    assert find_loop("ab" * 3) is None
    guard = RepetitionGuard()
    assert guard.feed("") is False
    assert guard.finish() is False
    assert guard.loop_start is None and guard.text_before_loop == ""


def test_thresholds_can_be_overridden() -> None:
    text = "Intro. " + "One more line of text here.\n" * 3
    assert find_loop(text) is None
    assert find_loop(text, min_repeats=2, min_chars=40) == len("Intro. One more line of text here.\n")
    with pytest.raises(ValueError):
        RepetitionGuard(check_every=0)
    with pytest.raises(TypeError):
        RepetitionGuard(no_such_rule=3)  # type: ignore[arg-type]


def test_markup_carries_no_content() -> None:
    # Empty HTML cells are a separator even though "td" has letters; the same cells with
    # a word in them are content.
    assert detect_loop("<tr>" + "<td></td>" * 60).kind == "separator"
    assert detect_loop("<tr>" + "<td>Paid</td>" * 60).kind == "content"
    assert detect_loop("$" + "\\quad " * 100).kind == "separator"


# --------------------------------------------------------------------------------------
# Cost: bounded work per character, whatever the input.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["prose", "toc", "table"])
def test_feeding_200k_characters_in_3_char_pieces_is_cheap(name: str) -> None:
    rng = random.Random(5)
    if name == "prose":
        words = "the of and to in a is that for it as was with be by on not this are or".split()
        text = " ".join(rng.choice(words) for _ in range(60_000))
    elif name == "toc":
        text = "".join(
            f"{i}. Section {rng.randint(1, 999)} " + "." * rng.randint(20, 90) + f" {i * 3}\n" for i in range(4000)
        )
    else:
        text = "".join(
            f"| {rng.randint(0, 99999)} | {rng.random():.4f} | | {rng.randint(0, 9)} |\n" for i in range(9000)
        )
    text = text[:200_000]
    assert len(text) == 200_000
    guard = RepetitionGuard()
    start = time.perf_counter()
    for i in range(0, len(text), 3):
        assert not guard.feed(text[i : i + 3])
    guard.finish()
    elapsed = time.perf_counter() - start
    # One bounded scan per check_every characters, never a rescan of the whole text.
    assert guard.scans <= len(text) // RULES.check_every + 1
    assert len(guard._buf) <= 2 * RULES.window + 3
    # Measured about 0.15 s on a 2-core machine; the bound only catches a blow-up.
    assert elapsed < 5.0, elapsed
