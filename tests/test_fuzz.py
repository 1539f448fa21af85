"""Fuzz: over two thousand mutated PDFs and images through qwenocr; no traceback, no hang, no crash.

The mutants come from real seeds built in code, with a fixed random seed:

- PDFs: hand-written text pages (Helvetica), a Pillow-made image PDF, the text PDF
  rewritten with object and cross-reference streams and RC4-encrypted (both by pikepdf),
  a four-page PDF with text layers of every kind (born-digital, scan, stamp, glyph soup),
  and pages in an embedded TrueType font (FreeType parses the font program in PDFium);
- images: PNG (RGB and palette), JPEG (baseline and progressive), TIFF with several
  frames (LZW and Deflate), GIF with two frames, BMP, and WebP (still and animated)
  where Pillow supports it.

Byte flips, truncations, duplicated, deleted or overwritten chunks, damaged header
fields, and for PDFs damaged keywords and numbers, one to three at a time. Four passes:

1. The page layer in process, in a child Python process (a PDFium crash must not take
   pytest with it): every mutant opened with `timeout=None`, every page rendered and
   every PDF page's text layer read; nothing but qwenocr's own one-line errors.
2. The CLI on all of them in one run with `--mode text`: the text-layer path, in the
   guarded child process.
3. The CLI on all of them in one run with `--mode ocr`, every page rendered (guarded)
   and sent to the fake OpenAI-compatible server (instant, four documents in flight).
   In both runs a control file of each seed completes, each mutant either gets an output
   with valid JSON or exactly one error line, and the exit code is 0 or 10.
4. The tiny GGUF on a sample: one run over many mutants (`--pages 1`), and a few one
   by one; the exit code is a documented one, never 1 (a bug) and never a signal.

One CLI run handles all the inputs (`qwenocr scan a.pdf b.png ... -o DIR`), so the whole
file takes about 80 s on a 2-core machine (2,541 files).
"""

from __future__ import annotations

import io
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwenocr.errors import ExitCode
from tests.support import broken_inputs, samples
from tests.support import textlayer_pdfs as pdfs

QWENOCR = [sys.executable, "-m", "qwenocr"]
SEED = 20260422
PDF_MUTANTS = 260  # per PDF seed
IMAGE_MUTANTS = 100  # per image seed
IN_ONE_RUN = 40  # pass 4: mutants read by the tiny GGUF in one run
ONE_BY_ONE = 6  # pass 4: and one by one
DOCUMENTED = {int(code) for code in ExitCode}
FAST = ["--max-tokens", "16", "--max-image-tokens", "64", "--render-timeout", "10", "--no-resume"]  # pass 4
KEYWORDS = [
    b"obj",
    b"endobj",
    b"stream",
    b"endstream",
    b"xref",
    b"trailer",
    b"startxref",
    b"/Length",
    b"/Root",
    b"/Pages",
    b"/Kids",
    b"/Count",
    b"/MediaBox",
    b"/Contents",
    b"/Filter",
    b"/Type",
    b"/Page",
    b" R",
    b"/Resources",
    b"/Font",
    b"/XObject",
    b"/Size",
    b"/Prev",
    b"/W",
    b"/Index",
    b"BT",
    b"ET",
    b"Tf",
    b"<<",
    b">>",
]
NUMBERS = [b"0", b"-1", b"1", b"2147483647", b"4294967296", b"99999999999999999999", b"1e308", b"-0", b"3.4", b"65535"]


# -- mutations -----------------------------------------------------------------------


def _flip(data: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 16)):
        i = rng.randrange(len(data))
        data[i] ^= rng.randint(1, 255)


def _truncate(data: bytearray, rng: random.Random) -> None:
    del data[rng.randrange(1, len(data)) :]


def _chunk(data: bytearray, rng: random.Random) -> tuple:
    start = rng.randrange(len(data))
    return start, min(len(data), start + rng.randint(1, 512))


def _duplicate(data: bytearray, rng: random.Random) -> None:
    start, end = _chunk(data, rng)
    at = rng.randrange(len(data))
    data[at:at] = data[start:end]


def _delete(data: bytearray, rng: random.Random) -> None:
    start, end = _chunk(data, rng)
    if end - start < len(data):
        del data[start:end]


def _overwrite(data: bytearray, rng: random.Random) -> None:
    start, end = _chunk(data, rng)
    data[start:end] = bytes(rng.randrange(256) for _ in range(end - start))


def _keyword(data: bytearray, rng: random.Random) -> None:
    word = rng.choice(KEYWORDS)
    places = [m.start() for m in re.finditer(re.escape(word), bytes(data))]
    if places:
        at = rng.choice(places)
        data[at : at + len(word)] = rng.choice([rng.choice(KEYWORDS), b"", word[::-1], word * 2])


def _number(data: bytearray, rng: random.Random) -> None:
    places = [(m.start(), m.end()) for m in re.finditer(rb"\d+", bytes(data))]
    if places:
        start, end = rng.choice(places)
        data[start:end] = rng.choice(NUMBERS)


def _header_field(data: bytearray, rng: random.Random) -> None:
    """A size, count or offset in the first bytes (an image's header) made extreme."""
    at = rng.randrange(min(len(data), 256))
    width = rng.choice([1, 2, 4])
    data[at : at + width] = bytes([rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF])]) * width


BYTE_MUTATIONS = [_flip, _truncate, _duplicate, _delete, _overwrite, _header_field]
PDF_MUTATIONS = [*BYTE_MUTATIONS, _keyword, _number]


def mutate(base: bytes, rng: random.Random, mutations=PDF_MUTATIONS) -> bytes:
    data = bytearray(base)
    for _ in range(rng.randint(1, 3)):
        if len(data) < 2:
            break
        rng.choice(mutations)(data, rng)
    return bytes(data)


# -- the seeds -----------------------------------------------------------------------


def _image_pdf() -> bytes:
    buffer = io.BytesIO()
    images = [samples.page_image(n, (240, 310)) for n in (1, 2)]
    images[0].save(buffer, "PDF", resolution=40.0, save_all=True, append_images=images[1:])
    return buffer.getvalue()


def _encrypted_pdf() -> bytes:
    """The one-page text PDF with RC4 encryption and an owner password only: it opens
    without a password, and mutants exercise PDFium's decryption (or ask for one)."""
    pikepdf = pytest.importorskip("pikepdf", reason="pikepdf (the test extra) encrypts the base PDF")
    out = io.BytesIO()
    with pikepdf.open(io.BytesIO(broken_inputs.text_pdf(1))) as pdf:
        pdf.save(out, encryption=pikepdf.Encryption(user="", owner="owner", R=3, aes=False, metadata=False))
    return out.getvalue()


def _object_stream_pdf() -> bytes:
    """The text PDF rewritten with object streams and an xref stream (PDF 1.5)."""
    pikepdf = pytest.importorskip("pikepdf", reason="pikepdf (the test extra) writes the compressed base PDF")
    out = io.BytesIO()
    with pikepdf.open(io.BytesIO(broken_inputs.text_pdf(2))) as pdf:
        pdf.save(out, object_stream_mode=pikepdf.ObjectStreamMode.generate, compress_streams=True)
    return out.getvalue()


def pdf_seeds() -> dict:
    seeds = {
        "text": broken_inputs.text_pdf(2),
        "image": _image_pdf(),
        "layers": pdfs.mixed_pdf(),
        "font": pdfs.embedded_font_pdf(2),
    }
    for name, build in (("objstm", _object_stream_pdf), ("encrypted", _encrypted_pdf)):
        try:
            seeds[name] = build()
        except pytest.skip.Exception:
            pass
    return seeds


def _save(frames: list, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    if len(frames) > 1:
        options.update(save_all=True, append_images=frames[1:])
    frames[0].save(buffer, fmt, **options)
    return buffer.getvalue()


def image_seeds() -> dict:
    """{name: (suffix, bytes)}; small pages, so that a pass stays quick."""
    from PIL import features

    page = [samples.page_image(n, (200, 260)) for n in (1, 2, 3)]
    seeds = {
        "png": (".png", _save(page[:1], "PNG")),
        "png-palette": (".png", _save([page[0].convert("P", palette=1, colors=16)], "PNG")),
        "jpeg": (".jpg", _save(page[:1], "JPEG", quality=70)),
        "jpeg-progressive": (".jpg", _save(page[:1], "JPEG", quality=60, progressive=True)),
        "tiff-lzw": (".tif", _save(page, "TIFF", compression="tiff_lzw")),
        "tiff-deflate": (".tif", _save(page[:2], "TIFF", compression="tiff_adobe_deflate")),
        "gif": (".gif", _save([p.convert("P") for p in page[:2]], "GIF")),
        "bmp": (".bmp", _save(page[:1], "BMP")),
    }
    if features.check("webp"):
        seeds["webp"] = (".webp", _save(page[:1], "WEBP", quality=60))
        seeds["webp-animated"] = (".webp", _save(page[:2], "WEBP", quality=60))
    return seeds


@pytest.fixture(scope="module")
def mutants(tmp_path_factory):
    """(root, controls, made): the unmutated seeds and {path: seed name} of the mutants,
    all in one directory."""
    root = tmp_path_factory.mktemp("fuzz")
    rng = random.Random(SEED)
    bases = {name: (".pdf", data, PDF_MUTATIONS, PDF_MUTANTS) for name, data in pdf_seeds().items()}
    for name, (suffix, data) in image_seeds().items():
        bases[name] = (suffix, data, BYTE_MUTATIONS, IMAGE_MUTANTS)
    made = {}
    controls = []
    seen = {data for _, data, _, _ in bases.values()}
    for name, (suffix, base, mutations, count) in bases.items():
        control = root / f"{name}-control{suffix}"
        control.write_bytes(base)
        controls.append(control)
        for i in range(count):
            data = mutate(base, rng, mutations)
            if data in seen:  # a mutation that changed nothing: not a new case
                continue
            seen.add(data)
            path = root / f"{name}-{i:03d}{suffix}"
            path.write_bytes(data)
            made[path] = name
    assert len(made) >= 2000, len(made)
    return root, controls, made


# -- 1. the page layer, in process ---------------------------------------------------

_PAGE_LAYER = r"""
import json, sys
from qwenocr.errors import QwenOCRError
from qwenocr.pages.document import RenderSettings, open_document
outcomes = {}
for path in sys.argv[1:]:
    try:
        with open_document(path, timeout=None) as document:
            pages = []
            for number in range(1, document.page_count + 1):
                try:
                    page = list(document.render(number, RenderSettings(max_image_tokens=64)).size)
                    if document.kind == "pdf":
                        document.text_layer(number).assess()
                    pages.append(page)
                except QwenOCRError as error:
                    pages.append([type(error).__name__, error.one_line()])
            outcomes[path] = ["ok", document.page_count, pages]
    except QwenOCRError as error:
        line = error.one_line()
        outcomes[path] = ["error", type(error).__name__, line]
    except Exception as error:
        outcomes[path] = ["escaped", type(error).__name__, str(error)]
print(json.dumps(outcomes))
"""


def test_page_layer_lets_only_one_line_errors_out(mutants):
    root, controls, made = mutants
    paths = [str(p) for p in [*controls, *made]]
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _PAGE_LAYER, *paths], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    outcomes = json.loads(proc.stdout)
    for control in controls:
        assert outcomes[str(control)][0] == "ok", outcomes[str(control)]
    escaped = {p: o for p, o in outcomes.items() if o[0] == "escaped"}
    assert not escaped, escaped
    for path, outcome in outcomes.items():
        if outcome[0] == "error":
            assert outcome[1] in ("InputError", "EncryptedError")
            assert "\n" not in outcome[2] and Path(path).name in outcome[2]
        else:
            assert outcome[1] == len(outcome[2]) >= 1
            for page in outcome[2]:
                if isinstance(page[0], str):  # a page that failed: one line, our own error
                    assert page[0] == "InputError" and "\n" not in page[1], page
                else:
                    width, height = page
                    assert width % 32 == 0 and height % 32 == 0 and (width // 32) * (height // 32) <= 64
    # The corpus must exercise both sides, or it tests nothing.
    kinds = [o[0] for o in outcomes.values()]
    assert kinds.count("ok") > 100 and kinds.count("error") > 100, {k: kinds.count(k) for k in set(kinds)}
    print(f"\n{len(paths)} files in process in {time.monotonic() - started:.1f} s: {kinds.count('ok')} opened")


# -- 2 and 3. the CLI on all of them in one run ---------------------------------------


def _scan_all(mutants, out: Path, *args: str) -> tuple:
    """`qwenocr scan` on every file in one run; checks what any run must satisfy and
    returns (files written, pages with an error, seconds)."""
    root, controls, made = mutants
    files = [*controls, *made]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [*QWENOCR, "scan", *map(str, files), "-o", str(out), "-f", "json", "-q", "--no-resume", *args],
            capture_output=True,
            timeout=240,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(
            f"qwenocr scan on {len(files)} files did not finish in 240 s; stderr: "
            f"{(error.stderr or b'').decode(errors='replace')[-2000:]}"
        )
    elapsed = time.monotonic() - started
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode in (0, 10), stderr[-3000:]
    assert proc.stdout == b""
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr[-3000:]
    lines = stderr.splitlines()
    assert all(line.startswith("qwenocr: error: ") for line in lines), [
        line for line in lines if not line.startswith("qwenocr: error: ")
    ][:5]
    written = page_errors = 0
    for path in files:
        output = out / (path.stem + ".json")
        mentioned = [line for line in lines if line.startswith(f"qwenocr: error: {path}")]
        if output.exists():
            written += 1
            assert not mentioned, mentioned
            document = json.loads(output.read_text())
            assert document["source"] == str(path)
            assert [p["number"] for p in document["pages"]] == list(range(1, document["page_count"] + 1))
            for page in document["pages"]:
                assert page["status"] in ("ok", "blank", "repetition", "truncated", "timeout", "error")
                if page["status"] == "error":
                    page_errors += 1
                    assert page["error"] and "\n" not in page["error"]
        else:
            assert path not in controls, (path, mentioned)
            assert len(mentioned) == 1, (path, mentioned)
    assert (proc.returncode == 10) == (written < len(files) or page_errors > 0)
    return written, page_errors, elapsed


def test_cli_text_mode_on_all_mutants_at_once(mutants, tmp_path):
    """Every mutant's every page through the text-layer path (read in the guarded child):
    PDFs' pages from their text layer or an error; an image has no text layer."""
    root, controls, made = mutants
    out = tmp_path / "out"
    written, page_errors, elapsed = _scan_all(mutants, out, "--mode", "text", "--render-timeout", "10")
    for control in controls:
        pages = json.loads((out / (control.stem + ".json")).read_text())["pages"]
        if control.name.startswith(("text-", "objstm-", "font-")):
            assert all(page["status"] == "ok" and page["source"] == "text-layer" for page in pages), pages
    print(
        f"\n{len(made) + len(controls)} files, --mode text, in {elapsed:.1f} s: {written} written, "
        f"{page_errors} page errors"
    )


def test_cli_render_path_on_all_mutants_at_once(mutants, tmp_path):
    """Every mutant's every page rendered (guarded) and sent to the fake OpenAI-compatible
    server (instant answers, four pages in flight, so four documents and their render
    processes at once): this pass is about the inputs, and its time must not depend on
    how busy the CPU is. The tiny GGUF reads a sample in pass 4."""
    from tests.support.openai_fake_server import FakeOpenAIServer

    root, controls, made = mutants
    out = tmp_path / "out"
    with FakeOpenAIServer() as server:
        written, page_errors, elapsed = _scan_all(
            mutants,
            out,
            "--mode",
            "ocr",
            "--backend",
            "openai",
            "--base-url",
            server.url,
            "--concurrency",
            "4",
            "--max-image-tokens",
            "64",
            "--render-timeout",
            "10",
        )
        pages_sent = len(server.chat_requests())
    for control in controls:
        pages = json.loads((out / (control.stem + ".json")).read_text())["pages"]
        assert all(page["status"] in ("ok", "blank") for page in pages), (control.name, pages)
    print(
        f"\n{len(made) + len(controls)} files, --mode ocr, in {elapsed:.1f} s: {written} written "
        f"({pages_sent} pages to the engine, {page_errors} page errors)"
    )


# -- 4. the tiny GGUF ------------------------------------------------------------------


@pytest.mark.engine
def test_tiny_gguf_reads_a_sample_in_one_run(mutants, tiny_models, tmp_path):
    root, controls, made = mutants
    sample = random.Random(SEED + 2).sample(sorted(made), min(IN_ONE_RUN, len(made)))
    # One good PDF among them: it must reach the model whatever the mutants do (how many
    # mutants get that far depends on the render deadline on a busy machine).
    control = next(path for path in controls if path.name == "image-control.pdf")
    sample.append(control)
    out = tmp_path / "out"
    try:
        proc = subprocess.run(
            [*QWENOCR, "scan", *map(str, sample), "--pages", "1", "-f", "json", "-o", str(out), "-q"]
            + ["--model", str(tiny_models.dense_gguf), *FAST],
            capture_output=True,
            timeout=180,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"qwenocr scan on {len(sample)} mutants with the tiny GGUF did not finish in 180 s")
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode in (0, 10), stderr[-3000:]
    assert "Traceback" not in stderr and "internal error" not in stderr
    lines = stderr.splitlines()
    read_by_model = 0
    for path in sample:
        mentioned = [line for line in lines if line.startswith(f"qwenocr: error: {path}")]
        output = out / (path.stem + ".json")
        if output.exists():
            page = json.loads(output.read_text())["pages"][0]
            assert page["number"] == 1
            read_by_model += page["source"] == "model"
        else:
            assert len(mentioned) == 1, (path, stderr)
    control_page = json.loads((out / (control.stem + ".json")).read_text())["pages"][0]
    assert control_page["source"] == "model" and control_page["status"] != "error", control_page
    print(f"\n{len(sample)} mutants with the tiny GGUF: {read_by_model} pages read by the model")


@pytest.mark.engine
def test_cli_one_by_one_never_crashes(mutants, tiny_models):
    root, controls, made = mutants
    rng = random.Random(SEED + 1)
    sample = rng.sample(sorted(made), min(ONE_BY_ONE, len(made)))
    for path in sample:
        try:
            proc = subprocess.run(
                [
                    *QWENOCR,
                    "scan",
                    str(path),
                    "--pages",
                    "1",
                    "-f",
                    "json",
                    "--model",
                    str(tiny_models.dense_gguf),
                    *FAST,
                ],
                capture_output=True,
                timeout=90,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{path.name}: qwenocr scan did not finish in 90 s")
        stderr = proc.stderr.decode(errors="replace")
        assert proc.returncode >= 0, f"{path.name}: killed by signal {-proc.returncode}"
        assert proc.returncode in DOCUMENTED and proc.returncode in (0, 3, 8, 10), (
            f"{path.name}: exit {proc.returncode}: {stderr}"
        )
        assert "Traceback" not in stderr
        errors = [line for line in stderr.splitlines() if line.startswith("qwenocr: error: ")]
        if proc.returncode in (3, 8):
            assert proc.stdout == b"" and len(errors) == 1 and len(stderr.splitlines()) == 1, stderr
        else:
            assert not errors, stderr
            assert json.loads(proc.stdout)["pages"][0]["number"] == 1


# -- what the fuzzer found -------------------------------------------------------------

_OPEN_AND_RENDER = r"""
import sys
from qwenocr.errors import QwenOCRError
from qwenocr.pages.document import RenderSettings, open_document
for path in sys.argv[1:]:
    try:
        with open_document(path) as document:
            for number in range(1, document.page_count + 1):
                try:
                    document.render(number, RenderSettings(max_image_tokens=64))
                except QwenOCRError as error:
                    print(error.one_line())
    except QwenOCRError as error:
        print(error.one_line())
"""


def test_damaged_tiffs_give_one_line_errors_and_nothing_else(tmp_path):
    """Three mutants the fuzzer found (Deflate TIFFs, random seeds 0, 1 and 4): one made
    Pillow raise TypeError("Missing dimensions") through ImageDocument (exit 1, "internal
    error"), one made libtiff print "ZIPDecode: ZLib error" straight to stderr from C, one
    made Pillow warn "Corrupt EXIF data" on stderr. Only qwenocr's own lines may appear."""
    suffix, base = image_seeds()["tiff-deflate"]
    paths = []
    for seed in (0, 1, 4):
        path = tmp_path / f"tiff-{seed}{suffix}"
        path.write_bytes(mutate(base, random.Random(seed), BYTE_MUTATIONS))
        paths.append(str(path))
    proc = subprocess.run([sys.executable, "-c", _OPEN_AND_RENDER, *paths], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    assert proc.stderr == b"", proc.stderr.decode(errors="replace")[-2000:]
