"""AMD GPUs: a fake amdgpu sysfs tree and canned amd-smi / rocm-smi answers.

Cards (RX 7900 XTX), Strix Halo APUs (carve-out + GTT), the small integrated Radeons
that are left out, and described AMD machines (`doctor --platform amd`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwenocr.errors import UsageError
from qwenocr.fit import hardware
from qwenocr.fit.hardware import GIB, MIB


def make_card(root, index, *, vendor="0x1002", device="0x744c", vram=None, used=None, gtt=None, product=None):
    """/sys/class/drm/cardN/device/... as the amdgpu driver writes it (sizes in bytes)."""
    dev = root / "class" / "drm" / f"card{index}" / "device"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text(vendor + "\n")
    (dev / "device").write_text(device + "\n")
    for name, value in (("mem_info_vram_total", vram), ("mem_info_vram_used", used), ("mem_info_gtt_total", gtt)):
        if value is not None:
            (dev / name).write_text(f"{value}\n")
    if product:
        (dev / "product_name").write_text(product + "\n")
    # A connector beside the card, as the real tree has: not a card.
    (root / "class" / "drm" / f"card{index}-DP-1").mkdir()
    return dev


def fake_tools(monkeypatch, answers):
    """`_which`/`_run` that know amd-smi / rocm-smi only when `answers` has them."""
    monkeypatch.setattr(hardware, "_which", lambda name: f"/usr/bin/{name}" if name in answers else None)

    def run(cmd, timeout):
        assert timeout and timeout > 0
        return answers.get(cmd[0])

    monkeypatch.setattr(hardware, "_run", run)


@pytest.fixture
def linux(monkeypatch, tmp_path):
    monkeypatch.setattr(hardware, "_platform", lambda: ("linux", "x86_64"))
    monkeypatch.setattr(hardware, "_psutil_memory", lambda: (64 * GIB, 60 * GIB))
    monkeypatch.setattr(hardware, "_cpu_cores", lambda: 16)
    monkeypatch.setattr(hardware, "_cpu_name", lambda: "AMD Ryzen 9 7950X")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVIDIA
    monkeypatch.setattr(hardware, "_llama_installed", lambda: (False, None))
    monkeypatch.setattr(hardware, "_rocm_installed", lambda: False)
    monkeypatch.setattr(hardware, "SYSFS_ROOT", str(tmp_path))
    fake_tools(monkeypatch, {})
    return tmp_path


ROCM_SMI_7900 = json.dumps(
    {
        "card0": {
            "VRAM Total Memory (B)": str(24 * GIB),
            "VRAM Total Used Memory (B)": str(1 * GIB),
            "Card Series": "Radeon RX 7900 XTX",
            "Card Vendor": "Advanced Micro Devices, Inc. [AMD/ATI]",
        }
    }
)
AMD_SMI_7900 = json.dumps(
    [
        {
            "gpu": 0,
            "asic": {"market_name": "AMD Radeon RX 7900 XTX", "vendor_id": "0x1002", "device_id": "0x744c"},
            "vram": {"type": "GDDR6", "size": {"value": 24560, "unit": "MB"}},
        }
    ]
)


# --- cards --------------------------------------------------------------------------------------


def test_7900xtx_from_sysfs_named_by_rocm_smi(linux, monkeypatch):
    make_card(linux, 0, vram=24 * GIB, used=2 * GIB, gtt=31 * GIB)
    fake_tools(monkeypatch, {"rocm-smi": ROCM_SMI_7900})
    monkeypatch.setattr(hardware, "_rocm_installed", lambda: True)
    hw = hardware.detect()
    assert hw.platform == "amd" and hw.gpu_vendor == "amd"
    (gpu,) = hw.gpus
    assert gpu.name == "Radeon RX 7900 XTX"
    assert gpu.total_bytes == 24 * GIB and gpu.free_bytes == 22 * GIB
    assert gpu.vram_bytes == 24 * GIB and gpu.gtt_bytes == 31 * GIB
    assert not gpu.unified_memory and not hw.unified_memory
    assert gpu.bandwidth_gbps == 960 and "AMD" in (gpu.bandwidth_source or "")
    assert hw.gpu_source == "sysfs+rocm-smi"
    # ROCm is installed: the HIP build first, Vulkan the alternative.
    assert hw.gpu_backends == ("hip", "vulkan") and hw.gpu_backend == "hip"
    assert hw.vram_total_bytes == 24 * GIB
    data = json.loads(json.dumps(hw.to_dict()))
    assert data["gpu_backend"] == "hip" and data["gpus"][0]["vendor"] == "amd"


def test_card_from_sysfs_alone_plans_vulkan_and_keeps_unknown_speed_unknown(linux):
    make_card(linux, 0, vram=20 * GIB, used=0, gtt=31 * GIB)
    make_card(linux, 1, vendor="0x8086", device="0x56a0", vram=16 * GIB)  # an Intel card: not AMD
    hw = hardware.detect()
    assert hw.platform == "amd"
    (gpu,) = hw.gpus
    # 0x744c is the 7900 XTX, XT and GRE alike: the name says so and no figure is guessed.
    assert "7900 series" in gpu.name and gpu.bandwidth_gbps is None
    assert hw.gpu_source == "sysfs"
    assert hw.gpu_backends == ("vulkan", "hip")  # no ROCm here: Vulkan runs on Mesa's driver


def test_amd_smi_alone_finds_the_card(linux, monkeypatch):
    # Windows (or a container without the sysfs tree): amd-smi's answer is all there is.
    fake_tools(monkeypatch, {"amd-smi": AMD_SMI_7900})
    hw = hardware.detect()
    assert hw.platform == "amd" and hw.gpu_source == "amd-smi"
    (gpu,) = hw.gpus
    assert gpu.name == "AMD Radeon RX 7900 XTX" and gpu.total_bytes == 24560 * MIB
    assert gpu.free_bytes is None and gpu.bandwidth_gbps == 960


def test_two_cards_sum_and_each_is_listed(linux):
    make_card(linux, 0, device="0x7448", vram=48 * GIB, used=0, product="AMD Radeon PRO W7900")
    make_card(linux, 1, device="0x7448", vram=48 * GIB, used=0, product="AMD Radeon PRO W7900")
    hw = hardware.detect()
    assert [g.index for g in hw.gpus] == [0, 1]
    assert hw.vram_total_bytes == 96 * GIB
    assert all(g.bandwidth_gbps == 864 for g in hw.gpus)


# --- APUs ---------------------------------------------------------------------------------------


def test_strix_halo_counts_carveout_plus_gtt_and_advises_raising_gtt(linux, monkeypatch):
    # 128 GB Strix Halo, 512 MB carve-out: the OS sees ~127.5 GB; Linux's default GTT is half.
    visible = 128 * GIB - 512 * MIB
    monkeypatch.setattr(hardware, "_psutil_memory", lambda: (visible, visible - 4 * GIB))
    make_card(linux, 0, device="0x1586", vram=512 * MIB, used=100 * MIB, gtt=visible // 2)
    hw = hardware.detect()
    assert hw.platform == "amd"
    (gpu,) = hw.gpus
    assert gpu.unified_memory and hw.unified_memory
    assert "8060S" in gpu.name and gpu.bandwidth_gbps == 256
    assert gpu.vram_bytes == 512 * MIB and gpu.gtt_bytes == visible // 2
    assert gpu.total_bytes == 512 * MIB + visible // 2
    assert gpu.free_bytes is None  # the carve-out's free figure says nothing of the GTT
    assert any("carve-out" in n and "GTT" in n for n in hw.notes)
    assert any("ttm.pages_limit=" in a for a in hw.advice)


def test_strix_halo_gtt_raised_is_capped_by_what_the_os_needs(linux, monkeypatch):
    visible = 128 * GIB - 512 * MIB
    monkeypatch.setattr(hardware, "_psutil_memory", lambda: (visible, visible - 4 * GIB))
    make_card(linux, 0, device="0x1586", vram=512 * MIB, used=0, gtt=visible)  # ttm.pages_limit raised to all
    (gpu,) = hardware.detect().gpus
    reserve = int(visible * 0.10)  # 10 % of the RAM the OS sees (more than the 4 GiB minimum)
    assert gpu.total_bytes == 512 * MIB + visible - reserve
    assert not any("ttm.pages_limit" in a for a in hardware.detect().advice)


def test_strix_halo_with_a_large_bios_carveout(linux, monkeypatch):
    # 96 GB carve-out (what Windows users set): the OS sees 32 GB, GTT defaults to 16.
    monkeypatch.setattr(hardware, "_psutil_memory", lambda: (32 * GIB, 28 * GIB))
    make_card(linux, 0, device="0x1586", vram=96 * GIB, used=0, gtt=16 * GIB)
    (gpu,) = hardware.detect().gpus
    assert gpu.total_bytes == 96 * GIB + 16 * GIB


def test_small_integrated_radeon_is_left_out(linux):
    make_card(linux, 0, device="0x164e", vram=512 * MIB, used=0, gtt=31 * GIB)  # Raphael iGPU
    hw = hardware.detect()
    assert hw.platform == "cpu" and hw.gpus == ()
    assert any("integrated graphics left out" in n for n in hw.notes)


def test_small_integrated_radeon_beside_a_card(linux, monkeypatch):
    make_card(linux, 0, device="0x164e", vram=512 * MIB, used=0, gtt=31 * GIB)
    make_card(linux, 1, device="0x744c", vram=24 * GIB, used=0, gtt=31 * GIB)
    fake_tools(monkeypatch, {})
    hw = hardware.detect()
    assert hw.platform == "amd" and len(hw.gpus) == 1
    assert hw.gpus[0].index == 0 and hw.gpus[0].vram_bytes == 24 * GIB


def test_apu_budget_rule():
    assert hardware.apu_budget_bytes(GIB, None, 64 * GIB) == GIB  # GTT unknown: the carve-out alone
    assert hardware.apu_budget_bytes(GIB, 8 * GIB, 64 * GIB) == 9 * GIB
    # 16 GB seen by the OS: at least 4 GiB stays with it.
    assert hardware.apu_budget_bytes(0, 16 * GIB, 16 * GIB) == 12 * GIB


# --- parsers ------------------------------------------------------------------------------------


def test_parse_amd_smi_formats():
    new = hardware.parse_amd_smi(AMD_SMI_7900)
    assert new[0].vram_total == 24560 * MIB and new[0].device_id == "0x744c"
    old = hardware.parse_amd_smi(json.dumps([{"gpu": 0, "asic": {"market_name": "X"}, "vram": {"vram_size_mb": 1024}}]))
    assert old[0].vram_total == 1024 * MIB and old[0].name == "X"
    text = hardware.parse_amd_smi(json.dumps({"gpu_data": [{"asic": {}, "vram": {"size": "2048 MB"}}]}))
    assert text[0].vram_total == 2048 * MIB
    assert hardware.parse_amd_smi("not json") == []
    assert hardware.parse_amd_smi("[1, 2]") == []


def test_parse_rocm_smi():
    (card,) = hardware.parse_rocm_smi(ROCM_SMI_7900)
    assert card.vram_total == 24 * GIB and card.vram_used == GIB and card.name == "Radeon RX 7900 XTX"
    assert hardware.parse_rocm_smi("{}") == [] and hardware.parse_rocm_smi("oops") == []
    # Odd spellings and missing figures stay unknown.
    (odd,) = hardware.parse_rocm_smi(json.dumps({"card3": {"vram total memory (b)": "N/A"}}))
    assert odd.vram_total is None and odd.name is None


def test_sysfs_without_amdgpu_files_is_nothing(tmp_path):
    make_card(tmp_path, 0)  # vendor AMD but no mem_info_* (another driver)
    assert hardware.sysfs_amd_devices(str(tmp_path)) == []
    assert hardware.sysfs_amd_devices(str(tmp_path / "missing")) == []


# --- described AMD machines -----------------------------------------------------------------------


def test_profile_amd_card():
    hw = hardware.hardware_profile("amd", vram_gb=[24], chip="RX 7900 XTX")
    assert hw.what_if and hw.platform == "amd" and hw.gpu_vendor == "amd"
    assert hw.gpus[0].total_bytes == 24 * GIB and hw.gpus[0].bandwidth_gbps == 960
    assert hw.gpu_backend == "hip"


def test_profile_rocm_alias_and_errors():
    assert hardware.hardware_profile("rocm", vram_gb=[16]).platform == "amd"
    with pytest.raises(UsageError):
        hardware.hardware_profile("amd")  # a card needs --vram


def test_profile_strix_halo():
    hw = hardware.hardware_profile("amd", memory_gb=128, chip="Radeon 8060S")
    (gpu,) = hw.gpus
    assert gpu.unified_memory and gpu.vram_bytes == 0
    assert gpu.total_bytes == 128 * GIB - int(128 * GIB * 0.10)
    assert hw.memory_bandwidth_gbps == 256 and gpu.bandwidth_gbps == 256
    carved = hardware.hardware_profile("amd", memory_gb=128, vram_gb=[96], chip="Ryzen AI Max+ 395")
    assert carved.gpus[0].vram_bytes == 96 * GIB and carved.ram_total_bytes == 32 * GIB
    assert carved.gpus[0].total_bytes == 96 * GIB + 32 * GIB - 4 * GIB
    for bad in (dict(vram_gb=[96]), dict(memory_gb=128, vram_gb=[128]), dict(memory_gb=128, vram_gb=[8, 8])):
        with pytest.raises(UsageError):
            hardware.hardware_profile("amd", chip="Radeon 8060S", **bad)


# --- doctor as a user runs it ------------------------------------------------------------------------


def doctor_json(*args):
    script = Path(sys.executable).with_name("qwenocr")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "qwenocr"]
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    done = subprocess.run(
        command + ["doctor", "--json", "--offline", *args],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert done.stderr == ""
    data = json.loads(done.stdout)
    assert data["exit_code"] == done.returncode
    return data


def test_doctor_plans_an_amd_card_on_the_gpu_with_the_hip_build():
    data = doctor_json("--platform", "amd", "--vram", "24", "--chip", "RX 7900 XTX")
    assert data["hardware"]["platform"] == "amd" and data["hardware"]["gpu_backend"] == "hip"
    assert data["device"] == "hip" and data["fits"]
    assert data["engine"]["install_command"] == 'CMAKE_ARGS="-DGGML_HIP=on" pip install llama-cpp-python'
    assert data["hardware"]["gpus"][0]["bandwidth_gbps"] == 960


def test_doctor_plans_a_strix_halo_on_its_gpu():
    data = doctor_json("--platform", "amd", "--memory", "128", "--chip", "Radeon 8060S")
    gpu = data["hardware"]["gpus"][0]
    assert gpu["unified_memory"] and gpu["bandwidth_gbps"] == 256
    assert data["device"] == "hip" and data["fits"]
    assert "-DGGML_HIP=on" in data["engine"]["install_command"]
