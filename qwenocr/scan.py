"""`qwenocr scan`: inputs in, one document out per input, through the planned engine.

The order of work is chosen so that mistakes cost little: arguments and inputs are
checked before the model is loaded (a bad path fails in milliseconds, not after a
minute of loading), the model is loaded once for all inputs, and each input then runs
page by page through the pipeline, with a checkpoint that makes a rerun resume.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, TextIO

from qwenocr.errors import ExitCode, InputError, OutputError, QwenOCRError, UsageError
from qwenocr.models import ModelFiles
from qwenocr.output import DocumentInfo, extension, make_writer
from qwenocr.pages import Document, RenderSettings, open_document, parse_page_ranges
from qwenocr.pipeline import Events, ScanOptions, run_document
from qwenocr.progress import Reporter
from qwenocr.results import PageResult


@dataclass
class ScanRequest:
    inputs: List[str]
    output: Optional[Path] = None
    fmt: str = "markdown"
    pages: Optional[str] = None
    password: Optional[str] = None
    backend: Optional[str] = None  # "mlx" | "llama.cpp" | None (the plan decides)
    variant: Optional[str] = None
    quant: Optional[str] = None
    model: Optional[str] = None
    mmproj: Optional[str] = None
    offline: bool = False
    resume: bool = True
    n_ctx: Optional[int] = None
    verbose: bool = False
    options: ScanOptions = field(default_factory=ScanOptions)


@dataclass
class _Input:
    name: str
    data: Optional[bytes] = None  # stdin's bytes
    error: Optional[QwenOCRError] = None


def run_scan(request: ScanRequest, stdout: TextIO, reporter: Reporter, engine=None) -> ExitCode:
    """Scan every input; return OK, or PARTIAL when some inputs or pages failed.

    `engine` is a seam for the pipeline tests: a callable returning (ModelFiles, plan,
    backend) to use instead of planning, resolving and loading a real model.
    """
    inputs = _check_inputs(request)
    good = [item for item in inputs if item.error is None]
    for item in inputs:
        if item.error is not None and len(inputs) > 1:
            reporter.error(item.error.one_line())
    if not good:
        raise inputs[0].error  # type: ignore[misc]

    if engine is not None:
        model, plan, backend = engine()
    else:
        model, plan = _resolve_model(request, reporter)
        backend = _load_backend(model, request, plan, reporter)
    plan_record = _plan_record(plan)
    render = request.options.render
    engine_cap = getattr(backend, "max_image_tokens", render.engine_max_tokens)
    if render.max_image_tokens > engine_cap:
        reporter.warn(f"--max-image-tokens {render.max_image_tokens} is above what {backend.name} accepts; using {engine_cap}")
    options = _with_render(request.options, RenderSettings(render.max_image_tokens, render.dpi, min(engine_cap, render.engine_max_tokens)))

    several = len(inputs) > 1
    failed_inputs = len(inputs) - len(good)
    page_errors = 0
    shared_writer = None
    try:
        with reporter:
            if request.output is None:
                shared_writer = make_writer(request.fmt, stdout, several_documents=several)
            for item in good:
                try:
                    results = _scan_one(item, request, options, backend, model, plan_record, reporter, shared_writer, several)
                except QwenOCRError as error:
                    if not several:
                        raise
                    failed_inputs += 1
                    reporter.error(error.one_line())
                    continue
                page_errors += sum(1 for r in results if r.status == "error")
            if shared_writer is not None:
                shared_writer.close()
    finally:
        backend.close()
    if failed_inputs or page_errors:
        return ExitCode.PARTIAL
    return ExitCode.OK


def _check_inputs(request: ScanRequest) -> List[_Input]:
    if not request.inputs:
        raise UsageError("no input given", "pass a PDF or image, or - for stdin")
    if request.inputs.count("-") > 1:
        raise UsageError("stdin (-) can only be read once")
    several = len(request.inputs) > 1
    if several and request.output is not None and not request.output.is_dir():
        if request.output.suffix:
            raise UsageError(f"-o {request.output}: several inputs need an output directory", "create it, or pass one input")
        try:
            request.output.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"-o {request.output}: could not create the directory ({error.strerror})") from None
    checked: List[_Input] = []
    for name in request.inputs:
        item = _Input(name)
        if name == "-":
            item.data = sys.stdin.buffer.read()
        try:
            with open_document(name, request.password, item.data) as document:
                parse_page_ranges(request.pages, document.page_count)
        except QwenOCRError as error:
            item.error = error
        checked.append(item)
    return checked


def _output_path(item: _Input, request: ScanRequest, several: bool) -> Optional[Path]:
    out = request.output
    if out is None:
        return None
    if several or out.is_dir():
        stem = "stdin" if item.name == "-" else Path(item.name).name
        # Only the file name is used, so an input name can never escape the directory.
        safe = Path(stem).stem.lstrip(".") or "document"
        return out / (safe + extension(request.fmt))
    return out


def _scan_one(item, request, options, backend, model, plan_record, reporter, shared_writer, several) -> List[PageResult]:
    from qwenocr.checkpoint import Checkpoint, bytes_digest, default_root, file_digest, run_key

    document: Document = open_document(item.name, request.password, item.data)
    with document:
        page_numbers = parse_page_ranges(request.pages, document.page_count)
        digest = bytes_digest(item.data) if item.data is not None else file_digest(Path(item.name))
        settings = _output_settings(request, options, model)
        checkpoint = Checkpoint.open(default_root(), run_key(digest, settings))
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
            plan=plan_record,
            settings=settings,
        )
        out_path = _output_path(item, request, several)
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
            # Done and written: the checkpoint has served its purpose. With failed pages
            # it stays, so a rerun retries only those.
            checkpoint.discard()
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
    except (PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        raise OutputError(f"-o {path}: cannot write ({error.strerror or error})", "check the directory exists and is writable") from None


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
    }


def _with_render(options: ScanOptions, render: RenderSettings) -> ScanOptions:
    from dataclasses import replace

    return replace(options, render=render)


def _resolve_model(request: ScanRequest, reporter: Reporter):
    """The model files to load, and the plan that chose them (None with --model PATH)."""
    from qwenocr.models import guess_backend_for_repo, offline_requested, resolve_local, resolve_repo

    offline = offline_requested(request.offline)
    if request.model:
        local = resolve_local(request.model, request.mmproj)
        if local is not None:
            if request.backend and request.backend != local.backend:
                raise UsageError(f"--model {request.model} is a {local.backend} model, but --backend {request.backend} was asked for")
            return local, None
        if request.model.count("/") != 1:
            raise UsageError(f"--model {request.model}: no such file or directory, and not a Hugging Face repo id (org/name)")
        backend = request.backend or guess_backend_for_repo(request.model)
        quant = request.quant or "Q4_K_M"
        patterns = ["*.safetensors", "*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken"] if backend == "mlx" else [f"*{quant}*.gguf"]
        mmproj = [] if backend == "mlx" else ["*mmproj*"]
        return resolve_repo(request.model, backend, patterns, mmproj, offline), None

    from qwenocr.hardware import detect
    from qwenocr.plan import make_plan

    plan = make_plan(
        detect(),
        variant=request.variant,
        quant=request.quant,
        backend=request.backend,
        max_image_tokens=request.options.render.max_image_tokens,
        max_output_tokens=request.options.generation.max_tokens,
    )
    _check_plan(plan)
    source = plan.source
    reporter.info(f"plan: {plan.variant} {plan.quant} via {plan.backend} ({plan.estimate_gb:.1f} GB of {plan.budget_gb:.1f} GB)")
    files = resolve_repo(source.repo, plan.backend, list(source.files), [source.mmproj] if source.mmproj else [], offline)
    return files, plan


def _plan_record(plan) -> Optional[dict]:
    """What the output records of the plan (None when --model named the files)."""
    if plan is None:
        return None
    return {
        "variant": plan.variant,
        "quant": plan.quant,
        "bits": plan.bits,
        "backend": plan.backend,
        "repo": plan.source.repo,
        "estimate_gb": round(plan.estimate_gb, 2),
        "budget_gb": round(plan.budget_gb, 2) if plan.budget_gb is not None else None,
    }


def _check_plan(plan) -> None:
    from qwenocr.errors import NothingFitsError

    if not plan.fits:
        reason = getattr(plan, "reason", None) or "no Qwen 3.5 variant fits this machine's memory"
        raise NothingFitsError(reason, "run `qwenocr doctor` to see every option; --variant/--quant override, --force skips this check")
    for line in getattr(plan, "advice", None) or []:
        if "sysctl" in line and getattr(plan, "needs_wired_limit_mb", None):
            from qwenocr.errors import InsufficientMemoryError

            raise InsufficientMemoryError(f"{plan.variant} {plan.quant} needs a higher GPU wired limit than this Mac has now", line)


def _load_backend(model: ModelFiles, request: ScanRequest, plan, reporter: Reporter):
    reporter.info(f"loading {model.label} with {model.backend}")
    if model.backend == "mlx":
        from qwenocr.backends.mlx import MLXBackend

        return MLXBackend(model.path, verbose=request.verbose)
    from qwenocr.backends.llamacpp import LlamaCppBackend

    options = request.options
    # The KV cache holds one page at a time: image tokens + prompt + output, with slack.
    image_budget = min(options.render.max_image_tokens, 4096) if options.render.dpi is None else 4096
    n_ctx = request.n_ctx or _round_up(image_budget + options.generation.max_tokens + 512, 256)
    # With a plan, its GPU offload and multi-GPU split; with --model PATH, offload all
    # layers (llama.cpp keeps them on the CPU when it was built without a GPU backend).
    n_gpu_layers = plan.n_gpu_layers if plan is not None else -1
    tensor_split = plan.tensor_split if plan is not None else None
    return LlamaCppBackend(
        model.path,
        model.mmproj,
        n_ctx=n_ctx,
        n_gpu_layers=n_gpu_layers,
        tensor_split=tensor_split,
        verbose=request.verbose,
    )


def _round_up(value: int, step: int) -> int:
    return (value + step - 1) // step * step
