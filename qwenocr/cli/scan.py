"""`qwenocr scan`: the options, turned into a `ScanRequest` for qwenocr/scan/run.py."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from qwenocr.cli.options import (
    MAX_BATCH,
    MAX_CONTEXT_TOKENS,
    MAX_IMAGE_TOKENS,
    MAX_SEED,
    MAX_TIMEOUT_SECONDS,
    QUIET,
    VERBOSE,
    Prefer,
    finite_float,
    verbosity_level,
    verbosity_options,
)
from qwenocr.defaults import DEFAULT_MAX_IMAGE_TOKENS, DEFAULT_MAX_OUTPUT_TOKENS


def register(app: typer.Typer) -> None:
    app.command("scan", help=_SCAN_HELP, no_args_is_help=True)(scan_command)


_SCAN_HELP = """OCR PDFs and images (PNG, JPEG, TIFF, WebP) page by page into Markdown or JSON.

The document goes to stdout (or -o); progress and messages go to stderr.

[bold]Examples[/bold]

  qwenocr scan report.pdf > report.md

  qwenocr scan report.pdf --pages 1-3,7,10- --format json -o report.json

  cat scan.pdf | qwenocr scan - --format jsonl | jq -r .text

  qwenocr scan *.pdf -o out/                       one output per input

  qwenocr scan a.pdf --model ./Qwen3.5-9B-Q4_K_M.gguf   a local GGUF (mmproj found beside it)
"""


class OutputFormat(str, enum.Enum):
    markdown = "markdown"
    json = "json"
    jsonl = "jsonl"
    pdf = "pdf"


class ScanBackend(str, enum.Enum):
    mlx = "mlx"
    llama_cpp = "llama.cpp"
    openai = "openai"


class LayoutCoords(str, enum.Enum):
    relative = "relative"
    absolute = "absolute"


class ScanMode(str, enum.Enum):
    auto = "auto"
    ocr = "ocr"
    text = "text"


@verbosity_options(
    quiet="No progress bar and no warnings on stderr.",
    verbose="More detail on stderr, including the engine's own log.",
)
def scan_command(
    ctx: typer.Context,
    inputs: Annotated[List[str], typer.Argument(help="PDFs or images; - reads one from stdin.", show_default=False)],
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Output file, or directory for several inputs (default: stdout)."),
    ] = None,
    fmt: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            "-f",
            help="Output format: markdown, json, jsonl, or pdf (the input as a searchable PDF: its pages"
            " untouched, the text invisible under them).",
            case_sensitive=False,
        ),
    ] = OutputFormat.markdown,
    pages: Annotated[Optional[str], typer.Option("--pages", "-p", help="Pages to read, 1-based: 1-3,7,10-")] = None,
    max_image_tokens: Annotated[
        int,
        typer.Option(
            "--max-image-tokens",
            min=64,
            max=MAX_IMAGE_TOKENS,
            help="Visual-token budget per page; the render size follows from it.",
        ),
    ] = DEFAULT_MAX_IMAGE_TOKENS,
    dpi: Annotated[
        Optional[float],
        typer.Option(
            "--dpi",
            click_type=finite_float(min=10, max=1200),
            help="Render at a fixed DPI instead of the token budget (capped at what the engine accepts).",
        ),
    ] = None,
    mode: Annotated[
        ScanMode,
        typer.Option(
            "--mode",
            help="ocr: always the model; text: only the PDF's own text layer; auto: the text layer where it is"
            " trustworthy, the model elsewhere.",
            case_sensitive=False,
        ),
    ] = ScanMode.ocr,
    layout: Annotated[
        Optional[bool],
        typer.Option(
            "--layout/--no-layout",
            help="Ask the model for the page's layout (HTML with a box per element): JSON/JSONL pages gain"
            " `blocks` (type, box in PDF points, text), and the Markdown is built from them. On by default"
            " with --format pdf (the text goes where each block is), off otherwise.",
            show_default=False,
        ),
    ] = None,
    layout_coords: Annotated[
        LayoutCoords,
        typer.Option(
            "--layout-coords",
            help="How the model gives boxes with --layout: relative (0-1000, Qwen3-VL's way) or absolute"
            " (pixels of the page image, Qwen2.5-VL's).",
            case_sensitive=False,
        ),
    ] = LayoutCoords.relative,
    drop_headers_footers: Annotated[
        bool,
        typer.Option(
            "--drop-headers-footers/--keep-headers-footers",
            help="With --layout: leave running headers, footers and page numbers out of the Markdown (the JSON"
            " keeps them as blocks).",
        ),
    ] = False,
    figures: Annotated[
        Optional[Path],
        typer.Option(
            "--figures",
            metavar="DIR",
            help="With --layout: write each figure as a PNG into DIR and link it from the Markdown and JSON"
            " (default: beside -o's file, in NAME_files/; with stdout output, no files without it).",
        ),
    ] = None,
    backend: Annotated[
        Optional[ScanBackend],
        typer.Option(
            "--backend", help="Inference engine (default: from the hardware plan); openai: an OpenAI-compatible server."
        ),
    ] = None,
    base_url: Annotated[
        Optional[List[str]],
        typer.Option(
            "--base-url",
            help="OpenAI-compatible server for --backend openai, e.g. http://localhost:8000/v1; repeat to spread"
            " pages over several. The key comes from QWENOCR_API_KEY or OPENAI_API_KEY.",
        ),
    ] = None,
    api_model: Annotated[
        Optional[str], typer.Option("--api-model", help="Model name on the server (default: the first it serves).")
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=256, help="Pages in flight with --backend openai.")
    ] = 4,
    batch: Annotated[
        Optional[int],
        typer.Option(
            "--batch",
            min=1,
            max=MAX_BATCH,
            help="Pages decoding at once in the local engine (llama.cpp: one context, a sequence per page;"
            " MLX: mlx-vlm's batched generation); 1 reads one page at a time. Default: the plan's (what memory"
            " allows), 1 with --model PATH.",
        ),
    ] = None,
    variant: Annotated[
        Optional[str],
        typer.Option("--variant", help="Qwen 3.5 size, e.g. 9B or 35B-A3B (default: the largest that fits)"),
    ] = None,
    quant: Annotated[
        Optional[str],
        typer.Option("--quant", help="Quantization, e.g. MXFP4, Q4_K_M, Q8_0, BF16 (default: from the plan)"),
    ] = None,
    family: Annotated[
        str,
        typer.Option("--family", help="Model family for the plan: 3.5, or 3.6 (27B and 35B-A3B only)."),
    ] = "3.5",
    prefer: Annotated[
        Optional[Prefer],
        typer.Option(
            "--prefer",
            help="Where a dense and an MoE model both fit (see qwenocr doctor): accuracy or speed.",
            case_sensitive=False,
        ),
    ] = None,
    model: Annotated[
        Optional[str],
        typer.Option("--model", "-m", help="A local MLX dir, a .gguf, a dir holding both, or a Hugging Face repo id."),
    ] = None,
    mmproj: Annotated[
        Optional[Path], typer.Option("--mmproj", help="Vision projector GGUF for --model (default: found beside it).")
    ] = None,
    prompt: Annotated[
        Optional[str], typer.Option("--prompt", help="Replace the default OCR prompt (see docs/prompting.md).")
    ] = None,
    max_tokens: Annotated[
        int,
        typer.Option(
            "--max-tokens",
            min=16,
            max=MAX_CONTEXT_TOKENS,
            help="Most tokens generated per page (at most Qwen 3.5's context length).",
        ),
    ] = DEFAULT_MAX_OUTPUT_TOKENS,
    temperature: Annotated[
        float,
        typer.Option("--temperature", click_type=finite_float(min=0.0, max=2.0), help="0 = deterministic (greedy)."),
    ] = 0.0,
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            min=0,
            max=MAX_SEED,
            help="Sampling seed (used when temperature > 0 and for the retry).",
        ),
    ] = 0,
    page_timeout: Annotated[
        Optional[float],
        typer.Option(
            "--page-timeout",
            click_type=finite_float(min=1.0, max=MAX_TIMEOUT_SECONDS),
            help="Seconds per page (at most a week) before it is marked timeout and skipped.",
        ),
    ] = None,
    render_timeout: Annotated[
        float,
        typer.Option(
            "--render-timeout",
            click_type=finite_float(min=0.0, max=MAX_TIMEOUT_SECONDS),
            help="Seconds (at most a week) a PDF page may take to render (in a separate process) before it is"
            " marked error and skipped; 0 renders in-process, without a limit.",
        ),
    ] = 120.0,
    skip_blank: Annotated[
        bool,
        typer.Option(
            "--skip-blank/--no-skip-blank", help="Skip pages that are blank from the pixels, without calling the model."
        ),
    ] = True,
    auto_rotate: Annotated[
        bool,
        typer.Option(
            "--auto-rotate/--no-auto-rotate",
            help="Turn scanned pages whose text runs sideways or upside down upright before the model reads"
            " them (from the pixels; only when sure; JSON records rotation_fix).",
        ),
    ] = True,
    password: Annotated[
        Optional[str],
        typer.Option(
            "--password",
            help="Password for encrypted PDFs (visible in the process list: prefer QWENOCR_PDF_PASSWORD or"
            " --password-file).",
        ),
    ] = None,
    password_file: Annotated[
        Optional[Path], typer.Option("--password-file", help="Read the PDF password from this file.")
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Never touch the network; fail if model files are not cached.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option("--resume/--no-resume", help="Reuse pages finished by an interrupted run of the same command."),
    ] = True,
    force: Annotated[
        bool, typer.Option("--force", help="Load the model even if the memory check says it will not fit now.")
    ] = False,
    n_ctx: Annotated[
        Optional[int],
        typer.Option(
            "--n-ctx",
            min=512,
            max=MAX_CONTEXT_TOKENS,
            help="llama.cpp context size, at most Qwen 3.5's context length (default: one page's image + output"
            " budget); the memory check counts its KV cache.",
        ),
    ] = None,
) -> None:
    import os

    from qwenocr import interrupts, stdio
    from qwenocr.cli.config import read_small_text
    from qwenocr.engines.base import GenerationSettings
    from qwenocr.errors import OutputError, UsageError
    from qwenocr.fit.plan import check_family, check_family_variant
    from qwenocr.pages.document import RenderSettings
    from qwenocr.scan.pipeline import DEFAULT_PROMPT, ScanOptions, layout_prompt
    from qwenocr.scan.progress import Reporter
    from qwenocr.scan.request import ScanRequest
    from qwenocr.scan.run import run_scan
    from qwenocr.stdio import protected_stdout

    level = verbosity_level(ctx)
    if password is None and password_file is not None:
        password = read_small_text(password_file, f"--password-file {password_file}").rstrip("\r\n")
    if password is None:
        password = os.environ.get("QWENOCR_PDF_PASSWORD") or None
    if output is None and stdio.stdout_was_closed():  # `>&-`: refuse now, not after the work
        raise OutputError("stdout is closed, so the document has nowhere to go", "give -o FILE, or leave stdout open")
    if layout is None:  # a searchable PDF places its text by the blocks' boxes
        layout = fmt == OutputFormat.pdf
    if figures is not None and not layout:
        raise UsageError("--figures needs --layout", "add --layout (figures are the layout's figure blocks)")
    if figures is not None and figures.exists() and not figures.is_dir():
        raise UsageError(f"--figures {figures}: not a directory", "give a directory (it is created if missing)")
    options = ScanOptions(
        prompt=prompt or (layout_prompt(layout_coords.value) if layout else DEFAULT_PROMPT),
        generation=GenerationSettings(max_tokens=max_tokens, temperature=temperature, seed=seed),
        render=RenderSettings(max_image_tokens=max_image_tokens, dpi=dpi, timeout=render_timeout or None),
        page_timeout=page_timeout,
        skip_blank=skip_blank,
        auto_rotate=auto_rotate,
        mode=mode.value,
        layout=layout,
        layout_coords=layout_coords.value,
        drop_headers_footers=drop_headers_footers,
    )
    family = check_family(family)
    if variant is not None:
        check_family_variant(family, variant)
    request = ScanRequest(
        family=family,
        inputs=list(inputs),
        output=output,
        figures=figures,
        fmt=fmt.value,
        pages=pages,
        password=password,
        backend=backend.value if backend else None,
        variant=variant,
        quant=quant,
        model=model,
        mmproj=str(mmproj) if mmproj else None,
        offline=offline,
        resume=resume,
        force=force,
        base_urls=list(base_url or []),
        api_model=api_model,
        concurrency=concurrency,
        batch=batch,
        n_ctx=n_ctx,
        prefer=prefer.value if prefer else None,
        verbose=level >= VERBOSE,
        options=options,
    )
    interrupts.install()  # Ctrl-C and SIGTERM end the run cleanly, even mid-page
    reporter = Reporter(quiet=level <= QUIET, verbose=level >= VERBOSE)
    with protected_stdout() as document_stream:
        code = run_scan(request, document_stream, reporter)
    raise typer.Exit(int(code))
