"""`qwenocr doctor`: what this machine (or a described one) can run, and why.

It detects the hardware (or builds the described machine), makes the same plan `scan`
would run (`plan.make_plan`), checks whether the engine the plan needs is installed
(by looking for the module with `importlib.util.find_spec`, never importing it), and
reports all of it: a Rich report, or one JSON object with `--json`. The report is the
product, so it is the only thing written to stdout.

Where the model comes from is part of the plan (fit/sources.py): the caller may pass a
`planner` that checks the candidate repos on the hub first (the CLI passes
store/verify.py's `verified_plan`; fit itself never touches the network). The report
shows the source, whether it was verified, the repos rejected and why, and for a
*convert* pick the `qwenocr models convert` command and the ready GGUF alternative.

Exit codes (docs/exit-codes.md): 0 when a model fits and its engine is installed;
NOTHING_FITS (5) when no model fits (or a forced one doesn't, or has no source);
ENGINE_MISSING (6) when the engine is not installed. A described machine (what-if)
never checks the engine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Protocol, TextIO, Tuple

from qwenocr.errors import ExitCode, UsageError


@dataclass(frozen=True)
class EngineStatus:
    """Whether the engine a plan needs is installed, and how to install it."""

    backend: str  # "mlx" | "llama.cpp"
    package: str  # what pip installs
    modules: tuple  # importable names looked for
    installed: Optional[bool]  # None: not checked (a described machine)
    install_command: str
    note: Optional[str] = None

    def to_dict(self) -> dict:
        return {
            "backend": self.backend,
            "package": self.package,
            "modules": list(self.modules),
            "installed": self.installed,
            "install_command": self.install_command,
            "note": self.note,
        }


def _module_present(name: str) -> bool:
    # find_spec on a top-level name locates it without running it (a dotted name would
    # import the parent package, which is what `doctor` must not do).
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def install_command(backend: str, device: str) -> str:
    """The exact command that installs `backend` for `device` ("metal", "cuda", "cpu")."""
    if backend == "mlx":
        return "pip install mlx mlx-vlm" if device == "metal" else 'pip install "mlx[cpu]" mlx-vlm'
    if device == "cuda":
        return 'CMAKE_ARGS="-DGGML_CUDA=on" pip install llama-cpp-python'
    if device == "metal":
        return 'CMAKE_ARGS="-DGGML_METAL=on" pip install llama-cpp-python'
    return "pip install llama-cpp-python"


def engine_status(backend: str, device: str, *, check: bool = True) -> EngineStatus:
    modules: Tuple[str, ...]
    if backend == "mlx":
        modules, package = ("mlx", "mlx_vlm"), "mlx + mlx-vlm"
    else:
        modules, package = ("llama_cpp",), "llama-cpp-python"
    note = None
    if backend == "llama.cpp":
        note = (
            "PyPI ships llama-cpp-python as source: pip compiles llama.cpp, which takes minutes (about 15 on 2 cores)."
        )
    installed = all(_module_present(m) for m in modules) if check else None
    return EngineStatus(backend, package, modules, installed, install_command(backend, device), note)


def exit_code(plan, engine: EngineStatus) -> int:
    if not plan.fits or (plan.choice is not None and not plan.choice.available):
        return int(ExitCode.NOTHING_FITS)
    if engine.installed is False:
        return int(ExitCode.ENGINE_MISSING)
    return int(ExitCode.OK)


def parse_vram(text: Optional[str]) -> Optional[List[float]]:
    """ "24" or "48,48" (GB as sold, one per GPU) into [24.0] / [48.0, 48.0]."""
    if text is None:
        return None
    try:
        sizes = [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise UsageError(f"--vram {text!r} is not a list of numbers", "e.g. --vram 24 or --vram 48,48") from None
    if not sizes:
        raise UsageError("--vram needs at least one figure", "e.g. --vram 24")
    return sizes


def build(
    *,
    platform: Optional[str] = None,
    memory: Optional[float] = None,
    vram: Optional[str] = None,
    chip: Optional[str] = None,
    variant: Optional[str] = None,
    quant: Optional[str] = None,
    backend: Optional[str] = None,
    max_image_tokens: Optional[int] = None,
    max_output_tokens: Optional[int] = None,
    family: Optional[str] = None,
    planner: Optional[Callable[..., Any]] = None,
):
    """(plan, engine status) for this machine, or for the described one. `planner`
    (default: `make_plan` from the data alone) is called like `make_plan`."""
    from qwenocr.defaults import DEFAULT_MAX_IMAGE_TOKENS, DEFAULT_MAX_OUTPUT_TOKENS
    from qwenocr.fit import hardware
    from qwenocr.fit.plan import make_plan

    sizes = parse_vram(vram)
    if platform is None and sizes is not None:
        platform = "cuda"
    if platform is None and (memory is not None or chip is not None):
        raise UsageError("--memory and --chip describe a machine: say which with --platform apple|cuda|cpu")
    if platform is not None:
        hw = hardware.hardware_profile(platform, memory_gb=memory, vram_gb=sizes, chip=chip)
    else:
        hw = hardware.detect()
    plan = (planner or make_plan)(
        hw,
        family=family,
        variant=variant,
        quant=quant,
        backend=backend,
        max_image_tokens=max_image_tokens or DEFAULT_MAX_IMAGE_TOKENS,
        max_output_tokens=max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS,
    )
    engine = engine_status(plan.backend, plan.device, check=not hw.what_if)
    return plan, engine


def report_dict(plan, engine: EngineStatus) -> dict:
    """The `--json` object."""
    data = plan.to_dict()
    return {
        "what_if": plan.hardware.what_if,
        "family": plan.family,
        "hardware": plan.hardware.to_dict(),
        "budget": data["budget"],
        "settings": data["settings"],
        "overrides": data["overrides"],
        "backend": plan.backend,
        "device": plan.device,
        "fits": plan.fits,
        "reason": plan.reason,
        "choice": data["choice"],
        "alternative": data["alternative"],
        "sources_note": data["sources_note"],
        "candidates": data["candidates"],
        "advice": data["advice"],
        "engine": engine.to_dict(),
        "exit_code": exit_code(plan, engine),
    }


class ReportSection(Protocol):
    """A section the caller adds to the report: the CLI's configuration section (fit knows
    nothing of the config layer). It goes under "config" in the JSON, after the advice
    in the Rich report."""

    def to_dict(self) -> dict: ...

    def render(self, console: Any) -> None: ...


def run(
    *,
    json_output: bool = False,
    out: Optional[TextIO] = None,
    config: Optional[ReportSection] = None,
    **options,
) -> int:
    """Build the report, write it to `out` (stdout), return the exit code."""
    out = out or sys.stdout
    plan, engine = build(**options)
    if json_output:
        data = report_dict(plan, engine)
        if config is not None:
            data["config"] = config.to_dict()
        out.write(json.dumps(data, indent=2) + "\n")
        out.flush()
    else:
        render(plan, engine, out, config)
    return exit_code(plan, engine)


# --- the Rich report -----------------------------------------------------------------------

_DEVICE_WORDS = {"metal": "the Apple GPU (Metal)", "cuda": "the NVIDIA GPU(s)", "cpu": "the CPU"}


def _gib(size: Optional[int]) -> str:
    if size is None:
        return "unknown"
    return f"{size / 1024**3:.1f} GiB ({size / 1e9:.1f} GB)"


def _hardware_rows(plan) -> List[tuple]:
    from qwenocr.fit.plan import ASSUMED_CPU_BANDWIDTH_GBPS

    hw = plan.hardware
    rows = []
    kind = {"apple": "Apple Silicon", "cuda": "NVIDIA GPU", "cpu": "CPU only"}[hw.platform]
    rows.append(("Machine", f"{kind}, {hw.os}" + ("  [what-if: a described machine]" if hw.what_if else "")))
    if hw.platform == "apple":
        rows.append(("Chip", hw.chip or "unknown"))
        rows.append(("Unified memory", _gib(hw.ram_total_bytes)))
        source = {
            "metal": "Metal's recommended working set",
            "wired-limit": "set by iogpu.wired_limit_mb",
            "default-rule": "macOS default rule, estimated",
        }.get(hw.metal_budget_source or "", "unknown")
        rows.append(("GPU budget", f"{_gib(hw.metal_budget_bytes)}: {source}"))
        wired = (
            "unknown"
            if hw.wired_limit_mb is None
            else ("0 (macOS default)" if hw.wired_limit_mb == 0 else f"{hw.wired_limit_mb} MB")
        )
        rows.append(("iogpu.wired_limit_mb", wired))
    else:
        cpu = hw.cpu_name or "unknown CPU"
        if hw.cpu_cores:
            cpu += f", {hw.cpu_cores} cores"
        rows.append(("CPU", cpu))
        ram = _gib(hw.ram_total_bytes)
        if hw.ram_available_bytes is not None:
            ram += f", {hw.ram_available_bytes / 1e9:.1f} GB available"
        rows.append(("RAM", ram))
    if hw.platform == "cuda":
        for g in hw.gpus:
            free = f", {g.free_bytes / 1e9:.1f} GB free" if g.free_bytes is not None else ""
            rows.append((f"GPU {g.index}", f"{g.name}: {_gib(g.total_bytes)}{free}"))
        if hw.driver:
            rows.append(("Driver", f"{hw.driver} (via {hw.gpu_source})"))
    elif hw.platform == "cpu" and not hw.what_if:
        rows.append(("GPU", "none found"))
    if plan.device == "cpu":
        bandwidth = (
            f"{hw.memory_bandwidth_gbps:g} GB/s"
            if hw.memory_bandwidth_gbps
            else f"unknown (speed estimates assume {ASSUMED_CPU_BANDWIDTH_GBPS:g} GB/s)"
        )
    elif plan.device == "metal":
        bandwidth = f"{hw.memory_bandwidth_gbps:g} GB/s" if hw.memory_bandwidth_gbps else "unknown"
    else:
        figures = {g.bandwidth_gbps for g in hw.gpus}
        bandwidth = ", ".join(f"{f:g} GB/s" for f in sorted(figures) if f) or "unknown"
    rows.append(("Memory bandwidth", bandwidth))
    for note in hw.notes:
        rows.append(("Note", note))
    return rows


def _speed(c) -> str:
    if c.tokens_per_s is None:
        return "—"
    figure = f"{c.tokens_per_s:.0f}" if c.tokens_per_s >= 10 else f"{c.tokens_per_s:.1f}"
    return figure + ("*" if c.speed_assumed else "")


def render(plan, engine: EngineStatus, out: TextIO, config: Optional[ReportSection] = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    width = None
    if not (hasattr(out, "isatty") and out.isatty()) and "COLUMNS" not in os.environ:
        width = 120  # not a terminal: don't squeeze the table into 80 columns
    console = Console(file=out, width=width, highlight=False, soft_wrap=False)

    console.print("[bold]qwenocr doctor[/bold]")
    console.print()
    console.print("[bold]Hardware[/bold]")
    info = Table.grid(padding=(0, 2))
    info.add_column(style="dim")
    info.add_column()
    for key, value in _hardware_rows(plan):
        info.add_row(escape(key), escape(value))
    info.add_row("Budget", escape(plan.budget_note))
    console.print(info)
    console.print()

    device = _DEVICE_WORDS.get(plan.device, plan.device)
    console.print(
        f"[bold]Every variant × precision[/bold] ({escape(plan.backend)} on {device}; one page ="
        f" {plan.max_image_tokens:,} image tokens + {plan.max_output_tokens:,} output tokens, n_ctx"
        f" {plan.context_tokens:,}; sizes in GB = 10⁹ bytes)"
    )
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("variant", no_wrap=True)
    table.add_column("quant", no_wrap=True)
    table.add_column("weights", justify="right", no_wrap=True)
    table.add_column("needs", justify="right", no_wrap=True)
    table.add_column("fits", no_wrap=True)
    table.add_column("tok/s", justify="right", no_wrap=True)
    table.add_column("why", overflow="fold", min_width=20)
    chosen = plan.choice
    for c in plan.candidates:
        is_choice = chosen is not None and c.variant == chosen.variant and c.bits == chosen.bits
        if c.fits and not c.too_slow:
            mark = "[green]yes[/green]" if c.needs_wired_limit_mb is None else "[yellow]sysctl[/yellow]"
        elif c.fits:
            mark = "[yellow]slow[/yellow]"
        else:
            mark = "[red]no[/red]"
        table.add_row(
            ("[bold]→ " if is_choice else "  ") + escape(c.variant) + ("[/bold]" if is_choice else ""),
            escape(c.quant),
            f"{c.estimate.weights_gb:g}",
            f"{c.estimate_gb:.1f}",
            mark,
            _speed(c),
            # The fits column already says yes; keep the line short.
            escape(c.reason[len("fits: ") :] if c.reason.startswith("fits: ") else c.reason),
        )
    console.print(table)
    if any(c.speed_assumed for c in plan.candidates):
        console.print("[dim]* speed from an assumed memory bandwidth[/dim]")
    console.print()

    console.print("[bold]Choice[/bold]")
    if chosen is None:
        what = "Nothing fits." if plan.reason.startswith(("nothing fits", "can't")) else "No model to run."
        console.print(f"  [red]{what}[/red] {escape(plan.reason)}")
    else:
        est = chosen.estimate
        if not chosen.fits:
            state = "[red]does not fit[/red]"
        elif chosen.needs_wired_limit_mb is not None:
            state = "[yellow]fits once the wired limit is raised[/yellow]"
        else:
            state = "[green]fits[/green]"
        speed = f", ~{chosen.tokens_per_s:g} tokens/s" if chosen.tokens_per_s is not None else ""
        name = f"Qwen{plan.family}-{chosen.variant} {chosen.quant}"
        console.print(
            f"  [bold]{escape(name)}[/bold] via {escape(plan.backend)} on"
            f" {device}: {chosen.estimate_gb:.1f} GB ({state}; budget {plan.budget_gb:.1f} GB){speed}"
        )
        vision = "vision in the weights" if plan.backend == "mlx" else f"vision {est.vision_gb:g}"
        sizes = "real sizes" if est.weights_from != "table" else "table figure"
        console.print(
            f"  [dim]= weights {est.weights_gb:g} ({sizes}) + {vision} + KV {est.kv_gb:g}"
            f" + activations {est.activations_gb:g} + margin {est.margin_gb:g} GB[/dim]"
        )
        console.print(f"  Why: {escape(plan.reason)}")
        _render_source(console, chosen.source, escape)
        if plan.tensor_split:
            console.print(f"  Layers split over the GPUs: {plan.tensor_split}")
    console.print()

    console.print("[bold]Engine[/bold]")
    if engine.installed is None:
        console.print(f"  {escape(engine.package)}: not checked (a described machine). Install with:")
    elif engine.installed:
        console.print(f"  {escape(engine.package)}: [green]installed[/green]")
    else:
        console.print(f"  {escape(engine.package)}: [red]not installed[/red]. Install with:")
    if not engine.installed:
        console.print(f"    {escape(engine.install_command)}")
        if engine.note:
            console.print(f"  [dim]{escape(engine.note)}[/dim]")
    if plan.sources_note:
        console.print(f"[dim]Sources: {escape(plan.sources_note)}[/dim]")
    if plan.advice:
        console.print()
        console.print("[bold]Advice[/bold]")
        for line in plan.advice:
            console.print(f"  • {escape(line)}")
    if config is not None:
        console.print()
        config.render(console)
    code = exit_code(plan, engine)
    if code:
        console.print()
        why = "nothing fits" if code == ExitCode.NOTHING_FITS else "the engine is missing"
        console.print(f"[dim]exit code {code}: {why}[/dim]")


def _render_source(console: Any, src: Any, escape: Callable[[str], str]) -> None:
    for rejected in src.rejected:
        console.print(f"  [dim]Rejected {escape(rejected.repo)}: {escape(rejected.reason)}[/dim]")
    if src.kind == "local":
        console.print(f"  Converted here: {escape(src.path or '')}")
    elif src.kind == "convert":
        console.print(
            f"  [yellow]No hub repo to download:[/yellow] convert the official weights ({escape(src.repo)}; download"
            f" ≈{src.download_gb:g} GB, disk ≈{src.disk_gb:g} GB):"
        )
        console.print(f"    {escape(src.command or '')}")
    elif src.kind == "hub":
        state = {True: "[green]verified[/green]", False: "[red]rejected[/red]"}.get(src.verified) or escape(src.status)
        console.print(f"  Download (≈{src.download_gb:g} GB) from {escape(src.repo)} ({state}):")
        for name in src.files:
            console.print(f"    {escape(name)}")
    else:
        console.print(f"  [red]No source:[/red] {escape(src.status)}")


def check_servers(base_urls, json_output: bool = False) -> int:
    """`doctor --base-url`: does each OpenAI-compatible server answer, and with which
    models? Exit 0 when all answer, BACKEND_ERROR (11) otherwise."""
    from qwenocr.engines.openai import api_key_from_env, check_server

    key = api_key_from_env()
    results = [check_server(url, key) for url in base_urls]
    if json_output:
        sys.stdout.write(json.dumps({"servers": results}, indent=2) + "\n")
    else:
        from rich.table import Table

        from qwenocr.console import stdout_console

        table = Table(title="OpenAI-compatible servers", title_justify="left")
        for column in ("server", "answers", "models", "latency", "problem"):
            table.add_column(column, overflow="fold")
        for result in results:
            table.add_row(
                result["base_url"],
                "yes" if result["reachable"] and not result["error"] else "no",
                ", ".join(result["models"]) or "-",
                f"{result['latency_s'] * 1000:.0f} ms" if result["latency_s"] is not None else "-",
                result["error"] or "",
            )
        stdout_console().print(table)
    healthy = all(r["reachable"] and not r["error"] for r in results)
    return int(ExitCode.OK if healthy else ExitCode.BACKEND_ERROR)
