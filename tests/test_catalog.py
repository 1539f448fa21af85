"""The memory table as data: its sources, its model file names, and the generated doc."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qwenocr.fit import catalog, sources
from scripts import memory_table

ROOT = Path(__file__).resolve().parent.parent


def test_committed_memory_table_is_generated_from_the_catalog():
    committed = (ROOT / "docs" / "memory-table.md").read_text(encoding="utf-8")
    assert committed == memory_table.markdown(), (
        "docs/memory-table.md is stale: python scripts/memory_table.py > docs/memory-table.md"
    )


def test_module_prints_the_markdown():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "memory_table.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out == memory_table.markdown()


def test_eight_variants_three_precisions_each_with_a_source():
    assert catalog.variant_names() == ["0.8B", "2B", "4B", "9B", "27B", "35B-A3B", "122B-A10B", "397B-A17B"]
    for v in catalog.VARIANTS:
        assert set(v.weights) == {4, 8, 16}
        assert v.weights_gb(4) < v.weights_gb(8) < v.weights_gb(16)
        for w in v.weights.values():
            assert w.source


@pytest.mark.parametrize(
    "name, bf16, q8, q4",
    [("27B", 54, 30, 17), ("35B-A3B", 70, 38, 22), ("122B-A10B", 245, 132, 70), ("397B-A17B", 810, 512, 214)],
)
def test_large_rows_come_from_seed_000(name, bf16, q8, q4):
    v = catalog.get_variant(name)
    assert (v.weights_gb(16), v.weights_gb(8), v.weights_gb(4)) == (bf16, q8, q4)
    assert all(w.source.startswith("seed 000") for w in v.weights.values())
    assert v.min_recommended


@pytest.mark.parametrize("name, bf16, q4", [("0.8B", 1.6, 0.5), ("2B", 4, 1.5), ("4B", 8, 3), ("9B", 18, 6)])
def test_small_rows_come_from_seed_001_and_8bit_is_derived(name, bf16, q4):
    v = catalog.get_variant(name)
    assert (v.weights_gb(16), v.weights_gb(4)) == (bf16, q4)
    assert v.weights[16].source.startswith("seed 001") and v.weights[4].source.startswith("seed 001")
    assert v.weights[8].source.startswith("derived")
    assert v.weights_gb(8) == pytest.approx(bf16 * 8.5 / 16, abs=0.01)


def test_seed_disagreements_are_recorded():
    assert "seed 001 says 220" in catalog.get_variant("397B-A17B").weights[4].source
    assert "seed 001 says 16" in catalog.get_variant("27B").weights[4].source


def test_kv_and_vision_figures():
    sizes = {v.name: v.kv_bytes_per_token // 1024 for v in catalog.VARIANTS}
    assert sizes["9B"] == 32 and sizes["35B-A3B"] == 20  # FACTS §1
    for v in catalog.VARIANTS:
        assert v.full_attention_layers * 4 == v.layers
        assert 0.15 <= v.vision_gb <= 0.95  # FACTS §2: mmproj 0.2-0.9 GB


def test_variant_names_are_forgiving():
    assert catalog.get_variant("27b").name == "27B"
    assert catalog.get_variant("Qwen3.5-35B-A3B").name == "35B-A3B"
    assert catalog.get_variant("35B").name == "35B-A3B"
    assert catalog.get_variant("qwen/qwen3.5-397b-a17b").name == "397B-A17B"
    with pytest.raises(KeyError):
        catalog.get_variant("7B")


@pytest.mark.parametrize(
    "text, backend, bits",
    [
        ("Q4_K_XL", "llama.cpp", 4),
        ("UD-Q4_K_XL", "llama.cpp", 4),
        ("q8_0", "llama.cpp", 8),
        ("MXFP4", "mlx", 4),
        ("4bit", None, 4),
        ("8bit", None, 8),
        ("bf16", None, 16),
        ("BF16", None, 16),
    ],
)
def test_parse_quant(text, backend, bits):
    assert catalog.parse_quant(text) == (backend, bits)


def test_gguf_sources():
    # model_source moved to fit/sources.py (it reads the candidate data there).
    s = sources.model_source("9B", 4, "llama.cpp")
    assert s.repo == "unsloth/Qwen3.5-9B-GGUF"
    assert s.files == ["Qwen3.5-9B-UD-Q4_K_XL.gguf", "mmproj-F16.gguf"]
    assert s.mmproj == "mmproj-F16.gguf" and not s.split
    assert sources.model_source("9B", 8, "llama.cpp").model == "Qwen3.5-9B-Q8_0.gguf"
    assert sources.model_source("9B", 16, "llama.cpp").model == "Qwen3.5-9B-BF16.gguf"
    big = sources.model_source("397B-A17B", 4, "llama.cpp")
    assert big.model == "UD-Q4_K_XL/Qwen3.5-397B-A17B-UD-Q4_K_XL-*.gguf" and big.split
    assert big.download_gb == pytest.approx(214 + catalog.get_variant("397B-A17B").vision_gb, abs=0.1)


def test_mlx_sources():
    # 27B at 4-bit: no MXFP4 repo with the vision tower is known (FACTS §9), so the source
    # is a local conversion of the official weights, not a name built from a pattern.
    s = sources.model_source("27B", 4, "mlx")
    assert s.kind == "convert" and s.repo == "Qwen/Qwen3.5-27B"
    for bits, mode in ((8, "8bit"), (16, "bf16")):
        s = sources.model_source("27B", bits, "mlx")
        assert s.kind == "hub" and s.repo == f"mlx-community/Qwen3.5-27B-{mode}"
        assert s.mmproj is None and "*.safetensors" in s.files
    with pytest.raises(ValueError):
        sources.model_source("27B", 4, "vllm")


def test_mlx_table_figure_holds_the_vision_tower_at_4bit():
    # FACTS §9: mlx 9B-4bit is 5.97 GB with its vision tower; the table says 6.
    v = catalog.get_variant("9B")
    assert v.mlx_gb(4) == v.weights_gb(4) == 6
    assert v.mlx_gb(8) == pytest.approx(v.weights_gb(8) + v.vision_gb, abs=0.01)
