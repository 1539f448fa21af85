"""The OCRmyPDF plugin end to end: `ocrmypdf --plugin qwenocr.ocrmypdf_plugin` as a real
subprocess on a small scan, with the tiny GGUF (random text: structure, page count, sizes,
looks and text presence are checked, and that a rerun takes its pages from the
checkpoint), and with a fake OpenAI-compatible server answering layout HTML (each block's
text lands inside its box on the page).

Skipped only where OCRmyPDF is not installed (`pip install 'qwenocr[ocrmypdf]'`; OCRmyPDF
17 needs Python 3.11); in CI on 3.11+ that is a failure, since the test extra installs it.
With this plugin OCRmyPDF needs no Tesseract, and no Ghostscript either for
`--output-type pdf`, nor for its default PDF/A when its speculative conversion succeeds
(it does on these scans); where it would need Ghostscript and lacks it, the test says so."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import ImageChops, ImageStat

from tests.support import samples
from tests.support.openai_fake_server import FakeOpenAIServer

if importlib.util.find_spec("ocrmypdf") is None:
    _REASON = "OCRmyPDF is not installed (pip install 'qwenocr[ocrmypdf]'; OCRmyPDF 17 needs Python 3.11+)"
    if os.environ.get("CI") and sys.version_info >= (3, 11):  # scripts/test.sh installs it there
        pytest.fail(_REASON, pytrace=False)
    pytest.skip(_REASON, allow_module_level=True)

import pypdfium2 as pdfium  # noqa: E402 - after the skip: OCRmyPDF installs it too, but the check comes first

PLUGIN = "qwenocr.ocrmypdf_plugin"
SIZES = [(850, 1100), (1100, 700)]  # pixels at 100 dpi: 612x792 pt and 792x504 pt


def _ocrmypdf(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ocrmypdf", "--plugin", PLUGIN, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _scan(path: Path) -> Path:
    """A two-page image-only PDF (a scan), the pages of different sizes."""
    images = [samples.page_image(number, size) for number, size in enumerate(SIZES, start=1)]
    images[0].save(path, "PDF", resolution=100.0, save_all=True, append_images=images[1:])
    return path


def _tiny(models) -> list:
    return ["--qwenocr-model", models.dense_gguf, "--qwenocr-mmproj", models.dense_mmproj, "--qwenocr-max-tokens", 48]


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr


def _pages_text(path: Path) -> list:
    document = pdfium.PdfDocument(str(path))
    try:
        return [page.get_textpage().get_text_range() for page in document]
    finally:
        document.close()


def _sizes(path: Path) -> list:
    document = pdfium.PdfDocument(str(path))
    try:
        return [tuple(round(side, 1) for side in page.get_size()) for page in document]
    finally:
        document.close()


def _renders(path: Path) -> list:
    document = pdfium.PdfDocument(str(path))
    try:
        return [page.render(scale=50 / 72).to_pil().convert("L") for page in document]
    finally:
        document.close()


def test_the_plugin_makes_the_scan_searchable_and_resumes(tmp_path, tiny_models):
    scan = _scan(tmp_path / "scan.pdf")
    out = tmp_path / "out.pdf"
    log = _ok(_ocrmypdf(*_tiny(tiny_models), "--output-type", "pdf", "--jobs", "2", scan, out))
    assert "page 1: from the checkpoint" not in log
    assert _sizes(out) == _sizes(scan) == [(612.0, 792.0), (792.0, 504.0)]
    texts = _pages_text(out)
    assert len(texts) == 2 and all(text.strip() for text in texts), texts  # random words, but words
    for before, after in zip(_renders(scan), _renders(out), strict=True):  # the text is invisible
        assert before.size == after.size
        assert ImageStat.Stat(ImageChops.difference(before, after)).mean[0] < 1.0
    checkpoints = Path(os.environ["QWENOCR_CACHE_DIR"]) / "checkpoints"
    assert len(list(checkpoints.iterdir())) == 2  # one per page image

    # The same settings from qwenocr's config file instead of flags: the same checkpoints.
    config = tmp_path / "config.toml"
    config.write_text(
        f'[scan]\nmodel = "{tiny_models.dense_gguf}"\nmmproj = "{tiny_models.dense_mmproj}"\nmax_tokens = 48\n'
    )
    again = tmp_path / "again.pdf"
    log = _ok(_ocrmypdf("--output-type", "pdf", scan, again, env={"QWENOCR_CONFIG": str(config)}))
    assert "page 1: from the checkpoint" in log and "page 2: from the checkpoint" in log
    assert _pages_text(again) == texts

    # OCRmyPDF's default output (PDF/A) and its sandwich renderer (qwenocr's own text
    # layer, searchable/textlayer.py).
    pdfa = tmp_path / "pdfa.pdf"
    proc = _ocrmypdf(*_tiny(tiny_models), "--pdf-renderer", "sandwich", scan, pdfa)
    if proc.returncode != 0 and shutil.which("gs") is None and "ghostscript" in proc.stderr.lower():
        pytest.skip(f"OCRmyPDF wanted Ghostscript for PDF/A here, and it is not installed: {proc.stderr[-300:]}")
    _ok(proc)
    assert _sizes(pdfa) == _sizes(scan)
    assert all(text.strip() for text in _pages_text(pdfa))
    import pikepdf

    with pikepdf.open(pdfa) as pdf:
        assert pdf.open_metadata().pdfa_status.startswith("2")


# Relative boxes (0-1000) of the page image; the first page's answer for every page.
PAGE = (
    '<h1 data-bbox="100 80 900 140">Quarterly Report</h1>'
    '<p data-bbox="100 500 900 560">Revenue grew steadily</p>'
    '<table data-bbox="100 700 900 800"><tr><td>Tea</td><td>42</td></tr></table>'
)


@pytest.mark.parametrize("renderer", ["auto", "sandwich"])
def test_each_blocks_text_lands_in_its_box(tmp_path, renderer):
    """auto: OCRmyPDF's fpdf2 renderer on the plugin's OCR tree; sandwich: qwenocr's own
    text layer (searchable/textlayer.py) grafted by OCRmyPDF."""
    scan = _scan(tmp_path / "scan.pdf")
    out = tmp_path / "out.pdf"
    with FakeOpenAIServer(reply=lambda body: PAGE) as server:
        server_args = ["--qwenocr-backend", "openai", "--qwenocr-base-url", server.url, "--qwenocr-concurrency", "1"]
        _ok(_ocrmypdf(*server_args, "--pdf-renderer", renderer, "--output-type", "pdf", scan, out))
    document = pdfium.PdfDocument(str(out))
    try:
        for page in document:
            boxes = _Boxes(page)
            assert boxes.text(100, 80, 900, 140) == "Quarterly Report"
            assert boxes.text(100, 500, 900, 560) == "Revenue grew steadily"
            assert boxes.text(100, 700, 900, 800) == "Tea 42"
            assert "Revenue" not in boxes.text(0, 0, 1000, 400)
    finally:
        document.close()


class _Boxes:
    """A page's text inside a 0-1000 box (y down), a little enlarged, in PDF points (y up)."""

    PAD = 6.0

    def __init__(self, page):
        self.width, self.height = page.get_size()
        self.textpage = page.get_textpage()

    def text(self, x0, y0, x1, y1) -> str:
        w, h, pad = self.width / 1000, self.height / 1000, self.PAD
        found = self.textpage.get_text_bounded(
            x0 * w - pad, self.height - y1 * h - pad, x1 * w + pad, self.height - y0 * h + pad
        )
        return " ".join(found.split())


def test_bad_settings_are_one_line_before_any_page(tmp_path):
    scan = _scan(tmp_path / "scan.pdf")
    proc = _ocrmypdf("--qwenocr-max-tokens", "5", scan, tmp_path / "out.pdf")
    assert proc.returncode == 1  # OCRmyPDF's bad-arguments code
    assert "qwenocr: Invalid value for '--qwenocr-max-tokens'" in proc.stderr
    assert "Traceback" not in proc.stderr

    proc = _ocrmypdf(scan, tmp_path / "out.pdf", env={"QWENOCR_MAX_TOKENS": "many"})  # scan's variables apply
    assert proc.returncode == 1 and "qwenocr: QWENOCR_MAX_TOKENS='many' is not valid" in proc.stderr

    proc = _ocrmypdf("--qwenocr-model", tmp_path / "missing.gguf", scan, tmp_path / "out.pdf")
    assert proc.returncode == 1 and "missing.gguf: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out.pdf").exists()

    proc = _ocrmypdf("--ocr-engine", "tesseract", scan, tmp_path / "out.pdf")
    assert proc.returncode == 1 and "the qwenocr plugin replaces Tesseract" in proc.stderr


def test_rotate_pages_asks_qwenocrs_orientation_detector(tmp_path):
    """`--rotate-pages` calls the engine's get_orientation: qwenocr's detector, whose turn
    (clockwise, to upright) is what OCRmyPDF's angle means; sure, or no turn at all."""
    import importlib.util

    from qwenocr.ocrmypdf_plugin import QwenocrEngine

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_orientation.py"
    spec = importlib.util.spec_from_file_location("bench_orientation", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for needed in (0, 90, 180, 270):
        image = tmp_path / f"turned-{needed}.png"
        bench.scan_page(11, needed).save(image)
        found = QwenocrEngine.get_orientation(image, None)
        assert (found.angle, found.confidence) == ((needed, 15.0) if needed else (0, 0.0))
