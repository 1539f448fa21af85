"""A model that cannot see, or is not Qwen 3.5-family, is refused at load in one line (issue #11, item 5).

Real files: a text-only MLX checkpoint made by stripping the vision tower from the tiny
MXFP4 one (as an mlx-lm conversion would be), the tiny GGUF without its projector, configs
and GGUF headers of other architectures; and a text-only MLX repo that `scan --model
ORG/NAME` downloads from a hub server on loopback. Each goes through the real CLI: exit
7, one line on stderr, nothing on stdout, and no page is read.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Callable, Dict, Optional

import pytest

from qwenocr.errors import ExitCode, ModelUnavailableError
from qwenocr.store import inspect as model_inspect
from qwenocr.store.resolve import resolve_local
from tests.support import clirun, samples
from tests.support.hub_server import HubRepo, hub_server  # noqa: F401 - a pytest fixture

# -- real files, rewritten ----------------------------------------------------------------


def rewrite_safetensors(path: Path, keep: Callable[[str], bool], rename: Optional[Dict[str, str]] = None) -> None:
    """Rewrite a safetensors file in place with only the tensors `keep` accepts (renamed per `rename`)."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    data = raw[8 + length :]
    out, chunks, position = {}, [], 0
    for name, info in header.items():
        if name == "__metadata__":
            out[name] = info
            continue
        if not keep(name):
            continue
        start, end = info["data_offsets"]
        chunks.append(data[start:end])
        out[(rename or {}).get(name, name)] = {**info, "data_offsets": [position, position + end - start]}
        position += end - start
    text = json.dumps(out).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def text_only_copy(mlx_dir: Path, dest: Path) -> Path:
    """The tiny MXFP4 model without `vision_tower.*`, in its weights and its index."""
    shutil.copytree(mlx_dir, dest)
    for weights in dest.glob("*.safetensors"):
        rewrite_safetensors(weights, lambda name: not name.startswith("vision_tower."))
    index = dest / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = {k: v for k, v in data["weight_map"].items() if not k.startswith("vision_tower.")}
    index.write_text(json.dumps(data))
    return dest


def gguf_with_architecture(path: Path, architecture: str) -> Path:
    """A minimal GGUF v3 (no tensors) whose header says `general.architecture = architecture`."""

    def string(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 2)
    header += string("general.name") + struct.pack("<I", 8) + string("not qwen")
    header += string("general.architecture") + struct.pack("<I", 8) + string(architecture)
    path.write_bytes(header)
    return path


# -- through the CLI ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pdf(tmp_path_factory):
    return samples.write_pdf(tmp_path_factory.mktemp("in") / "doc.pdf", pages=2, size=(300, 400))


def refused(pdf: Path, *model_args, env=None) -> str:
    """Run `scan PDF --format json MODEL_ARGS`, expect exit 7 with one line; that line."""
    proc = clirun.run_cli("scan", pdf, "--format", "json", "--no-resume", *model_args, env=env, timeout=300)
    stderr = proc.stderr.decode()
    assert proc.returncode == ExitCode.MODEL_UNAVAILABLE, stderr
    assert proc.stdout == b""
    assert "Traceback" not in stderr
    # One line, and nothing else said: no page was read (the page loop reports each one).
    # huggingface_hub's own download bar (a repo) is the only other output.
    lines = [line for line in stderr.splitlines() if line.strip() and "Fetching" not in line]
    assert len(lines) == 1 and lines[0].startswith("qwenocr: error: "), stderr
    return lines[0]


def test_a_text_only_mlx_checkpoint_is_refused(tiny_models, tmp_path, pdf):
    model = text_only_copy(tiny_models.dense_mlx, tmp_path / "Qwen3.5-Tiny-4bit-text")
    line = refused(pdf, "--model", model)
    assert "an MLX model without its vision tower" in line
    assert "mlx-community/Qwen3.5-9B-mxfp4" in line and "qwenocr models convert" in line


def test_the_vision_check_reads_the_weights_not_the_index(tiny_models, tmp_path, pdf):
    # The index still lists vision_tower.* but the weights lack them: what loads is the weights.
    model = text_only_copy(tiny_models.dense_mlx, tmp_path / "stale-index")
    shutil.copy(tiny_models.dense_mlx / "model.safetensors.index.json", model / "model.safetensors.index.json")
    assert "without its vision tower" in refused(pdf, "--model", model)


def test_a_gguf_without_a_projector_beside_it_is_refused(tiny_models, tmp_path, pdf):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(tiny_models.dense_gguf, alone / tiny_models.dense_gguf.name)
    line = refused(pdf, "--model", alone / tiny_models.dense_gguf.name)
    assert "a GGUF without its vision projector" in line and "--mmproj" in line
    assert "a GGUF without its vision projector" in refused(pdf, "--model", alone)  # the folder too


def test_a_config_of_another_architecture_is_refused(tiny_models, tmp_path, pdf):
    model = tmp_path / "llama"
    shutil.copytree(tiny_models.dense_mlx, model)
    config = json.loads((model / "config.json").read_text())
    config["model_type"] = "llama"
    (model / "config.json").write_text(json.dumps(config))
    line = refused(pdf, "--model", model)
    assert "not a Qwen 3.5-family model" in line and "'llama'" in line


def test_a_gguf_of_another_architecture_is_refused(tiny_models, tmp_path, pdf):
    model = gguf_with_architecture(tmp_path / "llama-3-8b.gguf", "llama")
    shutil.copy(tiny_models.dense_mmproj, tmp_path / "mmproj-F16.gguf")
    line = refused(pdf, "--model", model)
    assert "not a Qwen 3.5-family model" in line and "'llama'" in line


def test_a_model_gguf_given_as_the_projector_is_refused(tiny_models, pdf):
    line = refused(pdf, "--model", tiny_models.dense_gguf, "--mmproj", tiny_models.dense_gguf)
    assert "is not a vision projector" in line


def test_a_text_only_mlx_repo_is_refused_after_download(tiny_models, tmp_path, pdf, hub_server):  # noqa: F811
    model = text_only_copy(tiny_models.dense_mlx, tmp_path / "text-only")
    repo = "someone/Qwen3.5-Tiny-4bit"
    hub_server.add(HubRepo(repo, {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}))
    line = refused(pdf, "--model", repo, "--backend", "mlx")
    assert f"{repo}: an MLX model without its vision tower" in line
    assert any(path.endswith("model.safetensors") for _, path in hub_server.requests)  # it did download


# -- the checks themselves ------------------------------------------------------------------


def test_gguf_architecture_reads_the_header_of_the_real_files(tiny_models, tmp_path):
    assert model_inspect.gguf_architecture(tiny_models.dense_gguf) == "qwen35"
    assert model_inspect.gguf_architecture(tiny_models.moe_gguf) == "qwen35moe"
    assert model_inspect.gguf_architecture(tiny_models.dense_mmproj) == "clip"
    assert model_inspect.gguf_architecture(gguf_with_architecture(tmp_path / "x.gguf", "gemma3")) == "gemma3"
    (tmp_path / "zeros.gguf").write_bytes(bytes(64))
    assert model_inspect.gguf_architecture(tmp_path / "zeros.gguf") is None


def test_the_real_checkpoints_pass_every_check(tiny_models):
    for folder in (tiny_models.dense_mlx, tiny_models.moe_mlx, tiny_models.dense_hf, tiny_models.moe_hf):
        found = model_inspect.inspect_folder(folder)
        assert found.qwen35 and found.vision, folder
        assert resolve_local(str(folder)) is not None
    mlx = model_inspect.inspect_folder(tiny_models.dense_mlx)
    assert (mlx.quantization, mlx.group_size, mlx.bits) == ("mxfp4", 32, 4)
    model = resolve_local(str(tiny_models.dense_gguf))
    assert model is not None and model.mmproj == tiny_models.dense_mmproj.resolve()


def test_a_text_only_checkpoint_is_refused_by_resolve_local(tiny_models, tmp_path):
    model = text_only_copy(tiny_models.dense_mlx, tmp_path / "m")
    assert model_inspect.inspect_folder(model).vision is False
    with pytest.raises(ModelUnavailableError, match="without its vision tower"):
        resolve_local(str(model))


def test_files_the_checks_cannot_read_are_left_to_the_engine(tmp_path):
    # Placeholder weights and an empty config say nothing either way: not refused here.
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(bytes(10))
    found = model_inspect.inspect_folder(tmp_path)
    assert found.model_type is None and found.vision is None
    assert resolve_local(str(tmp_path)) is not None
