"""Which model a scan loads (qwenocr/scan/model_choice.py): the memory checks before any
download or load, and `--model` paths, without engines or the network."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from qwenocr.errors import InsufficientMemoryError
from qwenocr.fit.hardware import GIB, hardware_profile
from qwenocr.fit.plan import make_plan, wired_limit_command
from qwenocr.scan import model_choice
from qwenocr.scan.request import ScanRequest
from qwenocr.store.resolve import resolve_local


def test_a_plan_that_needs_the_wired_limit_is_refused_with_its_sysctl_line():
    hardware = hardware_profile("apple", 256, chip="M3 Ultra")
    plan = make_plan(hardware)
    assert plan.needs_wired_limit_mb
    with pytest.raises(InsufficientMemoryError) as caught:
        model_choice.check_plan(plan, hardware, ScanRequest(inputs=[]))
    assert f"run `{wired_limit_command(plan.needs_wired_limit_mb)}` (until reboot)" in (caught.value.hint or "")


def test_a_forced_pick_that_does_not_fit_names_what_would():
    hardware = hardware_profile("cpu", 16)
    request = ScanRequest(inputs=[], variant="27B")
    plan = make_plan(hardware, variant="27B")
    assert not plan.fits
    default = make_plan(hardware)
    with pytest.raises(InsufficientMemoryError) as caught:
        model_choice.check_plan(plan, hardware, request)
    assert caught.value.hint == f"--variant {default.variant} --quant {default.quant} fits now; --force loads it anyway"


def _sparse(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)


def test_a_split_local_gguf_counts_every_shard_against_free_memory(tmp_path, monkeypatch):
    import psutil

    for i in (1, 2, 3):
        _sparse(tmp_path / "Q4_K_M" / f"m-Q4_K_M-0000{i}-of-00003.gguf", 2 * GIB)
    _sparse(tmp_path / "mmproj-F16.gguf", 1000)
    model = resolve_local(str(tmp_path))
    assert model is not None and model.path.name == "m-Q4_K_M-00001-of-00003.gguf"
    assert model.mmproj is not None and model.mmproj.name == "mmproj-F16.gguf"
    # Enough for the first shard, not for all three.
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=5 * GIB))
    request = ScanRequest(inputs=["doc.pdf"])  # the check counts its context too: none here, the files have no header
    with pytest.raises(InsufficientMemoryError) as caught:
        model_choice._check_local_model_fits(model, request)
    assert f"{(6 * GIB + 1000 + GIB) / 1e9:.1f} GB" in caught.value.message
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=8 * GIB))
    model_choice._check_local_model_fits(model, request)


def test_a_local_mlx_folder_is_recognised_by_its_required_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    _sparse(tmp_path / "model.safetensors", 10)
    model = resolve_local(str(tmp_path))
    assert model is not None and model.backend == "mlx" and model.mmproj is None


@pytest.mark.parametrize("model", ["/nonexistent", "./a/b", "../x", "/a", "org/", "a/b/c"])
def test_a_missing_path_is_not_taken_for_a_repo_id(tmp_path, model):
    """`--model /nonexistent` once reached the hub client as a repo id (internal error, exit 1)."""
    from tests.support.clirun import run_cli
    from tests.support.samples import write_pdf

    proc = run_cli("scan", write_pdf(tmp_path / "doc.pdf", pages=1), "--model", model, "--offline")
    stderr = proc.stderr.decode()
    assert proc.returncode == 2, stderr
    assert "no such file or directory, and not a Hugging Face repo id" in stderr
    assert "internal error" not in stderr


def test_each_page_of_a_batch_has_its_own_context_in_the_memory_check(tiny_models, monkeypatch):
    """`--batch N` gives llama.cpp N sequences, each with the whole context: the check
    for --model PATH counts N KV caches and recurrent states, the plan's estimate too."""
    import psutil

    from qwenocr.fit import plan as planmod

    model = resolve_local(str(tiny_models.dense_gguf))
    assert model is not None
    model = replace(model, mmproj=Path(tiny_models.dense_mmproj))
    one = ScanRequest(inputs=["doc.pdf"], n_ctx=262_144)
    shape = model_choice._gguf_context_shape(model.path)
    assert shape is not None
    files = model.path.stat().st_size + model.mmproj.stat().st_size
    context = shape.bytes_for(262_144)
    # Room for one page's context and the margin, not for eight.
    room = files + context + GIB + context // 2
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=room))
    model_choice._check_local_model_fits(model, one)
    with pytest.raises(InsufficientMemoryError):
        model_choice._check_local_model_fits(model, replace(one, batch=8))
    # The plan's estimate: a KV cache and state per page, for llama.cpp and MLX alike.
    single = planmod.estimate("9B", 4, backend="llama.cpp")
    four = planmod.estimate("9B", 4, backend="llama.cpp", batch=4)
    assert four.kv_gb == pytest.approx(4 * single.kv_gb, abs=0.03)
    # Prefill is one page at a time: one page's activations, plus a logits row per page.
    assert four.activations_gb == pytest.approx(single.activations_gb, abs=0.011)
    mlx_four = planmod.estimate("9B", 4, backend="mlx", batch=4).kv_gb
    assert mlx_four == pytest.approx(4 * planmod.estimate("9B", 4, backend="mlx").kv_gb, abs=0.03)
