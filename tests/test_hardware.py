"""Hardware detection with faked system answers: macOS sysctl, NVML, nvidia-smi, CPU."""

from __future__ import annotations

import json
import sys
import types

import pytest

from qwenocr.errors import UsageError
from qwenocr.fit import hardware
from qwenocr.fit.hardware import GIB, MIB

# --- fakes ------------------------------------------------------------------------------


def fake_run(answers: dict, calls: list = None):
    """A `_run` that answers by the command's distinctive word; None when not listed."""

    def run(cmd, timeout):
        assert timeout and timeout > 0, "every outside call needs a timeout"
        if calls is not None:
            calls.append(list(cmd))
        if cmd[0] == "sysctl":
            return answers.get(cmd[-1])
        if cmd[0] == "nvidia-smi":
            return answers.get("nvidia-smi")
        if cmd[0] == sys.executable and cmd[1] == "-c":
            return answers.get("mlx")
        return None

    return run


@pytest.fixture
def linux(monkeypatch):
    monkeypatch.setattr(hardware, "_platform", lambda: ("linux", "x86_64"))
    monkeypatch.setattr(hardware, "_psutil_memory", lambda: (32 * GIB, 28 * GIB))
    monkeypatch.setattr(hardware, "_cpu_cores", lambda: 16)
    monkeypatch.setattr(hardware, "_cpu_name", lambda: "AMD Ryzen 9 7950X")
    monkeypatch.setattr(hardware, "_which", lambda name: None)
    monkeypatch.setattr(hardware, "_run", fake_run({}))
    # No NVML unless a test installs one; no AMD driver files; no llama-cpp-python.
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(hardware, "SYSFS_ROOT", "/nonexistent-sysfs")
    monkeypatch.setattr(hardware, "_rocm_installed", lambda: False)
    monkeypatch.setattr(hardware, "_llama_installed", lambda: (False, None))


@pytest.fixture
def mac(monkeypatch):
    monkeypatch.setattr(hardware, "_platform", lambda: ("darwin", "arm64"))
    monkeypatch.setattr(hardware, "_psutil_memory", lambda: (256 * GIB, 200 * GIB))
    monkeypatch.setattr(hardware, "_cpu_cores", lambda: 32)
    monkeypatch.setattr(hardware, "_apple_gpu_cores", lambda: None)


def install_fake_nvml(monkeypatch, gpus, driver=b"550.54.15", init_error=None):
    """A stand-in `pynvml` module: gpus = [(name, total, free), ...]."""
    module = types.ModuleType("pynvml")

    def nvmlInit():
        if init_error:
            raise init_error

    module.nvmlInit = nvmlInit
    module.nvmlShutdown = lambda: None
    module.nvmlSystemGetDriverVersion = lambda: driver
    module.nvmlDeviceGetCount = lambda: len(gpus)
    module.nvmlDeviceGetHandleByIndex = lambda i: i
    module.nvmlDeviceGetName = lambda h: gpus[h][0]
    module.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=gpus[h][1], free=gpus[h][2])
    monkeypatch.setitem(sys.modules, "pynvml", module)


# --- Apple Silicon ----------------------------------------------------------------------


def test_apple_uses_metal_recommended_working_set(mac, monkeypatch):
    calls = []
    mlx_answer = json.dumps({"max_recommended_working_set_size": 206158430208, "architecture": "applegpu_g15d"})
    monkeypatch.setattr(
        hardware,
        "_run",
        fake_run(
            {
                "machdep.cpu.brand_string": "Apple M3 Ultra\n",
                "hw.memsize": str(256 * GIB),
                "iogpu.wired_limit_mb": "0",
                "mlx": "some warning line\n" + mlx_answer + "\n",
            },
            calls,
        ),
    )
    hw = hardware.detect()
    assert hw.platform == "apple"
    assert hw.chip == "Apple M3 Ultra"
    assert hw.ram_total_bytes == 256 * GIB
    assert hw.wired_limit_mb == 0
    assert hw.metal_budget_bytes == 206158430208
    assert hw.metal_budget_source == "metal"
    assert not hw.metal_budget_estimated
    assert hw.memory_bandwidth_gbps == 819
    # MLX is asked in a child interpreter, never imported here.
    assert any(c[0] == sys.executable for c in calls)


def test_apple_without_mlx_uses_default_rule_and_says_estimated(mac, monkeypatch):
    monkeypatch.setattr(
        hardware,
        "_run",
        fake_run(
            {"machdep.cpu.brand_string": "Apple M2 Max", "hw.memsize": str(32 * GIB), "iogpu.wired_limit_mb": "0"}
        ),
    )
    hw = hardware.detect()
    assert hw.metal_budget_source == "default-rule"
    assert hw.metal_budget_estimated
    assert hw.metal_budget_bytes == 32 * GIB * 2 // 3
    assert any("estimated" in n for n in hw.notes)


def test_apple_wired_limit_set_is_the_budget(mac, monkeypatch):
    monkeypatch.setattr(
        hardware,
        "_run",
        fake_run(
            {
                "machdep.cpu.brand_string": "Apple M3 Ultra",
                "hw.memsize": str(256 * GIB),
                "iogpu.wired_limit_mb": "240000",
                "mlx": json.dumps({"max_recommended_working_set_size": 1}),
            }
        ),
    )
    hw = hardware.detect()
    assert hw.wired_limit_mb == 240000
    assert hw.metal_budget_bytes == 240000 * MIB
    assert hw.metal_budget_source == "wired-limit"


def test_apple_unreadable_sysctl_stays_unknown(mac, monkeypatch):
    monkeypatch.setattr(hardware, "_run", fake_run({"hw.memsize": "not a number"}))
    monkeypatch.setattr(hardware, "_psutil_memory", lambda: (None, None))
    hw = hardware.detect()
    assert hw.chip is None
    assert hw.ram_total_bytes is None
    assert hw.wired_limit_mb is None
    assert hw.metal_budget_bytes is None  # nothing to derive it from: unknown, not guessed
    assert hw.memory_bandwidth_gbps is None


@pytest.mark.parametrize(
    "ram_gib, budget_gib",
    [(8, 8 * 2 / 3), (16, 16 * 2 / 3), (32, 32 * 2 / 3), (36, 27), (64, 48), (192, 144), (256, 192)],
)
def test_metal_default_rule(ram_gib, budget_gib):
    assert hardware.metal_default_budget_bytes(ram_gib * GIB) / GIB == pytest.approx(budget_gib, abs=0.01)


# --- NVIDIA -------------------------------------------------------------------------------


def test_nvml_present(linux, monkeypatch):
    install_fake_nvml(
        monkeypatch,
        [
            (b"NVIDIA RTX 6000 Ada Generation", 48 * GIB, 40 * GIB),
            ("NVIDIA RTX 6000 Ada Generation", 48 * GIB, 47 * GIB),
        ],
    )
    hw = hardware.detect()
    assert hw.platform == "cuda"
    assert hw.gpu_source == "nvml"
    assert hw.driver == "550.54.15"
    assert [g.name for g in hw.gpus] == ["NVIDIA RTX 6000 Ada Generation"] * 2
    assert hw.vram_total_bytes == 96 * GIB
    assert hw.vram_free_bytes == 87 * GIB
    assert hw.gpus[0].bandwidth_gbps == 960
    assert hw.ram_total_bytes == 32 * GIB


def test_nvml_fails_falls_back_to_nvidia_smi(linux, monkeypatch):
    install_fake_nvml(monkeypatch, [], init_error=RuntimeError("NVML Shared Library Not Found"))
    monkeypatch.setattr(hardware, "_which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    calls = []
    monkeypatch.setattr(
        hardware,
        "_run",
        fake_run({"nvidia-smi": "0, NVIDIA GeForce RTX 4090, 24564, 23012, 550.54.15\n"}, calls),
    )
    hw = hardware.detect()
    assert hw.platform == "cuda"
    assert hw.gpu_source == "nvidia-smi"
    assert hw.driver == "550.54.15"
    (gpu,) = hw.gpus
    assert gpu.name == "NVIDIA GeForce RTX 4090"
    assert gpu.total_bytes == 24564 * MIB
    assert gpu.free_bytes == 23012 * MIB
    assert gpu.bandwidth_gbps == 1008
    smi = [c for c in calls if c[0] == "nvidia-smi"][0]
    assert "--format=csv,noheader,nounits" in smi
    assert any(a.startswith("--query-gpu=index,name,memory.total,memory.free") for a in smi)


def test_nvml_absent_and_no_nvidia_smi_is_cpu(linux):
    hw = hardware.detect()
    assert hw.platform == "cpu"
    assert hw.gpus == ()
    assert hw.cpu_cores == 16
    assert hw.cpu_name == "AMD Ryzen 9 7950X"
    assert hw.ram_total_bytes == 32 * GIB
    assert hw.ram_available_bytes == 28 * GIB
    assert hw.memory_bandwidth_gbps is None  # unknown, never guessed
    assert any("no GPU found" in n for n in hw.notes)


def test_nvidia_smi_that_fails_is_cpu(linux, monkeypatch):
    monkeypatch.setattr(hardware, "_which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(hardware, "_run", fake_run({}))  # exits non-zero / times out -> None
    assert hardware.detect().platform == "cpu"


def test_parse_nvidia_smi_four_columns():
    text = "0, NVIDIA H100 80GB HBM3, 81559, 80000\n1, NVIDIA H100 80GB HBM3, 81559, 1024\n"
    gpus = hardware.parse_nvidia_smi(text)
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[0].total_bytes == 81559 * MIB
    assert gpus[1].free_bytes == 1024 * MIB
    assert gpus[0].bandwidth_gbps == 3350


def test_parse_nvidia_smi_odd_values():
    text = "\n".join(
        [
            "0, NVIDIA GH200 480GB, [N/A], [N/A]",
            "1, Weird, Name, With Commas, 1000, 500",
            "garbage line",
            "",
        ]
    )
    gpus = hardware.parse_nvidia_smi(text)
    assert len(gpus) == 2
    assert gpus[0].total_bytes is None and gpus[0].free_bytes is None
    assert gpus[1].name == "Weird,Name,With Commas"
    assert gpus[1].total_bytes == 1000 * MIB


def test_unknown_vram_is_reported_unknown(linux, monkeypatch):
    install_fake_nvml(monkeypatch, [("NVIDIA GH200 480GB", None, None)])
    hw = hardware.detect()
    assert hw.vram_total_bytes is None
    assert any("VRAM" in n for n in hw.notes)


# --- the real subprocess helper -------------------------------------------------------------


def test_run_returns_none_for_missing_failing_and_hung_commands():
    assert hardware._run(["definitely-not-a-program-qwenocr"], timeout=5) is None
    assert hardware._run([sys.executable, "-c", "import sys; sys.exit(3)"], timeout=5) is None
    assert hardware._run([sys.executable, "-c", "import time; time.sleep(10)"], timeout=0.5) is None
    assert hardware._run([sys.executable, "-c", "print('ok')"], timeout=5).strip() == "ok"


# --- bandwidth tables ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Apple M3 Ultra", 819),
        ("Apple M3 Max", 300),
        ("Apple M3", 100),
        ("M2 Max", 400),
        ("Apple M9 Hyper", None),
        (None, None),
    ],
)
def test_apple_bandwidth(name, expected):
    assert hardware.apple_bandwidth_gbps(name) == expected


@pytest.mark.parametrize(
    "name, expected",
    [
        ("NVIDIA GeForce RTX 4090", 1008),
        ("NVIDIA A100-SXM4-80GB", 2039),
        ("NVIDIA A10", 600),  # not mistaken for an A100, nor the reverse
        ("NVIDIA A100-PCIE-40GB", 1555),
        ("NVIDIA L40S", 864),
        ("NVIDIA L4", 300),
        ("Some Future GPU", None),
    ],
)
def test_gpu_bandwidth(name, expected):
    assert hardware.gpu_bandwidth_gbps(name) == expected


# --- what-if -----------------------------------------------------------------------------------


def test_profile_apple():
    hw = hardware.hardware_profile("apple", memory_gb=256, chip="M3 Ultra")
    assert hw.what_if and hw.platform == "apple"
    assert hw.chip == "Apple M3 Ultra"
    assert hw.ram_total_bytes == 256 * GIB
    assert hw.metal_budget_bytes == 192 * GIB
    assert hw.metal_budget_estimated
    assert hw.wired_limit_mb == 0
    assert hw.memory_bandwidth_gbps == 819


def test_profile_cuda_multi_gpu():
    hw = hardware.hardware_profile("cuda", vram_gb=[48, 48], chip="RTX 6000 Ada")
    assert [g.total_bytes for g in hw.gpus] == [48 * GIB, 48 * GIB]
    assert all(g.free_bytes is None for g in hw.gpus)
    assert hw.gpus[0].bandwidth_gbps == 960


def test_profile_cpu():
    hw = hardware.hardware_profile("cpu", memory_gb=24)
    assert hw.platform == "cpu" and hw.ram_total_bytes == 24 * GIB
    assert hw.ram_available_bytes is None and hw.memory_bandwidth_gbps is None


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(platform="amiga", memory_gb=1),
        dict(platform="apple"),
        dict(platform="cuda"),
        dict(platform="cpu"),
        dict(platform="cuda", vram_gb=[0]),
        dict(platform="cpu", memory_gb=-4),
    ],
)
def test_profile_errors(kwargs):
    with pytest.raises(UsageError):
        hardware.hardware_profile(**kwargs)


def test_to_dict_is_json_ready():
    hw = hardware.hardware_profile("cuda", vram_gb=[24], chip="RTX 4090")
    data = json.loads(json.dumps(hw.to_dict()))
    assert data["gpus"][0]["total_gb"] == pytest.approx(25.77, abs=0.01)
    assert data["vram_total_gb"] == pytest.approx(25.77, abs=0.01)
