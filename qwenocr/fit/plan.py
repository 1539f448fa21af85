"""Choose the model, precision and engine for a machine: one pure function, `make_plan`.

`doctor` shows the plan; `scan` runs it. Given a `Hardware` record (detected or
described) and optional preferences, `make_plan` estimates every variant x precision
of the Qwen 3.5 family (catalog.py) against the memory the machine can really use, and
keeps the reason for every yes and no.

The estimate (GB = 10^9 bytes), for one page at a time:

    weights                       the source's real size where the hub (or its cached
                                  facts, or a listing) gives it, else the catalog's figure;
                                  for MLX the repo holds the vision tower, so it is in here
  + vision projector              GGUF only: the mmproj file's size, else the vision
                                  tower at F16; MLX adds nothing (never counted twice)
  + KV cache                      full-attention layers only, at the OCR context:
                                  image tokens + prompt (64) + output budget, not 262K;
                                  plus the DeltaNet layers' fixed recurrent state
  + activation peak               vision attention scores: heads x patches^2 x 4 B
                                  (patches = 4 x image tokens: it grows with the
                                  square), the vision MLPs, and one 512-token prefill
                                  chunk through the language model incl. its logits
  + margin                        1 GiB

The budget it is checked against:

  * Apple Silicon: the GPU budget Metal allows now (the recommended working set, or
    `iogpu.wired_limit_mb` when set), not total RAM. It can be raised with
    `sudo sysctl iogpu.wired_limit_mb=N`, up to RAM minus what macOS needs
    (max(8 GiB, 10 % of RAM)). A pick that needs the raise carries the
    exact command in `advice` and in `needs_wired_limit_mb`; `scan` refuses to load it
    until the limit is raised.
  * NVIDIA: the sum of VRAM over all GPUs (llama.cpp splits layers across them,
    `tensor_split` in proportion to each GPU's VRAM), less 0.5 GB per GPU for the CUDA
    context. If nothing fits in VRAM, the plan falls back to the CPU and RAM.
  * CPU: available RAM (for a described machine: RAM less max(2 GiB, 10 %)).

Sources: each candidate carries where its files come from (fit/sources.py): a hub repo,
a local conversion ("convert", when no hub repo has MLX MXFP4 with the vision tower),
a model converted here before ("local"), or none. A candidate with no source is never
picked; a convert pick names the `qwenocr models convert` command and the ready GGUF
alternative on Metal. `facts` (gathered by store/verify.py) bring what the hub said.

The policy: MLX on Apple Silicon (MXFP4 as its 4-bit), GGUF through llama.cpp
elsewhere. Take the largest variant that fits at 4-bit; then the best precision of
that variant that still fits. Two refinements keep this honest:

  * A larger variant may need a raised wired limit (a real quality step is worth one
    sysctl); a higher precision of the same variant may not (8-bit over a good 4-bit is
    a small gain, decodes at half the speed, and isn't worth asking for sudo).
  * Speed: expected decode tokens/s = 0.6 x memory bandwidth / bytes read per token
    (weights x active/total params). A candidate under CRAWL_TOKENS_PER_S (2 tokens/s:
    several minutes per dense page) is not picked while a faster one fits; if
    everything that fits crawls, the fastest is picked. Unknown CPU bandwidth is taken
    as ASSUMED_CPU_BANDWIDTH_GBPS and said to be assumed.

`variant`, `quant` and `backend` force the pick: it is still estimated, and `fits` is
False with the reason when it won't fit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

from qwenocr.defaults import DEFAULT_MAX_IMAGE_TOKENS, DEFAULT_MAX_OUTPUT_TOKENS
from qwenocr.errors import UsageError
from qwenocr.fit import catalog, sources
from qwenocr.fit.catalog import GB, Variant
from qwenocr.fit.hardware import GIB, MIB, Hardware, hardware_profile, metal_default_budget_bytes
from qwenocr.fit.sources import NO_FACTS, ModelSource, SourceFacts

__all__ = [
    "Budget",
    "Candidate",
    "Estimate",
    "Plan",
    "check_family",
    "context_tokens",
    "decode_tokens_per_s",
    "estimate",
    "hardware_profile",  # the what-if constructor lives in hardware.py; offered here too
    "make_plan",
    "wired_limit_command",
]

# --- the constants of the estimate and the policy (docs/hardware-fit.md) ---------------

PROMPT_TOKENS = 64  # chat template, instruction, vision start/end markers
PREFILL_CHUNK_TOKENS = 512  # llama.cpp's default micro-batch; the LM's activation peak
PATCHES_PER_IMAGE_TOKEN = 4  # 16 px patches merged 2x2 into one 32 px visual token
MARGIN_BYTES = GIB
# What to leave to the OS: max(minimum, 10 % of RAM). On Apple it caps how far the GPU
# wired limit may be raised: wired memory can't be paged out, and macOS with a desktop
# needs room, so the minimum is 8 GiB. On a described CPU machine (where no "available"
# figure exists) it stands in for what the OS and other programs use: 2 GiB minimum.
OS_RESERVE_FRACTION = 0.10
APPLE_RESERVE_MIN_BYTES = 8 * GIB
CPU_RESERVE_MIN_BYTES = 2 * GIB
CUDA_RESERVE_PER_GPU_GB = 0.5
# A raised wired limit covers the estimate (weights, KV cache, activations and the 1 GiB
# margin) plus this headroom, rounded up to a whole GiB: Metal's own buffers and mlx's
# temporaries come on top of what the model holds, and mlx warns above 90 % of the limit.
WIRED_HEADROOM_FRACTION = 0.05
WIRED_HEADROOM_MIN_BYTES = 2 * GIB
# A precision upgrade (8-bit over 4-bit, BF16 over 8-bit) may ask for a raised wired limit
# only when macOS keeps at least this much afterwards: max(32 GiB, 15 % of RAM). The base
# pick may go up to the OS reserve above; an upgrade is a luxury and keeps more back.
UPGRADE_RESERVE_FRACTION = 0.15
UPGRADE_RESERVE_MIN_BYTES = 32 * GIB
CRAWL_TOKENS_PER_S = 2.0
BANDWIDTH_EFFICIENCY = 0.6  # decode reaches about 60 % of peak memory bandwidth
ASSUMED_CPU_BANDWIDTH_GBPS = 25.0  # dual-channel DDR4 class; deliberately modest
DENSE_PAGE_TOKENS = 1000  # a page of dense text, for "minutes per page" advice

_BACKEND_ALIASES = {
    "mlx": "mlx",
    "mlx-vlm": "mlx",
    "mlx_vlm": "mlx",
    "llama.cpp": "llama.cpp",
    "llamacpp": "llama.cpp",
    "llama-cpp": "llama.cpp",
    "llama_cpp": "llama.cpp",
    "llama": "llama.cpp",
    "gguf": "llama.cpp",
}


@dataclass(frozen=True)
class Estimate:
    """Memory one page needs, by part, in GB. `weights_from`: "hub", "cache", "listing",
    "local" (real sizes) or "table"; MLX weights include the vision tower (vision_gb 0)."""

    weights_gb: float
    vision_gb: float
    kv_gb: float
    activations_gb: float
    margin_gb: float
    weights_from: str = "table"

    @property
    def total_gb(self) -> float:
        return round(self.weights_gb + self.vision_gb + self.kv_gb + self.activations_gb + self.margin_gb, 2)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["total_gb"] = self.total_gb
        return data


@dataclass(frozen=True)
class Candidate:
    """One variant at one precision on one backend, judged against the budget."""

    variant: str
    quant: str
    bits: int
    backend: str
    device: str  # "metal" | "cuda" | "cpu"
    estimate: Estimate
    fits: bool  # fits in memory (on Apple: possibly after raising the wired limit)
    reason: str
    tokens_per_s: Optional[float]  # expected decode speed, None where not computable
    speed_assumed: bool  # tokens_per_s rests on an assumed bandwidth
    needs_wired_limit_mb: Optional[int]  # Apple: the sysctl value this one needs
    source: ModelSource
    family: str = sources.DEFAULT_FAMILY

    @property
    def available(self) -> bool:
        """Something can be loaded: a hub repo not rejected, a conversion, a local model."""
        return self.source.available

    @property
    def estimate_gb(self) -> float:
        return self.estimate.total_gb

    @property
    def too_slow(self) -> bool:
        return self.tokens_per_s is not None and self.tokens_per_s < CRAWL_TOKENS_PER_S

    def to_dict(self) -> dict:
        return {
            "variant": self.variant,
            "quant": self.quant,
            "bits": self.bits,
            "backend": self.backend,
            "device": self.device,
            "estimate_gb": self.estimate_gb,
            "breakdown": self.estimate.to_dict(),
            "fits": self.fits,
            "reason": self.reason,
            "tokens_per_s": self.tokens_per_s,
            "speed_assumed": self.speed_assumed,
            "too_slow": self.too_slow,
            "needs_wired_limit_mb": self.needs_wired_limit_mb,
            "download_gb": self.source.download_gb,
            "family": self.family,
            "source": self.source.to_dict(),
            "rejected_sources": [r.to_dict() for r in self.source.rejected],
        }


@dataclass(frozen=True)
class Budget:
    """The memory a model may use, in GB. `max_gb` > `gb` only on Apple (raisable)."""

    kind: str  # "metal" | "vram" | "ram"
    gb: Optional[float]
    max_gb: Optional[float]
    note: str
    estimated: bool = False
    # Apple: how far a precision upgrade may raise the wired limit (UPGRADE_RESERVE_*).
    upgrade_max_gb: Optional[float] = None


@dataclass(frozen=True)
class Plan:
    """What to run and how, plus every alternative and why it wasn't chosen.

    `choice` is None (and `fits` False) when nothing fits; with a forced
    variant/quant, `choice` is that model even when `fits` is False.
    """

    hardware: Hardware
    backend: str  # "mlx" | "llama.cpp"
    device: str  # "metal" | "cuda" | "cpu"
    choice: Optional[Candidate]
    fits: bool
    variant: Optional[str]
    quant: Optional[str]
    bits: Optional[int]
    source: Optional[ModelSource]
    estimate_gb: Optional[float]
    estimate: Optional[Estimate]
    budget_gb: Optional[float]
    budget_max_gb: Optional[float]
    budget_note: str
    n_gpu_layers: int  # -1: all layers on the GPU; 0: CPU only
    tensor_split: Optional[List[float]]  # per-GPU fractions for llama.cpp, or None
    context_tokens: int  # n_ctx the model needs: image + prompt + output
    max_image_tokens: int
    max_output_tokens: int
    tokens_per_s: Optional[float]
    needs_wired_limit_mb: Optional[int]
    candidates: Tuple[Candidate, ...]
    advice: List[str]
    reason: str
    overrides: Dict[str, Optional[str]] = field(default_factory=dict)
    family: str = sources.DEFAULT_FAMILY
    # A convert pick: the ready GGUF (llama.cpp on the same device) a user can run now.
    alternative: Optional[Candidate] = None
    # How the sources were checked (store/verify.py): hub, cache, offline; "" when not asked.
    sources_note: str = ""

    def to_dict(self) -> dict:
        choice = None
        if self.choice is not None and self.source is not None:
            choice = {
                "variant": self.variant,
                "quant": self.quant,
                "bits": self.bits,
                "backend": self.backend,
                "device": self.device,
                "repo": self.source.repo,
                "files": list(self.source.files),
                "mmproj": self.source.mmproj,
                "download_gb": self.source.download_gb,
                "estimate_gb": self.estimate_gb,
                "breakdown": self.estimate.to_dict() if self.estimate else None,
                "fits": self.fits,
                "tokens_per_s": self.tokens_per_s,
                "n_gpu_layers": self.n_gpu_layers,
                "tensor_split": self.tensor_split,
                "n_ctx": self.context_tokens,
                "needs_wired_limit_mb": self.needs_wired_limit_mb,
                "family": self.family,
                "source": self.source.to_dict(),
                "rejected_sources": [r.to_dict() for r in self.source.rejected],
            }
        return {
            "family": self.family,
            "backend": self.backend,
            "device": self.device,
            "fits": self.fits,
            "reason": self.reason,
            "budget": {"gb": self.budget_gb, "max_gb": self.budget_max_gb, "note": self.budget_note},
            "settings": {
                "max_image_tokens": self.max_image_tokens,
                "max_output_tokens": self.max_output_tokens,
                "context_tokens": self.context_tokens,
            },
            "overrides": dict(self.overrides),
            "choice": choice,
            "alternative": self.alternative.to_dict() if self.alternative else None,
            "sources_note": self.sources_note,
            "candidates": [c.to_dict() for c in self.candidates],
            "advice": list(self.advice),
        }


# --- the estimate ------------------------------------------------------------------------


def context_tokens(max_image_tokens: int, max_output_tokens: int) -> int:
    """The context one page needs: its image tokens, the prompt, the output budget."""
    return max_image_tokens + PROMPT_TOKENS + max_output_tokens


def estimate(
    variant: "Variant | str",
    bits: int,
    *,
    max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS,
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    backend: str = "llama.cpp",
    source: Optional[ModelSource] = None,
) -> Estimate:
    """Memory for one page with `variant` at `bits` on `backend` (see the module
    docstring); `source` brings real file sizes where known."""
    v = catalog.get_variant(variant) if isinstance(variant, str) else variant
    ctx = context_tokens(max_image_tokens, max_output_tokens)
    kv = v.kv_bytes_per_token * ctx + v.recurrent_state_bytes
    patches = PATCHES_PER_IMAGE_TOKEN * max_image_tokens
    vision_attention = v.vision.heads * patches * patches * 4  # fp32 scores, one layer
    vision_mlp = patches * (4 * v.vision.width + 2 * v.vision.intermediate) * 4
    chunk = min(PREFILL_CHUNK_TOKENS, max_image_tokens + PROMPT_TOKENS)
    lm = chunk * (catalog.VOCAB_SIZE + 16 * v.hidden_size) * 4
    weights_from = "table"
    if source is not None and source.weights_bytes is not None:
        weights, weights_from = source.weights_bytes / GB, source.size_from
    elif backend == "mlx":
        weights = v.mlx_gb(bits)
    else:
        weights = v.weights_gb(bits)
    if backend == "mlx":
        vision = 0.0  # an MLX repo holds the vision tower: it is in the weights
    elif source is not None and source.mmproj_bytes is not None:
        vision = round(source.mmproj_bytes / GB, 2)
    else:
        vision = v.vision_gb
    return Estimate(
        weights_gb=round(weights, 2),
        vision_gb=vision,
        kv_gb=round(kv / GB, 2),
        activations_gb=round((vision_attention + vision_mlp + lm) / GB, 2),
        margin_gb=round(MARGIN_BYTES / GB, 2),
        weights_from=weights_from,
    )


def decode_tokens_per_s(
    variant: "Variant | str", bits: int, bandwidth_gbps: Optional[float], weights_gb: Optional[float] = None
) -> Optional[float]:
    """Expected decode speed: 0.6 x bandwidth / bytes read per token (active weights)."""
    if not bandwidth_gbps:
        return None
    v = catalog.get_variant(variant) if isinstance(variant, str) else variant
    per_token_gb = (weights_gb or v.weights_gb(bits)) * v.active_params_b / v.total_params_b
    return round(BANDWIDTH_EFFICIENCY * bandwidth_gbps / per_token_gb, 1)


def os_reserve_bytes(ram_bytes: int, device: str = "metal") -> int:
    """What to leave to the OS and other programs: max(8 GiB on Apple / 2 GiB on a CPU
    machine, 10 % of RAM)."""
    minimum = APPLE_RESERVE_MIN_BYTES if device == "metal" else CPU_RESERVE_MIN_BYTES
    return max(minimum, int(ram_bytes * OS_RESERVE_FRACTION))


def upgrade_reserve_bytes(ram_bytes: int) -> int:
    """What macOS keeps when a precision upgrade raises the wired limit: max(32 GiB, 15 %)."""
    return max(UPGRADE_RESERVE_MIN_BYTES, int(ram_bytes * UPGRADE_RESERVE_FRACTION))


def wired_limit_command(mb: int) -> str:
    """The command that lets Metal wire `mb` MiB (until reboot): the one place it is written."""
    return f"sudo sysctl iogpu.wired_limit_mb={mb}"


# --- the budget ---------------------------------------------------------------------------


def _budget(hw: Hardware, device: str) -> Budget:
    if device == "metal":
        ram = hw.ram_total_bytes
        current = hw.metal_budget_bytes
        estimated = hw.metal_budget_estimated
        if current is None and ram:
            current, estimated = metal_default_budget_bytes(ram), True
        if current is None:
            return Budget("metal", None, None, "GPU budget unknown (unified memory not detected)")
        ceiling = max(current, ram - os_reserve_bytes(ram)) if ram else current
        source = {
            "metal": "Metal's recommended working set",
            "wired-limit": f"iogpu.wired_limit_mb={hw.wired_limit_mb}",
            "default-rule": "macOS's default rule (2/3 of RAM up to 32 GiB, 3/4 above)",
        }.get(hw.metal_budget_source or "default-rule", "macOS's default rule")
        note = f"GPU budget {current / GB:.1f} GB from {source}{' (estimated)' if estimated else ''}"
        if ram and ceiling > current:  # (without RAM the ceiling is the current budget)
            note += (
                f"; can be raised to {ceiling / GB:.1f} GB (RAM less {os_reserve_bytes(ram) / GIB:.0f} GiB for macOS)"
            )
        upgrade_ceiling = max(current, ram - upgrade_reserve_bytes(ram)) if ram else current
        return Budget(
            "metal", round(current / GB, 2), round(ceiling / GB, 2), note, estimated, round(upgrade_ceiling / GB, 2)
        )
    if device == "cuda":
        total = hw.vram_total_bytes
        if total is None:
            return Budget("vram", None, None, "VRAM unknown (the driver did not report it)")
        usable = total / GB - CUDA_RESERVE_PER_GPU_GB * len(hw.gpus)
        n = len(hw.gpus)
        note = (
            f"VRAM of {n} GPU{'s' if n > 1 else ''}: {total / GB:.1f} GB"
            f" less {CUDA_RESERVE_PER_GPU_GB:g} GB per GPU for the CUDA context"
        )
        return Budget("vram", round(usable, 2), round(usable, 2), note)
    # CPU: available RAM where measured, else RAM less the OS reserve.
    if hw.ram_available_bytes is not None:
        gb = hw.ram_available_bytes / GB
        return Budget("ram", round(gb, 2), round(gb, 2), f"available RAM {gb:.1f} GB")
    if hw.ram_total_bytes:
        reserve = os_reserve_bytes(hw.ram_total_bytes, "cpu")
        usable = hw.ram_total_bytes - reserve
        note = f"RAM {hw.ram_total_bytes / GB:.1f} GB less {reserve / GB:.1f} GB for the OS and other programs"
        return Budget("ram", round(usable / GB, 2), round(usable / GB, 2), note)
    return Budget("ram", None, None, "RAM unknown")


def _bandwidth(hw: Hardware, device: str) -> Tuple[Optional[float], bool]:
    """(GB/s the weights are read at, whether it is assumed)."""
    if device == "cuda":
        figures = [g.bandwidth_gbps for g in hw.gpus if g.bandwidth_gbps]
        # Layers run one GPU after another, so a split model decodes at the slowest's pace;
        # one GPU of unknown bandwidth makes the pace unknown.
        return (min(figures), False) if figures and len(figures) == len(hw.gpus) else (None, False)
    if device == "metal":
        return hw.memory_bandwidth_gbps, False
    if hw.memory_bandwidth_gbps:
        return hw.memory_bandwidth_gbps, False
    return ASSUMED_CPU_BANDWIDTH_GBPS, True


# --- candidates ---------------------------------------------------------------------------


def _candidate(
    v: Variant,
    bits: int,
    backend: str,
    device: str,
    budget: Budget,
    bandwidth: Tuple[Optional[float], bool],
    max_image_tokens: int,
    max_output_tokens: int,
    family: str = sources.DEFAULT_FAMILY,
    facts: SourceFacts = NO_FACTS,
) -> Candidate:
    source = sources.resolve_source(family, v, bits, backend, facts)
    est = estimate(
        v, bits, max_image_tokens=max_image_tokens, max_output_tokens=max_output_tokens, backend=backend, source=source
    )
    total = est.total_gb
    real_weights = est.weights_gb if est.weights_from != "table" else None
    speed = decode_tokens_per_s(v, bits, bandwidth[0], real_weights)
    needs_mb = None
    if budget.gb is None or budget.max_gb is None:
        fits, reason = False, f"can't tell: {budget.note}"
    elif total <= budget.gb:
        fits, reason = True, f"fits: {total:.1f} of {budget.gb:.1f} GB"
    elif _wired_limit_mb(total) * MIB <= budget.max_gb * GB:
        fits = True
        needs_mb = _wired_limit_mb(total)
        reason = (
            f"fits only with a raised GPU wired limit: {total:.1f} GB > {budget.gb:.1f} GB allowed now"
            f" (up to {budget.max_gb:.1f} GB possible)"
        )
    else:
        what = {"metal": "GPU memory", "vram": "VRAM", "ram": "RAM"}[budget.kind]
        limit = budget.max_gb
        fits = False
        if total <= limit:  # Apple: it is the wired limit's headroom that does not fit
            wired_gb = _wired_limit_mb(total) * MIB / GB
            reason = f"{wired_gb:.1f} GB with the wired limit's headroom, over the {limit:.1f} GB {what} budget"
        else:
            reason = f"{total - limit:.1f} GB over the {limit:.1f} GB {what} budget"
    if fits and speed is not None and speed < CRAWL_TOKENS_PER_S:
        reason += f"; but ~{speed:.1f} tokens/s is below the {CRAWL_TOKENS_PER_S:g} tokens/s floor"
    if not source.available:
        reason += f"; {source.status}"
    elif source.kind == "convert":
        reason += "; no hub repo passed: convert locally"
    return Candidate(
        variant=v.name,
        quant=catalog.quant_name(backend, bits),
        bits=bits,
        backend=backend,
        device=device,
        estimate=est,
        fits=fits,
        reason=reason,
        tokens_per_s=speed,
        speed_assumed=bandwidth[1] and speed is not None,
        needs_wired_limit_mb=needs_mb,
        source=source,
        family=family,
    )


def _wired_limit_mb(total_gb: float) -> int:
    """The sysctl value for a load of `total_gb`: the estimate plus the headroom (5 %, at
    least 2 GiB), rounded up to a whole GiB, in MiB."""
    total = total_gb * GB
    headroom = max(WIRED_HEADROOM_MIN_BYTES, total * WIRED_HEADROOM_FRACTION)
    return math.ceil((total + headroom) / GIB) * 1024


def _select(cands: Sequence[Candidate], budget: Budget) -> Tuple[Optional[Candidate], bool]:
    """The policy. Returns (choice, whether everything that fits crawls)."""
    fitting = [c for c in cands if c.fits and c.available]
    if not fitting:
        return None, False
    pool = [c for c in fitting if not c.too_slow]
    crawling = False
    if not pool:
        crawling = True
        pool = [max(fitting, key=lambda c: (c.tokens_per_s or 0.0, -c.estimate_gb))]
    order = {name: i for i, name in enumerate(catalog.variant_names())}
    largest = max(pool, key=lambda c: order[c.variant]).variant
    same = sorted((c for c in pool if c.variant == largest), key=lambda c: c.bits)
    base = same[0]
    # A higher precision when it fits as things are, or (Apple) when the raise it needs
    # still leaves macOS the upgrade reserve.
    upgrade_max = budget.upgrade_max_gb
    better = [
        c
        for c in same[1:]
        if c.needs_wired_limit_mb is None
        or (upgrade_max is not None and c.needs_wired_limit_mb * MIB <= upgrade_max * GB)
    ]
    return (better[-1] if better else base), crawling


# --- the plan --------------------------------------------------------------------------------


def _normalize_backend(backend: Optional[str]) -> Optional[str]:
    if backend is None:
        return None
    key = backend.strip().lower()
    if key not in _BACKEND_ALIASES:
        raise UsageError(f"unknown backend {backend!r}", "use mlx or llama.cpp")
    return _BACKEND_ALIASES[key]


def make_plan(
    hardware: Hardware,
    *,
    variant: Optional[str] = None,
    quant: Optional[str] = None,
    backend: Optional[str] = None,
    max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS,
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    family: Optional[str] = None,
    facts: SourceFacts = NO_FACTS,
) -> Plan:
    """The plan for `hardware`; `variant`, `quant`, `backend` force the pick. `family`
    ("3.5", the default, or "3.6") says which models; `facts` what the hub said of
    their sources (store/verify.py gathers them; without them: the data alone).

    Raises `UsageError` for a family, variant, quant or backend it doesn't know, or a
    quant that belongs to another backend than the one asked for.
    """
    if max_image_tokens <= 0 or max_output_tokens <= 0:
        raise UsageError("token budgets must be positive")
    family = check_family(family)
    forced_backend = _normalize_backend(backend)
    forced_bits: Optional[int] = None
    if quant is not None:
        forced_backend, forced_bits = catalog.quant_for_backend(quant, forced_backend)
    forced_variant: Optional[Variant] = None
    if variant is not None:
        try:
            forced_variant = catalog.get_variant(variant)
        except KeyError:
            raise UsageError(
                f"unknown variant {variant!r}", "use one of " + ", ".join(sources.family_variants(family))
            ) from None
        check_family_variant(family, forced_variant.name)

    chosen_backend = forced_backend or ("mlx" if hardware.platform == "apple" else "llama.cpp")
    if hardware.platform == "apple":
        device = "metal"  # both engines use Metal there
    elif hardware.platform == "cuda" and chosen_backend == "llama.cpp":
        device = "cuda"
    else:
        device = "cpu"  # includes MLX off Apple Silicon (mlx[cpu])
    overrides = {"variant": variant, "quant": quant, "backend": backend}
    if family != sources.DEFAULT_FAMILY:
        overrides["family"] = family

    def plan_on(on_device: str, on_backend: str) -> Plan:
        return _plan_on(
            hardware,
            on_device,
            on_backend,
            forced_variant,
            forced_bits if on_backend == chosen_backend else None,
            max_image_tokens,
            max_output_tokens,
            overrides,
            family,
            facts,
        )

    plan = plan_on(device, chosen_backend)
    if plan.choice is not None and plan.choice.source.kind == "convert":
        plan = _with_alternative(plan, plan_on(device, "llama.cpp"))
    if device == "cuda" and not plan.fits and hardware.ram_total_bytes:
        on_cpu = plan_on("cpu", chosen_backend)
        if on_cpu.fits:
            advice = [
                f"Nothing fits in the GPUs' VRAM ({plan.budget_gb:.1f} GB usable); this plan runs on the CPU from RAM"
                " (n_gpu_layers=0), which is much slower. A smaller --max-image-tokens may make a model fit the GPU."
            ] + on_cpu.advice
            return replace(on_cpu, advice=advice)
    return plan


def _plan_on(
    hw: Hardware,
    device: str,
    backend: str,
    forced_variant: Optional[Variant],
    forced_bits: Optional[int],
    max_image_tokens: int,
    max_output_tokens: int,
    overrides: Dict[str, Optional[str]],
    family: str = sources.DEFAULT_FAMILY,
    facts: SourceFacts = NO_FACTS,
) -> Plan:
    budget = _budget(hw, device)
    bandwidth = _bandwidth(hw, device)
    names = sources.family_variants(family)
    cands = tuple(
        _candidate(v, bits, backend, device, budget, bandwidth, max_image_tokens, max_output_tokens, family, facts)
        for v in catalog.VARIANTS
        if v.name in names
        for bits in catalog.BITS
    )
    eligible = [
        c
        for c in cands
        if (forced_variant is None or c.variant == forced_variant.name)
        and (forced_bits is None or c.bits == forced_bits)
    ]
    choice, crawling = _select(eligible, budget)
    forced = forced_variant is not None or forced_bits is not None
    if choice is None and forced and eligible:
        # The user asked for it: keep it as the pick, marked as not fitting (or without
        # a source: then the reason says so and `scan` refuses it before loading).
        choice = min(eligible, key=lambda c: c.estimate_gb)

    advice: List[str] = []
    reason = _reason(choice, eligible, budget, forced, crawling)
    if choice is not None:
        if choice.needs_wired_limit_mb is not None:
            advice.append(
                f"{choice.variant} {choice.quant} needs {choice.estimate_gb:.1f} GB of GPU memory but macOS lets"
                f" the GPU use {budget.gb:.1f} GB now. Raise the limit before scanning (it resets at reboot): "
                + wired_limit_command(choice.needs_wired_limit_mb)
            )
        if device == "metal" and budget.estimated and not hw.what_if:
            advice.append(
                "The GPU budget is estimated by macOS's default rule: install mlx so that qwenocr can ask Metal."
            )
        if device == "cuda" and choice.fits and not hw.what_if:
            free = hw.vram_free_bytes
            if free is not None and free / GB < choice.estimate_gb:
                advice.append(
                    f"Only {free / GB:.1f} GB of VRAM is free now (other programs hold the rest);"
                    f" {choice.variant} {choice.quant} needs {choice.estimate_gb:.1f} GB. Close them before scanning."
                )
        if choice.tokens_per_s is not None and (device == "cpu" or choice.too_slow):
            minutes = DENSE_PAGE_TOKENS / choice.tokens_per_s / 60
            assumed = (
                f" (assuming {ASSUMED_CPU_BANDWIDTH_GBPS:g} GB/s of memory bandwidth: this CPU's is unknown)"
                if choice.speed_assumed
                else ""
            )
            advice.append(
                f"Expect about {choice.tokens_per_s:.1f} tokens/s{assumed}: roughly {minutes:.0f} min for a dense page"
                f" of {DENSE_PAGE_TOKENS:,} tokens."
            )
        if crawling:
            advice.append(
                f"Everything that fits decodes below {CRAWL_TOKENS_PER_S:g} tokens/s here; this is the fastest of them."
            )
        if choice.source.kind == "convert":
            src = choice.source
            rejected = "; ".join(f"{r.repo}: {r.reason}" for r in src.rejected)
            advice.append(
                f"No hub repo has Qwen{family}-{choice.variant} in MXFP4 with its vision tower"
                + (f" ({rejected})" if rejected else " (none is known)")
                + f". Make it here: `{src.command}` (downloads ~{src.download_gb:g} GB of BF16 weights and needs"
                f" ~{src.disk_gb:g} GB of disk: source + result)."
            )
        elif not choice.source.available:
            advice.append(f"{choice.variant} {choice.quant}: {choice.source.status}.")
        if not choice.fits and budget.gb is not None:
            advice.append(
                f"{choice.variant} {choice.quant} does not fit. Drop --variant/--quant to let qwenocr choose,"
                " or lower --max-image-tokens."
            )
    elif budget.gb is not None and any(c.fits for c in eligible):
        advice.append(
            f"What fits here has no known source for Qwen{family} on {backend} (docs/model-sources.md):"
            " try the other --backend, or --family 3.5."
        )
    elif budget.gb is not None:
        smallest = min(cands, key=lambda c: c.estimate_gb)
        advice.append(
            f"The smallest model, {smallest.variant} {smallest.quant}, needs {smallest.estimate_gb:.1f} GB;"
            f" this machine allows {budget.max_gb:.1f} GB. A smaller --max-image-tokens lowers the estimate."
        )

    tensor_split = None
    if device == "cuda" and len(hw.gpus) > 1 and hw.vram_total_bytes:
        total = hw.vram_total_bytes
        tensor_split = [round(g.total_bytes / total, 4) for g in hw.gpus]  # type: ignore[operator]

    return Plan(
        hardware=hw,
        backend=backend,
        device=device,
        choice=choice,
        fits=bool(choice and choice.fits),
        variant=choice.variant if choice else None,
        quant=choice.quant if choice else None,
        bits=choice.bits if choice else None,
        source=choice.source if choice else None,
        estimate_gb=choice.estimate_gb if choice else None,
        estimate=choice.estimate if choice else None,
        budget_gb=budget.gb,
        budget_max_gb=budget.max_gb,
        budget_note=budget.note,
        n_gpu_layers=0 if device == "cpu" else -1,
        tensor_split=tensor_split,
        context_tokens=context_tokens(max_image_tokens, max_output_tokens),
        max_image_tokens=max_image_tokens,
        max_output_tokens=max_output_tokens,
        tokens_per_s=choice.tokens_per_s if choice else None,
        needs_wired_limit_mb=choice.needs_wired_limit_mb if choice and choice.fits else None,
        candidates=cands,
        advice=advice,
        reason=reason,
        overrides={k: v for k, v in overrides.items() if v is not None},
        family=family,
    )


def _with_alternative(plan: Plan, gguf: Plan) -> Plan:
    """A convert pick, with the GGUF on the same device that runs without converting."""
    alt = gguf.choice if gguf.choice is not None and gguf.fits else None
    if alt is None:
        line = f"No ready GGUF alternative fits here for Qwen{plan.family} (llama.cpp)."
    else:
        line = (
            f"Ready now without converting: {alt.variant} {alt.quant} GGUF from {alt.source.repo} via llama.cpp on"
            f" {alt.device} ({alt.estimate_gb:.1f} GB): `qwenocr scan --backend llama.cpp`"
            + (f" (after `{wired_limit_command(alt.needs_wired_limit_mb)}`)" if alt.needs_wired_limit_mb else "")
            + "."
        )
    return replace(plan, alternative=alt, advice=plan.advice + [line])


def check_family_variant(family: str, variant: str) -> None:
    """A UsageError naming the family's variants when `variant` is not one of them."""
    try:
        name = catalog.get_variant(variant).name
    except KeyError:
        name = variant
    if name not in sources.family_variants(family):
        raise UsageError(
            f"Qwen{family} has no {name}", f"with --family {family} use " + " or ".join(sources.family_variants(family))
        )


def check_family(family: Optional[str]) -> str:
    """The family asked for ("3.5" when None); a UsageError names the known ones."""
    if family is None:
        return sources.DEFAULT_FAMILY
    key = family.strip().lower().removeprefix("qwen").removeprefix("-")
    if key not in sources.FAMILIES:
        raise UsageError(f"unknown model family {family!r}", "use " + " or ".join(sources.FAMILIES))
    return key


def _reason(
    choice: Optional[Candidate], eligible: Sequence[Candidate], budget: Budget, forced: bool, crawling: bool
) -> str:
    if choice is None:
        if budget.gb is None:
            return f"can't choose: {budget.note}"
        if any(c.fits for c in eligible):
            return "nothing that fits has a known source: " + next(c.source.status for c in eligible if c.fits)
        return f"nothing fits: {budget.note}"
    name = f"{choice.variant} {choice.quant}"
    if not choice.fits:
        return f"{name} was asked for but does not fit: {choice.reason}"
    if not choice.available:
        return f"{name} was asked for but has no source: {choice.source.status}"
    if crawling:
        return f"{name}: everything that fits is slow here; this is the fastest"
    higher = [c for c in eligible if c.variant == choice.variant and c.bits > choice.bits]
    detail = ""
    if higher:
        nxt = higher[0]
        if not nxt.fits:
            detail = f"; {nxt.quant} would need {nxt.estimate_gb:.1f} GB"
        elif nxt.too_slow:
            detail = f"; {nxt.quant} would decode at only ~{nxt.tokens_per_s:.1f} tokens/s"
        else:
            detail = (
                f"; {nxt.quant} would need a raised wired limit that leaves macOS less than a precision upgrade"
                " may (max(32 GiB, 15 % of RAM))"
            )
    if choice.source.kind == "convert":
        detail += "; no hub repo has it with the vision tower: convert it locally (see the advice)"
    if forced:
        return f"{name}: the best fit among the models asked for ({choice.reason}){detail}"
    return f"{name}: the largest variant that fits at 4-bit, at the best precision that still fits{detail}"
