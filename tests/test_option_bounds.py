"""Numeric options are bounded, and the memory check counts the context asked for.

`--max-tokens 2000000000` or `--n-ctx 99999999999` used to reach llama.cpp, which sized
its KV cache for them and was OOM-killed. Now the options have maxima (a usage error,
exit 2, from a flag, a QWENOCR_* variable or the config file alike), and the check
before loading counts the KV cache and recurrent state of the context the engine will
get, also for `--model PATH`: a context that can't fit is exit 9 in one line that says
what to lower, before anything loads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenocr.errors import ExitCode
from tests.support.clirun import run_cli
from tests.support.samples import write_pdf

TOO_MUCH = [
    (["--max-tokens", "2000000000"], "--max-tokens"),
    (["--max-tokens", "262145"], "--max-tokens"),
    (["--n-ctx", "99999999999"], "--n-ctx"),
    (["--n-ctx", "262145"], "--n-ctx"),
    (["--max-image-tokens", "2000000000"], "--max-image-tokens"),
    (["--seed", str(2**64)], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--page-timeout", "1e300"], "--page-timeout"),
    (["--render-timeout", "1e300"], "--render-timeout"),
]


@pytest.mark.parametrize("args, option", TOO_MUCH, ids=[" ".join(a) for a, _ in TOO_MUCH])
def test_an_out_of_range_flag_is_a_usage_error(tmp_path: Path, args, option) -> None:
    pdf = write_pdf(tmp_path / "doc.pdf", pages=1)
    proc = run_cli("scan", pdf, "--mode", "text", *args)  # text: no model, so only the bound can fail
    stderr = proc.stderr.decode()
    assert proc.returncode == ExitCode.USAGE, stderr
    assert option in stderr and "range" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("args", [["--max-output-tokens", "262145"], ["--max-image-tokens", "16385"]])
def test_doctor_bounds_its_budgets_too(args) -> None:
    proc = run_cli("doctor", *args)
    stderr = proc.stderr.decode()
    assert proc.returncode == ExitCode.USAGE, stderr
    assert args[0] in stderr and "range" in stderr


@pytest.mark.parametrize(
    "variable, value",
    [("QWENOCR_MAX_TOKENS", "2000000000"), ("QWENOCR_N_CTX", "99999999999"), ("QWENOCR_SEED", "-5")],
)
def test_an_out_of_range_variable_is_a_usage_error(tmp_path: Path, variable: str, value: str) -> None:
    pdf = write_pdf(tmp_path / "doc.pdf", pages=1)
    proc = run_cli("scan", pdf, "--mode", "text", env={variable: value})
    stderr = proc.stderr.decode()
    assert proc.returncode == ExitCode.USAGE, stderr
    assert len(stderr.strip().splitlines()) == 1
    assert f"{variable}={value!r}" in stderr and "range" in stderr


@pytest.mark.parametrize("key, value", [("max_tokens", 2_000_000_000), ("n_ctx", 99_999_999_999)])
def test_an_out_of_range_config_value_is_a_usage_error(tmp_path: Path, key: str, value: int) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[scan]\n{key} = {value}\n")
    pdf = write_pdf(tmp_path / "doc.pdf", pages=1)
    proc = run_cli("scan", pdf, "--mode", "text", env={"QWENOCR_CONFIG": str(config)})
    stderr = proc.stderr.decode()
    assert proc.returncode == ExitCode.USAGE, stderr
    assert len(stderr.strip().splitlines()) == 1
    assert f"{key} = {value}" in stderr and "range" in stderr


def test_the_largest_values_are_accepted(tmp_path: Path) -> None:
    """The maxima themselves pass the options (--mode text runs no model)."""
    pdf = write_pdf(tmp_path / "doc.pdf", pages=1)
    proc = run_cli(
        "scan", pdf, "--mode", "text", "--max-tokens", "262144", "--n-ctx", "262144", "--seed", str(2**32 - 1)
    )
    assert proc.returncode in (ExitCode.OK, ExitCode.PARTIAL), proc.stderr.decode()


def test_the_bounds_agree_with_the_model_facts(tiny_models) -> None:
    """The CLI's literal (it imports no room when it starts) is Qwen 3.5's context, and
    the tiny GGUF, converted like the real ones, says the same."""
    from qwenocr.cli.options import MAX_CONTEXT_TOKENS
    from qwenocr.fit.plan import NATIVE_CONTEXT_TOKENS
    from qwenocr.store.inspect import gguf_metadata

    assert MAX_CONTEXT_TOKENS == NATIVE_CONTEXT_TOKENS == 262_144
    assert gguf_metadata(tiny_models.dense_gguf)["qwen35.context_length"] == NATIVE_CONTEXT_TOKENS


# -- the memory check counts the context ---------------------------------------------------

# KV heads the patched GGUF claims: 16,384 x (64 + 64) x 2 B = 4 MiB of KV cache per token
# in its one full-attention layer, so 262,144 tokens would be 1 TiB: no machine has that.
_HUGE_KV_HEADS = 16_384


def _gguf_with_a_huge_kv_cache(source: Path, tmp_path: Path) -> Path:
    """The tiny GGUF, its header claiming many KV heads (same size: a u32 in place)."""
    data = bytearray(source.read_bytes())
    key = b"qwen35.attention.head_count_kv"
    at = data.index(key) + len(key)
    assert int.from_bytes(data[at : at + 4], "little") == 4  # value type: u32
    data[at + 4 : at + 8] = _HUGE_KV_HEADS.to_bytes(4, "little")
    patched = tmp_path / "Qwen3.5-Tiny-F16.gguf"
    patched.write_bytes(bytes(data))
    return patched


@pytest.mark.parametrize(
    "args, lower",
    [(["--n-ctx", "262144"], "--n-ctx"), (["--max-tokens", "262144"], "--max-tokens")],
    ids=["n-ctx", "max-tokens"],
)
def test_a_context_too_large_for_memory_is_refused_before_loading(tiny_models, tmp_path: Path, args, lower) -> None:
    model = _gguf_with_a_huge_kv_cache(tiny_models.dense_gguf, tmp_path)
    pdf = write_pdf(tmp_path / "doc.pdf", pages=1)
    proc = run_cli("scan", pdf, "--model", model, "--mmproj", tiny_models.dense_mmproj, *args)
    stderr = proc.stderr.decode()
    # Exit 9, not a load (this header would make llama.cpp try to allocate 1 TiB).
    assert proc.returncode == ExitCode.INSUFFICIENT_MEMORY, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "262,144-token context" in lines[0]
    assert f"lower {lower}" in lines[0]
    assert proc.stdout == b""


def test_the_check_counts_kv_cache_and_recurrent_state(tiny_models, tmp_path: Path) -> None:
    """What the check adds for the tiny model: its one full-attention layer's KV per
    token, and the three DeltaNet layers' fixed state (from the GGUF's metadata)."""
    from qwenocr.scan.model_choice import _gguf_context_shape, _mlx_context_shape

    shape = _gguf_context_shape(tiny_models.dense_gguf)
    assert shape is not None
    assert shape.kv_bytes_per_token == 1 * 1 * (64 + 64) * 2  # layers x KV heads x (K + V) x 2 B
    # per DeltaNet layer: state 32 x 64 fp32, conv (4 - 1) x (64 + 2 x 2 x 32) fp32
    assert shape.state_bytes == 3 * (32 * 64 + 3 * (64 + 2 * 2 * 32)) * 4
    assert shape.bytes_for(262_144) == 256 * 262_144 + shape.state_bytes
    patched = _gguf_context_shape(_gguf_with_a_huge_kv_cache(tiny_models.dense_gguf, tmp_path))
    assert patched is not None and patched.kv_bytes_per_token == _HUGE_KV_HEADS * 128 * 2
    assert _mlx_context_shape(tiny_models.dense_mlx) == shape  # the same model, as MLX sees it
    assert _gguf_context_shape(tiny_models.dense_mmproj) is None  # a projector has no context


def test_the_plan_counts_an_n_ctx(tmp_path: Path) -> None:
    """With a plan, --n-ctx sizes the plan's KV cache (llama.cpp allocates it all)."""
    from qwenocr.fit.catalog import deltanet_state_bytes_per_layer
    from qwenocr.fit.plan import NATIVE_CONTEXT_TOKENS, estimate

    usual = estimate("9B", 4)
    large = estimate("9B", 4, n_ctx=NATIVE_CONTEXT_TOKENS)
    # 9B: 8 full-attention layers x 2 x 4 KV heads x 256 x 2 B = 32 KiB per token, and
    # the 24 Gated DeltaNet layers' state of 32 value heads.
    state = 24 * deltanet_state_bytes_per_layer(32)
    assert large.kv_gb == pytest.approx((32 * 1024 * NATIVE_CONTEXT_TOKENS + state) / 1e9, abs=0.01)
    assert large.kv_gb > usual.kv_gb * 25
    assert estimate("9B", 4, backend="mlx", n_ctx=NATIVE_CONTEXT_TOKENS).kv_gb == estimate("9B", 4, backend="mlx").kv_gb


def test_a_plan_that_fits_only_at_the_usual_context_names_the_context() -> None:
    """With a plan, a context nothing fits with, where the default budgets fit: exit 9
    naming the context and what to lower, not "nothing fits"."""
    from qwenocr.errors import InsufficientMemoryError
    from qwenocr.fit.hardware import Hardware
    from qwenocr.scan.model_choice import _plan, check_plan
    from qwenocr.scan.request import ScanRequest

    hardware = Hardware(platform="cpu", os="Linux x86_64", ram_total_bytes=8 * 2**30, ram_available_bytes=4 * 2**30)
    usual = ScanRequest(inputs=["doc.pdf"], backend="llama.cpp")
    check_plan(_plan(hardware, usual, variant=None, quant=None), hardware, usual)  # fits: no error
    large = ScanRequest(inputs=["doc.pdf"], backend="llama.cpp", n_ctx=262_144)
    with pytest.raises(InsufficientMemoryError) as raised:
        check_plan(_plan(hardware, large, variant=None, quant=None), hardware, large)
    line = raised.value.one_line()
    assert "262,144-token context" in line and "lower --n-ctx" in line and "fits with the default budgets" in line
