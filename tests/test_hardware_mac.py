"""Macs: Apple chips' bandwidth bins (M3/M4/M5 Max by GPU cores or memory size), the M5
family, Python under Rosetta 2 and Intel Macs (what to do instead of a bare CPU plan)."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest

from qwenocr.fit import catalog, doctor, hardware
from qwenocr.fit.hardware import GIB

ROOT = Path(__file__).resolve().parents[1]


def fake_mac(monkeypatch, machine: str, sysctl: dict, ioreg: str = ""):
    monkeypatch.setattr(hardware, "_platform", lambda: ("darwin", machine))
    monkeypatch.setattr(hardware, "_psutil_memory", lambda: (sysctl.get("total"), 20 * GIB))
    monkeypatch.setattr(hardware, "_cpu_cores", lambda: 12)
    monkeypatch.setattr(hardware, "_llama_installed", lambda: (False, None))

    def run(cmd, timeout):
        assert timeout and timeout > 0
        if cmd[0] == "sysctl":
            return sysctl.get(cmd[-1])
        if cmd[0] == "ioreg":
            return ioreg or None
        if cmd[0] == sys.executable:
            return None  # no MLX to ask
        return None

    monkeypatch.setattr(hardware, "_run", run)


# --- Rosetta and Intel Macs ----------------------------------------------------------------------


def test_rosetta_says_install_an_arm64_python(monkeypatch):
    fake_mac(
        monkeypatch,
        "x86_64",
        {
            "sysctl.proc_translated": "1\n",
            "hw.memsize": str(32 * GIB),
            "machdep.cpu.brand_string": "VirtualApple @ 2.50GHz processor",
        },
    )
    hw = hardware.detect()
    assert hw.platform == "cpu" and hw.mac == "rosetta" and hw.os == "macOS x86_64"
    assert hw.ram_total_bytes == 32 * GIB
    assert any("Rosetta" in n for n in hw.notes)
    (advice,) = hw.advice
    assert "arm64 Python" in advice and "MLX" in advice
    assert hw.to_dict()["advice"] == [advice]


@pytest.mark.parametrize("translated", ["0", None])  # older macOS has no such sysctl
def test_intel_mac_gets_a_cpu_plan_and_says_why(monkeypatch, translated):
    answers = {"hw.memsize": str(16 * GIB), "machdep.cpu.brand_string": "Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz"}
    if translated is not None:
        answers["sysctl.proc_translated"] = translated
    fake_mac(monkeypatch, "x86_64", answers)
    hw = hardware.detect()
    assert hw.platform == "cpu" and hw.mac == "intel"
    assert hw.cpu_name.startswith("Intel")
    (advice,) = hw.advice
    assert "Apple Silicon only" in advice and "llama.cpp on the CPU" in advice


# --- bandwidth bins -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "chip, cores, memory_gib, expected",
    [
        # FACTS §13: M3 Max 48/64/128 GB 400 GB/s, 36 GB 300; M4 Max 48/64/128 GB 546, 36 GB 410.
        ("Apple M3 Max", 40, None, 400),
        ("Apple M3 Max", 30, None, 300),
        ("Apple M3 Max", None, 48, 400),
        ("Apple M3 Max", None, 128, 400),
        ("Apple M3 Max", None, 36, 300),
        ("Apple M3 Max", None, 96, 300),  # no bin listed: the slower one
        ("Apple M3 Max", None, None, 300),
        ("Apple M4 Max", 40, 36, 546),  # the core count wins over the memory size
        ("Apple M4 Max", 32, None, 410),
        ("Apple M4 Max", None, 64, 546),
        ("Apple M4 Max", None, 36, 410),
        ("Apple M4 Max", None, None, 410),
        ("Apple M4 Pro", 20, 48, 273),
        ("Apple M5", 10, 16, 153),
        ("Apple M5 Pro", None, 64, 307),
        ("Apple M5 Max", 40, None, 614),
        ("Apple M5 Max", None, 128, 614),
        ("Apple M5 Max", 32, None, 460),
        ("Apple M5 Max", None, None, 460),
        ("Apple M3 Ultra", 80, 512, 819),
    ],
)
def test_apple_bins(chip, cores, memory_gib, expected):
    memory = memory_gib * GIB if memory_gib else None
    assert hardware.apple_bandwidth_gbps(chip, cores, memory) == expected


def test_bin_basis_is_reported():
    assert hardware.apple_bandwidth("Apple M4 Max", 40).basis == "gpu cores"
    assert hardware.apple_bandwidth("Apple M4 Max", None, 48 * GIB).basis == "memory size"
    unknown = hardware.apple_bandwidth("Apple M4 Max")
    assert unknown.basis == "lowest bin" and unknown.note
    assert hardware.apple_bandwidth("Apple M2 Max").basis == "name" and hardware.apple_bandwidth("M2 Max").note is None


def test_detected_mac_reads_its_gpu_cores(monkeypatch):
    fake_mac(
        monkeypatch,
        "arm64",
        {"machdep.cpu.brand_string": "Apple M4 Max", "hw.memsize": str(36 * GIB), "iogpu.wired_limit_mb": "0"},
        ioreg='+-o AGXAcceleratorG16X  <class AGXAcceleratorG16X>\n    "gpu-core-count" = 40\n',
    )
    hw = hardware.detect()
    assert hw.gpu_cores == 40 and hw.memory_bandwidth_gbps == 546
    assert "40-core GPU" in hw.memory_bandwidth_source


def test_detected_mac_without_ioreg_goes_by_memory(monkeypatch):
    answers = {"machdep.cpu.brand_string": "Apple M3 Max", "hw.memsize": str(64 * GIB), "iogpu.wired_limit_mb": "0"}
    fake_mac(monkeypatch, "arm64", answers)
    hw = hardware.detect()
    assert hw.gpu_cores is None and hw.memory_bandwidth_gbps == 400
    answers["hw.memsize"] = str(96 * GIB)
    hw = hardware.detect()
    assert hw.memory_bandwidth_gbps == 300
    assert any("lowest-bandwidth bin" in n for n in hw.notes)


def test_described_mac_bins():
    assert hardware.hardware_profile("apple", memory_gb=64, chip="M4 Max").memory_bandwidth_gbps == 546
    binned = hardware.hardware_profile("apple", memory_gb=36, chip="M4 Max 32-core GPU")
    assert binned.gpu_cores == 32 and binned.memory_bandwidth_gbps == 410
    assert hardware.hardware_profile("apple", memory_gb=128, chip="M5 Max").memory_bandwidth_gbps == 614
    assert hardware.hardware_profile("apple", memory_gb=32, chip="M5").memory_bandwidth_gbps == 153


def test_every_figure_has_a_source_and_the_docs_table_lists_it():
    doc = (ROOT / "docs" / "hardware-fit.md").read_text(encoding="utf-8")
    for table in (catalog.APPLE_BANDWIDTH, catalog.NVIDIA_BANDWIDTH, catalog.AMD_BANDWIDTH):
        for row in table:
            assert row.source.strip(), row
    for row in catalog.APPLE_BANDWIDTH + catalog.AMD_BANDWIDTH:
        # One docs row per chip configuration: "| M4 Max | 40 | 48, 64, 128 | 546 | source |".
        pattern = rf"\|\s*{re.escape(row.name)}\s*\|[^\n]*\|\s*{row.gbps:g}\s*\|"
        assert re.search(pattern, doc), f"docs/hardware-fit.md lacks {row.name} at {row.gbps:g} GB/s"


def test_doctor_report_and_json_on_a_rosetta_python(monkeypatch):
    fake_mac(
        monkeypatch,
        "x86_64",
        {"sysctl.proc_translated": "1", "hw.memsize": str(32 * GIB), "machdep.cpu.brand_string": "VirtualApple"},
    )
    report = io.StringIO()
    doctor.run(out=report)
    text = report.getvalue()
    assert "Python under Rosetta 2 on Apple Silicon" in text and "Install an arm64 Python" in text
    assert "no NVIDIA GPU found" not in text
    data = io.StringIO()
    doctor.run(json_output=True, out=data)
    hw = json.loads(data.getvalue())["hardware"]
    assert hw["mac"] == "rosetta" and hw["platform"] == "cpu" and "arm64" in hw["advice"][0]
