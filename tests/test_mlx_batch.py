"""The batched MLX engine on the tiny MLX checkpoints: several pages in one mlx-vlm BatchGenerator.

`MLXBatchBackend` must read each page as `MLXBackend` reads it alone, whatever else is in
the batch: the same text, token count, finish reason and prompt size, greedy (plain, and
with a repetition penalty) and sampled with the pipeline's retry settings (the page's
own seeded draws), at batch 1 and 4; each page in its own call; a page told to stop, a
page that cannot be prepared or a callback that raises costing only itself; rows reused
when there are more pages than the batch; close() failing what is in flight. The pages
are real drawn text pages of different sizes (so different numbers of image tokens);
the dense and MoE fixtures run. Random weights answer every page with newlines when
greedy: the sampled settings make each page's text its own, so a page given another's
text, or a draw taken with another page's key, would show.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Dict, List, Tuple

import pytest
from PIL import Image

from qwenocr.engines.base import Generation, GenerationSettings
from qwenocr.errors import BackendError
from tests.support import samples

pytestmark = pytest.mark.engine

PROMPT = "Read the text of this page."
GREEDY = GenerationSettings(max_tokens=16)
# Greedy, but the penalty moves the random model off its newlines: text per page.
PENALISED = GenerationSettings(max_tokens=16, repetition_penalty=1.3)
# The pipeline's retry after a loop (scan/pipeline.py _retry_settings): sampled.
RETRY = GenerationSettings(max_tokens=16, temperature=0.3, top_p=0.9, top_k=40, repetition_penalty=1.1, seed=1)
SETTINGS = {"greedy": GREEDY, "penalised": PENALISED, "retry": RETRY}
# Four page shapes: 80 to 99 visual tokens.
SIZES = [(256, 320), (224, 288), (320, 256), (288, 352)]


def _pages() -> List[Image.Image]:
    return [samples.page_image(n + 1, size) for n, size in enumerate(SIZES)]


def _jobs() -> List[Tuple[str, int]]:
    return [(name, index) for name in SETTINGS for index in range(len(SIZES))]


def _settings(name: str, index: int) -> GenerationSettings:
    # Each page its own seed, so that sampled pages differ from each other.
    settings = SETTINGS[name]
    return replace(settings, seed=settings.seed + index)


def _key(generation: Generation):
    return (generation.text, generation.output_tokens, generation.finish_reason, generation.prompt_tokens)


@pytest.fixture(scope="module", params=["dense", "moe"])
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def path(tiny_models, kind):
    return tiny_models.dense_mlx if kind == "dense" else tiny_models.moe_mlx


@pytest.fixture(scope="module")
def reference(path) -> Dict[Tuple[str, int], Generation]:
    """Every page with every setting, one at a time in the single-page engine."""
    from qwenocr.engines.mlx import MLXBackend

    engine = MLXBackend(path)
    try:
        pages = _pages()
        return {(name, i): engine.generate(pages[i], PROMPT, _settings(name, i)) for name, i in _jobs()}
    finally:
        engine.close()


def _batched(path, batch: int):
    from qwenocr.engines.mlx_batch import MLXBatchBackend

    return MLXBatchBackend(path, batch=batch)


@pytest.mark.parametrize("batch", [1, 4])
def test_every_page_gets_the_single_page_engines_text(path, reference, batch):
    """Greedy, penalised and sampled pages, all in flight together: each page's text,
    tokens, finish and prompt size are the single-page engine's, and the rows are reused
    (12 pages through `batch` rows)."""
    engine = _batched(path, batch)
    pages = _pages()
    jobs = _jobs()
    try:
        with ThreadPoolExecutor(batch) as pool:
            read = pool.map(lambda job: engine.generate(pages[job[1]], PROMPT, _settings(*job)), jobs)
            found = dict(zip(jobs, read, strict=True))
        admissions = dict(engine.admissions)
    finally:
        engine.close()
    for job in jobs:
        assert _key(found[job]) == _key(reference[job]), job
    # The comparison can fail: the sampled pages' texts differ from each other.
    assert len({reference[job].text for job in jobs if job[0] == "retry"}) == len(SIZES)
    assert sum(admissions.values()) == len(jobs)
    assert set(admissions) == set(range(batch))
    if batch > 1:
        assert all(count >= 2 for count in admissions.values()), admissions


@pytest.fixture(scope="module")
def engine(tiny_models):
    """A batch of 3 on the dense checkpoint, shared by the tests that need only one."""
    engine = _batched(tiny_models.dense_mlx, 3)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def dense_reference(tiny_models) -> Dict[Tuple[str, int], Generation]:
    from qwenocr.engines.mlx import MLXBackend

    engine = MLXBackend(tiny_models.dense_mlx)
    try:
        pages = _pages()
        return {("retry", i): engine.generate(pages[i], PROMPT, _settings("retry", i)) for i in range(3)}
    finally:
        engine.close()


def _together(engine, calls):
    """Run each call (a function of no argument) in its own thread; their results or errors."""
    results: List = [None] * len(calls)

    def run(index):
        try:
            results[index] = calls[index]()
        except Exception as error:  # noqa: BLE001 - the test looks at it
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return results


def test_a_page_told_to_stop_stops_alone(engine, dense_reference):
    pages = _pages()
    seen: List[str] = []

    def stop_after_two(piece: str) -> bool:
        seen.append(piece)
        return len(seen) < 2

    # Sampled text has words, streamed piece by piece (newlines come in one piece at the end).
    first, stopped, second = _together(
        engine,
        [
            lambda: engine.generate(pages[0], PROMPT, _settings("retry", 0)),
            lambda: engine.generate(pages[1], PROMPT, _settings("retry", 1), on_piece=stop_after_two),
            lambda: engine.generate(pages[2], PROMPT, _settings("retry", 2)),
        ],
    )
    assert stopped.finish_reason == "aborted"
    assert stopped.text == "".join(seen) and len(seen) == 2
    alone = dense_reference["retry", 1].text
    assert alone.startswith(stopped.text) and len(stopped.text) < len(alone)
    assert _key(first) == _key(dense_reference["retry", 0])
    assert _key(second) == _key(dense_reference["retry", 2])


def test_each_page_keeps_its_own_max_tokens(engine):
    pages = _pages()
    limits = [3, 9, 5]
    results = _together(
        engine,
        [(lambda i=i: engine.generate(pages[i], PROMPT, replace(RETRY, max_tokens=limits[i]))) for i in range(3)],
    )
    assert [r.output_tokens for r in results] == limits
    assert [r.finish_reason for r in results] == ["length"] * 3


def test_a_page_that_cannot_be_prepared_fails_alone(engine, dense_reference):
    pages = _pages()
    # mlx-vlm's processor refuses an aspect ratio over 200, as MLXBackend reports it.
    bad = Image.new("RGB", (4, 2000), "white")
    failed, good = _together(
        engine,
        [
            lambda: engine.generate(bad, PROMPT, GREEDY),
            lambda: engine.generate(pages[1], PROMPT, _settings("retry", 1)),
        ],
    )
    assert isinstance(failed, BackendError)
    assert "mlx-vlm failed on this page: Failed to process inputs" in str(failed)
    assert _key(good) == _key(dense_reference["retry", 1])


def test_a_callback_that_raises_fails_its_own_call_only(engine, dense_reference):
    pages = _pages()

    def explode(piece: str) -> bool:
        raise KeyError("boom")

    raised, good = _together(
        engine,
        [
            lambda: engine.generate(pages[0], PROMPT, RETRY, on_piece=explode),
            lambda: engine.generate(pages[1], PROMPT, _settings("retry", 1)),
        ],
    )
    assert isinstance(raised, KeyError)
    assert _key(good) == _key(dense_reference["retry", 1])
    # The engine goes on: its row was freed.
    again = engine.generate(pages[2], PROMPT, _settings("retry", 2))
    assert _key(again) == _key(dense_reference["retry", 2])


def test_a_failing_step_fails_its_pages_and_the_engine_goes_on(tiny_models, dense_reference, monkeypatch):
    engine = _batched(tiny_models.dense_mlx, 2)
    pages = _pages()
    try:
        generator_class = type(engine._generator)
        original = generator_class.next
        calls = {"n": 0}

        def next_once_broken(self, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("[metal] command buffer failed")
            return original(self, **kwargs)

        monkeypatch.setattr(generator_class, "next", next_once_broken)
        results = _together(
            engine,
            [(lambda i=i: engine.generate(pages[i], PROMPT, _settings("retry", i))) for i in range(2)],
        )
        assert all(isinstance(r, BackendError) for r in results), results
        assert "command buffer failed (2 pages in the step)" in str(results[0])
        # A fresh generator for the next pages, which read as alone.
        monkeypatch.setattr(generator_class, "next", original)
        assert _key(engine.generate(pages[2], PROMPT, _settings("retry", 2))) == _key(dense_reference["retry", 2])
    finally:
        engine.close()


def test_a_scheduler_that_breaks_fails_every_page_and_refuses_more(tiny_models, monkeypatch):
    from qwenocr.engines import mlx_batch

    def broken(self, row, token, finish):
        raise AssertionError("a bug in the scheduler")

    monkeypatch.setattr(mlx_batch.MLXBatchBackend, "_take", broken)
    engine = _batched(tiny_models.dense_mlx, 2)
    pages = _pages()
    try:
        results = _together(engine, [(lambda i=i: engine.generate(pages[i], PROMPT, GREEDY)) for i in range(2)])
        assert all(isinstance(r, BackendError) for r in results), results
        assert "the MLX engine is broken (AssertionError: a bug in the scheduler)" in str(results[0])
        with pytest.raises(BackendError, match="broken"):
            engine.generate(pages[0], PROMPT, GREEDY)
    finally:
        engine.close()


def test_close_idle_after_use_and_with_pages_in_flight(tiny_models):
    pages = _pages()
    idle = _batched(tiny_models.dense_mlx, 2)
    idle.close()
    idle.close()  # twice is fine
    with pytest.raises(BackendError, match="closed"):
        idle.generate(pages[0], PROMPT, GREEDY)

    busy = _batched(tiny_models.dense_mlx, 2)
    started = threading.Event()

    def first_piece(piece: str) -> bool:
        started.set()
        return True

    long = replace(RETRY, max_tokens=4000)
    results: List = []
    thread = threading.Thread(
        target=lambda: results.extend(
            _together(
                busy, [(lambda i=i: busy.generate(pages[i], PROMPT, long, on_piece=first_piece)) for i in range(3)]
            )
        )
    )
    thread.start()
    assert started.wait(timeout=300)
    busy.close()
    thread.join(timeout=300)
    assert len(results) == 3
    assert all(isinstance(r, BackendError) and "closed" in str(r) for r in results), results


def test_a_model_directory_that_does_not_load_fails_in_the_constructor(tmp_path):
    from qwenocr.engines.mlx_batch import MLXBatchBackend

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BackendError, match="mlx-vlm could not load"):
        MLXBatchBackend(tmp_path, batch=2)
