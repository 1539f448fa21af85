"""Which model files a scan loads: `--model` (a path or a repo id) or the hardware plan.

A model that will not fit is refused here, before anything is downloaded or loaded.
"""

from __future__ import annotations

from typing import Optional

from qwenocr.errors import UsageError
from qwenocr.scan.progress import Reporter
from qwenocr.scan.request import ScanRequest
from qwenocr.store.resolve import ModelFiles


def resolve_model(request: ScanRequest, reporter: Reporter):
    """The model files to load, and the plan that chose them (None with --model PATH)."""
    from qwenocr.store.resolve import guess_backend_for_repo, offline_requested, resolve_local, resolve_repo

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
        backend = request.backend or guess_backend_for_repo(request.model)
        quant = request.quant or "Q4_K_M"
        if backend == "mlx":
            # Weights and config are required; tokenizer and template files vary by repo.
            patterns, mmproj, optional = (
                ["*.safetensors", "config.json"],
                [],
                ["*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken"],
            )
        else:
            patterns, mmproj, optional = [f"*{quant}*.gguf"], ["*mmproj*"], []
        return resolve_repo(request.model, backend, patterns, mmproj, offline, optional=optional), None

    from qwenocr.fit.hardware import detect
    from qwenocr.fit.plan import make_plan

    hardware = detect()
    plan = make_plan(
        hardware,
        variant=request.variant,
        quant=request.quant,
        backend=request.backend,
        max_image_tokens=request.options.render.max_image_tokens,
        max_output_tokens=request.options.generation.max_tokens,
    )
    if not request.force:
        check_plan(plan, hardware, request)
    source = plan.source
    reporter.info(
        f"plan: {plan.variant} {plan.quant} via {plan.backend} ({plan.estimate_gb:.1f} GB of {plan.budget_gb:.1f} GB)"
    )
    pull = f"qwenocr models pull {plan.variant} --quant {plan.quant} --backend {plan.backend}"
    files = resolve_repo(
        source.repo, plan.backend, list(source.files), [source.mmproj] if source.mmproj else [], offline, pull
    )
    return files, plan


def check_plan(plan, hardware, request: ScanRequest) -> None:
    """Refuse, before anything is downloaded or loaded, a model that won't fit now.

    A load that does not fit ends in swapping for minutes or in the OOM killer, with
    nothing to show for it; saying so up front, with the option that does fit, is kinder.
    """
    from qwenocr.errors import InsufficientMemoryError, NothingFitsError
    from qwenocr.fit.plan import make_plan

    overridden = bool(request.variant or request.quant)
    if plan.fits and not plan.needs_wired_limit_mb:
        return
    if plan.needs_wired_limit_mb:
        advice = next(
            (line for line in plan.advice if "sysctl" in line),
            f"sudo sysctl iogpu.wired_limit_mb={plan.needs_wired_limit_mb}",
        )
        raise InsufficientMemoryError(
            f"{plan.variant} {plan.quant} needs more GPU memory than macOS lets Metal wire now",
            f"run `{_sysctl_command(advice, plan.needs_wired_limit_mb)}` (until reboot), pick a smaller --variant, or pass --force",
        )
    if not overridden:
        raise NothingFitsError(
            plan.reason or "no Qwen 3.5 variant fits this machine's memory",
            "run `qwenocr doctor` to see every option and why it fails",
        )
    default = make_plan(
        hardware,
        backend=request.backend,
        max_image_tokens=request.options.render.max_image_tokens,
        max_output_tokens=request.options.generation.max_tokens,
    )
    fallback = (
        f"--variant {default.variant} --quant {default.quant} fits now"
        if default.fits
        else "nothing fits now (see `qwenocr doctor`)"
    )
    raise InsufficientMemoryError(
        f"{plan.variant} {plan.quant} needs ~{plan.estimate_gb:.1f} GB but {plan.budget_gb:.1f} GB is usable now",
        f"{fallback}; --force loads it anyway",
    )


def _sysctl_command(advice: str, megabytes: int) -> str:
    import re

    match = re.search(r"sudo sysctl iogpu\.wired_limit_mb=\d+", advice)
    return match.group(0) if match else f"sudo sysctl iogpu.wired_limit_mb={megabytes}"


def _check_local_model_fits(model: ModelFiles) -> None:
    """For --model PATH there is no plan: compare the files' size with free memory."""
    import psutil

    from qwenocr.errors import InsufficientMemoryError

    paths = [model.path] if model.path.is_file() else list(model.path.glob("*.safetensors"))
    if model.path.is_file():
        # A split GGUF: every shard is loaded, not just the first.
        paths = sorted(model.path.parent.glob(_shard_glob(model.path.name))) or paths
    if model.mmproj is not None:
        paths.append(model.mmproj)
    needed = sum(p.stat().st_size for p in paths) + 2**30  # + a 1 GiB margin for activations
    available = psutil.virtual_memory().available
    if needed > available:
        raise InsufficientMemoryError(
            f"{model.label} needs ~{needed / 1e9:.1f} GB of memory but {available / 1e9:.1f} GB is free now",
            "close other programs, use a smaller model, or pass --force",
        )


def _shard_glob(name: str) -> str:
    import re

    return re.sub(r"-\d{5}-of-(\d{5})\.gguf$", r"-*-of-\1.gguf", name)


def plan_record(plan) -> Optional[dict]:
    """What the output records of the plan (None when --model named the files)."""
    if plan is None:
        return None
    return {
        "variant": plan.variant,
        "quant": plan.quant,
        "bits": plan.bits,
        "backend": plan.backend,
        "repo": plan.source.repo,
        "estimate_gb": round(plan.estimate_gb, 2),
        "budget_gb": round(plan.budget_gb, 2) if plan.budget_gb is not None else None,
    }
