"""The Qwen 3.5 memory table, as data, in one place.

Every figure the planner uses lives here with the source it came from:

* weights in GB (10^9 bytes) for each variant at 4-bit, 8-bit and BF16: the seed
  article `seeds/000_*` for the four large variants, `seeds/001_*` for the four small
  ones; where no seed gives a figure (8-bit for the small ones) it is derived, and the
  source field says how. Where the two seeds disagree, the row's source says what the
  other one claims.
* the architecture figures the KV cache needs: layers, how many of them are
  full-attention (every fourth: only those keep a KV cache), KV heads and head size;
* the vision tower's shape, from which the vision projector's size (mmproj, F16) and
  the vision encoder's activation peak follow;
* how the MLX figures relate to a repo's size: at 4-bit the seed's figure is the whole
  checkpoint, vision tower included (FACTS §9: mlx 9B-4bit is 5.97 GB in total against
  seed 001's 6; 27B-4bit 16.07 GB against 16-17), so nothing is added for vision; at
  8-bit and BF16 no figure was checked, so the vision tower at F16 is added to the
  table's weights (`repo_gb`).

The chips' published memory bandwidths (Apple by configuration bin, NVIDIA, AMD), each
row with its source, are at the end (`APPLE_BANDWIDTH`, `lookup_bandwidth`); hardware.py
looks detected chips up there, docs/hardware-fit.md shows the same table.

Where each variant is downloaded from is fit/sources.py (candidate repos with their
sources), not a name pattern here.

`docs/memory-table.md` is generated from this module by `python scripts/memory_table.py
> docs/memory-table.md` (a test checks that the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple

GB = 1e9
KIB = 1024

BITS = (4, 8, 16)
BACKENDS = ("mlx", "llama.cpp")

# The quantisation each backend uses for each precision. MXFP4 is MLX's 4-bit (FACTS
# §5); Unsloth's dynamic UD-Q4_K_XL is the GGUF 4-bit (FACTS §3).
QUANTS: Dict[str, Dict[int, str]] = {
    "llama.cpp": {4: "Q4_K_XL", 8: "Q8_0", 16: "BF16"},
    "mlx": {4: "MXFP4", 8: "8bit", 16: "bf16"},
}
# What to download of an MLX repo: the config and the weights, and the tokenizer and
# chat-template files beside them. It is catalog data (`doctor` shows it), so it is
# stated here, once; store/files.py takes it from here (fit may not import store) and
# says which of these files a model can't load without.
MLX_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt"]

# Q8_0 stores 32 int8 weights plus one fp16 scale per block: 8.5 bits per weight.
Q8_BITS_PER_WEIGHT = 8.5

# Gated DeltaNet layers keep a fixed-size recurrent state instead of a KV cache: value
# heads x 128 x 128 fp32 per layer, plus the short convolution's last 3 inputs (queries,
# keys and values: at most 3 x 3 x heads x 128 fp32). Where a public config gives the
# value heads (Variant.deltanet_value_heads: 0.8B 16, Qwen/Qwen3.5-0.8B config.json;
# 35B-A3B 32, the Megatron config), the state is theirs; elsewhere 64 heads, the most in
# the family, as an upper bound. Each page decoding at once (`scan --batch`) has one.
DELTANET_HEAD_DIM = 128
DELTANET_MAX_VALUE_HEADS = 64
DELTANET_CONV_KEEP = 3  # the convolution kernel (4) less one


def deltanet_state_bytes_per_layer(value_heads: int) -> int:
    state = value_heads * DELTANET_HEAD_DIM * DELTANET_HEAD_DIM * 4
    conv = DELTANET_CONV_KEEP * 3 * value_heads * DELTANET_HEAD_DIM * 4
    return state + conv


VOCAB_SIZE = 248_320  # Qwen 3.5's vocabulary (embedding and output rows)

SEED_000 = "seed 000 (Qwen 3.5 OCR report, memory table)"
SEED_001 = "seed 001 (Qwen 3.5 guide, 'What Hardware Do You Need?')"
ARCH_SOURCE = "public Megatron configs of Qwen 3.5 (THUDM/slime scripts/models/qwen3.5-*.sh)"


@dataclass(frozen=True)
class Weights:
    """Memory for one variant's weights at one precision, and where the figure is from."""

    bits: int
    gb: float
    source: str


@dataclass(frozen=True)
class VisionTower:
    """The vision encoder's shape (ViT with 16 px patches and a 2x2 patch merger)."""

    depth: int
    width: int
    intermediate: int
    heads: int
    source: str


@dataclass(frozen=True)
class Variant:
    """One Qwen 3.5 model and everything the planner needs to know about it."""

    name: str  # "27B", "35B-A3B"
    total_params_b: float
    active_params_b: float
    moe: bool
    layers: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    arch_source: str
    vision: VisionTower
    weights: Dict[int, Weights] = field(default_factory=dict)
    min_recommended: Optional[str] = None  # seed 000's "Minimum Recommended GPU(s)"
    deltanet_value_heads: Optional[int] = None  # where a public config gives them

    @property
    def hf_id(self) -> str:
        return f"Qwen/Qwen3.5-{self.name}"

    @property
    def kind(self) -> str:
        return "MoE" if self.moe else "dense"

    @property
    def full_attention_layers(self) -> int:
        # Three Gated DeltaNet layers to one full-attention layer (FACTS §1).
        return self.layers // 4

    @property
    def linear_attention_layers(self) -> int:
        return self.layers - self.full_attention_layers

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache per token at 16-bit: full-attention layers x (K and V) x heads x dim x 2 B."""
        return self.full_attention_layers * 2 * self.kv_heads * self.head_dim * 2

    @property
    def recurrent_state_bytes(self) -> int:
        """The DeltaNet layers' fixed state for one sequence (an upper bound where the
        variant's heads are not known)."""
        heads = self.deltanet_value_heads or DELTANET_MAX_VALUE_HEADS
        return self.linear_attention_layers * deltanet_state_bytes_per_layer(heads)

    @property
    def vision_params(self) -> int:
        """Parameters of the vision tower + merger (what `mmproj` holds)."""
        v = self.vision
        blocks = v.depth * (4 * v.width * v.width + 2 * v.width * v.intermediate)
        patch_embed = 3 * 2 * 16 * 16 * v.width  # RGB x temporal 2 x 16 x 16 patch
        position = 2304 * v.width
        merged = 4 * v.width  # 2x2 patches are merged into one visual token
        merger = merged * merged + merged * self.hidden_size
        return blocks + patch_embed + position + merger

    @property
    def vision_gb(self) -> float:
        """The vision projector at F16 (how GGUF ships it and MLX keeps it), GB."""
        return round(self.vision_params * 2 / GB, 2)

    def weights_gb(self, bits: int) -> float:
        return self.weights[bits].gb

    def mlx_gb(self, bits: int) -> float:
        """An MLX repo's size from the table, vision tower included (see the module doc):
        the 4-bit figure already holds it; at 8-bit and BF16 it is added at F16."""
        return self.weights_gb(bits) if bits == 4 else round(self.weights_gb(bits) + self.vision_gb, 2)


def _vit(depth: int, width: int, intermediate: int, heads: int, source: str) -> VisionTower:
    return VisionTower(depth, width, intermediate, heads, source)


_VIT_LARGE = _vit(27, 1152, 4304, 16, "Qwen 3.5 vision config defaults (depth 27, width 1152, 16 heads)")
_VIT_SMALL = _vit(
    24, 1024, 4096, 16, "assumed: the Qwen3-VL 2B/4B tower (depth 24, width 1024); not verified for Qwen 3.5"
)
_VIT_TINY = _vit(
    12, 768, 3072, 12, "assumed: a 12-layer, 768-wide tower, matching FACTS §2's 0.2 GB low end; not verified"
)


def _derived_q8(bf16_gb: float) -> Weights:
    return Weights(
        8,
        round(bf16_gb * Q8_BITS_PER_WEIGHT / 16, 2),
        f"derived: BF16 x {Q8_BITS_PER_WEIGHT}/16 (Q8_0's bits per weight); no seed gives 8-bit",
    )


def _small(name: str, params: float, layers: int, kv_heads: int, hidden: int, bf16: float, q4: float, vit, arch):
    return Variant(
        name=name,
        total_params_b=params,
        active_params_b=params,
        moe=False,
        layers=layers,
        kv_heads=kv_heads,
        head_dim=256,
        hidden_size=hidden,
        arch_source=arch,
        vision=vit,
        weights={
            4: Weights(4, q4, SEED_001),
            8: _derived_q8(bf16),
            16: Weights(16, bf16, SEED_001),
        },
    )


def _large(name, total, active, moe, layers, kv_heads, hidden, w000, w001, minimum, arch=ARCH_SOURCE):
    """w000 = seed 000's (BF16, 8-bit, 4-bit); w001 = seed 001's (BF16, 4-bit)."""
    bf16, q8, q4 = w000
    other_bf16, other_q4 = w001

    def note(ours: float, theirs: Optional[float]) -> str:
        if theirs is None or theirs == ours:
            return SEED_000 + ("; seed 001 agrees" if theirs == ours else "")
        return f"{SEED_000}; seed 001 says {theirs:g} GB"

    return Variant(
        name=name,
        total_params_b=total,
        active_params_b=active,
        moe=moe,
        layers=layers,
        kv_heads=kv_heads,
        head_dim=256,
        hidden_size=hidden,
        arch_source=arch,
        vision=_VIT_LARGE,
        weights={
            4: Weights(4, q4, note(q4, other_q4)),
            8: Weights(
                8,
                q8,
                note(q8, None)
                + ("; above 397 x 8.5/8 = 422 GB, kept as the cautious figure" if name == "397B-A17B" else ""),
            ),
            16: Weights(16, bf16, note(bf16, other_bf16)),
        },
        min_recommended=minimum,
    )


# Smallest first: the planner walks this order.
VARIANTS: Tuple[Variant, ...] = (
    _small("0.8B", 0.8, 24, 2, 1024, 1.6, 0.5, _VIT_TINY, ARCH_SOURCE + " (0.8B: 24 layers, 2 KV heads)"),
    _small("2B", 2, 24, 2, 2048, 4, 1.5, _VIT_SMALL, ARCH_SOURCE + " (2B: 24 layers, 2 KV heads)"),
    _small("4B", 4, 32, 4, 2560, 8, 3, _VIT_SMALL, ARCH_SOURCE + " (4B: 32 layers, 4 KV heads)"),
    _small(
        "9B",
        9,
        32,
        4,
        4096,
        18,
        6,
        _VIT_LARGE,
        "FACTS §1 (32 KiB/token); 32 layers, 4 KV heads (Qwen 3.5 text config defaults)",
    ),
    _large("27B", 27, 27, False, 64, 4, 5120, (54, 30, 17), (54, 16), "1x RTX 4090 (24GB) or Mac M2 Max"),
    _large(
        "35B-A3B",
        35,
        3,
        True,
        40,
        2,
        2048,
        (70, 38, 22),
        (70, 20),
        "1x RTX 6000 Ada or Mac M3 Max",
        arch=ARCH_SOURCE + "; FACTS §1 (20 KiB/token)",
    ),
    _large("122B-A10B", 122, 10, True, 48, 2, 3072, (245, 132, 70), (244, 70), "2x RTX 6000 Ada or Mac Studio"),
    _large("397B-A17B", 397, 17, True, 60, 2, 4096, (810, 512, 214), (794, 220), "8x H100 or Mac M3 Ultra (256GB)"),
)

# The Gated DeltaNet value heads public configs give (see deltanet_state_bytes_per_layer):
# 0.8B and 35B-A3B from their config.json; 9B (32) from public copies of its text config;
# 27B (48) from several verbatim copies of its config.json (benchmarks/real_shapes_gguf.py
# lists them). The others keep the upper bound.
_DELTANET_VALUE_HEADS = {"0.8B": 16, "9B": 32, "27B": 48, "35B-A3B": 32}
VARIANTS = tuple(
    replace(v, deltanet_value_heads=_DELTANET_VALUE_HEADS[v.name]) if v.name in _DELTANET_VALUE_HEADS else v
    for v in VARIANTS
)


def quant_name(backend: str, bits: int) -> str:
    return QUANTS[backend][bits]


def get_variant(name: str) -> Variant:
    """A variant by name: "27B", "27b", "Qwen3.5-27B", "35B-A3B" or just "35B" (a Qwen3.6
    name gives the 3.5 row of the same size: same architecture and figures)."""
    key = name.strip().lower()
    for prefix in ("qwen/", "qwen3.5-", "qwen3.5", "qwen-3.5-", "qwen3.6-", "qwen3.6"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    key = key.strip("- ")
    for v in VARIANTS:
        full = v.name.lower()
        if key == full or key == full.split("-")[0]:
            return v
    raise KeyError(name)


def variant_names() -> List[str]:
    return [v.name for v in VARIANTS]


def parse_quant(text: str) -> Tuple[Optional[str], int]:
    """Read a `--quant` value: (the backend it implies or None, bits).

    Backend-specific names imply their backend ("Q4_K_XL", "Q8_0" → llama.cpp;
    "MXFP4" → mlx). Generic ones ("4bit", "8bit", "bf16", "4", "8", "16") don't.
    """
    key = text.strip().upper().replace("-", "_")
    if key.startswith("UD_"):
        key = key[3:]
    table = {
        "Q4_K_XL": ("llama.cpp", 4),
        "Q4": (None, 4),
        "Q8_0": ("llama.cpp", 8),
        "Q8": (None, 8),
        "MXFP4": ("mlx", 4),
        "4BIT": (None, 4),
        "4": (None, 4),
        "INT4": (None, 4),
        "8BIT": (None, 8),
        "8": (None, 8),
        "INT8": (None, 8),
        "BF16": (None, 16),
        "16": (None, 16),
        "16BIT": (None, 16),
        "FP16": (None, 16),
        "F16": (None, 16),
    }
    if key not in table:
        raise KeyError(text)
    backend, bits = table[key]
    return backend, bits


# --- docs/memory-table.md ---------------------------------------------------------------


def quant_for_backend(quant: str, backend: Optional[str]) -> Tuple[Optional[str], int]:
    """`parse_quant` checked against a requested backend, for user input.

    Returns (the backend: the requested one, else the one the quant implies, else None;
    bits). Raises UsageError for an unknown quant or one that belongs to another backend.
    """
    from qwenocr.errors import UsageError

    try:
        implied, bits = parse_quant(quant)
    except KeyError:
        raise UsageError(
            f"unknown quant {quant!r}",
            "use 4bit, 8bit or bf16, or a backend's own name: Q4_K_XL, Q8_0, BF16 (llama.cpp), MXFP4, 8bit, bf16 (mlx)",
        ) from None
    if implied and backend and implied != backend:
        raise UsageError(f"quant {quant} is for {implied}, but the backend asked for is {backend}")
    return backend or implied, bits


# --- chips and memory bandwidth ---------------------------------------------------------------
#
# Published peak memory bandwidth in GB/s (10^9 bytes/s), used for the expected decode
# speed. One row per chip *configuration*: where one name covers bins with different
# bandwidths (M3 Max: 300 or 400 GB/s), each bin is a row with the GPU core counts and
# the memory sizes it was sold with. A detected chip is placed in its bin by its GPU
# core count where that can be read, else by its memory size; where neither tells, the
# lowest figure is kept, so speed estimates err on the slow side. Every row says where
# its figure is from (docs/hardware-fit.md has the same table).

APPLE_SPECS = "Apple newsroom / tech specs"
NVIDIA_SPECS = "NVIDIA datasheet"
AMD_SPECS = "AMD product specifications (amd.com/en/products/specifications)"


@dataclass(frozen=True)
class Bandwidth:
    """One chip (configuration) and its published memory bandwidth."""

    name: str  # matched as whole words in a detected name: "M4 Max", "RTX 4090", "RX 7900 XTX"
    gbps: float
    source: str
    gpu_cores: Tuple[int, ...] = ()  # this bin's GPU core counts; () = the only bin
    memory_gib: Tuple[int, ...] = ()  # memory sizes (GiB, as sold) this bin came with


@dataclass(frozen=True)
class BandwidthMatch:
    """A table row matched to a detected name, and how its bin was chosen."""

    gbps: float
    source: str
    basis: str  # "name" | "gpu cores" | "memory size" | "lowest bin"

    @property
    def note(self) -> Optional[str]:
        if self.basis == "lowest bin":
            return "the chip's configuration could not be told: its lowest-bandwidth bin is assumed"
        return None


def _b(name: str, gbps: float, source: str, gpu_cores: Tuple[int, ...] = (), memory_gib: Tuple[int, ...] = ()):
    return Bandwidth(name, gbps, source, gpu_cores, memory_gib)


APPLE_BANDWIDTH: Tuple[Bandwidth, ...] = (
    # LPDDR4X-4266 on a 128-bit bus; Apple gave no figure for the M1.
    _b("M1", 68.25, "LPDDR4X-4266 x 128 bit (AnandTech's M1 review; Apple published no figure)"),
    _b("M1 Pro", 200, f"{APPLE_SPECS}, 'Introducing M1 Pro and M1 Max', 2021-10-18"),
    _b("M1 Max", 400, f"{APPLE_SPECS}, 'Introducing M1 Pro and M1 Max', 2021-10-18 (24- and 32-core GPU alike)"),
    _b("M1 Ultra", 800, f"{APPLE_SPECS}, 'Apple unveils M1 Ultra', 2022-03-08"),
    _b("M2", 100, f"{APPLE_SPECS}, 'Apple unveils M2', 2022-06-06"),
    _b("M2 Pro", 200, f"{APPLE_SPECS}, 'Apple unveils M2 Pro and M2 Max', 2023-01-17"),
    _b("M2 Max", 400, f"{APPLE_SPECS}, 'Apple unveils M2 Pro and M2 Max', 2023-01-17 (30- and 38-core GPU alike)"),
    _b("M2 Ultra", 800, f"{APPLE_SPECS}, 'Apple introduces M2 Ultra', 2023-06-05"),
    _b("M3", 100, f"{APPLE_SPECS}, MacBook Pro (14-inch, M3, Nov 2023) tech specs"),
    _b("M3 Pro", 150, f"{APPLE_SPECS}, MacBook Pro (M3 Pro, Nov 2023) tech specs"),
    # FACTS §13: M3 Max with 48/64/128 GB is 400 GB/s, the 36 GB one 300 GB/s.
    _b("M3 Max", 300, f"{APPLE_SPECS}, MacBook Pro (M3 Max, Nov 2023): 14-core CPU, 30-core GPU", (30,), (36,)),
    _b(
        "M3 Max",
        400,
        f"{APPLE_SPECS}, MacBook Pro (M3 Max, Nov 2023): 16-core CPU, 40-core GPU",
        (40,),
        (48, 64, 128),
    ),
    _b("M3 Ultra", 819, f"{APPLE_SPECS}, Mac Studio (2025) tech specs (60- and 80-core GPU alike)"),
    _b("M4", 120, f"{APPLE_SPECS}, 'Apple introduces M4 chip', 2024-05-07"),
    _b("M4 Pro", 273, f"{APPLE_SPECS}, 'Apple introduces M4 Pro and M4 Max', 2024-10-30"),
    # FACTS §13: M4 Max with 48/64/128 GB is 546 GB/s, the 36 GB one 410 GB/s.
    _b("M4 Max", 410, f"{APPLE_SPECS}, MacBook Pro (M4 Max, Nov 2024): 14-core CPU, 32-core GPU", (32,), (36,)),
    _b(
        "M4 Max",
        546,
        f"{APPLE_SPECS}, MacBook Pro (M4 Max, Nov 2024): 16-core CPU, 40-core GPU",
        (40,),
        (48, 64, 128),
    ),
    _b("M5", 153, f"{APPLE_SPECS}, 'Apple unleashes M5', 2025-10-15 (as reported by dig.watch and lowyat.net)"),
    _b("M5 Pro", 307, f"{APPLE_SPECS}, M5 Pro and M5 Max, 2026-03-03 (as reported by MacRumors and HotHardware)"),
    # Apple gave "up to 614 GB/s"; the 32-core-GPU bin's 460 GB/s is from third-party
    # spec listings only (cputronic.com, 'Apple M5 Max (32-core GPU)'), as is the
    # 40-core bin's 48/64/128 GB. Not confirmed by Apple: kept as the slow default.
    _b(
        "M5 Max",
        460,
        "third-party spec listing (cputronic.com, 'Apple M5 Max (32-core GPU)'), unconfirmed",
        (32,),
        (36,),
    ),
    _b(
        "M5 Max",
        614,
        f"{APPLE_SPECS}, M5 Pro and M5 Max, 2026-03-03 (as reported by MacRumors and HotHardware): 40-core GPU",
        (40,),
        (48, 64, 128),
    ),
)

NVIDIA_BANDWIDTH: Tuple[Bandwidth, ...] = (
    _b("RTX 3060", 360, NVIDIA_SPECS),
    _b("RTX 3080", 760, NVIDIA_SPECS),
    _b("RTX 3090", 936, NVIDIA_SPECS),
    _b("RTX 4060", 272, NVIDIA_SPECS),
    _b("RTX 4070", 504, NVIDIA_SPECS),
    _b("RTX 4080", 717, NVIDIA_SPECS),
    _b("RTX 4090", 1008, NVIDIA_SPECS),
    _b("RTX 5080", 960, NVIDIA_SPECS),
    _b("RTX 5090", 1792, NVIDIA_SPECS),
    _b("RTX A6000", 768, NVIDIA_SPECS),
    _b("RTX 6000 Ada", 960, NVIDIA_SPECS),
    _b("RTX PRO 6000", 1792, NVIDIA_SPECS),
    _b("T4", 320, NVIDIA_SPECS),
    _b("L4", 300, NVIDIA_SPECS),
    _b("A10", 600, NVIDIA_SPECS),
    _b("L40S", 864, NVIDIA_SPECS),
    _b("L40", 864, NVIDIA_SPECS),
    _b("A100-SXM4-40GB", 1555, NVIDIA_SPECS),
    _b("A100-PCIE-40GB", 1555, NVIDIA_SPECS),
    _b("A100-SXM4-80GB", 2039, NVIDIA_SPECS),
    _b("A100 80GB PCIe", 1935, NVIDIA_SPECS),
    _b("A100-PCIE-80GB", 1935, NVIDIA_SPECS),
    _b("H100 PCIe", 2000, NVIDIA_SPECS),
    _b("H100 80GB HBM3", 3350, f"{NVIDIA_SPECS} (SXM)"),
    _b("H100 NVL", 3900, NVIDIA_SPECS),
    _b("H100", 2000, f"{NVIDIA_SPECS}: an H100 that can't be placed gets the slower (PCIe) figure"),
    _b("A100", 1555, f"{NVIDIA_SPECS}: an A100 that can't be placed gets the 40 GB figure"),
    _b("H200", 4800, NVIDIA_SPECS),
    _b("GH200", 4000, NVIDIA_SPECS),
    _b("B200", 8000, NVIDIA_SPECS),
)

AMD_BANDWIDTH: Tuple[Bandwidth, ...] = (
    _b("RX 7900 XTX", 960, AMD_SPECS),
    _b("RX 7900 XT", 800, AMD_SPECS),
    _b("RX 7900 GRE", 576, AMD_SPECS),
    _b("RX 7800 XT", 624, AMD_SPECS),
    _b("RX 7700 XT", 432, AMD_SPECS),
    _b("RX 7600 XT", 288, AMD_SPECS),
    _b("RX 7600", 288, AMD_SPECS),
    _b("RX 9070 XT", 640, AMD_SPECS),
    _b("RX 9070", 640, AMD_SPECS),
    _b("RX 6900 XT", 512, AMD_SPECS),
    _b("RX 6800 XT", 512, AMD_SPECS),
    _b("PRO W7900", 864, AMD_SPECS),
    _b("PRO W7800", 576, AMD_SPECS),
    _b("MI210", 1638, AMD_SPECS),
    _b("MI250X", 3277, AMD_SPECS),
    _b("MI300X", 5300, AMD_SPECS),
    _b("MI300A", 5300, AMD_SPECS),
    _b("MI325X", 6000, AMD_SPECS),
    # Strix Halo (Ryzen AI Max, Radeon 8060S/8050S): LPDDR5X-8000 on a 256-bit bus; the
    # measurements in FACTS §13 were taken on this 256 GB/s machine.
    _b("Radeon 8060S", 256, f"{AMD_SPECS}: Ryzen AI Max, LPDDR5X-8000 x 256 bit"),
    _b("Radeon 8050S", 256, f"{AMD_SPECS}: Ryzen AI Max, LPDDR5X-8000 x 256 bit"),
    _b("Ryzen AI Max", 256, f"{AMD_SPECS}: LPDDR5X-8000 x 256 bit"),
    _b("Strix Halo", 256, f"{AMD_SPECS}: Ryzen AI Max, LPDDR5X-8000 x 256 bit"),
)


def _whole_words_in(key: str, name: str) -> bool:
    """Whether `key` appears in `name` as whole words ("M3" not in "M3 Max" as its
    own match is the caller's business: longest keys are tried first)."""
    lowered, k = name.lower(), key.lower()
    start = 0
    while True:
        at = lowered.find(k, start)
        if at < 0:
            return False
        end = at + len(k)
        if (at == 0 or not lowered[at - 1].isalnum()) and (end == len(lowered) or not lowered[end].isalnum()):
            return True
        start = at + 1


def lookup_bandwidth(
    table: Tuple[Bandwidth, ...],
    name: Optional[str],
    *,
    gpu_cores: Optional[int] = None,
    memory_bytes: Optional[int] = None,
) -> Optional[BandwidthMatch]:
    """The bandwidth of the chip called `name` (the longest table name found in it, so
    "M3" does not claim "M3 Max" nor "A10" an "A100"), in the bin its GPU core count or
    else its memory size (bytes) says; the lowest bin when neither tells. None if unknown."""
    if not name:
        return None
    for key in sorted({row.name for row in table}, key=len, reverse=True):
        if not _whole_words_in(key, name):
            continue
        rows = [row for row in table if row.name == key]
        if len(rows) == 1:
            return BandwidthMatch(rows[0].gbps, rows[0].source, "name")
        if gpu_cores is not None:
            by_cores = [row for row in rows if gpu_cores in row.gpu_cores]
            if by_cores:
                return BandwidthMatch(by_cores[0].gbps, by_cores[0].source, "gpu cores")
        if memory_bytes:
            gib = round(memory_bytes / 1024**3)
            by_memory = [row for row in rows if gib in row.memory_gib]
            if by_memory:
                return BandwidthMatch(by_memory[0].gbps, by_memory[0].source, "memory size")
        slowest = min(rows, key=lambda row: row.gbps)
        return BandwidthMatch(slowest.gbps, slowest.source, "lowest bin")
    return None
