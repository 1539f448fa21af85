"""Sideways and upside-down scans (qwenocr/pages/orientation.py): the detector on generated
scans (skewed, blurred, noisy, JPEG'd; benchmarks/bench_orientation.py makes them) turned
each of the four ways, photo, blank and one-line pages left alone, boxes turned back onto
the page, the record's `rotation_fix` checked on resume, and through the real CLI: a
sideways scan (PNG and image-only PDF) reaches a fake OpenAI server upright, the JSON
says so, and layout mode's boxes land on the page as displayed."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from qwenocr.pages.orientation import TURNS, detect, turn, unturn_box
from qwenocr.scan.results import InvalidRecord, PageResult, checked_record
from tests.support.clirun import run_cli
from tests.support.openai_fake_server import FakeOpenAIServer

_spec = importlib.util.spec_from_file_location(
    "bench_orientation", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_orientation.py"
)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("needed", TURNS)
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_scans_turned_each_way_are_found(seed, needed):
    page = bench.scan_page(seed, needed)
    found = detect(page)
    assert found.turn == needed, found
    # and the turn makes it upright: looked at again, it needs none
    assert detect(turn(page, found.turn)).turn == 0


@pytest.mark.parametrize("make", [bench.photo_page, bench.blank_page, bench.line_page])
@pytest.mark.parametrize("degrees", [0, 90])
def test_pages_without_lines_of_text_are_left_alone(make, degrees):
    found = detect(turn(make(5), degrees))
    assert found.turn == 0, found


def test_turn_goes_clockwise():
    image = Image.new("L", (40, 20), 255)
    image.putpixel((0, 0), 0)  # top-left
    turned = turn(image, 90)
    assert turned.size == (20, 40) and turned.getpixel((19, 0)) == 0  # now top-right
    assert turn(image, 180).getpixel((39, 19)) == 0
    assert turn(image, 270).getpixel((0, 39)) == 0
    assert turn(image, 0) is image


@pytest.mark.parametrize("degrees", TURNS)
def test_unturn_box_finds_the_box_on_the_page_before_the_turn(degrees):
    page = Image.new("L", (300, 200), 255)
    box = (30, 40, 90, 70)
    ImageDraw.Draw(page).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=0)
    turned = turn(page, degrees)
    # the mark's box in the turned image
    x0, y0, x1, y1 = Image.eval(turned, lambda v: 255 - v).getbbox()
    assert unturn_box((x0, y0, x1, y1), turned.size, degrees) == box


def test_rotation_fix_survives_the_checkpoint_and_is_checked():
    result = PageResult(3, "text", "ok", extra={"rotation_fix": 270})
    record = result.to_record()
    assert record["rotation_fix"] == 270
    assert PageResult.from_record(checked_record(3, record)).extra["rotation_fix"] == 270
    for bad in (45, "90", True, None):
        with pytest.raises(InvalidRecord, match="rotation_fix"):
            checked_record(3, {**record, "rotation_fix": bad})
    assert "rotation_fix" not in PageResult(3, "text", "ok").to_record()


def _sideways_scan(needed: int = 90) -> Image.Image:
    """A scanned page needing `needed` degrees clockwise, with a solid mark at the top-left
    corner of the upright page (where the server must see it)."""
    upright = bench.as_scan(bench.upright_page(random.Random(21)), random.Random(22))
    ImageDraw.Draw(upright).rectangle((0, 0, 50, 50), fill=(0, 0, 0))
    return turn(upright, (360 - needed) % 360)


def _received(body) -> Image.Image:
    for message in body["messages"]:
        if isinstance(message.get("content"), list):
            for part in message["content"]:
                if part.get("type") == "image_url":
                    data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                    return Image.open(io.BytesIO(data)).convert("L")
    raise AssertionError("no image in the request")


def _mark_corner(image: Image.Image) -> str:
    """Which corner holds the solid mark: the darkest corner square."""
    width, height = image.size
    side = max(4, min(width, height) // 40)
    corners = {
        "top-left": (0, 0),
        "top-right": (width - side, 0),
        "bottom-left": (0, height - side),
        "bottom-right": (width - side, height - side),
    }
    means = {name: float(np.asarray(image.crop((x, y, x + side, y + side))).mean()) for name, (x, y) in corners.items()}
    return min(means, key=lambda name: means[name])


def _scan(server, *args):
    return run_cli("scan", *args, "--backend", "openai", "--base-url", server.url, "--concurrency", "1", "-f", "json")


@pytest.mark.parametrize("kind", ["png", "pdf"])
def test_a_sideways_scan_reaches_the_model_upright(tmp_path, kind):
    scan = _sideways_scan(90)
    assert scan.width > scan.height  # lying on its side
    path = tmp_path / f"scan.{kind}"
    scan.save(path, "PDF", resolution=130.0) if kind == "pdf" else scan.save(path)
    with FakeOpenAIServer(reply=lambda body: "Upright text") as server:
        proc = _scan(server, path)
        assert proc.returncode == 0, proc.stderr.decode()
        seen = _received(server.chat_requests()[0]["body"])
        off = _scan(server, path, "--no-auto-rotate", "--no-resume")
        assert off.returncode == 0, off.stderr.decode()
        seen_off = _received(server.chat_requests()[1]["body"])
    page = json.loads(proc.stdout)["pages"][0]
    assert page["rotation_fix"] == 90 and page["text"] == "Upright text"
    assert seen.height > seen.width and _mark_corner(seen) == "top-left"
    # switched off: the page goes as it is, and says nothing about a turn
    assert "rotation_fix" not in json.loads(off.stdout)["pages"][0]
    assert seen_off.width > seen_off.height and _mark_corner(seen_off) == "bottom-left"


def test_layout_boxes_of_a_turned_page_are_on_the_page_as_displayed(tmp_path):
    scan = _sideways_scan(270)  # the upright page's top-left corner is now top-right
    path = tmp_path / "scan.png"
    scan.save(path)
    # the model (looking at the upright page) puts a heading on its top-left tenth
    answer = '<h1 data-bbox="0 0 100 100">Title</h1><p data-bbox="0 900 1000 1000">End</p>'
    with FakeOpenAIServer(reply=lambda body: answer) as server:
        proc = _scan(server, path, "--layout")
    assert proc.returncode == 0, proc.stderr.decode()
    page = json.loads(proc.stdout)["pages"][0]
    assert page["rotation_fix"] == 270
    width, height = page["layout"]["width"], page["layout"]["height"]
    assert (width, height) == (page["image_height"], page["image_width"])  # the displayed page: landscape
    assert width > height and page["layout"]["unit"] == "px"
    heading, paragraph = page["blocks"]
    # top-left tenth of the upright page = the displayed page's top-right corner
    assert heading["bbox"] == pytest.approx([0.9 * width, 0, width, 0.1 * height], abs=1)
    # the upright page's bottom strip = the displayed page's left strip
    assert paragraph["bbox"] == pytest.approx([0, 0, 0.1 * width, height], abs=1)


@pytest.mark.parametrize("size", [(300, 400), (600, 800), (850, 1100)])
def test_the_suites_sample_pages_are_not_turned(size):
    """The test pages of tests/support/samples.py (identical lines in a frame, which line up
    in columns too), as drawn and stretched to a 1536-token render, either way round."""
    from tests.support import samples

    page = samples.page_image(1, size)
    for image in (page, page.resize((1088, 1408)), turn(page, 90).resize((1408, 1088))):
        assert detect(image).turn in (0, 270), detect(image)
    assert detect(page.resize((1088, 1408))).turn == 0


def test_a_pdf_page_shown_sideways_by_its_rotate_is_read_upright_with_boxes_on_the_displayed_page(tmp_path):
    """/Rotate 90 shows the (upright) sample page sideways: the renderer applies it, the
    detector turns the image back (270), and boxes land on the displayed, landscape page."""
    from tests.support import samples

    pdf = samples.write_rotated_pdf(tmp_path / "rotated.pdf", rotation=90)  # portrait 612x792 pt, shown landscape
    answer = '<p data-bbox="0 500 1000 1000">bottom half</p>'  # of the upright image the model saw
    with FakeOpenAIServer(reply=lambda body: answer) as server:
        proc = _scan(server, pdf, "--layout")
        seen = _received(server.chat_requests()[0]["body"])
    assert proc.returncode == 0, proc.stderr.decode()
    [page] = json.loads(proc.stdout)["pages"]
    assert seen.height > seen.width and page["rotation_fix"] == 270
    assert page["layout"] == {"width": 792.0, "height": 612.0, "unit": "pt", "rotation": 90, "coords": "relative"}
    # the upright page's bottom half is the displayed page's left half
    assert page["blocks"][0]["bbox"] == pytest.approx([0, 0, 396.0, 612.0])


def test_a_small_upright_page_is_not_turned(tmp_path):
    """At a tiny page budget body text is a few pixels tall and the line profiles mislead:
    a 192 x 288 render of an upright page scored its columns 1.4 times its rows. Small
    images need the strong axis margin (AXIS_RATIO_SMALL), so they stay as they are."""
    from qwenocr.pages.document import RenderSettings, open_document
    from tests.support import samples

    pdf = samples.write_pdf(tmp_path / "small.pdf", pages=4, size=(300, 400))
    with open_document(pdf, timeout=None) as document:
        for number in range(1, 5):
            page = document.render(number, RenderSettings(max_image_tokens=64))
            assert max(page.size) < 1000
            assert detect(page).turn == 0
