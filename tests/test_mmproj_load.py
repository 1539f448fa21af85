"""A damaged vision projector fails the load (exit 11), not every page (exit 10).

llama-cpp-python's `MTMDChatHandler` loads the mmproj on the first request; qwenocr
loads it with the model (llamacpp_patches.load_projector). Driven with a truncated copy
of the tiny model's real mmproj, through the CLI and through the engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from qwenocr.errors import BackendError, ExitCode
from tests.support.clirun import run_cli


def _truncated(mmproj: Path, tmp_path: Path) -> Path:
    data = mmproj.read_bytes()
    cut = tmp_path / "mmproj-F16.gguf"
    cut.write_bytes(data[: len(data) // 2])  # the header is whole; the tensors are not
    return cut


def _page(tmp_path: Path) -> Path:
    path = tmp_path / "page.png"
    image = Image.new("RGB", (320, 240), "white")
    image.paste((0, 0, 0), (40, 40, 280, 60))  # not blank: a page the model would be asked about
    image.save(path)
    return path


def test_a_truncated_mmproj_fails_the_load_in_one_line(tiny_models, tmp_path: Path) -> None:
    cut = _truncated(tiny_models.dense_mmproj, tmp_path)
    proc = run_cli("scan", _page(tmp_path), "--model", tiny_models.dense_gguf, "--mmproj", cut, "--no-skip-blank")
    stderr = proc.stderr.decode()
    assert proc.returncode == ExitCode.BACKEND_ERROR, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "vision projector mmproj-F16.gguf" in lines[0]
    assert "truncated or damaged" in lines[0]
    assert "Traceback" not in stderr
    assert proc.stdout == b""  # no page was read, so no document


def test_the_engine_refuses_a_truncated_mmproj_when_it_loads(tiny_models, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from qwenocr.engines.llamacpp import LlamaCppBackend

    cut = _truncated(tiny_models.dense_mmproj, tmp_path)
    with pytest.raises(BackendError, match="vision projector"):
        LlamaCppBackend(tiny_models.dense_gguf, cut, n_ctx=2048)


def test_a_whole_mmproj_still_loads(tiny_models) -> None:
    pytest.importorskip("llama_cpp")
    from qwenocr.engines.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(tiny_models.dense_gguf, tiny_models.dense_mmproj, n_ctx=2048)
    try:
        assert backend._handler.mtmd_ctx is not None  # loaded with the model, not on the first page
    finally:
        backend.close()
