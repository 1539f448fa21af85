"""The one place that builds an engine, from plain arguments.

Callers (the scan) decide the arguments: which engine, which files, how large a context,
how much on the GPU. Here they become a loaded engine: a local one in a worker process
(`engines.isolated`) or in this one (`engines.local`), or the servers' client. Each
engine's module (and so its library) is imported only when that engine is built, so that
`qwenocr --help` and a `--backend openai` run never load MLX or llama.cpp.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from qwenocr.engines.base import Backend
from qwenocr.engines.local import LOCAL_ENGINES, load_in_process, no_mmproj_error

# "0" runs the local engine in qwenocr's own process (no crash isolation).
ISOLATE_ENV = "QWENOCR_ISOLATE_ENGINE"


def load_local_engine(
    backend: str,
    model_path: Path,
    mmproj_path: Optional[Path] = None,
    *,
    n_ctx: int = 8192,
    n_gpu_layers: int = -1,
    tensor_split: Optional[List[float]] = None,
    verbose: bool = False,
    isolate: Optional[bool] = None,
    experts_on_cpu: bool = False,
    batch: int = 1,
) -> Backend:
    """Load a model on this machine.

    `backend` is "mlx" (`model_path` an MLX model directory) or "llama.cpp" (`model_path`
    a GGUF, or the first shard of a split one, and `mmproj_path` its vision projector).
    `n_ctx` (tokens of context), `n_gpu_layers` (-1: all) and `tensor_split` (fractions
    per GPU) are llama.cpp's, and so is `experts_on_cpu` (an MoE model's experts stay in
    RAM, the plan's "gpu+cpu-experts"); MLX sizes its cache by itself and uses the one GPU.
    `batch` > 1 decodes that many pages at once (llama.cpp only: `engines.llamacpp_batch`,
    one context of `batch` sequences of `n_ctx` tokens each); the engine's `concurrency`
    says how many pages the caller may have in flight.

    With `isolate` (the default; `QWENOCR_ISOLATE_ENGINE=0` turns it off, for debugging
    the engine in one process) the engine runs in a worker process, where a native crash
    costs one page (`engines.isolated`).
    """
    if backend not in LOCAL_ENGINES:
        raise ValueError(f"no local engine called {backend!r} (known: {', '.join(LOCAL_ENGINES)})")
    if backend == "llama.cpp" and mmproj_path is None:
        raise no_mmproj_error(model_path)
    if isolate is None:
        isolate = os.environ.get(ISOLATE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
    if not isolate:
        return load_in_process(
            backend,
            model_path,
            mmproj_path,
            n_ctx=n_ctx,
            n_gpu_layers=n_gpu_layers,
            tensor_split=tensor_split,
            verbose=verbose,
            experts_on_cpu=experts_on_cpu,
            batch=batch,
        )
    from qwenocr.engines.isolated import IsolatedEngine

    return IsolatedEngine(
        backend,
        {
            "model_path": str(model_path),
            "mmproj_path": str(mmproj_path) if mmproj_path is not None else None,
            "n_ctx": n_ctx,
            "n_gpu_layers": n_gpu_layers,
            "tensor_split": tensor_split,
            "experts_on_cpu": experts_on_cpu,
            "batch": batch,
        },
        verbose=verbose,
    )


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
