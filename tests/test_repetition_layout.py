"""The loop guard on layout mode's answers (`--layout`: Qwen-VL document-parsing HTML).

Legitimate layout HTML repeats far more than Markdown: tag names, `data-bbox` attributes
with similar numbers, hundreds of table rows of one shape, rows of empty cells. A loop in
it is rarely exact, because the model moves the box on as it replays the same element.
The guard in HTML mode (`RepetitionGuard(html=True)`) looks at the answer with each tag
standing for one character and the boxes masked: realistic pages never trip it, loops
of every kind are caught about as early as the same loop in Markdown, and the text kept
parses (qwenocr.layout.parse) into the blocks before the loop. benchmarks/bench_guard_layout.py
measures the same corpus.
"""

from __future__ import annotations

import json
import random
from typing import Callable, Dict, List, Tuple

import pytest

from qwenocr.layout.parse import parse_html, table_rows
from qwenocr.scan.repetition import HTML_RULES, RepetitionGuard, detect_loop, find_loop
from tests.support import samples
from tests.support.clirun import run_cli
from tests.support.openai_fake_server import FakeOpenAIServer


def _box(rng: random.Random, y: int, h: int = 14, x0: int = 80, x1: int = 920) -> str:
    """A data-bbox value as the model writes it: 0-1000, a little jitter."""
    return f"{x0 + rng.randint(-3, 3)} {y} {x1 + rng.randint(-3, 3)} {y + h + rng.randint(0, 2)}"


# --------------------------------------------------------------------------------------
# Legitimate pages, as the model answers them.
# --------------------------------------------------------------------------------------


def financial_table(rows: int = 320, cell_boxes: bool = False, one_line: bool = False) -> str:
    """A general ledger: hundreds of rows of one shape, empty debit/credit cells, the same
    amounts again and again (monthly fees), blank spacer rows and subtotals."""
    rng = random.Random(1)
    head = (
        '<header data-bbox="60 20 940 32">Harbour Supplies Ltd - General ledger FY2024</header>\n'
        '<h2 data-bbox="60 40 600 58">Account 6100 Operating expenses</h2>\n'
        '<table data-bbox="60 62 940 975">'
    )
    sep = "" if one_line else "\n"
    out = [
        head + sep + "<tr><th>Date</th><th>Ref</th><th>Description</th><th>Debit</th><th>Credit</th>"
        "<th>Balance</th></tr>" + sep
    ]
    balance = 0.0
    fees = ["12.50", "12.50", "45.00", "0.00", "1,250.00"]
    for i in range(rows):
        if i % 40 == 39:  # subtotal, then a blank spacer row
            cells = ["", "", "Carried forward", "", "", f"{balance:,.2f}"]
            out.append(_row(cells, rng, i, cell_boxes) + sep)
            out.append(_row([""] * 6, rng, i, cell_boxes) + sep)
            continue
        debit = rng.choice(fees) if rng.random() < 0.7 else ""
        credit = "" if debit else rng.choice(fees)
        balance += float((debit or "0").replace(",", "")) - float((credit or "0").replace(",", ""))
        desc = rng.choice(["Bank charges", "Bank charges", "Card fee", "Rent", "Utilities", ""])
        cells = [f"2024-{1 + i // 30:02d}-{1 + i % 28:02d}", f"J{1000 + i}", desc, debit, credit, f"{balance:,.2f}"]
        out.append(_row(cells, rng, i, cell_boxes) + sep)
    out.append("</table>\n" + '<footer data-bbox="460 980 540 992">Page 7 of 31</footer>')
    return "".join(out)


def _row(cells: List[str], rng: random.Random, i: int, cell_boxes: bool) -> str:
    if not cell_boxes:
        return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    y = 70 + (i * 903) // 340
    xs = [60, 160, 240, 560, 680, 800, 940]
    return (
        "<tr>"
        + "".join(
            f'<td data-bbox="{xs[k]} {y} {xs[k + 1]} {y + 2 + rng.randint(0, 1)}">{c}</td>' for k, c in enumerate(cells)
        )
        + "</tr>"
    )


def blank_form() -> str:
    """An application form: many identical empty fields, lines to write on, an empty grid."""
    rng = random.Random(2)
    out = ['<h1 data-bbox="80 40 920 70">Application for a parking permit</h1>']
    y = 80
    for label in ["Surname", "Given names", "Address", "", "Postcode", "Telephone", "Email", "Vehicle registration"]:
        out.append(f'<p data-bbox="{_box(rng, y)}">{label}: ________________________________</p>')
        y += 18
    out.append(f'<p data-bbox="{_box(rng, y)}">Reasons for the application (use the lines below):</p>')
    for _ in range(25):  # identical writing lines, each with its own box
        y += 16
        out.append(f'<p data-bbox="{_box(rng, y, 10)}">____________________________________________</p>')
    out.append(f'<table data-bbox="80 {y + 20} 920 {y + 300}">')
    out.append("<tr><th>Date</th><th>Time in</th><th>Time out</th><th>Bay</th><th>Signature</th></tr>")
    out.append("<tr><td></td><td></td><td></td><td></td><td></td></tr>" * 30)  # one line, as models write it
    out.append("</table>")
    for _ in range(3):
        y += 18
        out.append(f'<p data-bbox="{_box(rng, y)}">Signature: ______________ Date: ___/___/______</p>')
    out.append('<div data-bbox="80 900 920 960"><input type="checkbox"/> Yes <input type="checkbox"/> No</div>')
    return "\n".join(out) + "\n"


def multi_column() -> str:
    """A two-column article page: header, title, paragraphs left then right, a figure
    with its caption, footnotes, a page number."""
    rng = random.Random(3)
    words = (
        "the of and river samples were measured at four sites with a calibrated probe nitrate "
        "phosphate oxygen temperature conductivity results show seasonal variation in flow"
    ).split()
    out = [
        '<header data-bbox="60 20 940 34">Journal of Freshwater Studies 12 (2024) 101-118</header>',
        '<h1 data-bbox="60 50 940 90">Seasonal nitrate dynamics in a lowland river</h1>',
        '<p data-bbox="60 95 940 110">A. Okafor, J. Marsh and L. Chen</p>',
    ]
    for col, (x0, x1) in enumerate([(60, 490), (510, 940)]):
        y = 130
        for k in range(6):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(40, 90))).capitalize() + "."
            if k == 2:
                out.append(
                    f'<h2 data-bbox="{x0} {y} {x1} {y + 14}">{col + 2}. {"Methods" if col == 0 else "Results"}</h2>'
                )
                y += 20
            out.append(f'<p data-bbox="{x0} {y} {x1} {y + 90}">{text}</p>')
            y += 100
    out += [
        '<div class="image" data-bbox="510 700 940 860"><img data-bbox="510 700 940 860"/></div>',
        '<div class="caption" data-bbox="510 865 940 880">Figure 2: Nitrate at the four sites.</div>',
        '<p data-bbox="60 940 490 950"><sup>1</sup> Corresponding author.</p>',
        '<footer data-bbox="480 970 520 982">103</footer>',
    ]
    return "\n".join(out) + "\n"


def similar_list(items: int = 100) -> str:
    """A parts list: 100 items of one pattern that differ in a number or two."""
    rng = random.Random(4)
    out = ['<h2 data-bbox="80 30 920 46">Spare parts</h2>', '<ul data-bbox="80 50 920 980">']
    for i in range(1, items + 1):
        size = rng.choice([4, 5, 6, 8, 10])
        out.append(
            f'<li data-bbox="{_box(rng, 50 + i * 9, 8)}">Item {i}: M{size} hex bolt, zinc plated, box of 100</li>'
        )
    out.append("</ul>")
    return "\n".join(out) + "\n"


def references() -> str:
    """A references section: 60 entries of one format, repeated authors and journals, Ibid."""
    rng = random.Random(5)
    authors = ["Smith, J.", "Okafor, A.", "Chen, L.", "Marsh, J.", "Garcia, M."]
    journals = ["Water Research", "J. Hydrol.", "Freshwater Biol."]
    out = ['<h2 data-bbox="80 30 920 46">References</h2>']
    y = 50
    for i in range(1, 61):
        if i % 7 == 0:
            text = f"[{i}] Ibid., p. {rng.randint(10, 300)}."
        else:
            text = (
                f"[{i}] {rng.choice(authors)}, {rng.choice(authors)} ({rng.randint(1995, 2024)}). "
                f"Nitrate retention in lowland catchments. {rng.choice(journals)} "
                f"{rng.randint(10, 200)}, {rng.randint(1, 900)}-{rng.randint(901, 999)}."
            )
        out.append(f'<p data-bbox="{_box(rng, y, 12)}">{text}</p>')
        y += 15
    return "\n".join(out) + "\n"


def contents_page() -> str:
    """A table of contents: dot leaders in paragraphs and in a table, page numbers."""
    rng = random.Random(6)
    out = ['<h1 data-bbox="80 30 920 60">Contents</h1>']
    page, y = 1, 70
    for chapter in range(1, 25):
        title = rng.choice(["Introduction", "Scope", "Methods", "Findings", "Governance", "Risks", "Annex"])
        head = f"{chapter}. {title} "
        out.append(f'<p data-bbox="{_box(rng, y, 10)}">{head}{"." * (90 - len(head))} {page}</p>')
        page += rng.randint(2, 9)
        y += 12
    out.append(f'<table data-bbox="80 {y} 920 {y + 200}"><tr><th>Annex</th><th>Title</th><th>Page</th></tr>')
    for annex in "ABCDEFGH":
        out.append(f"<tr><td>{annex}</td><td>Supporting tables {'. ' * 40}</td><td>{page}</td></tr>")
        page += 3
    out.append("</table>")
    return "\n".join(out) + "\n"


def statistics_table() -> str:
    """A sparse statistical table: years without data (dashes), rows of zeros, nested
    headers with colspan, a long run of empty continuation rows."""
    out = ['<table data-bbox="60 60 940 960">', '<tr><th rowspan="2">Year</th><th colspan="4">Cases</th></tr>']
    out.append("<tr><th>Q1</th><th>Q2</th><th>Q3</th><th>Q4</th></tr>")
    for year in range(1960, 1990):
        out.append(f"<tr><td>{year}</td><td>–</td><td>–</td><td>–</td><td>–</td></tr>")
    out += ["<tr><td>0</td><td>0</td><td>0</td><td>0</td><td>0</td></tr>"] * 12
    out += ["<tr><td>&nbsp;</td><td></td><td></td><td></td><td></td></tr>"] * 30
    out.append("</table>")
    return "\n".join(out) + "\n"


LEGIT: Dict[str, str] = {
    "contents page with dot leaders": contents_page(),
    "sparse statistics table": statistics_table(),
    "financial table (320 rows)": financial_table(),
    "financial table, one line": financial_table(one_line=True),
    "financial table, boxes on cells": financial_table(cell_boxes=True),
    "form with identical empty fields": blank_form(),
    "two-column page": multi_column(),
    "list of 100 similar items": similar_list(),
    "references": references(),
}


# --------------------------------------------------------------------------------------
# Looping answers: a good start, then one element again and again to max_tokens.
# Each is (prefix, a function from copy number to one copy).
# --------------------------------------------------------------------------------------

PAGE_HEAD = (
    '<header data-bbox="60 20 940 32">Tenancy renewal</header>\n'
    '<h1 data-bbox="80 40 920 70">Renewal of your tenancy</h1>\n'
    '<p data-bbox="80 80 920 120">Dear Ms Okafor, thank you for your letter of 3 March.</p>\n'
)
SENTENCE = "The rent will remain unchanged for the next twelve months."
TABLE_HEAD = (
    '<h2 data-bbox="60 40 600 58">Regional sales</h2>\n<table data-bbox="60 62 940 900">\n'
    "<tr><th>Region</th><th>2022</th><th>2023</th></tr>\n"
    "<tr><td>South</td><td>980</td><td>1,011</td></tr>\n"
)


def _p_same(i: int) -> str:
    return f'<p data-bbox="80 130 920 150">{SENTENCE}</p>\n'


def _p_creeping(i: int) -> str:
    return f'<p data-bbox="80 {130 + 22 * i} 920 {150 + 22 * i}">{SENTENCE}</p>\n'


def _row_same(i: int) -> str:
    return "<tr><td>North-East</td><td>1,204</td><td>1,317</td></tr>\n"


def _row_creeping(i: int) -> str:
    y = 120 + 12 * i
    return (
        f'<tr><td data-bbox="60 {y} 400 {y + 10}">North-East</td><td data-bbox="400 {y} 700 {y + 10}">1,204</td>'
        f'<td data-bbox="700 {y} 940 {y + 10}">1,317</td></tr>'
    )


def _empty_cell(i: int) -> str:
    return "<td></td>"


def _empty_field(i: int) -> str:
    return f'<p data-bbox="80 {300 + 12 * i} 920 {310 + 12 * i}">____________________</p>\n'


ITEM = "Apply a thin layer of cream twice daily."
REFERENCE = "[7] Smith, J. (2019). Water Research 12, 1-9."


def _list_item(i: int) -> str:
    return f'<li data-bbox="80 {200 + 10 * i} 920 {208 + 10 * i}">{ITEM}</li>\n'


def _reference(i: int) -> str:
    return f'<p data-bbox="80 {400 + 14 * i} 920 {412 + 14 * i}">{REFERENCE}</p>\n'


# name: (prefix, one copy by its number, the blocks the kept text parses into (the
# prefix's and the first copy's), the same loop in Markdown)
LOOPS: Dict[str, Tuple[str, Callable[[int], str], int, str]] = {
    "paragraph, same box": (PAGE_HEAD, _p_same, 4, SENTENCE + "\n\n"),
    "paragraph, creeping box": (PAGE_HEAD, _p_creeping, 4, SENTENCE + "\n\n"),
    "table row, same": (TABLE_HEAD, _row_same, 2, "| North-East | 1,204 | 1,317 |\n"),
    "table row, creeping cell boxes": (TABLE_HEAD, _row_creeping, 2, "| North-East | 1,204 | 1,317 |\n"),
    "tag soup of empty cells": (TABLE_HEAD + "<tr>", _empty_cell, 2, "| "),
    "empty form field": (PAGE_HEAD, _empty_field, 4, "____________________\n"),
    "list item": (PAGE_HEAD + '<ul data-bbox="80 190 920 900">\n', _list_item, 4, "- " + ITEM + "\n"),
    "reference": ('<h2 data-bbox="80 380 920 396">References</h2>\n', _reference, 2, REFERENCE + "\n\n"),
}
MARKDOWN_HEAD = "# Renewal of your tenancy\n\nDear Ms Okafor, thank you for your letter of 3 March.\n\n"


def looping(prefix: str, copy: Callable[[int], str], chars: int = 30_000) -> str:
    out, i = [prefix], 0
    size = len(prefix)
    while size < chars:
        out.append(copy(i))
        size += len(out[-1])
        i += 1
    return "".join(out)


def _feed(text: str, piece: int = 3) -> Tuple[RepetitionGuard, int]:
    guard = RepetitionGuard(html=True)
    for i in range(0, len(text), piece):
        if guard.feed(text[i : i + piece]):
            break
    guard.finish()
    return guard, len(guard.text)


# --------------------------------------------------------------------------------------


def test_legitimate_pages_are_long_and_repetitive() -> None:
    # Guard against a vacuous pass: the samples do repeat what they are meant to.
    table = LEGIT["financial table (320 rows)"]
    assert table.count("<tr>") > 320 and table.count("<td></td>") > 300 and table.count("<td>12.50</td>") > 50
    assert LEGIT["form with identical empty fields"].count("<td></td><td></td><td></td>") == 30
    assert LEGIT["form with identical empty fields"].count(">____________________________________________<") == 25
    assert LEGIT["list of 100 similar items"].count("<li ") == 100
    for name, text in LEGIT.items():
        assert parse_html(text), name


@pytest.mark.parametrize("name", list(LEGIT))
def test_legitimate_layout_pages_are_not_loops(name: str) -> None:
    text = LEGIT[name]
    assert find_loop(text, html=True) is None, detect_loop(text, html=True)
    guard, _ = _feed(text, piece=2)
    assert not guard.looping


def copies_until_caught(prefix: str, unit_length: int, text: str, html: bool) -> float:
    """How many copies of the loop the guard let through before it stopped the model."""
    guard = RepetitionGuard(html=html)
    for i in range(0, len(text), 3):
        if guard.feed(text[i : i + 3]):
            break
    assert guard.looping
    return (len(guard.text) - len(prefix)) / unit_length


@pytest.mark.parametrize("name", list(LOOPS))
def test_layout_loops_are_caught_and_the_blocks_before_them_kept(name: str) -> None:
    prefix, copy, blocks, markdown_unit = LOOPS[name]
    text = looping(prefix, copy)
    guard, seen = _feed(text)
    assert guard.looping, name
    kept = guard.text_before_loop
    assert text.startswith(kept) and kept.startswith(prefix)
    # Caught about as early as the same loop in Markdown: after as many copies, give or
    # take one check interval.
    copies = copies_until_caught(prefix, len(copy(0)), text, html=True)
    markdown = copies_until_caught(
        MARKDOWN_HEAD, len(markdown_unit), looping(MARKDOWN_HEAD, lambda i: markdown_unit), False
    )
    assert copies <= markdown + 32 / 2 + 1, (name, copies, markdown)
    # The kept text is the prefix and one whole copy, never a tag cut in two.
    assert kept == prefix + copy(0), (name, kept[len(prefix) :])
    parsed = [block for block, _ in parse_html(kept)]
    assert len(parsed) == blocks, (name, [b.type for b in parsed])
    assert all(b.type != "text" for b in parsed), parsed  # no tag soup leaked as text
    if "row" in name:
        # The table block holds the rows before the loop plus its first copy.
        rows = table_rows(parsed[-1].html or "")
        assert len(rows) == 3 and rows[-1][0][0] == "North-East", rows


def test_the_creeping_loop_would_pass_a_markdown_guard() -> None:
    # What HTML mode adds: boxes that move on make the copies differ, so the plain
    # guard sees no exact repetition; the same loop with a fixed box it does catch.
    assert find_loop(looping(PAGE_HEAD, _p_creeping)) is None
    assert find_loop(looping(PAGE_HEAD, _p_same)) is not None
    assert find_loop(looping(PAGE_HEAD, _p_creeping), html=True) is not None


@pytest.mark.parametrize("name", list(LOOPS))
def test_loop_reported_in_the_answer_text(name: str) -> None:
    prefix, copy, _, _ = LOOPS[name]
    text = looping(prefix, copy, 6000)
    loop = detect_loop(text, html=True)
    assert loop is not None
    # Positions and the unit refer to the answer, not to the guard's view of it.
    assert loop.start == find_loop(text, html=True) == len(prefix) + len(copy(0))
    assert loop.region_start < loop.start
    assert loop.unit in text and len(loop.unit) == loop.period
    assert not any(0xE000 <= ord(c) <= 0xF8FF for c in loop.unit)


def test_legit_page_followed_by_a_loop() -> None:
    # Every legitimate page in a row (longer than the window), then a loop at its end.
    text = "\n".join(LEGIT.values())
    assert len(text) > 4 * HTML_RULES.window
    assert find_loop(text, html=True) is None
    looped = looping(text + PAGE_HEAD, _p_creeping, len(text) + 8000)
    start = find_loop(looped, html=True)
    assert start == len(text) + len(PAGE_HEAD) + len(_p_creeping(0))


def _chunks(text: str, rng: random.Random) -> List[str]:
    out, i = [], 0
    while i < len(text):
        n = rng.choice([1, 1, 2, 3, 4, 5, 8, 13, 40, 200, 500])
        out.append(text[i : i + n])
        i += n
    return out


@pytest.mark.parametrize("name", ["loop: " + k for k in LOOPS] + ["legit: all in a row"])
def test_streaming_detects_at_the_same_point_whatever_the_pieces(name: str) -> None:
    if name.startswith("loop: "):
        prefix, copy, _, _ = LOOPS[name[6:]]
        text = looping(prefix, copy, 6000)
    else:
        text = "\n".join(LEGIT.values())
    expected = detect_loop(text, html=True)
    for piece in (1, 7, 32, 333, len(text)):
        guard, _ = _feed(text, piece)
        assert guard.loop == expected, (name, piece)
    guard = RepetitionGuard(html=True)
    for chunk in _chunks(text, random.Random(name)):
        if guard.feed(chunk):
            break
    guard.finish()
    assert guard.loop == expected and text.startswith(guard.text)


def test_line_breaks_for_ever_are_blank_lines() -> None:
    # <br> after <br> is HTML's blank line: caught as soon as Markdown's blank lines are.
    for unit in ("<br>", "<br/>\n", "<br />"):
        loop = detect_loop(PAGE_HEAD + unit * 200, html=True)
        assert loop is not None and loop.kind == "blank-lines", unit
        assert loop.start == len(PAGE_HEAD) + len(unit)
    assert find_loop(PAGE_HEAD + "<p>Line one<br>line two<br><br><br>line three</p>\n", html=True) is None


def test_stray_angle_brackets_and_a_cut_tag() -> None:
    # "<" that starts no tag is text; a tag cut off by the end of the answer is too.
    text = '<p data-bbox="1 2 3 4">a < b and 3<4, x <= y</p>\n<p data-bbox="5 6'
    guard = RepetitionGuard(html=True)
    for ch in text:
        guard.feed(ch)
    assert not guard.finish() and guard.text == text
    # A loop of text with "<" in it is still caught.
    assert find_loop("Intro. " + "if a < b then c < d else e. " * 40, html=True) is not None


def test_bounded_view_and_checks_on_a_long_answer() -> None:
    text = financial_table(rows=3000, cell_boxes=True)
    assert len(text) > 400_000
    guard = RepetitionGuard(html=True)
    for i in range(0, len(text), 4):
        assert not guard.feed(text[i : i + 4])
    assert not guard.finish()
    assert len(guard._buf) <= 2 * HTML_RULES.window + 4
    assert guard._view is not None and len(guard._view._tag_at) <= 2 * HTML_RULES.window + 4
    assert guard.scans <= len(text) // HTML_RULES.check_every + 1


# --------------------------------------------------------------------------------------
# Through the CLI: a fake server streams a looping layout answer.
# --------------------------------------------------------------------------------------


def test_cli_layout_page_that_loops_keeps_its_blocks(tmp_path) -> None:
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=1)
    answer = looping(PAGE_HEAD, _p_creeping, 8000)
    with FakeOpenAIServer(reply=lambda body: answer) as server:
        proc = run_cli(
            "scan",
            pdf,
            "--layout",
            "-f",
            "json",
            "--backend",
            "openai",
            "--base-url",
            server.url,
            "--concurrency",
            "1",
        )
        requests = len(server.chat_requests())
    assert proc.returncode == 0, proc.stderr.decode()
    [page] = json.loads(proc.stdout)["pages"]
    assert page["status"] == "repetition"
    assert requests == 2  # the retry with other sampling looped too
    assert [b["type"] for b in page["blocks"]] == ["header", "heading", "paragraph", "paragraph"]
    assert page["blocks"][-1]["text"] == SENTENCE
    assert page["text"].count(SENTENCE) == 1
