"""`qwenocr doctor` as a user runs it: a real subprocess, its stdout, its exit code."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwenocr.errors import ExitCode

HEAVY = ("mlx", "mlx_vlm", "llama_cpp", "torch", "transformers")


def qwenocr_command():
    script = Path(sys.executable).with_name("qwenocr")
    return [str(script)] if script.exists() else [sys.executable, "-m", "qwenocr"]


def run(*args, timeout=120):
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    return subprocess.run(
        qwenocr_command() + list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def run_json(*args):
    done = run("doctor", "--json", *args)
    # stdout holds one JSON object and nothing else.
    data = json.loads(done.stdout)
    assert data["exit_code"] == done.returncode, done.stderr
    return done, data


# --- this machine ------------------------------------------------------------------------------


def test_doctor_on_this_machine():
    done = run("doctor")
    assert done.returncode in (ExitCode.OK, ExitCode.NOTHING_FITS, ExitCode.ENGINE_MISSING), done.stderr
    out = done.stdout
    assert "Hardware" in out and "Every variant" in out and "Choice" in out and "Engine" in out
    for variant in ("0.8B", "9B", "27B", "35B-A3B", "122B-A10B", "397B-A17B"):
        assert variant in out
    assert done.stderr == ""


def test_doctor_json_on_this_machine():
    done, data = run_json()
    assert done.stderr == ""
    assert data["what_if"] is False
    hw = data["hardware"]
    assert hw["platform"] in ("apple", "cuda", "amd", "cpu")
    if hw["platform"] == "cpu":
        assert hw["ram_total_bytes"] > 0 and hw["cpu_cores"] >= 1
    assert len(data["candidates"]) == 24
    for c in data["candidates"]:
        assert {"variant", "quant", "bits", "backend", "estimate_gb", "fits", "reason"} <= set(c)
        assert c["bits"] in (4, 8, 16)
        assert c["backend"] in ("mlx", "llama.cpp")
    engine = data["engine"]
    expected_backend = "mlx" if hw["platform"] == "apple" else "llama.cpp"
    assert engine["backend"] == expected_backend
    module = "mlx_vlm" if expected_backend == "mlx" else "llama_cpp"
    assert engine["installed"] == (importlib.util.find_spec(module) is not None)
    assert engine["install_command"]
    if data["choice"] is None:
        assert done.returncode == ExitCode.NOTHING_FITS
    else:
        choice = data["choice"]
        assert {"variant", "quant", "bits", "backend", "repo", "files"} <= set(choice)
        assert choice["backend"] == expected_backend
        # A GPU plan with a llama-cpp-python built without GPU offload is "missing" too.
        expected = ExitCode.OK if engine["installed"] and engine.get("ready", True) else ExitCode.ENGINE_MISSING
        assert done.returncode == (expected if choice["fits"] else ExitCode.NOTHING_FITS)


# --- what-if ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, variant, quant, backend",
    [
        (["--platform", "apple", "--memory", "256", "--chip", "M3 Ultra"], "397B-A17B", "MXFP4", "mlx"),
        (["--platform", "cuda", "--vram", "24"], "27B", "Q4_K_XL", "llama.cpp"),
        (["--platform", "cuda", "--vram", "48"], "35B-A3B", None, "llama.cpp"),
        (["--platform", "cuda", "--vram", "48,48"], "122B-A10B", None, "llama.cpp"),
        (["--vram", "80,80,80,80,80,80,80,80"], "397B-A17B", None, "llama.cpp"),
        (["--platform", "cpu", "--memory", "24"], "9B", "Q4_K_XL", "llama.cpp"),
    ],
)
def test_what_if(args, variant, quant, backend):
    done, data = run_json(*args)
    assert done.returncode == ExitCode.OK, done.stderr  # engines aren't checked for a described machine
    assert data["what_if"] is True
    assert data["engine"]["installed"] is None
    choice = data["choice"]
    assert (choice["variant"], choice["backend"]) == (variant, backend)
    if quant:
        assert choice["quant"] == quant
    assert choice["repo"] and choice["files"]


def test_what_if_apple_256_gives_the_sysctl_line():
    done, data = run_json("--platform", "apple", "--memory", "256")
    mb = data["choice"]["needs_wired_limit_mb"]
    assert mb and any(f"sudo sysctl iogpu.wired_limit_mb={mb}" in a for a in data["advice"])
    text = run("doctor", "--platform", "apple", "--memory", "256").stdout
    assert f"sudo sysctl iogpu.wired_limit_mb={mb}" in text
    # No hub repo has 397B MXFP4 with its vision tower (FACTS §9): the report offers the
    # conversion, not a repo name built from a pattern.
    assert "mlx-community/Qwen3.5-397B-A17B-mxfp4" not in text
    assert "qwenocr models convert Qwen/Qwen3.5-397B-A17B --quant mxfp4" in text


def test_what_if_cuda_report_names_the_install_command():
    text = run("doctor", "--platform", "cuda", "--vram", "24").stdout
    assert 'CMAKE_ARGS="-DGGML_CUDA=on" pip install llama-cpp-python' in text
    assert "Qwen3.5-27B-UD-Q4_K_XL.gguf" in text and "mmproj-F16.gguf" in text


def test_nothing_fits_exits_5():
    done, data = run_json("--platform", "cpu", "--memory", "3")
    assert done.returncode == ExitCode.NOTHING_FITS
    assert data["choice"] is None and data["fits"] is False
    assert all(not c["fits"] for c in data["candidates"])
    assert run("doctor", "--platform", "cpu", "--memory", "3").returncode == ExitCode.NOTHING_FITS


def test_overrides():
    done, data = run_json("--platform", "cuda", "--vram", "24", "--variant", "9B", "--quant", "8bit")
    assert (data["choice"]["variant"], data["choice"]["quant"]) == ("9B", "Q8_0")
    assert done.returncode == ExitCode.OK
    done, data = run_json("--platform", "cuda", "--vram", "24", "--variant", "397B-A17B")
    assert data["choice"]["variant"] == "397B-A17B" and data["choice"]["fits"] is False
    assert done.returncode == ExitCode.NOTHING_FITS
    done, data = run_json("--platform", "cpu", "--memory", "32", "--backend", "mlx")
    assert data["choice"]["backend"] == "mlx" and data["choice"]["quant"] == "MXFP4"
    assert data["engine"]["install_command"] == 'pip install "mlx[cpu]" mlx-vlm'


def test_max_image_tokens_changes_the_estimate():
    _, small = run_json("--platform", "cuda", "--vram", "24", "--max-image-tokens", "1024")
    _, large = run_json("--platform", "cuda", "--vram", "24", "--max-image-tokens", "4096")
    assert small["settings"]["max_image_tokens"] == 1024
    assert large["candidates"][0]["estimate_gb"] > small["candidates"][0]["estimate_gb"]


@pytest.mark.parametrize(
    "args",
    [
        ["--platform", "amiga", "--memory", "8"],
        ["--memory", "24"],
        ["--platform", "apple"],
        ["--vram", "lots"],
        ["--platform", "cuda", "--vram", "24", "--variant", "7B"],
        ["--platform", "cuda", "--vram", "24", "--backend", "mlx", "--quant", "Q8_0"],
    ],
)
def test_usage_errors(args):
    done = run("doctor", *args)
    assert done.returncode == ExitCode.USAGE
    assert done.stdout == ""
    assert "qwenocr: error:" in done.stderr


# --- imports ----------------------------------------------------------------------------------------

PROBE = r"""
import json, runpy, sys
report = sys.argv[1]
sys.argv = ["qwenocr"] + sys.argv[2:]
try:
    runpy.run_module("qwenocr", run_name="__main__")
except SystemExit:
    pass
finally:
    heavy = sorted({name.split(".")[0] for name in sys.modules if name.split(".")[0] in %r})
    with open(report, "w") as handle:
        json.dump(heavy, handle)
""" % (HEAVY,)


@pytest.mark.parametrize(
    "args", [["--help"], ["doctor"], ["doctor", "--json"], ["doctor", "--platform", "apple", "--memory", "256"]]
)
def test_no_heavy_imports(args, tmp_path):
    report = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(report)] + args,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert report.exists(), done.stderr
    assert json.loads(report.read_text()) == [], f"`qwenocr {' '.join(args)}` imported heavy modules"
