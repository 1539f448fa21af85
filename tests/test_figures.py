"""Figures in layout mode, end to end through the real CLI: a fake OpenAI-compatible
server answers with document-parsing HTML holding a figure and its caption, and the PNG
files (cropped from the page rendered again at the figure's resolution, in the render
child), their links from the Markdown and the JSON, where they go (beside -o, --figures
DIR, none on stdout without it), skipped boxes and resumed pages are checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from qwenocr.layout.blocks import check_blocks
from qwenocr.scan.figures import MAX_DPI, MAX_PAGE_PIXELS, MIN_DPI, crop_box, figure_dpi, figure_name
from tests.support.clirun import run_cli
from tests.support.openai_fake_server import FakeOpenAIServer

# The figure's box, 0-1000 relative: on an 850x1100 px page at 100 dpi (612x792 pt) it is
# pixels 85..425 x 671..880 (244.8 x 150.5 pt), drawn solid red in the PDF below.
FIGURE_BOX = (100, 610, 500, 800)
PAGE = f"""<h1 data-bbox="100 60 900 100">Annual report</h1>
<div class="image" data-bbox="{" ".join(map(str, FIGURE_BOX))}"><img/></div>
<div class="caption" data-bbox="100 805 500 820">Figure 1: growth</div>
<p data-bbox="100 830 900 900">After the figure.</p>"""


def _pdf(path: Path, pages: int = 1, resolution: float = 100.0) -> Path:
    images = []
    for _ in range(pages):
        image = Image.new("RGB", (850, 1100), "white")
        draw = ImageDraw.Draw(image)
        draw.text((100, 70), "Annual report", fill="black")
        x0, y0, x1, y1 = FIGURE_BOX
        draw.rectangle((x0 * 0.85, y0 * 1.1, x1 * 0.85 - 1, y1 * 1.1 - 1), fill=(220, 0, 0))
        images.append(image)
    images[0].save(path, "PDF", resolution=resolution, save_all=True, append_images=images[1:])
    return path


def _scan(server, *args):
    return run_cli("scan", *args, "--layout", "--backend", "openai", "--base-url", server.url, "--concurrency", "1")


def _ok(proc) -> None:
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr


def _check_figure_file(path: Path) -> None:
    with Image.open(path) as image:
        width, height = image.size
        # The box's shape, at the figure's resolution (300 dpi for a 245-pt-wide figure),
        # not the model image's (about 100 dpi at the default budget).
        assert width / height == pytest.approx(244.8 / 150.48, rel=0.03)
        assert width == pytest.approx(244.8 * MAX_DPI / 72, rel=0.03)
        red = image.convert("RGB").getpixel((width // 2, height // 2))
    assert red[0] > 180 and red[1] < 60 and red[2] < 60  # the figure itself, not the page around it


def test_markdown_output_links_figure_files_beside_it(tmp_path):
    pdf = _pdf(tmp_path / "doc.pdf")
    out = tmp_path / "out.md"
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        _ok(_scan(server, pdf, "-o", out))
    figure = tmp_path / "out_files" / "page-001-figure-1.png"
    _check_figure_file(figure)
    text = out.read_text(encoding="utf-8")
    # the link is relative to the Markdown file; the caption right after the figure
    assert "![Figure 1, page 1](out_files/page-001-figure-1.png)\n\nFigure 1: growth\n\nAfter the figure." in text
    assert "<!-- figure -->" not in text


def test_json_blocks_name_their_file(tmp_path):
    pdf = _pdf(tmp_path / "doc.pdf")
    out = tmp_path / "result.json"
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        _ok(_scan(server, pdf, "-o", out, "-f", "json"))
    [page] = json.loads(out.read_text(encoding="utf-8"))["pages"]
    assert check_blocks(page["blocks"]) is None
    figure, caption = page["blocks"][1], page["blocks"][2]
    assert figure["type"] == "figure" and figure["file"] == "result_files/page-001-figure-1.png"
    assert caption == {
        "type": "caption",
        "bbox": pytest.approx([61.2, 637.56, 306.0, 649.44]),
        "text": "Figure 1: growth",
    }
    assert "file" not in page["blocks"][0]
    assert "](result_files/page-001-figure-1.png)" in page["text"]
    _check_figure_file(tmp_path / "result_files" / "page-001-figure-1.png")


def test_stdout_writes_no_files_without_figures_dir(tmp_path):
    pdf = _pdf(tmp_path / "doc.pdf")
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        markdown = _scan(server, pdf)
        jsonl = _scan(server, pdf, "-f", "jsonl", "--no-resume")
    _ok(markdown)
    _ok(jsonl)
    assert b"<!-- figure -->\n\nFigure 1: growth" in markdown.stdout and b"![" not in markdown.stdout
    [page] = [json.loads(line) for line in jsonl.stdout.decode().splitlines()]
    assert all("file" not in block for block in page["blocks"])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["doc.pdf"]


@pytest.mark.parametrize("render_timeout", ["120", "0"], ids=["guarded", "in-process"])
def test_stdout_with_figures_dir_writes_there(tmp_path, render_timeout):
    pdf = _pdf(tmp_path / "doc.pdf", pages=2)
    figures = tmp_path / "figs"
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        proc = _scan(server, pdf, "--figures", figures, "-f", "json", "--render-timeout", render_timeout)
    _ok(proc)
    pages = json.loads(proc.stdout)["pages"]
    assert [p["blocks"][1]["file"] for p in pages] == [
        (figures / "page-001-figure-1.png").as_posix(),
        (figures / "page-002-figure-1.png").as_posix(),
    ]
    assert sorted(p.name for p in figures.iterdir()) == ["page-001-figure-1.png", "page-002-figure-1.png"]
    _check_figure_file(figures / "page-002-figure-1.png")


def test_several_pages_in_flight_each_get_their_figures(tmp_path):
    pdf = _pdf(tmp_path / "doc.pdf", pages=4)
    out = tmp_path / "out.md"
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        proc = run_cli(
            "scan", pdf, "-o", out, "--layout", "--backend", "openai", "--base-url", server.url, "--concurrency", "3"
        )
    _ok(proc)
    names = [f"page-00{n}-figure-1.png" for n in range(1, 5)]
    assert sorted(p.name for p in (tmp_path / "out_files").iterdir()) == names
    text = out.read_text(encoding="utf-8")
    assert all(f"](out_files/{name})" in text for name in names)
    _check_figure_file(tmp_path / "out_files" / names[-1])


def test_a_huge_page_is_rendered_within_the_pixel_cap(tmp_path):
    pdf = _pdf(tmp_path / "poster.pdf", resolution=10.0)  # 85 x 110 inches
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        _ok(_scan(server, pdf, "-o", tmp_path / "poster.md"))
    with Image.open(tmp_path / "poster_files" / "page-001-figure-1.png") as figure:
        # 300 dpi would make the page 25500 x 33000 px; capped, the figure's share of it is
        # its share of MAX_PAGE_PIXELS (0.4 x 0.19 of the page)
        assert figure.width * figure.height <= 0.4 * 0.19 * MAX_PAGE_PIXELS * 1.05
        assert figure.width / figure.height == pytest.approx(244.8 / 150.48, rel=0.03)
        assert figure.convert("RGB").getpixel((figure.width // 2, figure.height // 2))[0] > 180


def test_figures_outside_the_page_or_degenerate_are_skipped(tmp_path):
    pdf = _pdf(tmp_path / "doc.pdf")
    answer = (
        '<div class="image" data-bbox="1200 1200 1400 1300"></div>'  # wholly outside: no area once clamped
        '<div class="image" data-bbox="300 300 300 600"></div>'  # no width
        '<div class="image"><p>no box</p></div>'
        f'<div class="image" data-bbox="{" ".join(map(str, FIGURE_BOX))}"></div>'
        '<div class="image" data-bbox="1,2,3"></div>'  # not four numbers
    )
    out = tmp_path / "out.json"
    with FakeOpenAIServer(reply=lambda body: answer) as server:
        _ok(_scan(server, pdf, "-o", out, "-f", "json"))
    [page] = json.loads(out.read_text(encoding="utf-8"))["pages"]
    assert page["status"] == "ok"
    files = [block.get("file") for block in page["blocks"] if block["type"] == "figure"]
    # each figure keeps its place in the page's numbering; only the real one has a file
    assert files == [None, None, None, "out_files/page-001-figure-4.png", None]
    assert [p.name for p in (tmp_path / "out_files").iterdir()] == ["page-001-figure-4.png"]
    assert (
        page["text"].count("<!-- figure -->") == 4
        and "![Figure 4, page 1](out_files/page-001-figure-4.png)" in page["text"]
    )


def test_a_resumed_page_keeps_its_links_and_crops_a_missing_file_again(tmp_path):
    pdf = _pdf(tmp_path / "doc.pdf", pages=2)
    out = tmp_path / "out.md"
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        server.plan = ["ok", 422]  # page 2 fails: the checkpoint keeps page 1
        first = _scan(server, pdf, "-o", out)
    assert first.returncode != 0 and b"Traceback" not in first.stderr
    kept = tmp_path / "out_files" / "page-001-figure-1.png"
    assert kept.is_file() and not (tmp_path / "out_files" / "page-002-figure-1.png").exists()
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        kept.write_bytes(b"kept")  # a file that is there is linked as it is
        second = _scan(server, pdf, "-o", out)
        assert len(server.chat_requests()) == 1  # page 1 came from the checkpoint
    _ok(second)
    assert kept.read_bytes() == b"kept"
    text = out.read_text(encoding="utf-8")
    assert "![Figure 1, page 1](out_files/page-001-figure-1.png)" in text
    assert "![Figure 1, page 2](out_files/page-002-figure-1.png)" in text

    # a resumed page whose file is gone is cropped again (through a render)
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        server.plan = ["ok", 422]
        _scan(server, pdf, "-o", out, "--no-resume")
    kept.unlink()
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        third = _scan(server, pdf, "-f", "json", "-o", tmp_path / "out.json")  # out.json: out_files/ too
    _ok(third)
    document = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert document["pages"][0]["resumed"] is True
    assert document["pages"][0]["blocks"][1]["file"] == "out_files/page-001-figure-1.png"
    _check_figure_file(tmp_path / "out_files" / "page-001-figure-1.png")


def test_an_image_input_crops_the_image_sent_to_the_model(tmp_path):
    png = tmp_path / "page.png"
    image = Image.new("RGB", (600, 800), "white")
    ImageDraw.Draw(image).rectangle((60, 488, 299, 639), fill=(220, 0, 0))
    image.save(png)
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        _ok(_scan(server, png, "-o", tmp_path / "page.md"))
    with Image.open(tmp_path / "page_files" / "page-001-figure-1.png") as figure:
        assert figure.width / figure.height == pytest.approx(240 / 152, rel=0.05)
        assert figure.convert("RGB").getpixel((figure.width // 2, figure.height // 2))[0] > 180


def test_several_inputs_get_a_folder_each_under_figures_dir(tmp_path):
    one, two = _pdf(tmp_path / "a.pdf"), _pdf(tmp_path / "b.pdf")
    figures = tmp_path / "figs"
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        proc = _scan(server, one, two, "--figures", figures)
    _ok(proc)
    assert sorted(p.relative_to(figures).as_posix() for p in figures.rglob("*.png")) == [
        "a/page-001-figure-1.png",
        "b/page-001-figure-1.png",
    ]
    assert f"]({(figures / 'b' / 'page-001-figure-1.png').as_posix()})".encode() in proc.stdout


def test_figures_needs_layout(tmp_path):
    pdf = _pdf(tmp_path / "doc.pdf")
    proc = run_cli(
        "scan", pdf, "--figures", tmp_path / "figs", "--backend", "openai", "--base-url", "http://127.0.0.1:9"
    )
    assert proc.returncode == 2
    assert b"--figures needs --layout" in proc.stderr and b"Traceback" not in proc.stderr


def test_crop_and_resolution_rules():
    assert figure_name(3, 1) == "page-003-figure-1.png" and figure_name(1234, 2) == "page-1234-figure-2.png"
    assert figure_dpi((0, 0, 10, 10)) == MAX_DPI  # a small figure: the most detail
    assert figure_dpi((0, 0, 2000, 100)) == MIN_DPI  # a huge one: no less than MIN_DPI
    assert figure_dpi((0, 0, 576, 100)) == pytest.approx(200)  # 8 in at 200 dpi: 1600 px
    assert crop_box((61.2, 483.12, 306.0, 633.6), (612, 792), (2560, 3296)) == (256, 2010, 1280, 2637)
    assert crop_box((700, 800, 900, 900), (612, 792), (2560, 3296)) is None  # outside: clamped to nothing
    assert crop_box((10, 10, 10.5, 200), (612, 792), (612, 792)) is None  # thinner than MIN_SIDE_PX
    assert crop_box((0, 0, float("nan"), 1), (612, 792), (612, 792)) is None
