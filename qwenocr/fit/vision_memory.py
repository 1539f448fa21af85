"""The activation memory of one page, fitted to measurements: data and pure functions.

A page costs, on top of the weights and the KV cache, the vision encoder's activations
(its largest part, and the one that grows with the square of the image) and the
language model's activations while it prefills the image tokens. Both were measured on
a CPU (benchmarks/bench_fit_memory.py, random-weight checkpoints with the real
dimensions from benchmarks/real_shapes.py; docs/memory-measurements.md has the method
and the table) and the formulas below are fitted to those points:

    vision = scores x heads x patches^2 x 4 B      (one layer's fp32 attention scores;
                                                     0 with flash attention: never made)
           + per_patch x patches x (4·width + 2·intermediate) x 4 B
           + layer_weights x (4·width² + 2·width·intermediate) x 4 B   (one block's
                                                     weights in fp32)

    patches = 4 x image tokens (16 px patches, merged 2x2 into one 32 px token)

    text   = chunk x per_token x hidden x 4 B       (chunk = min(512, image + prompt))
           + logits_rows x vocabulary x 4 B

llama.cpp computes the logits of the last position only. mlx-vlm is slow on a CPU (a
page of the 9B tower at 2,048 tokens: 8 minutes for 4 of its 27 blocks), so its points
ran 4 of the tower's blocks: the peak stops growing after a few (`MEASURED_MLX`).
`MEASURED` and `MEASURED_MLX` keep the points the coefficients were fitted to, so the
tests can check that the formula reproduces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

from qwenocr.fit.catalog import VOCAB_SIZE

PATCHES_PER_IMAGE_TOKEN = 4  # 16 px patches merged 2x2 into one 32 px visual token
PREFILL_CHUNK_TOKENS = 512  # llama.cpp's default micro-batch (and mlx-vlm's prefill step is larger)

# Whether qwenocr's llama.cpp engine turns on flash attention (the Llama context and,
# through llama-cpp-python, the mtmd vision context). Measured here: with it the vision
# peak is 2-11x lower, the page faster and the output the same. The estimate plans for
# what the engine does; flip this together with qwenocr/engines/llamacpp.py.
LLAMA_FLASH_ATTN = True
# Where the plan counts on flash attention's lower vision peak: only where it was
# measured. On a GPU llama.cpp's vision encoder may fall back to materialised attention
# scores where the backend's flash-attention kernels lack the tower's head size (72 for
# the 9B-and-up tower: 1,152 wide, 16 heads), so there the cautious figure stands until
# it is measured on one.
FLASH_ATTN_MEASURED_ON = frozenset({"cpu"})


def planned_flash_attn(device: str) -> bool:
    """Whether the estimate for llama.cpp on `device` ("cpu", "cuda", "metal", ...) may
    count on flash attention in the vision encoder."""
    return LLAMA_FLASH_ATTN and device in FLASH_ATTN_MEASURED_ON


@dataclass(frozen=True)
class Fit:
    """Coefficients of the activation formulas (module docstring) for one engine/mode."""

    scores: float  # x heads x patches^2 x 4 B
    per_patch: float  # x patches x (4 width + 2 intermediate) x 4 B
    layer_weights: float  # x (4 width^2 + 2 width intermediate) x 4 B: one block in fp32
    text_per_token: float  # x chunk x hidden x 4 B
    logits_rows: int  # rows of vocabulary-wide fp32 logits held during the prefill
    measured: bool
    source: str


FITS: Dict[Tuple[str, bool], Fit] = {
    # llama.cpp's clip graph keeps one layer's KQ scores (fp32; the softmax runs in
    # place), the patch activations, and the compute buffer of a 512-token ubatch.
    ("llama.cpp", False): Fit(
        scores=0.978,
        per_patch=1.235,
        layer_weights=0.753,
        text_per_token=26.0,
        logits_rows=1,
        measured=True,
        source="fitted to docs/memory-measurements.md (llama-cpp-python 0.3.36, CPU)",
    ),
    ("llama.cpp", True): Fit(
        scores=0.0,
        per_patch=0.89,
        layer_weights=1.126,
        text_per_token=26.0,
        logits_rows=1,
        measured=True,
        source="fitted to docs/memory-measurements.md (llama-cpp-python 0.3.36, CPU, flash attention)",
    ),
    # mlx-vlm (mx.fast.scaled_dot_product_attention, which on a CPU materialises the
    # scores, in bf16): fitted to nine points of the three towers at 512 to 2,048 tokens
    # and scaled by 1.05, so that it is at or above seven of them and within -2.4 % to
    # +13 % of all. On Apple GPUs MLX's fused attention kernel covers head size 64 (the
    # 0.8B and 4B towers) and may keep below this; the 9B-and-up tower (head size 72)
    # takes the same fallback as here. The text term (logits for every prompt position:
    # mlx-vlm slices the last row after the lm_head) is not measured: the whole 0.8B did
    # not finish a page on this CPU in 15 minutes.
    ("mlx", False): Fit(
        scores=0.432,
        per_patch=2.765,
        layer_weights=0.0,
        text_per_token=16.0,
        logits_rows=PREFILL_CHUNK_TOKENS,
        measured=True,
        source="fitted to docs/memory-measurements.md (mlx 0.32.4, mlx-vlm 0.7.10, CPU; x1.05)",
    ),
}

# The measured vision points the llama.cpp fits reproduce: (tower: (depth, width,
# intermediate, heads), flash attention, image tokens) -> page peak GB (peak RSS minus
# RSS after load, one page, random-weight tower behind a 64-wide language model).
TOWER_0_8B = (12, 768, 3072, 12)
TOWER_4B = (24, 1024, 4096, 16)
TOWER_9B = (27, 1152, 4304, 16)
MEASURED: Dict[Tuple[Tuple[int, int, int, int], bool, int], float] = {
    (TOWER_0_8B, False, 512): 0.310,
    (TOWER_0_8B, False, 1024): 0.999,
    (TOWER_0_8B, False, 1536): 2.090,
    (TOWER_0_8B, False, 2048): 3.547,
    (TOWER_0_8B, True, 512): 0.101,
    (TOWER_0_8B, True, 1024): 0.181,
    (TOWER_0_8B, True, 1536): 0.259,
    (TOWER_0_8B, True, 2048): 0.309,
    (TOWER_0_8B, True, 4096): 0.540,
    (TOWER_4B, False, 1024): 1.343,
    (TOWER_4B, True, 512): 0.140,
    (TOWER_4B, True, 1024): 0.246,
    (TOWER_4B, True, 2048): 0.392,
    (TOWER_9B, False, 512): 0.443,
    (TOWER_9B, False, 1024): 1.366,
    (TOWER_9B, False, 1536): 2.765,
    (TOWER_9B, True, 512): 0.162,
    (TOWER_9B, True, 1024): 0.267,
    (TOWER_9B, True, 2048): 0.422,
}


# mlx-vlm, the same kind of points (CPU, mlx[cpu]); all but the first two ran 4 of the
# tower's blocks (bench_fit_memory.py --mlx-depth 4: within 3 % of the full depth's peak
# at 512 and 1,024 tokens, where both were measured).
MEASURED_MLX: Dict[Tuple[Tuple[int, int, int, int], int], float] = {
    (TOWER_0_8B, 512): 0.286,
    (TOWER_0_8B, 1024): 0.784,
    (TOWER_0_8B, 2048): 2.206,
    (TOWER_4B, 1024): 0.979,
    (TOWER_9B, 512): 0.384,
    (TOWER_9B, 1024): 0.971,
    (TOWER_9B, 2048): 2.705,
}


def fit_for(engine: str, flash_attn: bool = False) -> Fit:
    """The coefficients for `engine` ("llama.cpp" or "mlx"); MLX has one mode."""
    if engine == "llama.cpp":
        return FITS[("llama.cpp", flash_attn)]
    return FITS[("mlx", False)]


def vision_activation_bytes(
    width: int,
    intermediate: int,
    heads: int,
    image_tokens: int,
    engine: str = "llama.cpp",
    flash_attn: bool = False,
) -> float:
    """Peak activation memory of the vision encoder for one image, in bytes.

    The encoder runs one layer at a time, so the depth does not enter: only one layer's
    scores and patch activations are alive at once."""
    f = fit_for(engine, flash_attn)
    patches = PATCHES_PER_IMAGE_TOKEN * image_tokens
    scores = heads * patches * patches * 4
    per_patch = patches * (4 * width + 2 * intermediate) * 4
    layer = (4 * width * width + 2 * width * intermediate) * 4
    return f.scores * scores + f.per_patch * per_patch + f.layer_weights * layer


def text_activation_bytes(
    hidden_size: int,
    image_tokens: int,
    prompt_tokens: int = 64,
    engine: str = "llama.cpp",
    flash_attn: bool = False,
    vocab_size: int = VOCAB_SIZE,
) -> float:
    """Peak activation memory of the language model while it prefills a page, in bytes."""
    f = fit_for(engine, flash_attn)
    chunk = min(PREFILL_CHUNK_TOKENS, image_tokens + prompt_tokens)
    return chunk * f.text_per_token * hidden_size * 4 + f.logits_rows * vocab_size * 4
