"""What a command names: a catalog model (variant × precision × engine), or files of any repo.

`models list/pull/rm/path` and `scan` all turn what the user asked for into `Target`s;
the cache, the hub and the resolver work on those. A catalog model's repo and files come
from fit/sources.py (its first candidate, or the one verification chose for a plan),
never from a name pattern: a model no hub repo is known for has no `Target` (an MLX
MXFP4 one is made with `qwenocr models convert`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from qwenocr.errors import ModelUnavailableError, UsageError
from qwenocr.fit import catalog, sources
from qwenocr.store import files

if TYPE_CHECKING:
    from qwenocr.fit.hardware import Hardware
    from qwenocr.fit.plan import Plan


@dataclass(frozen=True)
class Target:
    """A model a command names: a catalog entry, or files of any repo.

    `patterns` are globs relative to the repo (empty: every file of the repo).
    """

    repo: str
    patterns: Tuple[str, ...]
    backend: Optional[str]  # "mlx" | "llama.cpp", None for a --repo
    variant: Optional[str] = None
    quant: Optional[str] = None
    bits: Optional[int] = None
    mmproj: Optional[str] = None
    download_gb: Optional[float] = None

    @property
    def label(self) -> str:
        if self.variant is not None:
            return f"{self.variant} {self.quant} ({self.backend})"
        return self.repo + (f" [{' '.join(self.patterns)}]" if self.patterns else "")

    @property
    def required_patterns(self) -> Tuple[str, ...]:
        """What must be there for the model to be complete (an MLX repo's extras may not be)."""
        if self.backend == "mlx":
            return files.MLX_REQUIRED
        return self.patterns

    def matches(self, path: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatch(path, pattern) for pattern in self.patterns)

    def missing_from(self, names: Sequence[str]) -> List[str]:
        """The required patterns that none of `names` matches."""
        return files.unmatched(self.required_patterns, names)

    def pull_command(self) -> str:
        if self.variant is not None:
            return f"qwenocr models pull {self.variant} --quant {self.quant} --backend {self.backend}"
        # `pull --repo` requires every --include to match, and an MLX repo's extras vary:
        # such a repo is pulled whole (it holds one model).
        includes = () if self.backend == "mlx" else self.patterns
        return "qwenocr models pull --repo " + self.repo + "".join(f" --include '{p}'" for p in includes)


def _source_target(v: catalog.Variant, bits: int, backend: str, source: sources.ModelSource) -> Target:
    return Target(
        repo=source.repo,
        patterns=tuple(source.files),
        backend=backend,
        variant=v.name,
        quant=catalog.quant_name(backend, bits),
        bits=bits,
        mmproj=source.mmproj,
        download_gb=source.download_gb,
    )


def no_source_error(source: sources.ModelSource, label: str) -> ModelUnavailableError:
    """A catalog model with no hub repo to download (one line, with what to do)."""
    rejected = "; ".join(f"{r.repo}: {r.reason}" for r in source.rejected)
    why = f" ({rejected})" if rejected else ""
    if source.kind == "convert":
        return ModelUnavailableError(
            f"no hub repo has {label} with its vision tower{why}",
            f"make it with `{source.command}` (downloads ~{source.download_gb:g} GB, needs ~{source.disk_gb:g} GB"
            " of disk), or use the ready GGUF on Metal with --backend llama.cpp",
        )
    return ModelUnavailableError(f"{source.status}{why}", "pick another --quant or --backend (`qwenocr doctor`)")


def catalog_target(
    variant: "catalog.Variant | str", bits: int, backend: str, family: str = sources.DEFAULT_FAMILY
) -> Target:
    """The first known repo of a catalog model; ModelUnavailableError when none is known."""
    v = catalog.get_variant(variant) if isinstance(variant, str) else variant
    source = sources.model_source(v, bits, backend, family)
    if source.kind != "hub":
        raise no_source_error(source, f"Qwen{family}-{v.name} {catalog.quant_name(backend, bits)} ({backend})")
    return _source_target(v, bits, backend, source)


def _has_hub_source(v: catalog.Variant, bits: int, backend: str) -> bool:
    return bool(sources.candidates(sources.DEFAULT_FAMILY, v.name, backend, bits))


def planned_target(
    variant: str, quant: Optional[str], backend: Optional[str], hardware: "Optional[Hardware]" = None
) -> "Tuple[Target, Plan]":
    """The model `scan --variant VARIANT` would load here: `doctor`'s plan fills in quant/backend.

    Returns (target, plan). Unknown names are a UsageError (from the planner).
    """
    from qwenocr.fit.plan import make_plan

    if hardware is None:
        from qwenocr.fit.hardware import detect

        hardware = detect()
    plan = make_plan(hardware, variant=variant, quant=quant, backend=backend)
    return plan_target(plan), plan


def plan_target(plan: "Plan") -> Target:
    """The repo a plan picked (a forced pick that does not fit included): the candidate
    verification chose, or the first known one. ModelUnavailableError without a hub repo."""
    if plan.variant is None or plan.bits is None or plan.source is None:
        raise ValueError("the plan chose no model")
    v = catalog.get_variant(plan.variant)
    if plan.source.kind != "hub":
        raise no_source_error(plan.source, f"Qwen{plan.family}-{v.name} {plan.quant} ({plan.backend})")
    return _source_target(v, plan.bits, plan.backend, plan.source)


def variant_targets(variant: str, quant: Optional[str], backend: Optional[str]) -> List[Target]:
    """Every catalog entry of `variant` (for `rm`): all precisions and both backends unless narrowed."""
    try:
        v = catalog.get_variant(variant)
    except KeyError:
        raise UsageError(f"unknown variant {variant!r}", "use one of " + ", ".join(catalog.variant_names())) from None
    bits_wanted: Sequence[int] = catalog.BITS
    backends: Sequence[str] = (backend,) if backend else catalog.BACKENDS
    if quant is not None:
        chosen, bits = catalog.quant_for_backend(quant, backend)
        bits_wanted = (bits,)
        backends = (chosen,) if chosen else backends
    return [catalog_target(v, bits, b) for b in backends for bits in bits_wanted if _has_hub_source(v, bits, b)]


def repo_target(repo: str, include: Sequence[str] = ()) -> Target:
    repo = repo.strip()
    org, _, name = repo.partition("/")
    if not org or not name or "/" in name or any(ch.isspace() for ch in repo):
        raise UsageError(
            f"--repo {repo!r} is not a Hugging Face repo id", "write it as ORG/NAME, e.g. unsloth/Qwen3.5-9B-GGUF"
        )
    patterns = tuple(p.strip() for p in include if p.strip())
    return Target(repo=repo, patterns=patterns, backend=None)


def repo_model_target(repo: str, backend: str, quant: Optional[str]) -> Target:
    """What `scan --model ORG/NAME` loads from a repo: an MLX model, or one quantisation of
    a GGUF repo (--quant, else Q4_K_M) with its projector."""
    patterns = files.MLX_FILES if backend == "mlx" else files.gguf_patterns(quant or files.DEFAULT_GGUF_QUANT)
    return Target(repo=repo, patterns=tuple(patterns), backend=backend)


def catalog_targets(backends: Sequence[str]) -> List[Target]:
    """Every catalog model a hub repo is known for (models made by `models convert` are
    the registry's, not the hub cache's)."""
    return [
        catalog_target(v, bits, b)
        for b in backends
        for v in catalog.VARIANTS
        for bits in catalog.BITS
        if _has_hub_source(v, bits, b)
    ]
