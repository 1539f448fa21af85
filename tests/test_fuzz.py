"""Fuzz: a few hundred mutated PDFs through qwenocr; no traceback, no hang, no crash.

The mutants come from three small real PDFs (hand-written text pages, a Pillow-made
image PDF, and a compressed one with object and cross-reference streams) and a fixed
random seed: byte flips, truncations, duplicated, deleted or overwritten chunks, damaged
keywords and numbers, one to three at a time. Three passes:

1. The page layer, in a child Python process (a PDFium crash must not take pytest with
   it): every mutant is opened and each of its pages rendered in-process; nothing but
   qwenocr's own one-line errors may come out.
2. The CLI on all of them at once (`qwenocr scan DIR/*.pdf -o OUT`), every page, with
   the fake OpenAI-compatible server as the engine (instant, and four documents in
   flight): a good control file completes, each mutant either gets an output file with
   valid JSON or exactly one error line, and the exit code is 0 or 10.
3. The CLI on a sample of them one by one (`--pages 1`) with the tiny GGUF, with a time
   limit each: the exit code is a documented one, never 1 (a bug) and never negative (a
   signal).
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

from tests.support import broken_inputs, samples

QWENOCR = [sys.executable, "-m", "qwenocr"]
SEED = 20260422
MUTANTS_PER_BASE = 150
ONE_BY_ONE = 16
FAST = ["--max-tokens", "16", "--max-image-tokens", "64", "--render-timeout", "10", "--no-resume"]  # pass 3
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


MUTATIONS = [_flip, _truncate, _duplicate, _delete, _overwrite, _keyword, _number]


def mutate(base: bytes, rng: random.Random) -> bytes:
    data = bytearray(base)
    for _ in range(rng.randint(1, 3)):
        if len(data) < 2:
            break
        rng.choice(MUTATIONS)(data, rng)
    return bytes(data)


def _image_pdf() -> bytes:
    buffer = io.BytesIO()
    images = [samples.page_image(n, (240, 310)) for n in (1, 2)]
    images[0].save(buffer, "PDF", resolution=40.0, save_all=True, append_images=images[1:])
    return buffer.getvalue()


def _object_stream_pdf() -> bytes:
    """The text PDF rewritten with object streams and an xref stream (PDF 1.5)."""
    pikepdf = pytest.importorskip("pikepdf", reason="pikepdf (the test extra) writes the compressed base PDF")
    out = io.BytesIO()
    with pikepdf.open(io.BytesIO(broken_inputs.text_pdf(2))) as pdf:
        pdf.save(out, object_stream_mode=pikepdf.ObjectStreamMode.generate, compress_streams=True)
    return out.getvalue()


@pytest.fixture(scope="module")
def mutants(tmp_path_factory):
    """{path: base name}; the mutants (and an unmutated control) in one directory."""
    root = tmp_path_factory.mktemp("fuzz")
    bases = {"text": broken_inputs.text_pdf(2), "image": _image_pdf()}
    try:
        bases["objstm"] = _object_stream_pdf()
    except pytest.skip.Exception:
        pass
    rng = random.Random(SEED)
    made = {}
    seen = set(bases.values())
    for name, base in bases.items():
        for i in range(MUTANTS_PER_BASE):
            data = mutate(base, rng)
            if data in seen:  # a mutation that changed nothing: not a new case
                continue
            seen.add(data)
            path = root / f"{name}-{i:03d}.pdf"
            path.write_bytes(data)
            made[path] = name
    control = root / "control.pdf"
    control.write_bytes(bases["text"])
    return root, control, made


# -- 1. the page layer ---------------------------------------------------------------

_PAGE_LAYER = r"""
import json, sys
from qwenocr.errors import QwenOCRError
from qwenocr.pages.document import RenderSettings, open_document
outcomes = {}
for path in sys.argv[1:]:
    try:
        with open_document(path) as document:
            pages = []
            for number in range(1, document.page_count + 1):
                try:
                    pages.append(list(document.render(number, RenderSettings(max_image_tokens=64)).size))
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
    root, control, made = mutants
    paths = [str(control)] + [str(p) for p in made]
    proc = subprocess.run([sys.executable, "-c", _PAGE_LAYER, *paths], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    outcomes = json.loads(proc.stdout)
    assert outcomes[str(control)][0] == "ok"
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
    assert kinds.count("ok") > 20 and kinds.count("error") > 20, {k: kinds.count(k) for k in set(kinds)}


# -- 2. the CLI on all of them at once ----------------------------------------------


def test_cli_on_all_mutants_at_once(mutants, tmp_path):
    """Every mutant, every page, in one run. The engine is the fake OpenAI-compatible
    server (instant answers, four pages in flight, so four documents and their render
    processes at once): this pass is about the inputs, and its time must not depend on
    how busy the CPU is. The tiny GGUF reads the mutants in pass 3."""
    from tests.support.openai_fake_server import FakeOpenAIServer

    root, control, made = mutants
    out = tmp_path / "out"
    started = time.monotonic()
    with FakeOpenAIServer() as server:
        try:
            proc = subprocess.run(
                [
                    *QWENOCR,
                    "scan",
                    *map(str, [control, *made]),
                    "-o",
                    str(out),
                    "-f",
                    "json",
                    "-q",
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
                    "--no-resume",
                ],
                capture_output=True,
                timeout=300,
            )
        except subprocess.TimeoutExpired as error:
            pytest.fail(
                f"qwenocr scan on {len(made) + 1} files did not finish in 300 s; stderr: "
                f"{(error.stderr or b'').decode(errors='replace')[-2000:]}"
            )
        pages_sent = len(server.chat_requests())
    elapsed = time.monotonic() - started
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode in (0, 10), stderr[-3000:]
    assert proc.stdout == b""
    assert "Traceback" not in stderr and "internal error" not in stderr
    lines = stderr.splitlines()
    assert all(line.startswith("qwenocr: error: ") for line in lines), [
        line for line in lines if not line.startswith("qwenocr: error: ")
    ][:5]
    assert (out / "control.json").is_file()
    written = page_errors = 0
    for path in [control, *made]:
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
            assert len(mentioned) == 1, (path, mentioned)
    assert (proc.returncode == 10) == (written < len(made) + 1 or page_errors > 0)
    print(
        f"\n{len(made) + 1} files in {elapsed:.1f} s: {written} written ({pages_sent} pages to the engine, "
        f"{page_errors} page errors), {len(made) + 1 - written} refused"
    )


# -- 3. the CLI one by one ------------------------------------------------------------


@pytest.mark.engine
def test_cli_one_by_one_never_crashes(mutants, tiny_models):
    root, control, made = mutants
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
        assert proc.returncode in (0, 3, 8, 10), f"{path.name}: exit {proc.returncode}: {stderr}"
        assert "Traceback" not in stderr
        errors = [line for line in stderr.splitlines() if line.startswith("qwenocr: error: ")]
        if proc.returncode in (3, 8):
            assert proc.stdout == b"" and len(errors) == 1 and len(stderr.splitlines()) == 1, stderr
        else:
            assert not errors, stderr
            assert json.loads(proc.stdout)["pages"][0]["number"] == 1
