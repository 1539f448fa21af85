"""Text-layer Markdown: born-digital PDFs typeset in the test from known Markdown
(tests/support/markdown_pdfs.py) come back with their structure: headings, paragraphs,
lists, two columns, hyphenated words, a table, an embedded image, superscripts, any
/Rotate. Word order and heading/paragraph counts are asserted, and the blocks' boxes are
checked against the rendered page's ink."""

from __future__ import annotations

import pypdfium2 as pdfium
import pytest

from qwenocr.layout.blocks import check_blocks
from qwenocr.pages.textlayer import extract, to_markdown
from qwenocr.pages.textmarkdown import MAX_LAYOUT_LINES, TextLine, page_layout
from tests.support import markdown_pdfs as mp


def _read(data: bytes):
    doc = pdfium.PdfDocument(data)
    page = doc[0]
    return doc, page, extract(page)


@pytest.mark.parametrize("name", sorted(mp.DOCUMENTS))
def test_generated_documents_keep_their_structure(name):
    parts = mp.DOCUMENTS[name]
    expected = mp.document_markdown(parts)
    _doc, _page, page_text = _read(mp.markdown_pdf(parts))
    assert page_text.assess().usable
    layout = page_text.layout()
    assert mp.word_order_similarity(expected, layout.markdown) >= 0.98, layout.markdown
    assert mp.structure_counts(layout.markdown) == mp.structure_counts(expected), layout.markdown
    assert check_blocks(layout.blocks) is None
    # The raw text layer, as the scan wrote it before, has none of that structure.
    raw = to_markdown(page_text.text)
    assert mp.structure_counts(raw)["headings"] == 0
    assert mp.structure_counts(raw) != mp.structure_counts(expected)


def test_headings_get_levels_from_their_size():
    _doc, _page, page_text = _read(mp.markdown_pdf(mp.DOCUMENTS["single-column"]))
    headings = [(b["level"], b["text"]) for b in page_text.layout().blocks if b["type"] == "heading"]
    assert headings == [(1, "Extracting Structure from Text Layers"), (2, "Method"), (3, "Results")]


def test_end_of_line_hyphens_are_undone():
    parts = mp.DOCUMENTS["two-columns"]
    _doc, _page, page_text = _read(mp.markdown_pdf(parts))
    split = [line.text for line in page_text.lines if line.hyphen]
    assert len(split) >= 2, "the typesetter no longer hyphenates: the test would prove nothing"
    markdown = page_text.layout().markdown
    for line in split:
        head = line.split()[-1].rstrip("-")
        assert f"{head}-" not in markdown and f"{head} " not in markdown
    assert "leaving" in markdown and "depends" in markdown
    assert "born-digital" in markdown  # a real hyphen inside a line stays


@pytest.mark.parametrize("across", [False, True])
def test_two_columns_are_read_column_by_column(across):
    """Whether the PDF stores the text column by column or line by line across the page."""
    parts = mp.DOCUMENTS["two-columns"]
    expected = mp.document_markdown(parts)
    _doc, _page, page_text = _read(mp.markdown_pdf(parts, across=across))
    if across:  # PDFium's own order mixes the columns
        assert mp.word_order_similarity(expected, to_markdown(page_text.text)) < 0.9
    markdown = page_text.layout().markdown
    assert markdown.index("## Introduction") < markdown.index("Reading order") < markdown.index("## Approach")
    # Read straight across (top to bottom, left to right), the same lines make nonsense.
    across = sorted(page_text.lines, key=lambda line: (round(line.box[3]), line.box[0]))
    naive = "\n".join(line.text for line in across)
    assert mp.word_order_similarity(expected, naive) < 0.9
    assert mp.word_order_similarity(expected, markdown) >= 0.98


def test_list_items_keep_their_continuation_lines():
    _doc, _page, page_text = _read(mp.markdown_pdf(mp.DOCUMENTS["single-column"]))
    lists = [b for b in page_text.layout().blocks if b["type"] == "list"]
    assert len(lists) == 1
    assert lists[0]["text"].splitlines() == [
        "- first item of the list with enough words to wrap onto a second line of text",
        "- second item",
        "- third item",
    ]


def test_table_and_figure_become_blocks_in_place():
    _doc, _page, page_text = _read(mp.markdown_pdf(mp.DOCUMENTS["table-and-figure"]))
    layout = page_text.layout()
    assert [b["type"] for b in layout.blocks] == ["heading", "paragraph", "table", "figure", "paragraph"]
    assert "| Model | Pages | Score |\n| --- | --- | --- |\n| small | 120 | 0.91 |" in layout.markdown
    assert "<!-- figure -->" in layout.markdown
    figure = next(b for b in layout.blocks if b["type"] == "figure")
    width = mp.PAGE[0] - 2 * mp.MARGIN
    assert figure["bbox"][0] == pytest.approx(mp.MARGIN, abs=1)
    assert figure["bbox"][2] == pytest.approx(mp.MARGIN + 0.8 * width, abs=1)
    assert figure["bbox"][3] - figure["bbox"][1] == pytest.approx(80, abs=1)


def test_superscripts_do_not_break_the_line():
    data, expected = mp.superscript_pdf()
    _doc, _page, page_text = _read(data)
    assert "Smith1\n" in to_markdown(page_text.text)  # PDFium ends a line after the mark
    markdown = page_text.layout().markdown
    assert markdown.startswith("Alice Smith1, Bob Jones2\n\n")
    assert mp.structure_counts(markdown) == mp.structure_counts(expected)


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_boxes_are_page_points_from_the_top_left_after_rotate(rotate):
    """Every dark pixel of the rendered page lies inside some block's box, and every box
    holds ink: the boxes are where the text is shown, whatever the /Rotate."""
    size = (792, 612) if rotate in (90, 270) else mp.PAGE
    parts = mp.DOCUMENTS["table-and-figure"]
    doc, page, page_text = _read(mp.markdown_pdf(parts, rotate=rotate, page_size=size))
    assert page.get_rotation() == rotate
    assert page_text.display_size == size
    layout = page_text.layout()
    assert mp.word_order_similarity(mp.document_markdown(parts), layout.markdown) >= 0.98
    image = page.render(scale=1).to_pil().convert("L")
    assert image.size == size
    inside = image.copy()
    for block in layout.blocks:
        x0, y0, x1, y1 = block["bbox"]
        assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]
        crop = image.crop((int(x0), int(y0), int(x1) + 1, int(y1) + 1))
        assert crop.getextrema()[0] < 128, block
        inside.paste(255, (int(x0) - 1, int(y0) - 1, int(x1) + 2, int(y1) + 2))
    assert inside.getextrema()[0] > 200  # no ink outside the boxes


def test_the_render_child_hands_over_the_same_lines(tmp_path):
    from qwenocr.pages.document import open_document

    data = mp.markdown_pdf(mp.DOCUMENTS["two-columns"])
    path = tmp_path / "two.pdf"
    path.write_bytes(data)
    _doc, _page, local = _read(data)
    with open_document(path) as document:  # a guarded child process reads it
        guarded = document.text_layer(1)
    assert guarded == local
    assert guarded.layout() == local.layout()


def test_text_only_page_text_falls_back_to_plain_markdown():
    from qwenocr.pages.textlayer import PageText

    page = PageText("line one\nline two", 612, 792, (), 0.0, 0)
    assert page.layout().markdown == "line one\nline two\n"
    assert page.layout().blocks == []


def test_a_flood_of_lines_is_read_top_to_bottom():
    lines = [
        TextLine(f"word{i} and more", (60.0 + (i % 3) * 150, 10.0 + i, 100.0 + (i % 3) * 150, 20.0 + i), 10.0, False)
        for i in range(MAX_LAYOUT_LINES + 1)
    ]
    layout = page_layout(lines, (), (612, 792))
    assert layout.markdown.split()[0] == "word0"
    assert check_blocks(layout.blocks) is None


@pytest.mark.parametrize(
    "lines, expected",
    [
        (["An exam-", "ple of it."], "An example of it."),
        (["Mrs Smith-", "Jones came."], "Mrs Smith-Jones came."),
        (["from 2019-", "2020 on."], "from 2019-2020 on."),
        (["A dash -", "then more."], "A dash - then more."),
    ],
)
def test_joining_lines_of_a_paragraph(lines, expected):
    rows = [TextLine(text, (60.0, 100.0 + 13 * i, 300.0, 111.0 + 13 * i), 10.0, False) for i, text in enumerate(lines)]
    layout = page_layout(rows, (), (612, 792))
    assert layout.markdown == expected + "\n"


def test_paragraph_text_that_looks_like_markdown_is_escaped():
    rows = [TextLine("# not a heading", (60.0, 100.0, 300.0, 111.0), 10.0, False)]
    assert page_layout(rows, (), (612, 792)).markdown == "\\# not a heading\n"


def test_running_header_and_page_number_are_tagged():
    parts = mp.DOCUMENTS["two-columns"]
    _doc, _page, page_text = _read(mp.markdown_pdf(parts, header="Journal of Text Layers, vol. 3", footer="17"))
    layout = page_text.layout()
    types = [b["type"] for b in layout.blocks]
    assert types[0] == "header" and types[-1] == "footer" and types.count("header") == types.count("footer") == 1
    assert layout.blocks[0]["text"] == "Journal of Text Layers, vol. 3"
    assert layout.blocks[-1]["text"] == "17"
    assert layout.blocks[-1]["bbox"][1] > mp.PAGE[1] - 60
    body = [b for b in layout.blocks if b["type"] not in ("header", "footer")]
    assert body == [b for b in _read(mp.markdown_pdf(parts))[2].layout().blocks]


def test_any_lines_give_valid_blocks():
    """Whatever a hostile page's lines are (inverted or huge boxes, odd sizes, marker-only
    text), the layout returns valid blocks and never raises."""
    import random

    rng = random.Random(15)
    texts = ["•", "1.", "-", "a)", "word", "Heading", "exam-", "# x", "|", "ple end.", "", " ", "\x02"]
    for _ in range(300):
        lines = []
        for _ in range(rng.randint(0, 60)):
            x0, y0 = rng.uniform(-50, 700), rng.uniform(-50, 900)
            x1, y1 = x0 + rng.uniform(-5, 400), y0 + rng.uniform(-5, 30)
            text = " ".join(rng.choice(texts) for _ in range(rng.randint(1, 6)))
            lines.append(
                TextLine(
                    text,
                    (x0, y0, x1, y1),
                    rng.choice([0.0, 6.0, 10.0, 10.0, 14.0, 300.0]),
                    rng.random() < 0.2,
                    rng.random() < 0.1,
                )
            )
        figures = [
            (rng.uniform(0, 300), rng.uniform(0, 300), rng.uniform(300, 600), rng.uniform(300, 800))
        ] * rng.randint(0, 2)
        layout = page_layout(lines, figures, rng.choice([(612.0, 792.0), (0.0, 0.0)]))
        assert check_blocks(layout.blocks) is None
        assert isinstance(layout.markdown, str)


def test_too_many_characters_or_a_layout_bug_fall_back_to_the_plain_text(monkeypatch):
    from qwenocr.pages import textlayer

    data = mp.markdown_pdf(mp.DOCUMENTS["single-column"])
    _doc, _page, page_text = _read(data)
    plain = textlayer.to_markdown(page_text.text)
    assert page_text.layout().markdown != plain

    def broken(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(textlayer, "page_layout", broken)
    assert page_text.layout().markdown == plain and page_text.layout().blocks == []
    monkeypatch.undo()
    monkeypatch.setattr(textlayer, "MAX_LAYOUT_CHARS", 100)
    _doc, _page, dense = _read(data)
    assert dense.lines == () and dense.text == page_text.text
    assert dense.layout().markdown == plain


def _row(text, x0, x1, top, size=10.0):
    return TextLine(text, (x0, top, x1, top + 11.7), size, False)


def test_a_bullet_far_from_its_text_is_still_a_list_not_a_table():
    """Word sets a bullet at a quarter inch and its text at half an inch: further apart
    than a column gutter, yet one item (`build_lines` joins the fragments)."""
    from qwenocr.pages.textmarkdown import _join_fragments

    lines = []
    for number, item in enumerate(["apples and pears", "plums", "cherries in June"]):
        lines += [_row("•", 72, 75.5, 100 + 13 * number), _row(item, 100, 100 + 5 * len(item), 100 + 13 * number)]
    layout = page_layout(_join_fragments(lines), (), (612, 792))
    assert layout.markdown == "- apples and pears\n- plums\n- cherries in June\n"


def test_a_dash_at_the_start_of_a_wrapped_line_is_not_a_list():
    lines = [
        _row("The committee met twice in the spring and agreed on the", 60, 330, 100),
        _row("- somewhat reluctantly - final wording of the report.", 60, 320, 113),
    ]
    layout = page_layout(lines, (), (612, 792))
    assert [b["type"] for b in layout.blocks] == ["paragraph"]


def test_code_in_a_fixed_pitch_font_keeps_its_lines_and_indentation():
    _doc, _page, page_text = _read(mp.markdown_pdf(mp.DOCUMENTS["code"]))
    layout = page_text.layout()
    code = [b for b in layout.blocks if b["type"] == "code"]
    assert [b["text"] for b in code] == [
        "def read(path):\n    with open(path) as stream:\n        return stream.read()"
    ]
    assert "```\ndef read(path):\n    with open(path) as stream:\n" in layout.markdown


def test_a_stamp_turned_in_the_margin_stays_out_of_the_text():
    parts = mp.DOCUMENTS["two-columns"]
    stamp = "arXiv:2611.01234v1 [cs.CL] 27 Nov 2026"
    _doc, _page, page_text = _read(mp.markdown_pdf(parts, stamp=stamp))
    layout = page_text.layout()
    assert layout.blocks[-1]["type"] == "paragraph" and layout.blocks[-1]["text"] == stamp
    x0, y0, x1, y1 = layout.blocks[-1]["bbox"]
    assert x1 < mp.MARGIN and y1 - y0 > 5 * (x1 - x0)  # tall and narrow, in the left margin
    assert layout.blocks[:-1] == _read(mp.markdown_pdf(parts))[2].layout().blocks


def test_ragged_right_lines_stay_in_their_paragraph_and_a_short_last_line_ends_it():
    ragged = [
        _row("Left-aligned text ends its lines wherever a word stops fitting.", 60, 360, 100),
        _row("Considerable words push the margin in.", 60, 320, 113),
        _row("Extraordinarily long words come next, and the paragraph goes on and", 60, 380, 126),
        _row("ends here.", 60, 105, 139),
        _row("A new paragraph starts without any extra space before it.", 60, 330, 152),
    ]
    layout = page_layout(ragged, (), (612, 792))
    assert [b["type"] for b in layout.blocks] == ["paragraph", "paragraph"]
    assert layout.blocks[0]["text"].endswith("goes on and ends here.")
