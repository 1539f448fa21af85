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

from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from qwenocr.errors import InsufficientMemoryError, ModelUnavailableError, NothingFitsError, UsageError
from qwenocr.scan.progress import Reporter
from qwenocr.scan.request import ScanRequest
from qwenocr.store import files as model_files
from qwenocr.store.hub import offline_requested
from qwenocr.store.resolve import ModelFiles, resolve_local, resolve_target
from qwenocr.store.targets import plan_target, repo_model_target

if TYPE_CHECKING:
    from qwenocr.fit.hardware import Hardware
    from qwenocr.fit.plan import Plan


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
                _check_local_model_fits(local)
            return local, None
        if request.model.count("/") != 1:
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


def _check_local_model_fits(model: ModelFiles) -> None:
    """For --model PATH there is no plan: compare the files' size with free memory."""
    import psutil

    if model.path.is_file():
        # A split GGUF: every shard is loaded, not just the first.
        paths = sorted(model.path.parent.glob(model_files.split_model_glob(model.path.name))) or [model.path]
    else:
        paths = list(model.path.glob(model_files.MLX_WEIGHTS))
    if model.mmproj is not None:
        paths.append(model.mmproj)
    needed = sum(p.stat().st_size for p in paths) + 2**30  # + a 1 GiB margin for activations
    available = psutil.virtual_memory().available
    if needed > available:
        raise InsufficientMemoryError(
            f"{model.label} needs ~{needed / 1e9:.1f} GB of memory but {available / 1e9:.1f} GB is free now",
            "close other programs, use a smaller model, or pass --force",
        )


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
