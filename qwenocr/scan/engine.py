"""The engine a scan runs on: a local engine loaded from the model files (with the
plan's GPU offload), or OpenAI-compatible servers.

This turns the scan's request and plan into the engine's plain arguments (how large a
context a page needs, how many layers go on the GPU) and reports what it builds;
`engines.factory` builds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple

from qwenocr.engines.base import Backend
from qwenocr.errors import UsageError
from qwenocr.scan.progress import Reporter
from qwenocr.scan.request import ScanRequest
from qwenocr.store.resolve import ModelFiles

if TYPE_CHECKING:
    from qwenocr.fit.plan import Plan

# Tokens of context beyond the page's image and output tokens: the prompt and the chat
# template, with slack.
CONTEXT_SLACK_TOKENS = 512


def connect_server(request: ScanRequest, reporter: Reporter) -> Tuple[ModelFiles, None, Backend]:
    """The servers of --base-url, with the model they serve (asked for now, so that an
    unreachable server fails before any page)."""
    from qwenocr.engines.factory import connect_servers
    from qwenocr.engines.openai import api_key_from_env

    if not request.base_urls:
        raise UsageError(
            "--backend openai needs --base-url URL (an OpenAI-compatible server)",
            "e.g. --base-url http://localhost:8000/v1",
        )
    backend, served = connect_servers(
        request.base_urls, model=request.api_model, api_key=api_key_from_env(), concurrency=request.concurrency
    )
    reporter.info(f"using {served} at {', '.join(request.base_urls)} with {request.concurrency} pages in flight")
    return ModelFiles("openai", Path(), None, served), None, backend


def load_engine(model: ModelFiles, request: ScanRequest, plan: Optional[Plan], reporter: Reporter) -> Backend:
    """Load `model` on this machine, with a context for each page it decodes at once."""
    from qwenocr.engines.factory import load_local_engine

    batch = engine_batch(model.backend, request, plan, reporter)
    at_once = f", {batch} pages at once" if batch > 1 else ""
    reporter.info(f"loading {model.label} with {model.backend}{at_once}")
    n_ctx = context_size(request)
    # With a plan, its GPU offload and multi-GPU split, and an MoE model's experts kept in
    # RAM where it is placed "gpu+cpu-experts"; with --model PATH, offload all layers
    # (llama.cpp keeps them on the CPU when it was built without a GPU backend).
    return load_local_engine(
        model.backend,
        model.path,
        model.mmproj,
        n_ctx=n_ctx,
        n_gpu_layers=plan.n_gpu_layers if plan is not None else -1,
        tensor_split=plan.tensor_split if plan is not None else None,
        verbose=request.verbose,
        experts_on_cpu=plan is not None and plan.placement == "gpu+cpu-experts" and model.backend == "llama.cpp",
        batch=batch,
    )


def engine_batch(
    backend: str, request: ScanRequest, plan: Optional[Plan] = None, reporter: Optional[Reporter] = None
) -> int:
    """How many pages the local engine decodes at once: --batch, else the plan's (what its
    memory leaves room for), else 1 (--model PATH). Both local engines batch: llama.cpp
    (engines/llamacpp_batch.py) and MLX (engines/mlx_batch.py); any other backend reads
    one page at a time, and says so when --batch asked for more."""
    wanted = request.batch if request.batch is not None else (plan.batch if plan is not None else 1)
    if wanted <= 1:
        return 1
    if backend in ("llama.cpp", "mlx"):
        return wanted
    if reporter is not None and request.batch is not None:
        reporter.warn(f"--batch {request.batch} is for the local engines; {backend} reads one page at a time")
    return 1


def context_size(request: ScanRequest) -> int:
    """The context a page gets, in tokens: --n-ctx, or one page's image + prompt + output
    with slack. llama.cpp allocates its KV cache for all of it at load; MLX grows its cache
    with the page up to as much (the memory check counts it for both, model_choice.py).
    """
    from qwenocr.engines.llamacpp import MAX_IMAGE_TOKENS as LLAMACPP_MAX_IMAGE_TOKENS
    from qwenocr.fit.plan import NATIVE_CONTEXT_TOKENS

    if request.n_ctx:
        return request.n_ctx
    options = request.options
    # With --dpi the image's size is not known ahead, so it is the largest llama.cpp takes.
    image_budget = (
        min(options.render.max_image_tokens, LLAMACPP_MAX_IMAGE_TOKENS)
        if options.render.dpi is None
        else LLAMACPP_MAX_IMAGE_TOKENS
    )
    needed = _round_up(image_budget + options.generation.max_tokens + CONTEXT_SLACK_TOKENS, 256)
    # Never past what the model was trained for: a page that long stops there ("length").
    return min(needed, NATIVE_CONTEXT_TOKENS)


def _round_up(value: int, step: int) -> int:
    return (value + step - 1) // step * step
