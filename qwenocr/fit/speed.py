"""How long one page takes: vision encode + prefill + decode, from the machine's memory
bandwidth and compute, for every candidate the planner weighs (plan.py).

    page seconds = vision encode     FLOPs of the vision tower over the page's patches /
                                     compute; on a CPU (llama.cpp, flash attention or
                                     not) the attention is a cost per score instead
                                     (heads x patches^2 per layer: it grows with the
                                     square of the patches)
                 + prefill           2 x active non-embedding params x (image + prompt
                                     tokens) FLOPs / compute
                 + decode            output tokens / tokens per second

Decode is memory-bound: tokens/s = 0.6 x bandwidth / bytes read per token (the active
share of the weights), times an MoE efficiency: MoE models decode well below that
formula, dense ones at or a little above it. One public measurement on one 256 GB/s
machine (AMD Strix Halo, llama.cpp, Q4; FACTS.md §13) gives, measured vs formula:
27B 9.96 vs 9.0 tok/s, 9B 28.9 vs 25.6, 35B-A3B 39.7 vs 81, 122B-A10B 21.3 vs 26.8. So
dense models keep the formula (they beat it by 10 %; the estimate stays cautious), and
each MoE model is scaled by its measured ratio (35B-A3B 0.49, 122B-A10B 0.79; 397B-A17B,
not measured, takes 122B-A10B's, its nearer neighbour in active size). Every token also
costs llama-cpp-python some fixed work on the CPU outside the weights (the 248,320
logits to the sampler), measured here with the tiny checkpoints.

With the MoE experts in RAM and the rest on a GPU (placement "gpu+cpu-experts"), a token
reads the active experts from RAM at the CPU's bandwidth and the rest from VRAM at the
GPU's: the two times add up. The experts' share of the parameters comes from the public
Megatron configs of Qwen 3.5 (THUDM/slime scripts/models/qwen3.5-35B-A3B.sh: 40 layers x
256 experts x 3 x 2048 x 512; qwen3.5-397B-A17B.sh: 60 x 512 x 3 x 4096 x 1024; 10
routed experts per token there, 8 for the others); 122B-A10B has no public config here
and is taken as 48 x 256 x 3 x 3072 x 1024 (assumed).

Compute: GPUs and Apple chips from a small table of published FP16 figures (vendor spec
sheets; dense, no sparsity) at COMPUTE_EFFICIENCY; on a CPU it is measured:
`measure_cpu` times a numpy copy of 128 MiB (bandwidth) and a 1024 x 1024 float32
matmul (compute) in about a third of a second, kept for a week. numpy comes with every
engine; without it the old assumption (25 GB/s, no compute figure) stands. The factors
that turn the numpy figures into llama.cpp's were measured on this 2-core machine with
the tiny and the 0.8B real-dimension checkpoints (benchmarks/bench_page_time.py,
docs/performance.md).

Everything here is arithmetic on figures; `measure_cpu` is the one impure function (it
keeps its figures in the cache directory for a week, `cpu-speed.json`, so that a plan
does not change between runs with the machine's load; delete the file to measure
again), and the planner calls it only for the machine it runs on, never for a described
one.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from qwenocr.fit import catalog
from qwenocr.fit.catalog import GB, Variant

BANDWIDTH_EFFICIENCY = 0.6  # decode reaches about 60 % of peak memory bandwidth (dense)
ASSUMED_CPU_BANDWIDTH_GBPS = 25.0  # dual-channel DDR4 class; used when nothing is measured
# A described machine's RAM behind its GPUs (for experts kept in RAM): dual-channel DDR5.
ASSUMED_HOST_BANDWIDTH_GBPS = 60.0
PROMPT_TOKENS = 64  # the chat template and instruction around the image (as plan.py)
PATCHES_PER_IMAGE_TOKEN = 4  # 2x2 patches of 16 px merged into one visual token
# A typical page's output: a page of dense text (capped by the output budget).
TYPICAL_OUTPUT_TOKENS = 1000

# Measured / formula decode speed, FACTS.md §13 (one Strix Halo, llama.cpp, Q4).
MOE_EFFICIENCY: Dict[str, float] = {
    "35B-A3B": round(39.7 / 81, 2),  # 0.49
    "122B-A10B": round(21.3 / 26.8, 2),  # 0.79
    "397B-A17B": round(21.3 / 26.8, 2),  # not measured: 122B-A10B's (nearest active size)
}
# Routed experts, billions of parameters: (all of them, those one token uses).
EXPERT_PARAMS_B: Dict[str, Tuple[float, float]] = {
    "35B-A3B": (40 * 256 * 3 * 2048 * 512 / 1e9, 40 * 8 * 3 * 2048 * 512 / 1e9),  # 32.2, 1.0
    "122B-A10B": (48 * 256 * 3 * 3072 * 1024 / 1e9, 48 * 8 * 3 * 3072 * 1024 / 1e9),  # 116, 3.6 (assumed)
    "397B-A17B": (60 * 512 * 3 * 4096 * 1024 / 1e9, 60 * 10 * 3 * 4096 * 1024 / 1e9),  # 387, 7.5
}

# Published dense FP16 tensor throughput, TFLOPS (vendor spec sheets), by substring of
# the GPU's name, longest first. Where a name covers several parts, the lower figure.
GPU_FP16_TFLOPS: Dict[str, float] = {
    "B200": 2250,
    "GH200": 989,
    "H200": 989,
    "H100 80GB HBM3": 989,
    "H100 NVL": 835,
    "H100": 756,
    "A100": 312,
    "L40S": 362,
    "L40": 181,
    "L4": 121,
    "A10": 125,
    "T4": 65,
    "RTX PRO 6000": 500,
    "RTX 6000 Ada": 364,
    "RTX A6000": 155,
    "RTX 5090": 210,
    "RTX 5080": 113,
    "RTX 4090": 165,
    "RTX 4080": 97,
    "RTX 4070": 58,
    "RTX 4060": 30,
    "RTX 3090": 71,
    "RTX 3080": 60,
    "RTX 3060": 25,
    "7900 XTX": 123,  # AMD, FP16 (WMMA)
    "MI300X": 1307,
    "Strix Halo": 59,  # Radeon 8060S, FP16
    "8060S": 59,
}
# Apple GPUs, FP16 ~ FP32 TFLOPS (published GPU figures of the largest GPU bin).
APPLE_GPU_TFLOPS: Dict[str, float] = {
    "M1": 2.6,
    "M1 Pro": 5.2,
    "M1 Max": 10.4,
    "M1 Ultra": 21.0,
    "M2": 3.6,
    "M2 Pro": 6.8,
    "M2 Max": 13.6,
    "M2 Ultra": 27.2,
    "M3": 4.1,
    "M3 Pro": 7.4,
    "M3 Max": 16.4,
    "M3 Ultra": 28.0,
    "M4": 4.3,
    "M4 Pro": 9.2,
    "M4 Max": 18.4,
    "M5": 5.7,
}
# A GPU of unknown compute: its bandwidth x this many FLOPs per byte (consumer GPUs sit
# between 100 and 300 at FP16; the lower end keeps the estimate cautious).
UNKNOWN_GPU_FLOPS_PER_BYTE = 100
COMPUTE_EFFICIENCY = 0.35  # llama.cpp's prefill and vision on a GPU, of the published peak

# --- CPU: what the numpy figures become in llama.cpp (measured here, see the module doc) ---
# On this 2-core machine (two SMT threads of one AMD EPYC core; llama-cpp-python 0.3.36 on
# one thread, its default, F16 weights, flash attention on as qwenocr runs it; numpy's
# matmul ran at 231-255 GFLOPS on both threads) llama.cpp's own log split a page into
# vision encode, prefill and decode for the 0.8B real-dimension checkpoint (247 to 988
# visual tokens), the 0.8B and 9B real-dimension towers behind a tiny language model (247
# to 1,482) and the tiny checkpoints (docs/performance.md, "Page time"):
# - the vision tower's projections and MLPs ran at about 0.72 of numpy's matmul rate;
CPU_VISION_EFFICIENCY = 0.72
# - its attention cost about as much per score (heads x patches^2 per layer) as 780 FLOPs
#   of that matmul, with flash attention as without it (llama.cpp's CPU flash-attention
#   kernel saves memory, not time): a term that grows with the square of the patches and
#   is most of a large page's vision time (7.5 of 12 s at 988 tokens for the 0.8B tower);
CPU_ATTENTION_FLOPS_PER_SCORE = 780
# - the language model's prefill ran at numpy's matmul rate (0.95x of the FLOPs estimate,
#   kept at 1.0), with no fixed cost per call or per token worth modelling (an earlier fit
#   on a loaded machine had 0.1 ms per token and layer and ~3.5 s per prefill call: both
#   gone on the idle machine);
CPU_PREFILL_EFFICIENCY = 1.0
# - decode read the weights at about 0.8 of numpy's copy rate;
CPU_DECODE_OF_COPY = 0.8
# - each output token cost about 0.3 ms outside the weights (sampling, the logits);
TOKEN_OVERHEAD_S = 0.0003
# - and each page about 30 ms beyond the three parts (image decode and resize, the chat
#   template, tokenizing, the checkpoint).
PAGE_OVERHEAD_S = 0.03
COPY_BYTES = 128 * 1024 * 1024  # the bandwidth measurement's buffer: 128 MiB

# The vision encodes the CPU constants above were fitted to: llama.cpp's "image slice
# encoded in" for one page, (tower: depth, width, intermediate, heads; visual tokens) ->
# seconds, at numpy's MEASURED_CPU_GFLOPS beside them (2026-11-27, idle, 2-core AMD EPYC,
# one llama.cpp thread, flash attention on). The tests check the formula against them.
MEASURED_CPU_GFLOPS = 235.0
MEASURED_CPU_VISION_S: Dict[Tuple[Tuple[int, int, int, int], int], float] = {
    ((12, 768, 3072, 12), 247): 1.55,
    ((12, 768, 3072, 12), 494): 3.7,  # 3.4 and 4.0 in two runs
    ((12, 768, 3072, 12), 736): 7.3,
    ((12, 768, 3072, 12), 988): 11.9,
    ((12, 768, 3072, 12), 1482): 23.2,
    ((27, 1152, 4304, 16), 247): 6.5,
    ((27, 1152, 4304, 16), 494): 14.1,
    ((27, 1152, 4304, 16), 988): 45.0,
}


@dataclass(frozen=True)
class CpuSpeed:
    """This CPU's figures: memory bandwidth (GB/s, numpy copy) and compute (GFLOPS,
    float32 matmul), and how long the measurement took."""

    bandwidth_gbps: float
    gflops: float
    took_s: float


@dataclass(frozen=True)
class Engine:
    """Where a page's work runs: decode bandwidth (GB/s) for the weights on the device,
    for the experts in RAM when they are there, and compute (GFLOPS) for prefill and vision."""

    device: str  # "cpu" | "cuda" | "metal"
    bandwidth_gbps: Optional[float]
    gflops: Optional[float]
    host_bandwidth_gbps: Optional[float] = None  # RAM, for experts kept on the CPU
    flash_attention: bool = False  # the vision attention never materialises its scores
    assumed: bool = False  # the bandwidth rests on an assumption
    compute_assumed: bool = False  # the compute figure rests on an assumption
    host_gflops: Optional[float] = None  # the CPU's, for experts kept there (prefill)


@dataclass(frozen=True)
class ModelShape:
    """What the speed of a model depends on (catalog variants and checkpoints alike)."""

    name: str
    total_params_b: float
    active_params_b: float
    embedding_params_b: float  # vocabulary x hidden: looked up, not multiplied, in prefill
    vision_depth: int
    vision_width: int
    vision_intermediate: int
    vision_heads: int
    hidden_size: int
    moe_efficiency: float = 1.0
    experts_b: Tuple[float, float] = (0.0, 0.0)  # routed experts: all, active per token


@dataclass(frozen=True)
class PageTime:
    """Seconds for one page, by part, and the decode speed behind it."""

    seconds: float
    vision_s: float
    prefill_s: float
    decode_s: float
    tokens_per_s: float
    image_tokens: int
    output_tokens: int

    def to_dict(self) -> dict:
        return {
            "seconds": self.seconds,
            "vision_s": self.vision_s,
            "prefill_s": self.prefill_s,
            "decode_s": self.decode_s,
            "tokens_per_s": self.tokens_per_s,
            "image_tokens": self.image_tokens,
            "output_tokens": self.output_tokens,
        }


def shape_of(variant: "Variant | str") -> ModelShape:
    v = catalog.get_variant(variant) if isinstance(variant, str) else variant
    return ModelShape(
        name=v.name,
        total_params_b=v.total_params_b,
        active_params_b=v.active_params_b,
        embedding_params_b=catalog.VOCAB_SIZE * v.hidden_size / 1e9,
        vision_depth=v.vision.depth,
        vision_width=v.vision.width,
        vision_intermediate=v.vision.intermediate,
        vision_heads=v.vision.heads,
        hidden_size=v.hidden_size,
        moe_efficiency=MOE_EFFICIENCY.get(v.name, 1.0) if v.moe else 1.0,
        experts_b=EXPERT_PARAMS_B.get(v.name, (0.0, 0.0)) if v.moe else (0.0, 0.0),
    )


def shape_of_checkpoint(config: dict, text_params: float) -> ModelShape:
    """The shape of a Qwen 3.5 checkpoint from its Hugging Face `config.json` and the
    number of parameters of its language model (e.g. a GGUF's size / bytes per weight):
    what benchmarks/bench_page_time.py times against `scan`, with the formula doctor uses."""
    text, vision = config.get("text_config", config), config["vision_config"]
    hidden, vocab = int(text["hidden_size"]), int(text["vocab_size"])
    experts, per_token = int(text.get("num_experts") or 0), int(text.get("num_experts_per_tok") or 0)
    expert_params = 3 * hidden * int(text.get("moe_intermediate_size") or 0) * int(text["num_hidden_layers"])
    total_b = text_params / 1e9
    return ModelShape(
        name=str(config.get("_name_or_path") or config.get("model_type") or "checkpoint"),
        total_params_b=total_b,
        active_params_b=total_b - (experts - per_token) * expert_params / 1e9,
        embedding_params_b=vocab * hidden / 1e9,
        vision_depth=int(vision["depth"]),
        vision_width=int(vision["hidden_size"]),
        vision_intermediate=int(vision["intermediate_size"]),
        vision_heads=int(vision["num_heads"]),
        hidden_size=int(vision.get("out_hidden_size") or hidden),
        experts_b=(experts * expert_params / 1e9, per_token * expert_params / 1e9),
    )


# --- decode ---------------------------------------------------------------------------------


def decode_tokens_per_s(
    shape: ModelShape, weights_gb: float, engine: Engine, *, experts_on_cpu: bool = False
) -> Optional[float]:
    """Expected decode speed: the active weights read per token at 60 % of the
    bandwidth, scaled by the MoE efficiency; with `experts_on_cpu` the active experts are
    read from RAM at the host's bandwidth instead. None when a bandwidth is unknown."""
    if not engine.bandwidth_gbps:
        return None
    per_param = weights_gb / shape.total_params_b  # GB per billion parameters
    if experts_on_cpu and shape.experts_b[1]:
        if not engine.host_bandwidth_gbps:
            return None
        on_cpu = shape.experts_b[1] * per_param
        on_gpu = (shape.active_params_b - shape.experts_b[1]) * per_param
        seconds = on_gpu / (BANDWIDTH_EFFICIENCY * engine.bandwidth_gbps) + on_cpu / (
            BANDWIDTH_EFFICIENCY * engine.host_bandwidth_gbps
        )
    else:
        seconds = shape.active_params_b * per_param / (BANDWIDTH_EFFICIENCY * engine.bandwidth_gbps)
    tokens = shape.moe_efficiency / seconds
    return round(tokens, 1) if tokens >= 1 else round(tokens, 3)  # a crawl stays above 0


# --- prefill and vision -----------------------------------------------------------------------


def vision_flops(shape: ModelShape, image_tokens: int) -> float:
    """FLOPs of the vision tower for one page: per layer the projections and the MLP
    (2 x params per patch) and the attention (QK^T and AV: 4 x patches^2 x width), then
    the 2x2 merger into the language model's width."""
    return vision_dense_flops(shape, image_tokens) + vision_attention_flops(shape, image_tokens)


def vision_dense_flops(shape: ModelShape, image_tokens: int) -> float:
    patches = PATCHES_PER_IMAGE_TOKEN * image_tokens
    w, i = shape.vision_width, shape.vision_intermediate
    merger = 2 * image_tokens * (16 * w * w + 4 * w * shape.hidden_size)
    return shape.vision_depth * 2 * patches * (4 * w * w + 2 * w * i) + merger


def vision_attention_flops(shape: ModelShape, image_tokens: int) -> float:
    patches = PATCHES_PER_IMAGE_TOKEN * image_tokens
    return shape.vision_depth * 4 * patches * patches * shape.vision_width


def vision_scores(shape: ModelShape, image_tokens: int) -> float:
    """Attention scores the vision tower computes for one page: heads x patches^2 per layer."""
    patches = PATCHES_PER_IMAGE_TOKEN * image_tokens
    return shape.vision_depth * shape.vision_heads * patches * patches


def prefill_flops(shape: ModelShape, image_tokens: int) -> float:
    """2 x the active parameters that multiply (embeddings are looked up; the output head
    runs for the last token only) x the prompt's tokens."""
    params = max(shape.active_params_b - shape.embedding_params_b, 0.0) * 1e9
    return 2 * params * (image_tokens + PROMPT_TOKENS)


def page_time(
    shape: ModelShape,
    weights_gb: float,
    engine: Engine,
    *,
    image_tokens: int,
    output_tokens: int,
    experts_on_cpu: bool = False,
) -> Optional[PageTime]:
    """Seconds for one page of `image_tokens` that writes `output_tokens`; None when the
    decode speed or the compute is unknown."""
    tps = decode_tokens_per_s(shape, weights_gb, engine, experts_on_cpu=experts_on_cpu)
    if tps is None or not engine.gflops:
        return None
    cpu = engine.device == "cpu"
    flops_per_s = engine.gflops * 1e9
    if cpu:  # llama.cpp on a CPU: each attention score has a cost, flash attention or not
        vision = (
            vision_dense_flops(shape, image_tokens) / (flops_per_s * CPU_VISION_EFFICIENCY)
            + vision_scores(shape, image_tokens) * CPU_ATTENTION_FLOPS_PER_SCORE / flops_per_s
        )
    elif engine.flash_attention:  # fused attention on a GPU: its FLOPs, at the same rate as the rest
        vision = vision_flops(shape, image_tokens) / flops_per_s
    else:  # the scores materialised on a GPU: a cost per score, as on a CPU
        vision = (
            vision_dense_flops(shape, image_tokens) / flops_per_s
            + vision_scores(shape, image_tokens) * CPU_ATTENTION_FLOPS_PER_SCORE / flops_per_s
        )
    prefill = prefill_flops(shape, image_tokens) / (flops_per_s * (CPU_PREFILL_EFFICIENCY if cpu else 1.0))
    if experts_on_cpu and shape.experts_b[1] and engine.host_gflops:
        # The active experts' share of the prefill runs where they are: on the CPU.
        share = shape.experts_b[1] / max(shape.active_params_b - shape.embedding_params_b, 1e-9)
        prefill = prefill * (1 - share) + prefill_flops(shape, image_tokens) * share / (
            engine.host_gflops * 1e9 * CPU_PREFILL_EFFICIENCY
        )
    decode = output_tokens * (1 / tps + TOKEN_OVERHEAD_S)
    total = vision + prefill + decode + PAGE_OVERHEAD_S
    return PageTime(
        seconds=round(total, 2),
        vision_s=round(vision, 2),
        prefill_s=round(prefill, 2),
        decode_s=round(decode, 2),
        tokens_per_s=tps,
        image_tokens=image_tokens,
        output_tokens=output_tokens,
    )


def typical_output_tokens(max_output_tokens: int) -> int:
    return min(TYPICAL_OUTPUT_TOKENS, max_output_tokens)


# --- the machine's figures -------------------------------------------------------------------


def _lookup(name: Optional[str], table: Dict[str, float]) -> Optional[float]:
    if not name:
        return None
    text = name.lower()
    for key in sorted(table, key=len, reverse=True):
        if key.lower() in text:
            return table[key]
    return None


def gpu_gflops(name: Optional[str], bandwidth_gbps: Optional[float]) -> Tuple[Optional[float], bool]:
    """(usable GFLOPS of a GPU, whether assumed): its published FP16 figure at
    COMPUTE_EFFICIENCY, else its bandwidth x UNKNOWN_GPU_FLOPS_PER_BYTE."""
    tflops = _lookup(name, GPU_FP16_TFLOPS)
    if tflops is not None:
        return tflops * 1000 * COMPUTE_EFFICIENCY, False
    if bandwidth_gbps:
        return bandwidth_gbps * UNKNOWN_GPU_FLOPS_PER_BYTE * COMPUTE_EFFICIENCY, True
    return None, True


def apple_gflops(chip: Optional[str], bandwidth_gbps: Optional[float]) -> Tuple[Optional[float], bool]:
    name = (chip or "").replace("Apple ", "").strip()
    tflops = None
    for key in sorted(APPLE_GPU_TFLOPS, key=len, reverse=True):  # "M3 Max" before "M3"
        if name == key or name.startswith(key + " "):
            tflops = APPLE_GPU_TFLOPS[key]
            break
    if tflops is not None:
        return tflops * 1000 * COMPUTE_EFFICIENCY, False
    if bandwidth_gbps:
        return bandwidth_gbps * 20 * COMPUTE_EFFICIENCY, True  # Apple GPUs: ~20-35 FLOPs/byte
    return None, True


# The figures are kept in the cache directory for a week: a plan must not change from one
# run to the next because a measurement caught the machine busy (the precision rule is a
# comparison of page times), and doctor need not measure every time.
CPU_SPEED_FILE = "cpu-speed.json"
CPU_SPEED_MAX_AGE_S = 7 * 24 * 3600
# Kept figures older than this are measured again, and the better of the two is kept: a
# measurement taken while other programs ran (too slow) is outgrown, and plans only ever
# move toward what the machine can do, never flip back and forth with the load.
CPU_SPEED_REMEASURE_S = 3600


@functools.lru_cache(maxsize=1)
def measure_cpu() -> Optional[CpuSpeed]:
    """This CPU's figures: kept ones (CPU_SPEED_FILE in the cache directory, same CPU and
    core count; measured again after an hour, keeping the better figures, and forgotten
    after a week) or measured now and kept; None without numpy."""
    import json
    import os
    import platform

    from qwenocr import atomicio
    from qwenocr.paths import cache_root

    machine = f"{platform.machine()} {platform.processor()} {os.cpu_count()}"
    path = cache_root() / CPU_SPEED_FILE
    best: Optional[CpuSpeed] = None
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        age = time.time() - float(kept["at"])
        if kept.get("machine") == machine and 0 <= age < CPU_SPEED_MAX_AGE_S:
            best = CpuSpeed(float(kept["bandwidth_gbps"]), float(kept["gflops"]), float(kept["took_s"]))
            if age < CPU_SPEED_REMEASURE_S:
                return best
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    measured = measure_cpu_now()
    if measured is not None and best is not None:
        # Other programs only ever slow a measurement down: the best seen is the machine's.
        measured = CpuSpeed(
            max(measured.bandwidth_gbps, best.bandwidth_gbps), max(measured.gflops, best.gflops), measured.took_s
        )
    elif measured is None:
        return best
    if measured is not None:
        record = dict(machine=machine, at=time.time(), **measured.__dict__)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomicio.write_text(path, json.dumps(record) + "\n")
        except OSError:
            pass  # a read-only cache: measure again next time
    return measured


def measure_cpu_now() -> Optional[CpuSpeed]:
    """This CPU's memory bandwidth and compute, measured in about a third of a second
    (the best of a few runs each); None without numpy."""
    try:
        import numpy as np
    except ImportError:
        return None
    started = time.perf_counter()
    source = np.ones(COPY_BYTES // 8, dtype=np.float64)  # well past any CPU cache
    target = np.empty_like(source)
    copy = float("inf")
    for _ in range(3):  # the first pass also faults the pages in
        t = time.perf_counter()
        np.copyto(target, source)
        copy = min(copy, time.perf_counter() - t)
    del source, target
    n = 1024
    a = np.full((n, n), 0.5, dtype=np.float32)
    b = np.full((n, n), 0.25, dtype=np.float32)
    mm = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        np.matmul(a, b)
        mm = min(mm, time.perf_counter() - t)
    return CpuSpeed(
        bandwidth_gbps=round(2 * COPY_BYTES / copy / GB, 1),
        gflops=round(2 * n**3 / mm / 1e9, 1),
        took_s=round(time.perf_counter() - started, 3),
    )


def cpu_decode_bandwidth(measured: CpuSpeed) -> float:
    """The bandwidth the decode formula should use for a measured CPU: the copy's rate
    scaled so that 60 % of it is what llama.cpp reads weights at (CPU_DECODE_OF_COPY)."""
    return round(measured.bandwidth_gbps * CPU_DECODE_OF_COPY / BANDWIDTH_EFFICIENCY, 1)
