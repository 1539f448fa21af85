"""The command line: the only module that imports Typer.

It parses arguments, calls the core (`scan`, `doctor`, `evaluate`, `models`), and maps
`QwenOCRError` to one line on stderr and a documented exit code (docs/exit-codes.md).
Heavy modules are imported inside the commands so that `qwenocr --help` stays instant.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from qwenocr import __version__
from qwenocr.errors import ExitCode, QwenOCRError, Terminated

app = typer.Typer(
    name="qwenocr",
    help="Turn PDFs and scans into Markdown or JSON with Qwen 3.5 vision models, locally.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

# Set by the main callback; read by the error handler in main().
_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"qwenocr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Turn PDFs and scans into Markdown or JSON with Qwen 3.5 vision models, on your own machine.

    [bold]Examples[/bold]

      qwenocr doctor                     what can this machine run?
      qwenocr scan report.pdf > report.md
      qwenocr scan scan.png --format json -o scan.json
    """
    # QWENOCR_* variables and the config file become the invoked command's defaults
    # (flag > env > file > default); see qwenocr/cli/config.py and docs/configuration.md.
    from qwenocr.cli.config import apply_config

    apply_config(ctx)


# --- doctor --------------------------------------------------------------------------
# (section owned by the hardware-fit work: qwenocr/fit/doctor.py)


@app.command("doctor")
def doctor_command(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the report.")] = False,
    platform: Annotated[
        Optional[str],
        typer.Option("--platform", help="What-if: describe a machine instead of this one: apple, cuda or cpu."),
    ] = None,
    memory: Annotated[
        Optional[float],
        typer.Option("--memory", help="What-if: RAM / unified memory in GB as sold (binary: 256 = 256 GiB)."),
    ] = None,
    vram: Annotated[
        Optional[str],
        typer.Option("--vram", help="What-if: VRAM per GPU in GB as sold, comma-separated: 24 or 48,48."),
    ] = None,
    chip: Annotated[
        Optional[str],
        typer.Option("--chip", help="What-if: chip or GPU model (M3 Ultra, RTX 4090), for its memory bandwidth."),
    ] = None,
    variant: Annotated[
        Optional[str], typer.Option("--variant", help="Force a variant: 0.8B 2B 4B 9B 27B 35B-A3B 122B-A10B 397B-A17B.")
    ] = None,
    quant: Annotated[
        Optional[str],
        typer.Option(
            "--quant", help="Force a precision: 4bit 8bit bf16, or Q4_K_XL Q8_0 BF16 (llama.cpp), MXFP4 (mlx)."
        ),
    ] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", help="Force the engine: mlx or llama.cpp.")] = None,
    max_image_tokens: Annotated[
        int, typer.Option("--max-image-tokens", min=64, help="Visual tokens per page the estimate allows for.")
    ] = 1536,
    max_output_tokens: Annotated[
        int, typer.Option("--max-output-tokens", min=16, help="Output tokens per page the estimate allows for.")
    ] = 4096,
    base_url: Annotated[
        Optional[List[str]],
        typer.Option(
            "--base-url",
            help="Check OpenAI-compatible servers instead (for scan --backend openai): do they answer, which models do they serve? Repeatable.",
        ),
    ] = None,
) -> None:
    """What can this machine run? Every Qwen 3.5 variant × precision against the memory it can use.

    Shows the hardware found, the estimate for each model (weights + vision projector +
    KV cache at the OCR context + activations + margin) and why it fits or not, the
    choice `scan` will use, the files it downloads, and whether the engine is installed.

    [bold]Examples[/bold]

      qwenocr doctor
      qwenocr doctor --json
      qwenocr doctor --platform apple --memory 256 --chip "M3 Ultra"
      qwenocr doctor --platform cuda --vram 24
      qwenocr doctor --platform cuda --vram 48,48
      qwenocr doctor --platform cpu --memory 24
      qwenocr doctor --variant 27B --quant 8bit
      qwenocr doctor --base-url http://gpu-box:8000/v1

    Exit codes: 0 a model fits and its engine is installed; 5 nothing fits; 6 the engine
    is missing (see docs/exit-codes.md).
    """
    if base_url:
        from qwenocr.fit.doctor import check_servers

        sys.exit(check_servers(base_url, json_output=json_output))
    from qwenocr.cli.config import effective_config_of
    from qwenocr.fit.doctor import config_report
    from qwenocr.fit.doctor import run as run_doctor

    code = run_doctor(
        json_output=json_output,
        config=config_report(lambda: effective_config_of(ctx, "scan")),
        platform=platform,
        memory=memory,
        vram=vram,
        chip=chip,
        variant=variant,
        quant=quant,
        backend=backend,
        max_image_tokens=max_image_tokens,
        max_output_tokens=max_output_tokens,
    )
    if code:
        # SystemExit, not typer.Exit: with standalone_mode=False Click returns an Exit's
        # code instead of exiting, and main() would turn it into 0.
        sys.exit(code)


# --- scan ----------------------------------------------------------------------------
# (section owned by the scan work: qwenocr/scan/run.py)

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


class ScanBackend(str, enum.Enum):
    mlx = "mlx"
    llama_cpp = "llama.cpp"
    openai = "openai"


class ScanMode(str, enum.Enum):
    auto = "auto"
    ocr = "ocr"
    text = "text"


@app.command("scan", help=_SCAN_HELP, no_args_is_help=True)
def scan_command(
    inputs: Annotated[List[str], typer.Argument(help="PDFs or images; - reads one from stdin.", show_default=False)],
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Output file, or directory for several inputs (default: stdout)."),
    ] = None,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Output format.", case_sensitive=False)
    ] = OutputFormat.markdown,
    pages: Annotated[Optional[str], typer.Option("--pages", "-p", help="Pages to read, 1-based: 1-3,7,10-")] = None,
    max_image_tokens: Annotated[
        int,
        typer.Option(
            "--max-image-tokens", min=64, help="Visual-token budget per page; the render size follows from it."
        ),
    ] = 1536,
    dpi: Annotated[
        Optional[float],
        typer.Option(
            "--dpi",
            min=10,
            max=1200,
            help="Render at a fixed DPI instead of the token budget (capped at what the engine accepts).",
        ),
    ] = None,
    mode: Annotated[
        ScanMode,
        typer.Option(
            "--mode",
            help="ocr: always the model; text: only the PDF's own text layer; auto: the text layer where it is trustworthy, the model elsewhere.",
            case_sensitive=False,
        ),
    ] = ScanMode.ocr,
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
            help="OpenAI-compatible server for --backend openai, e.g. http://localhost:8000/v1; repeat to spread pages over several. The key comes from QWENOCR_API_KEY or OPENAI_API_KEY.",
        ),
    ] = None,
    api_model: Annotated[
        Optional[str], typer.Option("--api-model", help="Model name on the server (default: the first it serves).")
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=256, help="Pages in flight with --backend openai.")
    ] = 4,
    variant: Annotated[
        Optional[str],
        typer.Option("--variant", help="Qwen 3.5 size, e.g. 9B or 35B-A3B (default: the largest that fits)"),
    ] = None,
    quant: Annotated[
        Optional[str],
        typer.Option("--quant", help="Quantization, e.g. MXFP4, Q4_K_M, Q8_0, BF16 (default: from the plan)"),
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
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=16, help="Most tokens generated per page.")] = 4096,
    temperature: Annotated[
        float, typer.Option("--temperature", min=0.0, max=2.0, help="0 = deterministic (greedy).")
    ] = 0.0,
    seed: Annotated[
        int, typer.Option("--seed", help="Sampling seed (used when temperature > 0 and for the retry).")
    ] = 0,
    page_timeout: Annotated[
        Optional[float],
        typer.Option("--page-timeout", min=1.0, help="Seconds per page before it is marked timeout and skipped."),
    ] = None,
    render_timeout: Annotated[
        float,
        typer.Option(
            "--render-timeout",
            min=0.0,
            help="Seconds a PDF page may take to render (in a separate process) before it is marked error and skipped; 0 renders in-process, without a limit.",
        ),
    ] = 120.0,
    skip_blank: Annotated[
        bool,
        typer.Option(
            "--skip-blank/--no-skip-blank", help="Skip pages that are blank from the pixels, without calling the model."
        ),
    ] = True,
    password: Annotated[
        Optional[str],
        typer.Option(
            "--password",
            help="Password for encrypted PDFs (visible in the process list: prefer QWENOCR_PDF_PASSWORD or --password-file).",
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
        typer.Option("--n-ctx", min=512, help="llama.cpp context size (default: one page's image + output budget)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no warnings on stderr.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="More detail on stderr, including the engine's own log.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    import os

    from qwenocr.engines.base import GenerationSettings
    from qwenocr.errors import UsageError
    from qwenocr.pages.document import RenderSettings
    from qwenocr.scan.run import ScanRequest, run_scan
    from qwenocr.scan.pipeline import DEFAULT_PROMPT, ScanOptions
    from qwenocr.scan.progress import Reporter
    from qwenocr.stdio import protected_stdout

    if password is None and password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as error:
            raise UsageError(f"--password-file {password_file}: {error.strerror}") from None
    if password is None:
        password = os.environ.get("QWENOCR_PDF_PASSWORD") or None
    options = ScanOptions(
        prompt=prompt or DEFAULT_PROMPT,
        generation=GenerationSettings(max_tokens=max_tokens, temperature=temperature, seed=seed),
        render=RenderSettings(max_image_tokens=max_image_tokens, dpi=dpi, timeout=render_timeout or None),
        page_timeout=page_timeout,
        skip_blank=skip_blank,
        mode=mode.value,
    )
    request = ScanRequest(
        inputs=list(inputs),
        output=output,
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
        n_ctx=n_ctx,
        verbose=verbose,
        options=options,
    )
    from qwenocr import interrupts

    interrupts.install()  # Ctrl-C and SIGTERM end the run cleanly, even mid-page
    reporter = Reporter(quiet=quiet, verbose=verbose)
    with protected_stdout() as document_stream:
        code = run_scan(request, document_stream, reporter)
    raise typer.Exit(int(code))


# --- eval ----------------------------------------------------------------------------
# (section owned by the eval work: qwenocr/eval/evaluate.py)

_EVAL_HELP = """Score OCR output against ground truth: CER/WER per page and overall, and text checks.

OUTPUT is what qwenocr (or another tool) produced: Markdown/text, qwenocr JSON or JSONL; - reads it from stdin. REFERENCE is the ground truth: Markdown/text with pages split by <!-- page N --> lines or form feeds (or one page), or JSON. Pages pair by number.

Markdown syntax is normalised away before scoring (see docs/eval.md); --no-normalize compares the raw text.

[bold]Examples[/bold]

  qwenocr eval report.md truth.md

  qwenocr eval report.json truth.md --json | jq .cer

  qwenocr eval report.md --checks checks.jsonl          present / absent / order checks

  qwenocr scan page.png | qwenocr eval - page.txt
"""


@app.command("eval", help=_EVAL_HELP, no_args_is_help=True)
def eval_command(
    ctx: typer.Context,
    output: Annotated[
        Path, typer.Argument(help="OCR output: .md/.txt, qwenocr .json or .jsonl; - for stdin.", show_default=False)
    ],
    reference: Annotated[
        Optional[Path],
        typer.Argument(help="Ground truth (.md/.txt or .json); optional with --checks.", show_default=False),
    ] = None,
    checks: Annotated[
        Optional[Path],
        typer.Option(
            "--checks", "-c", help="JSONL of checks: present, absent, order (olmOCR-Bench style).", show_default=False
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the scores as JSON (rates as fractions) instead of a table.")
    ] = False,
    normalize: Annotated[
        bool,
        typer.Option(
            "--normalize/--no-normalize", help="Strip Markdown, unify quotes and whitespace before comparing."
        ),
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No warnings on stderr.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also say how pages were paired and how long scoring took.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    import json
    import time

    from qwenocr.cli.config import verbosity
    from qwenocr.console import stdout_console
    from qwenocr.errors import UsageError
    from qwenocr.eval import evaluate

    _state["debug"] = _state["debug"] or debug
    level = verbosity(quiet, verbose, debug, ctx)
    if reference is None and checks is None:
        raise UsageError("nothing to score against", "give a REFERENCE file, or --checks FILE.jsonl, or both")
    if str(output) == "-" and reference is not None and str(reference) == "-":
        raise UsageError("only one of OUTPUT and REFERENCE can be - (stdin)")
    started = time.perf_counter()
    out_doc = evaluate.read_document(output, role="output")
    ref_doc = evaluate.read_document(reference, role="reference") if reference is not None else None
    check_list = evaluate.read_checks(checks) if checks is not None else None
    result = evaluate.evaluate(
        out_doc, ref_doc, check_list, normalized=normalize, checks_source=str(checks) if checks else None
    )
    elapsed = time.perf_counter() - started
    if level >= 0:
        for note in result.warnings():
            typer.echo(f"qwenocr: warning: {note}", err=True)
    if level >= 1:
        if result.scores is not None:
            how = (
                "by page number"
                if result.scores.alignment == "page"
                else "as whole documents (one side has no page markers)"
            )
            typer.echo(f"qwenocr: compared {len(result.scores.pages)} page(s) {how}", err=True)
        typer.echo(f"qwenocr: scored in {elapsed:.3f} s", err=True)
    if json_output:
        sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False, indent=2) + "\n")
        return
    console = stdout_console()
    for part in evaluate.render(result):
        console.print(part)


# --- models --------------------------------------------------------------------------
# (section owned by the model-management work: qwenocr/store/resolve.py, qwenocr/store/modelstore.py)

_MODELS_HELP = """Model files in the Hugging Face cache: list what is there, pull, remove, print paths.

Files live in the standard Hugging Face cache (HF_HUB_CACHE, by default ~/.cache/huggingface/hub), shared with mlx-vlm and every other huggingface_hub tool: nothing is downloaded twice.

[bold]Examples[/bold]

  qwenocr models list

  qwenocr models pull 9B                          the precision and engine doctor picks

  qwenocr models pull 27B --quant Q8_0 --backend llama.cpp

  qwenocr models path 9B --backend llama.cpp      the GGUF, then the mmproj

  qwenocr models rm 27B
"""

models_app = typer.Typer(name="models", help=_MODELS_HELP, no_args_is_help=True, rich_markup_mode="rich")
app.add_typer(models_app, name="models")


_ModelVariant = Annotated[
    Optional[str],
    typer.Argument(
        metavar="VARIANT", help="Qwen 3.5 size: 0.8B 2B 4B 9B 27B 35B-A3B 122B-A10B 397B-A17B.", show_default=False
    ),
]
_ModelQuant = Annotated[
    Optional[str],
    typer.Option("--quant", help="Precision: 4bit 8bit bf16, or Q4_K_XL Q8_0 BF16 (llama.cpp), MXFP4 (mlx)."),
]


class ModelBackend(str, enum.Enum):
    mlx = "mlx"
    llama_cpp = "llama.cpp"


_ModelBackend = Annotated[
    Optional[ModelBackend], typer.Option("--backend", help="Engine whose files to use: mlx or llama.cpp.")
]
_ModelRepo = Annotated[
    Optional[str], typer.Option("--repo", help="Any Hugging Face repo id (ORG/NAME) instead of a VARIANT.")
]
_ModelInclude = Annotated[
    Optional[List[str]],
    typer.Option("--include", help="With --repo: only the files matching this glob (repeatable).", show_default=False),
]
_Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Nothing on stderr but errors.")]
_Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="More detail on stderr.")]
_Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return getattr(source, "name", None) == "COMMANDLINE"


def _model_targets(ctx: typer.Context, variant, quant, backend, repo, include, *, every_precision: bool = False):
    """(targets, plan) for a models command: a --repo, every cached precision (rm), or the plan's pick."""
    from qwenocr.errors import UsageError
    from qwenocr.store import modelstore

    backend_name = backend.value if backend is not None else None
    variant_name = variant.strip() if variant else None
    if repo is not None:
        if variant_name is not None:
            raise UsageError("give a VARIANT or --repo ORG/NAME, not both")
        for name, value in (("quant", quant), ("backend", backend)):
            # Set by QWENOCR_* or the config file for scan's sake: not meant for a repo.
            if value is not None and _from_command_line(ctx, name):
                raise UsageError(f"--{name} applies to a VARIANT", "with --repo, choose files with --include PATTERN")
        return [modelstore.repo_target(repo, include or ())], None
    if include and _from_command_line(ctx, "include"):
        raise UsageError("--include picks files of a --repo ORG/NAME", "for a catalog model use --quant and --backend")
    if variant_name is None:
        raise UsageError(
            "name a model: a VARIANT such as 9B, or --repo ORG/NAME", "`qwenocr models list` shows the catalog"
        )
    if every_precision:
        return modelstore.variant_targets(variant_name, quant, backend_name), None
    target, plan = modelstore.planned_target(variant_name, quant, backend_name)
    return [target], plan


def _ask_on_stderr(question: str) -> bool:
    # Not typer.confirm: Click hands the prompt's last space to input(), which writes it
    # to stdout, and stdout carries only the product.
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _say(level: int):
    def say(text: str) -> None:
        if level >= 0:
            typer.echo(f"qwenocr: {text}", err=True)

    return say


@models_app.command("list")
def models_list_command(
    ctx: typer.Context,
    backend: _ModelBackend = None,
    all_backends: Annotated[
        bool, typer.Option("--all", help="Both engines' files (default: this machine's engine).")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
    quiet: _Quiet = False,
    verbose: _Verbose = False,
    debug: _Debug = False,
) -> None:
    """Every variant × precision of the catalog, and what the Hugging Face cache holds of it.

    The row marked → is what `qwenocr scan` picks on this machine. "partial" means some
    files are missing (an interrupted pull: pulling again completes it). Cached files of
    other Qwen 3.5 quantisations (e.g. a Q4_K_M pulled with --repo) are listed below.
    Sizes are on disk, in GB = 10⁹ bytes. Never touches the network.

    [bold]Examples[/bold]

      qwenocr models list
      qwenocr models list --all
      qwenocr models list --json | jq -r '.models[] | select(.status == "cached") | .paths[0]'
    """
    import json
    import os

    from qwenocr.cli.config import verbosity
    from qwenocr.console import stdout_console
    from qwenocr.fit.catalog import BACKENDS
    from qwenocr.store import modelstore

    _state["debug"] = _state["debug"] or debug
    level = verbosity(quiet, verbose, debug, ctx)
    planned = None
    try:
        from qwenocr.fit.hardware import detect
        from qwenocr.fit.plan import make_plan

        plan = make_plan(detect())
        if plan.fits:
            planned = modelstore.catalog_target(plan.variant, plan.bits, plan.backend)
        default_backend = plan.backend
    except QwenOCRError:
        default_backend = "mlx" if sys.platform == "darwin" else "llama.cpp"
    backends = tuple(BACKENDS) if all_backends else ((backend.value,) if backend else (default_backend,))
    cache = modelstore.Cache.scan()
    listing = modelstore.list_models(cache, backends, planned)
    if level >= 1:
        typer.echo(f"qwenocr: cache {cache.directory} (from {modelstore.cache_dir_source()})", err=True)
    if json_output:
        sys.stdout.write(json.dumps(listing.to_dict(), indent=2) + "\n")
        return
    console = stdout_console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120  # a pipe or a file: don't fold the repo names into 80 columns
    for part in modelstore.render_listing(listing):
        console.print(part)


@models_app.command("pull")
def models_pull_command(
    ctx: typer.Context,
    variant: _ModelVariant = None,
    quant: _ModelQuant = None,
    backend: _ModelBackend = None,
    repo: _ModelRepo = None,
    include: _ModelInclude = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="Never touch the network: only check that the files are cached (exit 7 if not)."
        ),
    ] = False,
    quiet: _Quiet = False,
    verbose: _Verbose = False,
    debug: _Debug = False,
) -> None:
    """Download a model into the Hugging Face cache, then check every file's size against the hub.

    Without --quant/--backend it fetches what `qwenocr doctor` picks for that variant on
    this machine. Files already cached are not downloaded again, and an interrupted
    download resumes where it stopped when the same command runs again. Progress goes
    to stderr; when done, the model's local paths go to stdout (as `models path` prints
    them). With --offline (or HF_HUB_OFFLINE=1) it only checks the cache.

    [bold]Examples[/bold]

      qwenocr models pull 9B
      qwenocr models pull 35B-A3B --quant MXFP4 --backend mlx
      qwenocr models pull --repo unsloth/Qwen3.5-9B-GGUF --include '*Q4_K_M.gguf' --include 'mmproj-F16.gguf'
      qwenocr models pull 9B --offline            is it all there?

    Exit codes: 0 done (or already cached); 4 the disk is full; 7 the hub can't be
    reached, a file is missing or has the wrong size, or --offline and not cached.
    """
    from qwenocr.cli.config import verbosity
    from qwenocr.store import modelstore
    from qwenocr.store.resolve import offline_requested

    _state["debug"] = _state["debug"] or debug
    level = verbosity(quiet, verbose, debug, ctx)
    say = _say(level)
    (target,), plan = _model_targets(ctx, variant, quant, backend, repo, include)
    if plan is not None and not plan.fits and plan.choice is not None:
        say(
            f"warning: {target.label} does not fit this machine by doctor's estimate ({plan.choice.reason}); pulling it anyway"
        )
    if offline_requested(offline):
        result = modelstore.pull_offline(target, modelstore.Cache.scan())
        say(
            f"{target.label}: all {len(result.files)} file(s) are in the cache ({modelstore.human_size(result.size)}); offline, sizes not checked against the hub"
        )
    else:
        result = modelstore.pull(target, announce=say, quiet=level < 0)
        what = "already cached" if result.already else "downloaded"
        say(
            f"{target.label}: {len(result.files)} file(s), {modelstore.human_size(result.size)}, {what};"
            f" sizes match the hub (commit {result.revision[:7]})"
        )
    if level >= 1:
        say(f"snapshot folder: {result.folder}")
    for path in result.load_paths():
        typer.echo(str(path))


@models_app.command("rm")
def models_rm_command(
    ctx: typer.Context,
    variant: _ModelVariant = None,
    quant: _ModelQuant = None,
    backend: _ModelBackend = None,
    repo: _ModelRepo = None,
    include: _ModelInclude = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Remove without asking.")] = False,
    quiet: _Quiet = False,
    verbose: _Verbose = False,
    debug: _Debug = False,
) -> None:
    """Remove a model's files from the Hugging Face cache, after listing them and asking.

    VARIANT alone removes every cached precision of it for both engines; --quant and
    --backend narrow that down. A projector (mmproj) that another cached precision still
    uses is kept. --repo removes that whole repo, or only the files matching --include.
    Without a terminal to ask on, it refuses unless --yes is given.

    [bold]Examples[/bold]

      qwenocr models rm 27B
      qwenocr models rm 9B --quant Q8_0 --backend llama.cpp --yes
      qwenocr models rm --repo unsloth/Qwen3.5-9B-GGUF --include '*Q4_K_M.gguf'

    Exit codes: 0 removed, nothing cached, or declined; 2 no terminal to ask on and no --yes.
    """
    from qwenocr.cli.config import verbosity
    from qwenocr.errors import UsageError
    from qwenocr.store import modelstore

    _state["debug"] = _state["debug"] or debug
    level = verbosity(quiet, verbose, debug, ctx)
    say = _say(level)
    targets, _ = _model_targets(ctx, variant, quant, backend, repo, include, every_precision=True)
    cache = modelstore.Cache.scan()
    removal = modelstore.plan_removal(cache, targets)
    if removal.empty:
        what = (
            targets[0].label
            if len(targets) == 1
            else f"{targets[0].variant} ({len(targets)} precision/engine combinations)"
        )
        say(f"nothing to remove: {what} has no files in the Hugging Face cache ({cache.directory})")
        for f, user in removal.kept:
            say(f"kept {f.repo} {f.path}: {user} uses it")
        return
    lines = modelstore.describe_removal(removal)
    if not yes:
        if not sys.stdin.isatty():
            for line in ["would remove, " + lines[0]] + lines[1:]:
                typer.echo(line, err=True)
            raise UsageError("not removing without confirmation: stdin is not a terminal", "run it again with --yes")
        for line in ["will remove, " + lines[0]] + lines[1:]:
            typer.echo(line, err=True)
        if not _ask_on_stderr(f"Remove {len(removal.files)} file(s)?"):
            say("nothing removed")
            return
    elif level >= 1:
        for line in ["removing, " + lines[0]] + lines[1:]:
            typer.echo(line, err=True)
    removal.execute()
    say(f"removed {len(removal.files)} file(s), freed {modelstore.human_size(removal.freed)}")


@models_app.command("path")
def models_path_command(
    ctx: typer.Context,
    variant: _ModelVariant = None,
    quant: _ModelQuant = None,
    backend: _ModelBackend = None,
    repo: _ModelRepo = None,
    include: _ModelInclude = None,
    quiet: _Quiet = False,
    verbose: _Verbose = False,
    debug: _Debug = False,
) -> None:
    """Print where a cached model's files are, one path per line, for scripts.

    llama.cpp: the model GGUF (the first shard of a split one), then the mmproj. MLX: the
    model folder. --repo: the same for a repo's files (a GGUF repo: each model, then the
    projectors). Without --quant/--backend: what `qwenocr scan --variant VARIANT` loads
    here. Never downloads; exit 7 if the files are not all cached.

    [bold]Examples[/bold]

      qwenocr models path 9B
      llama-mtmd-cli -m "$(qwenocr models path 9B --backend llama.cpp | head -1)" --mmproj "$(qwenocr models path 9B --backend llama.cpp | tail -1)"
      python -m mlx_vlm.generate --model "$(qwenocr models path 9B --backend mlx)" --image page.png
    """
    from qwenocr.cli.config import verbosity
    from qwenocr.store import modelstore

    _state["debug"] = _state["debug"] or debug
    verbosity(quiet, verbose, debug, ctx)
    (target,), _ = _model_targets(ctx, variant, quant, backend, repo, include)
    found = modelstore.locate(modelstore.Cache.scan(), target)
    for path in found.load_paths():
        typer.echo(str(path))


def main() -> None:
    """Entry point: run the app and turn user-facing errors into one line + exit code."""
    debug = "--debug" in sys.argv
    _state["debug"] = debug
    try:
        # Without standalone mode Click returns the code of a typer.Exit instead of exiting.
        result = app(standalone_mode=False)
    except QwenOCRError as error:
        if _state["debug"]:  # a command may turn it on from QWENOCR_DEBUG or the config file
            import traceback

            traceback.print_exc()
        _print_error(error.one_line())
        sys.exit(int(error.exit_code))
    except KeyboardInterrupt:
        _print_error("interrupted; finished pages are kept: run the same command again to resume")
        sys.exit(int(ExitCode.INTERRUPTED))
    except Terminated:
        _print_error("terminated; finished pages are kept: run the same command again to resume")
        sys.exit(int(ExitCode.TERMINATED))
    except SystemExit:
        raise
    except Exception as error:  # usage errors from Typer's Click, and real bugs
        # Typer 0.29 carries its own copy of Click (typer._click), and older Typer uses
        # Click itself: recognise their exceptions by shape rather than by class.
        kind = type(error).__name__
        if kind == "NoArgsIsHelpError":  # the help was shown already
            sys.exit(int(ExitCode.USAGE))
        if kind == "Abort":
            _print_error("interrupted")
            sys.exit(int(ExitCode.INTERRUPTED))
        if kind == "Exit" and hasattr(error, "exit_code"):
            sys.exit(error.exit_code)
        if hasattr(error, "show") and hasattr(error, "exit_code"):
            error.show()
            sys.exit(int(ExitCode.USAGE))
        if _state["debug"]:
            raise
        _print_error(
            f"internal error: {type(error).__name__}: {error} (run again with --debug for a traceback, and please report it)"
        )
        sys.exit(int(ExitCode.INTERNAL_ERROR))
    if result == ExitCode.INTERRUPTED:
        # Typer turns a KeyboardInterrupt into Exit(130), which standalone_mode=False
        # hands back as a return value: the except clause above never sees it.
        _print_error("interrupted; finished pages are kept: run the same command again to resume")
    sys.exit(result if isinstance(result, int) else 0)


def _print_error(line: str) -> None:
    sys.stderr.write(f"qwenocr: error: {line}\n")
    sys.stderr.flush()
