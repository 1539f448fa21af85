"""`qwenocr scan --layout` end to end through the real CLI: a fake OpenAI-compatible
server answers with realistic document-parsing HTML (broken HTML, relative and absolute
boxes, nested tables, a figure with its caption, headers and footers), and the pages'
blocks, boxes in PDF points (rotated pages too), Markdown and flags are checked. The real
engines run --layout on the tiny checkpoints (random text) without failing."""

from __future__ import annotations

import functools
import json

import pytest

from qwenocr.layout.blocks import check_blocks
from tests.support import clirun, samples
from tests.support.clirun import run_cli
from tests.support.openai_fake_server import FakeOpenAIServer, image_size

PAGE_ONE = """<html><body>
<header data-bbox="50 20 950 40">Journal of Tests</header>
<h1 data-bbox="100 60 900 100">Annual report</h1>
<p data-bbox="100,110,900,200">Revenue grew.
<table data-bbox="100 340 900 500"><tr><th>Item</th><th>Amount</th></tr><tr><td>Tea</td><td>3</td></tr></table>
<table data-bbox="100 510 900 600"><tr><td rowspan="2">A</td><td>B</td></tr>
<tr><td>C<table><tr><td>x</td></tr></table></td></tr></table>
<div class="image" data-bbox="100 610 500 800"><img data-bbox="100 610 500 800"/></div>
<div class="image caption" data-bbox="100 805 500 820"><p>Figure 1: growth</p></div>
<footer data-bbox="450 960 550 980">Page 1</footer>
</body></html>"""
# Cut off mid-element, tags crossed, text outside any element.
PAGE_TWO = "<think>x</think><h2 data-bbox='0 0 1000 100'>Second</h2></p></div>loose words<p data-bbox='1 2"


def _layout_json(proc) -> dict:
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def _scan(server, *args):
    return run_cli("scan", *args, "--backend", "openai", "--base-url", server.url, "--concurrency", "1")


def test_layout_json_has_blocks_in_page_points(tmp_path):
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=2)  # 850x1100 px at 100 dpi: 612x792 pt
    answers = iter([PAGE_ONE, PAGE_TWO])
    with FakeOpenAIServer(reply=lambda body: next(answers)) as server:
        document = _layout_json(_scan(server, pdf, "--layout", "-f", "json"))
        prompt = json.dumps(server.chat_requests()[0]["body"])
    assert "data-bbox" in prompt and "0 to 1000" in prompt
    one, two = document["pages"]
    assert check_blocks(one["blocks"]) is None and check_blocks(two["blocks"]) is None
    assert [b["type"] for b in one["blocks"]] == [
        "header",
        "heading",
        "paragraph",
        "table",
        "table",
        "figure",
        "caption",
        "footer",
    ]
    assert one["layout"] == {"width": 612.0, "height": 792.0, "unit": "pt", "rotation": 0, "coords": "relative"}
    assert one["blocks"][1]["bbox"] == pytest.approx([61.2, 47.52, 550.8, 79.2])
    assert one["blocks"][6]["text"] == "Figure 1: growth"
    # the Markdown text: pipe table for the simple one, HTML for merged cells
    assert "| Item | Amount |\n| --- | --- |\n| Tea | 3 |" in one["text"]
    assert '<td rowspan="2">A</td>' in one["text"] and one["text"].startswith("Journal of Tests\n\n# Annual report")
    # the broken page: nothing lost, no failure
    assert two["status"] == "ok"
    assert [(b["type"], b.get("text")) for b in two["blocks"]][:2] == [("heading", "Second"), ("text", "loose words")]
    assert two["blocks"][0]["bbox"] == pytest.approx([0, 0, 612.0, 79.2])


def test_markdown_drops_headers_and_footers_when_asked(tmp_path):
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=1)
    with FakeOpenAIServer(reply=lambda body: PAGE_ONE) as server:
        kept = _scan(server, pdf, "--layout")
        dropped = _scan(server, pdf, "--layout", "--drop-headers-footers", "--no-resume")
        jsonl = _scan(server, pdf, "--layout", "--drop-headers-footers", "--no-resume", "-f", "jsonl")
    assert kept.returncode == dropped.returncode == jsonl.returncode == 0, dropped.stderr.decode()
    assert b"Journal of Tests" in kept.stdout and b"Page 1" in kept.stdout
    assert b"Journal of Tests" not in dropped.stdout and b"Page 1" not in dropped.stdout
    assert b"# Annual report" in dropped.stdout and b"<!-- figure -->" in dropped.stdout
    [page] = [json.loads(line) for line in jsonl.stdout.decode().splitlines()]
    assert {"header", "footer"} <= {b["type"] for b in page["blocks"]}  # the JSON keeps them
    assert "Journal of Tests" not in page["text"]


def test_absolute_boxes_map_like_relative_ones(tmp_path):
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=1)

    def absolute(body) -> str:
        width, height = image_size(body)
        return f'<h1 data-bbox="{0.1 * width} {0.06 * height} {0.9 * width} {0.1 * height}">Title</h1>'

    with FakeOpenAIServer(reply=absolute) as server:
        document = _layout_json(_scan(server, pdf, "--layout", "--layout-coords", "absolute", "-f", "json"))
        assert "pixels" in json.dumps(server.chat_requests()[0]["body"])
    [page] = document["pages"]
    assert page["layout"]["coords"] == "absolute"
    assert page["blocks"][0]["bbox"] == pytest.approx([61.2, 47.52, 550.8, 79.2], abs=0.01)


@pytest.mark.parametrize("render_timeout", ["120", "0"], ids=["guarded", "in-process"])
def test_a_rotated_page_gets_boxes_on_its_displayed_page(tmp_path, render_timeout):
    pdf = samples.write_rotated_pdf(tmp_path / "rotated.pdf", rotation=90)  # portrait 612x792, shown landscape
    box = '<p data-bbox="0 500 1000 1000">bottom half</p>'
    with FakeOpenAIServer(reply=lambda body: box) as server:
        document = _layout_json(
            _scan(server, pdf, "--layout", "-f", "json", "--render-timeout", render_timeout, "--no-auto-rotate")
        )
    [page] = document["pages"]
    assert (page["layout"]["width"], page["layout"]["height"]) == (792.0, 612.0)
    assert page["layout"]["rotation"] == 90  # guarded (render child) and in-process alike
    assert page["blocks"][0]["bbox"] == pytest.approx([0, 306.0, 792.0, 612.0])


def test_an_image_input_has_boxes_in_its_pixels(tmp_path):
    png = tmp_path / "page.png"
    samples.page_image(1, size=(600, 800)).save(png)
    with FakeOpenAIServer(reply=lambda body: '<p data-bbox="0 0 500 500">x</p>') as server:
        document = _layout_json(_scan(server, png, "--layout", "-f", "json"))
    [page] = document["pages"]
    layout = page["layout"]
    assert layout["unit"] == "px" and layout["rotation"] is None
    assert page["blocks"][0]["bbox"] == pytest.approx([0, 0, layout["width"] / 2, layout["height"] / 2])


def test_without_layout_nothing_changes(tmp_path):
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=1)
    with FakeOpenAIServer(reply=lambda body: PAGE_ONE) as server:
        document = _layout_json(_scan(server, pdf, "-f", "json", "--drop-headers-footers"))
        assert "data-bbox" not in json.dumps(server.chat_requests()[0]["body"])
    [page] = document["pages"]
    assert "blocks" not in page and "layout" not in page
    assert page["text"] == PAGE_ONE.strip()


def test_layout_comes_from_the_config_file(tmp_path):
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=1)
    config = tmp_path / "config.toml"
    config.write_text('[scan]\nlayout = true\nlayout_coords = "absolute"\n', encoding="utf-8")
    with FakeOpenAIServer(reply=lambda body: PAGE_ONE) as server:
        proc = run_cli(
            "scan",
            pdf,
            "-f",
            "json",
            "--backend",
            "openai",
            "--base-url",
            server.url,
            env={"QWENOCR_CONFIG": str(config)},
        )
    [page] = _layout_json(proc)["pages"]
    assert page["layout"]["coords"] == "absolute" and page["blocks"]


ENGINES = [("mlx", "dense"), ("llama.cpp", "dense")]


@pytest.mark.engine
@pytest.mark.parametrize("engine,kind", ENGINES, ids=[f"{e}-{k}" for e, k in ENGINES])
def test_real_engines_run_layout_mode(tiny_models, tmp_path, engine, kind):
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=2, size=(600, 800))
    if engine == "mlx":
        model = ["--model", getattr(tiny_models, f"{kind}_mlx")]
    else:
        model = ["--model", getattr(tiny_models, f"{kind}_gguf"), "--mmproj", getattr(tiny_models, f"{kind}_mmproj")]
    run = functools.partial(clirun.run_cli, timeout=300)
    proc = run(
        "scan", pdf, "--layout", "-f", "json", "--max-tokens", "24", "--max-image-tokens", "128", "--no-resume", *model
    )
    document = _layout_json(proc)
    assert [p["number"] for p in document["pages"]] == [1, 2]
    for page in document["pages"]:
        assert page["status"] in {"ok", "repetition", "truncated"}, page
        assert check_blocks(page["blocks"]) is None
        assert page["layout"]["unit"] == "pt"
