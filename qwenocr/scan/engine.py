"""The engine a scan runs on: a local engine loaded from the model files (with the
plan's GPU offload), or OpenAI-compatible servers."""

from __future__ import annotations

from pathlib import Path

from qwenocr.errors import UsageError
from qwenocr.scan.progress import Reporter
from qwenocr.scan.request import ScanRequest
from qwenocr.store.resolve import ModelFiles


def connect_server(request: ScanRequest, reporter: Reporter):
    from qwenocr.engines.openai import OpenAIBackend, api_key_from_env

    if not request.base_urls:
        raise UsageError(
            "--backend openai needs --base-url URL (an OpenAI-compatible server)",
            "e.g. --base-url http://localhost:8000/v1",
        )
    backend = OpenAIBackend(
        request.base_urls, model=request.api_model, api_key=api_key_from_env(), concurrency=request.concurrency
    )
    try:
        served = backend.resolve_model()  # an unreachable server fails now, not on page 1
    except BaseException:
        backend.close()
        raise
    reporter.info(f"using {served} at {', '.join(request.base_urls)} with {request.concurrency} pages in flight")
    return ModelFiles("openai", Path(), None, served), None, backend


def load_engine(model: ModelFiles, request: ScanRequest, plan, reporter: Reporter):
    reporter.info(f"loading {model.label} with {model.backend}")
    if model.backend == "mlx":
        from qwenocr.engines.mlx import MLXBackend

        return MLXBackend(model.path, verbose=request.verbose)
    from qwenocr.engines.llamacpp import LlamaCppBackend

    options = request.options
    # The KV cache holds one page at a time: image tokens + prompt + output, with slack.
    image_budget = min(options.render.max_image_tokens, 4096) if options.render.dpi is None else 4096
    n_ctx = request.n_ctx or _round_up(image_budget + options.generation.max_tokens + 512, 256)
    # With a plan, its GPU offload and multi-GPU split; with --model PATH, offload all
    # layers (llama.cpp keeps them on the CPU when it was built without a GPU backend).
    n_gpu_layers = plan.n_gpu_layers if plan is not None else -1
    tensor_split = plan.tensor_split if plan is not None else None
    return LlamaCppBackend(
        model.path,
        model.mmproj,
        n_ctx=n_ctx,
        n_gpu_layers=n_gpu_layers,
        tensor_split=tensor_split,
        verbose=request.verbose,
    )


def _round_up(value: int, step: int) -> int:
    return (value + step - 1) // step * step
