"""Detect the machine qwenocr runs on, into a frozen `Hardware` record.

Three kinds of machine matter to the planner (`plan.py`):

* ``apple``: Apple Silicon. Chip name (`sysctl machdep.cpu.brand_string`), unified
  memory (`hw.memsize`), the current `iogpu.wired_limit_mb` (0 = macOS default) and the
  GPU budget Metal allows: Metal's recommended working set, asked of MLX *in a child
  process* (so that `qwenocr doctor` never imports mlx itself); else the wired limit if
  one is set; else the documented default rule (about 2/3 of RAM up to 32 GiB, 3/4
  above), marked as estimated.
* ``cuda``: one or more NVIDIA GPUs: name, total and free VRAM, driver. NVML through
  `pynvml` (nvidia-ml-py); `nvidia-smi` as a fallback.
* ``cpu``: anything else: RAM total and available, cores.

Memory bandwidth (used for expected decode speed) comes from a small table of published
figures for known Apple chips and NVIDIA GPUs; anything else is unknown.

What can't be detected stays ``None``; nothing is guessed. Every external call goes
through `_run`, `_nvml_gpus`, `_psutil_memory` or `_platform`, small functions the
tests replace with canned answers. `hardware_profile` builds the same record for a
machine described on the command line (`doctor --platform apple --memory 256`).

Units: all sizes here are bytes. Memory as sold ("a 24 GB card", "a 256 GB Mac") is
binary: 24 GiB, 256 GiB; that's what `hardware_profile` takes.
"""

from __future__ import annotations

import json
import os
import platform as _platform_module
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence, Tuple

from qwenocr.errors import UsageError

GIB = 1024**3
MIB = 1024**2

# Timeouts for the outside calls: a hung driver must not hang `doctor`.
SYSCTL_TIMEOUT_S = 5
NVIDIA_SMI_TIMEOUT_S = 10
MLX_PROBE_TIMEOUT_S = 30  # importing mlx in a fresh interpreter takes ~1 s; be generous

# Published peak memory bandwidth, GB/s (10^9 bytes/s), from the vendors' spec sheets.
# Where one name covers two bins (M3 Max: 300 or 400 GB/s) the lower figure is kept,
# so speed estimates err on the slow side. Matched as a substring of the detected
# name, longest key first.
APPLE_BANDWIDTH_GBPS = {
    "M1": 68.25,
    "M1 Pro": 200,
    "M1 Max": 400,
    "M1 Ultra": 800,
    "M2": 100,
    "M2 Pro": 200,
    "M2 Max": 400,
    "M2 Ultra": 800,
    "M3": 100,
    "M3 Pro": 150,
    "M3 Max": 300,  # 400 on the 16-core-CPU bin
    "M3 Ultra": 819,
    "M4": 120,
    "M4 Pro": 273,
    "M4 Max": 410,  # 546 on the 16-core-CPU bin
}
NVIDIA_BANDWIDTH_GBPS = {
    "RTX 3060": 360,
    "RTX 3080": 760,
    "RTX 3090": 936,
    "RTX 4060": 272,
    "RTX 4070": 504,
    "RTX 4080": 717,
    "RTX 4090": 1008,
    "RTX 5080": 960,
    "RTX 5090": 1792,
    "RTX A6000": 768,
    "RTX 6000 Ada": 960,
    "RTX PRO 6000": 1792,
    "T4": 320,
    "L4": 300,
    "A10": 600,
    "L40S": 864,
    "L40": 864,
    "A100-SXM4-40GB": 1555,
    "A100-PCIE-40GB": 1555,
    "A100-SXM4-80GB": 2039,
    "A100 80GB PCIe": 1935,
    "A100-PCIE-80GB": 1935,
    "H100 PCIe": 2000,
    "H100 80GB HBM3": 3350,  # SXM
    "H100 NVL": 3900,
    "H100": 2000,  # an H100 we can't place: the slower (PCIe) figure
    "A100": 1555,  # likewise: the 40 GB figure
    "H200": 4800,
    "GH200": 4000,
    "B200": 8000,
}


@dataclass(frozen=True)
class GPU:
    """One NVIDIA GPU. Sizes in bytes; None when the driver didn't say."""

    index: int
    name: str
    total_bytes: Optional[int]
    free_bytes: Optional[int]
    bandwidth_gbps: Optional[float] = None


@dataclass(frozen=True)
class Hardware:
    """What qwenocr knows about a machine. `None` means unknown, never a default."""

    platform: str  # "apple" | "cuda" | "cpu"
    os: str  # e.g. "Linux x86_64", "Darwin arm64"
    cpu_name: Optional[str] = None
    cpu_cores: Optional[int] = None  # logical cores
    ram_total_bytes: Optional[int] = None
    ram_available_bytes: Optional[int] = None
    # Memory bandwidth of the memory the model is read from on CPU/Apple (GB/s).
    memory_bandwidth_gbps: Optional[float] = None
    # Apple Silicon
    chip: Optional[str] = None  # "Apple M3 Ultra"
    metal_budget_bytes: Optional[int] = None  # what the GPU may use right now
    metal_budget_source: Optional[str] = None  # "metal" | "wired-limit" | "default-rule"
    metal_budget_estimated: bool = False
    wired_limit_mb: Optional[int] = None  # iogpu.wired_limit_mb; 0 = macOS default
    # NVIDIA
    gpus: Tuple[GPU, ...] = ()
    driver: Optional[str] = None
    gpu_source: Optional[str] = None  # "nvml" | "nvidia-smi"
    # A described machine (`doctor --platform ...`), not this one.
    what_if: bool = False
    notes: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def vram_total_bytes(self) -> Optional[int]:
        if not self.gpus or any(g.total_bytes is None for g in self.gpus):
            return None
        return sum(g.total_bytes for g in self.gpus)  # type: ignore[misc]

    @property
    def vram_free_bytes(self) -> Optional[int]:
        if not self.gpus or any(g.free_bytes is None for g in self.gpus):
            return None
        return sum(g.free_bytes for g in self.gpus)  # type: ignore[misc]

    def to_dict(self) -> dict:
        """JSON-ready: every size in bytes, and in GB (10^9 bytes) beside it."""
        data = asdict(self)
        data["gpus"] = [dict(asdict(g), total_gb=_gb(g.total_bytes), free_gb=_gb(g.free_bytes)) for g in self.gpus]
        data["notes"] = list(self.notes)
        data["vram_total_bytes"] = self.vram_total_bytes
        data["vram_free_bytes"] = self.vram_free_bytes
        for key in ("ram_total", "ram_available", "metal_budget", "vram_total", "vram_free"):
            data[f"{key}_gb"] = _gb(data[f"{key}_bytes"])
        return data


def _gb(size: Optional[int]) -> Optional[float]:
    return None if size is None else round(size / 1e9, 2)


# --- the outside world (tests replace these) ------------------------------------------


def _run(cmd: Sequence[str], timeout: float) -> Optional[str]:
    """Run a command; its stdout, or None if it is missing, fails or times out."""
    try:
        done = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout


def _which(program: str) -> Optional[str]:
    return shutil.which(program)


def _platform() -> Tuple[str, str]:
    """(sys.platform, machine), e.g. ("darwin", "arm64")."""
    return sys.platform, _platform_module.machine()


def _psutil_memory() -> Tuple[Optional[int], Optional[int]]:
    """(total, available) RAM in bytes."""
    try:
        import psutil

        memory = psutil.virtual_memory()
        return int(memory.total), int(memory.available)
    except Exception:  # psutil missing or unsupported platform: unknown, not zero
        return None, None


def _cpu_cores() -> Optional[int]:
    return os.cpu_count()


def _cpu_name() -> Optional[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return _platform_module.processor() or None


def _nvml_gpus() -> Optional[Tuple[List[GPU], Optional[str]]]:
    """GPUs and driver version through NVML; None when NVML is unusable here."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded: no NVIDIA driver
        return None
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(pynvml.nvmlDeviceGetName(handle))
            try:
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                total, free = int(memory.total), int(memory.free)
            except Exception:  # e.g. unified-memory parts report "not supported"
                total, free = None, None
            gpus.append(GPU(index, name, total, free, gpu_bandwidth_gbps(name)))
        return gpus, driver
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _mlx_metal_info() -> Optional[dict]:
    """Metal's device info from MLX, asked in a child interpreter.

    A child process keeps mlx out of this process (doctor and --help must not import
    it) and survives an mlx that crashes or hangs.
    """
    probe = (
        "import json, mlx.core as mx\n"
        "info = mx.device_info() if hasattr(mx, 'device_info') else mx.metal.device_info()\n"
        "print(json.dumps({k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in info.items()}))\n"
    )
    out = _run([sys.executable, "-c", probe], timeout=MLX_PROBE_TIMEOUT_S)
    if not out:
        return None
    try:
        info = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return info if isinstance(info, dict) else None


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# --- lookups and parsers ----------------------------------------------------------------


def _lookup(name: Optional[str], table: dict) -> Optional[float]:
    """The table entry whose key appears in `name` as whole words, longest key first
    (so "M3" does not claim "M3 Max" and "A10" does not claim "A100")."""
    if not name:
        return None
    lowered = name.lower()
    for key in sorted(table, key=len, reverse=True):
        k = key.lower()
        start = 0
        while True:
            at = lowered.find(k, start)
            if at < 0:
                break
            before_ok = at == 0 or not lowered[at - 1].isalnum()
            end = at + len(k)
            after_ok = end == len(lowered) or not lowered[end].isalnum()
            if before_ok and after_ok:
                return float(table[key])
            start = at + 1
    return None


def apple_bandwidth_gbps(chip: Optional[str]) -> Optional[float]:
    """Published bandwidth of an Apple chip ("Apple M3 Ultra" or "M3 Ultra"), else None."""
    return _lookup(chip, APPLE_BANDWIDTH_GBPS)


def gpu_bandwidth_gbps(name: Optional[str]) -> Optional[float]:
    """Published bandwidth of an NVIDIA GPU by (part of) its name, else None."""
    return _lookup(name, NVIDIA_BANDWIDTH_GBPS)


def metal_default_budget_bytes(ram_bytes: int) -> int:
    """macOS's default GPU working set: about 2/3 of RAM up to 32 GiB, 3/4 above (FACTS §5)."""
    if ram_bytes <= 32 * GIB:
        return ram_bytes * 2 // 3
    return ram_bytes * 3 // 4


def parse_nvidia_smi(text: str, with_driver: bool = False) -> List[GPU]:
    """Parse `nvidia-smi --query-gpu=index,name,memory.total,memory.free[,driver_version]
    --format=csv,noheader,nounits` (sizes in MiB). `with_driver` says whether the query
    asked for the driver as a fifth column. Unparseable sizes ("[N/A]") become None."""
    tail = 3 if with_driver else 2  # columns after the name
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 + tail or not parts[0].isdigit():
            continue
        # A name may itself contain commas: the index is first, the sizes last.
        name = ",".join(parts[1:-tail]).strip()
        total, free = parts[-tail], parts[-tail + 1]
        gpus.append(
            GPU(
                index=int(parts[0]),
                name=name,
                total_bytes=_mib(total),
                free_bytes=_mib(free),
                bandwidth_gbps=gpu_bandwidth_gbps(name),
            )
        )
    return gpus


def _mib(text: str) -> Optional[int]:
    try:
        return int(float(text) * MIB)
    except ValueError:
        return None


def _nvidia_smi_gpus() -> Optional[Tuple[List[GPU], Optional[str]]]:
    if not _which("nvidia-smi"):
        return None
    out = _run(
        [
            "nvidia-smi",
            "--query-gpu=index,name,memory.total,memory.free,driver_version",
            "--format=csv,noheader,nounits",
        ],
        timeout=NVIDIA_SMI_TIMEOUT_S,
    )
    if not out:
        return None
    gpus = parse_nvidia_smi(out, with_driver=True)
    if not gpus:
        return None
    driver = None
    first = [p.strip() for p in out.strip().splitlines()[0].split(",")]
    if len(first) >= 5:
        driver = first[-1] or None
    return gpus, driver


def _sysctl(name: str) -> Optional[str]:
    out = _run(["sysctl", "-n", name], timeout=SYSCTL_TIMEOUT_S)
    if out is None:
        return None
    return out.strip() or None


def _int_or_none(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


# --- detection ---------------------------------------------------------------------------


def detect() -> Hardware:
    """Detect this machine: Apple Silicon, else NVIDIA GPUs, else CPU."""
    system, machine = _platform()
    os_name = f"{'macOS' if system == 'darwin' else system.capitalize()} {machine}"
    if system == "darwin" and machine == "arm64":
        return _detect_apple(os_name)
    total, available = _psutil_memory()
    cores = _cpu_cores()
    cpu = _cpu_name()
    notes: List[str] = []
    found = _nvml_gpus()
    source = "nvml"
    if found is None:
        found = _nvidia_smi_gpus()
        source = "nvidia-smi"
    if found is not None and found[0]:
        gpus, driver = found
        if any(g.total_bytes is None for g in gpus):
            notes.append("the driver did not report the VRAM of every GPU")
        return Hardware(
            platform="cuda",
            os=os_name,
            cpu_name=cpu,
            cpu_cores=cores,
            ram_total_bytes=total,
            ram_available_bytes=available,
            gpus=tuple(gpus),
            driver=driver,
            gpu_source=source,
            notes=tuple(notes),
        )
    notes.append("no NVIDIA GPU found (NVML and nvidia-smi)")
    notes.append("memory bandwidth of this CPU is unknown")
    return Hardware(
        platform="cpu",
        os=os_name,
        cpu_name=cpu,
        cpu_cores=cores,
        ram_total_bytes=total,
        ram_available_bytes=available,
        notes=tuple(notes),
    )


def _detect_apple(os_name: str) -> Hardware:
    notes: List[str] = []
    chip = _sysctl("machdep.cpu.brand_string")
    ram_total = _int_or_none(_sysctl("hw.memsize"))
    psutil_total, available = _psutil_memory()
    if ram_total is None:
        ram_total = psutil_total
    wired = _int_or_none(_sysctl("iogpu.wired_limit_mb"))
    budget: Optional[int] = None
    source: Optional[str] = None
    estimated = False
    if wired:
        # An explicit limit is what the kernel enforces, whatever Metal recommends.
        budget, source = wired * MIB, "wired-limit"
    else:
        info = _mlx_metal_info()
        recommended = info.get("max_recommended_working_set_size") if info else None
        if isinstance(recommended, (int, float)) and recommended > 0:
            budget, source = int(recommended), "metal"
        elif ram_total:
            budget, source, estimated = metal_default_budget_bytes(ram_total), "default-rule", True
            notes.append("GPU budget estimated by macOS's default rule (MLX could not be asked)")
    if wired is None:
        notes.append("iogpu.wired_limit_mb could not be read")
    bandwidth = apple_bandwidth_gbps(chip)
    if bandwidth is None:
        notes.append("memory bandwidth of this chip is unknown")
    return Hardware(
        platform="apple",
        os=os_name,
        cpu_name=chip,
        cpu_cores=_cpu_cores(),
        ram_total_bytes=ram_total,
        ram_available_bytes=available,
        memory_bandwidth_gbps=bandwidth,
        chip=chip,
        metal_budget_bytes=budget,
        metal_budget_source=source,
        metal_budget_estimated=estimated,
        wired_limit_mb=wired,
        notes=tuple(notes),
    )


# --- what-if -------------------------------------------------------------------------------


def hardware_profile(
    platform: str,
    memory_gb: Optional[float] = None,
    vram_gb: Optional[Sequence[float]] = None,
    chip: Optional[str] = None,
    *,
    wired_limit_mb: int = 0,
) -> Hardware:
    """A described machine for `doctor --platform ...`.

    Sizes are as sold, which is binary: ``memory_gb=256`` is a 256 GiB Mac,
    ``vram_gb=[24]`` a 24 GiB card. ``chip`` names the Apple chip ("M3 Ultra"), the GPU
    model ("RTX 4090", used for every GPU) or the CPU; it only feeds the bandwidth
    lookup and the report. A described Mac has macOS's default wired limit unless
    ``wired_limit_mb`` says otherwise.
    """
    platform = (platform or "").lower()
    if platform in ("mac", "macos", "metal", "apple-silicon"):
        platform = "apple"
    if platform in ("nvidia", "gpu"):
        platform = "cuda"
    if platform not in ("apple", "cuda", "cpu"):
        raise UsageError(f"unknown platform {platform!r}", "use apple, cuda or cpu")
    memory = int(memory_gb * GIB) if memory_gb else None
    if memory_gb is not None and memory_gb <= 0:
        raise UsageError("--memory must be a positive number of GB")
    notes = ["a described machine (what-if), not this one"]
    if platform == "apple":
        if memory is None:
            raise UsageError("--platform apple needs --memory", "e.g. --memory 256")
        name = _apple_name(chip)
        bandwidth = apple_bandwidth_gbps(name)
        if wired_limit_mb:
            budget, source = wired_limit_mb * MIB, "wired-limit"
        else:
            budget, source = metal_default_budget_bytes(memory), "default-rule"
        return Hardware(
            platform="apple",
            os="macOS arm64",
            cpu_name=name,
            ram_total_bytes=memory,
            memory_bandwidth_gbps=bandwidth,
            chip=name,
            metal_budget_bytes=budget,
            metal_budget_source=source,
            metal_budget_estimated=not wired_limit_mb,
            wired_limit_mb=wired_limit_mb,
            what_if=True,
            notes=tuple(notes),
        )
    if platform == "cuda":
        sizes = list(vram_gb or [])
        if not sizes:
            raise UsageError("--platform cuda needs --vram", "one figure per GPU in GB, e.g. --vram 24 or --vram 48,48")
        if any(s <= 0 for s in sizes):
            raise UsageError("--vram figures must be positive")
        name = chip or "NVIDIA GPU"
        gpus = tuple(
            GPU(index=i, name=name, total_bytes=int(s * GIB), free_bytes=None, bandwidth_gbps=gpu_bandwidth_gbps(chip))
            for i, s in enumerate(sizes)
        )
        return Hardware(
            platform="cuda",
            os="Linux x86_64",
            ram_total_bytes=memory,
            gpus=gpus,
            what_if=True,
            notes=tuple(notes),
        )
    if memory is None:
        raise UsageError("--platform cpu needs --memory", "e.g. --memory 32")
    return Hardware(
        platform="cpu",
        os="Linux x86_64",
        cpu_name=chip,
        ram_total_bytes=memory,
        what_if=True,
        notes=tuple(notes),
    )


def _apple_name(chip: Optional[str]) -> Optional[str]:
    if not chip:
        return None
    chip = chip.strip()
    return chip if chip.lower().startswith("apple") else f"Apple {chip}"
