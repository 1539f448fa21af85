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
  + vision activations            the vision encoder's peak for one image, fitted to
                                  measurements (fit/vision_memory.py): attention scores
                                  heads x patches^2 x 4 B where they are materialised (not
                                  with llama.cpp's flash attention, which qwenocr turns
                                  on), the MLPs per patch, and the layer weights in fp32
  + text activations              one 512-token prefill chunk: 26 x hidden x 4 B per token,
                                  plus one row of logits
  = expected peak                 what the process should peak at while it reads a page
                                  (`expected_peak_gb`; within 4 % of the measured peak
                                  RSS of the real-dimension 0.8B)
  + margin                        1 GiB of headroom, kept free on top of the peak
  = total                         what must fit the budget (`total_gb`)

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
  * Speed (fit/speed.py): seconds per page = vision encode + prefill + decode, with
    decode tokens/s = 0.6 x memory bandwidth / bytes read per token (weights x
    active/total params) x the MoE efficiency measured in public (FACTS §13). On this
    machine's CPU the bandwidth and compute are measured (under a second); for a
    described CPU an unknown bandwidth is taken as ASSUMED_CPU_BANDWIDTH_GBPS and said
    to be assumed. A candidate under CRAWL_TOKENS_PER_S (2 tokens/s: several minutes
    per dense page) is not picked while a faster one fits; if everything that fits
    crawls, the fastest is picked. A higher precision is not taken where it makes a
    page much slower (UPGRADE_SLOWDOWN: over 1.25x and 20 s more per page).

Placement: every candidate says where it runs: "gpu" (NVIDIA VRAM; several GPUs split
the layers, and the first GPU, which also holds the vision projector and the vision
activations, is checked on its own: `tensor_split` gives it a smaller share when
needed), "gpu+cpu-experts" (an MoE model whose routed experts stay in RAM while the
rest is in VRAM: llama.cpp's tensor-buffer overrides; both budgets are checked, and it
is picked only for a better model than VRAM alone gives, at HYBRID_MIN_TOKENS_PER_S or
more), "cpu", or "unified" (Apple). `prefer` ("accuracy" or "speed") settles the
dense-or-MoE trade-off where both fit (`tradeoff` says what it is); with four or more
datacenter GPUs (or `serve=True`) the plan also says how to serve the model with vLLM or
SGLang (`serve`).

`variant`, `quant` and `backend` force the pick: it is still estimated, and `fits` is
False with the reason when it won't fit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

from qwenocr.defaults import DEFAULT_MAX_IMAGE_TOKENS, DEFAULT_MAX_OUTPUT_TOKENS
from qwenocr.errors import UsageError
from qwenocr.fit import catalog, sources, speed, vision_memory
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
# Headroom on top of the expected peak, not part of it: the expected peak (weights,
# projector, KV cache, activations) is within 4 % of the measured peak RSS of a page for
# the real-dimension 0.8B (docs/memory-measurements.md); the margin covers what varies
# around it (the allocator's fragmentation, buffers of other libraries, an unusual page).
MARGIN_BYTES = GIB
# Qwen 3.5's native context (max_position_embeddings; the GGUFs' context_length): the
# most a page can use, so the CLI bounds --max-tokens and --n-ctx by it (cli/options.py).
NATIVE_CONTEXT_TOKENS = 262_144
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
# Serving with vLLM/SGLang: the weights may take this share of the VRAM (the servers
# keep the rest for their KV cache and activations: vLLM's --gpu-memory-utilization 0.9).
SERVE_VRAM_FRACTION = 0.8
UPGRADE_RESERVE_MIN_BYTES = 32 * GIB
CRAWL_TOKENS_PER_S = 2.0
BANDWIDTH_EFFICIENCY = speed.BANDWIDTH_EFFICIENCY  # decode reaches ~60 % of peak bandwidth
ASSUMED_CPU_BANDWIDTH_GBPS = speed.ASSUMED_CPU_BANDWIDTH_GBPS  # DDR4 class; deliberately modest
# A described CPU's compute (no measurement possible): an 8-core AVX2 desktop's float32
# matmul rate, about 300 GFLOPS, kept modest.
ASSUMED_CPU_GFLOPS = 200.0
# A precision upgrade is not taken when it makes a page this much slower (both at once):
# 8-bit decodes at about half the speed of 4-bit, which matters where decode dominates.
UPGRADE_SLOWDOWN = 1.25
UPGRADE_EXTRA_SECONDS = 20.0
# Experts in RAM are worth it only for a better model at a useful speed.
HYBRID_MIN_TOKENS_PER_S = 5.0
# Serve advice (vLLM/SGLang, tensor parallel) from this many datacenter GPUs on.
SERVE_MIN_GPUS = 4
# Pages at once a plan proposes for a local engine (llama.cpp, MLX) when memory allows
# (`scan --batch` overrides): decode reads the weights once a step for every page in it, so pages/s
# grows with the batch until compute is the limit. Measured on a 2-core CPU with the
# real-dimension 0.8B (benchmarks/bench_batch.py, docs/performance.md): 1.47x at 2,
# 1.88x at 4, 2.06x at 8 pages of 128 tokens; the image prefill, one page at a time,
# bounds it. GPUs and Apple Silicon (MLX) are not measured yet: 8 there too.
PLANNED_BATCHES = (1, 2, 4, 8)
# The engines that decode several pages at once (engines/llamacpp_batch.py, mlx_batch.py).
BATCHING_BACKENDS = ("llama.cpp", "mlx")
PLANNED_BATCH_MAX = {"cpu": 8, "gpu": 8}
DATACENTER_GPU_NAMES = ("H100", "H200", "H800", "H20", "A100", "A800", "B100", "B200", "GH200", "L40", "MI2", "MI3")
PREFERENCES = ("accuracy", "speed")
# The llama.cpp GPU builds a plan's device may name (hardware.py's gpu_backends).
GPU_DEVICES = ("cuda", "hip", "vulkan")
# Accuracy order (most accurate last): as the catalog, except that 27B (dense) is more
# accurate than 35B-A3B (Unsloth's Qwen 3.5 guide: 27B the more accurate, 35B-A3B the
# much faster); the default order stays the catalog's (largest first).
ACCURACY_ORDER = ("0.8B", "2B", "4B", "9B", "35B-A3B", "27B", "122B-A10B", "397B-A17B")
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
    vision_activations_gb: float  # the vision encoder's peak for one image (fit/vision_memory.py)
    text_activations_gb: float  # the language model's prefill of the page
    margin_gb: float
    weights_from: str = "table"

    @property
    def activations_gb(self) -> float:
        """Both activation terms: what one page adds while it is read."""
        return round(self.vision_activations_gb + self.text_activations_gb, 2)

    @property
    def expected_peak_gb(self) -> float:
        """What the process should peak at while it reads a page: everything but the margin."""
        return round(
            self.weights_gb + self.vision_gb + self.kv_gb + self.vision_activations_gb + self.text_activations_gb, 2
        )

    @property
    def total_gb(self) -> float:
        """What must fit the budget: the expected peak and the margin kept free above it."""
        return round(self.expected_peak_gb + self.margin_gb, 2)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["activations_gb"] = self.activations_gb  # the sum, for readers of the old field
        data["expected_peak_gb"] = self.expected_peak_gb
        data["total_gb"] = self.total_gb
        return data


@dataclass(frozen=True)
class Candidate:
    """One variant at one precision on one backend, judged against the budget."""

    variant: str
    quant: str
    bits: int
    backend: str
    device: str  # "metal" | "cuda" | "hip" | "vulkan" | "cpu"
    estimate: Estimate
    fits: bool  # fits in memory (on Apple: possibly after raising the wired limit)
    reason: str
    tokens_per_s: Optional[float]  # expected decode speed, None where not computable
    speed_assumed: bool  # tokens_per_s rests on an assumed bandwidth
    needs_wired_limit_mb: Optional[int]  # Apple: the sysctl value this one needs
    source: ModelSource
    family: str = sources.DEFAULT_FAMILY
    # Where it runs: "gpu" | "gpu+cpu-experts" | "cpu" | "unified" (see the module doc).
    placement: str = "gpu"
    page: Optional[speed.PageTime] = None  # seconds for a typical page, by part
    tensor_split: Optional[Tuple[float, ...]] = None  # several GPUs: each one's share
    # gpu+cpu-experts: what stays in VRAM and what goes to RAM (GB).
    vram_gb: Optional[float] = None
    ram_gb: Optional[float] = None

    @property
    def seconds_per_page(self) -> Optional[float]:
        return self.page.seconds if self.page is not None else None

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
            "seconds_per_page": self.seconds_per_page,
            "page_time": self.page.to_dict() if self.page is not None else None,
            "speed_assumed": self.speed_assumed,
            "too_slow": self.too_slow,
            "placement": self.placement,
            "tensor_split": list(self.tensor_split) if self.tensor_split else None,
            "vram_gb": self.vram_gb,
            "ram_gb": self.ram_gb,
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
    device: str  # "metal" | "cuda" | "hip" | "vulkan" | "cpu"
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
    placement: Optional[str] = None  # the choice's: "gpu" | "gpu+cpu-experts" | "cpu" | "unified"
    seconds_per_page: Optional[float] = None  # the choice's, for a typical page
    prefer: Optional[str] = None  # "accuracy" | "speed" | None (the default order)
    # Where a dense and an MoE model both fit: which is more accurate, which faster.
    tradeoff: Optional[Dict[str, object]] = None
    # Four or more datacenter GPUs (or asked for): serve with vLLM/SGLang instead.
    serve: Optional[Dict[str, object]] = None
    # The speed figures the page times rest on (bandwidth, compute, measured or assumed).
    speed_basis: Optional[Dict[str, object]] = None
    # A GPU plan while the installed llama-cpp-python can't offload to the GPU (a CPU-only
    # build): the plan is what the machine runs once rebuilt; no GPU speed is promised.
    gpu_offload_missing: bool = False
    # Pages decoding at once (llama.cpp; `scan --batch` overrides): _with_batch.
    batch: int = 1

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
                "seconds_per_page": self.seconds_per_page,
                "placement": self.placement,
                "n_gpu_layers": self.n_gpu_layers,
                "tensor_split": self.tensor_split,
                "n_ctx": self.context_tokens,
                "batch": self.batch,
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
            "prefer": self.prefer,
            "tradeoff": self.tradeoff,
            "serve": self.serve,
            "speed_basis": self.speed_basis,
            "gpu_offload_missing": self.gpu_offload_missing,
            "candidates": [c.to_dict() for c in self.candidates],
            "advice": list(self.advice),
        }


# --- the estimate ------------------------------------------------------------------------


def context_tokens(max_image_tokens: int, max_output_tokens: int, n_ctx: Optional[int] = None) -> int:
    """The context one page needs: its image tokens, the prompt, the output budget; or
    `n_ctx` when it is given (llama.cpp's --n-ctx: the KV cache is made that large)."""
    return n_ctx if n_ctx else max_image_tokens + PROMPT_TOKENS + max_output_tokens


def estimate(
    variant: "Variant | str",
    bits: int,
    *,
    max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS,
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    backend: str = "llama.cpp",
    source: Optional[ModelSource] = None,
    n_ctx: Optional[int] = None,
    flash_attn: Optional[bool] = None,
    batch: int = 1,
) -> Estimate:
    """Memory for one page with `variant` at `bits` on `backend` (see the module
    docstring); `source` brings real file sizes where known, `n_ctx` llama.cpp's context
    when it is set (MLX has none: its cache grows with the page). The two activation
    terms come from fit/vision_memory.py (fitted to measurements); `flash_attn` is
    llama.cpp's setting, by default what the engine uses. With `batch` pages decoding at
    once (`scan --batch`, llama.cpp and MLX alike) each has its own KV cache and recurrent
    state; the pages are prefilled one at a time, so the activations are one page's."""
    v = catalog.get_variant(variant) if isinstance(variant, str) else variant
    ctx = context_tokens(max_image_tokens, max_output_tokens, n_ctx if backend == "llama.cpp" else None)
    kv = (v.kv_bytes_per_token * ctx + v.recurrent_state_bytes) * (batch if backend in BATCHING_BACKENDS else 1)
    fa = vision_memory.LLAMA_FLASH_ATTN if flash_attn is None else flash_attn
    vision_act = vision_memory.vision_activation_bytes(
        v.vision.width, v.vision.intermediate, v.vision.heads, max_image_tokens, backend, fa
    )
    text_act = vision_memory.text_activation_bytes(v.hidden_size, max_image_tokens, PROMPT_TOKENS, backend, fa)
    if backend in BATCHING_BACKENDS and batch > 1:
        # A decode step of the batch keeps a row of fp32 logits for every page in it.
        text_act += (batch - 1) * catalog.VOCAB_SIZE * 4
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
        vision_activations_gb=round(vision_act / GB, 2),
        text_activations_gb=round(text_act / GB, 2),
        margin_gb=round(MARGIN_BYTES / GB, 2),
        weights_from=weights_from,
    )


def decode_tokens_per_s(
    variant: "Variant | str", bits: int, bandwidth_gbps: Optional[float], weights_gb: Optional[float] = None
) -> Optional[float]:
    """Expected decode speed: 0.6 x bandwidth / bytes read per token (active weights),
    times the MoE efficiency (fit/speed.py)."""
    if not bandwidth_gbps:
        return None
    v = catalog.get_variant(variant) if isinstance(variant, str) else variant
    engine = speed.Engine("gpu", bandwidth_gbps, None)
    return speed.decode_tokens_per_s(speed.shape_of(v), weights_gb or v.weights_gb(bits), engine)


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
    if device in GPU_DEVICES:
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


def _engine(hw: Hardware, device: str) -> speed.Engine:
    """The figures a page's time rests on (fit/speed.py): the bandwidth the weights are
    read at, the compute for prefill and vision, and the RAM's bandwidth behind a GPU
    (experts kept there). This machine's CPU is measured; a described one's is assumed
    where its figures are unknown."""
    # This machine's CPU: what a CPU plan runs on, and the RAM experts stay in behind a GPU.
    measured = None if hw.what_if or device == "metal" else speed.measure_cpu()
    if device in GPU_DEVICES:
        figures = [g.bandwidth_gbps for g in hw.gpus if g.bandwidth_gbps]
        # Layers run one GPU after another, so a split model decodes at the slowest's pace;
        # one GPU of unknown bandwidth makes the pace unknown.
        bandwidth = min(figures) if figures and len(figures) == len(hw.gpus) else None
        flops, flops_assumed = speed.gpu_gflops(hw.gpus[0].name if hw.gpus else None, bandwidth)
        host = speed.cpu_decode_bandwidth(measured) if measured else speed.ASSUMED_HOST_BANDWIDTH_GBPS
        return speed.Engine(
            device,
            bandwidth,
            flops,
            host,
            flash_attention=True,
            compute_assumed=flops_assumed,
            host_gflops=measured.gflops if measured else ASSUMED_CPU_GFLOPS,
        )
    if device == "metal":
        flops, flops_assumed = speed.apple_gflops(hw.chip, hw.memory_bandwidth_gbps)
        return speed.Engine(
            "metal", hw.memory_bandwidth_gbps, flops, flash_attention=True, compute_assumed=flops_assumed
        )
    # llama.cpp runs the vision encoder with flash attention (engines/llamacpp.py).
    fused = vision_memory.planned_flash_attn("cpu")
    if measured is not None:
        return speed.Engine("cpu", speed.cpu_decode_bandwidth(measured), measured.gflops, flash_attention=fused)
    if hw.memory_bandwidth_gbps:
        return speed.Engine(
            "cpu", hw.memory_bandwidth_gbps, ASSUMED_CPU_GFLOPS, flash_attention=fused, compute_assumed=True
        )
    return speed.Engine(
        "cpu", ASSUMED_CPU_BANDWIDTH_GBPS, ASSUMED_CPU_GFLOPS, flash_attention=fused, assumed=True, compute_assumed=True
    )


def _speed_basis(hw: Hardware, engine: speed.Engine) -> Dict[str, object]:
    """What the page times rest on, for the report."""
    measured = None if hw.what_if or engine.device != "cpu" else speed.measure_cpu()
    return {
        "device": engine.device,
        "bandwidth_gbps": engine.bandwidth_gbps,
        "gflops": engine.gflops,
        "host_bandwidth_gbps": engine.host_bandwidth_gbps,
        "measured": measured is not None,
        "measure_s": measured.took_s if measured else None,
        # What numpy measured (a copy's rate, a float32 matmul's), before speed.py's factors.
        "measured_copy_gbps": measured.bandwidth_gbps if measured else None,
        "measured_gflops": measured.gflops if measured else None,
        "assumed": engine.assumed,
        "compute_assumed": engine.compute_assumed,
    }


# --- candidates ---------------------------------------------------------------------------


def _candidate(
    v: Variant,
    bits: int,
    backend: str,
    device: str,
    budget: Budget,
    engine: speed.Engine,
    max_image_tokens: int,
    max_output_tokens: int,
    family: str = sources.DEFAULT_FAMILY,
    facts: SourceFacts = NO_FACTS,
    n_ctx: Optional[int] = None,
    hw: Optional[Hardware] = None,
    ram_budget: Optional[Budget] = None,
    batch: int = 1,
) -> Candidate:
    source = sources.resolve_source(family, v, bits, backend, facts)
    est = estimate(
        v,
        bits,
        max_image_tokens=max_image_tokens,
        max_output_tokens=max_output_tokens,
        backend=backend,
        source=source,
        n_ctx=n_ctx,
        flash_attn=vision_memory.planned_flash_attn(device),
        batch=batch,
    )
    total = est.total_gb
    placement = "unified" if device == "metal" or _unified_gpu(hw) else ("gpu" if device in GPU_DEVICES else "cpu")
    split: Optional[Tuple[float, ...]] = None
    vram_gb = ram_gb = None
    needs_mb = None
    if budget.gb is None or budget.max_gb is None:
        fits, reason = False, f"can't tell: {budget.note}"
    elif device in GPU_DEVICES and hw is not None and hw.gpus:
        fits, reason, split = _fit_gpus(hw, v, est, max_image_tokens, total)
        if not fits and v.moe and ram_budget is not None and ram_budget.gb is not None:
            experts = round(est.weights_gb * speed.shape_of(v).experts_b[0] / v.total_params_b, 2)
            on_gpu = round(total - experts, 2)
            fits_gpu, why_gpu, split_gpu = _fit_gpus(hw, v, est, max_image_tokens, on_gpu)
            if fits_gpu and experts <= ram_budget.gb:
                placement, split, fits = "gpu+cpu-experts", split_gpu, True
                vram_gb, ram_gb = on_gpu, experts
                reason = (
                    f"fits with the experts in RAM: {on_gpu:.1f} GB in VRAM ({budget.gb:.1f} usable),"
                    f" {experts:.1f} GB of experts in RAM ({ram_budget.gb:.1f} usable)"
                )
            elif fits_gpu:
                reason += (
                    f"; with the experts in RAM: {experts:.1f} GB of experts over the {ram_budget.gb:.1f} GB RAM budget"
                )
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
    real_weights = est.weights_gb if est.weights_from != "table" else v.weights_gb(bits)
    page = speed.page_time(
        speed.shape_of(v),
        real_weights,
        engine,
        image_tokens=max_image_tokens,
        output_tokens=speed.typical_output_tokens(max_output_tokens),
        experts_on_cpu=placement == "gpu+cpu-experts",
    )
    tokens_per_s = (
        page.tokens_per_s
        if page is not None
        else speed.decode_tokens_per_s(
            speed.shape_of(v), real_weights, engine, experts_on_cpu=placement == "gpu+cpu-experts"
        )
    )
    if fits and tokens_per_s is not None and tokens_per_s < CRAWL_TOKENS_PER_S:
        reason += f"; but ~{tokens_per_s:.1f} tokens/s is below the {CRAWL_TOKENS_PER_S:g} tokens/s floor"
    if not source.available:
        reason += f"; {source.status}"
    elif source.kind == "convert":
        reason += "; no hub repo passed: convert locally"
    assumed = engine.assumed or (placement == "gpu+cpu-experts" and bool(hw and hw.what_if))
    return Candidate(
        variant=v.name,
        quant=catalog.quant_name(backend, bits),
        bits=bits,
        backend=backend,
        device=device,
        estimate=est,
        fits=fits,
        reason=reason,
        tokens_per_s=tokens_per_s,
        speed_assumed=assumed and tokens_per_s is not None,
        needs_wired_limit_mb=needs_mb,
        source=source,
        family=family,
        placement=placement,
        page=page,
        tensor_split=split,
        vram_gb=vram_gb,
        ram_gb=ram_gb,
    )


def _vision_activations_gb(v: Variant, est: Estimate, max_image_tokens: int) -> float:
    """The vision encoder's share of the activation peak (it runs on the first GPU): the
    estimate's own split where it has one, else the formula's vision terms."""
    split = getattr(est, "vision_activations_gb", None)
    if isinstance(split, (int, float)):
        return float(split)
    patches = PATCHES_PER_IMAGE_TOKEN * max_image_tokens
    attention = v.vision.heads * patches * patches * 4
    mlp = patches * (4 * v.vision.width + 2 * v.vision.intermediate) * 4
    return min(round((attention + mlp) / GB, 2), est.activations_gb)


def _fit_gpus(
    hw: Hardware, v: Variant, est: Estimate, max_image_tokens: int, need_gb: float
) -> Tuple[bool, str, Optional[Tuple[float, ...]]]:
    """Whether `need_gb` (the estimate, or what stays in VRAM) fits the GPUs, with the first
    checked on its own: llama.cpp runs the vision projector and its activations there, on
    top of its share of the layers. Returns (fits, reason, tensor_split or None for one GPU);
    the split gives the first GPU a smaller share than its VRAM's when it needs one."""
    sizes = [(g.total_bytes or 0) / GB - CUDA_RESERVE_PER_GPU_GB for g in hw.gpus]
    usable = sum(sizes)
    if need_gb > usable:
        return False, f"{need_gb - usable:.1f} GB over the {usable:.1f} GB VRAM budget", None
    if len(sizes) == 1:
        return True, f"fits: {need_gb:.1f} of {usable:.1f} GB", None
    first_only = min(est.vision_gb + _vision_activations_gb(v, est, max_image_tokens) + est.margin_gb, need_gb)
    layers = need_gb - first_only
    # llama.cpp's default: layers in proportion to each GPU's VRAM.
    total_bytes = sum(g.total_bytes or 0 for g in hw.gpus)
    shares = [(g.total_bytes or 0) / total_bytes for g in hw.gpus]
    if layers * shares[0] + first_only <= sizes[0]:
        return True, f"fits: {need_gb:.1f} of {usable:.1f} GB", tuple(round(x, 4) for x in shares)
    room = sizes[0] - first_only
    if room < 0:
        return (
            False,
            f"GPU 0 alone must hold the vision projector and its activations ({first_only:.1f} GB)"
            f" but has {sizes[0]:.1f} GB; lower --max-image-tokens",
            None,
        )
    rest = sum(sizes[1:])
    others = layers - room
    if others > rest:
        return False, f"{others - rest:.1f} GB over what GPUs 1+ hold once GPU 0 carries the vision part", None
    first = room / layers if layers > 0 else 0.0
    split = (round(first, 4),) + tuple(round((1 - first) * size / rest, 4) for size in sizes[1:])
    return (
        True,
        f"fits: {need_gb:.1f} of {usable:.1f} GB, with a smaller share of the layers on GPU 0"
        f" ({first_only:.1f} GB of vision there)",
        split,
    )


def _wired_limit_mb(total_gb: float) -> int:
    """The sysctl value for a load of `total_gb`: the estimate plus the headroom (5 %, at
    least 2 GiB), rounded up to a whole GiB, in MiB."""
    total = total_gb * GB
    headroom = max(WIRED_HEADROOM_MIN_BYTES, total * WIRED_HEADROOM_FRACTION)
    return math.ceil((total + headroom) / GIB) * 1024


def _select(
    cands: Sequence[Candidate], budget: Budget, prefer: Optional[str] = None
) -> Tuple[Optional[Candidate], bool]:
    """The policy. Returns (choice, whether everything that fits crawls)."""
    fitting = [c for c in cands if c.fits and c.available]
    if not fitting:
        return None, False
    pool = [c for c in fitting if not c.too_slow]
    crawling = False
    if not pool:
        crawling = True
        pool = [max(fitting, key=lambda c: (c.tokens_per_s or 0.0, -c.estimate_gb))]
    pool = _useful(pool)
    rank = _rank(prefer)
    largest = max(pool, key=lambda c: rank[c.variant]).variant
    if prefer == "speed":
        pair = _tradeoff_pair(pool)
        if pair is not None:
            largest = min(pair, key=_page_seconds).variant
    same = sorted((c for c in pool if c.variant == largest), key=lambda c: c.bits)
    base = same[0]
    if prefer == "speed":
        return base, crawling
    # A higher precision when it fits as things are, or (Apple) when the raise it needs
    # still leaves macOS the upgrade reserve; and, unless accuracy is preferred, when it
    # does not make a page much slower.
    upgrade_max = budget.upgrade_max_gb
    better = [
        c
        for c in same[1:]
        if (
            c.needs_wired_limit_mb is None
            or (upgrade_max is not None and c.needs_wired_limit_mb * MIB <= upgrade_max * GB)
        )
        and (prefer == "accuracy" or not _much_slower(c, base))
    ]
    return (better[-1] if better else base), crawling


def _rank(prefer: Optional[str]) -> Dict[str, int]:
    names = ACCURACY_ORDER if prefer == "accuracy" else tuple(catalog.variant_names())
    return {name: i for i, name in enumerate(names)}


def _page_seconds(c: Candidate) -> float:
    if c.seconds_per_page is not None:
        return c.seconds_per_page
    return 1.0 / c.tokens_per_s if c.tokens_per_s else math.inf


def _much_slower(c: Candidate, base: Candidate) -> bool:
    """Whether `c` (a higher precision) makes a page much slower than `base`: over
    UPGRADE_SLOWDOWN times and UPGRADE_EXTRA_SECONDS more. Unknown speed: not slower."""
    if c.seconds_per_page is None or base.seconds_per_page is None:
        return False
    extra = c.seconds_per_page - base.seconds_per_page
    return c.seconds_per_page > UPGRADE_SLOWDOWN * base.seconds_per_page and extra > UPGRADE_EXTRA_SECONDS


def _useful(pool: Sequence[Candidate]) -> List[Candidate]:
    """Experts in RAM only for a better (more accurate) model than VRAM alone gives, at
    HYBRID_MIN_TOKENS_PER_S or more."""
    accuracy = _rank("accuracy")
    in_vram = [c for c in pool if c.placement != "gpu+cpu-experts"]
    best = max((accuracy[c.variant] for c in in_vram), default=-1)
    kept = [
        c
        for c in pool
        if c.placement != "gpu+cpu-experts"
        or (accuracy[c.variant] > best and (c.tokens_per_s or 0.0) >= HYBRID_MIN_TOKENS_PER_S)
    ]
    return kept or list(pool)


def _tradeoff_pair(pool: Sequence[Candidate]) -> Optional[Tuple[Candidate, Candidate]]:
    """(the best dense, the best MoE) at their base precision, where both are in the pool
    and the more accurate one is the slower: the trade-off a user should see."""
    rank = _rank(None)
    accuracy = _rank("accuracy")

    def best(moe: bool) -> Optional[Candidate]:
        kind = [c for c in pool if catalog.get_variant(c.variant).moe == moe]
        if not kind:
            return None
        top = max(kind, key=lambda c: rank[c.variant]).variant
        return min((c for c in kind if c.variant == top), key=lambda c: c.bits)

    dense, moe = best(False), best(True)
    if dense is None or moe is None:
        return None
    accurate, other = (dense, moe) if accuracy[dense.variant] > accuracy[moe.variant] else (moe, dense)
    if _page_seconds(accurate) <= _page_seconds(other):
        return None  # the more accurate is also as fast: no trade-off
    return dense, moe


def _tradeoff(pool: Sequence[Candidate], choice: Optional[Candidate], prefer: Optional[str]) -> Optional[dict]:
    pair = _tradeoff_pair(pool)
    if pair is None or choice is None:
        return None
    accuracy = _rank("accuracy")
    accurate = max(pair, key=lambda c: accuracy[c.variant])
    fast = min(pair, key=_page_seconds)

    def seconds(c: Candidate) -> str:
        return f"~{c.seconds_per_page:.0f} s/page" if c.seconds_per_page is not None else "speed unknown"

    text = (
        f"{accurate.variant} is the more accurate ({seconds(accurate)}), {fast.variant} the faster"
        f" ({seconds(fast)}); chosen: {choice.variant}"
        + (f" (--prefer {prefer})" if prefer else "")
        + f". --prefer accuracy picks {accurate.variant}, --prefer speed {fast.variant}."
    )
    return {
        "more_accurate": accurate.variant,
        "faster": fast.variant,
        "more_accurate_seconds_per_page": accurate.seconds_per_page,
        "faster_seconds_per_page": fast.seconds_per_page,
        "chosen": choice.variant,
        "text": text,
    }


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
    n_ctx: Optional[int] = None,
    prefer: Optional[str] = None,
    serve: bool = False,
    batch: Optional[int] = None,
) -> Plan:
    """The plan for `hardware`; `variant`, `quant`, `backend` force the pick. `family`
    ("3.5", the default, or "3.6") says which models; `facts` what the hub said of
    their sources (store/verify.py gathers them; without them: the data alone); `n_ctx`
    llama.cpp's context when the user set it (the KV cache is sized for it); `prefer`
    ("accuracy" or "speed") settles a dense-or-MoE trade-off; `serve` asks for the
    vLLM/SGLang advice even with fewer than SERVE_MIN_GPUS datacenter GPUs; `batch` the
    pages llama.cpp decodes at once (`scan --batch`: a KV cache and state for each),
    or None to plan it: the model is chosen for one page, then as many pages at once as
    its memory leaves room for, up to PLANNED_BATCH_MAX (`Plan.batch`).

    Raises `UsageError` for a family, variant, quant or backend it doesn't know, or a
    quant that belongs to another backend than the one asked for.
    """
    if max_image_tokens <= 0 or max_output_tokens <= 0:
        raise UsageError("token budgets must be positive")
    prefer = check_prefer(prefer)
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
    elif hardware.platform in ("cuda", "amd") and chosen_backend == "llama.cpp":
        # The llama.cpp build that drives these GPUs: cuda (NVIDIA), hip or vulkan (AMD).
        device = getattr(hardware, "gpu_backend", None) or "cuda"
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
            n_ctx=n_ctx,
            prefer=prefer,
            batch=batch or 1,
        )

    if prefer is not None:
        overrides["prefer"] = prefer
    plan = plan_on(device, chosen_backend)
    if plan.choice is not None and plan.choice.source.kind == "convert":
        plan = _with_alternative(plan, plan_on(device, "llama.cpp"))
    if device in GPU_DEVICES and not plan.fits and hardware.ram_total_bytes and not _unified_gpu(hardware):
        on_cpu = plan_on("cpu", chosen_backend)
        if on_cpu.fits:
            advice = [
                f"Nothing fits in the GPUs' VRAM ({plan.budget_gb:.1f} GB usable); this plan runs on the CPU from RAM"
                " (n_gpu_layers=0), which is much slower. A smaller --max-image-tokens may make a model fit the GPU."
            ] + on_cpu.advice
            return _with_batch(replace(on_cpu, advice=advice), batch)
    plan = _with_batch(plan, batch)
    if device in GPU_DEVICES and (serve or _datacenter_gpus(hardware) >= SERVE_MIN_GPUS):
        advice_lines, serve_info = _serve_advice(hardware, max_image_tokens, max_output_tokens, family)
        plan = replace(plan, serve=serve_info, advice=plan.advice + advice_lines)
    return plan


def _with_batch(plan: Plan, requested: Optional[int]) -> Plan:
    """The pages the chosen local model decodes at once (llama.cpp or MLX): `requested`
    (--batch, whose memory the candidates already counted), else the most of
    PLANNED_BATCHES whose extra KV caches and recurrent states fit beside the one-page
    estimate."""
    if plan.backend not in BATCHING_BACKENDS or plan.choice is None or plan.estimate is None or not plan.fits:
        return replace(plan, batch=1)
    if requested is not None:
        return replace(plan, batch=requested)
    cap = PLANNED_BATCH_MAX.get(plan.device, PLANNED_BATCH_MAX["gpu"])
    # What must fit: the VRAM part for experts kept in RAM, else the whole estimate.
    used = plan.choice.vram_gb if plan.placement == "gpu+cpu-experts" and plan.choice.vram_gb else plan.estimate_gb
    room = (plan.budget_gb or 0.0) - (used or 0.0)
    per_page = plan.estimate.kv_gb
    batch = 1
    for n in PLANNED_BATCHES:
        if n <= cap and (n - 1) * per_page <= room:
            batch = n
    return replace(plan, batch=batch)


def check_prefer(prefer: Optional[str]) -> Optional[str]:
    """`--prefer`: "accuracy", "speed" or None; a UsageError names the two."""
    if prefer is None:
        return None
    key = prefer.strip().lower()
    if key not in PREFERENCES:
        raise UsageError(f"unknown preference {prefer!r}", "use --prefer accuracy or --prefer speed")
    return key


def _unified_gpu(hw: Optional[Hardware]) -> bool:
    """An APU (AMD Strix Halo and the like): its GPU memory is the system RAM, so placing
    experts in RAM gains nothing and the plan is "unified", like Apple's."""
    return bool(hw and hw.gpus and all(getattr(g, "unified_memory", False) for g in hw.gpus))


def _datacenter_gpus(hw: Hardware) -> int:
    return sum(1 for g in hw.gpus if any(name.lower() in g.name.lower() for name in DATACENTER_GPU_NAMES))


def _serve_advice(
    hw: Hardware, max_image_tokens: int, max_output_tokens: int, family: str
) -> Tuple[List[str], Dict[str, object]]:
    """How to serve on these GPUs with tensor parallelism: the official BF16 weights of the
    largest variant that fits in SERVE_VRAM_FRACTION of the VRAM (the rest is the servers'
    KV cache and activations), over the largest power of two of GPUs, and the scan line."""
    n = len(hw.gpus)
    tp = 1 << (n.bit_length() - 1)  # vLLM and SGLang split heads: a power of two
    vram = (hw.vram_total_bytes or 0) / GB * tp / max(n, 1)
    names = sources.family_variants(family)
    fitting = [
        v for v in catalog.VARIANTS if v.name in names and v.weights_gb(16) + v.vision_gb <= SERVE_VRAM_FRACTION * vram
    ]
    ctx = math.ceil(context_tokens(max_image_tokens, max_output_tokens) / 1024) * 1024
    if not fitting:
        return (
            [f"Serving: no Qwen{family} variant fits {tp} GPU(s) at BF16; use the llama.cpp plan above."],
            {"fits": False, "tensor_parallel": tp},
        )
    v = fitting[-1]
    repo = f"Qwen/Qwen{family}-{v.name}"
    vllm = (
        f"vllm serve {repo} --tensor-parallel-size {tp} --max-model-len {ctx}"
        f" --limit-mm-per-prompt '{{\"image\": 1}}' --port 8000"
    )
    sglang = f"python -m sglang.launch_server --model-path {repo} --tp {tp} --context-length {ctx} --port 8000"
    concurrency = 8 * tp
    scan = f"qwenocr scan --backend openai --base-url http://localhost:8000/v1 --concurrency {concurrency} FILE.pdf"
    lines = [
        f"{n} datacenter GPUs: serve {repo} (BF16, {v.weights_gb(16):g} GB) with tensor parallel over {tp} GPUs"
        f" instead of a llama.cpp layer split (pages run in parallel): `{vllm}` (vLLM) or `{sglang}` (SGLang);"
        f" then read with `{scan}`.",
    ]
    larger = [w for w in catalog.VARIANTS if w.name in names and catalog.VARIANTS.index(w) > catalog.VARIANTS.index(v)]
    if larger:
        lines.append(
            f"Larger variants ({', '.join(w.name for w in larger)}) don't fit these GPUs at BF16; a quantized"
            " checkpoint served the same way might (not checked here)."
        )
    return lines, {
        "fits": True,
        "variant": v.name,
        "repo": repo,
        "tensor_parallel": tp,
        "max_model_len": ctx,
        "vllm": vllm,
        "sglang": sglang,
        "scan": scan,
    }


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
    *,
    n_ctx: Optional[int] = None,
    prefer: Optional[str] = None,
    batch: int = 1,
) -> Plan:
    budget = _budget(hw, device)
    engine = _engine(hw, device)
    # Behind NVIDIA GPUs, the RAM can hold an MoE model's experts (placement gpu+cpu-experts).
    ram_budget = _budget(hw, "cpu") if device in GPU_DEVICES and hw.ram_total_bytes and not _unified_gpu(hw) else None
    names = sources.family_variants(family)
    cands = tuple(
        _candidate(
            v,
            bits,
            backend,
            device,
            budget,
            engine,
            max_image_tokens,
            max_output_tokens,
            family,
            facts,
            n_ctx,
            hw=hw,
            ram_budget=ram_budget,
            batch=batch,
        )
        for v in catalog.VARIANTS
        if v.name in names
        for bits in catalog.BITS
    )
    # A CPU-only llama-cpp-python on a GPU machine: what fits is planned for the GPU (the
    # machine after a rebuild), but no GPU speed is promised while it would run on the CPU.
    offload_missing = device in GPU_DEVICES and backend == "llama.cpp" and hw.llama_gpu_offload is False
    if offload_missing:
        cands = tuple(replace(c, tokens_per_s=None, page=None, speed_assumed=False) for c in cands)
    eligible = [
        c
        for c in cands
        if (forced_variant is None or c.variant == forced_variant.name)
        and (forced_bits is None or c.bits == forced_bits)
    ]
    choice, crawling = _select(eligible, budget, prefer)
    forced = forced_variant is not None or forced_bits is not None
    if choice is None and forced and eligible:
        # The user asked for it: keep it as the pick, marked as not fitting (or without
        # a source: then the reason says so and `scan` refuses it before loading).
        choice = min(eligible, key=lambda c: c.estimate_gb)

    advice: List[str] = []
    reason = _reason(choice, eligible, budget, forced, crawling)
    if offload_missing:
        reason += "; but llama-cpp-python was built without GPU offload: as installed it would run on the CPU"
        advice.append(
            "The installed llama-cpp-python can't offload to the GPU (a CPU-only build): this plan needs the"
            f" {device} build (see Engine for the rebuild line); until then pages run on the CPU, far slower"
            " than the GPU speeds a rebuild gives."
        )
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
        if device in GPU_DEVICES and choice.fits and not hw.what_if:
            free = hw.vram_free_bytes
            if free is not None and free / GB < choice.estimate_gb:
                advice.append(
                    f"Only {free / GB:.1f} GB of VRAM is free now (other programs hold the rest);"
                    f" {choice.variant} {choice.quant} needs {choice.estimate_gb:.1f} GB. Close them before scanning."
                )
        if choice.tokens_per_s is not None and (device == "cpu" or choice.too_slow):
            minutes = DENSE_PAGE_TOKENS / choice.tokens_per_s / 60
            assumed = (
                f" (assuming {engine.bandwidth_gbps:g} GB/s of memory bandwidth: this CPU's is unknown)"
                if choice.speed_assumed
                else ""
            )
            page = (
                f"; with the image's prefill and vision encode, about {_duration(choice.seconds_per_page)} per page"
                if choice.seconds_per_page is not None
                else ""
            )
            advice.append(
                f"Expect about {choice.tokens_per_s:.1f} tokens/s{assumed}: roughly {minutes:.0f} min for a dense page"
                f" of {DENSE_PAGE_TOKENS:,} tokens{page}."
            )
        if choice.placement == "gpu+cpu-experts":
            advice.append(
                f"{choice.variant} {choice.quant} runs with its MoE experts in RAM ({choice.ram_gb:.1f} GB) and the"
                f" rest on the GPU ({choice.vram_gb:.1f} GB): llama.cpp's tensor overrides (`-ot exps=CPU`),"
                f" which scan sets; about {choice.tokens_per_s:g} tokens/s."
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
    if choice is not None and choice.tensor_split:
        tensor_split = list(choice.tensor_split)
    elif device in GPU_DEVICES and len(hw.gpus) > 1 and hw.vram_total_bytes:
        total = hw.vram_total_bytes
        tensor_split = [round(g.total_bytes / total, 4) for g in hw.gpus]  # type: ignore[operator]
    pool = _useful([c for c in eligible if c.fits and c.available and not c.too_slow] or [])
    tradeoff = _tradeoff(pool, choice, prefer) if pool and not forced else None
    if tradeoff is not None:
        advice.append(str(tradeoff["text"]))

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
        context_tokens=context_tokens(max_image_tokens, max_output_tokens, n_ctx if backend == "llama.cpp" else None),
        max_image_tokens=max_image_tokens,
        max_output_tokens=max_output_tokens,
        tokens_per_s=choice.tokens_per_s if choice else None,
        needs_wired_limit_mb=choice.needs_wired_limit_mb if choice and choice.fits else None,
        candidates=cands,
        advice=advice,
        reason=reason,
        overrides={k: v for k, v in overrides.items() if v is not None},
        family=family,
        placement=choice.placement if choice else None,
        seconds_per_page=choice.seconds_per_page if choice else None,
        prefer=prefer,
        tradeoff=tradeoff,
        speed_basis=_speed_basis(hw, engine),
        gpu_offload_missing=offload_missing,
    )


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


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
        elif nxt.needs_wired_limit_mb is not None:
            detail = (
                f"; {nxt.quant} would need a raised wired limit that leaves macOS less than a precision upgrade"
                " may (max(32 GiB, 15 % of RAM))"
            )
        elif _much_slower(nxt, choice):
            detail = (
                f"; {nxt.quant} would make a page ~{_page_seconds(nxt) / _page_seconds(choice):.1f}x slower"
                f" (~{_page_seconds(nxt):,.0f} s instead of ~{_page_seconds(choice):,.0f} s;"
                " --prefer accuracy takes it)"
            )
        else:
            detail = f"; --prefer speed keeps the lowest precision ({nxt.quant} fits too)"
    if choice.source.kind == "convert":
        detail += "; no hub repo has it with the vision tower: convert it locally (see the advice)"
    if forced:
        return f"{name}: the best fit among the models asked for ({choice.reason}){detail}"
    return f"{name}: the largest variant that fits at 4-bit, at the best precision that still fits{detail}"
