"""`qwenocr scan`: inputs in, one document out per input, through the planned engine.

The order of work is chosen so that mistakes cost little: arguments and inputs are
checked before the model is loaded (a bad path fails in milliseconds, not after a
minute of loading), the model is loaded once for all inputs, and each input then runs
page by page through the pipeline, with a checkpoint that makes a rerun resume.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import List, Optional, TextIO

from qwenocr.errors import ExitCode, OutputError, QwenOCRError
from qwenocr.pages.document import Document, open_document, parse_page_ranges
from qwenocr.scan.engine import connect_server, load_engine
from qwenocr.scan.inputs import CheckedInput, check_inputs, expand_inputs, output_names
from qwenocr.scan.model_choice import plan_record, resolve_model
from qwenocr.scan.output import DocumentInfo, make_writer
from qwenocr.scan.pipeline import Events, ScanOptions, run_document
from qwenocr.scan.progress import Reporter
from qwenocr.scan.request import ScanRequest
from qwenocr.scan.results import PageResult
from qwenocr.store.resolve import ModelFiles


def run_scan(request: ScanRequest, stdout: TextIO, reporter: Reporter, engine=None) -> ExitCode:
    """Scan every input; return OK, or PARTIAL when some inputs or pages failed.

    `engine` is a seam for the pipeline tests: a callable returning (ModelFiles, plan,
    backend) to use instead of planning, resolving and loading a real model.
    """
    request.inputs = expand_inputs(request.inputs)
    inputs = check_inputs(request)
    good = [item for item in inputs if item.error is None]
    for item in inputs:
        if item.error is not None and len(inputs) > 1:
            reporter.error(item.error.one_line())
    if not good:
        raise inputs[0].error  # type: ignore[misc]

    if request.options.mode != "text":
        _prestart_renderers(good, request)
    if engine is not None:
        model, plan, backend = engine()
    elif request.options.mode == "text":
        # Only the PDFs' own text layers: no model to plan, download or load.
        model, plan, backend = ModelFiles("none", Path(), None, "text-layer"), None, _NoModel()
    elif request.backend == "openai":
        model, plan, backend = connect_server(request, reporter)
    else:
        model, plan = resolve_model(request, reporter)
        backend = load_engine(model, request, plan, reporter)
    record = plan_record(plan)
    render = request.options.render
    engine_cap = getattr(backend, "max_image_tokens", None) or render.engine_max_tokens
    if render.max_image_tokens > engine_cap:
        reporter.warn(
            f"--max-image-tokens {render.max_image_tokens} is above what {backend.name} accepts; using {engine_cap}"
        )
    options = replace(
        request.options, render=replace(render, engine_max_tokens=min(engine_cap, render.engine_max_tokens))
    )

    several = len(inputs) > 1
    outputs = output_names(good, request, several)
    failed_inputs = len(inputs) - len(good)
    finished: List[tuple] = []  # (input name, results, seconds) for the summary
    shared_writer = None

    def scan_item(item: CheckedInput, writer, throttled_backend):
        started = time.monotonic()
        results = _scan_one(
            item, request, options, throttled_backend, model, record, reporter, writer, outputs.get(item.name)
        )
        return results, time.monotonic() - started

    try:
        with reporter:
            if request.output is None:
                shared_writer = make_writer(request.fmt, stdout, several_documents=several)
            slots = max(1, int(getattr(backend, "concurrency", 1) or 1))
            # A server backend takes several pages at once: with several inputs written
            # to separate files, keep it busy across documents, not just within one.
            parallel_documents = min(slots, len(good)) if shared_writer is None else 1
            if parallel_documents > 1:
                from concurrent.futures import ThreadPoolExecutor

                shared_backend = _Throttled(backend, slots)
                with ThreadPoolExecutor(max_workers=parallel_documents, thread_name_prefix="qwenocr-doc") as pool:
                    futures = [(item, pool.submit(scan_item, item, None, shared_backend)) for item in good]
                    for item, future in futures:
                        try:
                            results, seconds = future.result()
                        except QwenOCRError as error:
                            failed_inputs += 1
                            reporter.error(error.one_line())
                            continue
                        finished.append((item.name, results, seconds))
            else:
                for item in good:
                    try:
                        results, seconds = scan_item(item, shared_writer, backend)
                    except QwenOCRError as error:
                        if not several:
                            raise
                        failed_inputs += 1
                        reporter.error(error.one_line())
                        continue
                    finished.append((item.name, results, seconds))
            if shared_writer is not None:
                shared_writer.close()
    finally:
        backend.close()
    # Only now: had the run been interrupted on a later input, a rerun would have had to
    # read the documents finished before it all over again.
    for item in good:
        if item.done_checkpoint is not None:
            item.done_checkpoint.discard()
    if several:
        reporter.summary(finished, failed_inputs)
    page_errors = sum(1 for _, results, _ in finished for r in results if r.status == "error")
    if failed_inputs or page_errors:
        return ExitCode.PARTIAL
    return ExitCode.OK


class _NoModel:
    """The engine of --mode text: every page comes from the text layer."""

    name = "none"
    concurrency = 1

    def generate(self, *args, **kwargs):  # pragma: no cover - never reached in text mode
        raise RuntimeError("--mode text runs no model")

    def close(self) -> None:
        pass


class _Throttled:
    """Shares one backend between documents without exceeding its pages in flight."""

    def __init__(self, backend, slots: int):
        self._backend = backend
        self._slots = threading.BoundedSemaphore(slots)
        self.name = backend.name
        self.concurrency = slots
        self.max_image_tokens = getattr(backend, "max_image_tokens", None)

    def generate(self, *args, **kwargs):
        with self._slots:
            return self._backend.generate(*args, **kwargs)

    def close(self) -> None:
        pass  # the owner closes the real backend


def _prestart_renderers(inputs: List[CheckedInput], request: ScanRequest) -> None:
    """Start the PDFs' render processes ahead, so that their start-up overlaps with
    loading the model (renderguard.prestart)."""
    pdfs = sum(1 for item in inputs if item.kind == "pdf")
    if pdfs and request.options.render.timeout is not None:
        from qwenocr.pages import renderguard

        renderguard.prestart(pdfs)


def _scan_one(
    item, request, options, backend, model, record, reporter, shared_writer, out_path
) -> List[PageResult]:
    from qwenocr.scan.checkpoint import Checkpoint, bytes_digest, default_root, file_digest, run_key

    document: Document = open_document(item.name, request.password, item.data)
    with document:
        page_numbers = parse_page_ranges(request.pages, document.page_count)
        digest = bytes_digest(item.data) if item.data is not None else file_digest(Path(item.name))
        settings = _output_settings(request, options, model)
        try:
            checkpoint = Checkpoint.open(default_root(), run_key(digest, settings))
        except OSError as error:
            raise OutputError(
                f"cannot create a checkpoint in {default_root()} ({error.strerror or error})",
                "set QWENOCR_CACHE_DIR to a writable directory",
            ) from None
        if not request.resume:
            checkpoint.clear()
        resumable = len(checkpoint.finished())
        if resumable:
            reporter.info(f"{item.name}: resuming, {resumable} page(s) already done")
        info = DocumentInfo(
            source=item.name,
            sha256=digest,
            page_count=document.page_count,
            pages_selected=page_numbers,
            model={"backend": model.backend, "model": model.label},
            plan=record,
            settings=settings,
        )
        results: List[PageResult] = []
        with _destination(out_path, shared_writer, request.fmt) as writer:
            writer.begin(info)
            reporter.start_document(item.name, len(page_numbers))
            events = Events(tokens=reporter.tokens, page_done=reporter.page_done)
            try:
                for result in run_document(document, page_numbers, backend, options, checkpoint, events):
                    writer.page(result)
                    results.append(result)
            finally:
                checkpoint.close()
            writer.end(info, results)
        if all(r.status != "error" for r in results):
            # Done and written: the checkpoint has served its purpose once the run ends
            # (run_scan discards it). With failed pages it stays, so a rerun retries only those.
            item.done_checkpoint = checkpoint
        return results


@contextlib.contextmanager
def _destination(path: Optional[Path], shared_writer, fmt: str):
    """The shared stdout writer, or a writer on an atomically replaced output file."""
    if path is None:
        yield shared_writer
        return
    from qwenocr.atomicio import atomic_write

    try:
        with atomic_write(path, "w") as handle:
            writer = make_writer(fmt, handle)
            yield writer
            writer.close()
    except OSError as error:
        if error.errno not in _OUTPUT_ERRNOS:
            raise
        raise OutputError(
            f"-o {path}: cannot write ({error.strerror or error})",
            "check the directory exists and is writable, and that the disk has room",
        ) from None


# What writing an output file can fail with: a missing or unwritable place, a full disk.
_OUTPUT_ERRNOS = {
    getattr(errno, name)
    for name in ("EACCES", "EPERM", "ENOENT", "ENOTDIR", "EISDIR", "EROFS", "ENOSPC", "EDQUOT", "EFBIG", "EIO")
    if hasattr(errno, name)
}


def _output_settings(request: ScanRequest, options: ScanOptions, model: ModelFiles) -> dict:
    """The settings that change a page's text: they key the checkpoint and are recorded."""
    return {
        "model": model.label,
        "backend": model.backend,
        "prompt": options.prompt,
        "max_tokens": options.generation.max_tokens,
        "temperature": options.generation.temperature,
        "seed": options.generation.seed,
        "max_image_tokens": options.render.max_image_tokens,
        "dpi": options.render.dpi,
        "engine_max_image_tokens": options.render.engine_max_tokens,
        "skip_blank": options.skip_blank,
        "mode": options.mode,
    }
