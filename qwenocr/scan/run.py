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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, TextIO, Tuple

from qwenocr.engines.base import Backend, Generation
from qwenocr.errors import ExitCode, OutputError, QwenOCRError, UsageError
from qwenocr.pages.document import open_document
from qwenocr.scan.checkpoint import Checkpoint, bytes_digest, default_root, file_digest, run_key
from qwenocr.scan.engine import connect_server, load_engine
from qwenocr.scan.figures import FigureTarget
from qwenocr.scan.inputs import CheckedInput, check_inputs, output_names, unique_stem
from qwenocr.scan.model_choice import plan_record, resolve_model
from qwenocr.scan.output import DocumentInfo, Writer, is_binary, make_writer
from qwenocr.scan.pipeline import Events, ScanOptions, run_document
from qwenocr.scan.progress import Reporter
from qwenocr.scan.request import ScanRequest
from qwenocr.scan.results import PageResult, checked_record
from qwenocr.store.resolve import ModelFiles


@dataclass(frozen=True)
class _RunContext:
    """What is the same for every document of one run."""

    request: ScanRequest
    options: ScanOptions  # the request's, with the render size capped at what the engine takes
    backend: Backend  # shared by all documents (throttled when several are in flight)
    model: ModelFiles
    plan_record: Optional[dict]
    settings: dict  # what changes a page's text: keys the checkpoints, recorded in outputs
    reporter: Reporter
    writer: Optional[Writer]  # the one writer on stdout; None when each input has its own file
    outputs: Dict[str, Path]  # each input's file under -o, by input name
    figures: Dict[str, FigureTarget]  # layout mode: where each input's figure files go, by input name


@dataclass(frozen=True)
class _Scanned:
    """One input's pages, and how long they took."""

    name: str
    results: List[PageResult]
    seconds: float
    # Its checkpoint, once every page is done and written: discarded when the run ends.
    spent_checkpoint: Optional[Checkpoint]


# The tests' stand-in for planning and loading: () -> (model files, plan or None, backend).
EngineSeam = Callable[[], Tuple[ModelFiles, Any, Backend]]


def run_scan(request: ScanRequest, stdout: TextIO, reporter: Reporter, engine: Optional[EngineSeam] = None) -> ExitCode:
    """Scan every input; return OK, or PARTIAL when some inputs or pages failed.

    `engine` is a seam for the pipeline tests: a callable returning (ModelFiles, plan,
    backend) to use instead of planning, resolving and loading a real model.
    """
    inputs = check_inputs(request)
    if is_binary(request.fmt) and request.output is None and stdout.isatty():
        raise UsageError(
            f"--format {request.fmt} writes a binary file, not text for a terminal",
            "pass -o FILE.pdf, or redirect stdout to a file",
        )
    good = [item for item in inputs if item.error is None]
    for item in inputs:
        # With no good input the first error is raised, and cli/app.py says it: not here too.
        if item.error is not None and len(inputs) > 1 and (good or item is not inputs[0]):
            reporter.error(item.error.one_line())
    if not good:
        first_error = inputs[0].error
        assert first_error is not None  # no good input: each one carries its error
        raise first_error

    if request.options.mode != "text":
        _prestart_renderers(good, request)
    backend: Backend
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
    engine_cap = backend.max_image_tokens or render.engine_max_tokens
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
    scanned: List[_Scanned] = []
    try:
        with reporter:
            writer = None
            if request.output is None:
                stream = stdout.buffer if is_binary(request.fmt) else stdout
                writer = make_writer(request.fmt, stream, several_documents=several)
            slots = max(1, backend.concurrency)
            # A server backend takes several pages at once: with several inputs written
            # to separate files, keep it busy across documents, not just within one.
            parallel_documents = min(slots, len(good)) if writer is None else 1
            run = _RunContext(
                request=request,
                options=options,
                backend=_Throttled(backend, slots) if parallel_documents > 1 else backend,
                model=model,
                plan_record=record,
                settings=output_settings(request, options, model),
                reporter=reporter,
                writer=writer,
                outputs=outputs,
                figures=figure_targets(good, request, outputs, several),
            )
            if parallel_documents > 1:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(max_workers=parallel_documents, thread_name_prefix="qwenocr-doc") as pool:
                    futures = [pool.submit(_scan_one, item, run) for item in good]
                    for future in futures:
                        try:
                            scanned.append(future.result())
                        except QwenOCRError as error:
                            if error.ends_run:
                                raise
                            failed_inputs += 1
                            reporter.error(error.one_line())
            else:
                for item in good:
                    try:
                        scanned.append(_scan_one(item, run))
                    except QwenOCRError as error:
                        if not several or error.ends_run:
                            raise
                        failed_inputs += 1
                        reporter.error(error.one_line())
            if writer is not None:
                writer.close()
    finally:
        backend.close()
    # Only now: had the run been interrupted on a later input, a rerun would have had to
    # read the documents finished before it all over again.
    for document in scanned:
        if document.spent_checkpoint is not None:
            document.spent_checkpoint.discard()
    if several:
        reporter.summary([(document.name, document.results, document.seconds) for document in scanned], failed_inputs)
    page_errors = sum(1 for document in scanned for result in document.results if result.failed)
    if failed_inputs or page_errors:
        return ExitCode.PARTIAL
    return ExitCode.OK


class _NoModel:
    """The engine of --mode text: every page comes from the text layer."""

    name = "none"
    concurrency = 1
    max_image_tokens: Optional[int] = None  # no model: nothing is rendered for one

    def generate(self, *args: Any, **kwargs: Any) -> Generation:  # pragma: no cover - never reached in text mode
        raise RuntimeError("--mode text runs no model")

    def close(self) -> None:
        pass


class _Throttled:
    """Shares one backend between documents without exceeding its pages in flight."""

    def __init__(self, backend: Backend, slots: int):
        self._backend = backend
        self._slots = threading.BoundedSemaphore(slots)
        self.name = backend.name
        self.concurrency = slots
        self.max_image_tokens = backend.max_image_tokens

    def generate(self, *args: Any, **kwargs: Any) -> Generation:
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


def _scan_one(item: CheckedInput, run: _RunContext) -> _Scanned:
    """One checked input through the pipeline into its writer, resuming from its checkpoint."""
    started = time.monotonic()
    request = run.request
    with open_document(item.name, request.password, item.data, request.options.render.timeout) as document:
        digest = bytes_digest(item.data) if item.data is not None else file_digest(Path(item.name))
        try:
            checkpoint = Checkpoint.open(default_root(), run_key(digest, run.settings), validate=checked_record)
        except OSError as error:
            raise OutputError(
                f"cannot create a checkpoint in {default_root()} ({error.strerror or error})",
                "set QWENOCR_CACHE_DIR to a writable directory",
            ) from None
        if not request.resume:
            checkpoint.clear()
        resumable = len(checkpoint.finished())
        if resumable:
            run.reporter.info(f"{item.shown}: resuming, {resumable} page(s) already done")
        page_numbers = list(item.page_numbers)
        info = DocumentInfo(
            source=item.shown,  # valid UTF-8 whatever the file name's bytes
            sha256=digest,
            page_count=item.page_count,
            pages_selected=page_numbers,
            model={"backend": run.model.backend, "model": run.model.label},
            plan=run.plan_record,
            settings=run.settings,
            kind=item.kind or "",
            origin=item.data if item.data is not None else Path(item.name),
            password=request.password,
        )
        results: List[PageResult] = []
        with _destination(run.outputs.get(item.name), run.writer, request.fmt) as writer:
            writer.begin(info)
            run.reporter.start_document(item.shown, len(page_numbers))
            events = Events(tokens=run.reporter.tokens, page_done=run.reporter.page_done, notice=run.reporter.warn)
            try:
                pages = run_document(
                    document, page_numbers, run.backend, run.options, checkpoint, events, run.figures.get(item.name)
                )
                for result in pages:
                    writer.page(result)
                    results.append(result)
            finally:
                checkpoint.close()
            writer.end(info, results)
    # Done and written: the checkpoint has served its purpose once the run ends. With
    # failed pages it stays, so a rerun retries only those.
    spent = checkpoint if not any(result.failed for result in results) else None
    return _Scanned(item.shown, results, time.monotonic() - started, spent)


def figure_targets(
    items: List[CheckedInput], request: ScanRequest, outputs: Dict[str, Path], several: bool
) -> Dict[str, FigureTarget]:
    """Where each input's figure files go in layout mode (scan/figures.py), by input name.

    `-o out.md`: `out_files/` beside it, linked relative to it. `--figures DIR`: DIR, or
    with several inputs one folder in it per input (named after its output file, or after
    the input, `-2`... for a name used twice), so that page-001-figure-1.png of one input
    never replaces another's. Stdout output without --figures: none.
    """
    if not request.options.layout:
        return {}
    if is_binary(request.fmt) and request.figures is None:  # a PDF keeps its figures: no files unless asked
        return {}
    targets: Dict[str, FigureTarget] = {}
    taken: Set[str] = set()
    for item in items:
        out = outputs.get(item.name)
        base = out.parent if out is not None else None
        if request.figures is None:
            if out is not None:
                targets[item.name] = FigureTarget(out.parent / f"{out.stem}_files", base)
            continue
        if not several:
            targets[item.name] = FigureTarget(request.figures, base)
            continue
        stem = out.stem if out is not None else ("stdin" if item.name == "-" else Path(item.name).stem)
        targets[item.name] = FigureTarget(request.figures / unique_stem(stem, taken), base)
    return targets


@contextlib.contextmanager
def _destination(path: Optional[Path], shared_writer: Optional[Writer], fmt: str) -> Iterator[Writer]:
    """The shared stdout writer, or a writer on an atomically replaced output file."""
    if path is None:
        assert shared_writer is not None  # no -o: run_scan made the one writer on stdout
        yield shared_writer
        return
    from qwenocr.atomicio import atomic_write

    try:
        with atomic_write(path, "wb" if is_binary(fmt) else "w") as handle:
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


def output_settings(request: ScanRequest, options: ScanOptions, model: ModelFiles) -> dict:
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
        "auto_rotate": options.auto_rotate,
    }
