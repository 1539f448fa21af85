"""The fitted activation terms (fit/vision_memory.py) and their place in the estimate.

The points in `vision_memory.MEASURED` were measured with benchmarks/bench_fit_memory.py
(docs/memory-measurements.md); the formula must reproduce each within 15 % (the #13
target), grow with the image, and show up in `doctor --json` as two fields that add up
into `total_gb`. No benchmark runs here: the measurements are data.
"""

from __future__ import annotations

import json

import pytest

from qwenocr.fit import catalog, vision_memory
from qwenocr.fit import plan as planmod
from tests.support.clirun import run_cli

BUDGETS = (512, 1024, 1536, 2048, 4096)


@pytest.mark.parametrize("point", sorted(vision_memory.MEASURED), ids=str)
def test_measured_points_are_reproduced_within_15_percent(point):
    (_depth, width, intermediate, heads), flash_attn, tokens = point
    measured_gb = vision_memory.MEASURED[point]
    estimated_gb = (
        vision_memory.vision_activation_bytes(width, intermediate, heads, tokens, "llama.cpp", flash_attn) / 1e9
    )
    assert estimated_gb == pytest.approx(measured_gb, rel=0.15)


@pytest.mark.parametrize("engine, flash_attn", [("llama.cpp", False), ("llama.cpp", True), ("mlx", False)])
@pytest.mark.parametrize("tower", [vision_memory.TOWER_0_8B, vision_memory.TOWER_4B, vision_memory.TOWER_9B])
def test_vision_term_grows_with_the_image(engine, flash_attn, tower):
    _depth, width, intermediate, heads = tower
    values = [vision_memory.vision_activation_bytes(width, intermediate, heads, t, engine, flash_attn) for t in BUDGETS]
    assert all(a < b for a, b in zip(values[:-1], values[1:], strict=True))


def test_flash_attention_removes_the_square_term():
    _depth, width, intermediate, heads = vision_memory.TOWER_9B
    without = vision_memory.vision_activation_bytes(width, intermediate, heads, 4096, "llama.cpp", False)
    with_fa = vision_memory.vision_activation_bytes(width, intermediate, heads, 4096, "llama.cpp", True)
    assert with_fa < without / 10


def test_catalog_towers_are_the_measured_shapes():
    """The catalog's towers are the ones the measurements used (benchmarks/real_shapes.py)."""
    for name, tower in (
        ("0.8B", vision_memory.TOWER_0_8B),
        ("4B", vision_memory.TOWER_4B),
        ("9B", vision_memory.TOWER_9B),
    ):
        v = catalog.get_variant(name).vision
        assert (v.width, v.intermediate, v.heads) == tower[1:], name


def test_estimate_uses_the_fitted_terms():
    v = catalog.get_variant("9B")
    e = planmod.estimate(v, 4, max_image_tokens=1536, backend="llama.cpp", flash_attn=False)
    vision = vision_memory.vision_activation_bytes(v.vision.width, v.vision.intermediate, v.vision.heads, 1536)
    text = vision_memory.text_activation_bytes(v.hidden_size, 1536)
    assert e.vision_activations_gb == round(vision / 1e9, 2)
    assert e.text_activations_gb == round(text / 1e9, 2)
    assert e.activations_gb == pytest.approx(e.vision_activations_gb + e.text_activations_gb, abs=0.011)
    fa = planmod.estimate(v, 4, max_image_tokens=1536, backend="llama.cpp", flash_attn=True)
    assert fa.vision_activations_gb < e.vision_activations_gb


def test_doctor_json_breakdown_has_both_terms_summing_into_the_total():
    done = run_cli("doctor", "--json", "--platform", "cpu", "--memory", "24")
    data = json.loads(done.stdout)
    breakdowns = [data["choice"]["breakdown"]] + [c["breakdown"] for c in data["candidates"]]
    for b in breakdowns:
        assert b["vision_activations_gb"] > 0 and b["text_activations_gb"] > 0
        parts = (
            b["weights_gb"]
            + b["vision_gb"]
            + b["kv_gb"]
            + b["vision_activations_gb"]
            + b["text_activations_gb"]
            + b["margin_gb"]
        )
        assert b["total_gb"] == pytest.approx(parts, abs=0.011)
        # The prediction and the headroom above it, apart (docs/hardware-fit.md).
        assert b["expected_peak_gb"] == pytest.approx(parts - b["margin_gb"], abs=0.011)
    assert "= peak " in run_cli("doctor", "--platform", "cpu", "--memory", "24").stdout.decode()


@pytest.mark.parametrize("point", sorted(vision_memory.MEASURED_MLX), ids=str)
def test_mlx_formula_reproduces_its_points_on_the_safe_side(point):
    """MLX's vision term against the measured pages (docs/memory-measurements.md): within
    15 %, and never more than 3 % below (a plan must not promise less than was measured)."""
    (_depth, width, intermediate, heads), tokens = point
    estimated_gb = vision_memory.vision_activation_bytes(width, intermediate, heads, tokens, "mlx") / 1e9
    measured_gb = vision_memory.MEASURED_MLX[point]
    assert measured_gb * 0.97 <= estimated_gb <= measured_gb * 1.15
