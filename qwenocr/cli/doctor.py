"""`qwenocr doctor`: the options, and the configuration section of its report.

The report itself is qwenocr/fit/doctor.py. The section on the configuration `scan`
would run with is built here, because it is the config layer's knowledge (cli/config.py)
and fit must not import the CLI; the report shows it through `ConfigSection.render`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, List, Optional, Tuple

import typer

from qwenocr.cli.options import (
    MAX_CONTEXT_TOKENS,
    MAX_IMAGE_TOKENS,
    VERBOSE,
    Prefer,
    finite_float,
    verbosity_level,
    verbosity_options,
)
from qwenocr.defaults import DEFAULT_MAX_IMAGE_TOKENS, DEFAULT_MAX_OUTPUT_TOKENS

if TYPE_CHECKING:  # the config layer is imported when doctor runs, not for `qwenocr --help`
    from qwenocr.cli.config import ConfigEntry


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)


@verbosity_options(quiet="Nothing on stderr but errors.", verbose="Also say how long the report took.")
def doctor_command(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the report.")] = False,
    platform: Annotated[
        Optional[str],
        typer.Option("--platform", help="What-if: describe a machine instead of this one: apple, cuda or cpu."),
    ] = None,
    memory: Annotated[
        Optional[float],
        typer.Option(
            "--memory",
            click_type=finite_float(),
            help="What-if: RAM / unified memory in GB as sold (binary: 256 = 256 GiB).",
        ),
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
    family: Annotated[
        str,
        typer.Option("--family", help="Model family: 3.5, or 3.6 (27B and 35B-A3B only)."),
    ] = "3.5",
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Don't ask the Hugging Face hub to verify the sources (also with HF_HUB_OFFLINE=1):"
            " use the cached hub facts and the data.",
        ),
    ] = False,
    max_image_tokens: Annotated[
        int,
        typer.Option(
            "--max-image-tokens", min=64, max=MAX_IMAGE_TOKENS, help="Visual tokens per page the estimate allows for."
        ),
    ] = DEFAULT_MAX_IMAGE_TOKENS,
    max_output_tokens: Annotated[
        int,
        typer.Option(
            "--max-output-tokens",
            min=16,
            max=MAX_CONTEXT_TOKENS,
            help="Output tokens per page the estimate allows for.",
        ),
    ] = DEFAULT_MAX_OUTPUT_TOKENS,
    prefer: Annotated[
        Optional[Prefer],
        typer.Option(
            "--prefer",
            help="Where a dense and an MoE model both fit: accuracy (27B over 35B-A3B, higher precision)"
            " or speed (the faster page, 4-bit).",
            case_sensitive=False,
        ),
    ] = None,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Also say how to serve the model with vLLM or SGLang (tensor parallel) for scan --backend openai;"
            " given by itself with four or more datacenter GPUs.",
        ),
    ] = False,
    base_url: Annotated[
        Optional[List[str]],
        typer.Option(
            "--base-url",
            help="Check OpenAI-compatible servers instead (for scan --backend openai):"
            " do they answer, which models do they serve? Repeatable.",
        ),
    ] = None,
) -> None:
    """What can this machine run? Every Qwen 3.5 variant × precision against the memory it can use.

    Shows the hardware found, the estimate for each model (weights + vision projector +
    KV cache at the OCR context + activations + margin) and why it fits or not, the
    choice `scan` will use, the files it downloads, and whether the engine is installed.
    The chosen model's candidate repos are checked on the hub first (a few seconds at
    most; not with --offline): see docs/model-sources.md.

    [bold]Examples[/bold]

      qwenocr doctor
      qwenocr doctor --json
      qwenocr doctor --platform apple --memory 256 --chip "M3 Ultra"
      qwenocr doctor --platform cuda --vram 24
      qwenocr doctor --platform cuda --vram 48,48
      qwenocr doctor --platform cpu --memory 24
      qwenocr doctor --variant 27B --quant 8bit
      qwenocr doctor --platform cuda --vram 24 --memory 128 --chip "RTX 4090" --prefer speed
      qwenocr doctor --platform cuda --vram 80,80,80,80,80,80,80,80 --chip H100 --serve
      qwenocr doctor --family 3.6 --offline
      qwenocr doctor --base-url http://gpu-box:8000/v1

    Exit codes: 0 a model fits and its engine is installed; 5 nothing fits; 6 the engine
    is missing (see docs/exit-codes.md).
    """
    import functools

    from qwenocr.fit import doctor
    from qwenocr.store.hub import offline_requested
    from qwenocr.store.verify import verified_plan

    started = time.perf_counter()
    if base_url:
        code = doctor.check_servers(base_url, json_output=json_output)
        done = f"checked {len(base_url)} server(s)"
    else:
        code = doctor.run(
            json_output=json_output,
            config=config_section(ctx),
            platform=platform,
            memory=memory,
            vram=vram,
            chip=chip,
            variant=variant,
            quant=quant,
            backend=backend,
            family=family,
            planner=functools.partial(verified_plan, offline=offline_requested(offline)),
            max_image_tokens=max_image_tokens,
            max_output_tokens=max_output_tokens,
            prefer=prefer.value if prefer else None,
            serve=serve,
        )
        done = "report built"
    if verbosity_level(ctx) >= VERBOSE:
        typer.echo(f"qwenocr: {done} in {time.perf_counter() - started:.3f} s", err=True)
    raise typer.Exit(code)


@dataclass(frozen=True)
class ConfigSection:
    """The configuration `scan` would run with: each option's value and where it came from."""

    file: str  # the config file's path, whether or not it exists
    file_found: bool
    entries: Tuple[ConfigEntry, ...]
    error: Optional[str] = None  # a bad value in the environment or the file

    def to_dict(self) -> dict:
        def plain(value: Any) -> Any:
            return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)

        return {
            "command": "scan",
            "file": self.file,
            "file_found": self.file_found,
            "options": [{"name": e.name, "value": plain(e.value), "source": e.source} for e in self.entries],
            "error": self.error,
        }

    def render(self, console: Any) -> None:
        """The report's Configuration section, on a Rich console."""
        from rich.markup import escape

        from qwenocr.cli.config import render_config_table

        console.print(
            "[bold]Configuration[/bold] (what `qwenocr scan` runs with: flag > QWENOCR_* > config file > default)"
        )
        console.print(f"  Config file: {escape(self.file)}" + ("" if self.file_found else " [dim](none)[/dim]"))
        if self.error:
            console.print(f"  [red]{escape(self.error)}[/red]")
        else:
            console.print(render_config_table(self.entries))


def config_section(ctx: typer.Context) -> ConfigSection:
    """Scan's effective configuration; a bad QWENOCR_* value or config file is reported, not raised."""
    from qwenocr.cli.config import config_path, effective_config_of
    from qwenocr.errors import UsageError

    path = config_path()
    try:
        entries, error = tuple(effective_config_of(ctx, "scan")), None
    except UsageError as problem:
        entries, error = (), problem.one_line()
    return ConfigSection(str(path), path.is_file(), entries, error)
