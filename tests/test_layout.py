"""Layout mode's parts on their own: the model's document-parsing HTML read into blocks
(broken and partial HTML included), boxes mapped to page coordinates, the table rule,
headers and footers, the blocks' JSON shape (checked against docs/output-formats.md) and
its round trip through a checkpoint record."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qwenocr.layout.blocks import Block, check_block, check_blocks, from_dicts
from qwenocr.layout.coords import PageGeometry, parse_bbox, to_page
from qwenocr.layout.markdown import table_markdown, to_markdown
from qwenocr.layout.parse import page_blocks, parse_html, strip_answer
from qwenocr.scan.pipeline import ScanOptions, _resumed, layout_prompt
from qwenocr.scan.results import OK, PageResult, checked_record

ROOT = Path(__file__).resolve().parents[1]
LETTER = PageGeometry(612.0, 792.0)  # US Letter in points

# What Qwen-VL's "qwenvl html" answers look like, with the flaws models have: a think
# block, a fence, paragraphs and list items left open, boxes with commas or brackets,
# text outside every element, a table with merged cells holding another table.
PAGE = """<think>The page has a title.</think>```html
<html><body>
<header data-bbox="50 20 950 40">Journal of Tests, vol. 3</header>
<h1 data-bbox="100 60 900 100">Annual <b>report</b></h1>
<p data-bbox="100,110,900,200">First paragraph with a
line break<br>and more.
<p data-bbox="[100, 210, 900, 260]">Second, left open.
<ul data-bbox="100 270 900 330"><li>one<li>two<ol><li>a</li></ol></li></ul>
<table data-bbox="100 340 900 500"><caption>Table 1: money</caption>
<tr><th>Item</th><th>Amount</th></tr><tr><td>Tea | milk</td><td>3</td></tr></table>
<table data-bbox="100 510 900 600"><tr><td rowspan="2">A</td><td>B</td></tr>
<tr><td>C<table><tr><td>x</td></tr></table></td></tr></table>
<div class="image" data-bbox="100 610 500 800"><img data-bbox="100 610 500 800" alt="a chart"/></div>
<div class="image caption" data-bbox="100 805 500 820"><p>Figure 1: a chart</p></div>
<div class="formula" data-bbox="100 830 900 860">$$E = mc^2$$</div>
stray text here
<footer data-bbox="450 960 550 980">3</footer>
</body></html>
```"""


def test_a_realistic_page_becomes_blocks_in_reading_order():
    blocks = page_blocks(PAGE, (800, 1000), LETTER)
    assert [b.type for b in blocks] == [
        "header",
        "heading",
        "paragraph",
        "paragraph",
        "list",
        "caption",
        "table",
        "table",
        "figure",
        "caption",
        "formula",
        "text",
        "footer",
    ]
    heading = blocks[1]
    assert heading.text == "Annual report" and heading.level == 1
    # 0-1000 relative -> points: x * 612 / 1000, y * 792 / 1000
    assert heading.bbox == pytest.approx((61.2, 47.52, 550.8, 79.2))
    assert blocks[2].text == "First paragraph with a\nline break\nand more."
    assert blocks[3].bbox == pytest.approx((61.2, 166.32, 550.8, 205.92))  # [..] with commas
    assert blocks[4].text == "- one\n- two\n  1. a"
    assert blocks[5].text == "Table 1: money"
    assert blocks[9].text == "Figure 1: a chart" and blocks[8].bbox == pytest.approx((61.2, 483.12, 306.0, 633.6))
    assert blocks[11].bbox is None  # text outside every element: kept, without a box
    assert "The page has a title" not in json.dumps([b.to_dict() for b in blocks])


def test_absolute_pixel_boxes_land_where_relative_ones_do():
    relative = page_blocks('<p data-bbox="100 200 500 400">x</p>', (800, 1000), LETTER, "relative")
    absolute = page_blocks('<p data-bbox="80 200 400 400">x</p>', (800, 1000), LETTER, "absolute")
    assert relative[0].bbox == pytest.approx(absolute[0].bbox)
    assert relative[0].bbox == pytest.approx((61.2, 158.4, 306.0, 316.8))


@pytest.mark.parametrize(
    "written,expected",
    [
        ("10 20 30 40", (10, 20, 30, 40)),
        ("10,20,30,40", (10, 20, 30, 40)),
        ("[10, 20, 30, 40]", (10, 20, 30, 40)),
        ("30 40 10 20", (10, 20, 30, 40)),  # corners in any order
        ("10.5 20 30 40", (10.5, 20, 30, 40)),
        ("10 20 30", None),
        ("", None),
        ("a b c d", None),
    ],
)
def test_bbox_spellings(written, expected):
    assert parse_bbox(written) == expected


def test_boxes_are_clamped_to_the_page():
    assert to_page((-50, 0, 1200, 1000), (100, 100), LETTER) == (0.0, 0.0, 612.0, 792.0)


def test_rotated_page_maps_onto_its_displayed_size():
    landscape = PageGeometry(792.0, 612.0, rotation=90)  # a portrait page with /Rotate 90
    assert to_page((0, 500, 1000, 1000), (1000, 800), landscape) == pytest.approx((0, 306.0, 792.0, 612.0))


def test_no_html_at_all_is_kept_as_text():
    [(block, box)] = parse_html("# Title\n\nJust **Markdown**, as a model may answer.")
    assert block.type == "text" and box is None
    assert block.text == "# Title\n\nJust **Markdown**, as a model may answer."


def test_think_blocks_and_fences_are_stripped():
    assert strip_answer("<think>\nreasoning\n</think>\n<p>x</p>") == "<p>x</p>"
    assert strip_answer("<think>never closed, cut by max-tokens") == ""
    assert strip_answer("```html\n<p>x</p>\n```") == "<p>x</p>"
    assert strip_answer("```html\n<p>x</p>") == "<p>x</p>"  # fence cut off


def test_every_prefix_of_a_page_parses():
    """An answer cut off anywhere (--max-tokens, a timeout, a loop) still gives blocks."""
    for end in range(0, len(PAGE), 7):
        blocks = page_blocks(PAGE[:end], (800, 1000), LETTER)
        for block in blocks:
            assert check_block(block.to_dict()) is None
            to_markdown([block])


@pytest.mark.parametrize(
    "soup",
    [
        "<p data-bbox='1 2 3 4'>a</div></span></p></p>",
        "<table><td>cell without row<td rowspan='x'>bad span</table>",
        "<<<>>> <p <div>>",
        "</body></html><p>after the end",
        "<ul><li><ul><li><ul><li>deep" * 30,
        "<div class='formula'><img/></div><div class=image></div>",
        "<script>alert(1)</script><style>p{}</style><p>shown</p>",
        "<p>&amp; &lt;b&gt; &#9731; &bogus;</p>",
        "<h7>not a heading</h7><h2>heading 2",
    ],
)
def test_broken_html_never_raises(soup):
    blocks = page_blocks(soup, (100, 100), LETTER)
    assert check_blocks([b.to_dict() for b in blocks]) is None
    assert "alert" not in to_markdown(blocks)


def test_entities_and_levels():
    blocks = page_blocks("<p>&amp; &lt;b&gt;</p><h2>Two</h2><h3 class='page_footer'>12</h3>", (10, 10), LETTER)
    assert [(b.type, b.text, b.level) for b in blocks] == [
        ("paragraph", "& <b>", None),
        ("heading", "Two", 2),
        ("footer", "12", None),
    ]


# The table rule (docs/output-formats.md): pipe table when simple, HTML otherwise.
SIMPLE = "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2|3</td></tr></table>"
MERGED = "<table><tr><td colspan='2'>wide</td></tr><tr><td>1</td><td>2</td></tr></table>"
NESTED = "<table><tr><td>outer<table><tr><td>inner</td></tr></table></td><td>b</td></tr></table>"
RAGGED = "<table><tr><td>1</td><td>2</td></tr><tr><td>3</td></tr></table>"


def _table(answer: str) -> Block:
    [block] = [b for b in page_blocks(answer, (10, 10), LETTER) if b.type == "table"]
    return block


def test_simple_table_is_a_pipe_table():
    assert table_markdown(_table(SIMPLE).html or "") == "| a | b |\n| --- | --- |\n| 1 | 2\\|3 |"


@pytest.mark.parametrize("answer", [MERGED, NESTED, RAGGED], ids=["merged", "nested", "ragged"])
def test_complex_tables_stay_html(answer):
    block = _table(answer)
    markdown = table_markdown(block.html or "")
    assert markdown == block.html and markdown.startswith("<table>")
    if answer is MERGED:
        assert '<td colspan="2">wide</td>' in markdown
    if answer is NESTED:
        assert markdown.count("<table>") == 2


def test_table_html_is_sanitised():
    block = _table(
        '<table style="x" onclick="y" data-bbox="1 2 3 4"><tr><td class="c">a &lt; b<b>!</b></td></tr></table>'
    )
    assert block.html == "<table><tr><td>a &lt; b!</td></tr></table>"


def test_headers_and_footers_can_be_dropped_from_the_markdown():
    blocks = page_blocks(PAGE, (800, 1000), LETTER)
    kept, dropped = to_markdown(blocks), to_markdown(blocks, drop_headers_footers=True)
    assert "Journal of Tests" in kept and "Journal of Tests" not in dropped
    assert kept.endswith("\n\n3") and not dropped.endswith("3")
    assert dropped.startswith("# Annual report\n\n")
    assert "$$E = mc^2$$" in dropped and "<!-- figure -->" in dropped
    assert "| Tea \\| milk | 3 |" in dropped and '<td rowspan="2">A</td>' in dropped


def test_block_shape_is_checked():
    assert check_block({"type": "paragraph", "bbox": [1, 2, 3, 4], "text": "x"}) is None
    assert check_block({"type": "table", "bbox": None, "html": "<table></table>"}) is None
    assert check_block({"type": "heading", "bbox": None, "text": "x", "level": 2}) is None
    for bad in [
        [],
        {"bbox": None, "text": "x"},
        {"type": "p", "bbox": [1, 2, 3], "text": "x"},
        {"type": "p", "bbox": [1, 2, 3, float("nan")], "text": "x"},
        {"type": "p", "bbox": None},
        {"type": "p", "bbox": None, "text": "x", "html": "y"},
        {"type": "p", "bbox": None, "text": 3},
        {"type": "heading", "bbox": None, "text": "x", "level": 9},
    ]:
        assert check_block(bad) is not None, bad


def test_the_documented_blocks_example_is_valid():
    """docs/output-formats.md's example of a layout page is what the checker accepts."""
    text = (ROOT / "docs" / "output-formats.md").read_text(encoding="utf-8")
    section = text[text.index("## Layout mode") :]
    example = json.loads(re.search(r"```json\n(.*?)```", section, re.DOTALL).group(1))
    assert check_blocks(example["blocks"]) is None
    assert {b["type"] for b in example["blocks"]} >= {"header", "heading", "paragraph", "table", "footer"}
    assert set(example["layout"]) == {"width", "height", "unit", "rotation", "coords"}
    produced = page_blocks(PAGE, (800, 1000), LETTER)
    assert check_blocks([b.to_dict() for b in produced]) is None


def test_blocks_survive_a_checkpoint_and_follow_the_current_flags():
    blocks = [b.to_dict() for b in page_blocks(PAGE, (800, 1000), LETTER)]
    page = PageResult(1, to_markdown(from_dicts(blocks)), OK, blocks=blocks)
    page.extra["layout"] = {"width": 612.0, "height": 792.0, "unit": "pt", "rotation": 0, "coords": "relative"}
    record = json.loads(json.dumps(page.to_record()))
    back = PageResult.from_record(checked_record(1, record))
    assert back.blocks == blocks and back.extra["layout"] == page.extra["layout"]
    resumed = _resumed(back, ScanOptions(layout=True, drop_headers_footers=True))
    assert resumed.resumed and "Journal of Tests" not in resumed.text
    with pytest.raises(Exception, match="blocks"):
        checked_record(1, {**record, "blocks": [{"type": "p"}]})


def test_without_layout_a_page_has_no_blocks_key():
    assert "blocks" not in PageResult(1, "text", OK).to_record()


def test_the_prompt_names_the_coordinates():
    assert "0 to 1000" in layout_prompt("relative") and "data-bbox" in layout_prompt("relative")
    assert "pixels" in layout_prompt("absolute")


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_pdf_page_geometry_is_the_displayed_page(tmp_path, rotation):
    from qwenocr.pages.document import RenderSettings, open_document, page_geometry
    from tests.support import samples

    pdf = samples.write_rotated_pdf(tmp_path / "r.pdf", rotation=rotation)  # 612x792 pt, portrait
    turned = rotation in (90, 270)
    with open_document(pdf, timeout=None) as guarded_in_process, open_document(pdf) as guarded:
        for document in (guarded_in_process, guarded):
            image = document.render(1, RenderSettings(max_image_tokens=256))
            assert (image.width > image.height) == turned
            assert page_geometry(document, 1) == ((792.0, 612.0, rotation) if turned else (612.0, 792.0, rotation))
    from qwenocr.pages.pdf import PdfDocument

    direct = PdfDocument(pdf, "r.pdf")
    try:
        assert direct.page_geometry(1) == ((792.0, 612.0, rotation) if turned else (612.0, 792.0, rotation))
        assert page_geometry(direct, 1) == direct.page_geometry(1)
    finally:
        direct.close()


def test_an_image_has_no_page_geometry(tmp_path):
    from qwenocr.pages.document import open_document, page_geometry
    from tests.support import samples

    png = tmp_path / "p.png"
    samples.page_image(1, size=(300, 400)).save(png)
    with open_document(png) as document:
        assert page_geometry(document, 1) is None
