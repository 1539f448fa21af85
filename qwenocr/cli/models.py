"""`qwenocr models list|pull|rm|path`: model files in the Hugging Face cache (qwenocr/store)."""

from __future__ import annotations

import enum
import sys
from typing import TYPE_CHECKING, Annotated, Callable, List, Optional, Sequence, Tuple

import typer

from qwenocr.cli.options import NORMAL, QUIET, VERBOSE, verbosity_level, verbosity_options

if TYPE_CHECKING:  # imported when a command runs, not for `qwenocr --help`
    from qwenocr.fit.plan import Plan
    from qwenocr.store import Cache, Target


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


_MODELS_HELP = """Model files in the Hugging Face cache: list what is there, pull, remove, print paths.

Files live in the standard Hugging Face cache (HF_HUB_CACHE, by default ~/.cache/huggingface/hub), shared with \
mlx-vlm and every other huggingface_hub tool: nothing is downloaded twice.

[bold]Examples[/bold]

  qwenocr models list

  qwenocr models pull 9B                          the precision and engine doctor picks

  qwenocr models pull 27B --quant Q8_0 --backend llama.cpp

  qwenocr models path 9B --backend llama.cpp      the GGUF, then the mmproj

  qwenocr models rm 27B
"""

models_app = typer.Typer(name="models", help=_MODELS_HELP, no_args_is_help=True, rich_markup_mode="rich")


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
# The same three flags on every models command.
_verbosity_options = verbosity_options(quiet="Nothing on stderr but errors.", verbose="More detail on stderr.")


def _model_targets(
    ctx: typer.Context,
    variant: Optional[str],
    quant: Optional[str],
    backend: Optional[ModelBackend],
    repo: Optional[str],
    include: Optional[Sequence[str]],
    *,
    every_precision: bool = False,
) -> Tuple[List[Target], Optional[Plan]]:
    """(targets, plan) for a models command: a --repo, every cached precision (rm), or the plan's pick."""
    from qwenocr import store
    from qwenocr.cli.config import from_command_line
    from qwenocr.errors import UsageError

    backend_name = backend.value if backend is not None else None
    variant_name = variant.strip() if variant else None
    if repo is not None:
        if variant_name is not None:
            raise UsageError("give a VARIANT or --repo ORG/NAME, not both")
        for name, value in (("quant", quant), ("backend", backend)):
            # Set by QWENOCR_* or the config file for scan's sake: not meant for a repo.
            if value is not None and from_command_line(ctx, name):
                raise UsageError(f"--{name} applies to a VARIANT", "with --repo, choose files with --include PATTERN")
        return [store.repo_target(repo, include or ())], None
    if include and from_command_line(ctx, "include"):
        raise UsageError("--include picks files of a --repo ORG/NAME", "for a catalog model use --quant and --backend")
    if variant_name is None:
        raise UsageError(
            "name a model: a VARIANT such as 9B, or --repo ORG/NAME", "`qwenocr models list` shows the catalog"
        )
    if every_precision:
        return store.variant_targets(variant_name, quant, backend_name), None
    target, plan = store.planned_target(variant_name, quant, backend_name)
    return [target], plan


def _ask_on_stderr(question: str) -> bool:
    # Not typer.confirm: Click hands the prompt's last space to input(), which writes it
    # to stdout, and stdout carries only the product.
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _say(level: int) -> Callable[[str], None]:
    """`say(text)`: `qwenocr: TEXT` on stderr, unless --quiet."""

    def say(text: str) -> None:
        if level >= NORMAL:
            typer.echo(f"qwenocr: {text}", err=True)

    return say


def _name_the_cache(level: int, cache: Cache) -> None:
    """With --verbose, say which cache folder the command works on, and which setting chose it."""
    from qwenocr import store

    if level >= VERBOSE:
        typer.echo(f"qwenocr: cache {cache.directory} (from {store.cache_dir_source()})", err=True)


@models_app.command("list")
@_verbosity_options
def models_list_command(
    ctx: typer.Context,
    backend: _ModelBackend = None,
    all_backends: Annotated[
        bool, typer.Option("--all", help="Both engines' files (default: this machine's engine).")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the table.")] = False,
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

    from qwenocr import store
    from qwenocr.console import stdout_console
    from qwenocr.errors import QwenOCRError
    from qwenocr.fit.catalog import BACKENDS

    level = verbosity_level(ctx)
    planned = None
    try:
        from qwenocr.fit.hardware import detect
        from qwenocr.fit.plan import make_plan

        plan = make_plan(detect())
        if plan.fits and plan.choice is not None:
            planned = store.catalog_target(plan.choice.variant, plan.choice.bits, plan.backend)
        default_backend = plan.backend
    except QwenOCRError:
        default_backend = "mlx" if sys.platform == "darwin" else "llama.cpp"
    backends = tuple(BACKENDS) if all_backends else ((backend.value,) if backend else (default_backend,))
    cache = store.Cache.scan()
    listing = store.list_models(cache, backends, planned)
    _name_the_cache(level, cache)
    if json_output:
        sys.stdout.write(json.dumps(listing.to_dict(), indent=2) + "\n")
        return
    console = stdout_console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120  # a pipe or a file: don't fold the repo names into 80 columns
    for part in store.render_listing(listing):
        console.print(part)


@models_app.command("pull")
@_verbosity_options
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
    from qwenocr import store

    level = verbosity_level(ctx)
    say = _say(level)
    (target,), plan = _model_targets(ctx, variant, quant, backend, repo, include)
    if plan is not None and not plan.fits and plan.choice is not None:
        say(
            f"warning: {target.label} does not fit this machine by doctor's estimate ({plan.choice.reason});"
            " pulling it anyway"
        )
    cache = store.Cache.scan()
    _name_the_cache(level, cache)
    if store.offline_requested(offline):
        result = store.pull_offline(target, cache)
        say(
            f"{target.label}: all {len(result.files)} file(s) are in the cache ({store.human_size(result.size)});"
            " offline, sizes not checked against the hub"
        )
    else:
        result = store.pull(target, announce=say, quiet=level <= QUIET, cache=cache)
        what = "already cached" if result.already else "downloaded"
        say(
            f"{target.label}: {len(result.files)} file(s), {store.human_size(result.size)}, {what};"
            f" sizes match the hub (commit {result.revision[:7]})"
        )
    if level >= VERBOSE:
        say(f"snapshot folder: {result.folder}")
    for path in result.load_paths():
        typer.echo(str(path))


@models_app.command("rm")
@_verbosity_options
def models_rm_command(
    ctx: typer.Context,
    variant: _ModelVariant = None,
    quant: _ModelQuant = None,
    backend: _ModelBackend = None,
    repo: _ModelRepo = None,
    include: _ModelInclude = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Remove without asking.")] = False,
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
    from qwenocr import store
    from qwenocr.errors import UsageError

    level = verbosity_level(ctx)
    say = _say(level)
    targets, _ = _model_targets(ctx, variant, quant, backend, repo, include, every_precision=True)
    cache = store.Cache.scan()
    _name_the_cache(level, cache)
    removal = store.plan_removal(cache, targets)
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
    lines = store.describe_removal(removal)
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
    elif level >= VERBOSE:
        for line in ["removing, " + lines[0]] + lines[1:]:
            typer.echo(line, err=True)
    removal.execute()
    say(f"removed {len(removal.files)} file(s), freed {store.human_size(removal.freed)}")


_PATH_HELP = """Print where a cached model's files are, one path per line, for scripts.

llama.cpp: the model GGUF (the first shard of a split one), then the mmproj. MLX: the
model folder. --repo: the same for a repo's files (a GGUF repo: each model, then the
projectors). Without --quant/--backend: what `qwenocr scan --variant VARIANT` loads
here. Never downloads; exit 7 if the files are not all cached.

[bold]Examples[/bold]

  qwenocr models path 9B
  llama-mtmd-cli -m "$(qwenocr models path 9B --backend llama.cpp | head -1)" \
--mmproj "$(qwenocr models path 9B --backend llama.cpp | tail -1)"
  python -m mlx_vlm.generate --model "$(qwenocr models path 9B --backend mlx)" --image page.png
"""


@models_app.command("path", help=_PATH_HELP)
@_verbosity_options
def models_path_command(
    ctx: typer.Context,
    variant: _ModelVariant = None,
    quant: _ModelQuant = None,
    backend: _ModelBackend = None,
    repo: _ModelRepo = None,
    include: _ModelInclude = None,
) -> None:
    from qwenocr import store

    (target,), _ = _model_targets(ctx, variant, quant, backend, repo, include)
    cache = store.Cache.scan()
    _name_the_cache(verbosity_level(ctx), cache)
    found = store.locate(cache, target)
    for path in found.load_paths():
        typer.echo(str(path))


_CONVERT_HELP = """Make an MXFP4 MLX model that keeps its vision tower, from BF16 weights, with mlx-vlm.

SOURCE is a Qwen 3.5 size (the official Qwen/Qwen3.5-SIZE weights; with --family 3.6 \
Qwen/Qwen3.6-27B or -35B-A3B), a Hugging Face repo id, or a local Hugging Face folder \
(config.json + *.safetensors). A repo is downloaded into the Hugging Face cache first \
(resumable). Free disk space for the download and the result is checked before anything \
starts. The result is written to a temporary folder, checked (vision weights, mxfp4 with \
group size 32), then moved into place: an interrupted conversion leaves nothing behind. \
It is registered, so `qwenocr scan` and `qwenocr doctor` find it; its path goes to stdout.

[bold]Examples[/bold]

  qwenocr models convert 27B

  qwenocr models convert 35B-A3B --family 3.6

  qwenocr models convert ~/models/Qwen3.5-9B -o ~/models/Qwen3.5-9B-mxfp4

  qwenocr scan a.pdf --model "$(qwenocr models convert 27B)"

Exit codes: 0 done (or already converted); 2 usage; 4 not enough disk space (both \
numbers in the message); 6 mlx-vlm is not installed; 7 the source is missing, \
unreachable or not a Qwen 3.5-family vision checkpoint; 11 mlx-vlm failed.
"""


@models_app.command("convert", help=_CONVERT_HELP)
@_verbosity_options
def models_convert_command(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE", help="A Qwen 3.5 size (27B), a repo id (ORG/NAME) or a local Hugging Face folder."
        ),
    ],
    quant: Annotated[str, typer.Option("--quant", help="The quantization to make: mxfp4.")] = "mxfp4",
    output: Annotated[
        Optional[str],
        typer.Option(
            "--output",
            "-o",
            help="The folder to write (default: <qwenocr cache>/models/Qwen3.5-SIZE-mxfp4).",
            show_default=False,
        ),
    ] = None,
    family: Annotated[
        Optional[str],
        typer.Option("--family", help="With a SIZE: Qwen 3.5 (default) or 3.6 (27B and 35B-A3B).", show_default=False),
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Never touch the network: a repo must be in the cache already.")
    ] = False,
) -> None:
    import time
    from pathlib import Path

    from qwenocr import stdio
    from qwenocr.cli.config import from_command_line
    from qwenocr.store import convert as converting
    from qwenocr.store import human_size, offline_requested

    level = verbosity_level(ctx)
    say = _say(level)
    # --quant and --output of scan may be set by QWENOCR_QUANT / QWENOCR_OUTPUT or the
    # config file; they mean something else there, so only the command line counts here.
    quant_name = quant if from_command_line(ctx, "quant") else "mxfp4"
    out = Path(output) if output is not None and from_command_line(ctx, "output") else None
    start = time.monotonic()
    with stdio.protected_stdout() as real_stdout, _convert_status(level) as phase:
        result = converting.convert(
            source,
            quant_name,
            out,
            family=family,
            offline=offline_requested(offline),
            phase=phase,
            echo=(lambda line: typer.echo(line, err=True)) if level >= VERBOSE else None,
        )
        if result.already:
            say(f"{result.path} is already a {quant_name.lower()} conversion of {result.source.label}: kept as it is")
        else:
            took, size = time.monotonic() - start, human_size(result.result_bytes)
            say(f"converted {result.source.label} to {quant_name.lower()} in {took:.0f} s: {size}")
        real_stdout.write(f"{result.path}\n")


def _convert_status(level: int):
    """A context yielding `phase(text)`: `qwenocr: TEXT` lines on stderr, and a spinner on a terminal."""
    import contextlib

    from rich.console import Console

    @contextlib.contextmanager
    def status():
        if level <= QUIET:
            yield lambda text: None
            return
        console = Console(stderr=True, highlight=False, markup=False)
        spinner = console.status("") if console.is_terminal else None

        def phase(text: str) -> None:
            console.print(f"qwenocr: {text}", soft_wrap=True)
            if spinner is not None:
                # huggingface_hub draws its own bars while downloading: no spinner over them.
                if text.startswith("downloading"):
                    spinner.stop()
                else:
                    spinner.update(text)
                    spinner.start()

        try:
            yield phase
        finally:
            if spinner is not None:
                spinner.stop()

    return status()
