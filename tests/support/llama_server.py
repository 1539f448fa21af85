"""llama-cpp-python's own OpenAI-compatible server on loopback, for the tests that drive
`--backend openai` against a real server (test_openai_backend, test_openai_adaptive)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import pytest

from qwenocr.engines.openai import check_server

SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_llama_server() -> None:
    """Skip without the server's extras; under CI that is a failure, not a skip."""
    missing = [module for module in SERVER_MODULES if importlib.util.find_spec(module) is None]
    if missing:
        reason = (
            f"llama-cpp-python with its server extras is needed ({', '.join(missing)} missing):"
            ' pip install "llama-cpp-python[server]"'
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@contextmanager
def llama_server(
    gguf: Path,
    mmproj: Path,
    log_path: Path,
    *extra: str,
    env: Optional[Dict[str, str]] = None,
    api_key: Optional[str] = None,
) -> Iterator[Tuple[subprocess.Popen, str, dict]]:
    """`python -m llama_cpp.server` with `gguf` and its `mmproj` (thinking off, 4,096
    tokens of context, `extra` arguments), its output in `log_path`; yields the process,
    its /v1 URL and what `check_server` said once it serves a model, and ends it after."""
    need_llama_server()
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf),
        "--chat_format", "mtmd",
        "--clip_model_path", str(mmproj),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "4096",
        *extra,
        # the server ignores a request's chat_template_kwargs; this is its load-time switch
        "--chat_template_kwargs", '{"enable_thinking": false}',
        "--verbose", "False",
    ]  # fmt: skip
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 120
        info: dict = {}
        while time.monotonic() < deadline and process.poll() is None:
            info = check_server(url, api_key=api_key, timeout=2)
            if info["models"]:
                break
            time.sleep(0.5)
        assert info.get("models"), f"server did not come up: {info}\n{log_path.read_text()[-3000:]}"
        yield process, url, info
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
