"""`qwenocr scan --batch N`: several pages decoding at once in the local engines.

End to end through the CLI with the real tiny GGUFs and MLX checkpoints (dense and MoE)
in the real engine worker: the document must be the one a run of one page at a time writes (order,
statuses, text, token counts, the loop guard's retries), a crash or a hang in a batch
costs no other page, and an interrupted batched run resumes. The engine itself
(engines/llamacpp_batch.py, engines/mlx_batch.py) has its own tests in
test_llamacpp_batch.py and test_mlx_batch.py.
"""

from __future__ import annotations

import json

import pytest

from tests.support import clirun, samples

pytestmark = pytest.mark.engine

# Greedy decoding (the default). Random weights repeat themselves, so the loop guard
# retries most pages with its other settings: that path runs in the batch too.
FAST = ["--max-tokens", "24", "--max-image-tokens", "96", "-f", "jsonl"]
COMPARED = ("number", "status", "text", "attempts", "image_tokens")


def _model(tiny_models, kind: str):
    if kind == "moe":
        return ["--model", tiny_models.moe_gguf, "--mmproj", tiny_models.moe_mmproj]
    return ["--model", tiny_models.dense_gguf, "--mmproj", tiny_models.dense_mmproj]


def _scan(pdf, model, *extra, env=None, timeout=300):
    return clirun.run_cli(
        "scan",
        pdf,
        *FAST,
        *([] if "--resume" in extra else ["--no-resume"]),
        *model,
        *extra,
        env=env or {},
        timeout=timeout,
    )


def _pages(stdout: bytes):
    return [json.loads(line) for line in stdout.decode().splitlines()]


def _check_one_page_timed_out(proc, alone_pages) -> None:
    """A batched run with one hung page: that page timed out, no page failed, and every
    other page has the text it has alone."""
    stderr = proc.stderr.decode()
    assert proc.returncode in (0, 10), stderr
    assert "Traceback" not in stderr
    pages = _pages(proc.stdout)
    statuses = [page["status"] for page in pages]
    assert statuses.count("timeout") == 1, statuses
    assert "error" not in statuses, pages
    for page, alone in zip(pages, alone_pages, strict=True):
        if page["status"] != "timeout":
            assert page["text"] == alone["text"]


def _compared(pages):
    return [{key: page.get(key) for key in COMPARED} for page in pages]


@pytest.fixture(scope="module")
def pdf(tmp_path_factory):
    """Seven pages of two sizes, so that pages in one batch have different lengths."""
    folder = tmp_path_factory.mktemp("batch")
    images = [samples.page_image(n, (600, 800) if n % 2 else (900, 500)) for n in range(1, 8)]
    path = folder / "mixed.pdf"
    images[0].save(path, "PDF", resolution=100.0, save_all=True, append_images=images[1:])
    return path


@pytest.fixture(scope="module")
def reference(tiny_models, pdf):
    """One page at a time: what every batched run must reproduce."""
    found = {}
    for kind in ("dense", "moe"):
        proc = _scan(pdf, _model(tiny_models, kind), "--batch", "1")
        assert proc.returncode in (0, 10), proc.stderr.decode()
        found[kind] = _pages(proc.stdout)
    return found


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_a_batch_writes_the_same_document_as_one_page_at_a_time(tiny_models, pdf, reference, kind):
    proc = _scan(pdf, _model(tiny_models, kind), "--batch", "4", "--verbose")
    stderr = proc.stderr.decode()
    assert proc.returncode in (0, 10), stderr
    assert "4 pages at once" in stderr
    pages = _pages(proc.stdout)
    assert [page["number"] for page in pages] == list(range(1, 8))
    assert _compared(pages) == _compared(reference[kind])
    # Token counts: the batch engine counts every token it generated; the one-page engine
    # counts the pieces llama-cpp-python streams, and a token that ends inside a
    # multi-byte character adds no piece of its own. So the batch's count is the same or
    # a token or two higher, never lower (seen: 24 against 23 on one MoE page).
    for page, alone in zip(pages, reference[kind], strict=True):
        assert 0 <= page["output_tokens"] - alone["output_tokens"] <= 2, (page, alone)
    # The loop guard fired on pages of the batch (random weights repeat) and its retry
    # ran in the batch as well, with the same outcome as alone.
    assert any(page["attempts"] > 1 for page in pages)


def test_a_crash_in_a_batch_costs_no_page(tiny_models, pdf, reference):
    # The third page to reach the engine aborts it: every page in flight is lost with it,
    # and each is read again (alone, until as many pages as were in flight are done).
    proc = _scan(pdf, _model(tiny_models, "dense"), "--batch", "3", env={"QWENOCR_TEST_ENGINE_FAULTS": "3"})
    stderr = proc.stderr.decode()
    assert proc.returncode in (0, 10), stderr
    assert "Traceback" not in stderr
    assert "engine crashed (signal 6, SIGABRT); retrying the page in a fresh engine" in stderr
    pages = _pages(proc.stdout)
    assert all(page["status"] != "error" for page in pages), pages
    assert [(p["number"], p["text"], p["output_tokens"]) for p in pages] == [
        (p["number"], p["text"], p["output_tokens"]) for p in reference["dense"]
    ]


def test_a_hung_page_in_a_batch_times_out_and_the_others_are_read(tiny_models, pdf, reference):
    proc = _scan(
        pdf,
        _model(tiny_models, "dense"),
        "--batch",
        "3",
        # Long enough for every other page of the batch, on a loaded machine too.
        "--page-timeout",
        "15",
        env={"QWENOCR_TEST_ENGINE_FAULTS": "2:hang"},
    )
    _check_one_page_timed_out(proc, reference["dense"])


def test_a_batched_run_that_stops_resumes_its_finished_pages(tiny_models, pdf, tmp_path):
    out = tmp_path / "out.jsonl"
    cache = {"QWENOCR_CACHE_DIR": str(tmp_path / "cache")}
    # Sampling at temperature 1 keeps the loop guard from retrying pages, so that the
    # first three calls are pages 1-3; every later call aborts the engine, so the run
    # stops with exit 12 (the engine keeps crashing) after at least one page finished.
    sampled = ("--batch", "3", "--temperature", "1", "-o", out, "--resume")
    faults = ",".join(str(call) for call in range(4, 40))
    proc = _scan(pdf, _model(tiny_models, "dense"), *sampled, env={**cache, "QWENOCR_TEST_ENGINE_FAULTS": faults})
    stderr = proc.stderr.decode()
    assert proc.returncode == 12, stderr
    assert not out.exists()
    rerun = _scan(pdf, _model(tiny_models, "dense"), *sampled, "--verbose", env=cache)
    stderr = rerun.stderr.decode()
    assert rerun.returncode in (0, 10), stderr
    assert "page(s) already done" in stderr
    pages = _pages(out.read_bytes())
    assert [page["number"] for page in pages] == list(range(1, 8))
    assert all(page["status"] != "error" and page["output_tokens"] > 0 for page in pages), pages


# MLX (engines/mlx_batch.py): the same checks with the tiny MLX checkpoints. Its batch
# gives each page the single-page engine's text (tests/test_mlx_batch.py), so here the
# whole page record is compared, token counts included.
MLX_COMPARED = COMPARED + ("output_tokens", "finish_reason")


def _mlx(tiny_models, kind: str):
    return ["--model", tiny_models.moe_mlx if kind == "moe" else tiny_models.dense_mlx]


@pytest.fixture(scope="module")
def mlx_reference(tiny_models, pdf):
    found = {}
    for kind in ("dense", "moe"):
        proc = _scan(pdf, _mlx(tiny_models, kind), "--batch", "1")
        assert proc.returncode in (0, 10), proc.stderr.decode()
        found[kind] = _pages(proc.stdout)
    return found


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_an_mlx_batch_writes_the_same_document_as_one_page_at_a_time(tiny_models, pdf, mlx_reference, kind):
    proc = _scan(pdf, _mlx(tiny_models, kind), "--batch", "4", "--verbose")
    stderr = proc.stderr.decode()
    assert proc.returncode in (0, 10), stderr
    assert "4 pages at once" in stderr
    pages = _pages(proc.stdout)
    assert [page["number"] for page in pages] == list(range(1, 8))
    assert [{key: p.get(key) for key in MLX_COMPARED} for p in pages] == [
        {key: p.get(key) for key in MLX_COMPARED} for p in mlx_reference[kind]
    ]
    # The loop guard stopped pages of the batch (random weights repeat) and retried them
    # sampled, in the batch, with the outcome they have alone; the pages beside them went on.
    assert any(page["attempts"] > 1 for page in pages)
    assert all(page["status"] != "error" for page in pages), pages


def test_a_hung_page_in_an_mlx_batch_times_out_and_the_others_are_read(tiny_models, pdf, mlx_reference):
    proc = _scan(
        pdf,
        _mlx(tiny_models, "dense"),
        "--batch",
        "3",
        "--page-timeout",
        "30",
        env={"QWENOCR_TEST_ENGINE_FAULTS": "2:hang"},
    )
    _check_one_page_timed_out(proc, mlx_reference["dense"])


def test_a_page_timeout_in_an_mlx_batch_stops_that_page_only(tiny_models, pdf):
    """Pages that decode past --page-timeout (no hang: their text streams on) are stopped
    through their callbacks, each alone: the engine is not killed or restarted, the rows
    go to the next pages, and every page gets its record."""
    proc = _scan(
        pdf,
        _mlx(tiny_models, "dense"),
        "--batch",
        "4",
        # Sampled text streams word by word (greedy newlines would come in one piece at
        # the end); 4000 tokens take far longer than the timeout.
        "--temperature",
        "1",
        "--max-tokens",
        "4000",
        "--page-timeout",
        "8",
    )
    stderr = proc.stderr.decode()
    assert proc.returncode in (0, 10), stderr
    assert "Traceback" not in stderr
    assert "fresh engine" not in stderr and "crashed" not in stderr, stderr
    pages = _pages(proc.stdout)
    assert [page["number"] for page in pages] == list(range(1, 8))
    statuses = [page["status"] for page in pages]
    assert "timeout" in statuses and "error" not in statuses, statuses
    for page in pages:
        if page["status"] == "timeout":
            assert 0 < page["output_tokens"] < 4000 and page["text"], page


def test_an_mlx_batched_run_that_stops_resumes_its_finished_pages(tiny_models, pdf, tmp_path):
    out = tmp_path / "out.jsonl"
    cache = {"QWENOCR_CACHE_DIR": str(tmp_path / "cache")}
    sampled = ("--batch", "3", "--temperature", "1", "-o", out, "--resume")
    faults = ",".join(str(call) for call in range(4, 40))
    proc = _scan(pdf, _mlx(tiny_models, "dense"), *sampled, env={**cache, "QWENOCR_TEST_ENGINE_FAULTS": faults})
    stderr = proc.stderr.decode()
    assert proc.returncode == 12, stderr
    assert not out.exists()
    rerun = _scan(pdf, _mlx(tiny_models, "dense"), *sampled, "--verbose", env=cache)
    stderr = rerun.stderr.decode()
    assert rerun.returncode in (0, 10), stderr
    assert "page(s) already done" in stderr
    pages = _pages(out.read_bytes())
    assert [page["number"] for page in pages] == list(range(1, 8))
    assert all(page["status"] != "error" and page["output_tokens"] > 0 for page in pages), pages


def test_batch_is_bounded(tiny_models, pdf):
    proc = _scan(pdf, _model(tiny_models, "dense"), "--batch", "0")
    assert proc.returncode == 2
    assert "--batch" in proc.stderr.decode()
