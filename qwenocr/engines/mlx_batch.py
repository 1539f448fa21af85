"""The MLX engine with several pages decoding at once: mlx-vlm's `BatchGenerator`, one page per row.

`MLXBackend` reads one page at a time through `mlx_vlm.stream_generate`. This engine
loads the same model and keeps up to `batch` pages going in one mlx-vlm
`BatchGenerator` (continuous batching):

- `generate()` may be called from up to `batch` threads at once (`concurrency = batch`).
  Each call queues its page and waits; one scheduler thread loads the model and makes
  every mlx call (MLX is not thread-safe), so the callers' threads touch no array.
- A page that gets a free row is prepared as `stream_generate` prepares it (the chat
  template with `enable_thinking=False`, mlx-vlm's `prepare_inputs`, the vision tower
  through `get_input_embeddings`) and inserted with its own `max_tokens`. mlx-vlm then
  prefills it alone (`prefill_batch_size = 1`: its own cache, its own chunks, so its
  first token is computed as the single-page engine computes it; a page's image shape
  does not matter, rows of any size decode together), one prefill chunk between decode
  steps, and merges its cache into the batch's (left-padded KV, per-row Gated DeltaNet
  state, per-row mRoPE offsets).
- Each `BatchGenerator.next()` is one decode step for every live row. A page ends at an
  end-of-generation token ("stop"), at `max_tokens` ("length"), or when its caller's
  `on_piece` returns False or its caller gives up ("aborted": the row is removed with
  `BatchGenerator.remove`, the other rows go on); the next waiting page takes the row.

Same text as one page at a time. Greedy: the scheduler's sampler is argmax over the
logits plus the unused-token mask that `MLXBackend` adds. The prefill is the single-page
computation; a decode step that holds several rows runs the matrix products with
several rows, whose sums MLX could order differently, so logits could move by rounding
and a greedy token change where the two likeliest tie within that. On the tiny
checkpoints (dense and MoE, MXFP4, mlx[cpu]) every page's text, greedy and sampled, is
the single-page engine's at batch 1 and 4 (tests/test_mlx_batch.py), and the benchmark
(benchmarks/bench_batch_mlx.py) compares every page at batch 1 to 8. The text is streamed with
mlx-vlm's streaming detokenizer, piece by piece as `stream_generate` yields it, and the
token count and finish reason follow `MLXBackend`'s rules.

Sampled pages (temperature > 0, or a repetition penalty: the pipeline's retry after a
loop) get a per-row logits processor that does what `stream_generate` does for them
(the repetition penalty over the same 20-token window, the mask, top-p then top-k, the
temperature) and draws with the page's own key, split as `mx.random.seed(seed)` then
`categorical` splits the global key: the same draws as `MLXBackend` for the same logits,
whatever the other rows do, and no shared random state between pages.

Limits (mlx-vlm 0.7.10): a decode step that raises fails every page live in it (mlx-vlm
cannot say which row broke); the generator is then rebuilt for the pages still waiting.
Prefill is one page at a time: pages of the same shape could be prefilled in one
forward pass, but that changes their first logits by rounding and a 1-page prefill is
already a full matrix product. Memory grows by one KV cache (+ one recurrent state) per
row, as the fit plan counts for llama.cpp.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Counter, Dict, List, Optional

from PIL import Image

from qwenocr.engines.base import Generation, GenerationSettings, PieceCallback
from qwenocr.engines.mlx import MAX_IMAGE_TOKENS
from qwenocr.engines.pagequeue import PageQueue, PageRequest

# `stream_generate`'s repetition-penalty window (mlx-vlm's DEFAULT_REPETITION_CONTEXT_SIZE).
PENALTY_CONTEXT = 20


@dataclass
class _Request(PageRequest):
    """One page: what its caller asked for (and, from PageRequest, the events back)."""

    image: Image.Image
    prompt: str
    settings: GenerationSettings


@dataclass
class _Row:
    """A page decoding in the generator as `uid`."""

    uid: int
    request: _Request
    detokenizer: Any
    generated: int = 0


class MLXBatchBackend:
    """An MLX model directory read by mlx-vlm's BatchGenerator, `batch` pages at once."""

    name = "mlx"
    concurrency: int
    max_image_tokens: Optional[int] = MAX_IMAGE_TOKENS

    def __init__(self, model_dir: Path, *, batch: int = 4, verbose: bool = False):
        if batch < 1:
            raise ValueError(f"batch must be at least 1 (got {batch})")
        self.concurrency = batch
        self.verbose = verbose
        self._queue: PageQueue[_Request] = PageQueue("MLX")
        # Pages admitted per row slot so far (continuous batching reuses them).
        self.admissions: Counter[int] = collections.Counter()
        # Where the scheduler's time went (benchmarks/bench_batch_mlx.py reports it):
        # prefill_s = pages' preparation and vision tower + mlx-vlm's prompt time
        # (one page at a time); decode_s = the shared decode steps; steps and the
        # page-tokens they decoded.
        self.stats: Dict[str, float] = {"prefill_s": 0.0, "decode_s": 0.0, "steps": 0, "step_tokens": 0}
        self._loaded: "queue.SimpleQueue[Optional[BaseException]]" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = threading.Thread(
            target=self._run, args=(Path(model_dir),), name="qwenocr-mlx-batch", daemon=True
        )
        self._thread.start()
        error = self._loaded.get()
        if error is not None:
            self._thread.join()
            self._thread = None
            raise error

    def generate(
        self,
        image: Image.Image,
        prompt: str,
        settings: GenerationSettings,
        on_piece: Optional[PieceCallback] = None,
    ) -> Generation:
        request = _Request(image=image.copy(), prompt=prompt, settings=settings)
        text, tokens, finish = self._queue.submit_and_wait(request, on_piece)
        # MLXBackend's rule: a page that stopped on its last allowed token ran to length.
        if finish == "stop" and tokens >= settings.max_tokens:
            finish = "length"
        return Generation(text=text, output_tokens=tokens, prompt_tokens=request.prompt_tokens, finish_reason=finish)

    def close(self) -> None:
        """Stop the scheduler (pages still waiting or decoding fail) and free the model."""
        self._queue.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
            _wait_until_gone(thread)
        self._thread = None

    # The scheduler's side: everything below runs in its thread only.

    def _run(self, model_dir: Path) -> None:
        try:
            from qwenocr.engines.mlx import MLXBackend

            # The single-page engine loads the model (its errors, its mask), and its
            # model and processor are used from here only.
            single = MLXBackend(model_dir, verbose=self.verbose)
            self._model, self._processor = single.model, single.processor
            self._mask = single._unused_token_mask()
            self._generator = self._new_generator()
        except BaseException as error:  # noqa: BLE001 - handed to the constructor's thread
            self._loaded.put(error)
            return
        self._loaded.put(None)
        rows: Dict[int, _Row] = {}
        slots: Dict[int, int] = {}  # uid -> the row slot it took (for `admissions`)
        try:
            while True:
                admitted = self._queue.next_pages(busy=bool(rows), room=self.concurrency - len(rows))
                if admitted is None:
                    break
                for request in admitted:
                    started = time.perf_counter()
                    row = self._admit(request)
                    self.stats["prefill_s"] += time.perf_counter() - started
                    if row is not None:
                        rows[row.uid] = row
                        slot = min(set(range(self.concurrency)) - set(slots.values()))
                        slots[row.uid] = slot
                        self.admissions[slot] += 1
                for row in [r for r in rows.values() if r.request.cancelled]:
                    self._generator.remove(row.uid)
                    del rows[row.uid]
                    slots.pop(row.uid, None)
                if not rows:
                    continue
                ended = self._step(rows)
                for uid in ended:
                    rows.pop(uid, None)
                    slots.pop(uid, None)
        except BaseException as error:  # noqa: B036 - a bug here must fail the pages, not hang them
            self._queue.broken = f"broken ({type(error).__name__}: {error})"
        finally:
            self._queue.fail_all(row.request for row in rows.values())
            self._free()

    def _new_generator(self) -> Any:
        import mlx.core as mx
        from mlx_vlm.generate.ar import BatchGenerator

        mask = self._mask

        def greedy(logprobs: Any) -> Any:
            # MLXBackend adds the mask to the logits; argmax is the same either way. A
            # sampled row's processor leaves only its drawn token finite, so this takes it.
            return mx.argmax(logprobs if mask is None else logprobs + mask, axis=-1)

        return BatchGenerator(
            self._model.language_model,
            self._processor,
            sampler=greedy,
            greedy_sampling=True,
            compute_logprobs=False,
            prefill_batch_size=1,  # each page prefilled alone: see the module docstring
            completion_batch_size=self.concurrency,
        )

    def _admit(self, request: _Request) -> Optional[_Row]:
        """Prepare `request`'s inputs and insert it; None (and the caller told) if that fails."""
        if request.settings.max_tokens <= 0:  # stream_generate yields nothing then
            request.events.put(("end", "length", 0))
            return None
        try:
            return self._insert(request)
        except Exception as error:  # noqa: BLE001 - one page's failure must not stop the others
            # MLXBackend's message for the same failure (prepare_inputs raises ValueError).
            request.events.put(("error", f"mlx-vlm failed on this page: {error}"))
            return None

    def _insert(self, request: _Request) -> _Row:
        import mlx.core as mx
        from mlx_vlm.generate.common import generation_stream
        from mlx_vlm.prompt_utils import apply_chat_template
        from mlx_vlm.tokenizer_utils import make_streaming_detokenizer
        from mlx_vlm.utils import prepare_inputs, should_add_special_tokens

        model, processor = self._model, self._processor
        formatted = apply_chat_template(processor, model.config, request.prompt, num_images=1, enable_thinking=False)
        # As stream_generate prepares one page (mlx_vlm.generate.dispatch._prepare_generation_inputs).
        inputs = prepare_inputs(
            processor,
            images=[request.image],
            prompts=formatted,
            image_token_index=getattr(model.config, "image_token_index", None),
            add_special_tokens=should_add_special_tokens(model.config.model_type, processor),
        )
        request.image = None  # type: ignore[assignment]  # its pixels are in the inputs now
        input_ids = inputs["input_ids"]
        data = {k: v for k, v in inputs.items() if k not in ("input_ids", "pixel_values", "attention_mask")}
        with mx.stream(generation_stream):  # where stream_generate embeds
            embedded = model.get_input_embeddings(
                input_ids, inputs.get("pixel_values"), mask=inputs.get("attention_mask"), **data
            )
            prompt_kwargs = {**data, **{k: v for k, v in embedded.to_dict().items() if v is not None}}
            mx.eval(prompt_kwargs["inputs_embeds"])
        ids = input_ids[0].tolist()
        request.prompt_tokens = int(input_ids.size)
        settings = request.settings
        processors = None
        if settings.temperature > 0 or settings.repetition_penalty:
            processors = [_SampledRow(settings, len(ids), self._mask, model.config)]
        [uid] = self._generator.insert(
            [ids], [settings.max_tokens], prompt_kwargs=[prompt_kwargs], logits_processors=[processors]
        )
        return _Row(uid=uid, request=request, detokenizer=make_streaming_detokenizer(processor))

    def _step(self, rows: Dict[int, _Row]) -> List[int]:
        """One `BatchGenerator.next()`; return the uids whose page ended."""
        generator = self._generator
        started = time.perf_counter()
        prompt_before = generator._prompt_time_counter
        decoding = len(generator._generation_batch)
        try:
            _, responses = generator.next()
        except Exception as error:  # noqa: BLE001 - the step's pages fail, the engine goes on
            message = f"mlx-vlm failed on this page: {type(error).__name__}: {error} ({len(rows)} pages in the step)"
            for row in rows.values():
                row.request.events.put(("error", message))
            self._generator.close()
            self._generator = self._new_generator()
            return list(rows)
        elapsed = time.perf_counter() - started
        prompt = generator._prompt_time_counter - prompt_before
        self.stats["prefill_s"] += prompt
        self.stats["decode_s"] += elapsed - prompt
        if decoding:
            self.stats["steps"] += 1
            self.stats["step_tokens"] += decoding
        ended = []
        for response in responses:
            found = rows.get(response.uid)
            if found is None:  # removed (its caller stopped it) after the step began
                continue
            if self._take(found, response.token, response.finish_reason):
                ended.append(found.uid)
        return ended

    def _take(self, row: _Row, token: int, finish: Optional[str]) -> bool:
        """Take a row's new token; True when its page has ended (as stream_generate counts)."""
        events = row.request.events
        if finish == "stop":
            # The end-of-generation token is not text; stream_generate counts it.
            row.detokenizer.finalize()
            self._send(row)
            events.put(("end", "stop", row.generated + 1))
            return True
        row.generated += 1
        row.detokenizer.add_token(token)
        self._send(row)
        if finish is not None:
            row.detokenizer.finalize()
            self._send(row)
            events.put(("end", "length", row.generated))
            return True
        return False

    @staticmethod
    def _send(row: _Row) -> None:
        """Send the text the row's detokenizer has made readable since the last piece."""
        piece = row.detokenizer.last_segment  # reading it moves its offset
        if piece:
            row.request.events.put(("piece", piece, row.generated))

    def _free(self) -> None:
        import mlx.core as mx
        from mlx_vlm.generate.common import generation_stream

        # The generator evaluates the next step ahead (mx.async_eval): wait for that work
        # before this thread ends. Left in flight, MLX's CPU stream thread is still busy
        # when the process exits, and the C++ runtime aborts it ("terminate called
        # without an active exception", seen in about one exit in three).
        try:
            mx.synchronize(generation_stream)
            mx.synchronize()
        except Exception:  # noqa: BLE001, S110 - freeing is best effort at close
            pass
        generator = getattr(self, "_generator", None)
        if generator is not None:
            generator.close()
        self._generator = None
        self._model = None
        self._processor = None
        mx.clear_cache()


def _wait_until_gone(thread: threading.Thread) -> None:
    """Wait until a joined thread that ran MLX has really ended.

    `join()` returns once the thread's Python code is done; its C++ thread-local objects
    are destroyed after that, and MLX's (mx.compile's per-thread cache, which the Qwen 3.5
    layers use) take the GIL in their destructor. When the interpreter is shutting down
    by then, that thread is ended inside the destructor and the process aborts
    ("terminate called without an active exception"; about one exit in three with the
    tiny checkpoints, and reproduced with a bare mx.compile'd function in a thread). So
    give the GIL up until the thread is gone: on Linux its task entry says so; elsewhere
    a short pause covers the destructors' few microseconds.
    """
    native = thread.native_id
    task = Path(f"/proc/self/task/{native}") if native is not None else None
    if task is None or not Path("/proc/self/task").is_dir():
        time.sleep(0.05)
        return
    deadline = time.monotonic() + 2.0
    while task.exists() and time.monotonic() < deadline:
        time.sleep(0.005)


class _SampledRow:
    """A row's logits processor for settings other than plain greedy: what
    `stream_generate` does for them (mlx_vlm.generate.ar.generate_step with
    mlx_vlm.sample_utils), drawing with this page's own key; it leaves only the chosen
    token finite, so the generator's argmax takes it."""

    def __init__(self, settings: GenerationSettings, prompt_length: int, mask: Any, config: Any):
        import mlx.core as mx
        from mlx_vlm.generate.common import resolve_sampling_defaults
        from mlx_vlm.sample_utils import clamp_temperature

        temperature, top_p, top_k = resolve_sampling_defaults(
            config,
            temperature=settings.temperature,
            top_p=settings.top_p if settings.temperature > 0 else None,
            top_k=(settings.top_k or None) if settings.temperature > 0 else None,
        )
        self.temperature = clamp_temperature(temperature)
        self.top_p = top_p
        self.top_k = top_k
        self.penalty = settings.repetition_penalty
        # The prompt is prefilled in chunks up to its last token, which is then fed with
        # the first step: stream_generate's penalty window starts there.
        self.skip = max(prompt_length - 1, 0)
        self.mask = mask
        self.key = mx.random.key(settings.seed)

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx
        from mlx_vlm.sample_utils import apply_top_k, apply_top_p

        if self.penalty:
            window = tokens[self.skip :][-PENALTY_CONTEXT:]
            if window.size > 0:
                chosen = logits[:, window]
                logits[:, window] = mx.where(chosen < 0, chosen * self.penalty, chosen / self.penalty)
        if self.mask is not None:
            logits = logits + self.mask
        if self.temperature == 0:
            return logits
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        # make_sampler's order: top-p, then top-k.
        if 0 < self.top_p < 1.0:
            logprobs = apply_top_p(logprobs, self.top_p)
        if self.top_k and self.top_k > 0:
            logprobs = apply_top_k(logprobs, self.top_k)
        self.key, draw = mx.random.split(self.key)
        token = mx.random.categorical(logprobs * (1 / self.temperature), key=draw)
        columns = mx.arange(logits.shape[-1])
        return mx.where(columns[None, :] == token[:, None], 0.0, -mx.inf)
