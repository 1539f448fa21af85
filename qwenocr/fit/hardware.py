"""Detect the machine qwenocr runs on, into a frozen `Hardware` record.

Four kinds of machine matter to the planner (`plan.py`):

* ``apple``: Apple Silicon. Chip name (`sysctl machdep.cpu.brand_string`), unified
  memory (`hw.memsize`), GPU core count (`ioreg`, for the chip's bandwidth bin), the
  current `iogpu.wired_limit_mb` (0 = macOS default) and the GPU budget Metal allows:
  Metal's recommended working set, asked of MLX *in a child process* (so that `qwenocr
  doctor` never imports mlx itself); else the wired limit if one is set; else the
  documented default rule (about 2/3 of RAM up to 32 GiB, 3/4 above), marked as
  estimated.
* ``cuda``: one or more NVIDIA GPUs: name, total and free VRAM, driver. NVML through
  `pynvml` (nvidia-ml-py); `nvidia-smi` as a fallback.
* ``amd``: one or more AMD GPUs (vendor 0x1002): VRAM (and GTT) from the amdgpu
  driver's sysfs files, names from `amd-smi` or `rocm-smi` where installed (either alone
  where sysfs is missing). An APU of the Strix Halo class (Ryzen AI Max) counts as a
  GPU whose memory is system RAM (`unified_memory`): its budget is the BIOS carve-out
  plus the RAM the GPU may map (GTT), capped by what the OS needs. Smaller integrated
  Radeon graphics are left out: llama.cpp on the CPU is as fast there.
* ``cpu``: anything else: RAM total and available, cores. That includes Python running
  under Rosetta on Apple Silicon and Intel Macs (`mac`), with `advice` on what to do.

On a machine with GPUs, the installed llama-cpp-python is asked, in a child process with
a time limit, whether it was built with GPU offload (`llama_supports_gpu_offload()`)
and for which backend: a CPU-only build on a GPU machine runs everything on the CPU
(`llama_gpu_offload` False; doctor prints the rebuild line). Nothing is cached.

Memory bandwidth (used for expected decode speed) comes from catalog.py's tables of
published figures, each with its source; anything else is unknown.

What can't be detected stays ``None``; nothing is guessed. Every external call goes
through `_run`, `_nvml_gpus`, `_psutil_memory`, `_platform`, `_which`, `_llama_probe`
or a `sysfs_root`, small seams the tests replace with canned answers.
`hardware_profile` builds the same record for a machine described on the command line
(`doctor --platform apple --memory 256`).

Units: all sizes here are bytes. Memory as sold ("a 24 GB card", "a 256 GB Mac") is
binary: 24 GiB, 256 GiB; that's what `hardware_profile` takes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform as _platform_module
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from qwenocr.errors import UsageError
from qwenocr.fit import catalog

GIB = 1024**3
# The note on a CPU machine before the plan measures it (doctor drops it once measured).
CPU_BANDWIDTH_UNKNOWN = "memory bandwidth of this CPU is unknown"
MIB = 1024**2

# Timeouts for the outside calls: a hung driver must not hang `doctor`.
SYSCTL_TIMEOUT_S = 5
NVIDIA_SMI_TIMEOUT_S = 10
AMD_SMI_TIMEOUT_S = 10
MLX_PROBE_TIMEOUT_S = 30  # importing mlx in a fresh interpreter takes ~1 s; be generous
# Importing llama_cpp loads its native library (0.14 s here; a CUDA build initialises the
# driver, seconds on a big box). A crash or hang in the child costs doctor nothing but this.
LLAMA_PROBE_TIMEOUT_S = 60

# Where the kernel's device files are (tests pass a fake tree instead).
SYSFS_ROOT = "/sys"
AMD_VENDOR_ID = "0x1002"
# PCI device ids of AMD APUs whose GPU is worth planning for: Strix Halo (Ryzen AI Max,
# Radeon 8060S/8050S), 256 GB/s to up to 128 GB. Smaller integrated Radeons (Phoenix,
# Strix Point, the 2-CU iGPU of desktop Ryzens) read the same RAM at a half or less of
# that: llama.cpp on their CPU cores does as well, and they are left out.
AMD_LARGE_APU_IDS = {"0x1586": "AMD Radeon 8060S (Strix Halo)"}
AMD_LARGE_APU_NAMES = ("8060S", "8050S", "8040S", "Ryzen AI Max", "Strix Halo")
# Other integrated Radeons, known by PCI id, to tell them from a discrete card.
AMD_SMALL_APU_IDS = {
    "0x150e": "AMD Radeon 880M/890M (Strix Point)",
    "0x15bf": "AMD Radeon 760M/780M (Phoenix)",
    "0x15c8": "AMD Radeon 740M (Phoenix 2)",
    "0x1681": "AMD Radeon 680M (Rembrandt)",
    "0x164e": "AMD Radeon Graphics (Raphael)",
    "0x13c0": "AMD Radeon Graphics (Granite Ridge)",
    "0x1636": "AMD Radeon Graphics (Renoir)",
    "0x1638": "AMD Radeon Graphics (Cezanne)",
    "0x15dd": "AMD Radeon Vega (Raven Ridge)",
    "0x15d8": "AMD Radeon Vega (Picasso)",
}
# Discrete cards by PCI id, for a name where neither amd-smi nor rocm-smi is installed.
# One id can cover several cards (0x744c: RX 7900 XTX, XT and GRE): the name then says
# so and matches no bandwidth row, so the speed stays unknown rather than wrong.
AMD_DEVICE_NAMES = {
    "0x744c": "AMD Radeon RX 7900 series (0x744c)",
    "0x7550": "AMD Radeon RX 9070 / 9070 XT",
    "0x747e": "AMD Radeon RX 7800/7700 XT (0x747e)",
    "0x7480": "AMD Radeon RX 7600 / 7600 XT",
    "0x7448": "AMD Radeon PRO W7900",
    "0x74a1": "AMD Instinct MI300X",
    "0x74a5": "AMD Instinct MI325X",
    "0x740f": "AMD Instinct MI210",
    "0x740c": "AMD Instinct MI250X / MI250",
}
# What an APU's GPU may not take of the RAM the OS sees: the OS and other programs.
APU_OS_RESERVE_MIN_BYTES = 4 * GIB
APU_OS_RESERVE_FRACTION = 0.10

GPU_BACKENDS = ("cuda", "hip", "vulkan")  # llama.cpp's GPU builds for NVIDIA and AMD
_BUILD_VENDORS = {"cuda": ("nvidia",), "hip": ("amd",), "vulkan": ("nvidia", "amd")}


@dataclass(frozen=True)
class GPU:
    """One GPU. Sizes in bytes; None when the driver didn't say.

    `total_bytes` is what a model may be placed in: a card's VRAM; on an APU
    (`unified_memory`) the carve-out plus the RAM the GPU may map (`gtt_bytes`), capped
    so that the OS keeps its share (see `apu_budget_bytes`)."""

    index: int
    name: str
    total_bytes: Optional[int]
    free_bytes: Optional[int]
    bandwidth_gbps: Optional[float] = None
    vendor: str = "nvidia"  # "nvidia" | "amd"
    unified_memory: bool = False  # an APU: its memory is the system's RAM
    vram_bytes: Optional[int] = None  # dedicated VRAM (an APU: the BIOS carve-out)
    gtt_bytes: Optional[int] = None  # amdgpu: system RAM the GPU may map (GTT limit)
    bandwidth_source: Optional[str] = None


@dataclass(frozen=True)
class Hardware:
    """What qwenocr knows about a machine. `None` means unknown, never a default."""

    platform: str  # "apple" | "cuda" | "amd" | "cpu"
    os: str  # e.g. "Linux x86_64", "macOS arm64", "Windows AMD64"
    cpu_name: Optional[str] = None
    cpu_cores: Optional[int] = None  # logical cores
    ram_total_bytes: Optional[int] = None
    ram_available_bytes: Optional[int] = None
    # Memory bandwidth of the memory the model is read from on CPU/Apple (GB/s).
    memory_bandwidth_gbps: Optional[float] = None
    memory_bandwidth_source: Optional[str] = None
    # Apple Silicon
    chip: Optional[str] = None  # "Apple M3 Ultra"
    gpu_cores: Optional[int] = None  # Apple GPU cores (ioreg), which place the chip's bin
    metal_budget_bytes: Optional[int] = None  # what the GPU may use right now
    metal_budget_source: Optional[str] = None  # "metal" | "wired-limit" | "default-rule"
    metal_budget_estimated: bool = False
    wired_limit_mb: Optional[int] = None  # iogpu.wired_limit_mb; 0 = macOS default
    # NVIDIA and AMD GPUs
    gpus: Tuple[GPU, ...] = ()
    driver: Optional[str] = None
    gpu_source: Optional[str] = None  # "nvml" | "nvidia-smi" | "sysfs" | "amd-smi" | "rocm-smi" (joined by +)
    # llama.cpp's GPU builds that drive these GPUs, best first: the plan's device.
    gpu_backends: Tuple[str, ...] = ()
    # The installed llama-cpp-python, asked in a child process (GPU machines only):
    # whether it can offload to a GPU *here*, the GPU backend it was built for, version.
    llama_gpu_offload: Optional[bool] = None  # None: not checked (no GPU, not installed, probe failed)
    llama_build: Optional[str] = None  # "cuda" | "hip" | "vulkan" | "metal" | "sycl" | "gpu" | "cpu"
    llama_version: Optional[str] = None
    # A Mac whose Python can't use Apple Silicon: "rosetta" (x86-64 Python on Apple
    # Silicon) or "intel" (an Intel Mac).
    mac: Optional[str] = None
    # A described machine (`doctor --platform ...`), not this one.
    what_if: bool = False
    notes: Tuple[str, ...] = field(default_factory=tuple)
    # What the user can do to run faster here (Rosetta, a CPU-only llama build, GTT).
    advice: Tuple[str, ...] = field(default_factory=tuple)

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

    @property
    def gpu_vendor(self) -> Optional[str]:
        return self.gpus[0].vendor if self.gpus else None

    @property
    def gpu_backend(self) -> Optional[str]:
        """The llama.cpp GPU build to plan for: "cuda", "hip" or "vulkan"; None without GPUs."""
        return self.gpu_backends[0] if self.gpu_backends else None

    @property
    def unified_memory(self) -> bool:
        """Whether the GPU memory is the system's RAM (an APU; Apple is its own platform)."""
        return bool(self.gpus) and all(g.unified_memory for g in self.gpus)

    def to_dict(self) -> dict:
        """JSON-ready: every size in bytes, and in GB (10^9 bytes) beside it."""
        data = asdict(self)
        data["gpus"] = [dict(asdict(g), total_gb=_gb(g.total_bytes), free_gb=_gb(g.free_bytes)) for g in self.gpus]
        data["notes"] = list(self.notes)
        data["advice"] = list(self.advice)
        data["gpu_backends"] = list(self.gpu_backends)
        data["gpu_vendor"] = self.gpu_vendor
        data["gpu_backend"] = self.gpu_backend
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


def _rocm_installed() -> bool:
    return bool(_which("amd-smi") or _which("rocm-smi") or os.path.isdir("/opt/rocm"))


def _llama_installed() -> Tuple[bool, Optional[str]]:
    """(whether `llama_cpp` can be imported, its distribution's version), found without importing it."""
    try:
        present = importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        present = False
    if not present:
        return False, None
    try:
        from importlib.metadata import PackageNotFoundError, version

        return True, version("llama-cpp-python")
    except (PackageNotFoundError, ValueError):
        return True, None


_LLAMA_PROBE = (
    "import json, llama_cpp\n"
    "info = llama_cpp.llama_print_system_info()\n"
    "info = info.decode('utf-8', 'replace') if isinstance(info, bytes) else str(info)\n"
    "print(json.dumps({'offload': bool(llama_cpp.llama_supports_gpu_offload()), 'info': info}))\n"
)


def _llama_probe() -> Optional[dict]:
    """{"offload": bool, "info": str} from the installed llama_cpp, asked in a child
    interpreter (a crash, a hang or a slow CUDA start stays there); None if it fails."""
    out = _run([sys.executable, "-c", _LLAMA_PROBE], timeout=LLAMA_PROBE_TIMEOUT_S)
    if not out:
        return None
    try:
        answer = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("offload"), bool):
        return None
    return answer


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
            gpus.append(_nvidia_gpu(index, name, total, free))
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


def apple_bandwidth(
    chip: Optional[str], gpu_cores: Optional[int] = None, memory_bytes: Optional[int] = None
) -> Optional[catalog.BandwidthMatch]:
    """The published bandwidth of an Apple chip, in the bin its GPU cores or memory size say."""
    return catalog.lookup_bandwidth(catalog.APPLE_BANDWIDTH, chip, gpu_cores=gpu_cores, memory_bytes=memory_bytes)


def apple_bandwidth_gbps(
    chip: Optional[str], gpu_cores: Optional[int] = None, memory_bytes: Optional[int] = None
) -> Optional[float]:
    """Published bandwidth of an Apple chip ("Apple M3 Ultra" or "M3 Ultra"), else None.
    Without a GPU core count or memory size, a chip sold in two bins gets the slower."""
    match = apple_bandwidth(chip, gpu_cores, memory_bytes)
    return match.gbps if match else None


def gpu_bandwidth(name: Optional[str], vendor: Optional[str] = None) -> Optional[catalog.BandwidthMatch]:
    tables = {"nvidia": (catalog.NVIDIA_BANDWIDTH,), "amd": (catalog.AMD_BANDWIDTH,)}.get(
        vendor or "", (catalog.NVIDIA_BANDWIDTH, catalog.AMD_BANDWIDTH)
    )
    for table in tables:
        match = catalog.lookup_bandwidth(table, name)
        if match:
            return match
    return None


def gpu_bandwidth_gbps(name: Optional[str], vendor: Optional[str] = None) -> Optional[float]:
    """Published bandwidth of an NVIDIA or AMD GPU by (part of) its name, else None."""
    match = gpu_bandwidth(name, vendor)
    return match.gbps if match else None


def _nvidia_gpu(index: int, name: str, total: Optional[int], free: Optional[int]) -> GPU:
    match = gpu_bandwidth(name, "nvidia")
    return GPU(
        index,
        name,
        total,
        free,
        match.gbps if match else None,
        vendor="nvidia",
        vram_bytes=total,
        bandwidth_source=match.source if match else None,
    )


def metal_default_budget_bytes(ram_bytes: int) -> int:
    """macOS's default GPU working set: about 2/3 of RAM up to 32 GiB, 3/4 above (FACTS §5)."""
    if ram_bytes <= 32 * GIB:
        return ram_bytes * 2 // 3
    return ram_bytes * 3 // 4


def apu_budget_bytes(carveout: int, gtt: Optional[int], ram_visible: Optional[int]) -> int:
    """What an APU's GPU may hold: its carve-out plus the RAM it may map (GTT), but never
    more of the RAM the OS sees than that RAM less max(4 GiB, 10 %) for the OS.

    llama.cpp's HIP and Vulkan builds place a model in both on an APU (AMD's Strix Halo
    guide: the carve-out and GTT are the same physical memory, mapped; GTT defaults to
    about half the RAM on Linux and can be raised). With GTT unknown, the carve-out alone."""
    if gtt is None or not ram_visible:
        return carveout
    reserve = max(APU_OS_RESERVE_MIN_BYTES, int(ram_visible * APU_OS_RESERVE_FRACTION))
    return carveout + max(0, min(gtt, ram_visible - reserve))


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
        gpus.append(_nvidia_gpu(int(parts[0]), name, _mib(total), _mib(free)))
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


# --- AMD --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AmdDevice:
    """One AMD GPU as the driver's files or tools describe it, before the budget rules."""

    name: Optional[str]
    device_id: Optional[str]  # "0x744c"
    vram_total: Optional[int]
    vram_used: Optional[int]
    gtt_total: Optional[int] = None


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _int_text(text: Optional[str]) -> Optional[int]:
    try:
        return int(text, 0) if text else None
    except ValueError:
        return None


def sysfs_amd_devices(sysfs_root: Optional[str] = None) -> List[AmdDevice]:
    """AMD GPUs from the amdgpu driver's files: /sys/class/drm/cardN/device/ with vendor
    0x1002 and mem_info_vram_total (bytes), mem_info_vram_used, mem_info_gtt_total."""
    drm = Path(sysfs_root or SYSFS_ROOT) / "class" / "drm"
    try:
        cards = sorted((p for p in drm.iterdir() if re.fullmatch(r"card\d+", p.name)), key=lambda p: int(p.name[4:]))
    except OSError:
        return []
    devices, seen = [], set()
    for card in cards:
        device = card / "device"
        if (_read(device / "vendor") or "").lower() != AMD_VENDOR_ID:
            continue
        total = _int_text(_read(device / "mem_info_vram_total"))
        if total is None:
            continue  # not the amdgpu driver (or too old to say)
        key = os.path.realpath(device)
        if key in seen:
            continue
        seen.add(key)
        device_id = (_read(device / "device") or "").lower() or None
        name = _read(device / "product_name") or None
        devices.append(
            AmdDevice(
                name=name,
                device_id=device_id,
                vram_total=total,
                vram_used=_int_text(_read(device / "mem_info_vram_used")),
                gtt_total=_int_text(_read(device / "mem_info_gtt_total")),
            )
        )
    return devices


def _size(value) -> Optional[int]:
    """A size from amd-smi/rocm-smi JSON: bytes as a number or string, or {"value", "unit"}."""
    if isinstance(value, dict):
        number = _size(value.get("value"))
        unit = str(value.get("unit", "B")).upper()
        scale = {"B": 1, "KB": 1024, "MB": MIB, "MIB": MIB, "GB": GIB, "GIB": GIB}.get(unit)
        return None if number is None or scale is None else number * scale
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def parse_amd_smi(text: str) -> List[AmdDevice]:
    """`amd-smi static --asic --vram --json`: a list (or {"gpu_data": [...]}) of
    {"gpu": 0, "asic": {"market_name", "device_id"}, "vram": {"size": {"value", "unit"}}}
    (older releases: "vram": {"vram_size_mb": N} or {"size": "24560 MB"})."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    if isinstance(data, dict):
        data = data.get("gpu_data", [data])
    devices = []
    for entry in data if isinstance(data, list) else []:
        if not isinstance(entry, dict):
            continue
        asic: dict = entry["asic"] if isinstance(entry.get("asic"), dict) else {}
        vram: dict = entry["vram"] if isinstance(entry.get("vram"), dict) else {}
        total = None
        if "vram_size_mb" in vram:
            mb = _size(vram["vram_size_mb"])
            total = None if mb is None else mb * MIB
        elif isinstance(vram.get("size"), str):
            match = re.match(r"\s*([\d.]+)\s*([KMG]i?B)?", vram["size"], re.I)
            if match:
                total = _size({"value": match.group(1), "unit": (match.group(2) or "MB")})
        else:
            total = _size(vram.get("size"))
        name = asic.get("market_name") or None
        device_id = str(asic.get("device_id") or "").lower() or None
        devices.append(AmdDevice(name=name, device_id=device_id, vram_total=total, vram_used=None))
    return devices


def parse_rocm_smi(text: str) -> List[AmdDevice]:
    """`rocm-smi --showmeminfo vram --showproductname --json`: {"card0": {"VRAM Total Memory
    (B)": "...", "VRAM Total Used Memory (B)": "...", "Card Series": "...", ...}}; key
    spellings vary between releases, so they are matched without case."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    devices = []
    cards = (
        sorted((k for k in data if re.fullmatch(r"card\d+", k)), key=lambda k: int(k[4:]))
        if isinstance(data, dict)
        else []
    )
    for key in cards:
        fields = {str(k).lower(): v for k, v in data[key].items()} if isinstance(data[key], dict) else {}
        total = _size(fields.get("vram total memory (b)"))
        used = _size(fields.get("vram total used memory (b)"))
        name = fields.get("card series") or fields.get("card sku") or None
        device_id = fields.get("device id") or fields.get("card model") or None
        if isinstance(device_id, str) and not device_id.lower().startswith("0x"):
            device_id = None
        devices.append(
            AmdDevice(
                name=str(name) if name else None,
                device_id=device_id.lower() if device_id else None,
                vram_total=total,
                vram_used=used,
            )
        )
    return devices


def _amd_tool_devices() -> Tuple[List[AmdDevice], Optional[str]]:
    if _which("amd-smi"):
        out = _run(["amd-smi", "static", "--asic", "--vram", "--json"], timeout=AMD_SMI_TIMEOUT_S)
        devices = parse_amd_smi(out) if out else []
        if devices:
            return devices, "amd-smi"
    if _which("rocm-smi"):
        out = _run(["rocm-smi", "--showmeminfo", "vram", "--showproductname", "--json"], timeout=AMD_SMI_TIMEOUT_S)
        devices = parse_rocm_smi(out) if out else []
        if devices:
            return devices, "rocm-smi"
    return [], None


def _is_large_apu(name: Optional[str], device_id: Optional[str]) -> bool:
    if device_id in AMD_LARGE_APU_IDS:
        return True
    return bool(name) and any(word.lower() in name.lower() for word in AMD_LARGE_APU_NAMES)  # type: ignore[union-attr]


def _is_small_apu(name: Optional[str], device_id: Optional[str]) -> bool:
    if device_id in AMD_SMALL_APU_IDS:
        return True
    # amd-smi names an APU's GPU "AMD Radeon Graphics" or "AMD Radeon 780M" and the like.
    return bool(name) and bool(re.search(r"radeon(\(tm\))? (graphics|\d{3}m\b|vega)", name, re.I))  # type: ignore[arg-type]


def amd_gpus(
    ram_visible: Optional[int], sysfs_root: Optional[str] = None
) -> Tuple[List[GPU], Optional[str], List[str], List[str]]:
    """(GPUs, source, notes, advice) for the AMD GPUs here: sysfs for memory, amd-smi or
    rocm-smi for names (or for everything where sysfs has nothing)."""
    notes: List[str] = []
    advice: List[str] = []
    devices = sysfs_amd_devices(sysfs_root)
    tools, tool = _amd_tool_devices()
    source = "sysfs" if devices else tool
    if devices and tools and len(tools) == len(devices):
        # Same order (the driver's): names from the tool where sysfs has none.
        devices = [
            AmdDevice(d.name or t.name, d.device_id or t.device_id, d.vram_total, d.vram_used, d.gtt_total)
            for d, t in zip(devices, tools, strict=True)
        ]
        source = f"sysfs+{tool}"
    elif not devices:
        devices = tools
    gpus: List[GPU] = []
    small: List[str] = []
    for d in devices:
        name = d.name or AMD_LARGE_APU_IDS.get(d.device_id or "") or AMD_SMALL_APU_IDS.get(d.device_id or "")
        name = name or AMD_DEVICE_NAMES.get(d.device_id or "") or f"AMD GPU {d.device_id or '(unknown model)'}"
        large_apu = _is_large_apu(name, d.device_id)
        if not large_apu and _is_small_apu(name, d.device_id):
            small.append(name)
            continue
        free = None if d.vram_total is None or d.vram_used is None else max(0, d.vram_total - d.vram_used)
        total = d.vram_total
        if large_apu and d.vram_total is not None:
            total = apu_budget_bytes(d.vram_total, d.gtt_total, ram_visible)
            free = None  # the carve-out's free figure says nothing of the GTT part
        match = gpu_bandwidth(name, "amd")
        gpus.append(
            GPU(
                index=len(gpus),
                name=name,
                total_bytes=total,
                free_bytes=free,
                bandwidth_gbps=match.gbps if match else None,
                vendor="amd",
                unified_memory=large_apu,
                vram_bytes=d.vram_total,
                gtt_bytes=d.gtt_total,
                bandwidth_source=match.source if match else None,
            )
        )
    if small:
        notes.append(
            f"integrated graphics left out ({', '.join(small)}): llama.cpp on the CPU is as fast with the same memory"
        )
    for g in gpus:
        if not g.unified_memory:
            continue
        carve = (g.vram_bytes or 0) / 1e9
        if g.gtt_bytes is None:
            notes.append(f"{g.name}: the RAM it may map (GTT) is unknown: only its {carve:.1f} GB carve-out is counted")
            continue
        notes.append(
            f"{g.name}: a GPU sharing the system's RAM: {carve:.1f} GB carve-out + {g.gtt_bytes / 1e9:.1f} GB it may"
            f" map (GTT) = {(g.total_bytes or 0) / 1e9:.1f} GB counted for the model"
        )
        if ram_visible and g.gtt_bytes < 0.75 * ram_visible:
            pages = int((ram_visible - max(APU_OS_RESERVE_MIN_BYTES, ram_visible * APU_OS_RESERVE_FRACTION)) // 4096)
            advice.append(
                f"{g.name} may map only {g.gtt_bytes / 1e9:.0f} GB of the {ram_visible / 1e9:.0f} GB RAM (Linux's"
                f" default GTT, about half): for larger models, raise it with the kernel parameter"
                f" ttm.pages_limit={pages} (4 KiB pages; AMD's Strix Halo guide) and reboot, or raise the BIOS"
                f" carve-out."
            )
    return gpus, source, notes, advice


def amd_gpu_backends(rocm: bool) -> Tuple[str, ...]:
    """HIP (ROCm) where ROCm is installed, else Vulkan (any recent Mesa driver runs it)."""
    return ("hip", "vulkan") if rocm else ("vulkan", "hip")


# --- llama-cpp-python's build ------------------------------------------------------------------


def llama_build_of(info: str, offload: bool) -> str:
    """The GPU backend named in `llama_print_system_info()` ("CUDA : ARCHS = 890 | ..."):
    "cuda", "hip" (its backend calls itself ROCm), "vulkan", "metal", "sycl"; "gpu" when
    it offloads but names none; "cpu" when it can't offload."""
    if not offload:
        return "cpu"
    names = {part.split(":", 1)[0].strip().lower() for part in re.split(r"\|", info) if ":" in part}
    text = info.lower()
    for build, words in (
        ("hip", ("rocm", "hip")),
        ("cuda", ("cuda",)),
        ("vulkan", ("vulkan",)),
        ("metal", ("metal",)),
        ("sycl", ("sycl",)),
    ):
        if any(w in names or re.search(rf"\b{w}\b", text) for w in words):
            return build
    return "gpu"


def _check_llama(vendor: str) -> Tuple[Optional[bool], Optional[str], Optional[str], List[str]]:
    """(can offload to this vendor's GPU, build, version, notes) for the installed
    llama-cpp-python; (None, None, None, []) where it isn't installed."""
    installed, version = _llama_installed()
    if not installed:
        return None, None, None, []
    answer = _llama_probe()
    if answer is None:
        return None, None, version, ["llama-cpp-python could not be asked whether it offloads to the GPU"]
    build = llama_build_of(str(answer.get("info", "")), answer["offload"])
    usable = answer["offload"] and vendor in _BUILD_VENDORS.get(build, ("nvidia", "amd"))
    return usable, build, version, []


def _backends(vendor: str, llama_build: Optional[str], llama_offload: Optional[bool]) -> Tuple[str, ...]:
    base = ("cuda", "vulkan") if vendor == "nvidia" else amd_gpu_backends(_rocm_installed())
    if llama_offload and llama_build in base:
        # The build that is installed and drives these GPUs comes first: no rebuild.
        return (llama_build,) + tuple(b for b in base if b != llama_build)
    return base


def _llama_advice(vendor: str, offload: Optional[bool], build: Optional[str], backend: str) -> List[str]:
    if offload is not False:
        return []
    what = "without GPU offload" if build == "cpu" else f"for {build}, which can't drive this {vendor.upper()} GPU"
    return [
        f"llama-cpp-python is built {what}: every model would run on the CPU. Rebuild it with"
        f" {BUILD_FLAGS[backend]} (doctor's Engine section has the exact line)."
    ]


# The CMake switch of each llama.cpp build (llama-cpp-python passes CMAKE_ARGS to it).
BUILD_FLAGS: Dict[str, str] = {
    "cuda": "-DGGML_CUDA=on",
    "hip": "-DGGML_HIP=on",
    "vulkan": "-DGGML_VULKAN=on",
    "metal": "-DGGML_METAL=on",
}


# --- macOS ---------------------------------------------------------------------------------------


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


def _apple_gpu_cores() -> Optional[int]:
    """The Apple GPU's core count from the IORegistry (AGXAccelerator's gpu-core-count)."""
    out = _run(["ioreg", "-r", "-c", "AGXAccelerator", "-d", "1"], timeout=SYSCTL_TIMEOUT_S)
    match = re.search(r'"gpu-core-count"\s*=\s*(\d+)', out or "")
    return int(match.group(1)) if match else None


ROSETTA_ADVICE = (
    "This Python is an x86-64 build running under Rosetta 2 on Apple Silicon: MLX and the Apple GPU can't be"
    " used from it, so the plan is for the CPU. Install an arm64 Python (python.org's macOS installer, or"
    " Homebrew in /opt/homebrew), check that `python3 -c 'import platform; print(platform.machine())'` prints"
    " arm64, make a new virtual environment with it and install qwenocr there: doctor then plans MLX on the GPU."
)
INTEL_MAC_ADVICE = (
    "An Intel Mac: MLX runs on Apple Silicon only, so the plan is llama.cpp on the CPU (llama.cpp's Metal"
    " build is not planned for Intel Macs' GPUs)."
)


# --- detection ---------------------------------------------------------------------------


def _os_name(system: str, machine: str) -> str:
    if system == "darwin":
        return f"macOS {machine}"
    if system.startswith("win"):
        return f"Windows {machine}"
    return f"{system.capitalize()} {machine}"


def detect(sysfs_root: Optional[str] = None) -> Hardware:
    """Detect this machine: Apple Silicon, else NVIDIA GPUs, else AMD GPUs, else CPU."""
    system, machine = _platform()
    os_name = _os_name(system, machine)
    if system == "darwin" and machine == "arm64":
        return _detect_apple(os_name)
    if system == "darwin":
        return _detect_x86_mac(os_name)
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
        return _gpu_machine("cuda", "nvidia", os_name, cpu, cores, total, available, gpus, driver, source, notes, [])
    # Linux: the amdgpu driver's files; Windows: amd-smi, which ships with the driver.
    amd, amd_source, amd_notes, amd_advice = amd_gpus(total, sysfs_root)
    notes.extend(amd_notes)
    if amd:
        if any(g.total_bytes is None for g in amd):
            notes.append("the driver did not report the VRAM of every GPU")
        return _gpu_machine(
            "amd", "amd", os_name, cpu, cores, total, available, amd, None, amd_source, notes, amd_advice
        )
    notes.append("no GPU found (NVIDIA: NVML and nvidia-smi; AMD: amd-smi, rocm-smi and the amdgpu driver's files)")
    notes.append(CPU_BANDWIDTH_UNKNOWN)
    return Hardware(
        platform="cpu",
        os=os_name,
        cpu_name=cpu,
        cpu_cores=cores,
        ram_total_bytes=total,
        ram_available_bytes=available,
        notes=tuple(notes),
        advice=tuple(amd_advice),
    )


def _gpu_machine(
    platform: str,
    vendor: str,
    os_name: str,
    cpu: Optional[str],
    cores: Optional[int],
    total: Optional[int],
    available: Optional[int],
    gpus: List[GPU],
    driver: Optional[str],
    source: Optional[str],
    notes: List[str],
    advice: List[str],
) -> Hardware:
    offload, build, version, llama_notes = _check_llama(vendor)
    backends = _backends(vendor, build, offload)
    advice = list(advice) + _llama_advice(vendor, offload, build, backends[0])
    return Hardware(
        platform=platform,
        os=os_name,
        cpu_name=cpu,
        cpu_cores=cores,
        ram_total_bytes=total,
        ram_available_bytes=available,
        gpus=tuple(gpus),
        driver=driver,
        gpu_source=source,
        gpu_backends=backends,
        llama_gpu_offload=offload,
        llama_build=build,
        llama_version=version,
        notes=tuple(notes + llama_notes),
        advice=tuple(advice),
    )


def _detect_x86_mac(os_name: str) -> Hardware:
    """An x86-64 Python on macOS: under Rosetta on Apple Silicon, or an Intel Mac."""
    rosetta = _sysctl("sysctl.proc_translated") == "1"
    total = _int_or_none(_sysctl("hw.memsize"))
    psutil_total, available = _psutil_memory()
    chip = _sysctl("machdep.cpu.brand_string")
    notes = [CPU_BANDWIDTH_UNKNOWN]
    if rosetta:
        notes.insert(0, "Python runs under Rosetta 2 (x86-64 on Apple Silicon)")
    return Hardware(
        platform="cpu",
        os=os_name,
        cpu_name=chip,
        cpu_cores=_cpu_cores(),
        ram_total_bytes=total or psutil_total,
        ram_available_bytes=available,
        mac="rosetta" if rosetta else "intel",
        notes=tuple(notes),
        advice=(ROSETTA_ADVICE if rosetta else INTEL_MAC_ADVICE,),
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
    gpu_cores = _apple_gpu_cores()
    bandwidth = apple_bandwidth(chip, gpu_cores, ram_total)
    if bandwidth is None:
        notes.append("memory bandwidth of this chip is unknown")
    elif bandwidth.note:
        notes.append(f"memory bandwidth: {bandwidth.note}")
    return Hardware(
        platform="apple",
        os=os_name,
        cpu_name=chip,
        cpu_cores=_cpu_cores(),
        ram_total_bytes=ram_total,
        ram_available_bytes=available,
        memory_bandwidth_gbps=bandwidth.gbps if bandwidth else None,
        memory_bandwidth_source=bandwidth.source if bandwidth else None,
        chip=chip,
        gpu_cores=gpu_cores,
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
    gpu_cores: Optional[int] = None,
) -> Hardware:
    """A described machine for `doctor --platform ...`.

    Sizes are as sold, which is binary: ``memory_gb=256`` is a 256 GiB Mac,
    ``vram_gb=[24]`` a 24 GiB card. ``chip`` names the Apple chip ("M3 Ultra", or "M4 Max
    32-core GPU" for its bin), the GPU model ("RTX 4090", "RX 7900 XTX", used for every
    GPU) or the CPU; it feeds the bandwidth lookup and the report. A described Mac has
    macOS's default wired limit unless ``wired_limit_mb`` says otherwise.

    ``amd``: a card (``vram_gb``), or a Strix Halo class APU (``chip`` "Radeon 8060S" or
    "Ryzen AI Max", ``memory_gb`` the RAM as sold, ``vram_gb`` the BIOS carve-out, default
    none) with Linux's GTT raised to all the RAM the OS can spare. It plans llama.cpp's
    HIP build, Vulkan the alternative.
    """
    platform = (platform or "").lower()
    if platform in ("mac", "macos", "metal", "apple-silicon"):
        platform = "apple"
    if platform in ("nvidia", "gpu"):
        platform = "cuda"
    if platform in ("rocm", "radeon", "hip", "vulkan"):
        platform = "amd"
    if platform not in ("apple", "cuda", "amd", "cpu"):
        raise UsageError(f"unknown platform {platform!r}", "use apple, cuda, amd or cpu")
    memory = int(memory_gb * GIB) if memory_gb else None
    if memory_gb is not None and memory_gb <= 0:
        raise UsageError("--memory must be a positive number of GB")
    notes = ["a described machine (what-if), not this one"]
    if platform == "apple":
        if memory is None:
            raise UsageError("--platform apple needs --memory", "e.g. --memory 256")
        name = _apple_name(chip)
        cores = gpu_cores if gpu_cores is not None else _cores_in(chip)
        bandwidth = apple_bandwidth(name, cores, memory)
        if bandwidth and bandwidth.note:
            notes.append(f"memory bandwidth: {bandwidth.note}")
        if wired_limit_mb:
            budget, source = wired_limit_mb * MIB, "wired-limit"
        else:
            budget, source = metal_default_budget_bytes(memory), "default-rule"
        return Hardware(
            platform="apple",
            os="macOS arm64",
            cpu_name=name,
            ram_total_bytes=memory,
            memory_bandwidth_gbps=bandwidth.gbps if bandwidth else None,
            memory_bandwidth_source=bandwidth.source if bandwidth else None,
            chip=name,
            gpu_cores=cores,
            metal_budget_bytes=budget,
            metal_budget_source=source,
            metal_budget_estimated=not wired_limit_mb,
            wired_limit_mb=wired_limit_mb,
            what_if=True,
            notes=tuple(notes),
        )
    if platform == "amd" and _is_large_apu(chip, None):
        return _apu_profile(chip or "Radeon 8060S", memory, vram_gb, notes)
    if platform in ("cuda", "amd"):
        sizes = list(vram_gb or [])
        if not sizes:
            raise UsageError(
                f"--platform {platform} needs --vram", "one figure per GPU in GB, e.g. --vram 24 or --vram 48,48"
            )
        if any(s <= 0 for s in sizes):
            raise UsageError("--vram figures must be positive")
        vendor = "nvidia" if platform == "cuda" else "amd"
        name = chip or ("NVIDIA GPU" if vendor == "nvidia" else "AMD GPU")
        match = gpu_bandwidth(chip, vendor)
        gpus = tuple(
            GPU(
                index=i,
                name=name,
                total_bytes=int(s * GIB),
                free_bytes=None,
                bandwidth_gbps=match.gbps if match else None,
                vendor=vendor,
                vram_bytes=int(s * GIB),
                bandwidth_source=match.source if match else None,
            )
            for i, s in enumerate(sizes)
        )
        return Hardware(
            platform=platform,
            os="Linux x86_64",
            ram_total_bytes=memory,
            gpus=gpus,
            gpu_backends=("cuda", "vulkan") if vendor == "nvidia" else amd_gpu_backends(True),
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


def _apu_profile(chip: str, memory: Optional[int], vram_gb: Optional[Sequence[float]], notes: List[str]) -> Hardware:
    if memory is None:
        raise UsageError("an APU (--platform amd --chip 'Radeon 8060S') needs --memory", "e.g. --memory 128")
    sizes = list(vram_gb or [])
    if len(sizes) > 1 or any(s < 0 for s in sizes):
        raise UsageError("an APU has one GPU: --vram is its BIOS carve-out in GB, e.g. --vram 96")
    carve = int(sizes[0] * GIB) if sizes else 0
    if carve >= memory:
        raise UsageError("the carve-out (--vram) must be less than --memory")
    visible = memory - carve
    total = apu_budget_bytes(carve, visible, visible)  # GTT raised to all it may take
    match = gpu_bandwidth(chip, "amd")
    gpu = GPU(
        index=0,
        name=chip,
        total_bytes=total,
        free_bytes=None,
        bandwidth_gbps=match.gbps if match else None,
        vendor="amd",
        unified_memory=True,
        vram_bytes=carve,
        gtt_bytes=visible,
        bandwidth_source=match.source if match else None,
    )
    notes.append("an APU: its GPU memory is the system's RAM; GTT assumed raised to all the OS can spare")
    return Hardware(
        platform="amd",
        os="Linux x86_64",
        ram_total_bytes=visible,
        memory_bandwidth_gbps=match.gbps if match else None,
        memory_bandwidth_source=match.source if match else None,
        gpus=(gpu,),
        gpu_backends=amd_gpu_backends(True),
        what_if=True,
        notes=tuple(notes),
    )


def _cores_in(chip: Optional[str]) -> Optional[int]:
    """ "M4 Max 32-core GPU" or "M4 Max 32c" -> 32 (a described chip's bin)."""
    match = re.search(r"(\d+)\s*(?:-?\s*core(?:\s*gpu)?|c)\b", chip or "", re.I)
    return int(match.group(1)) if match else None


def _apple_name(chip: Optional[str]) -> Optional[str]:
    if not chip:
        return None
    chip = chip.strip()
    return chip if chip.lower().startswith("apple") else f"Apple {chip}"
