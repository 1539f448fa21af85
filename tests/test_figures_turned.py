"""Figures on scans that were turned before OCR (`rotation_fix`), end to end through the
real CLI: a generated sideways scan (tests/test_orientation.py's kind) with a landscape
figure, a black mark in its top-left quarter, is read upright by a fake server that
answers the figure's box on the upright page; the PNG written (cut from the page as
displayed, sideways) is turned by the same correction: landscape, mark top-left."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from qwenocr.pages.orientation import turn
from tests.support.clirun import run_cli
from tests.support.openai_fake_server import FakeOpenAIServer
from tests.support.samples import dark_quarter

_spec = importlib.util.spec_from_file_location(
    "bench_orientation", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_orientation.py"
)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

# On the upright page (bench.PAGE, 1088 x 1408 px): a 440 x 220 px figure, light grey,
# its top-left quarter mostly black.
FIGURE = (320, 260, 760, 480)


def _upright_scan() -> Image.Image:
    page = bench.upright_page(random.Random(21))
    draw = ImageDraw.Draw(page)
    x0, y0, x1, y1 = FIGURE
    draw.rectangle(FIGURE, fill=215)
    draw.rectangle((x0, y0, x0 + 180, y0 + 90), fill=0)
    return bench.as_scan(page, random.Random(22))


CASES = [("png", 90), ("png", 180), ("png", 270), ("pdf", 90)]


@pytest.mark.parametrize("kind,needed", CASES, ids=[f"{kind}-{needed}" for kind, needed in CASES])
def test_a_figure_on_a_turned_scan_is_written_upright(tmp_path, kind, needed):
    upright = _upright_scan()
    width, height = upright.size
    sideways = turn(upright, (360 - needed) % 360)
    path = tmp_path / f"scan.{kind}"
    sideways.save(path, "PDF", resolution=130.0) if kind == "pdf" else sideways.save(path)
    x0, y0, x1, y1 = FIGURE
    box = f"{x0 / width * 1000:.1f} {y0 / height * 1000:.1f} {x1 / width * 1000:.1f} {y1 / height * 1000:.1f}"
    answer = f'<h1 data-bbox="90 50 900 90">Title</h1><div class="image" data-bbox="{box}"></div>'
    out = tmp_path / "out.json"
    with FakeOpenAIServer(reply=lambda body: answer) as server:
        proc = run_cli(
            "scan", path, "--layout", "-f", "json", "-o", out, "--backend", "openai", "--base-url", server.url
        )
    assert proc.returncode == 0, proc.stderr.decode()
    [page] = json.loads(out.read_text(encoding="utf-8"))["pages"]
    assert page["rotation_fix"] == needed
    [figure] = [block for block in page["blocks"] if block["type"] == "figure"]
    assert figure["file"] == "out_files/page-001-figure-1.png" and figure["figure_source"] == "crop"
    # the box stays on the page as displayed: sideways (taller than wide) after a quarter turn
    bx0, by0, bx1, by1 = figure["bbox"]
    assert (by1 - by0 > bx1 - bx0) == (needed != 180)
    with Image.open(tmp_path / "out_files" / "page-001-figure-1.png") as written:
        assert written.width / written.height == pytest.approx(2.0, rel=0.05)  # upright: landscape
        assert dark_quarter(written) == "top-left"
