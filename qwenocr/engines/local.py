"""A local engine loaded in this process: the MLX or llama.cpp backend, from plain arguments.

`engines.factory` calls this when isolation is off, and the worker process of
`engines.isolated` calls it to load the engine it runs. Each engine's module (and so its
library) is imported only when that engine is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from qwenocr.engines.base import Backend
from qwenocr.errors import BackendError

LOCAL_ENGINES = ("mlx", "llama.cpp")


def load_in_process(
    backend: str,
    model_path: Path,
    mmproj_path: Optional[Path] = None,
    *,
    n_ctx: int = 8192,
    n_gpu_layers: int = -1,
    tensor_split: Optional[List[float]] = None,
    verbose: bool = False,
    experts_on_cpu: bool = False,
    batch: int = 1,
) -> Backend:
    """Load `backend` ("mlx" or "llama.cpp") here; see `factory.load_local_engine`."""
    if backend == "mlx":
        if batch > 1:
            from qwenocr.engines.mlx_batch import MLXBatchBackend

            return MLXBatchBackend(model_path, batch=batch, verbose=verbose)
        from qwenocr.engines.mlx import MLXBackend

        return MLXBackend(model_path, verbose=verbose)
    if backend == "llama.cpp":
        from qwenocr.engines.llamacpp import LlamaCppBackend

        if mmproj_path is None:
            raise no_mmproj_error(model_path)
        if batch > 1:
            from qwenocr.engines.llamacpp_batch import LlamaCppBatchBackend

            return LlamaCppBatchBackend(
                model_path,
                mmproj_path,
                batch=batch,
                n_ctx=n_ctx,
                n_gpu_layers=n_gpu_layers,
                tensor_split=tensor_split,
                verbose=verbose,
                experts_on_cpu=experts_on_cpu,
            )
        return LlamaCppBackend(
            model_path,
            mmproj_path,
            n_ctx=n_ctx,
            n_gpu_layers=n_gpu_layers,
            tensor_split=tensor_split,
            verbose=verbose,
            experts_on_cpu=experts_on_cpu,
        )
    raise ValueError(f"no local engine called {backend!r} (known: {', '.join(LOCAL_ENGINES)})")


def no_mmproj_error(model_path: Path) -> BackendError:
    return BackendError(
        f"llama.cpp needs a vision projector (mmproj) to read pages with {Path(model_path).name}",
        "pass it with --mmproj",
    )
