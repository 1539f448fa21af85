"""`qwenocr scan --format pdf`: the input back as a searchable PDF, through the real CLI.

A fake OpenAI-compatible server answers with layout HTML (boxes 0-1000); the output must
have the input's pages, sizes and pixels, and PDFium must find each block's text on its
page inside its box, as the same Unicode (CJK, Arabic, beyond the BMP). Images become
pages at their own resolution; text-layer pages stay as they were; a failed page is
filled in by a rerun; the real llama.cpp engine runs it on the tiny checkpoint.
"""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess

import pikepdf
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageFont

from qwenocr.errors import ExitCode
from qwenocr.searchable.glyphless import CharacterCodes, truetype_program
from qwenocr.searchable.lines import layout_lines, plain_text, visual_order
from qwenocr.searchable.textlayer import apply, compose, display_to_user, text_only_pdf, upright_to_display
from tests.support import broken_inputs, samples
from tests.support.clirun import QWENOCR, run_cli
from tests.support.openai_fake_server import FakeOpenAIServer

PAGE = """<html><body>
<h1 data-bbox="100 60 900 100">Annual report 2026</h1>
<p data-bbox="100 120 900 260">Revenue grew by twelve percent while costs stayed flat, and the board proposes
a dividend of three euros per share to be paid in the spring.</p>
<p data-bbox="100 300 900 340">中文测试：光学字符识别</p>
<p data-bbox="100 360 900 400">مرحبا بالعالم 2026</p>
<p data-bbox="100 420 900 460">math 𝑥² + ∑ α ≤ β</p>
<table data-bbox="100 500 900 700"><tr><th>Item</th><th>Amount</th></tr><tr><td>Tea</td><td>3</td></tr></table>
<div class="image" data-bbox="100 720 500 900"><img/></div>
</body></html>"""
EXPECTED = [
    "Annual report 2026",
    "中文测试：光学字符识别",
    "مرحبا بالعالم 2026",
    "math 𝑥² + ∑ α ≤ β",
    "Item Amount",
    "Tea 3",
]


def _scan(server, *args):
    return run_cli("scan", *args, "--backend", "openai", "--base-url", server.url, "--concurrency", "1")


def _ok(proc):
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr


def _renders(path_or_bytes, scale=1.0):
    document = pdfium.PdfDocument(path_or_bytes)
    return [document[i].render(scale=scale).to_pil().tobytes() for i in range(len(document))]


def _sizes(path_or_bytes):
    document = pdfium.PdfDocument(path_or_bytes)
    return [tuple(round(v, 2) for v in document[i].get_size()) for i in range(len(document))]


def _text_in(page, box, height):
    """PDFium's text inside a box given top-left, y down (an unrotated page of `height`)."""
    x0, y0, x1, y1 = box
    text = page.get_textpage().get_text_bounded(x0 - 0.5, height - y1 - 0.5, x1 + 0.5, height - y0 + 0.5)
    return " ".join(text.split())


def _squash(text):
    return " ".join(text.split())


def test_a_scan_comes_back_looking_the_same_with_its_text_in_its_boxes(tmp_path):
    pdf = samples.write_pdf(tmp_path / "scan.pdf", pages=2)  # image-only pages, 612x792 pt
    out = tmp_path / "scan.searchable.pdf"
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        _ok(_scan(server, pdf, "-f", "pdf", "-o", out))
        document = json.loads(_scan(server, pdf, "-f", "json", "--layout", "--no-resume").stdout)
        assert "data-bbox" in json.dumps(server.chat_requests()[0]["body"])  # --format pdf turned layout on
    assert not (tmp_path / "scan.searchable_files").exists()  # figures stay in the PDF
    assert _sizes(out) == _sizes(pdf) == [(612.0, 792.0)] * 2
    assert _renders(out, 2) == _renders(pdf, 2)  # not one pixel changed
    result = pdfium.PdfDocument(out)
    for number, page_record in enumerate(document["pages"]):
        page = result[number]
        everything = page.get_textpage().get_text_range()
        for expected in EXPECTED:
            assert expected in everything.replace("\r\n", " ")
        for block in page_record["blocks"]:
            if block["type"] in ("heading", "paragraph"):
                assert _text_in(page, block["bbox"], 792) == _squash(block["text"]), block
        table = next(b for b in page_record["blocks"] if b["type"] == "table")
        assert _text_in(page, table["bbox"], 792) == "Item Amount Tea 3"
        # nothing outside the blocks: the empty top band holds no text
        assert _text_in(page, (0, 0, 612, 30), 792) == ""


def test_the_original_page_content_is_kept_byte_for_byte(tmp_path):
    pdf = samples.write_pdf(tmp_path / "scan.pdf", pages=1)
    out = tmp_path / "out.pdf"
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        _ok(_scan(server, pdf, "-f", "pdf", "-o", out))
    with pikepdf.open(pdf) as before, pikepdf.open(out) as after:
        old = before.pages[0].obj.Contents
        old_streams = [old.read_raw_bytes()] if isinstance(old, pikepdf.Stream) else [s.read_raw_bytes() for s in old]
        new_streams = [s.read_raw_bytes() for s in after.pages[0].obj.Contents]
        assert new_streams[1:-1] == old_streams  # wrapped in q ... Q, then the text
        ours = after.pages[0].obj.Contents[-1].read_bytes()
        assert new_streams[0].strip() == b"q" and ours.lstrip().startswith(b"Q")
        assert b"3 Tr" in ours  # invisible


def test_a_rotated_page_gets_its_text_where_it_is_shown(tmp_path):
    pdf = samples.write_rotated_pdf(tmp_path / "rotated.pdf", rotation=90)  # 612x792, shown 792x612
    out = tmp_path / "out.pdf"
    box = '<p data-bbox="0 500 1000 1000">bottom half of the shown page</p>'
    with FakeOpenAIServer(reply=lambda body: box) as server:
        _ok(_scan(server, pdf, "-f", "pdf", "-o", out, "--no-auto-rotate"))
    assert _renders(out) == _renders(pdf)
    page = pdfium.PdfDocument(out)[0]
    text = page.get_textpage()
    # The shown page's bottom half (y 306-612 of 612, x 0-792) is user space x 306-612 on a
    # /Rotate 90 page (its displayed top-left is the media box's bottom-left).
    assert _squash(text.get_text_bounded(300, 0, 612, 792)) == "bottom half of the shown page"
    assert _squash(text.get_text_bounded(0, 0, 300, 792)) == ""
    # and the line runs along the shown page's width: up the unrotated page
    first, next_ = text.get_charbox(0), text.get_charbox(5)  # "b" and "h" of one line
    assert next_[1] > first[3] and abs(next_[0] - first[0]) < 1


def test_an_image_becomes_a_page_at_its_own_resolution(tmp_path):
    png = tmp_path / "page.png"
    samples.page_image(1, size=(1000, 1400)).save(png, dpi=(200, 200))
    jpeg = tmp_path / "photo.jpg"
    samples.page_image(2, size=(900, 600)).convert("RGB").save(jpeg, quality=90)  # no DPI: 300 assumed
    with FakeOpenAIServer(reply=lambda body: '<p data-bbox="0 0 1000 200">top of the image</p>') as server:
        _ok(_scan(server, png, "-f", "pdf", "-o", tmp_path / "png.pdf"))
        _ok(_scan(server, jpeg, "-f", "pdf", "-o", tmp_path / "jpg.pdf"))
    assert _sizes(tmp_path / "png.pdf") == [(360.0, 504.0)]  # 1000 x 1400 px at 200 dpi
    assert _sizes(tmp_path / "jpg.pdf") == [(216.0, 144.0)]
    page = pdfium.PdfDocument(tmp_path / "png.pdf")[0]
    assert _text_in(page, (0, 0, 360, 504 * 0.2), 504) == "top of the image"
    [image] = page.get_objects(filter=(pdfium.raw.FPDF_PAGEOBJ_IMAGE,))
    assert image.get_px_size() == (1000, 1400)
    assert image.get_bitmap().to_pil().convert("RGB").tobytes() == Image.open(png).convert("RGB").tobytes()  # lossless
    with pikepdf.open(tmp_path / "jpg.pdf") as out:  # the JPEG's own bytes, not recompressed
        [xobject] = out.pages[0].obj.Resources.XObject.values()
        assert xobject.read_raw_bytes() == jpeg.read_bytes()


def test_a_multi_frame_tiff_gives_one_page_per_frame(tmp_path):
    tiff = samples.write_tiff(tmp_path / "pages.tif", frames=3)
    with FakeOpenAIServer(reply=lambda body: "<p data-bbox='0 0 1000 100'>frame text</p>") as server:
        _ok(_scan(server, tiff, "-f", "pdf", "-o", tmp_path / "out.pdf"))
    document = pdfium.PdfDocument(tmp_path / "out.pdf")
    assert len(document) == 3
    assert all("frame text" in document[i].get_textpage().get_text_range() for i in range(3))


def test_without_layout_the_page_text_covers_the_page(tmp_path):
    pdf = samples.write_pdf(tmp_path / "scan.pdf", pages=1)
    answer = "# Heading\n\nA paragraph with **bold** words.\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    with FakeOpenAIServer(reply=lambda body: answer) as server:
        _ok(_scan(server, pdf, "-f", "pdf", "--no-layout", "-o", tmp_path / "out.pdf"))
        assert "data-bbox" not in json.dumps(server.chat_requests()[0]["body"])
    text = _squash(pdfium.PdfDocument(tmp_path / "out.pdf")[0].get_textpage().get_text_range())
    assert text == "Heading A paragraph with bold words. a b 1 2"
    # from the top, at the size of body text (not stretched over the page)
    page = pdfium.PdfDocument(tmp_path / "out.pdf")[0].get_textpage()
    assert _squash(page.get_text_bounded(0, 792 - 150, 612, 792)) == text


def test_text_layer_pages_are_left_as_they_are(tmp_path):
    pdf = tmp_path / "digital.pdf"
    pdf.write_bytes(broken_inputs.text_pdf(pages=1))
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        _ok(_scan(server, pdf, "-f", "pdf", "--mode", "auto", "-o", tmp_path / "out.pdf"))
        assert server.chat_requests() == []  # the text layer was good: no model call
    with pikepdf.open(pdf) as before, pikepdf.open(tmp_path / "out.pdf") as after:
        assert before.pages[0].obj.Contents.read_bytes() == after.pages[0].obj.Contents.read_bytes()
        assert "/QwenOCR1" not in str(after.pages[0].obj.Resources.get("/Font", {}).keys())


def test_a_failed_page_is_filled_in_by_the_rerun(tmp_path):
    pdf = samples.write_pdf(tmp_path / "scan.pdf", pages=2)
    out = tmp_path / "out.pdf"
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        server.plan = ["ok"] + [400] * 20
        first = _scan(server, pdf, "-f", "pdf", "-o", out)
    assert first.returncode == ExitCode.PARTIAL, first.stderr.decode()  # the PDF is written all the same
    document = pdfium.PdfDocument(out)
    assert "Annual report" in document[0].get_textpage().get_text_range()
    assert document[1].get_textpage().get_text_range() == ""
    document.close()
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        _ok(_scan(server, pdf, "-f", "pdf", "-o", out))
        assert len(server.chat_requests()) == 1  # page 1 came from the checkpoint
    document = pdfium.PdfDocument(out)
    assert all("Annual report" in document[i].get_textpage().get_text_range() for i in range(2))


def test_an_encrypted_pdf_stays_encrypted(tmp_path):
    plain = samples.write_pdf(tmp_path / "plain.pdf", pages=1)
    locked = tmp_path / "locked.pdf"
    with pikepdf.open(plain) as pdf:
        pdf.save(locked, encryption=pikepdf.Encryption(user="secret", owner="owner"))
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        _ok(_scan(server, locked, "-f", "pdf", "-o", tmp_path / "out.pdf", "--password", "secret"))
    with pytest.raises(pdfium.PdfiumError):
        pdfium.PdfDocument(tmp_path / "out.pdf")
    document = pdfium.PdfDocument(tmp_path / "out.pdf", password="secret")
    assert "Annual report" in document[0].get_textpage().get_text_range()


def test_pdf_goes_to_a_pipe_but_not_to_a_terminal_or_several_at_once(tmp_path):
    pdf = samples.write_pdf(tmp_path / "scan.pdf", pages=1)
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        piped = _scan(server, pdf, "-f", "pdf")
        _ok(piped)
        assert piped.stdout.startswith(b"%PDF-") and len(pdfium.PdfDocument(piped.stdout)) == 1
        several = _scan(server, pdf, pdf, "-f", "pdf")
        assert several.returncode == 2 and b"-o DIR" in several.stderr
        assert len(several.stderr.decode().strip().splitlines()) <= 2
        # stdout a terminal: refused before any page is read
        controller, terminal = pty.openpty()
        proc = subprocess.run(
            [*QWENOCR, "scan", str(pdf), "-f", "pdf", "--backend", "openai", "--base-url", server.url],
            stdout=terminal,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        os.close(terminal)
        os.close(controller)
        assert proc.returncode == 2 and b"binary" in proc.stderr
        assert len(server.chat_requests()) == 1  # only the piped run read a page


def test_several_inputs_to_a_directory_each_get_a_pdf(tmp_path):
    one = samples.write_pdf(tmp_path / "one.pdf", pages=1)
    two = tmp_path / "two.png"
    samples.page_image(1).save(two)
    out = tmp_path / "out"
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        _ok(_scan(server, one, two, "-f", "pdf", "-o", out))
    assert sorted(p.name for p in out.iterdir()) == ["one.pdf", "two.pdf"]


@pytest.mark.engine
def test_the_real_engine_writes_a_searchable_pdf(tiny_models, tmp_path):
    pdf = samples.write_pdf(tmp_path / "scan.pdf", pages=2, size=(600, 800))
    out = tmp_path / "out.pdf"
    proc = run_cli(
        "scan", pdf, "-f", "pdf", "-o", out, "--max-tokens", "24", "--max-image-tokens", "128",
        "--model", tiny_models.dense_gguf, "--mmproj", tiny_models.dense_mmproj, timeout=300,
    )  # fmt: skip
    _ok(proc)
    assert _sizes(out) == _sizes(pdf) and _renders(out) == _renders(pdf)
    document = pdfium.PdfDocument(out)
    assert all(document[i].get_textpage().get_text_range().strip() for i in range(2))  # random, but there


# --- the parts -------------------------------------------------------------------------


def test_the_glyphless_font_is_a_font_freetype_loads():
    font = ImageFont.truetype(io.BytesIO(truetype_program()), 100)
    assert font.getname() == ("GlyphLessFont", "Regular")
    assert font.getlength("abc") == 150  # every glyph half an em


def test_the_text_draws_nothing_even_when_filled_and_single_characters_are_found():
    data = text_only_pdf(300, 200, [{"type": "paragraph", "bbox": [10, 10, 290, 190], "text": "A\nBIG\n1"}], "")
    with pikepdf.open(io.BytesIO(data)) as pdf:  # render mode 3 (invisible) -> 0 (fill)
        stream = pdf.pages[0].obj.Contents  # one stream, the font as /F1: what OCRmyPDF's graft takes
        assert "/F1" in pdf.pages[0].obj.Resources.Font
        stream.write(stream.read_bytes().replace(b"3 Tr", b"0 Tr"))
        filled = io.BytesIO()
        pdf.save(filled)
    page = pdfium.PdfDocument(filled.getvalue())[0]
    assert page.render(scale=2).to_pil().convert("L").getextrema() == (255, 255)  # no area: no ink
    assert page.get_textpage().get_text_range().split() == ["A", "BIG", "1"]  # PDFium keeps one-letter words


def test_character_codes_map_back_to_any_unicode():
    codes = CharacterCodes()
    encoded = codes.encode("a𝑥a中")
    assert encoded == bytes.fromhex("0001000200010003")
    cmap = codes.to_unicode().decode()
    assert "<0002> <D835DC65>" in cmap and "<0003> <4E2D>" in cmap
    assert codes.cid_to_gid_map() == b"\0\0" + b"\0\x01" * 3


@pytest.mark.parametrize(
    "text",
    ["مرحبا بالعالم", "مرحبا 123 world بالعالم", "שלום עולם 2026.", "(قال) «نعم» 3.5%", "plain (latin) text"],
)
def test_right_to_left_lines_extract_in_reading_order(text):
    data = text_only_pdf(400, 100, [{"type": "paragraph", "bbox": [10, 10, 390, 40], "text": text}], "")
    assert pdfium.PdfDocument(data)[0].get_textpage().get_text_range() == text
    assert visual_order(visual_order(text)) == text  # the rule is its own inverse


def test_lines_share_the_box_and_wrap_by_its_shape():
    words = "word " * 60
    tall = layout_lines([words.strip()], (0, 0, 300, 150))
    wide = layout_lines([words.strip()], (0, 0, 900, 30))
    assert len(tall) > len(wide) >= 1
    assert " ".join(line.text for line in tall) == words.strip()
    assert tall[0].box[1] == 0 and tall[-1].box[3] == pytest.approx(150)
    assert all(line.box[2] <= 300 + 1e-9 for line in tall)


def test_plain_text_drops_markdown_marks():
    assert plain_text("## Title\n\n**bold** and *it*\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n![x](y.png)") == (
        "Title\nbold and it\na b\n1 2\nx"
    )


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
@pytest.mark.parametrize("turned", [0, 90, 180, 270])
def test_frames_compose_to_the_right_corner(rotation, turned):
    """An upright frame's top-left corner, through the turn and the page's /Rotate, lands
    where the displayed page shows it; and text runs along the upright frame's x axis."""
    crop = (10.0, 20.0, 622.0, 812.0)  # 612 x 792, offset
    shown = (612.0, 792.0) if rotation in (0, 180) else (792.0, 612.0)
    upright = shown if turned in (0, 180) else shown[::-1]
    to_display = upright_to_display(turned, upright)
    # the turned frame covers the shown page exactly
    corners = {apply(to_display, x, y) for x in (0, upright[0]) for y in (0, upright[1])}
    assert corners == {(0, 0), (shown[0], 0), (0, shown[1]), (shown[0], shown[1])}
    to_user = compose(display_to_user(crop, rotation), to_display)
    user_corners = {tuple(round(v, 6) for v in apply(to_user, x, y)) for x in (0, upright[0]) for y in (0, upright[1])}
    assert user_corners == {(10, 20), (622, 20), (10, 812), (622, 812)}
