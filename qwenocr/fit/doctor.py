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
from qwenocr.fit.hardware import BUILD_FLAGS as _BUILD_FLAGS
from qwenocr.fit.hardware import CPU_BANDWIDTH_UNKNOWN

# llama.cpp's GPU builds: the plan's device names them, and each is one CMake switch
# (hardware.BUILD_FLAGS).
GPU_DEVICES = ("cuda", "hip", "vulkan", "metal")
_BUILD_NOTES = {
    "hip": "The HIP build needs ROCm (hipcc, hipBLAS); if CMake can't find the compiler, put"
    ' HIPCXX="$(hipconfig -l)/clang" HIP_PATH="$(hipconfig -R)" before pip.',
    "vulkan": "The Vulkan build needs the Vulkan headers and glslc (e.g. apt install libvulkan-dev glslc).",
}
SHELLS = ("posix", "powershell", "cmd")


@dataclass(frozen=True)
class EngineStatus:
    """Whether the engine a plan needs is installed, and how to install it."""

    backend: str  # "mlx" | "llama.cpp"
    package: str  # what pip installs
    modules: tuple  # importable names looked for
    installed: Optional[bool]  # None: not checked (a described machine)
    install_command: str
    note: Optional[str] = None
    # llama-cpp-python on a GPU plan: whether the installed build offloads to these GPUs
    # (None: not asked), the backend it was built for, and the line that rebuilds it.
    gpu_offload: Optional[bool] = None
    build: Optional[str] = None
    rebuild_command: Optional[str] = None
    # Windows: the same lines for PowerShell and cmd ({"powershell": ..., "cmd": ...}).
    windows_commands: Optional[dict] = None

    @property
    def ready(self) -> Optional[bool]:
        """Installed and able to run the plan (a CPU-only build can't run a GPU plan)."""
        if self.installed is None:
            return None
        return bool(self.installed) and self.gpu_offload is not False

    def to_dict(self) -> dict:
        return {
            "backend": self.backend,
            "package": self.package,
            "modules": list(self.modules),
            "installed": self.installed,
            "install_command": self.install_command,
            "note": self.note,
            "gpu_offload": self.gpu_offload,
            "build": self.build,
            "rebuild_command": self.rebuild_command,
            "windows_commands": self.windows_commands,
            "ready": self.ready,
        }


def _module_present(name: str) -> bool:
    # find_spec on a top-level name locates it without running it (a dotted name would
    # import the parent package, which is what `doctor` must not do).
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _with_cmake(flag: Optional[str], pip: str, shell: str) -> str:
    if not flag:
        return pip
    if shell == "powershell":
        return f'$env:CMAKE_ARGS="{flag}"; {pip}'
    if shell == "cmd":
        return f'set "CMAKE_ARGS={flag}" && {pip}'
    return f'CMAKE_ARGS="{flag}" {pip}'


def install_command(backend: str, device: str, shell: str = "posix") -> str:
    """The exact command that installs `backend` for `device` ("metal", "cuda", "hip",
    "vulkan", "cpu") in `shell` ("posix": sh/bash/zsh; "powershell"; "cmd")."""
    if backend == "mlx":
        return "pip install mlx mlx-vlm" if device == "metal" else 'pip install "mlx[cpu]" mlx-vlm'
    return _with_cmake(_BUILD_FLAGS.get(device), "pip install llama-cpp-python", shell)


def rebuild_command(device: str, shell: str = "posix", version: Optional[str] = None) -> str:
    """The line that rebuilds an installed llama-cpp-python for `device`'s GPU: pip's
    cache would hand back the CPU-only wheel, hence --no-cache-dir; --force-reinstall
    because the version is already installed (kept as it is, when known)."""
    package = f"llama-cpp-python=={version}" if version else "llama-cpp-python"
    pip = f"pip install --force-reinstall --no-cache-dir {package}"
    return _with_cmake(_BUILD_FLAGS.get(device), pip, shell)


def engine_status(backend: str, device: str, *, check: bool = True, hardware: Any = None) -> EngineStatus:
    """The engine `backend` on `device`: installed? And with `hardware` (the detected
    machine), whether an installed llama-cpp-python can offload to its GPUs."""
    modules: Tuple[str, ...]
    if backend == "mlx":
        modules, package = ("mlx", "mlx_vlm"), "mlx + mlx-vlm"
    else:
        modules, package = ("llama_cpp",), "llama-cpp-python"
    notes = []
    if backend == "llama.cpp":
        notes.append(
            "PyPI ships llama-cpp-python as source: pip compiles llama.cpp, which takes minutes (about 15 on 2 cores)."
        )
        if device in _BUILD_NOTES:
            notes.append(_BUILD_NOTES[device])
    installed = all(_module_present(m) for m in modules) if check else None
    windows = hardware is not None and str(getattr(hardware, "os", "")).startswith("Windows")
    shell = "powershell" if windows else "posix"
    gpu_offload = build = rebuild = None
    if backend == "llama.cpp" and installed and hardware is not None and device in GPU_DEVICES:
        gpu_offload, build = hardware.llama_gpu_offload, hardware.llama_build
        if gpu_offload is False:
            rebuild = rebuild_command(device, shell, hardware.llama_version)
    windows_commands = None
    if windows:
        command = rebuild_command if gpu_offload is False else None
        windows_commands = {
            name: (command(device, name, hardware.llama_version) if command else install_command(backend, device, name))
            for name in ("powershell", "cmd")
        }
    return EngineStatus(
        backend,
        package,
        modules,
        installed,
        install_command(backend, device, shell),
        " ".join(notes) or None,
        gpu_offload=gpu_offload,
        build=build,
        rebuild_command=rebuild,
        windows_commands=windows_commands,
    )


def exit_code(plan, engine: EngineStatus) -> int:
    if not plan.fits or (plan.choice is not None and not plan.choice.available):
        return int(ExitCode.NOTHING_FITS)
    if engine.installed is False or engine.gpu_offload is False:
        # A llama-cpp-python without GPU offload is not the engine a GPU plan needs.
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
    prefer: Optional[str] = None,
    serve: bool = False,
):
    """(plan, engine status) for this machine, or for the described one. `planner`
    (default: `make_plan` from the data alone) is called like `make_plan`; `prefer` and
    `serve` go to it (the dense-or-MoE trade-off, the vLLM/SGLang advice)."""
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
        prefer=prefer,
        serve=serve,
    )
    engine = engine_status(plan.backend, plan.device, check=not hw.what_if, hardware=hw)
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
        "prefer": data["prefer"],
        "tradeoff": data["tradeoff"],
        "serve": data["serve"],
        "speed_basis": data["speed_basis"],
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

_DEVICE_WORDS = {
    "metal": "the Apple GPU (Metal)",
    "cuda": "the NVIDIA GPU(s)",
    "hip": "the AMD GPU(s) (ROCm/HIP)",
    "vulkan": "the GPU(s) (Vulkan)",
    "cpu": "the CPU",
}


def _gib(size: Optional[int]) -> str:
    if size is None:
        return "unknown"
    return f"{size / 1024**3:.1f} GiB ({size / 1e9:.1f} GB)"


def _hardware_rows(plan) -> List[tuple]:
    from qwenocr.fit.plan import ASSUMED_CPU_BANDWIDTH_GBPS

    hw = plan.hardware
    rows = []
    kind = {"apple": "Apple Silicon", "cuda": "NVIDIA GPU", "amd": "AMD GPU", "cpu": "CPU only"}[hw.platform]
    if hw.mac == "rosetta":
        kind = "CPU only: Python under Rosetta 2 on Apple Silicon"
    elif hw.mac == "intel":
        kind = "CPU only: an Intel Mac"
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
    if hw.platform in ("cuda", "amd"):
        for g in hw.gpus:
            free = f", {g.free_bytes / 1e9:.1f} GB free" if g.free_bytes is not None else ""
            shared = ""
            if g.unified_memory:
                shared = f" (shares the RAM: {(g.vram_bytes or 0) / 1e9:.1f} GB carve-out + GTT)"
            rows.append((f"GPU {g.index}", f"{g.name}: {_gib(g.total_bytes)}{free}{shared}"))
        if hw.driver:
            rows.append(("Driver", f"{hw.driver} (via {hw.gpu_source})"))
        elif hw.gpu_source:
            rows.append(("Found by", hw.gpu_source))
        if hw.gpu_backends:
            rows.append(("llama.cpp builds", ", ".join(hw.gpu_backends) + " (the first is planned)"))
        if hw.llama_build is not None:
            version = hw.llama_version or "installed"
            if hw.llama_build == "cpu":
                state = "a CPU-only build: no GPU offload"
            else:
                reach = "offloads to these GPUs" if hw.llama_gpu_offload else "not these GPUs"
                state = f"built for {hw.llama_build}: {reach}"
            rows.append(("llama-cpp-python", f"{version}, {state}"))
    elif hw.mac == "rosetta":
        rows.append(("GPU", "the Apple GPU: not usable from an x86-64 Python"))
    elif hw.mac == "intel":
        rows.append(("GPU", "not planned on an Intel Mac"))
    elif hw.platform == "cpu" and not hw.what_if:
        rows.append(("GPU", "none found"))
    basis = getattr(plan, "speed_basis", None) or {}
    if plan.device == "cpu" and basis.get("measured"):
        bandwidth = f"{basis['measured_copy_gbps']:g} GB/s (measured here)"
    elif plan.device == "cpu":
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
        if basis.get("measured") and note == CPU_BANDWIDTH_UNKNOWN:
            continue  # the plan measured it
        rows.append(("Note", note))
    return rows


def _speed(c) -> str:
    if c.tokens_per_s is None:
        return "—"
    figure = f"{c.tokens_per_s:.0f}" if c.tokens_per_s >= 10 else f"{c.tokens_per_s:.1f}"
    return figure + ("*" if c.speed_assumed else "")


def _page_seconds(c) -> str:
    seconds = getattr(c, "seconds_per_page", None)
    if seconds is None:
        return "—"
    figure = f"{seconds:.1f}" if seconds < 10 else f"{seconds:,.0f}"
    return figure + ("*" if c.speed_assumed else "")


_PLACEMENT_WORDS = {"gpu+cpu-experts": "GPU + experts in RAM", "gpu": "GPU", "cpu": "CPU", "unified": "unified"}


def _speed_basis_line(plan) -> Optional[str]:
    basis = getattr(plan, "speed_basis", None)
    if not basis or not basis.get("bandwidth_gbps"):
        return None
    if basis.get("measured"):
        return (
            f"Speed from this CPU as measured (numpy: a copy at {basis['measured_copy_gbps']:g} GB/s, a matmul at"
            f" {basis['measured_gflops']:,.0f} GFLOPS, in {basis['measure_s']:.2f} s; kept a week)"
        )
    how = "assumed" if basis.get("assumed") or basis.get("compute_assumed") else "published figures"
    compute = f", {basis['gflops']:,.0f} GFLOPS" if basis.get("gflops") else ""
    return f"Speed from {basis['bandwidth_gbps']:g} GB/s{compute} ({how})"


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
    for line in plan.hardware.advice:
        console.print(f"  [yellow]→[/yellow] {escape(line)}")
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
    table.add_column("s/page", justify="right", no_wrap=True)
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
            _page_seconds(c),
            # The fits column already says yes; keep the line short.
            escape(c.reason[len("fits: ") :] if c.reason.startswith("fits: ") else c.reason),
        )
    console.print(table)
    console.print(
        "[dim]s/page: one typical page (vision encode + prefill + up to 1,000 output tokens)."
        + (f" {escape(_speed_basis_line(plan) or '')}." if _speed_basis_line(plan) else "")
        + "[/dim]"
    )
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
        if getattr(chosen, "seconds_per_page", None) is not None:
            speed += f", ~{chosen.seconds_per_page:,.1f} s per page"
        name = f"Qwen{plan.family}-{chosen.variant} {chosen.quant}"
        where = f"{chosen.estimate_gb:.1f} GB"
        if getattr(chosen, "placement", None) == "gpu+cpu-experts":
            where += f" = {chosen.vram_gb:.1f} in VRAM + {chosen.ram_gb:.1f} of experts in RAM"
        console.print(
            f"  [bold]{escape(name)}[/bold] via {escape(plan.backend)} on"
            f" {device}: {where} ({state}; budget {plan.budget_gb:.1f} GB){speed}"
        )
        vision = "vision in the weights" if plan.backend == "mlx" else f"vision {est.vision_gb:g}"
        sizes = "real sizes" if est.weights_from != "table" else "table figure"
        console.print(
            f"  [dim]= weights {est.weights_gb:g} ({sizes}) + {vision} + KV {est.kv_gb:g}"
            f" + activations {est.activations_gb:g} = peak {est.expected_peak_gb:g},"
            f" + margin {est.margin_gb:g} GB[/dim]"
        )
        console.print(f"  Why: {escape(plan.reason)}")
        _render_source(console, chosen.source, escape)
        placement = getattr(chosen, "placement", None)
        if placement:
            console.print(f"  Placement: {_PLACEMENT_WORDS.get(placement, placement)}")
        if plan.tensor_split:
            console.print(f"  Layers split over the GPUs: {plan.tensor_split}")
        if getattr(plan, "batch", 1) > 1:
            console.print(
                f"  Pages at once: {plan.batch} (llama.cpp decodes them together; each holds its own"
                f" {est.kv_gb:g} GB KV cache and state; `scan --batch N` overrides)"
            )
    console.print()

    console.print("[bold]Engine[/bold]")
    _render_engine(console, engine, escape)
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


def _render_engine(console: Any, engine: EngineStatus, escape: Callable[[str], str]) -> None:
    name = escape(engine.package)
    if engine.installed is None:
        console.print(f"  {name}: not checked (a described machine). Install with:")
    elif engine.gpu_offload is False:
        built = "without GPU offload" if engine.build in (None, "cpu") else f"for {escape(engine.build)}"
        console.print(
            f"  {name}: [red]installed, but built {built}[/red]: it would run every model on the CPU, not at"
            " the speed above. Rebuild it (minutes):"
        )
    elif engine.installed:
        console.print(f"  {name}: [green]installed[/green]")
    else:
        console.print(f"  {name}: [red]not installed[/red]. Install with:")
    if engine.ready:
        return
    command = engine.rebuild_command if engine.gpu_offload is False else engine.install_command
    console.print(f"    {escape(command or '')}")
    if engine.windows_commands:
        for shell, label in (("powershell", "PowerShell"), ("cmd", "cmd.exe")):
            console.print(f"  [dim]{label}:[/dim] {escape(engine.windows_commands[shell])}")
    if engine.note:
        console.print(f"  [dim]{escape(engine.note)}[/dim]")


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
    """`doctor --base-url`: does each OpenAI-compatible server answer, with which models,
    and how many requests at once does it serve (a probe of a few seconds per server,
    see engines/openai/probe.py)? Exit 0 when all answer, BACKEND_ERROR (11) otherwise."""
    from qwenocr.engines.openai import api_key_from_env, check_server, probe_parallel

    key = api_key_from_env()
    results = [check_server(url, key) for url in base_urls]
    for url, result in zip(base_urls, results, strict=True):
        result["parallel"] = None
        if result["reachable"] and not result["error"] and result["models"]:
            probe = probe_parallel(url, result["models"][0], key)
            result["parallel"] = probe["parallel"]
            result["parallel_probe"] = probe
    if json_output:
        sys.stdout.write(json.dumps({"servers": results}, indent=2) + "\n")
    else:
        from rich.markup import escape
        from rich.table import Table

        from qwenocr.console import stdout_console

        table = Table(title="OpenAI-compatible servers", title_justify="left")
        for column in ("server", "answers", "models", "latency", "at once", "problem"):
            table.add_column(column, overflow="fold")
        for result in results:
            table.add_row(
                escape(result["base_url"]),
                "yes" if result["reachable"] and not result["error"] else "no",
                escape(", ".join(result["models"]) or "-"),
                f"{result['latency_s'] * 1000:.0f} ms" if result["latency_s"] is not None else "-",
                _parallel_cell(result),
                escape(result["error"] or ""),
            )
        console = stdout_console()
        console.print(table)
        for result in results:
            note = parallel_note(result)
            if note:
                console.print(escape(note))
    healthy = all(r["reachable"] and not r["error"] for r in results)
    return int(ExitCode.OK if healthy else ExitCode.BACKEND_ERROR)


def _parallel_cell(result: dict) -> str:
    probe = result.get("parallel_probe")
    if not probe:
        return "-"
    if probe["parallel"] == probe["tried"]:
        return f"{probe['parallel']}+"
    return str(probe["parallel"])


def parallel_note(result: dict) -> Optional[str]:
    """What the probe of requests at once means for `scan --concurrency`, in one line."""
    probe = result.get("parallel_probe")
    if not probe:
        return None
    url, served, tried = result["base_url"], probe["parallel"], probe["tried"]
    if served == 0:
        return f"{url}: not one test request completed ({probe['error'] or 'no answer in time'})."
    if served == tried and not probe["cut_short"]:
        text = (
            f"{url}: served {served} requests at once, every answer complete (the most tried): "
            f"scan --concurrency {served} or more keeps it busy."
        )
        levels = probe["levels"]
        one, top = levels[0]["seconds"], levels[-1]["seconds"]
        if served > 1 and one > 0 and top >= 0.7 * served * one:
            text += " The answers took about as long as one after another: it may queue them, not run them together."
        return text
    if served == tried:
        return (
            f"{url}: served {served} requests at once (the probe ran out of its time before trying more): "
            f"scan --concurrency {served} is safe."
        )
    failed = probe["levels"][-1]
    what = ", ".join(f"{count} {name}" for name, count in sorted(failed["outcomes"].items()) if name != "ok")
    hint = (
        " llama-cpp-python's server cuts an answer when the next request arrives unless started with"
        " --interrupt_requests False."
        if failed["outcomes"].get("interrupted")
        else ""
    )
    return (
        f"{url}: serves {served} request{'s' if served > 1 else ''} at once; with {failed['in_flight']} in flight: "
        f"{what}. scan lowers the pages it sends this server to what it takes on its own (a warning says so); "
        f"--concurrency above {served} gains nothing here.{hint}"
    )
