"""`qwenocr scan`: inputs in, one document out per input, through the planned engine.

The order of work is chosen so that mistakes cost little: arguments and inputs are
checked before the model is loaded (a bad path fails in milliseconds, not after a
minute of loading), the model is loaded once for all inputs, and each input then runs
page by page through the pipeline, with a checkpoint that makes a rerun resume.
"""

from __future__ import annotations

import contextlib
import errno
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional, TextIO

from qwenocr.errors import ExitCode, InputError, OutputError, QwenOCRError, UsageError
from qwenocr.models import ModelFiles
from qwenocr.output import DocumentInfo, extension, make_writer
from qwenocr.pages import IMAGE_SUFFIXES, Document, open_document, parse_page_ranges
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
    force: bool = False  # skip the memory check
    n_ctx: Optional[int] = None
    verbose: bool = False
    # --backend openai: the servers, the model they serve, pages in flight
    base_urls: List[str] = field(default_factory=list)
    api_model: Optional[str] = None
    concurrency: int = 4
    options: ScanOptions = field(default_factory=ScanOptions)


@dataclass
class _Input:
    name: str
    data: Optional[bytes] = None  # stdin's bytes
    error: Optional[QwenOCRError] = None
    kind: Optional[str] = None  # "pdf" or "image", once opened
    done_checkpoint: Optional[object] = None  # discarded once the whole run has ended


def run_scan(request: ScanRequest, stdout: TextIO, reporter: Reporter, engine=None) -> ExitCode:
    """Scan every input; return OK, or PARTIAL when some inputs or pages failed.

    `engine` is a seam for the pipeline tests: a callable returning (ModelFiles, plan,
    backend) to use instead of planning, resolving and loading a real model.
    """
    request.inputs = expand_inputs(request.inputs)
    inputs = _check_inputs(request)
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
        model, plan, backend = _openai_backend(request, reporter)
    else:
        model, plan = _resolve_model(request, reporter)
        backend = _load_backend(model, request, plan, reporter)
    plan_record = _plan_record(plan)
    render = request.options.render
    engine_cap = getattr(backend, "max_image_tokens", None) or render.engine_max_tokens
    if render.max_image_tokens > engine_cap:
        reporter.warn(f"--max-image-tokens {render.max_image_tokens} is above what {backend.name} accepts; using {engine_cap}")
    options = replace(request.options, render=replace(render, engine_max_tokens=min(engine_cap, render.engine_max_tokens)))

    several = len(inputs) > 1
    output_names = _output_names(good, request, several)
    failed_inputs = len(inputs) - len(good)
    finished: List[tuple] = []  # (input name, results, seconds) for the summary
    shared_writer = None

    def scan_item(item: _Input, writer, throttled_backend):
        started = time.monotonic()
        results = _scan_one(item, request, options, throttled_backend, model, plan_record, reporter, writer, output_names.get(item.name))
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


SUPPORTED_SUFFIXES = {".pdf"} | IMAGE_SUFFIXES
_GLOB_CHARS = set("*?[")


def expand_inputs(names: List[str]) -> List[str]:
    """Directories become the PDFs and images inside them (recursively, sorted); a
    pattern the shell did not expand (quoted, or on Windows) is expanded here."""
    import glob

    expanded: List[str] = []
    for name in names:
        path = Path(name)
        if name != "-" and path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
            if not found:
                raise InputError(f"{name}: no PDF or image (PNG, JPEG, TIFF, WebP) in this directory")
            expanded.extend(found)
        elif name != "-" and not path.exists() and _GLOB_CHARS & set(name):
            matches = sorted(glob.glob(name, recursive=True))
            expanded.extend(matches or [name])  # no match: reported as a missing file
        else:
            expanded.append(name)
    return expanded


def _output_names(items: List[_Input], request: ScanRequest, several: bool) -> dict:
    """Each input's output file under -o DIR: the input's name with the format's
    extension; a name used twice (a/x.pdf, b/x.pdf) gets -2, -3… Only file names are
    used, so an input name can never place an output outside the directory."""
    out = request.output
    if out is None:
        return {}
    if not (several or out.is_dir()):
        return {items[0].name: out} if items else {}
    taken: set = set()
    names = {}
    for item in items:
        stem = "stdin" if item.name == "-" else Path(item.name).stem
        stem = stem.lstrip(".") or "document"
        candidate, counter = stem, 1
        while candidate.lower() in taken:
            counter += 1
            candidate = f"{stem}-{counter}"
        taken.add(candidate.lower())
        names[item.name] = out / (candidate + extension(request.fmt))
    return names


def _openai_backend(request: ScanRequest, reporter: Reporter):
    from qwenocr.backends.openai import OpenAIBackend, api_key_from_env

    if not request.base_urls:
        raise UsageError("--backend openai needs --base-url URL (an OpenAI-compatible server)", "e.g. --base-url http://localhost:8000/v1")
    backend = OpenAIBackend(request.base_urls, model=request.api_model, api_key=api_key_from_env(), concurrency=request.concurrency)
    try:
        served = backend.resolve_model()  # an unreachable server fails now, not on page 1
    except BaseException:
        backend.close()
        raise
    reporter.info(f"using {served} at {', '.join(request.base_urls)} with {request.concurrency} pages in flight")
    return ModelFiles("openai", Path(), None, served), None, backend


def _prestart_renderers(inputs: List[_Input], request: ScanRequest) -> None:
    """Start the PDFs' render processes ahead, so that their start-up overlaps with
    loading the model (renderguard.prestart)."""
    pdfs = sum(1 for item in inputs if item.kind == "pdf")
    if pdfs and request.options.render.timeout is not None:
        from qwenocr import renderguard

        renderguard.prestart(pdfs)


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
    if not several and request.output is not None and not request.output.is_dir():
        _check_output_file(request.output, request.inputs)
    checked: List[_Input] = []
    for name in request.inputs:
        item = _Input(name)
        if name == "-":
            item.data = sys.stdin.buffer.read()
        try:
            with open_document(name, request.password, item.data) as document:
                parse_page_ranges(request.pages, document.page_count)
                item.kind = document.kind
        except QwenOCRError as error:
            item.error = error
        checked.append(item)
    return checked


def _scan_one(item, request, options, backend, model, plan_record, reporter, shared_writer, out_path) -> List[PageResult]:
    from qwenocr.checkpoint import Checkpoint, bytes_digest, default_root, file_digest, run_key

    document: Document = open_document(item.name, request.password, item.data)
    with document:
        page_numbers = parse_page_ranges(request.pages, document.page_count)
        digest = bytes_digest(item.data) if item.data is not None else file_digest(Path(item.name))
        settings = _output_settings(request, options, model)
        try:
            checkpoint = Checkpoint.open(default_root(), run_key(digest, settings))
        except OSError as error:
            raise OutputError(f"cannot create a checkpoint in {default_root()} ({error.strerror or error})",
                              "set QWENOCR_CACHE_DIR to a writable directory") from None
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
        raise OutputError(f"-o {path}: cannot write ({error.strerror or error})", "check the directory exists and is writable, and that the disk has room") from None


# What writing an output file can fail with: a missing or unwritable place, a full disk.
_OUTPUT_ERRNOS = {getattr(errno, name) for name in ("EACCES", "EPERM", "ENOENT", "ENOTDIR", "EISDIR", "EROFS", "ENOSPC", "EDQUOT", "EFBIG", "EIO") if hasattr(errno, name)}


def _check_output_file(path: Path, inputs: List[str]) -> None:
    """-o FILE: fail now, not after the model has loaded, when it plainly can't be
    written, or when writing it would replace the input (`scan a.pdf -o a.pdf`)."""
    import os

    for name in inputs:
        with contextlib.suppress(OSError):
            if name != "-" and path.exists() and os.path.samefile(name, path):
                raise UsageError(f"-o {path} is the input {name}: writing it would destroy the input", "pick another output name, e.g. -o out.md")
    parent = path.parent
    if not parent.is_dir():
        what = "does not exist" if not parent.exists() else "is not a directory"
        raise OutputError(f"-o {path}: {parent} {what}", "create the directory first, or pick another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"-o {path}: the directory {parent} is not writable", "check its permissions, or pick another path")


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


def _resolve_model(request: ScanRequest, reporter: Reporter):
    """The model files to load, and the plan that chose them (None with --model PATH)."""
    from qwenocr.models import guess_backend_for_repo, offline_requested, resolve_local, resolve_repo

    offline = offline_requested(request.offline)
    if request.model:
        local = resolve_local(request.model, request.mmproj)
        if local is not None:
            if request.backend and request.backend != local.backend:
                raise UsageError(f"--model {request.model} is a {local.backend} model, but --backend {request.backend} was asked for")
            if not request.force:
                _check_local_model_fits(local)
            return local, None
        if request.model.count("/") != 1:
            raise UsageError(f"--model {request.model}: no such file or directory, and not a Hugging Face repo id (org/name)")
        backend = request.backend or guess_backend_for_repo(request.model)
        quant = request.quant or "Q4_K_M"
        if backend == "mlx":
            # Weights and config are required; tokenizer and template files vary by repo.
            patterns, mmproj, optional = ["*.safetensors", "config.json"], [], ["*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken"]
        else:
            patterns, mmproj, optional = [f"*{quant}*.gguf"], ["*mmproj*"], []
        return resolve_repo(request.model, backend, patterns, mmproj, offline, optional=optional), None

    from qwenocr.hardware import detect
    from qwenocr.plan import make_plan

    hardware = detect()
    plan = make_plan(
        hardware,
        variant=request.variant,
        quant=request.quant,
        backend=request.backend,
        max_image_tokens=request.options.render.max_image_tokens,
        max_output_tokens=request.options.generation.max_tokens,
    )
    if not request.force:
        _check_plan(plan, hardware, request)
    source = plan.source
    reporter.info(f"plan: {plan.variant} {plan.quant} via {plan.backend} ({plan.estimate_gb:.1f} GB of {plan.budget_gb:.1f} GB)")
    pull = f"qwenocr models pull {plan.variant} --quant {plan.quant} --backend {plan.backend}"
    files = resolve_repo(source.repo, plan.backend, list(source.files), [source.mmproj] if source.mmproj else [], offline, pull)
    return files, plan


def _check_plan(plan, hardware, request: ScanRequest) -> None:
    """Refuse, before anything is downloaded or loaded, a model that won't fit now.

    A load that does not fit ends in swapping for minutes or in the OOM killer, with
    nothing to show for it; saying so up front, with the option that does fit, is kinder.
    """
    from qwenocr.errors import InsufficientMemoryError, NothingFitsError
    from qwenocr.plan import make_plan

    overridden = bool(request.variant or request.quant)
    if plan.fits and not plan.needs_wired_limit_mb:
        return
    if plan.needs_wired_limit_mb:
        advice = next((line for line in plan.advice if "sysctl" in line), f"sudo sysctl iogpu.wired_limit_mb={plan.needs_wired_limit_mb}")
        raise InsufficientMemoryError(
            f"{plan.variant} {plan.quant} needs more GPU memory than macOS lets Metal wire now",
            f"run `{_sysctl_command(advice, plan.needs_wired_limit_mb)}` (until reboot), pick a smaller --variant, or pass --force",
        )
    if not overridden:
        raise NothingFitsError(
            plan.reason or "no Qwen 3.5 variant fits this machine's memory",
            "run `qwenocr doctor` to see every option and why it fails",
        )
    default = make_plan(
        hardware,
        backend=request.backend,
        max_image_tokens=request.options.render.max_image_tokens,
        max_output_tokens=request.options.generation.max_tokens,
    )
    fallback = (
        f"--variant {default.variant} --quant {default.quant} fits now"
        if default.fits
        else "nothing fits now (see `qwenocr doctor`)"
    )
    raise InsufficientMemoryError(
        f"{plan.variant} {plan.quant} needs ~{plan.estimate_gb:.1f} GB but {plan.budget_gb:.1f} GB is usable now",
        f"{fallback}; --force loads it anyway",
    )


def _sysctl_command(advice: str, megabytes: int) -> str:
    import re

    match = re.search(r"sudo sysctl iogpu\.wired_limit_mb=\d+", advice)
    return match.group(0) if match else f"sudo sysctl iogpu.wired_limit_mb={megabytes}"


def _check_local_model_fits(model: ModelFiles) -> None:
    """For --model PATH there is no plan: compare the files' size with free memory."""
    import psutil

    from qwenocr.errors import InsufficientMemoryError

    paths = [model.path] if model.path.is_file() else list(model.path.glob("*.safetensors"))
    if model.path.is_file():
        # A split GGUF: every shard is loaded, not just the first.
        paths = sorted(model.path.parent.glob(_shard_glob(model.path.name))) or paths
    if model.mmproj is not None:
        paths.append(model.mmproj)
    needed = sum(p.stat().st_size for p in paths) + 2**30  # + a 1 GiB margin for activations
    available = psutil.virtual_memory().available
    if needed > available:
        raise InsufficientMemoryError(
            f"{model.label} needs ~{needed / 1e9:.1f} GB of memory but {available / 1e9:.1f} GB is free now",
            "close other programs, use a smaller model, or pass --force",
        )


def _shard_glob(name: str) -> str:
    import re

    return re.sub(r"-\d{5}-of-(\d{5})\.gguf$", r"-*-of-\1.gguf", name)


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
