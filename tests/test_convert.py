"""`qwenocr models convert` (issue #11, item 4): MXFP4 with the vision tower, made locally.

End to end on the tiny Hugging Face checkpoint, through the real CLI and mlx-vlm on the
CPU: the result loads in mlx-vlm, keeps `vision_tower.*`, says mxfp4 with group size 32,
is registered, and `scan --model` reads a PDF with it. A repo source goes through a hub
server on loopback with the real huggingface_hub client. The disk check, a failed and an
interrupted conversion (nothing left behind), and each refusal's exit code.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from qwenocr.errors import BackendError, ExitCode, OutputError
from qwenocr.store import convert, registry
from qwenocr.store import inspect as model_inspect
from tests.support import clirun, samples
from tests.support.hub_server import HubRepo, hub_server, safetensors_sparse  # noqa: F401 - a fixture
from tests.test_refuse_blind_models import rewrite_safetensors

run_cli = functools.partial(clirun.run_cli, timeout=300)  # mlx-vlm on a 2-core CPU takes a while
FAST = ["--max-tokens", "16", "--max-image-tokens", "64", "--no-resume"]
MXFP4 = convert.QUANTS["mxfp4"]


def _error_line(proc) -> str:
    stderr = proc.stderr.decode()
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("qwenocr: error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def _leftovers(parent: Path):
    return sorted(p.name for p in parent.iterdir() if ".converting-" in p.name)


# -- end to end ---------------------------------------------------------------------------


def test_convert_a_local_checkpoint_then_scan_with_it(tiny_models, tmp_path):
    out = tmp_path / "models" / "tiny-mxfp4"
    proc = run_cli("models", "convert", tiny_models.dense_hf, "--quant", "mxfp4", "-o", out)
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert proc.stdout.decode() == f"{out}\n"  # stdout is the result's path, nothing else
    assert "[INFO]" not in stderr and "quantizing" in stderr  # mlx-vlm's prints became phases
    assert _leftovers(out.parent) == []

    config = json.loads((out / "config.json").read_text())
    assert config["quantization"] == {"group_size": 32, "bits": 4, "mode": "mxfp4"}
    names = model_inspect.weight_names(out) or []
    assert any(n.startswith("vision_tower.") for n in names)
    assert any(n.startswith("language_model.") for n in names)

    import mlx.core as mx
    from mlx_vlm import load

    model, _ = load(str(out), trust_remote_code=False)
    assert model.vision_tower is not None
    weight = model.vision_tower.patch_embed.proj.weight
    assert weight.dtype == mx.bfloat16  # the vision tower is kept, not quantized

    # Registered (this test's QWENOCR_CACHE_DIR is the subprocess's too).
    [entry] = registry.registered()
    assert entry.folder == out.resolve() and entry.quant == "mxfp4"
    assert entry.source == str(tiny_models.dense_hf.resolve())

    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=1, size=(300, 400))
    scan = run_cli("scan", pdf, "--format", "json", "--model", out, *FAST)
    assert scan.returncode == 0, scan.stderr.decode()
    document = json.loads(scan.stdout)
    assert document["model"]["backend"] == "mlx"
    [page] = document["pages"]
    assert page["source"] == "model" and page["output_tokens"] > 0

    # The same command again: already there, nothing converted, the path again.
    again = run_cli("models", "convert", tiny_models.dense_hf, "-o", out)
    assert again.returncode == 0, again.stderr.decode()
    assert again.stdout.decode() == f"{out}\n" and "already" in again.stderr.decode()


def test_a_registered_conversion_is_what_scan_plans_and_loads(tiny_models, tmp_path):
    # The folder's name says which variant it is: the conversion is registered as 3.5 0.8B.
    source = tmp_path / "Qwen3.5-0.8B"
    shutil.copytree(tiny_models.dense_hf, source)
    made = run_cli("models", "convert", source, "--quant", "mxfp4")
    assert made.returncode == 0, made.stderr.decode()
    out = Path(made.stdout.decode().strip())

    # No --model: the plan finds the conversion in the registry (offline: nothing else).
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=1, size=(300, 400))
    scan = run_cli(
        "scan", pdf, "--format", "json", "--backend", "mlx", "--variant", "0.8B", "--quant", "mxfp4", "-v", *FAST
    )
    stderr = scan.stderr.decode()
    assert scan.returncode == 0, stderr
    assert f"from {out} (converted locally)" in stderr
    document = json.loads(scan.stdout)
    assert document["model"] == {"backend": "mlx", "model": str(out)}
    [page] = document["pages"]
    assert page["source"] == "model" and page["output_tokens"] > 0


def test_convert_a_repo_by_variant_and_family_into_the_default_folder(tiny_models, tmp_path, hub_server):  # noqa: F811
    # The tiny checkpoint served as the official Qwen3.6-27B repo (plus a .py file, which
    # must not be fetched: qwenocr never runs code shipped with a model).
    files = {p.name: p.read_bytes() for p in tiny_models.dense_hf.iterdir() if p.is_file()}
    hub_server.add(HubRepo("Qwen/Qwen3.6-27B", {**files, "modeling_evil.py": b"raise SystemExit(1)\n"}))
    proc = run_cli("models", "convert", "27B", "--family", "3.6")
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    expected = registry.models_dir() / "Qwen3.6-27B-mxfp4"
    assert proc.stdout.decode() == f"{expected}\n"
    assert "downloading Qwen/Qwen3.6-27B" in stderr
    assert registry.find_converted("3.6", "27B", "mxfp4") == expected.resolve()
    assert registry.find_converted("3.5", "27B", "mxfp4") is None
    assert model_inspect.inspect_folder(expected).vision is True
    fetched = {
        path.rsplit("/", 1)[-1] for method, path in hub_server.requests if method == "GET" and "/resolve/" in path
    }
    assert "model.safetensors" in fetched and "modeling_evil.py" not in fetched
    # The source went into the standard Hugging Face cache.
    assert list(
        (Path(os.environ["HF_HUB_CACHE"]) / "models--Qwen--Qwen3.6-27B" / "snapshots").glob("*/model.safetensors")
    )


# -- disk -----------------------------------------------------------------------------------


def test_the_disk_check_counts_each_filesystem_and_names_both_numbers(tmp_path):
    free = {1: 10_000_000_000, 2: 50_000_000_000}
    devices = {tmp_path / "cache": 1, tmp_path / "out": 2}
    tmp_path.joinpath("cache").mkdir()
    tmp_path.joinpath("out").mkdir()

    def check(download, result, same_disk):
        device_of = (lambda p: 1) if same_disk else (lambda p: devices[p])
        convert.check_disk(
            [
                convert.DiskNeed("the download", tmp_path / "cache" / "hub", download),
                convert.DiskNeed("the result", tmp_path / "out" / "new" / "deeper", result),
            ],
            disk_usage=lambda p: SimpleNamespace(free=free[device_of(p)]),
            device_of=device_of,
        )

    check(6e9, 3e9, same_disk=True)  # 9 GB of 10
    check(9e9, 40e9, same_disk=False)  # each fits its own disk
    with pytest.raises(OutputError) as caught:
        check(6e9, 5e9, same_disk=True)  # 11 GB of 10: together they don't
    assert "needs 11.00 GB (6.00 GB for the download + 5.00 GB for the result)" in caught.value.message
    assert "has 10.00 GB free" in caught.value.message
    with pytest.raises(OutputError, match="needs 51.00 GB .*has 50.00 GB free"):
        check(1e9, 51e9, same_disk=False)


def test_the_result_estimate_is_the_quantized_language_model_plus_the_vision_tower(tiny_models, tmp_path):
    counts = model_inspect.weight_counts(tiny_models.dense_hf)
    assert counts is not None and counts.vision_params > 0
    estimate = convert.estimate_result_bytes(counts, MXFP4)
    real = model_inspect.weight_counts(tiny_models.dense_mlx)
    assert real is not None
    assert real.total_bytes <= estimate <= 1.15 * real.total_bytes


def test_a_source_too_big_for_the_disk_is_refused_before_downloading(tmp_path, hub_server):  # noqa: F811
    # A repo of 400 TB of weights (a real header, zeros never sent): no disk has that.
    weights = safetensors_sparse(
        {"model.visual.patch_embed.proj.weight": ("BF16", [1152, 3, 2, 16, 16]), "model.x": ("BF16", [200_000, 10**9])}
    )
    config = json.dumps({"model_type": "qwen3_5_moe", "architectures": ["Qwen3_5MoeForConditionalGeneration"]})
    hub_server.add(HubRepo("Qwen/Qwen3.5-397B-A17B", {"config.json": config.encode(), "model.safetensors": weights}))
    proc = run_cli("models", "convert", "397B", "-o", tmp_path / "out")
    assert proc.returncode == ExitCode.OUTPUT_ERROR, proc.stderr.decode()
    line = _error_line(proc)
    assert "not enough disk space" in line and "for the download" in line and "for the result" in line
    assert "400.00 TB for the download" in line and " free" in line
    assert proc.stdout == b""
    # Only the headers were read: no full GET of the weights, nothing in the cache.
    full_gets = [
        r
        for r in hub_server.log
        if r.method == "GET" and r.path.endswith("model.safetensors") and "range" not in {k.lower() for k in r.headers}
    ]
    assert full_gets == []
    assert not (tmp_path / "out").exists()


# -- failures leave nothing behind --------------------------------------------------------


def test_a_failed_conversion_leaves_no_output(tiny_models, tmp_path):
    # A tensor the model doesn't have: the headers look fine, mlx-vlm fails while loading.
    source = tmp_path / "odd"
    shutil.copytree(tiny_models.dense_hf, source)
    weights = source / "model.safetensors"
    name = next(n for n in model_inspect.safetensors_header(weights) or {} if n.startswith("model.language_model."))
    rewrite_safetensors(weights, lambda n: True, rename={name: name.replace("model.language_model.", "model.other.")})
    out = tmp_path / "models" / "odd-mxfp4"
    proc = run_cli("models", "convert", source, "-o", out)
    assert proc.returncode == ExitCode.BACKEND_ERROR, proc.stderr.decode()
    assert "mlx-vlm could not convert" in _error_line(proc)
    assert not out.exists() and _leftovers(out.parent) == []
    assert registry.registered() == []


def test_an_interrupted_conversion_leaves_no_output(tiny_models, tmp_path):
    out = tmp_path / "models" / "tiny-mxfp4"

    def interrupted(hf_path, mlx_path, **kwargs):
        Path(mlx_path).mkdir()
        (Path(mlx_path) / "model-00001-of-00002.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert.convert(str(tiny_models.dense_hf), "mxfp4", out, converter=interrupted)
    assert not out.exists() and _leftovers(out.parent) == []
    assert registry.registered() == []


def test_a_conversion_that_lost_the_vision_tower_is_not_kept(tiny_models, tmp_path):
    out = tmp_path / "blind-mxfp4"

    def text_only(hf_path, mlx_path, **kwargs):
        shutil.copytree(tiny_models.dense_mlx, mlx_path)
        rewrite_safetensors(Path(mlx_path) / "model.safetensors", lambda n: not n.startswith("vision_tower."))
        (Path(mlx_path) / "model.safetensors.index.json").unlink()

    with pytest.raises(BackendError, match="no vision_tower"):
        convert.convert(str(tiny_models.dense_hf), "mxfp4", out, converter=text_only)
    assert not out.exists() and _leftovers(out.parent) == []


def test_the_converter_is_called_with_mxfp4_group_32_and_no_remote_code(tiny_models, tmp_path):
    seen = {}

    def record(hf_path, mlx_path, **kwargs):
        seen.update(kwargs, hf_path=hf_path)
        shutil.copytree(tiny_models.dense_mlx, mlx_path)

    result = convert.convert(str(tiny_models.dense_hf), "MXFP4", tmp_path / "o", converter=record)
    assert seen == {
        "hf_path": str(tiny_models.dense_hf.resolve()),
        "quantize": True,
        "q_bits": 4,
        "q_group_size": 32,
        "q_mode": "mxfp4",
        "trust_remote_code": False,
    }
    assert result.path == (tmp_path / "o").absolute() and not result.already


# -- refusals -------------------------------------------------------------------------------


def test_not_a_qwen35_checkpoint_is_refused_before_converting(tiny_models, tmp_path):
    source = tmp_path / "llama"
    shutil.copytree(tiny_models.dense_hf, source)
    config = json.loads((source / "config.json").read_text())
    config["model_type"] = "llama"
    (source / "config.json").write_text(json.dumps(config))
    proc = run_cli("models", "convert", source, "-o", tmp_path / "out")
    assert proc.returncode == ExitCode.MODEL_UNAVAILABLE
    assert "not a Qwen 3.5-family model" in _error_line(proc)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_without_vision_weights_is_refused(tiny_models, tmp_path):
    source = tmp_path / "text-only"
    shutil.copytree(tiny_models.dense_hf, source)
    rewrite_safetensors(source / "model.safetensors", lambda n: not n.startswith("model.visual."))
    proc = run_cli("models", "convert", source, "-o", tmp_path / "out")
    assert proc.returncode == ExitCode.MODEL_UNAVAILABLE
    assert "no vision tower weights" in _error_line(proc)


def test_a_truncated_source_is_refused(tiny_models, tmp_path):
    source = tmp_path / "cut"
    shutil.copytree(tiny_models.dense_hf, source)
    weights = source / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    proc = run_cli("models", "convert", source, "-o", tmp_path / "out")
    assert proc.returncode == ExitCode.MODEL_UNAVAILABLE
    assert "shorter than its header says" in _error_line(proc)


def test_an_already_quantized_source_is_refused(tiny_models, tmp_path):
    proc = run_cli("models", "convert", tiny_models.dense_mlx, "-o", tmp_path / "out")
    assert proc.returncode == ExitCode.MODEL_UNAVAILABLE
    assert "already quantized" in _error_line(proc)


def test_offline_a_repo_not_in_the_cache_is_unavailable(tmp_path):
    proc = run_cli("models", "convert", "9B", "--offline", env={"HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == ExitCode.MODEL_UNAVAILABLE
    assert "Qwen/Qwen3.5-9B is not in the Hugging Face cache" in _error_line(proc)


def test_a_missing_repo_is_unavailable(hub_server):  # noqa: F811
    proc = run_cli("models", "convert", "nobody/Qwen3.5-9B")
    assert proc.returncode == ExitCode.MODEL_UNAVAILABLE
    assert "does not exist" in _error_line(proc)


@pytest.mark.parametrize(
    "args,message",
    [
        (["7B"], "neither a local folder, a repo id (ORG/NAME), nor a Qwen 3.5 size"),
        (["9B", "--family", "3.6"], "Qwen3.6 has no 9B"),
        (["9B", "--family", "4"], "--family 4: not a known family"),
        (["9B", "--quant", "Q8_0"], "--quant Q8_0: `models convert` makes mxfp4"),
    ],
)
def test_usage_errors(args, message):
    proc = run_cli("models", "convert", *args)
    assert proc.returncode == ExitCode.USAGE
    assert message in _error_line(proc)


def test_without_mlx_vlm_it_says_how_to_install_it(tiny_models, tmp_path):
    shim = tmp_path / "shim" / "mlx_vlm"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('mlx_vlm is hidden by this test')\n")
    proc = run_cli(
        "models", "convert", tiny_models.dense_hf, "-o", tmp_path / "out", env={"PYTHONPATH": str(shim.parent)}
    )
    assert proc.returncode == ExitCode.ENGINE_MISSING
    line = _error_line(proc)
    assert "needs mlx-vlm" in line and "pip install" in line and "mlx-vlm" in line
    assert not (tmp_path / "out").exists()


def test_quant_and_output_set_for_scan_do_not_leak_into_convert(tiny_models, tmp_path):
    # QWENOCR_QUANT=Q8_0 and QWENOCR_OUTPUT are scan's settings: convert keeps mxfp4 and its own folder.
    env = {"QWENOCR_QUANT": "Q8_0", "QWENOCR_OUTPUT": str(tmp_path / "scan-out"), "HF_HOME": str(tmp_path / "hf")}
    proc = run_cli("models", "convert", "nobody/x", "--offline", env=env)
    assert proc.returncode == ExitCode.MODEL_UNAVAILABLE, proc.stderr.decode()  # past --quant: mxfp4 it is
    assert not (tmp_path / "scan-out").exists()
