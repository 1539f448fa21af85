"""Which model files a scan loads: `--model` (a path or a repo id) or the hardware plan.

A model that will not fit is refused here, before anything is downloaded or loaded, and
so is a plan with nothing to download: when no hub repo holds the pick with its vision
tower (MLX MXFP4 of the large sizes), one line names `qwenocr models convert` and the
ready GGUF alternative, unless a converted model is registered here (then it is used).
The plan's candidate repos are checked on the hub first (store/verify.py; with
--offline, the cached hub facts). What makes a model on disk, and how its files are
fetched, is the store's business (qwenocr/store): this module only decides which model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from qwenocr.errors import InsufficientMemoryError, ModelUnavailableError, NothingFitsError, UsageError
from qwenocr.scan.progress import Reporter
from qwenocr.scan.request import ScanRequest
from qwenocr.store import files as model_files
from qwenocr.store.hub import offline_requested
from qwenocr.store.inspect import gguf_metadata
from qwenocr.store.resolve import ModelFiles, resolve_local, resolve_target
from qwenocr.store.targets import plan_target, repo_model_target

if TYPE_CHECKING:
    from qwenocr.fit.hardware import Hardware
    from qwenocr.fit.plan import Plan


# A Hugging Face repo id (org/name, the hub's own rules); anything else given to --model
# that is not an existing path ("/nonexistent", "./x/y") is a missing file.
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")


def resolve_model(request: ScanRequest, reporter: Reporter) -> "Tuple[ModelFiles, Optional[Plan]]":
    """The model files to load, and the plan that chose them (None with --model)."""
    offline = offline_requested(request.offline)
    if request.model:
        local = resolve_local(request.model, request.mmproj)
        if local is not None:
            if request.backend and request.backend != local.backend:
                raise UsageError(
                    f"--model {request.model} is a {local.backend} model, but --backend {request.backend} was asked for"
                )
            if not request.force:
                _check_local_model_fits(local, request)
            return local, None
        if not _REPO_ID.match(request.model):
            raise UsageError(
                f"--model {request.model}: no such file or directory, and not a Hugging Face repo id (org/name)"
            )
        backend = request.backend or model_files.guess_backend_for_repo(request.model)
        return resolve_target(repo_model_target(request.model, backend, request.quant), offline), None

    from qwenocr.fit.hardware import detect

    hardware = detect()
    plan = _plan(hardware, request, variant=request.variant, quant=request.quant, offline=offline)
    source = plan.source
    # Nothing to download (a convert plan, or no known repo) is said before the memory
    # check: converting is the longer way, and --force can't help it.
    target = plan_target(plan) if source is not None and source.kind != "local" else None
    if not request.force:
        check_plan(plan, hardware, request)
    if source is None:
        raise NothingFitsError(plan.reason or "no model was chosen", "run `qwenocr doctor` to see every option")
    where = target.repo if target is not None else source.path
    reporter.info(
        f"plan: {plan.variant} {plan.quant} via {plan.backend} ({plan.estimate_gb:.1f} GB of {plan.budget_gb:.1f} GB)"
        f" from {where} ({source.status})"
    )
    if target is None:
        local = resolve_local(str(source.path)) if source.path else None
        if local is None:
            raise ModelUnavailableError(
                f"the converted model {source.path} is gone",
                "convert it again with `qwenocr models convert`",
            )
        return local, plan
    return resolve_target(target, offline), plan


def _plan(
    hardware: "Hardware",
    request: ScanRequest,
    *,
    variant: Optional[str],
    quant: Optional[str],
    offline: Optional[bool] = None,
) -> "Plan":
    """The plan for this scan's page budget; `variant`/`quant` force the pick. With
    `offline` given, the sources are checked (store/verify.py); without, the data alone."""
    from qwenocr.fit.plan import make_plan

    options: Dict[str, Any] = dict(
        variant=variant,
        quant=quant,
        backend=request.backend,
        family=request.family,
        max_image_tokens=request.options.render.max_image_tokens,
        max_output_tokens=request.options.generation.max_tokens,
        n_ctx=request.n_ctx,
        prefer=request.prefer,
        batch=request.batch,
    )
    if offline is None:
        return make_plan(hardware, **options)
    from qwenocr.store.verify import verified_plan

    return verified_plan(hardware, offline=offline, **options)


def check_plan(plan: "Plan", hardware: "Hardware", request: ScanRequest) -> None:
    """Refuse, before anything is downloaded or loaded, a model that won't fit now.

    A load that does not fit ends in swapping for minutes or in the OOM killer, with
    nothing to show for it; saying so up front, with the option that does fit, is kinder.
    """
    from qwenocr.fit.plan import wired_limit_command

    overridden = bool(request.variant or request.quant)
    if plan.fits and not plan.needs_wired_limit_mb:
        return
    if plan.needs_wired_limit_mb:
        raise InsufficientMemoryError(
            f"{plan.variant} {plan.quant} needs more GPU memory than macOS lets Metal wire now",
            f"run `{wired_limit_command(plan.needs_wired_limit_mb)}` (until reboot), pick a smaller --variant,"
            " or pass --force",
        )
    if not plan.fits:
        _refuse_large_context(hardware, request)
    if not overridden:
        raise NothingFitsError(
            plan.reason or "no Qwen 3.5 variant fits this machine's memory",
            "run `qwenocr doctor` to see every option and why it fails",
        )
    # The advice names what qwenocr would pick unforced, and that is a plan of its own:
    # a --quant such as Q8_0 implies its engine (the default may be the other one), and
    # on NVIDIA an unforced plan falls back to the CPU when nothing fits in VRAM, so the
    # forced plan's candidates can't answer it. It is a few hundred microseconds of
    # arithmetic, and only on the way to this error.
    default = _plan(hardware, request, variant=None, quant=None)
    fallback = (
        f"--variant {default.variant} --quant {default.quant} fits now"
        if default.fits
        else "nothing fits now (see `qwenocr doctor`)"
    )
    raise InsufficientMemoryError(
        f"{plan.variant} {plan.quant} needs ~{plan.estimate_gb:.1f} GB but {plan.budget_gb:.1f} GB is usable now",
        f"{fallback}; --force loads it anyway",
    )


def _refuse_large_context(hardware: "Hardware", request: ScanRequest) -> None:
    """When a plan does not fit only because of a context the user made large (--max-tokens,
    --n-ctx), say so: the plan at the default budgets fits, so the context is what to lower."""
    from qwenocr.defaults import DEFAULT_MAX_IMAGE_TOKENS, DEFAULT_MAX_OUTPUT_TOKENS
    from qwenocr.fit.plan import make_plan

    render, generation = request.options.render, request.options.generation
    if (
        request.n_ctx is None
        and generation.max_tokens <= DEFAULT_MAX_OUTPUT_TOKENS
        and render.max_image_tokens <= DEFAULT_MAX_IMAGE_TOKENS
    ):
        return  # the budgets are the usual ones: nothing to lower
    usual = make_plan(
        hardware,
        variant=request.variant,
        quant=request.quant,
        backend=request.backend,
        family=request.family,
        max_image_tokens=min(render.max_image_tokens, DEFAULT_MAX_IMAGE_TOKENS),
        max_output_tokens=min(generation.max_tokens, DEFAULT_MAX_OUTPUT_TOKENS),
    )
    if not usual.fits:
        return  # not the context's fault
    from qwenocr.scan.engine import context_size

    picked = " ".join(part for part in (request.variant, request.quant) if part)
    forced = f" with {picked}" if picked else ""
    raise InsufficientMemoryError(
        f"a {context_size(request):,}-token context does not fit this machine's memory{forced}",
        _lower_context_hint(
            request, request.backend or usual.backend, f"{usual.variant} {usual.quant} fits with the default budgets"
        ),
    )


def _lower_context_hint(request: ScanRequest, backend: Optional[str], instead: str = "use a smaller model") -> str:
    """What to lower when the context is what does not fit."""
    if request.n_ctx is not None and backend != "mlx":
        return f"lower --n-ctx; {instead}; or pass --force"
    return f"lower --max-tokens or --max-image-tokens, which the context follows from; {instead}; or pass --force"


def _check_local_model_fits(model: ModelFiles, request: ScanRequest) -> None:
    """For --model PATH there is no plan: compare the files' size, and the KV cache and
    recurrent state of the context the engine will get (scan/engine.py), with free memory."""
    import psutil

    from qwenocr.scan.engine import context_size, engine_batch

    if model.path.is_file():
        # A split GGUF: every shard is loaded, not just the first.
        paths = sorted(model.path.parent.glob(model_files.split_model_glob(model.path.name))) or [model.path]
        shape = _gguf_context_shape(model.path)
    else:
        paths = list(model.path.glob(model_files.MLX_WEIGHTS))
        shape = _mlx_context_shape(model.path)
    if model.mmproj is not None:
        paths.append(model.mmproj)
    files = sum(p.stat().st_size for p in paths)
    # MLX has no --n-ctx: its cache grows with the page, up to the page's budget.
    tokens = context_size(replace(request, n_ctx=None) if model.backend == "mlx" else request)
    # Each page decoding at once (--batch) has its own KV cache and recurrent state.
    context = shape.bytes_for(tokens) * engine_batch(model.backend, request) if shape is not None else 0
    needed = files + context + 2**30  # + a 1 GiB margin for activations
    available = psutil.virtual_memory().available
    if needed <= available:
        return
    if files + 2**30 <= available or context > files:
        # The model alone would fit, or its context is the larger part: say what to lower.
        raise InsufficientMemoryError(
            f"{model.label} with a {tokens:,}-token context needs ~{needed / 1e9:.1f} GB of memory"
            f" (~{context / 1e9:.1f} GB of it the context's KV cache) but {available / 1e9:.1f} GB is free now",
            _lower_context_hint(request, model.backend),
        )
    raise InsufficientMemoryError(
        f"{model.label} needs ~{needed / 1e9:.1f} GB of memory but {available / 1e9:.1f} GB is free now",
        "close other programs, use a smaller model, or pass --force",
    )


@dataclass(frozen=True)
class _ContextShape:
    """What a model's context costs: KV cache per token (16-bit, full-attention layers
    only) and the fixed recurrent state of its Gated DeltaNet layers (fp32, one sequence)."""

    kv_bytes_per_token: int
    state_bytes: int

    def bytes_for(self, tokens: int) -> int:
        return self.kv_bytes_per_token * tokens + self.state_bytes


def _gguf_context_shape(path: Path) -> Optional[_ContextShape]:
    """The context's cost from a GGUF's metadata (llama.cpp's keys); None when unreadable
    (the engine then says what is wrong with the file)."""
    meta = gguf_metadata(path)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        return None

    def number(key: str, default: Optional[int] = None) -> Optional[int]:
        value = meta.get(f"{arch}.{key}", default)
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default

    layers = number("block_count")
    if not layers:
        return None
    recurrent = meta.get(f"{arch}.attention.recurrent_layers")
    interval = number("full_attention_interval")
    if isinstance(recurrent, list) and len(recurrent) == layers:
        full = [not flag for flag in recurrent]
    elif interval:
        full = [(index + 1) % interval == 0 for index in range(layers)]
    else:
        full = [True] * layers  # a plain transformer: every layer keeps a KV cache
    heads = number("attention.head_count") or 1
    width = number("embedding_length") or 0
    key_length = number("attention.key_length", width // heads) or 0
    value_length = number("attention.value_length", key_length) or 0
    kv_heads_raw = meta.get(f"{arch}.attention.head_count_kv", heads)
    kv_heads = kv_heads_raw if isinstance(kv_heads_raw, list) else [kv_heads_raw] * layers
    per_token = sum(int(kv_heads[index]) * (key_length + value_length) * 2 for index in range(layers) if full[index])
    state_size, inner = number("ssm.state_size") or 0, number("ssm.inner_size") or 0
    conv, groups = number("ssm.conv_kernel") or 0, number("ssm.group_count") or 0
    per_layer = (state_size * inner + max(conv - 1, 0) * (inner + 2 * groups * state_size)) * 4
    return _ContextShape(per_token, per_layer * full.count(False))


def _mlx_context_shape(folder: Path) -> Optional[_ContextShape]:
    """The context's cost from an MLX model's config.json (its text_config); None when unreadable."""
    from qwenocr.store.inspect import read_config

    config = read_config(folder)
    text = config.get("text_config", config) if config is not None else None
    if not isinstance(text, dict):
        return None

    def number(key: str, default: int = 0) -> int:
        value = text.get(key, default)
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else default

    layers = number("num_hidden_layers")
    if not layers:
        return None
    kinds = text.get("layer_types")
    interval = number("full_attention_interval")
    if isinstance(kinds, list) and len(kinds) == layers:
        full = sum(1 for kind in kinds if kind == "full_attention")
    else:
        full = layers // interval if interval else layers
    heads = number("num_attention_heads", 1) or 1
    head_dim = number("head_dim", number("hidden_size") // heads)
    per_token = full * 2 * number("num_key_value_heads", heads) * head_dim * 2
    value_heads, key_dim = number("linear_num_value_heads"), number("linear_key_head_dim")
    value_dim, key_heads = number("linear_value_head_dim"), number("linear_num_key_heads")
    conv = number("linear_conv_kernel_dim")
    inner = value_heads * value_dim
    per_layer = (value_heads * key_dim * value_dim + max(conv - 1, 0) * (inner + 2 * key_heads * key_dim)) * 4
    return _ContextShape(per_token, per_layer * (layers - full))


def plan_record(plan: "Optional[Plan]") -> Optional[dict]:
    """What the output records of the plan (None when --model named the files)."""
    if plan is None or plan.source is None:
        return None
    return {
        "variant": plan.variant,
        "quant": plan.quant,
        "bits": plan.bits,
        "backend": plan.backend,
        "repo": plan.source.repo,
        "estimate_gb": round(plan.estimate_gb, 2) if plan.estimate_gb is not None else None,
        "budget_gb": round(plan.budget_gb, 2) if plan.budget_gb is not None else None,
    }
