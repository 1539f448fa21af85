"""benchmarks/real_shapes_gguf.py writes GGUFs that llama.cpp loads, shaped as its converter shapes them.

The 9B and 27B real-dimension checkpoints for the GPU benchmarks are written tensor by
tensor from the config (no HF model, no converter). Here the same code writes the tiny
test checkpoint's dimensions: its tensor list must equal the converter-made tiny GGUF's
(names, shapes, types; model and mmproj), and the written files, F16 and Q8_0, must load
in llama.cpp and read a page through the CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import samples
from tests.support.clirun import run_cli

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "real_shapes_gguf.py"


def script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_tensors_match_the_converters(tiny_models):
    done = script(
        "check", "--variant", "tiny", "--quant", "F16",
        "--against", str(tiny_models.dense_gguf), "--against-mmproj", str(tiny_models.dense_mmproj),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 differences" in done.stderr


def test_a_wrong_shape_is_reported(tiny_models):
    done = script("check", "--variant", "0.8B", "--quant", "F16", "--against", str(tiny_models.dense_gguf))
    assert done.returncode == 1
    assert "token_embd.weight: here ((1024, 248320), 'F16'), converter ((64, 248320), 'F16')" in done.stdout


@pytest.fixture(scope="module")
def template(tiny_models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("template")
    done = script(
        "template", "--model", str(tiny_models.dense_gguf), "--mmproj", str(tiny_models.dense_mmproj), "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("quant", ["F16", "Q8_0"])
def test_written_checkpoint_reads_a_page(template, tmp_path, quant):
    done = script(
        "write", "--variant", "tiny", "--quant", quant, "--template", str(template), "--out", str(tmp_path / "m")
    )
    assert done.returncode == 0, done.stderr
    written = json.loads(done.stdout)
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=1)
    scan = run_cli(
        "scan", str(pdf), "--model", written["gguf"], "--mmproj", written["mmproj"],
        "--max-tokens", "16", "--format", "json", "--batch", "1",
    )  # fmt: skip
    assert scan.returncode == 0, scan.stderr
    page = json.loads(scan.stdout)["pages"][0]
    assert page["status"] in ("ok", "truncated")
    assert page["output_tokens"] > 0
