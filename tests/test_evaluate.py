"""`qwenocr eval`: edit distance, normalisation, page pairing, checks, and the command.

Expected error rates are computed by hand in the comments; the bit-parallel edit
distance is also checked against the textbook dynamic programme on random strings.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwenocr.errors import InputError
from qwenocr.eval import evaluate
from qwenocr.eval.checks import Check, parse_check, run_checks
from qwenocr.eval.distance import find_starts, levenshtein
from qwenocr.eval.documents import parse_document
from qwenocr.eval.normalize import normalize
from qwenocr.eval.scores import score

# --------------------------------------------------------------------------------------
# Edit distance


def _textbook(a, b) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y))
        previous = current
    return previous[-1]


@pytest.mark.parametrize(
    "a, b, distance",
    [
        ("kitten", "sitting", 3),  # k->s, e->i, +g
        ("sitting", "kitten", 3),
        ("flaw", "lawn", 2),  # -f, +n
        ("", "abc", 3),
        ("abc", "", 3),
        ("", "", 0),
        ("same", "same", 0),
        ("ab", "ba", 2),  # no transpositions in Levenshtein
        ("Straße", "Strasse", 2),  # ß->s, +s
    ],
)
def test_levenshtein_by_hand(a, b, distance):
    assert levenshtein(a, b) == distance


def test_levenshtein_on_words():
    # the cat sat -> the cat sat down: one inserted word; "a b c" -> "a x c": one substitution
    assert levenshtein("the cat sat".split(), "the cat sat down".split()) == 1
    assert levenshtein(["a", "b", "c"], ["a", "x", "c"]) == 1


def test_levenshtein_matches_the_textbook_algorithm():
    rng = random.Random(5)
    for _ in range(400):
        a = "".join(rng.choice("abcd") for _ in range(rng.randint(0, 90)))
        b = "".join(rng.choice("abcd") for _ in range(rng.randint(0, 90)))
        assert levenshtein(a, b) == _textbook(a, b), (a, b)
    # Longer than one machine word on both sides, and words as symbols.
    a = "".join(rng.choice("ab ") for _ in range(300))
    b = "".join(rng.choice("ab ") for _ in range(250))
    assert levenshtein(a, b) == _textbook(a, b)
    assert levenshtein(a.split(), b.split()) == _textbook(a.split(), b.split())


def test_levenshtein_is_fast_on_a_10k_character_page():
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFG.,0123456789"
    reference = "".join(rng.choice(alphabet) for _ in range(10_000))
    unrelated = "".join(rng.choice(alphabet) for _ in range(10_000))
    started = time.perf_counter()
    distance = levenshtein(unrelated, reference)
    elapsed = time.perf_counter() - started
    assert 0 < distance <= 10_000
    # About 0.06 s on a 2-core cloud VM; 100 million DP cells in pure Python would take
    # minutes. The bound is loose so a slow CI machine does not flake.
    assert elapsed < 2.0, f"{elapsed:.2f} s for 10k x 10k"


def test_fuzzy_search_finds_start_offsets_and_the_closest_distance():
    assert find_starts("cat", "a cat and a cat") == ([2, 12], 0)
    starts, best = find_starts("kitten", "the sitting cat", max_diffs=3)
    assert starts and best <= 3
    assert find_starts("kitten", "the sitting cat", max_diffs=0) == ([], 2)  # "sittin" is 2 edits
    assert find_starts("zebra", "", max_diffs=0) == ([], 5)


# --------------------------------------------------------------------------------------
# Normalisation


@pytest.mark.parametrize(
    "markdown, plain",
    [
        ("# Title", "Title"),
        ("### Closing hashes ###", "Closing hashes"),
        ("- one\n* two\n+ three\n• four", "one two three four"),
        ("- [x] done", "done"),
        ("1. First clause", "1. First clause"),  # ordered-list numbers are text
        ("> quoted **bold** and *italic* and __strong__ and _em_", "quoted bold and italic and strong and em"),
        ("snake_case and 5 * 3 stay", "snake_case and 5 * 3 stay"),
        ("`code` and ~~gone~~", "code and gone"),
        ("[a link](http://x.org) and ![alt text](img.png)", "a link and alt text"),
        ("| a | b |\n|---|:--:|\n| 1 | 2 |", "a b 1 2"),
        ("<table><tr><td>x</td><td>y</td></tr></table>", "x y"),
        ("AT&amp;T &lt;tag&gt;", "AT&T <tag>"),
        ("\u201cquoted\u201d \u2018single\u2019 en\u2013dash em\u2014dash", "\"quoted\" 'single' en-dash em-dash"),
        ("\ufb01ne\u00a0space \uff21 \u2026", "fine space A ..."),  # NFKC: ligature, NBSP, full-width, ellipsis
        ("<!-- page 1 -->\n\ntext\n\n---\n\nmore", "text more"),
        ("```python\nx = 1\n```", "x = 1"),
        ("a\\*b\\_c", "a*b_c"),
        ("  lots   of\n\n\twhitespace  ", "lots of whitespace"),
    ],
)
def test_normalize(markdown, plain):
    assert normalize(markdown) == plain


def test_case_and_punctuation_are_kept():
    assert normalize("Hello, World!") == "Hello, World!"


# --------------------------------------------------------------------------------------
# Reading pages


def test_markdown_pages_from_qwenocr_markers_with_status_and_notes():
    text = (
        "<!-- page 1 -->\n\n# A\n\n"
        "<!-- page 2 (blank) -->\n\n"
        "<!-- page 3 (repetition) -->\n\nloop\n\n"
        "> **qwenocr:** page 3: the model repeated itself; the text after the loop was dropped.\n"
    )
    doc = parse_document(text)
    assert doc.paged
    assert [(p.number, normalize(p.text)) for p in doc.pages] == [(1, "A"), (2, ""), (3, "loop")]


def test_form_feed_pages_and_a_final_form_feed():
    doc = parse_document("one\fTwo\f")
    assert [(p.number, p.text) for p in doc.pages] == [(1, "one"), (2, "Two")]


def test_plain_text_is_one_unpaged_page():
    doc = parse_document("just text\n")
    assert not doc.paged and len(doc.pages) == 1


def test_json_document_jsonl_and_a_list_of_pages():
    pages = [{"number": 2, "text": "b"}, {"number": 1, "text": "a", "status": "ok"}]
    for text in (
        json.dumps({"source": "x.pdf", "pages": pages}),
        "\n".join(json.dumps({"file": "x.pdf", **p}) for p in pages) + "\n",
        json.dumps(pages),
        json.dumps([{"source": "x.pdf", "pages": pages}]),  # scan's array of one document
    ):
        doc = parse_document(text)
        assert [(p.number, p.text) for p in doc.pages] == [(1, "a"), (2, "b")]


def test_markdown_starting_with_a_bracket_is_still_markdown():
    doc = parse_document("[Link](http://x) text", suffix=".md")
    assert doc.pages[0].text.startswith("[Link]")


@pytest.mark.parametrize(
    "text, suffix, message",
    [
        ('{"pages": [{"number": 1, "text": "a"}, {"number": 1, "text": "b"}]}', ".json", "page 1 appears twice"),
        ('{"pages": [{"number": 0, "text": "a"}]}', ".json", "page number 0"),
        ('{"pages": [{"number": 1}]}', ".json", "no pages"),
        ("{not json", ".json", "not valid JSON"),
        ('{"hello": 1}', ".json", "expected a qwenocr JSON document"),
        ('[{"pages": []}, {"pages": []}]', ".json", "holds 2 documents"),
    ],
)
def test_bad_json_is_an_input_error(text, suffix, message):
    with pytest.raises(InputError, match=message):
        parse_document(text, source="x", suffix=suffix)


# --------------------------------------------------------------------------------------
# Scores


def test_page_scores_and_overall_by_hand():
    output = parse_document("<!-- page 1 -->\nkitten\n<!-- page 2 -->\nthe cat sat\n")
    reference = parse_document("<!-- page 1 -->\nsitting\n<!-- page 2 -->\nthe cat sat down\n")
    scores = score(output, reference)
    one, two = scores.pages
    # page 1: kitten -> sitting = 3 edits over 7 reference chars; 1 word of 1 wrong
    assert (one.char_edits, one.ref_chars, one.word_edits, one.ref_words) == (3, 7, 1, 1)
    assert one.cer == pytest.approx(3 / 7) and one.wer == 1.0
    # page 2: " down" missing = 5 edits over 16 chars; 1 word of 4
    assert (two.char_edits, two.ref_chars, two.word_edits, two.ref_words) == (5, 16, 1, 4)
    # overall: total edits over total reference length, not the mean of the pages
    assert scores.cer == pytest.approx(8 / 23)
    assert scores.wer == pytest.approx(2 / 5)


def test_normalisation_makes_markdown_free():
    output = parse_document("# Report\n\n**Total:** 12")
    reference = parse_document("Report\nTotal: 12")
    assert score(output, reference).cer == 0.0
    raw = score(output, reference, normalized=False)
    assert raw.cer > 0  # "# ", "**" twice and one newline more: raw comparison counts them


def test_pages_pair_by_number_missing_and_unscored():
    output = parse_document("<!-- page 1 -->\nA\n<!-- page 3 -->\nC\n<!-- page 4 -->\nD\n")
    reference = parse_document("<!-- page 1 -->\nA\n<!-- page 2 -->\nBB\n<!-- page 3 -->\nC\n")
    scores = score(output, reference)
    assert [p.number for p in scores.pages] == [1, 2, 3]
    assert scores.missing_pages == (2,) and scores.pages[1].char_edits == 2  # all deleted
    assert scores.unscored_pages == (4,)  # the reference doesn't cover it
    assert scores.cer == pytest.approx(2 / 4)


def test_unpaged_side_compares_whole_documents():
    output = parse_document("<!-- page 1 -->\nfirst\n<!-- page 2 -->\nsecond\n")
    reference = parse_document("first second")
    scores = score(output, reference)
    assert scores.alignment == "document" and scores.cer == 0.0


def test_empty_reference_page_hallucination_is_counted():
    output = parse_document("<!-- page 1 -->\nghost text\n")
    reference = parse_document("<!-- page 1 -->\n\n")
    scores = score(output, reference)
    page = scores.pages[0]
    assert page.ref_chars == 0 and page.char_edits == 10
    assert page.cer is None  # undefined per page (no denominator), but not hidden:
    assert scores.char_edits == 10


# --------------------------------------------------------------------------------------
# Checks


DOC = parse_document(
    "<!-- page 1 -->\n# Invoice 2024\n\nTotal due: **1,250.00 EUR**\n<!-- page 2 -->\nThank you for your business.\n"
)


def _check(**fields) -> Check:
    return parse_check(json.dumps(fields))


@pytest.mark.parametrize(
    "fields, passed",
    [
        ({"type": "present", "text": "Total due: 1,250.00 EUR"}, True),  # normalised: no ** in the way
        ({"type": "present", "text": "Total due: 1,250.00 USD"}, False),
        ({"type": "present", "text": "Total due: 1,250.00 USD", "max_diffs": 3}, True),
        ({"type": "present", "text": "thank you", "case_sensitive": False}, True),
        ({"type": "present", "text": "thank you"}, False),
        ({"type": "present", "text": "Thank you", "page": 1}, False),
        ({"type": "present", "text": "Thank you", "page": 2}, True),
        ({"type": "absent", "text": "Lorem ipsum"}, True),
        ({"type": "absent", "text": "Invoice"}, False),
        ({"type": "absent", "text": "Invoice", "page": 9}, True),
        ({"type": "order", "before": "Invoice", "after": "Thank you"}, True),
        ({"type": "order", "before": "Thank you", "after": "Invoice"}, False),
        ({"type": "order", "before": "Invoise", "after": "Thank yu", "max_diffs": 1}, True),
        ({"type": "order", "before": "Nowhere", "after": "Thank you"}, False),
    ],
)
def test_checks(fields, passed):
    (result,) = run_checks([_check(**fields)], DOC)
    assert result.passed is passed, result.detail


def test_order_passes_when_any_occurrence_is_in_order():
    doc = parse_document("Header A body B Header A")
    (result,) = run_checks([_check(type="order", before="B", after="Header A")], doc)
    assert result.passed


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"type": "table", "cell": "x"}', "unknown check type"),
        ('{"type": "present"}', "needs a non-empty string 'text'"),
        ('{"type": "order", "before": "a"}', "'after'"),
        ('{"type": "present", "text": "a", "max_diffs": -1}', "max_diffs"),
        ('{"type": "present", "text": "a", "page": "one"}', "page"),
        ("not json", "not valid JSON"),
    ],
)
def test_bad_checks_are_input_errors(line, message):
    with pytest.raises(InputError, match=message):
        parse_check(line, 4, "checks.jsonl")


def test_checks_file_reports_and_pass_rate(tmp_path):
    checks = tmp_path / "checks.jsonl"
    checks.write_text(
        '{"type": "present", "text": "Invoice 2024", "id": "title"}\n'
        "\n# comments and blank lines are skipped\n"
        '{"type": "absent", "text": "Invoice"}\n'
    )
    result = evaluate.evaluate(DOC, None, evaluate.read_checks(checks), checks_source=str(checks))
    report = result.to_dict()
    assert report["cer"] is None and report["pages"] == []
    assert [r["passed"] for r in report["checks"]["results"]] == [True, False]
    assert [r["line"] for r in report["checks"]["results"]] == [1, 4]
    assert report["checks"]["results"][0]["id"] == "title"
    assert report["checks"]["pass_rate"] == 0.5


# --------------------------------------------------------------------------------------
# The command, in a real subprocess

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("QWENOCR_") and k not in ("NO_COLOR", "FORCE_COLOR")
    }
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "qwenocr", *args],
        cwd=cwd,
        env=clean,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def files(tmp_path):
    (tmp_path / "out.md").write_text("<!-- page 1 -->\n\n# Title\n\nkitten\n\n<!-- page 2 -->\n\nthe cat sat\n")
    (tmp_path / "ref.md").write_text("<!-- page 1 -->\nTitle\nsitting\n<!-- page 2 -->\nthe cat sat down\n")
    (tmp_path / "checks.jsonl").write_text(
        '{"type": "present", "text": "the cat"}\n{"type": "order", "before": "the cat", "after": "Title"}\n'
    )
    return tmp_path


def test_cli_json_report(files):
    result = run_cli("eval", "out.md", "ref.md", "--checks", "checks.jsonl", "--json", cwd=files)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # page 1: "Title kitten" vs "Title sitting": 3 edits / 13 chars, 1 / 2 words
    assert report["pages"][0] == {
        "number": 1,
        "cer": 3 / 13,
        "wer": 0.5,
        "ref_chars": 13,
        "ref_words": 2,
        "char_edits": 3,
        "word_edits": 1,
        "out_chars": 12,
        "out_words": 2,
        "missing": False,
    }
    assert report["cer"] == pytest.approx((3 + 5) / (13 + 16))
    assert report["wer"] == pytest.approx(2 / 6)
    assert report["checks"]["pass_rate"] == 0.5
    assert result.stderr == ""


def test_cli_table_and_stdin(files):
    result = run_cli("eval", "-", "ref.md", cwd=files, stdin=(files / "out.md").read_text())
    assert result.returncode == 0, result.stderr
    assert "overall" in result.stdout and "27.59%" in result.stdout  # 8/29
    assert "\x1b[" not in result.stdout  # not a terminal: no escape codes


def test_cli_checks_without_reference(files):
    result = run_cli("eval", "out.md", "--checks", "checks.jsonl", cwd=files)
    assert result.returncode == 0, result.stderr
    assert "Checks passed: 1/2 (50.00%)" in result.stdout


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (("eval", "missing.md", "ref.md"), 3, "output file not found: missing.md"),
        (("eval", "out.md", "missing.md"), 3, "reference file not found"),
        (("eval", "out.md", "--checks", "missing.jsonl"), 3, "checks file not found"),
        (("eval", "doc.pdf", "ref.md"), 3, "is a PDF"),
        (("eval", "bad.json", "ref.md"), 3, "not valid JSON"),
        (("eval", "out.md"), 2, "nothing to score against"),
    ],
)
def test_cli_errors_are_one_line(files, args, code, fragment):
    (files / "doc.pdf").write_bytes(b"%PDF-1.7\n")
    (files / "bad.json").write_text("{oops")
    result = run_cli(*args, cwd=files)
    assert result.returncode == code
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("qwenocr: error: ") and fragment in lines[0], result.stderr


def test_cli_warnings_go_to_stderr_and_quiet_silences_them(files):
    (files / "short.md").write_text("<!-- page 1 -->\nTitle sitting\n")
    result = run_cli("eval", "short.md", "ref.md", "--json", cwd=files)
    assert "the output has no page 2: scored as empty" in result.stderr
    json.loads(result.stdout)
    quiet = run_cli("eval", "short.md", "ref.md", "--json", "--quiet", cwd=files)
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert json.loads(quiet.stdout) == json.loads(result.stdout)


def test_cli_verbose_and_quiet_from_env_yield_to_the_flag(files):
    (files / "short.md").write_text("<!-- page 1 -->\nTitle sitting\n")
    result = run_cli("eval", "short.md", "ref.md", "--json", "--verbose", cwd=files, env={"QWENOCR_QUIET": "1"})
    assert result.returncode == 0
    assert "compared 2 page(s) by page number" in result.stderr
    both = run_cli("eval", "short.md", "ref.md", "--quiet", "--verbose", cwd=files)
    assert both.returncode == 2 and "contradict" in both.stderr


def test_cli_debug_shows_a_traceback(files):
    result = run_cli("eval", "missing.md", "ref.md", "--debug", cwd=files)
    assert result.returncode == 3
    assert "Traceback" in result.stderr and result.stderr.rstrip().endswith("output file not found: missing.md")
    from_env = run_cli("eval", "missing.md", "ref.md", cwd=files, env={"QWENOCR_DEBUG": "1"})
    assert from_env.returncode == 3 and "Traceback" in from_env.stderr


# NO_COLOR: Rich alone would drop colours but keep bold; qwenocr writes plain text.


def _run_in_terminal(args, cwd: Path, env: dict) -> str:
    """Run the CLI with stdout on a real pseudo-terminal; return what it wrote there."""
    import pty

    leader, follower = pty.openpty()
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("QWENOCR_") and k not in ("NO_COLOR", "FORCE_COLOR")
    }
    clean.update({"TERM": "xterm-256color", "COLUMNS": "100", **env})
    process = subprocess.Popen(
        [sys.executable, "-m", "qwenocr", *args], cwd=cwd, env=clean, stdout=follower, stderr=subprocess.PIPE
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(leader)
    assert process.returncode == 0, process.stderr.read()
    return b"".join(chunks).decode()


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_table_is_styled_on_a_terminal_and_plain_with_no_color(files):
    styled = _run_in_terminal(["eval", "out.md", "ref.md"], files, {})
    assert "\x1b[" in styled  # a terminal gets styles (bold totals, coloured pass/FAIL)...
    plain = _run_in_terminal(["eval", "out.md", "ref.md"], files, {"NO_COLOR": "1"})
    assert "\x1b[" not in plain and "overall" in plain  # ...unless NO_COLOR says no


def test_force_color_and_no_color(files):
    forced = run_cli("eval", "out.md", "ref.md", cwd=files, env={"FORCE_COLOR": "1"})
    assert "\x1b[" in forced.stdout
    both = run_cli("eval", "out.md", "ref.md", cwd=files, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert "\x1b[" not in both.stdout and "overall" in both.stdout


# --- page markers inside page text (issue 12, defect 17) -------------------------------

_MARKER_TEXTS = [
    "Intro line\n<!-- page 7 -->\nmore text",
    "<!-- page 1 -->\nsame number as its own page",
    "  <!--PAGE 2 (repetition)-->  \nand\n<!-- document: other.pdf -->\nend",
    "> **qwenocr:** a note that is page text\ninline <!-- page 3 --> stays as it is",
]


def _written(fmt: str, texts) -> str:
    import io

    from qwenocr.scan.output import DocumentInfo, make_writer
    from qwenocr.scan.results import PageResult

    results = [PageResult(number, text, "ok") for number, text in enumerate(texts, 1)]
    info = DocumentInfo(source="doc.pdf", sha256="0" * 64, page_count=len(results), pages_selected=[1])
    stream = io.StringIO()
    writer = make_writer(fmt, stream)
    writer.begin(info)
    for result in results:
        writer.page(result)
    writer.end(info, results)
    writer.close()
    return stream.getvalue()


def test_markdown_output_with_page_markers_in_the_text_round_trips_through_eval(tmp_path):
    (tmp_path / "out.md").write_text(_written("markdown", _MARKER_TEXTS))
    (tmp_path / "out.json").write_text(_written("json", _MARKER_TEXTS))
    markdown = parse_document((tmp_path / "out.md").read_text(), source="out.md")
    assert [page.number for page in markdown.pages] == [1, 2, 3, 4]
    for against in ("out.md", "out.json"):
        result = run_cli("eval", "out.md", against, "--json", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["cer"] == 0 and report["wer"] == 0, (against, report)
        assert report["unscored_pages"] == [] and report["alignment"] == "page"
