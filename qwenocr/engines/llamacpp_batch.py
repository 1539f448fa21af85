"""The llama.cpp engine with several pages decoding at once: one context, one sequence per page.

`LlamaCppBackend` reads one page at a time through llama-cpp-python's `Llama` class. This
engine loads the same GGUF and mmproj through llama-cpp-python's low-level API instead,
into one context with `n_seq_max = batch` sequences, and keeps up to `batch` pages going:

- `generate()` may be called from up to `batch` threads at once (`concurrency = batch`).
  Each call queues its page and waits; one scheduler thread owns the native context and
  does all the native work, so llama.cpp is never called from two threads.
- A page that gets a free sequence is prefilled into it alone: the chat template rendered
  as the single-page engine renders it, the image and text tokenized by mtmd and
  evaluated with `mtmd_helper_eval_chunks(..., seq_id, ...)` (a batch cannot mix image
  embeddings with tokens, so prefill goes one sequence at a time), and its first token is
  sampled at once.
- Then each step is one `llama_decode` holding the last token of every live sequence, and
  each sequence samples its next token from its own logits row: greedy (argmax) by
  default, or its own sampler chain for the other settings. A page ends at an end-of-
  generation token ("stop"), at `max_tokens` ("length"), or when its caller's `on_piece`
  returns False ("aborted"); its sequence is then removed from the memory
  (`llama_memory_seq_rm(mem, seq, -1, -1)`: KV cells and recurrent state) and the next
  waiting page takes it (continuous batching). When none waits, the highest live
  sequence moves into the gap (`_compact`), so that a step stays one micro-batch.

Memory. The context holds `batch` x `n_ctx` tokens with `kv_unified = False`: llama.cpp
then gives every sequence its own KV stream of `n_ctx_seq = n_ctx` cells (what
`llama_n_ctx_seq` reports), so each page has exactly the context the single-page engine
gives it, whatever the others hold, and attention reads only its own stream. (A unified
cache would let one page take more, but every token would attend over the whole shared
cache with a mask.) Qwen 3.5 is a hybrid model: besides its attention layers' KV it keeps
a recurrent (Gated DeltaNet) state per sequence, and `n_seq_max` is also the number of
those states llama.cpp allocates: memory grows with the batch by `batch` x (KV of `n_ctx`
tokens + one recurrent state), which the fit plan has to count (the tiny test model, from
batch 1 to 4: KV 0.25 to 1.00 MiB, recurrent states 0.03 to 0.12 MiB, as llama.cpp logs).

Same text as one page at a time. Prefill is the single-page engine's computation (same
template, same pixels, same `n_batch`, the sequence alone in its batches): the logits of
the first token are bit-identical. A decode step that holds one token is too; one that
holds several is not quite, because llama.cpp's CPU matrix products add up in another
order for several columns (llamafile's tiled GEMM takes over from ggml's dot products
when n >= 2: "only enable sgemm for prompt processing", ggml-cpu/llamafile/sgemm.cpp).
The logits then move by rounding (tiny F16 models: at most 3.3e-4 of the largest logit;
Q8_0: not at all), and a greedy token can change only where the two likeliest tie within
that; from such a token on, the rest of the page differs. tests/test_llamacpp_batch.py
measures and bounds it. The text a page streams follows llama-cpp-python's own streaming
(`_StockStream`), so that pieces and text are the ones `LlamaCppBackend` produces from
the same tokens, invalid UTF-8 included.

Not done here (for the caller): choosing `batch` from memory; `llama_decode` failing on a
whole step (it should not: each page is kept within its own stream) fails the pages live
in it, not the engine.
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Counter, Dict, List, Optional, Tuple

from PIL import Image

from qwenocr.engines import llamacpp_patches
from qwenocr.engines.base import Generation, GenerationSettings, PieceCallback
from qwenocr.engines.llamacpp import MAX_IMAGE_TOKENS, engine_missing, model_load_error, projector_load_error
from qwenocr.engines.pagequeue import PageQueue, PageRequest
from qwenocr.errors import BackendError

# llama-cpp-python's `Llama` defaults, which the single-page engine runs with: the image
# and prompt are evaluated in batches of this many tokens, so keeping it keeps prefill the
# same computation.
N_BATCH = 512
# `Llama`'s repetition-penalty window (`last_n_tokens_size`).
PENALTY_LAST_N = 64
# `Llama.detokenize` reads each token's piece into a buffer of this many bytes.
PIECE_BUFFER = 32


@dataclass
class _Request(PageRequest):
    """One page: what its caller asked for (and, from PageRequest, the events back)."""

    rgb: bytes
    size: Tuple[int, int]
    text: bytes  # the rendered chat prompt, with mtmd's media marker for the image
    settings: GenerationSettings


@dataclass
class _Sequence:
    """A page being decoded in sequence `seq`."""

    seq: int
    request: _Request
    n_past: int  # the next position
    cells: int  # KV cells this sequence holds
    max_new: int  # tokens it may generate
    stream: "_StockStream"
    sampler: Any = None  # a llama_sampler chain, or None for plain greedy
    generated: int = 0
    pending: int = -1  # the token sampled last, decoded in the next step


class _PageError(Exception):
    """This page cannot be read (it is reported to its caller; the other pages go on)."""


class _StockStream:
    """The text pieces llama-cpp-python's `Llama.create_completion(stream=True)` yields
    for a sequence of tokens (no stop strings, no logprobs), so that this engine streams
    and returns what `LlamaCppBackend` does for the same tokens.

    That code holds back a token while the text ends in the lead byte of an unfinished
    UTF-8 character, then yields the shortest run of held tokens that decodes strictly;
    at the end it yields each leftover token's bytes on their own, dropping what is not
    UTF-8. Pieces are `token_to_piece(special=False)`, so control tokens add nothing.
    One difference, on purpose: that code skips its max_tokens check while it holds a
    token back, so it can run a few tokens past max_tokens; this engine stops at
    max_tokens (its sequence has room for no more) and sends what is held as at the end.
    """

    def __init__(self, piece: Any, bos: int):
        self._piece = piece  # token -> bytes
        self._bos = bos
        self.tokens: List[int] = []
        self._bytes: List[bytes] = []
        self._tail = b""  # the last 3 bytes of the text so far
        self._length = 0  # bytes of all pieces so far
        self._returned = 0
        self._hold = 0
        self._stuck = False

    def _text(self, start: int, end: int) -> bytes:
        data = b"".join(self._bytes[start:end])
        # `Llama.detokenize` drops a leading space after a BOS token (a Llama 1 habit).
        if end > start and self.tokens[start] == self._bos and data[:1] == b" ":
            return data[1:]
        return data

    def push(self, token: int) -> List[str]:
        """Take one generated token (not an end-of-generation one); return the pieces to send."""
        self.tokens.append(token)
        self._bytes.append(self._piece(token))
        self._length += len(self._bytes[-1])
        # The last 3 bytes of the text so far (a leading space dropped after a BOS token
        # changes them only while the text is that short).
        if self._length < 4:
            self._tail = self._text(0, len(self.tokens))[-3:]
        else:
            self._tail = (self._tail + self._bytes[-1])[-3:]
        for offset, char in enumerate(self._tail):
            k = 3 - offset
            for num, pattern in ((2, 192), (3, 224), (4, 240)):
                if num > k and pattern & char == pattern:
                    self._hold = num - k
        if self._hold > 0:
            self._hold -= 1
            return []
        pieces: List[str] = []
        end = len(self.tokens)
        while self._returned < end and not self._stuck:
            for stop in range(self._returned + 1, end + 1):
                try:
                    text = self._text(self._returned, stop).decode("utf-8")
                except UnicodeError:
                    continue
                break
            else:
                # Nothing held decodes yet. When that is for bytes that are not UTF-8 (not
                # merely unfinished), no later token can change it: skip the quadratic retry
                # until the end, which gives the same pieces.
                try:
                    codecs.getincrementaldecoder("utf-8")().decode(self._text(self._returned, end), final=False)
                except UnicodeError:
                    self._stuck = True
                break
            self._returned = stop
            if text:
                pieces.append(text)
        return pieces

    def flush(self) -> List[str]:
        """The generation ended: the pieces of the tokens still held."""
        pieces = []
        start, count = self._returned, len(self.tokens)
        end = len(self._text(start, count))
        position = 0
        for index in range(start, count):
            data = self._text(index, index + 1)
            position += len(data)
            if position >= end:
                data = data[: len(data) - (position - end)]
            text = data.decode("utf-8", errors="ignore")
            if text:
                pieces.append(text)
            if position >= end:
                break
        self._returned = count
        return pieces


class LlamaCppBatchBackend:
    """A GGUF and its mmproj in one llama.cpp context that decodes `batch` pages at once."""

    name = "llama.cpp"
    concurrency: int
    max_image_tokens: Optional[int] = MAX_IMAGE_TOKENS

    def __init__(
        self,
        model_path: Path,
        mmproj_path: Path,
        *,
        batch: int = 4,
        n_ctx: int = 8192,
        n_gpu_layers: int = -1,
        tensor_split: Optional[List[float]] = None,
        n_threads: Optional[int] = None,
        verbose: bool = False,
        experts_on_cpu: bool = False,
    ):
        if batch < 1:
            raise ValueError(f"batch must be at least 1 (got {batch})")
        try:
            import llama_cpp.llama_cpp as lib
            import llama_cpp.mtmd_cpp as mtmd
            from llama_cpp import llama_chat_format
        except ImportError:
            raise engine_missing() from None
        self._lib = lib
        self._mtmd = mtmd
        self.concurrency = batch
        self.n_ctx = n_ctx
        self.verbose = verbose
        # Native handles (ctypes pointers), None once freed.
        self._model: Any = None
        self._ctx: Any = None
        self._mctx: Any = None
        self._batch: Any = None
        self._thread: Optional[threading.Thread] = None
        self._queue: PageQueue[_Request] = PageQueue("llama.cpp")
        # Pages admitted per sequence id so far (continuous batching reuses them).
        self.admissions: Counter[int] = collections.Counter()
        # Where the scheduler's time went (benchmarks/bench_batch.py reports it): seconds in
        # prefills (image encode + prompt, one page at a time) and in shared decode steps,
        # the steps taken and the page-tokens they decoded.
        # `moves`: sequences moved to close a gap in the ids (_compact).
        self.stats: Dict[str, float] = {"prefill_s": 0.0, "decode_s": 0.0, "steps": 0, "step_tokens": 0, "moves": 0}

        llamacpp_patches.install(verbose)
        lib.llama_backend_init()
        # The model's parameters as `Llama` sets them; the patches' switches (no extra
        # buffer types on AMX builds, MoE experts in RAM) apply to the defaults while it loads.
        with (
            llamacpp_patches.without_extra_buffer_types(lib),
            llamacpp_patches.experts_on_cpu(lib, experts_on_cpu) as self.experts_on_cpu,
        ):
            params = lib.llama_model_default_params()
            params.n_gpu_layers = 0x7FFFFFFF if n_gpu_layers == -1 else n_gpu_layers
            if tensor_split is not None:
                self._tensor_split = (ctypes.c_float * lib.LLAMA_MAX_DEVICES)(*tensor_split)
                params.tensor_split = self._tensor_split
            self._model = lib.llama_model_load_from_file(str(model_path).encode("utf-8"), params)
        if not self._model:
            self._model = None
            raise model_load_error(model_path, f"Failed to load model from file: {model_path}")
        try:
            self._open(mmproj_path, batch, n_ctx, n_threads, llama_chat_format)
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._run, name="qwenocr-llama-batch", daemon=True)
        self._thread.start()

    def _open(self, mmproj_path: Path, batch: int, n_ctx: int, n_threads: Optional[int], chat: Any) -> None:
        """The context, the projector and the chat template, for a loaded model."""
        import numpy

        lib, mtmd = self._lib, self._mtmd
        self._np = numpy
        self._vocab = lib.llama_model_get_vocab(self._model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self._vocab))
        cpus = os.cpu_count() or 1
        # Threads as `Llama` sets them: its default for one token at a time (half the
        # logical CPUs), all of them for batches (llama.cpp picks by the batch's size).
        self.n_threads = n_threads or max(cpus // 2, 1)
        params = lib.llama_context_default_params()
        params.n_ctx = batch * n_ctx
        params.n_batch = min(n_ctx, N_BATCH)
        params.n_ubatch = min(n_ctx, N_BATCH)
        params.n_seq_max = batch
        params.kv_unified = False  # one KV stream per sequence, of n_ctx cells each (module docstring)
        params.n_threads = self.n_threads
        params.n_threads_batch = cpus
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED  # as LlamaCppBackend
        self._ctx = lib.llama_init_from_model(self._model, params)
        if not self._ctx:
            self._ctx = None
            raise BackendError(
                f"llama.cpp could not make a context for {batch} pages of {n_ctx} tokens",
                "lower the batch or the context size",
            )
        self._mem = lib.llama_get_memory(self._ctx)
        self.n_batch = int(lib.llama_n_batch(self._ctx))
        self.n_ctx_seq = int(lib.llama_n_ctx_seq(self._ctx))
        self.n_seq_max = int(lib.llama_n_seq_max(self._ctx))
        if self.n_seq_max < batch or self.n_ctx_seq < n_ctx:
            raise BackendError(
                f"llama.cpp made {self.n_seq_max} sequences of {self.n_ctx_seq} tokens, "
                f"not the {batch} of {n_ctx} asked for"
            )
        self._batch = lib.llama_batch_init(batch, 0, 1)

        mparams = mtmd.mtmd_context_params_default()
        mparams.use_gpu = True
        mparams.print_timings = self.verbose
        mparams.n_threads = self.n_threads
        mparams.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self._mctx = mtmd.mtmd_init_from_file(str(mmproj_path).encode(), self._model, mparams)
        if not self._mctx or not mtmd.mtmd_support_vision(self._mctx):
            reason = f"Failed to load mtmd context from: {mmproj_path}" if not self._mctx else "no vision"
            raise projector_load_error(mmproj_path, reason)
        self._marker = mtmd.mtmd_default_marker().decode("utf-8")

        self._piece_buffer = ctypes.create_string_buffer(PIECE_BUFFER)
        self._pieces: Dict[int, bytes] = {}
        self._bos = int(lib.llama_vocab_bos(self._vocab))
        source = self._metadata("tokenizer.chat_template")
        if not source:
            raise BackendError(f"llama.cpp: {self._model_name()} has no chat template (tokenizer.chat_template)")
        self._template = _compile_template(chat, source)
        self._template_vars = {
            # What MTMDChatHandler passes: the tokens' text as `Llama.detokenize` gives it.
            "eos_token": self._detokenize_one(int(lib.llama_vocab_eos(self._vocab))),
            "bos_token": self._detokenize_one(self._bos),
            "strftime_now": chat.Jinja2ChatFormatter.strftime_now,
        }
        self._convert_message = chat.MTMDChatHandler._convert_message_for_template

    def _model_name(self) -> str:
        return self._metadata("general.name") or "the model"

    def _metadata(self, key: str) -> Optional[str]:
        size = 1 << 16
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = self._lib.llama_model_meta_val_str(self._model, key.encode(), buffer, size)
            if n < 0:
                return None
            if n < size:
                return buffer.value.decode("utf-8", errors="replace")
            size = n + 1

    def _piece(self, token: int) -> bytes:
        """A token's bytes as `Llama.detokenize` reads them (special tokens: none)."""
        piece = self._pieces.get(token)
        if piece is None:
            buffer = self._piece_buffer
            n = self._lib.llama_token_to_piece(self._vocab, token, buffer, PIECE_BUFFER, 0, False)
            piece = self._pieces[token] = buffer.raw[:n]
        return piece

    def _detokenize_one(self, token: int) -> str:
        if token < 0:
            return ""
        piece = self._piece(token)
        if token == self._bos and piece[:1] == b" ":
            piece = piece[1:]
        return piece.decode("utf-8", errors="ignore")

    # The caller's side

    def render(self, prompt: str) -> str:
        """The chat prompt for one page, as LlamaCppBackend's handler renders it (thinking off)."""
        message = {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": llamacpp_patches.PAGE_URL}},
                {"type": "text", "text": prompt},
            ],
        }

        def raise_exception(text: str):
            raise ValueError(text)

        text = self._template.render(
            messages=[self._convert_message(message, self._marker)],
            add_generation_prompt=True,
            raise_exception=raise_exception,
            functions=None,
            function_call=None,
            tools=None,
            tool_choice=None,
            enable_thinking=False,
            **self._template_vars,
        )
        return text.replace(llamacpp_patches.PAGE_URL, self._marker)

    def generate(
        self,
        image: Image.Image,
        prompt: str,
        settings: GenerationSettings,
        on_piece: Optional[PieceCallback] = None,
    ) -> Generation:
        # The page's pixels and prompt are prepared here, in the caller's thread, while the
        # scheduler decodes the others.
        rgb = image.convert("RGB")
        text = self.render(prompt).encode("utf-8")
        request = _Request(rgb=rgb.tobytes(), size=rgb.size, text=text, settings=settings)
        page, tokens, finish = self._queue.submit_and_wait(request, on_piece)
        return Generation(text=page, output_tokens=tokens, prompt_tokens=request.prompt_tokens, finish_reason=finish)

    def close(self) -> None:
        """Stop the scheduler (pages still waiting or decoding fail) and free the context."""
        self._queue.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._thread = None
        lib = self._lib
        if self._batch is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        if self._mctx is not None:
            self._mtmd.mtmd_free(self._mctx)
            self._mctx = None
        if self._ctx is not None:
            lib.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            lib.llama_model_free(self._model)
            self._model = None

    # The scheduler's side: everything below runs in its thread only.

    def _run(self) -> None:
        free = list(range(self.concurrency))
        live: List[_Sequence] = []
        admitted: List[Tuple[_Request, int]] = []  # taken from the queue, not yet live
        try:
            while True:
                taken = self._queue.next_pages(busy=bool(live), room=len(free))
                if taken is None:
                    break
                for request in taken:
                    seq = min(free)  # the lowest free id: see _step
                    free.remove(seq)
                    admitted.append((request, seq))
                    self.admissions[seq] += 1
                while admitted:
                    request, seq = admitted[0]
                    started = time.perf_counter()
                    sequence = self._admit(request, seq)
                    self.stats["prefill_s"] += time.perf_counter() - started
                    if sequence is not None and not self._first(sequence):
                        live.append(sequence)
                    else:
                        self._release(seq, sequence)
                        free.append(seq)
                    admitted.pop(0)
                for sequence in [s for s in live if s.request.cancelled]:
                    live.remove(sequence)
                    self._release(sequence.seq, sequence)
                    free.append(sequence.seq)
                if self._queue.is_empty():
                    self._compact(live, free)
                if live:
                    started, tokens = time.perf_counter(), len(live)
                    ended = self._step(live)
                    self.stats["decode_s"] += time.perf_counter() - started
                    self.stats["steps"] += 1
                    self.stats["step_tokens"] += tokens
                    for sequence in ended:
                        live.remove(sequence)
                        self._release(sequence.seq, sequence)
                        free.append(sequence.seq)
        except BaseException as error:  # noqa: B036 - a bug here must fail the pages, not hang them
            self._queue.broken = f"broken ({type(error).__name__}: {error})"
        finally:
            self._queue.fail_all([s.request for s in live] + [request for request, _ in admitted])
            for sequence in live:
                try:
                    self._release(sequence.seq, sequence)
                except Exception:  # noqa: BLE001, S110 - close() frees the whole context anyway
                    pass

    def _admit(self, request: _Request, seq: int) -> Optional[_Sequence]:
        """Prefill `request` into sequence `seq`; None (and the caller told) if it fails."""
        try:
            return self._prefill(request, seq)
        except _PageError as error:
            request.events.put(("error", f"llama.cpp failed on this page: {error}"))
        except Exception as error:  # noqa: BLE001 - one page's failure must not stop the others
            request.events.put(("error", f"llama.cpp failed on this page: {type(error).__name__}: {error}"))
        return None

    def _first(self, sequence: _Sequence) -> bool:
        """Sample a new sequence's first token from its prefill; True when its page has ended."""
        try:
            return self._advance(sequence, self._sample(sequence, -1))
        except Exception as error:  # noqa: BLE001 - this page fails, the others go on
            sequence.request.events.put(("error", f"llama.cpp failed on this page: {error}"))
            return True

    def _prefill(self, request: _Request, seq: int) -> _Sequence:
        lib, mtmd = self._lib, self._mtmd
        lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
        width, height = request.size
        pixels = (ctypes.c_uint8 * len(request.rgb)).from_buffer_copy(request.rgb)
        bitmap = mtmd.mtmd_bitmap_init(width, height, pixels)
        request.rgb = b""  # the bitmap has its own copy
        if not bitmap:
            raise _PageError("Failed to create bitmap from image bytes")
        chunks = None
        try:
            chunks = mtmd.mtmd_input_chunks_init()
            if not chunks:
                raise _PageError("Failed to create input chunks")
            text = mtmd.mtmd_input_text()
            text.text = request.text
            text.text_len = len(request.text)
            text.add_special = True
            text.parse_special = True
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
            result = mtmd.mtmd_tokenize(self._mctx, chunks, ctypes.byref(text), bitmaps, 1)
            if result != 0:
                raise _PageError(f"Failed to tokenize input: error code {result}")
            cells = int(mtmd.mtmd_helper_get_n_tokens(chunks))
            positions = int(mtmd.mtmd_helper_get_n_pos(chunks))
            # The single-page engine's limits, by the same name; cells (image tokens
            # included) must also fit the sequence's own KV stream.
            if max(cells, positions) >= self.n_ctx_seq:
                raise _PageError(f"Prompt exceeds n_ctx: {cells} tokens (image included), {self.n_ctx_seq} per page")
            new_n_past = lib.llama_pos(0)
            result = mtmd.mtmd_helper_eval_chunks(
                self._mctx, self._ctx, chunks, 0, seq, self.n_batch, True, ctypes.byref(new_n_past)
            )
            if result != 0:
                lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
                raise _PageError(f"Failed to evaluate chunks: error code {result}")
        finally:
            if chunks:
                mtmd.mtmd_input_chunks_free(chunks)
            mtmd.mtmd_bitmap_free(bitmap)
        request.prompt_tokens = cells
        n_past = int(new_n_past.value)
        settings = request.settings
        # `Llama.create_completion`: max_tokens <= 0 means up to the context's end, and
        # it is cut to what is left of the context. The last token is sampled but never
        # decoded, hence + 1 for the cells.
        room = self.n_ctx_seq - n_past
        max_new = settings.max_tokens if settings.max_tokens and settings.max_tokens > 0 else room
        max_new = min(max_new, room, self.n_ctx_seq - cells + 1)
        sequence = _Sequence(
            seq=seq,
            request=request,
            n_past=n_past,
            cells=cells,
            max_new=max_new,
            stream=_StockStream(self._piece, self._bos),
        )
        if not (settings.temperature == 0.0 and settings.repetition_penalty in (None, 1.0)):
            sequence.sampler = self._sampler_chain(settings)
        return sequence

    def _sampler_chain(self, settings: GenerationSettings) -> Any:
        """The sampler chain `Llama` builds for these settings (its `_init_sampler`)."""
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        links = [
            lib.llama_sampler_init_penalties(self.n_vocab, PENALTY_LAST_N, settings.repetition_penalty or 1.0, 0.0, 0.0)
        ]
        if settings.temperature < 0.0:
            links.append(lib.llama_sampler_init_dist(settings.seed))
        elif settings.temperature == 0.0:
            links.append(lib.llama_sampler_init_greedy())
        else:
            links += [
                lib.llama_sampler_init_top_k(settings.top_k),
                lib.llama_sampler_init_typical(1.0, 1),
                lib.llama_sampler_init_top_p(settings.top_p, 1),
                lib.llama_sampler_init_min_p(0.0, 1),
                lib.llama_sampler_init_temp(settings.temperature),
                lib.llama_sampler_init_dist(settings.seed),
            ]
        for link in links:
            lib.llama_sampler_chain_add(chain, link)
        return chain

    def _sample(self, sequence: _Sequence, index: int) -> int:
        lib = self._lib
        if sequence.sampler is not None:
            return int(lib.llama_sampler_sample(sequence.sampler, self._ctx, index))
        np = self._np
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, index), shape=(self.n_vocab,))
        # The first of equal maxima, as llama.cpp's greedy sampler picks.
        return int(np.argmax(logits))

    def _advance(self, sequence: _Sequence, token: int) -> bool:
        """Take the sequence's new token; True when its page has ended."""
        request = sequence.request
        if self._lib.llama_vocab_is_eog(self._vocab, token):
            return self._finish(sequence, "stop")
        sequence.generated += 1
        for piece in sequence.stream.push(token):
            request.events.put(("piece", piece, sequence.generated))
        if sequence.generated >= sequence.max_new:
            return self._finish(sequence, "length")
        sequence.pending = token
        return False

    def _finish(self, sequence: _Sequence, reason: str) -> bool:
        request = sequence.request
        for piece in sequence.stream.flush():
            request.events.put(("piece", piece, sequence.generated))
        request.events.put(("end", reason, sequence.generated))
        return True

    def _step(self, live: List[_Sequence]) -> List[_Sequence]:
        """One decode for every live sequence; return those whose page ended."""
        lib, batch = self._lib, self._batch
        # With a KV stream per sequence, llama.cpp puts sequences in one micro-batch only
        # while their ids follow each other (0, 1, 2...) in the batch; a gap would split
        # the step into several, slower but the same text: _compact closes the gaps.
        live.sort(key=lambda sequence: sequence.seq)
        for index, sequence in enumerate(live):
            batch.token[index] = sequence.pending
            batch.pos[index] = sequence.n_past
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = sequence.seq
            batch.logits[index] = True
        batch.n_tokens = len(live)
        result = lib.llama_decode(self._ctx, batch)
        if result != 0:
            message = f"llama.cpp failed on this page: llama_decode returned {result} ({len(live)} pages in the step)"
            for sequence in live:
                sequence.request.events.put(("error", message))
            return list(live)
        ended = []
        for index, sequence in enumerate(live):
            sequence.n_past += 1
            sequence.cells += 1
            try:
                if self._advance(sequence, self._sample(sequence, index)):
                    ended.append(sequence)
            except Exception as error:  # noqa: BLE001 - this page fails, the others go on
                sequence.request.events.put(("error", f"llama.cpp failed on this page: {error}"))
                ended.append(sequence)
        return ended

    def _compact(self, live: List[_Sequence], free: List[int]) -> None:
        """Close the gaps in the live sequences' ids, when no page waits to fill them.

        A step keeps its sequences in one micro-batch only while their ids follow each
        other (see _step): after a page ends with none waiting (a document's last pages),
        ids 0, 2, 3 would decode as two micro-batches, at about twice a step's cost. The
        highest live sequence moves into the lowest free id instead: its KV stream is
        copied (llama.cpp copies a whole stream between streams before the next decode)
        and its recurrent state cell is shared, then the old id is removed. The tokens,
        positions and sampler go with the page: the same text.
        """
        while live and free and min(free) < max(sequence.seq for sequence in live):
            target = min(free)
            moving = max(live, key=lambda sequence: sequence.seq)
            self._lib.llama_memory_seq_cp(self._mem, moving.seq, target, -1, -1)
            self._lib.llama_memory_seq_rm(self._mem, moving.seq, -1, -1)
            free.remove(target)
            free.append(moving.seq)
            moving.seq = target
            self.stats["moves"] += 1

    def _release(self, seq: int, sequence: Optional[_Sequence]) -> None:
        """Free sequence `seq`: its KV cells and recurrent state, and its sampler chain."""
        self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
        if sequence is not None and sequence.sampler is not None:
            self._lib.llama_sampler_free(sequence.sampler)
            sequence.sampler = None


def _compile_template(chat: Any, source: str) -> Any:
    """The GGUF's chat template in the environment MTMDChatHandler renders it with."""
    import jinja2.ext

    environment = chat.ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[chat.Jinja2ChatFormatter.IgnoreGenerationTags, jinja2.ext.loopcontrols],
    )
    environment.filters["tojson"] = chat.Jinja2ChatFormatter.tojson
    return environment.from_string(source)
