"""Pipeline logic with a fake engine: order, ranges, formats, stdin, several inputs,
blank pages, the loop guard and its retry, checkpoints. The real engines are driven in
tests/test_scan_engines.py; here the engine is a queue of canned answers."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest

from qwenocr.engines.base import Generation
from qwenocr.errors import ExitCode, InputError, UsageError
from qwenocr.pages.document import RenderSettings, image_tokens, open_document
from qwenocr.scan.pipeline import ScanOptions, clean_text, run_document
from qwenocr.scan.progress import Reporter
from qwenocr.scan.request import ScanRequest
from qwenocr.scan.run import run_scan
from qwenocr.store.resolve import ModelFiles
from tests.support import samples
from tests.support.fake_engine import FakeBackend


def _engine(backend):
    return lambda: (ModelFiles("fake", Path("fake"), None, "fake-model"), None, backend)


def _scan(tmp_path, inputs, backend=None, **kwargs):
    backend = backend or FakeBackend()
    out = io.StringIO()
    request = ScanRequest(inputs=[str(i) for i in inputs], **kwargs)
    code = run_scan(request, out, Reporter(quiet=True), engine=_engine(backend))
    return code, out.getvalue(), backend


@pytest.fixture
def pdf3(tmp_path):
    return samples.write_pdf(tmp_path / "three.pdf", pages=3)


def test_markdown_pages_in_order_with_markers(tmp_path, pdf3):
    code, text, backend = _scan(tmp_path, [pdf3])
    assert code == ExitCode.OK
    assert [line for line in text.splitlines() if line.startswith("<!-- page")] == [
        "<!-- page 1 -->",
        "<!-- page 2 -->",
        "<!-- page 3 -->",
    ]
    assert "text of call 0" in text and "text of call 2" in text
    assert len(backend.calls) == 3 and backend.closed


def test_page_ranges_select_pages(tmp_path):
    pdf = samples.write_pdf(tmp_path / "ten.pdf", pages=10)
    code, text, backend = _scan(tmp_path, [pdf], pages="1-2,5,9-", fmt="jsonl")
    numbers = [json.loads(line)["number"] for line in text.splitlines()]
    assert numbers == [1, 2, 5, 9, 10]
    assert len(backend.calls) == 5


def test_page_range_outside_document_is_a_usage_error(tmp_path, pdf3):
    with pytest.raises(UsageError, match="page 7"):
        _scan(tmp_path, [pdf3], pages="7-9")


def test_json_document_shape(tmp_path, pdf3):
    code, text, _ = _scan(tmp_path, [pdf3], fmt="json")
    document = json.loads(text)
    assert document["source"] == str(pdf3)
    assert document["page_count"] == 3
    assert [p["number"] for p in document["pages"]] == [1, 2, 3]
    page = document["pages"][0]
    for key in ("text", "status", "output_tokens", "seconds", "image_width", "image_height", "image_tokens", "source"):
        assert key in page
    assert page["status"] == "ok"
    assert page["image_tokens"] <= 1536
    assert document["totals"]["pages"] == 3
    assert document["model"] == {"backend": "fake", "model": "fake-model"}
    assert len(document["sha256"]) == 64


def test_jsonl_streams_one_line_per_page(tmp_path, pdf3):
    _, text, _ = _scan(tmp_path, [pdf3], fmt="jsonl")
    lines = text.splitlines()
    assert len(lines) == 3
    assert all(json.loads(line)["file"] == str(pdf3) for line in lines)


def test_several_inputs_to_a_directory(tmp_path, pdf3):
    image = tmp_path / "scan.png"
    samples.page_image(1).save(image)
    out = tmp_path / "out"
    code, stdout, _ = _scan(tmp_path, [pdf3, image], output=out, fmt="json")
    assert code == ExitCode.OK and stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["scan.json", "three.json"]
    assert json.loads((out / "scan.json").read_text())["page_count"] == 1


def test_several_inputs_on_stdout_json_is_an_array(tmp_path, pdf3):
    image = tmp_path / "scan.png"
    samples.page_image(1).save(image)
    _, text, _ = _scan(tmp_path, [pdf3, image], fmt="json")
    documents = json.loads(text)
    assert [d["source"] for d in documents] == [str(pdf3), str(image)]


def test_bad_input_among_good_ones_is_partial(tmp_path, pdf3):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"this is not a pdf at all")
    code, text, _ = _scan(tmp_path, [pdf3, bad])
    assert code == ExitCode.PARTIAL
    assert "<!-- document: " + str(pdf3) in text
    assert "bad.pdf" not in text


def test_single_bad_input_raises_its_error(tmp_path):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        _scan(tmp_path, [bad])


def test_stdin_pdf(tmp_path, monkeypatch):
    data = samples.pdf_bytes(pages=2)

    class FakeStdin:
        buffer = io.BytesIO(data)

    monkeypatch.setattr("sys.stdin", FakeStdin)
    code, text, _ = _scan(tmp_path, ["-"], fmt="jsonl")
    assert [json.loads(line)["file"] for line in text.splitlines()] == ["-", "-"]


def test_multi_frame_tiff_is_one_page_per_frame(tmp_path):
    tiff = samples.write_tiff(tmp_path / "pages.tiff", frames=3)
    _, text, _ = _scan(tmp_path, [tiff], fmt="jsonl")
    assert [json.loads(line)["number"] for line in text.splitlines()] == [1, 2, 3]


def test_blank_pages_skip_the_model(tmp_path):
    pdf = samples.write_pdf(tmp_path / "blank.pdf", pages=3, blank_pages=[2])
    _, text, backend = _scan(tmp_path, [pdf], fmt="jsonl")
    statuses = [json.loads(line)["status"] for line in text.splitlines()]
    assert statuses == ["ok", "blank", "ok"]
    assert len(backend.calls) == 2


LOOP = "| 12 | total |\n" * 400


def test_loop_is_retried_with_other_sampling_then_kept(tmp_path):
    answers = {0: "Title\n\n" + LOOP, 1: "Title\n\nA clean transcription."}
    backend = FakeBackend(lambda i, image, settings: answers[i])
    pdf = samples.write_pdf(tmp_path / "one.pdf", pages=1)
    _, text, backend = _scan(tmp_path, [pdf], fmt="jsonl", backend=backend)
    page = json.loads(text)
    assert page["status"] == "ok" and page["attempts"] == 2
    assert page["text"] == "Title\n\nA clean transcription."
    first, retry = backend.calls[0][1], backend.calls[1][1]
    assert first.temperature == 0 and retry.temperature > 0 and retry.seed != first.seed


def test_loop_twice_keeps_text_before_the_loop(tmp_path):
    backend = FakeBackend(lambda i, image, settings: "Title\n\nIntro line.\n" + LOOP)
    pdf = samples.write_pdf(tmp_path / "one.pdf", pages=1)
    _, text, _ = _scan(tmp_path, [pdf], backend=backend)
    assert "<!-- page 1 (repetition) -->" in text
    assert "Intro line." in text
    assert text.count("| 12 | total |") < 20
    assert "repeated itself" in text


def test_page_timeout_marks_the_page(tmp_path):
    class Slow(FakeBackend):
        def generate(self, image, prompt, settings, on_piece=None):
            pieces = []
            for _ in range(200):
                time.sleep(0.01)
                pieces.append("word ")
                if not on_piece("word "):
                    break
            return Generation("".join(pieces), len(pieces), finish_reason="aborted")

    pdf = samples.write_pdf(tmp_path / "one.pdf", pages=2)
    options = ScanOptions(page_timeout=0.2, retry_on_repetition=False)
    code, text, _ = _scan(tmp_path, [pdf], backend=Slow(), fmt="jsonl", options=options)
    statuses = [json.loads(line)["status"] for line in text.splitlines()]
    assert statuses in (["timeout", "timeout"],)


def test_engine_failure_on_one_page_is_partial(tmp_path, pdf3):
    def answer(index, image, settings):
        if index == 1:
            raise RuntimeError("GPU fell over")
        return "fine"

    code, text, _ = _scan(tmp_path, [pdf3], backend=FakeBackend(answer), fmt="jsonl")
    pages = [json.loads(line) for line in text.splitlines()]
    assert [p["status"] for p in pages] == ["ok", "error", "ok"]
    assert "GPU fell over" in pages[1]["error"]
    assert code == ExitCode.PARTIAL


def test_concurrent_backend_keeps_page_order(tmp_path):
    import random

    rng = random.Random(3)

    class Jittery(FakeBackend):
        def generate(self, image, prompt, settings, on_piece=None):
            time.sleep(rng.random() * 0.05)
            return super().generate(image, prompt, settings, on_piece)

    pdf = samples.write_pdf(tmp_path / "many.pdf", pages=12, size=(300, 400))
    backend = Jittery(lambda i, image, s: "x", concurrency=4)
    _, text, _ = _scan(tmp_path, [pdf], backend=backend, fmt="jsonl")
    assert [json.loads(line)["number"] for line in text.splitlines()] == list(range(1, 13))


def test_checkpoint_resume_redoes_no_finished_page(tmp_path, pdf3):
    # A first run that dies on page 3 (a crash mid-run) ...
    def crash_on_third(index, image, settings):
        if index == 2:
            raise KeyboardInterrupt
        return f"first run page {index + 1}"

    with pytest.raises(KeyboardInterrupt):
        _scan(tmp_path, [pdf3], backend=FakeBackend(crash_on_third), fmt="jsonl")
    # ... then the same command again: pages 1-2 come from the checkpoint.
    backend = FakeBackend(lambda i, image, s: "second run")
    code, text, backend = _scan(tmp_path, [pdf3], backend=backend, fmt="jsonl")
    pages = [json.loads(line) for line in text.splitlines()]
    assert [p["text"] for p in pages] == ["first run page 1", "first run page 2", "second run"]
    assert [p["resumed"] for p in pages] == [True, True, False]
    assert len(backend.calls) == 1
    # The finished run cleared its checkpoint: a third run starts over.
    _, _, third = _scan(tmp_path, [pdf3], fmt="jsonl")
    assert len(third.calls) == 3


def test_no_resume_starts_over(tmp_path, pdf3):
    def crash(index, image, settings):
        if index == 1:
            raise KeyboardInterrupt
        return "old"

    with pytest.raises(KeyboardInterrupt):
        _scan(tmp_path, [pdf3], backend=FakeBackend(crash))
    _, _, backend = _scan(tmp_path, [pdf3], resume=False)
    assert len(backend.calls) == 3


def test_render_follows_the_token_budget(tmp_path, pdf3):
    backend = FakeBackend()
    options = ScanOptions(render=RenderSettings(max_image_tokens=512))
    _scan(tmp_path, [pdf3], backend=backend, options=options)
    for (width, height), _ in backend.calls:
        assert width % 32 == 0 and height % 32 == 0
        assert image_tokens(width, height) <= 512
        assert image_tokens(width, height) > 400  # uses the budget, not a tiny image


def test_rotated_page_renders_landscape(tmp_path):
    pdf = samples.write_rotated_pdf(tmp_path / "rotated.pdf", 90)
    with open_document(pdf) as document:
        image = document.render(1, RenderSettings())
    assert image.width > image.height


def test_clean_text_strips_fences_and_think_blocks():
    assert clean_text("<think>\n\n</think>\n\n# Title") == "# Title"
    assert clean_text("```markdown\n# Title\n\nBody\n```") == "# Title\n\nBody"
    assert clean_text("  plain  ") == "plain"


def test_memory_stays_flat_render_queue_is_bounded(tmp_path):
    """The renderer runs at most a couple of pages ahead of the model."""
    pdf = samples.write_pdf(tmp_path / "twenty.pdf", pages=20, size=(200, 260))
    rendered = []

    with open_document(pdf) as document:
        original = document.render

        def counting_render(number, settings):
            rendered.append(number)
            return original(number, settings)

        document.render = counting_render
        seen_ahead = []

        class Watcher(FakeBackend):
            def generate(self, image, prompt, settings, on_piece=None):
                seen_ahead.append(len(rendered) - len(self.calls))
                return super().generate(image, prompt, settings, on_piece)

        list(run_document(document, list(range(1, 21)), Watcher(), ScanOptions()))
    assert max(seen_ahead) <= 3


# --- --mode auto | text (the PDF's own text layer) -------------------------------------


def test_mode_auto_uses_good_text_layers_and_ocrs_the_rest(tmp_path):
    from tests.support import textlayer_pdfs

    pdf = tmp_path / "mixed.pdf"
    pdf.write_bytes(textlayer_pdfs.mixed_pdf())  # born-digital, image-only, stamped scan, glyph soup
    options = ScanOptions(mode="auto", skip_blank=False)
    code, text, backend = _scan(tmp_path, [pdf], fmt="jsonl", options=options)
    pages = [json.loads(line) for line in text.splitlines()]
    assert [p["source"] for p in pages] == ["text-layer", "model", "model", "model"]
    assert "deliverables" in pages[0]["text"]
    assert pages[0]["text_layer"]["usable"] is True
    assert len(backend.calls) == 3
    assert code == ExitCode.OK


def test_mode_text_runs_no_model(tmp_path):
    from tests.support import textlayer_pdfs

    pdf = tmp_path / "mixed.pdf"
    pdf.write_bytes(textlayer_pdfs.mixed_pdf())
    out = io.StringIO()
    request = ScanRequest(inputs=[str(pdf)], fmt="jsonl", options=ScanOptions(mode="text"))
    code = run_scan(request, out, Reporter(quiet=True))  # no engine seam: nothing is loaded
    pages = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [p["status"] for p in pages] == ["ok", "error", "error", "error"]
    assert "no usable text layer" in pages[1]["error"]
    assert code == ExitCode.PARTIAL


def test_mode_is_part_of_the_checkpoint_key(tmp_path, pdf3):
    from qwenocr.scan.run import output_settings

    request = ScanRequest(inputs=[str(pdf3)])
    model = ModelFiles("fake", Path("fake"), None, "fake-model")
    assert output_settings(request, ScanOptions(mode="auto"), model) != output_settings(
        request, ScanOptions(mode="ocr"), model
    )


def test_each_status_is_in_one_set_and_incomplete_ones_get_a_markdown_note():
    from qwenocr.scan import output, results

    assert len(set(results.STATUSES)) == len(results.STATUSES) == 6
    assert not set(results.GOOD_STATUSES) & set(results.INCOMPLETE_STATUSES)
    assert set(output._MARKDOWN_NOTES) == set(results.INCOMPLETE_STATUSES)


def test_check_records_kind_pages_and_selection(tmp_path, pdf3):
    from qwenocr.scan.inputs import check_inputs

    image = tmp_path / "scan.png"
    samples.page_image(1).save(image)
    checked = check_inputs(ScanRequest(inputs=[str(pdf3), str(image)], pages="1-"))
    assert [(item.kind, item.page_count, item.page_numbers, item.error) for item in checked] == [
        ("pdf", 3, (1, 2, 3), None),
        ("image", 1, (1,), None),
    ]


def test_page_ranges_are_read_once_per_input_and_the_request_is_left_as_given(tmp_path, monkeypatch):
    import dataclasses

    from qwenocr.scan import inputs

    folder = tmp_path / "in"
    folder.mkdir()
    samples.write_pdf(folder / "a.pdf", pages=3)
    samples.write_pdf(folder / "b.pdf", pages=2)
    calls = []
    parse = inputs.parse_page_ranges

    def counting(spec, page_count):
        calls.append(page_count)
        return parse(spec, page_count)

    monkeypatch.setattr(inputs, "parse_page_ranges", counting)
    request = ScanRequest(inputs=[str(folder)], pages="2", output=tmp_path / "out", fmt="jsonl")
    code = run_scan(request, io.StringIO(), Reporter(quiet=True), engine=_engine(FakeBackend()))
    assert code == ExitCode.OK
    assert sorted(calls) == [2, 3]
    assert [json.loads(line)["number"] for line in (tmp_path / "out" / "a.jsonl").read_text().splitlines()] == [2]
    assert request.inputs == [str(folder)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.inputs = []  # type: ignore[misc]


# --- batches: directories, patterns, name clashes, several documents in flight ----------


def test_directory_input_expands_to_its_documents(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    samples.write_pdf(folder / "a.pdf", pages=1)
    samples.write_pdf(folder / "sub" / "a.pdf", pages=2)
    samples.page_image(1).save(folder / "c.png")
    (folder / "notes.txt").write_text("not a document")
    out = tmp_path / "out"
    code, stdout, backend = _scan(tmp_path, [folder], output=out, fmt="json")
    assert code == ExitCode.OK and stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["a-2.json", "a.json", "c.json"]
    assert len(backend.calls) == 4


def test_quoted_pattern_is_expanded(tmp_path):
    for name in ("x1.pdf", "x2.pdf"):
        samples.write_pdf(tmp_path / name, pages=1)
    code, text, backend = _scan(tmp_path, [tmp_path / "x*.pdf"], fmt="jsonl")
    assert [json.loads(line)["file"] for line in text.splitlines()] == [
        str(tmp_path / "x1.pdf"),
        str(tmp_path / "x2.pdf"),
    ]


def test_empty_directory_is_an_input_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no PDF or image"):
        _scan(tmp_path, [tmp_path / "empty"])


def test_server_backend_keeps_several_documents_in_flight(tmp_path):
    """With a concurrent backend and -o DIR, pages of different files overlap, and the
    backend never sees more requests at once than its concurrency."""
    active = {"now": 0, "max": 0}
    lock = threading.Lock()

    class Server(FakeBackend):
        def generate(self, image, prompt, settings, on_piece=None):
            with lock:
                active["now"] += 1
                active["max"] = max(active["max"], active["now"])
            try:
                time.sleep(0.3)
                return super().generate(image, prompt, settings, on_piece)
            finally:
                with lock:
                    active["now"] -= 1

    files = [samples.write_pdf(tmp_path / f"f{i}.pdf", pages=1, size=(200, 260)) for i in range(6)]
    backend = Server(concurrency=3)
    code, _, _ = _scan(tmp_path, files, backend=backend, output=tmp_path / "out")
    assert code == ExitCode.OK
    assert len(list((tmp_path / "out").iterdir())) == 6
    assert 1 < active["max"] <= 3  # overlapping documents, never above the limit


def test_a_failure_in_the_render_thread_ends_the_run_as_an_error(tmp_path):
    # Whatever breaks while pages are prepared (here: the checkpoint lookup) must not end
    # the document as if it were complete with pages missing.
    class BrokenCheckpoint:
        def get(self, number):
            raise RuntimeError("broken checkpoint")

    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=2, size=(200, 260))
    with open_document(pdf) as document:
        with pytest.raises(RuntimeError, match="broken checkpoint"):
            list(run_document(document, [1, 2], FakeBackend(), ScanOptions(), checkpoint=BrokenCheckpoint()))
