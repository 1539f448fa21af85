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

Where each variant is downloaded from is fit/sources.py (candidate repos with their
sources), not a name pattern here.

`docs/memory-table.md` is generated from this module by `python scripts/memory_table.py
> docs/memory-table.md` (a test checks that the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
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

# Gated DeltaNet layers keep a fixed-size recurrent state instead of a KV cache:
# value heads x 128 x 128 fp32 per layer. 64 value heads is the most in the family
# (35B-A3B has 32), so 4 MiB per layer is an upper bound; it adds tens of MB at most.
DELTANET_STATE_BYTES_PER_LAYER = 64 * 128 * 128 * 4

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
        """The DeltaNet layers' fixed state for one sequence (an upper bound)."""
        return self.linear_attention_layers * DELTANET_STATE_BYTES_PER_LAYER

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
