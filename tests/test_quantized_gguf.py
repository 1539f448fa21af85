"""Quantized GGUFs (Q8_0, Q4_0) through the CLI on this machine, and the AMX safety switch.

llama.cpp built with its AMX backend crashes (SIGSEGV in `ggml_backend_amx_mul_mat`) on
the first image with quantized GGUFs; qwenocr then loads without extra buffer types
(engines/llamacpp_patches.py). The F16 fixtures never take that path, so these tests
quantize the tiny checkpoint with llama.cpp's own quantizer and read a page with each
type, with repacking on (this machine's default) and forced off (QWENOCR_LLAMA_REPACK=0,
what an AMX build gets).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qwenocr.engines import llamacpp_patches
from tests.support import samples
from tests.support.clirun import run_cli

pytestmark = pytest.mark.engine

# llama.cpp's file types (llama_ftype): Q4_0 and Q8_0 need only 32-wide blocks, which the
# tiny model's 64-wide tensors have (the K-quants need 256 and would fall back).
FTYPES = {"Q8_0": 7, "Q4_0": 2}

_QUANTIZE = """
import ctypes, sys
import llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = int(sys.argv[3])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


@pytest.fixture(scope="module")
def quantized(tiny_models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("quantized")
    paths = {}
    for name, ftype in FTYPES.items():
        out = folder / f"Qwen3.5-Tiny-{name}.gguf"
        # In a child: the quantizer logs every tensor to stderr.
        subprocess.run(
            [sys.executable, "-c", _QUANTIZE, str(tiny_models.dense_gguf), str(out), str(ftype)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        paths[name] = out
    return paths


@pytest.mark.parametrize("repack", [None, "0"], ids=["default", "repack-off"])
@pytest.mark.parametrize("quant", sorted(FTYPES))
def test_a_quantized_gguf_reads_a_page(quantized, tiny_models, tmp_path, quant, repack):
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=1, size=(300, 400))
    env = {"QWENOCR_LLAMA_REPACK": repack} if repack else {}
    args = ["--mmproj", tiny_models.dense_mmproj, "--max-tokens", "16", "--max-image-tokens", "64", "-v"]
    proc = run_cli("scan", pdf, "-f", "json", "--model", quantized[quant], *args, env=env)
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    [page] = json.loads(proc.stdout)["pages"]
    assert page["source"] == "model" and page["output_tokens"] > 0
    said = "loading without extra buffer types" in stderr
    assert said == (repack == "0" or "AMX" in _system_info())


def _system_info() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode()


@pytest.mark.parametrize(
    "info, setting, off",
    [
        ("CPU : AVX2 = 1 | AVX512 = 1 | REPACK = 1 |", None, False),
        ("CPU : AVX2 = 1 | AMX_INT8 = 1 | REPACK = 1 |", None, True),  # the crash's condition
        ("CPU : AVX2 = 1 | AMX_INT8 = 1 |", "1", False),  # the user keeps repacking on
        ("CPU : AVX2 = 1 |", "0", True),  # the user turns it off anywhere
        ("CPU : AVX2 = 1 |", "off", True),
    ],
)
def test_when_extra_buffer_types_go_off(info, setting, off):
    assert llamacpp_patches.extra_buffer_types_off(info, setting) is off


def test_the_switch_reaches_the_loaded_model_and_is_undone(quantized, tiny_models, monkeypatch):
    import llama_cpp

    from qwenocr.engines.llamacpp import LlamaCppBackend

    original = llama_cpp.llama_cpp.llama_model_default_params
    monkeypatch.setenv("QWENOCR_LLAMA_REPACK", "0")
    backend = LlamaCppBackend(Path(quantized["Q8_0"]), tiny_models.dense_mmproj, n_ctx=1024)
    try:
        assert backend._llm is not None and backend._llm.model_params.use_extra_bufts is False
    finally:
        backend.close()
    assert llama_cpp.llama_cpp.llama_model_default_params is original
    monkeypatch.setenv("QWENOCR_LLAMA_REPACK", "1")
    backend = LlamaCppBackend(Path(quantized["Q8_0"]), tiny_models.dense_mmproj, n_ctx=1024)
    try:
        assert backend._llm is not None and backend._llm.model_params.use_extra_bufts is True
    finally:
        backend.close()
