"""The batched llama.cpp engine on the tiny GGUFs: several pages decoding in one context.

`LlamaCppBatchBackend` must read each page as `LlamaCppBackend` reads it alone, whatever
else is in the batch: the prompt's logits to the bit, the same greedy text (decoding in a
batch moves logits by rounding only: measured and bounded here), the same text for seeded
sampling, each page in its own call, a stopped or failing page costing only itself, and
sequences reused when there are more pages than the batch. The pages are real drawn text
pages of different sizes (so different numbers of image tokens); the dense and MoE
fixtures run, and the dense one quantized to Q8_0 (the fixtures have no quantized GGUF).
Every comparison can fail: the pages' texts (sampled) and prompt logits differ.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Callable, Dict, List, Optional

import pytest
from PIL import Image

from qwenocr.engines.base import Backend, Generation, GenerationSettings
from qwenocr.errors import BackendError
from tests.support import samples

pytestmark = pytest.mark.engine

PROMPT = "Read the text of this page."
N_CTX = 1024
GREEDY = GenerationSettings(max_tokens=24, temperature=0.0)
# Random weights answer every page with the same newlines greedily; sampling makes each
# page's text its own, so that a page given another's text would show. Among the top 40
# only: over the whole vocabulary the random model's distribution is so flat that the
# rounding of a batched step (see the greedy test) can move a draw to the next token.
SAMPLED = GenerationSettings(max_tokens=24, temperature=1.0, top_p=1.0, top_k=40, seed=7)
KINDS = ["dense", "moe", "q8"]
# Six page shapes: 48 to 99 visual tokens (one per 32 x 32 pixels).
SIZES = [(256, 320), (224, 288), (320, 256), (288, 352), (192, 256), (352, 288)]

_QUANTIZE = """
import ctypes, sys
import llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = 7  # Q8_0: the tiny model's 64-wide tensors take its 32-wide blocks
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


def _pages() -> List[Image.Image]:
    return [samples.page_image(n + 1, size) for n, size in enumerate(SIZES)]


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory) -> Dict[str, tuple]:
    """GGUF and mmproj per kind: the dense and MoE fixtures, and the dense one quantized to Q8_0."""
    q8 = tmp_path_factory.mktemp("q8") / "Qwen3.5-Tiny-Q8_0.gguf"
    # In a child: the quantizer logs every tensor to stderr.
    subprocess.run(
        [sys.executable, "-c", _QUANTIZE, str(tiny_models.dense_gguf), str(q8)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {
        "dense": (tiny_models.dense_gguf, tiny_models.dense_mmproj),
        "moe": (tiny_models.moe_gguf, tiny_models.moe_mmproj),
        "q8": (q8, tiny_models.dense_mmproj),
    }


def _single(paths: tuple):
    from qwenocr.engines.llamacpp import LlamaCppBackend

    return LlamaCppBackend(paths[0], paths[1], n_ctx=N_CTX)


def _batched(paths: tuple, batch: int, **options):
    from qwenocr.engines.llamacpp_batch import LlamaCppBatchBackend

    return LlamaCppBatchBackend(paths[0], paths[1], batch=batch, n_ctx=N_CTX, **options)


def _one_by_one(engine: Backend, pages: List[Image.Image], settings=GREEDY) -> List[Generation]:
    return [engine.generate(page, PROMPT, settings) for page in pages]


def _at_once(
    engine: Backend,
    pages: List[Image.Image],
    settings: Optional[List[GenerationSettings]] = None,
    callbacks: Optional[List[Optional[Callable[[str], bool]]]] = None,
):
    """Every page from its own thread at once; each call's Generation, or the error it raised."""
    settings = settings or [GREEDY] * len(pages)
    callbacks = callbacks or [None] * len(pages)

    def read(index: int):
        try:
            return engine.generate(pages[index], PROMPT, settings[index], callbacks[index])
        except BackendError as error:
            return error

    with ThreadPoolExecutor(max_workers=len(pages)) as pool:
        return list(pool.map(read, range(len(pages))))


@pytest.fixture(scope="module")
def dense(models):
    """The single-page engine's sampled texts for the six pages (the reference), and a batch-4 engine."""
    single = _single(models["dense"])
    try:
        reference = _one_by_one(single, _pages(), SAMPLED)
    finally:
        single.close()
    _differs_between_pages(reference)
    engine = _batched(models["dense"], 4)
    yield engine, reference
    engine.close()


def _differs_between_pages(generations: List[Generation]) -> None:
    # The comparisons can fail only if what a page gets depends on the page.
    assert len({g.text for g in generations}) == len(generations), [g.text for g in generations]


@pytest.fixture
def logits(monkeypatch):
    """The logits row each batched page sampled from, step by step: {(batch, page size): [row, ...]}."""
    import numpy as np

    from qwenocr.engines.llamacpp_batch import LlamaCppBatchBackend

    rows: Dict[tuple, list] = {}
    sample = LlamaCppBatchBackend._sample

    def spy(self, sequence, index):
        row = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self._ctx, index), shape=(self.n_vocab,))
        rows.setdefault((self.concurrency, sequence.request.size), []).append(row.copy())
        return sample(self, sequence, index)

    monkeypatch.setattr(LlamaCppBatchBackend, "_sample", spy)
    return rows


def _prompt_logits(engine):
    import llama_cpp
    import numpy as np

    llm = engine._llm
    pointer = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),)).copy()


@pytest.mark.parametrize("kind", KINDS)
def test_each_page_is_prefilled_as_the_single_page_engine_does_to_the_bit(models, kind, logits):
    import numpy as np

    pages = _pages()
    first = replace(GREEDY, max_tokens=1)
    single = _single(models[kind])
    try:
        expected = []
        for page in pages:
            single.generate(page, PROMPT, first)
            expected.append(_prompt_logits(single))
    finally:
        single.close()
    four = _batched(models[kind], 4)
    try:
        _at_once(four, pages, [first] * len(pages))
    finally:
        four.close()
    for page, row in zip(pages, expected, strict=True):
        assert np.array_equal(logits[(4, page.size)][0], row)
    assert not np.array_equal(expected[0], expected[1])  # the comparison can fail


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_text_is_the_same_alone_and_in_a_batch(models, kind, logits):
    """Decoding several pages in one step changes the order in which llama.cpp's CPU
    matrix products add up (one token per step: ggml's vector dot products; several:
    llamafile's tiled GEMM), so the logits move by rounding, and a greedy token can change
    only where the two likeliest tie within that. Measured here, 6 pages x 24 steps:
    F16 dense, 136 of 144 steps moved, by at most 3.3e-4 of the largest logit (most by
    1e-7); F16 MoE, 136 moved by at most 1.2e-7; Q8_0, none moved. No token differed (the
    closest race between the two likeliest tokens was wider than every move). Bounded
    here: no token differs, no logit moves by more than 1% of the largest."""
    import numpy as np

    pages = _pages()
    single = _single(models[kind])
    try:
        reference = _one_by_one(single, pages)
    finally:
        single.close()
    one = _batched(models[kind], 1)
    try:
        alone = _one_by_one(one, pages)
    finally:
        one.close()
    four = _batched(models[kind], 4)
    try:
        together = _at_once(four, pages)
    finally:
        four.close()
    expected = [(g.text, g.finish_reason) for g in reference]
    assert [(g.text, g.finish_reason) for g in alone] == expected
    assert [(g.text, g.finish_reason) for g in together] == expected
    assert all(g.output_tokens == GREEDY.max_tokens for g in together if g.finish_reason == "length")
    steps = moved = 0
    largest = 0.0
    closest = float("inf")
    for page in pages:
        a, b = logits[(1, page.size)], logits[(4, page.size)]
        assert len(a) == len(b)
        assert np.array_equal(a[0], b[0])  # the prompt's, before any batched step
        for x, y in zip(a, b, strict=True):
            steps += 1
            assert int(np.argmax(x)) == int(np.argmax(y))  # the same token at every step
            scale = float(np.max(np.abs(x)))
            difference = float(np.max(np.abs(x - y)))
            moved += difference > 0
            largest = max(largest, difference / scale)
            top = np.partition(x, -2)[-2:]
            closest = min(closest, float(top[1] - top[0]) / scale)
    print(f"\n{kind}: {steps} steps, {moved} moved, by at most {largest:.1e}; closest race {closest:.1e}")
    assert largest <= 1e-2


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_sampling_gives_each_page_the_single_page_engines_text(models, kind):
    pages = _pages()
    single = _single(models[kind])
    try:
        reference = _one_by_one(single, pages, SAMPLED)
    finally:
        single.close()
    _differs_between_pages(reference)
    four = _batched(models[kind], 4)
    try:
        together = _at_once(four, pages, [SAMPLED] * len(pages))
    finally:
        four.close()
    assert [g.text for g in together] == [g.text for g in reference]


def test_more_pages_than_the_batch_reuse_the_sequences(models, dense):
    _, reference = dense
    two = _batched(models["dense"], 2)
    try:
        results = _at_once(two, _pages(), [SAMPLED] * len(SIZES))
        assert [g.text for g in results] == [g.text for g in reference]
        assert all(g.prompt_tokens and g.prompt_tokens > 48 for g in results)
        assert sorted(two.admissions) == [0, 1] and sum(two.admissions.values()) == len(SIZES)
        # and again, on sequences that held other pages before
        again = _at_once(two, _pages()[::-1], [SAMPLED] * len(SIZES))
        assert [g.text for g in again] == [g.text for g in reference][::-1]
    finally:
        two.close()


def test_a_page_told_to_stop_stops_alone(dense):
    engine, reference = dense
    pages = _pages()[:4]
    seen: List[str] = []

    def stop_after_three(piece: str) -> bool:
        seen.append(piece)
        return len(seen) < 3

    results = _at_once(engine, pages, [SAMPLED] * 4, [stop_after_three, None, None, None])
    stopped = results[0]
    assert stopped.finish_reason == "aborted"
    assert stopped.text == "".join(seen) and len(seen) == 3
    assert reference[0].text.startswith(stopped.text) and stopped.text != reference[0].text
    assert 1 <= stopped.output_tokens < SAMPLED.max_tokens
    assert [(g.text, g.finish_reason) for g in results[1:]] == [(g.text, g.finish_reason) for g in reference[1:4]]
    # the stopped page's sequence is free again
    assert engine.generate(pages[0], PROMPT, SAMPLED).text == reference[0].text


def test_each_page_keeps_its_own_max_tokens(models, dense):
    engine, _ = dense
    pages = _pages()[:4]
    limits = [3, 7, 12, 20]
    settings = [replace(SAMPLED, max_tokens=n) for n in limits]
    results = _at_once(engine, pages, settings=settings)
    single = _single(models["dense"])
    try:
        expected = [single.generate(page, PROMPT, s) for page, s in zip(pages, settings, strict=True)]
    finally:
        single.close()
    assert [g.text for g in results] == [g.text for g in expected]
    for generation, limit in zip(results, limits, strict=True):
        assert generation.output_tokens <= limit
        assert generation.finish_reason == ("length" if generation.output_tokens == limit else "stop")


def test_a_gap_left_by_a_finished_page_is_closed_with_the_same_text(models):
    """Page A takes sequence 0 and B sequence 1; A ends first with nothing waiting, so B
    moves to sequence 0 (its KV stream copied, its recurrent state shared) and goes on
    there: its text must be the single-page engine's."""
    pages = _pages()[:2]
    settings = [replace(SAMPLED, max_tokens=3), replace(SAMPLED, max_tokens=20)]
    single = _single(models["dense"])
    try:
        expected = [single.generate(page, PROMPT, s) for page, s in zip(pages, settings, strict=True)]
    finally:
        single.close()
    two = _batched(models["dense"], 2)
    results: Dict[int, Generation] = {}
    try:
        first = threading.Thread(target=lambda: results.setdefault(0, two.generate(pages[0], PROMPT, settings[0])))
        first.start()
        while sum(two.admissions.values()) < 1:  # A holds sequence 0 before B asks
            threading.Event().wait(0.01)
        results[1] = two.generate(pages[1], PROMPT, settings[1])
        first.join()
        assert dict(two.admissions) == {0: 1, 1: 1}
        assert two.stats["moves"] == 1
    finally:
        two.close()
    assert [results[0].text, results[1].text] == [g.text for g in expected]
    assert results[1].output_tokens == 20


def test_the_pipelines_retry_settings_give_the_single_page_engines_text(models, dense):
    engine, _ = dense
    pages = _pages()[:4]
    # what the pipeline retries a looping page with
    sampled = GenerationSettings(max_tokens=16, temperature=0.3, top_p=0.9, top_k=40, repetition_penalty=1.1, seed=1)
    results = _at_once(engine, pages, settings=[sampled] * 4)
    single = _single(models["dense"])
    try:
        expected = _one_by_one(single, pages, sampled)
    finally:
        single.close()
    assert [g.text for g in results] == [g.text for g in expected]


def test_a_page_too_large_for_its_context_fails_alone(dense):
    engine, reference = dense
    pages = _pages()[:3] + [samples.page_image(9, (1600, 1600))]  # 2,500 image tokens > 1,024
    results = _at_once(engine, pages, [SAMPLED] * 4)
    assert isinstance(results[3], BackendError)
    assert "n_ctx" in str(results[3])
    assert [g.text for g in results[:3]] == [g.text for g in reference[:3]]


def test_a_callback_that_raises_fails_its_own_call_only(dense):
    engine, reference = dense
    pages = _pages()[:3]

    def broken(piece: str) -> bool:
        raise ValueError("the caller's own bug")

    def read(index: int):
        try:
            return engine.generate(pages[index], PROMPT, SAMPLED, broken if index == 0 else None)
        except ValueError as error:
            return error

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(read, range(3)))
    assert isinstance(results[0], ValueError)
    assert [g.text for g in results[1:]] == [g.text for g in reference[1:3]]
    assert engine.generate(pages[0], PROMPT, SAMPLED).text == reference[0].text


def test_a_mixed_run_gives_every_page_its_own_text(models, dense):
    """Eighteen calls at batch 3: pages in any order, each with its own max_tokens, some
    told to stop; each ends as it would alone."""
    _, reference = dense
    pages = _pages()
    order = [(n * 5) % 6 for n in range(18)]
    limits = [4 + (n * 7) % 21 for n in range(18)]
    stops = {2: 1, 7: 4, 11: 2, 16: 6}  # call -> pieces before its on_piece says stop

    def stopper(count: int):
        seen: List[str] = []
        return lambda piece: seen.append(piece) or len(seen) < count

    three = _batched(models["dense"], 3)
    try:
        results = _at_once(
            three,
            [pages[i] for i in order],
            [replace(SAMPLED, max_tokens=n) for n in limits],
            [stopper(stops[n]) if n in stops else None for n in range(18)],
        )
    finally:
        three.close()
    single = _single(models["dense"])
    try:
        alone = {
            (i, n): single.generate(pages[i], PROMPT, replace(SAMPLED, max_tokens=n))
            for i, n in set(zip(order, limits, strict=True))
        }
    finally:
        single.close()
    for call, generation in enumerate(results):
        expected = alone[(order[call], limits[call])].text
        if call in stops:
            assert generation.finish_reason == "aborted" and expected.startswith(generation.text)
        else:
            assert generation.text == expected
    assert sum(three.admissions.values()) == 18 and sorted(three.admissions) == [0, 1, 2]


def test_a_scheduler_that_breaks_fails_every_page_and_refuses_more(models, monkeypatch):
    from qwenocr.engines.llamacpp_batch import LlamaCppBatchBackend

    def broken_step(self, live):
        raise RuntimeError("a bug in the scheduler")

    monkeypatch.setattr(LlamaCppBatchBackend, "_step", broken_step)
    engine = _batched(models["dense"], 2)
    try:
        results = _at_once(engine, _pages()[:3], [SAMPLED] * 3)
        assert all(isinstance(r, BackendError) and "broken" in str(r) for r in results)
        with pytest.raises(BackendError, match="broken"):
            engine.generate(_pages()[0], PROMPT, SAMPLED)
    finally:
        engine.close()


def test_close_idle_after_use_and_with_pages_in_flight(models):
    idle = _batched(models["dense"], 2)
    idle.close()
    idle.close()
    with pytest.raises(BackendError, match="closed"):
        idle.generate(_pages()[0], PROMPT, GREEDY)

    busy = _batched(models["dense"], 2)
    started = threading.Event()

    def note(piece: str) -> bool:
        started.set()
        return True

    long = replace(GREEDY, max_tokens=400)
    outcomes: List[object] = []
    threads = [
        threading.Thread(target=lambda p=page: outcomes.append(_at_once(busy, [p], [long], [note])[0]))
        for page in _pages()[:3]
    ]
    for thread in threads:
        thread.start()
    assert started.wait(120)
    busy.close()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    # each call ended: finished before the close, or told that the engine closed
    assert len(outcomes) == 3
    assert any(isinstance(outcome, BackendError) and "closed" in str(outcome) for outcome in outcomes)
    assert busy._ctx is None and busy._model is None


def test_the_context_gives_every_sequence_its_own_full_context(dense):
    engine, _ = dense
    assert engine.concurrency == 4
    assert engine.n_seq_max == 4
    assert engine.n_ctx_seq == N_CTX


# The text pieces follow llama-cpp-python's streaming (no model needed).


def _stream(pieces: Dict[int, bytes], bos: int = -1):
    from qwenocr.engines.llamacpp_batch import _StockStream

    return _StockStream(pieces.__getitem__, bos)


def test_a_character_split_over_tokens_is_sent_once_whole():
    stream = _stream({1: b"a", 2: b"\xe4", 3: b"\xb8", 4: b"\xad", 5: b"b"})
    sent = [stream.push(token) for token in (1, 2, 3, 4, 5)]
    assert sent == [["a"], [], [], ["\u4e2d"], ["b"]]
    assert stream.flush() == []


def test_bytes_that_are_not_utf8_hold_the_rest_back_to_the_end_then_drop():
    stream = _stream({1: b"a", 2: b"\xff", 3: b"b", 4: b"c"})
    assert [stream.push(token) for token in (1, 2, 3, 4)] == [["a"], [], [], []]
    assert stream.flush() == ["b", "c"]
