"""The one place that builds an engine, from plain arguments.

Callers (the scan) decide the arguments: which engine, which files, how large a context,
how much on the GPU. Here they become a loaded engine. Each engine's module (and so its
library) is imported only when that engine is built, so that `qwenocr --help` and a
`--backend openai` run never load MLX or llama.cpp.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from qwenocr.engines.base import Backend
from qwenocr.errors import BackendError

LOCAL_ENGINES = ("mlx", "llama.cpp")


def load_local_engine(
    backend: str,
    model_path: Path,
    mmproj_path: Optional[Path] = None,
    *,
    n_ctx: int = 8192,
    n_gpu_layers: int = -1,
    tensor_split: Optional[List[float]] = None,
    verbose: bool = False,
) -> Backend:
    """Load a model on this machine.

    `backend` is "mlx" (`model_path` an MLX model directory) or "llama.cpp" (`model_path`
    a GGUF, or the first shard of a split one, and `mmproj_path` its vision projector).
    `n_ctx` (tokens of context), `n_gpu_layers` (-1: all) and `tensor_split` (fractions
    per GPU) are llama.cpp's; MLX sizes its cache by itself and uses the one GPU.
    """
    if backend == "mlx":
        from qwenocr.engines.mlx import MLXBackend

        return MLXBackend(model_path, verbose=verbose)
    if backend == "llama.cpp":
        from qwenocr.engines.llamacpp import LlamaCppBackend

        if mmproj_path is None:
            raise BackendError(
                f"llama.cpp needs a vision projector (mmproj) to read pages with {Path(model_path).name}",
                "pass it with --mmproj",
            )
        return LlamaCppBackend(
            model_path,
            mmproj_path,
            n_ctx=n_ctx,
            n_gpu_layers=n_gpu_layers,
            tensor_split=tensor_split,
            verbose=verbose,
        )
    raise ValueError(f"no local engine called {backend!r} (known: {', '.join(LOCAL_ENGINES)})")


def connect_servers(
    base_urls: Sequence[str],
    *,
    model: Optional[str] = None,
    api_key: Optional[str] = None,
    concurrency: int = 4,
) -> Tuple[Backend, str]:
    """The engine for OpenAI-compatible servers, and the model they serve.

    The model is resolved now (asking the servers when `model` is None), so that an
    unreachable server fails before the first page, not on it; the connections are
    closed if it fails.
    """
    from qwenocr.engines.openai import OpenAIBackend

    backend = OpenAIBackend(base_urls, model=model, api_key=api_key, concurrency=concurrency)
    try:
        served = backend.resolve_model()
    except BaseException:
        backend.close()
        raise
    return backend, served
