"""Shared test fixtures: the tiny real checkpoints, and a private user directory per test.

`tiny_models` hands out the checkpoints that tests/fixtures/build_tiny_models.py built
(scripts/test.sh builds them and exports QWENOCR_TEST_MODELS). Without them a test that
asks for them is skipped locally, and fails under CI, where skipping would hide that the
engines were never exercised.

Every test also gets its own config and cache directories and runs with the Hugging Face
hub offline, so no test reads the developer's settings, writes into their caches, or
touches the network.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

SETUP_HINT = "run `bash scripts/test.sh`, which builds the tiny models and sets QWENOCR_TEST_MODELS"


def pytest_configure(config):
    # huggingface_hub reads HF_HUB_OFFLINE once, when first imported, so the per-test
    # monkeypatch below would come too late for it; set it before any test module loads.
    os.environ["HF_HUB_OFFLINE"] = "1"


@dataclass(frozen=True)
class TinyModels:
    """Absolute paths of the tiny Qwen 3.5 checkpoints (random weights, real formats)."""

    root: Path
    dense_hf: Path  # Hugging Face directory (safetensors, tokenizer, processor)
    dense_mlx: Path  # mlx-vlm MXFP4 directory
    dense_gguf: Path  # llama.cpp text model file
    dense_mmproj: Path  # llama.cpp vision projector file
    moe_hf: Path
    moe_mlx: Path
    moe_gguf: Path
    moe_mmproj: Path


@pytest.fixture(scope="session")
def tiny_models() -> TinyModels:
    root = os.environ.get("QWENOCR_TEST_MODELS")
    manifest = Path(root) / "manifest.json" if root else None
    if manifest is None or not manifest.is_file():
        reason = (
            "QWENOCR_TEST_MODELS is not set" if manifest is None else f"{manifest} does not exist"
        ) + f"; {SETUP_HINT}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    data = json.loads(manifest.read_text())
    base = manifest.parent.resolve()
    names = [f for f in TinyModels.__dataclass_fields__ if f != "root"]
    paths = {name: base / data[name] for name in names if name in data}
    missing = [name for name in names if name not in paths or not paths[name].exists()]
    if missing:
        pytest.fail(f"{manifest} lacks {', '.join(missing)}; rebuild: {SETUP_HINT}")
    return TinyModels(root=base, **paths)


@pytest.fixture(autouse=True)
def _private_user_dirs(monkeypatch, tmp_path_factory):
    home = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("QWENOCR_CACHE_DIR", str(home / "qwenocr-cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.delenv("QWENOCR_CONFIG", raising=False)  # would point at the developer's file
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
