"""Figures that are the PDF's own images (scan/figures.py, pages/pdf.py `embedded_images`),
end to end through the real CLI: a born-digital PDF written here (a text layer in
Helvetica and one image object of known pixel size, placed upright, flipped, turned a
quarter, or on a page with /Rotate 90) is scanned in layout mode, by a fake server
answering the figure's box (model pages) and from its text layer (--mode text). A box
that is the image's writes the image at its own pixels, oriented as a render of the page
shows it (`"figure_source": "embedded"`); a box that is not, or an image with text drawn
over it, is cropped from a render (`"crop"`)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import List, Tuple

import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageDraw

from qwenocr.layout.blocks import check_blocks
from tests.support import broken_inputs
from tests.support.clirun import run_cli
from tests.support.openai_fake_server import FakeOpenAIServer
from tests.support.samples import dark_quarter

IMAGE_SIZE = (317, 211)  # pixels: no render DPI gives this size
GREEN = (0, 200, 0)
# Where the image lies on the page (PDF space, points), by how it is placed.
MATRICES = {
    "upright": (200, 0, 0, 100, 100, 400),
    "flipped": (200, 0, 0, -100, 100, 500),  # upside down: its first row at the bottom
    "quarter": (0, -200, 100, 0, 100, 500),  # its rows run down the page
}
LINES = [f"Line {n} of the report, with enough words to make a real text layer here." for n in range(1, 16)]
CAPTION = "Figure 1: the green test image"


def _image() -> Image.Image:
    """Green, with a black mark filling most of its top-left quarter."""
    image = Image.new("RGB", IMAGE_SIZE, GREEN)
    ImageDraw.Draw(image).rectangle((0, 0, 140, 90), fill=(0, 0, 0))
    return image


def _pdf(path: Path, placement: str = "upright", rotate: int = 0, label_over: bool = False) -> Path:
    """A one-page Letter PDF: lines of text, the image, its caption under it."""
    a, b, c, d, e, f = MATRICES[placement]
    text = ["BT /F1 11 Tf 14 TL 72 740 Td"] + [f"({line}) '" for line in LINES] + ["ET"]
    text += [f"BT /F1 10 Tf 100 {min(f, f + b, f + d) - 14} Td ({CAPTION}) Tj ET"]
    if label_over:  # a label drawn on the image: the crop keeps it, the image alone would not
        text += ["BT /F1 9 Tf 150 440 Td (label) Tj ET"]
    content = "\n".join([f"q {a} {b} {c} {d} {e} {f} cm /Im1 Do Q", *text]).encode()
    pixels = zlib.compress(_image().tobytes())
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Rotate %d" % rotate
        + b" /Resources << /Font << /F1 4 0 R >> /XObject << /Im1 5 0 R >> >> /Contents 6 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        broken_inputs.stream(
            pixels,
            b"/Type /XObject /Subtype /Image /Width %d /Height %d" % IMAGE_SIZE
            + b" /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode",
        ),
        broken_inputs.stream(content),
    ]
    path.write_bytes(broken_inputs.build_pdf(objects, version=b"1.7"))
    return path


def _rendered(path: Path, scale: float = 2.0) -> Tuple[Image.Image, Tuple[float, float, float, float], Tuple[int, int]]:
    """The page as a viewer shows it (PDFium, /Rotate applied), the image's box on it in
    points (where its green and black pixels are), and the page's displayed size."""
    document = pdfium.PdfDocument(str(path))
    try:
        page = document[0]
        width, height = page.get_size()
        image = page.render(scale=scale).to_pil().convert("RGB")
    finally:
        document.close()
    green = image.getchannel("G").point(lambda v: 255 if v > 150 else 0)
    red_low = image.getchannel("R").point(lambda v: 255 if v < 80 else 0)
    mask = Image.composite(green, Image.new("L", image.size, 0), red_low)
    x0, y0, x1, y1 = mask.getbbox()
    return image, (x0 / scale, y0 / scale, x1 / scale, y1 / scale), (round(width), round(height))


def _relative(box, size) -> str:
    return " ".join(
        f"{v:.1f}"
        for v in (box[0] / size[0] * 1000, box[1] / size[1] * 1000, box[2] / size[0] * 1000, box[3] / size[1] * 1000)
    )


def _scan(*args):
    proc = run_cli("scan", *args, "--layout", "-f", "json")
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
    return proc


def _figure(out: Path) -> dict:
    [page] = json.loads(out.read_text(encoding="utf-8"))["pages"]
    assert check_blocks(page["blocks"]) is None
    [figure] = [block for block in page["blocks"] if block["type"] == "figure"]
    return figure


CASES: List[Tuple[str, int]] = [("upright", 0), ("flipped", 0), ("quarter", 0), ("upright", 90)]


@pytest.mark.parametrize("placement,rotate", CASES, ids=[f"{p}-rotate{r}" for p, r in CASES])
def test_a_model_figure_that_is_the_image_is_written_at_its_own_pixels(tmp_path, placement, rotate):
    pdf = _pdf(tmp_path / "doc.pdf", placement, rotate)
    page, box, size = _rendered(pdf)
    answer = f'<p data-bbox="100 50 900 300">Text</p><div class="image" data-bbox="{_relative(box, size)}"></div>'
    out = tmp_path / "out.json"
    with FakeOpenAIServer(reply=lambda body: answer) as server:
        args = ("--mode", "ocr", "--no-auto-rotate", "--backend", "openai", "--base-url", server.url)
        _scan(pdf, "-o", out, *args)
    figure = _figure(out)
    assert figure["file"] == "out_files/page-001-figure-1.png" and figure["figure_source"] == "embedded"
    with Image.open(tmp_path / "out_files" / "page-001-figure-1.png") as written:
        turned = (placement == "quarter") != (rotate == 90)
        assert written.size == (IMAGE_SIZE[::-1] if turned else IMAGE_SIZE)  # its own pixels, as laid on the page
        crop = page.crop(tuple(round(v * 2) for v in box))  # what a viewer shows there
        assert dark_quarter(written) == dark_quarter(crop)
        assert written.convert("RGB").getpixel((written.width * 3 // 4, written.height * 3 // 4)) == GREEN


@pytest.mark.parametrize("render_timeout", ["120", "0"], ids=["guarded", "in-process"])
def test_a_model_figure_box_that_is_not_the_image_is_cropped(tmp_path, render_timeout):
    pdf = _pdf(tmp_path / "doc.pdf")
    _, box, size = _rendered(pdf)
    x0, y0, x1, y1 = box
    matching = _relative(box, size)
    wider = _relative((x0 - 60, y0 - 40, x1 + 60, y1 + 40), size)  # the image and the page around it
    answer = f'<div class="image" data-bbox="{matching}"></div><div class="image" data-bbox="{wider}"></div>'
    out = tmp_path / "out.json"
    with FakeOpenAIServer(reply=lambda body: answer) as server:
        _scan(pdf, "-o", out, "--render-timeout", render_timeout, "--backend", "openai", "--base-url", server.url)
    [page] = json.loads(out.read_text(encoding="utf-8"))["pages"]
    one, two = [block for block in page["blocks"] if block["type"] == "figure"]
    assert (one["figure_source"], two["figure_source"]) == ("embedded", "crop")
    with Image.open(tmp_path / "out_files" / "page-001-figure-1.png") as embedded:
        assert embedded.size == IMAGE_SIZE
    with Image.open(tmp_path / "out_files" / "page-001-figure-2.png") as cropped:
        # the box at the figure's resolution (300 dpi for a 320-pt-wide box), white around the image
        assert cropped.width == pytest.approx(320 * 300 / 72, rel=0.01)
        assert cropped.width / cropped.height == pytest.approx(320 / 180, rel=0.02)
        assert cropped.convert("RGB").getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize("placement,rotate", [("upright", 0), ("flipped", 90)], ids=["upright", "flipped-rotate90"])
def test_a_text_layer_figure_is_its_image_linked_before_its_caption(tmp_path, placement, rotate):
    pdf = _pdf(tmp_path / "doc.pdf", placement, rotate)
    page, box, _ = _rendered(pdf)
    out = tmp_path / "out.json"
    _scan(pdf, "-o", out, "--mode", "text")
    document = json.loads(out.read_text(encoding="utf-8"))
    [record] = document["pages"]
    assert record["source"] == "text-layer"
    figure = _figure(out)
    assert figure["file"] == "out_files/page-001-figure-1.png" and figure["figure_source"] == "embedded"
    assert figure["bbox"] == pytest.approx(list(box), abs=1)
    with Image.open(tmp_path / "out_files" / "page-001-figure-1.png") as written:
        assert written.size == (IMAGE_SIZE[::-1] if rotate == 90 else IMAGE_SIZE)
        assert dark_quarter(written) == dark_quarter(page.crop(tuple(round(v * 2) for v in box)))
    link = "![Figure 1, page 1](out_files/page-001-figure-1.png)"
    if rotate:  # the text runs down the displayed page: its reading order is another matter
        assert link in record["text"]
        return
    assert f"{link}\n\n{CAPTION}" in record["text"]

    markdown = tmp_path / "out.md"
    with FakeOpenAIServer(reply=lambda body: "not asked") as server:  # auto: the text layer serves the page
        proc = run_cli(
            "scan", pdf, "--layout", "--mode", "auto", "-o", markdown, "--backend", "openai", "--base-url", server.url
        )
        assert proc.returncode == 0, proc.stderr.decode()
        assert server.chat_requests() == []
    assert f"![Figure 1, page 1](out_files/page-001-figure-1.png)\n\n{CAPTION}" in markdown.read_text(encoding="utf-8")


def test_a_text_layer_image_with_text_over_it_is_cropped(tmp_path):
    pdf = _pdf(tmp_path / "doc.pdf", label_over=True)
    out = tmp_path / "out.json"
    _scan(pdf, "-o", out, "--mode", "text")
    figure = _figure(out)
    assert figure["figure_source"] == "crop"
    with Image.open(tmp_path / "out_files" / "page-001-figure-1.png") as cropped:
        assert cropped.width == pytest.approx(200 * 300 / 72, rel=0.01)  # 300 dpi, not the image's pixels
        assert cropped.width / cropped.height == pytest.approx(2.0, rel=0.02)


def test_without_a_figure_target_nothing_is_written_for_a_text_layer_page(tmp_path):
    pdf = _pdf(tmp_path / "doc.pdf")
    proc = _scan(pdf, "--mode", "text")
    [page] = json.loads(proc.stdout)["pages"]
    assert [block.get("file") for block in page["blocks"] if block["type"] == "figure"] == [None]
    assert "<!-- figure -->" in page["text"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.pdf"]


def test_a_failed_decode_falls_back_to_the_crop(tmp_path):
    """The embedded images cannot be read (a child that timed out or crashed says so with
    an InputError): the figure is cropped from a render all the same."""
    from qwenocr.errors import InputError
    from qwenocr.pages.pdf import PdfDocument
    from qwenocr.pages.sizing import RenderSettings
    from qwenocr.scan.figures import FigureTarget, add_figures

    class Failing(PdfDocument):
        def embedded_images(self, number, boxes, max_pixels):
            raise InputError("doc.pdf: page 1 took longer than 1 s to decode its images and was skipped")

    pdf = _pdf(tmp_path / "doc.pdf")
    _, box, _ = _rendered(pdf)
    notices: List[str] = []
    for document, name in ((PdfDocument(pdf, "doc.pdf"), "ok"), (Failing(pdf, "doc.pdf"), "failing")):
        blocks = [{"type": "figure", "bbox": list(box), "text": ""}]
        layout = {"width": 612.0, "height": 792.0, "unit": "pt"}
        target = FigureTarget(tmp_path / name)
        with document:
            add_figures(document, 1, blocks, layout, None, RenderSettings(timeout=None), target, notices.append)
        with Image.open(tmp_path / name / "page-001-figure-1.png") as written:
            size = written.size
        if name == "ok":
            assert blocks[0]["figure_source"] == "embedded" and size == IMAGE_SIZE
        else:
            assert blocks[0]["figure_source"] == "crop" and size[0] == pytest.approx(200 * 300 / 72, rel=0.01)
    assert notices == []  # the crop stood in: nothing lost, nothing to tell
