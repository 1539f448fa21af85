"""llama-cpp-python's build on a GPU machine: asked in a child process, never imported.

A CPU-only build on an NVIDIA or AMD box runs every model on the CPU: detection says so
(`llama_gpu_offload` False), doctor's engine check gives the exact rebuild line, and the
exit code is ENGINE_MISSING. Plus Windows' install lines and one real probe of the
llama-cpp-python installed here (a CPU build)."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from qwenocr.errors import ExitCode
from qwenocr.fit import doctor, hardware
from qwenocr.fit.hardware import GIB

SMI_4090 = "0, NVIDIA GeForce RTX 4090, 24564, 24000, 550.54.15\n"
CPU_INFO = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
CUDA_INFO = "CUDA : ARCHS = 890 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | " + CPU_INFO
ROCM_INFO = "ROCm : NO_VMM = 1 | PEER_MAX_BATCH_SIZE = 128 | " + CPU_INFO


@pytest.fixture
def nvidia_box(monkeypatch, tmp_path):
    """Linux with one RTX 4090 (through nvidia-smi) and llama-cpp-python 0.3.36 installed."""
    monkeypatch.setattr(hardware, "_platform", lambda: ("linux", "x86_64"))
    monkeypatch.setattr(hardware, "_psutil_memory", lambda: (128 * GIB, 120 * GIB))
    monkeypatch.setattr(hardware, "_cpu_cores", lambda: 16)
    monkeypatch.setattr(hardware, "_cpu_name", lambda: "AMD Ryzen 9 7950X")
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(hardware, "SYSFS_ROOT", str(tmp_path))
    monkeypatch.setattr(hardware, "_which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    monkeypatch.setattr(hardware, "_run", lambda cmd, timeout: SMI_4090 if cmd[0] == "nvidia-smi" else None)
    monkeypatch.setattr(hardware, "_llama_installed", lambda: (True, "0.3.36"))
    monkeypatch.setattr(hardware, "_rocm_installed", lambda: False)
    return monkeypatch


def probe_answers(monkeypatch, answer):
    calls = []

    def probe():
        calls.append(1)
        return answer

    monkeypatch.setattr(hardware, "_llama_probe", probe)
    return calls


def test_cpu_only_build_on_nvidia_is_found_and_rebuild_line_given(nvidia_box):
    probe_answers(nvidia_box, {"offload": False, "info": CPU_INFO})
    hw = hardware.detect()
    assert hw.platform == "cuda" and hw.gpu_backend == "cuda"
    assert hw.llama_gpu_offload is False and hw.llama_build == "cpu" and hw.llama_version == "0.3.36"
    assert any("-DGGML_CUDA=on" in a and "CPU" in a for a in hw.advice)
    engine = doctor.engine_status("llama.cpp", "cuda", hardware=hw)
    assert engine.installed and engine.gpu_offload is False and engine.ready is False
    assert engine.rebuild_command == (
        'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python==0.3.36'
    )
    data = engine.to_dict()
    assert data["gpu_offload"] is False and data["ready"] is False and data["build"] == "cpu"
    # The engine a GPU plan needs is missing, though the package is there.
    plan = type("Plan", (), {"fits": True, "choice": None})()
    assert doctor.exit_code(plan, engine) == ExitCode.ENGINE_MISSING


def test_cuda_build_is_ready(nvidia_box):
    probe_answers(nvidia_box, {"offload": True, "info": CUDA_INFO})
    hw = hardware.detect()
    assert hw.llama_gpu_offload is True and hw.llama_build == "cuda" and hw.advice == ()
    engine = doctor.engine_status("llama.cpp", "cuda", hardware=hw)
    assert engine.ready and engine.rebuild_command is None
    plan = type("Plan", (), {"fits": True, "choice": None})()
    assert doctor.exit_code(plan, engine) == ExitCode.OK


def test_a_cpu_plan_does_not_ask_for_a_gpu_build(nvidia_box):
    # e.g. nothing fits the VRAM and the plan falls back to the CPU: a CPU build is fine.
    probe_answers(nvidia_box, {"offload": False, "info": CPU_INFO})
    engine = doctor.engine_status("llama.cpp", "cpu", hardware=hardware.detect())
    assert engine.gpu_offload is None and engine.ready


def test_probe_that_fails_leaves_offload_unknown(nvidia_box):
    probe_answers(nvidia_box, None)
    hw = hardware.detect()
    assert hw.llama_gpu_offload is None and hw.llama_build is None
    assert any("could not be asked" in n for n in hw.notes)
    assert doctor.engine_status("llama.cpp", "cuda", hardware=hw).ready


def test_not_installed_is_not_probed(nvidia_box):
    calls = probe_answers(nvidia_box, {"offload": False, "info": ""})
    nvidia_box.setattr(hardware, "_llama_installed", lambda: (False, None))
    hw = hardware.detect()
    assert calls == [] and hw.llama_gpu_offload is None


def test_cpu_machine_is_not_probed(nvidia_box):
    calls = probe_answers(nvidia_box, {"offload": False, "info": ""})
    nvidia_box.setattr(hardware, "_which", lambda name: None)
    assert hardware.detect().platform == "cpu" and calls == []


def amd_box(monkeypatch, tmp_path, rocm: bool):
    dev = tmp_path / "class" / "drm" / "card0" / "device"
    dev.mkdir(parents=True)
    for name, value in (("vendor", "0x1002"), ("device", "0x744c"), ("mem_info_vram_total", 24 * GIB)):
        (dev / name).write_text(f"{value}\n")
    (dev / "product_name").write_text("AMD Radeon RX 7900 XTX\n")
    monkeypatch.setattr(hardware, "_which", lambda name: None)
    monkeypatch.setattr(hardware, "_rocm_installed", lambda: rocm)


def test_cuda_build_on_an_amd_box_cannot_offload_here(nvidia_box, tmp_path):
    amd_box(nvidia_box, tmp_path, rocm=True)
    probe_answers(nvidia_box, {"offload": True, "info": CUDA_INFO})
    hw = hardware.detect()
    assert hw.platform == "amd" and hw.llama_build == "cuda" and hw.llama_gpu_offload is False
    engine = doctor.engine_status("llama.cpp", "hip", hardware=hw)
    assert engine.rebuild_command == (
        'CMAKE_ARGS="-DGGML_HIP=on" pip install --force-reinstall --no-cache-dir llama-cpp-python==0.3.36'
    )


def test_installed_vulkan_build_on_amd_comes_first(nvidia_box, tmp_path):
    amd_box(nvidia_box, tmp_path, rocm=True)
    probe_answers(nvidia_box, {"offload": True, "info": "Vulkan : | " + CPU_INFO})
    hw = hardware.detect()
    assert hw.llama_build == "vulkan" and hw.llama_gpu_offload is True
    assert hw.gpu_backends == ("vulkan", "hip")  # no rebuild for HIP when Vulkan already works


def test_rocm_build_is_named_hip(nvidia_box, tmp_path):
    amd_box(nvidia_box, tmp_path, rocm=False)
    probe_answers(nvidia_box, {"offload": True, "info": ROCM_INFO})
    hw = hardware.detect()
    assert hw.llama_build == "hip" and hw.gpu_backends == ("hip", "vulkan")


@pytest.mark.parametrize(
    "info, offload, build",
    [
        (CPU_INFO, False, "cpu"),
        (CUDA_INFO, True, "cuda"),
        (ROCM_INFO, True, "hip"),
        ("Metal : EMBED_LIBRARY = 1 | " + CPU_INFO, True, "metal"),
        (CPU_INFO, True, "gpu"),  # offloads, but names no backend (Vulkan reports no features)
    ],
)
def test_llama_build_of(info, offload, build):
    assert hardware.llama_build_of(info, offload) == build


# --- install lines -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "device, line",
    [
        ("cuda", 'CMAKE_ARGS="-DGGML_CUDA=on" pip install llama-cpp-python'),
        ("hip", 'CMAKE_ARGS="-DGGML_HIP=on" pip install llama-cpp-python'),
        ("vulkan", 'CMAKE_ARGS="-DGGML_VULKAN=on" pip install llama-cpp-python'),
        ("metal", 'CMAKE_ARGS="-DGGML_METAL=on" pip install llama-cpp-python'),
        ("cpu", "pip install llama-cpp-python"),
    ],
)
def test_install_lines(device, line):
    assert doctor.install_command("llama.cpp", device) == line


def test_windows_gets_powershell_and_cmd_lines(nvidia_box):
    nvidia_box.setattr(hardware, "_platform", lambda: ("win32", "AMD64"))
    probe_answers(nvidia_box, {"offload": False, "info": CPU_INFO})
    hw = hardware.detect()
    assert hw.os == "Windows AMD64"
    engine = doctor.engine_status("llama.cpp", "cuda", hardware=hw)
    assert engine.rebuild_command == (
        '$env:CMAKE_ARGS="-DGGML_CUDA=on"; pip install --force-reinstall --no-cache-dir llama-cpp-python==0.3.36'
    )
    assert engine.windows_commands == {
        "powershell": engine.rebuild_command,
        "cmd": 'set "CMAKE_ARGS=-DGGML_CUDA=on" && pip install --force-reinstall --no-cache-dir'
        " llama-cpp-python==0.3.36",
    }
    fresh = doctor.engine_status("llama.cpp", "vulkan", check=False, hardware=hw)
    assert fresh.install_command == '$env:CMAKE_ARGS="-DGGML_VULKAN=on"; pip install llama-cpp-python'
    assert fresh.windows_commands["cmd"] == 'set "CMAKE_ARGS=-DGGML_VULKAN=on" && pip install llama-cpp-python'
    assert doctor.install_command("mlx", "cpu", "cmd") == 'pip install "mlx[cpu]" mlx-vlm'


# --- the real probe ----------------------------------------------------------------------------------

needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")


@needs_llama
def test_real_probe_of_this_build_in_a_child():
    # FACTS §12: the llama-cpp-python built here is a CPU build.
    answer = hardware._llama_probe()
    assert answer is not None and answer["offload"] is False
    assert hardware.llama_build_of(answer["info"], answer["offload"]) == "cpu"


def test_probe_survives_a_crashing_or_hanging_child(monkeypatch):
    monkeypatch.setattr(hardware, "_LLAMA_PROBE", "import os; os.abort()")
    assert hardware._llama_probe() is None
    monkeypatch.setattr(hardware, "_LLAMA_PROBE", "import time; time.sleep(60)")
    monkeypatch.setattr(hardware, "LLAMA_PROBE_TIMEOUT_S", 0.5)
    assert hardware._llama_probe() is None
    monkeypatch.setattr(hardware, "_LLAMA_PROBE", "print('not json')")
    assert hardware._llama_probe() is None


# --- doctor as a user runs it, on a (faked) NVIDIA box with this CPU build ---------------------------


def fake_nvidia_smi(bin_dir: Path) -> None:
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '{SMI_4090}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@needs_llama
@pytest.mark.parametrize("as_json", [True, False])
def test_doctor_on_an_nvidia_box_with_a_cpu_build(tmp_path, as_json):
    fake_nvidia_smi(tmp_path)
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    env.pop("COLUMNS", None)
    script = Path(sys.executable).with_name("qwenocr")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "qwenocr"]
    done = subprocess.run(
        command + ["doctor"] + (["--json"] if as_json else []),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert done.stderr == ""
    if as_json:
        data = json.loads(done.stdout)
        assert data["hardware"]["platform"] == "cuda"
        assert data["hardware"]["llama_gpu_offload"] is False and data["hardware"]["llama_build"] == "cpu"
        assert data["device"] == "cuda"
        engine = data["engine"]
        assert engine["installed"] is True and engine["gpu_offload"] is False and engine["ready"] is False
        assert engine["rebuild_command"].startswith('CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall')
        assert "--no-cache-dir llama-cpp-python==" in engine["rebuild_command"]
        assert data["exit_code"] == done.returncode
        if data["fits"]:
            assert done.returncode == ExitCode.ENGINE_MISSING
    else:
        out = done.stdout
        assert "built without GPU offload" in out
        assert 'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python' in out
        assert "NVIDIA GeForce RTX 4090" in out
