"""Write random-weight GGUFs with the REAL dimensions of Qwen 3.5 9B or 27B, directly.

benchmarks/real_shapes.py builds the 0.8B through transformers and llama.cpp's converter:
an HF model in memory, saved, then converted. At 9B (18 GB in BF16) or 27B (54 GB) that
path takes longer than a GPU machine is lent for, so this script writes the GGUF pair
(model + mmproj) itself, tensor by tensor, from the config alone:

- every tensor llama.cpp's ``qwen35`` architecture loads, with the name, shape and type
  that ``convert_hf_to_gguf.py`` gives it (the shape rules in ``text_tensors`` and
  ``vision_tensors``; ``--check`` compares them with a converter-made GGUF, and the tests
  do so for the tiny checkpoint);
- the metadata (tokenizer, chat template, rope sections) copied from a template GGUF pair
  of the same family, the dimension keys set from the config;
- random weights: Q8_0 blocks with random int8 and one scale (std ~0.02), or F16 normals
  (std 0.02); norms at 1, DeltaNet's decay (``ssm_a``) negative. Random data are drawn
  once into a pool and tensors are views of it: speed and memory are what these files
  are for, and a 27B Q8_0 (29 GB) is written in about the time the disk takes.

The dimensions (``real_shapes.TEXT``; vision towers ``real_shapes.TOWERS``):

* 9B: hidden 4096, FFN 12288, 32 layers, 16 attention heads, 4 KV heads x 256, DeltaNet
  16 key / 32 value heads x 128, untied output: public copies of the 9B text config (a
  Qwen 3.5 training table's "9B" row: hidden 4096, FFN 12288, 32 layers, heads (16, 4),
  32 DeltaNet heads, "9B has an untied lm_head"; an MLX loader test's sample config with
  the same numbers).
* 27B: hidden 5120, FFN 17408, 64 layers, 24 attention heads, 4 KV heads x 256, DeltaNet
  16 key / 48 value heads x 128, untied: several verbatim copies of the 27B (and 3.6-27B)
  config.json in public test suites, and THUDM/slime ``scripts/models/qwen3.5-27B.sh``.

Usage (on the machine that runs the benchmark; the template pair is small enough to travel)::

    python benchmarks/real_shapes_gguf.py template --model T.gguf --mmproj M.gguf --out DIR
    python benchmarks/real_shapes_gguf.py write --variant 9B --quant Q8_0 --template DIR --out DIR
    python benchmarks/real_shapes_gguf.py check --variant 0.8B --quant Q8_0 --template DIR --against X.gguf

Progress on stderr; ``write`` prints one JSON object (the two paths and their sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_shapes  # noqa: E402  (the dimension tables, beside this script)

_T0 = time.monotonic()

TEMPLATE_MODEL = "template-model.gguf"
TEMPLATE_MMPROJ = "template-mmproj.gguf"
Q8_BLOCK = 32  # weights per Q8_0 block: an f16 scale and 32 int8
Q8_BLOCK_BYTES = 34
WEIGHT_STD = 0.02


def log(msg: str) -> None:
    print(f"[real-shapes-gguf {time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def gguf_module() -> Any:
    """llama.cpp's gguf-py: the installed ``gguf`` package, else the copy in the converter
    folder that tests/fixtures/build_tiny_models.py unpacks."""
    try:
        import gguf

        return gguf
    except ImportError:
        pass
    roots = [real_shapes.cache_root().parent]
    if os.environ.get("QWENOCR_TEST_MODELS"):  # the tiny checkpoints' builder unpacks it beside them
        roots.append(Path(os.environ["QWENOCR_TEST_MODELS"]).parent)
    found = sorted(p for root in roots for p in root.glob("_llama.cpp/*/gguf-py"))
    if not found:
        raise SystemExit("error: no gguf package: pip install gguf, or build the tiny checkpoints first")
    sys.path.insert(0, str(found[-1]))
    import gguf

    return gguf


# ----------------------------------------------------------------------------- shapes

# A tensor to write: name, shape in GGUF's order (fastest dimension first) and how it is
# filled: "matmul" (a weight matrix: Q8_0 or F16 as asked), "f32" (kept F32 by the
# converter: small random), "ones" (norms), "decay" (ssm_a, negative), "f16" (F16 in
# any file: the mmproj's patch embedding).
Tensor = Tuple[str, Tuple[int, ...], str]


def text_tensors(text: Dict[str, Any]) -> List[Tensor]:
    """The tensors of a qwen35 GGUF for a text config, as convert_hf_to_gguf.py names them."""
    h, ffn, vocab = text["hidden_size"], text["intermediate_size"], text["vocab_size"]
    heads, kv, hd = text["num_attention_heads"], text["num_key_value_heads"], text["head_dim"]
    nk, nv = text["linear_num_key_heads"], text["linear_num_value_heads"]
    dk, dv = text["linear_key_head_dim"], text["linear_value_head_dim"]
    conv = 2 * nk * dk + nv * dv  # q, k and v go through the short convolution together
    out: List[Tensor] = [("token_embd.weight", (h, vocab), "matmul")]
    for i, kind in enumerate(layer_types(text)):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", (h,), "ones"), (p + "post_attention_norm.weight", (h,), "ones")]
        if kind == "linear_attention":
            out += [
                (p + "ssm_a", (nv,), "decay"),
                (p + "ssm_dt.bias", (nv,), "ones"),
                (p + "ssm_conv1d.weight", (text["linear_conv_kernel_dim"], conv), "f32"),
                (p + "ssm_alpha.weight", (h, nv), "matmul"),
                (p + "ssm_beta.weight", (h, nv), "matmul"),
                (p + "attn_qkv.weight", (h, conv), "matmul"),
                (p + "attn_gate.weight", (h, nv * dv), "matmul"),
                (p + "ssm_norm.weight", (dv,), "ones"),
                (p + "ssm_out.weight", (nv * dv, h), "matmul"),
            ]
        else:
            out += [
                (p + "attn_q.weight", (h, 2 * heads * hd), "matmul"),  # query and its output gate
                (p + "attn_k.weight", (h, kv * hd), "matmul"),
                (p + "attn_v.weight", (h, kv * hd), "matmul"),
                (p + "attn_q_norm.weight", (hd,), "ones"),
                (p + "attn_k_norm.weight", (hd,), "ones"),
                (p + "attn_output.weight", (heads * hd, h), "matmul"),
            ]
        out += [
            (p + "ffn_gate.weight", (h, ffn), "matmul"),
            (p + "ffn_up.weight", (h, ffn), "matmul"),
            (p + "ffn_down.weight", (ffn, h), "matmul"),
        ]
    out.append(("output_norm.weight", (h,), "ones"))
    if not text.get("tie_word_embeddings", False):
        out.append(("output.weight", (h, vocab), "matmul"))
    return out


def vision_tensors(vision: Dict[str, Any], out_hidden: int) -> List[Tensor]:
    """The tensors of a qwen3vl_merger mmproj for a vision config (always F16 + F32)."""
    w, mlp, patch = vision["hidden_size"], vision["intermediate_size"], vision["patch_size"]
    merged = w * vision["spatial_merge_size"] ** 2
    out: List[Tensor] = []
    for i in range(vision["depth"]):
        p = f"v.blk.{i}."
        out += [
            (p + "attn_qkv.weight", (w, 3 * w), "f16"),
            (p + "attn_qkv.bias", (3 * w,), "f32"),
            (p + "attn_out.weight", (w, w), "f16"),
            (p + "attn_out.bias", (w,), "f32"),
            (p + "ffn_up.weight", (w, mlp), "f16"),
            (p + "ffn_up.bias", (mlp,), "f32"),
            (p + "ffn_down.weight", (mlp, w), "f16"),
            (p + "ffn_down.bias", (w,), "f32"),
            (p + "ln1.weight", (w,), "ones"),
            (p + "ln1.bias", (w,), "f32"),
            (p + "ln2.weight", (w,), "ones"),
            (p + "ln2.bias", (w,), "f32"),
        ]
    # The temporal patch of 2 is stored as two 2-D patch kernels.
    kernel = (patch, patch, vision["in_channels"], w)
    out += [
        ("v.patch_embd.weight", kernel, "f16"),
        ("v.patch_embd.weight.1", kernel, "f16"),
        ("v.patch_embd.bias", (w,), "f32"),
        ("v.position_embd.weight", (w, vision["num_position_embeddings"]), "f32"),
        ("v.post_ln.weight", (w,), "ones"),
        ("v.post_ln.bias", (w,), "f32"),
        ("mm.0.weight", (merged, merged), "f16"),
        ("mm.0.bias", (merged,), "f32"),
        ("mm.2.weight", (merged, out_hidden), "f16"),
        ("mm.2.bias", (out_hidden,), "f32"),
    ]
    return out


def layer_types(text: Dict[str, Any]) -> List[str]:
    if "layer_types" in text:
        return list(text["layer_types"])
    every = text.get("full_attention_interval", 4)
    return ["full_attention" if (i + 1) % every == 0 else "linear_attention" for i in range(text["num_hidden_layers"])]


def text_metadata(text: Dict[str, Any]) -> Dict[str, Any]:
    """The qwen35.* keys that follow from the dimensions (the rest comes from the template)."""
    hd = text["head_dim"]
    rotary = int(hd * text["rope_parameters"]["partial_rotary_factor"])
    return {
        "block_count": text["num_hidden_layers"],
        "embedding_length": text["hidden_size"],
        "feed_forward_length": text["intermediate_size"],
        "attention.head_count": text["num_attention_heads"],
        "attention.head_count_kv": text["num_key_value_heads"],
        "attention.key_length": hd,
        "attention.value_length": hd,
        "ssm.conv_kernel": text["linear_conv_kernel_dim"],
        "ssm.state_size": text["linear_key_head_dim"],
        "ssm.group_count": text["linear_num_key_heads"],
        "ssm.time_step_rank": text["linear_num_value_heads"],
        "ssm.inner_size": text["linear_num_value_heads"] * text["linear_value_head_dim"],
        "attention.recurrent_layers": [kind == "linear_attention" for kind in layer_types(text)],
        "full_attention_interval": text.get("full_attention_interval", 4),
        "rope.dimension_count": rotary,
        "rope.dimension_sections": [*text["rope_parameters"]["mrope_section"], 0],
    }


def vision_metadata(vision: Dict[str, Any], out_hidden: int) -> Dict[str, Any]:
    return {
        "projection_dim": out_hidden,
        "embedding_length": vision["hidden_size"],
        "feed_forward_length": vision["intermediate_size"],
        "block_count": vision["depth"],
        "attention.head_count": vision["num_heads"],
        "is_deepstack_layers": [False] * vision["depth"],
    }


VARIANTS = (*real_shapes.TEXT, "tiny")


def variant(name: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(text config, vision config) of a variant with real dimensions, or of the tiny test
    checkpoint ("tiny": what the tests compare with the converter's output)."""
    if name == "tiny":
        tiny = real_shapes._tiny()
        return tiny.text_config(False), tiny.vision_config()
    if name not in real_shapes.TEXT:
        raise SystemExit(f"error: unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    return real_shapes.TEXT[name], real_shapes.TOWERS[real_shapes.TEXT_TOWER[name]]


# ----------------------------------------------------------------------------- writing


class RandomPool:
    """Random bytes drawn once, handed out as views: Q8_0 blocks (random int8 under one
    scale) and F16 normals, each pool as large as the largest tensor of its kind."""

    def __init__(self, q8_bytes: int, f16_count: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        blocks = -(-q8_bytes // Q8_BLOCK_BYTES)
        drawn = np.frombuffer(rng.bytes(blocks * Q8_BLOCK_BYTES), dtype=np.uint8)
        self.q8 = drawn.copy().reshape(blocks, Q8_BLOCK_BYTES)
        # Uniform int8 has a std of ~73.6: this scale gives weights a std of WEIGHT_STD.
        scale = np.array([WEIGHT_STD / 73.6], dtype=np.float16).view(np.uint8)
        self.q8[:, 0:2] = scale
        self.q8[:, 2:][self.q8[:, 2:] == 0x80] = 0  # -128 is outside Q8_0's symmetric range
        self.q8 = self.q8.reshape(-1)
        self.f16 = (rng.standard_normal(f16_count, dtype=np.float32) * WEIGHT_STD).astype(np.float16)
        self.rng = rng

    def q8_view(self, shape: Tuple[int, ...]) -> np.ndarray:
        rows = int(np.prod(shape[1:]))
        row_bytes = shape[0] // Q8_BLOCK * Q8_BLOCK_BYTES
        return self.q8[: rows * row_bytes].reshape(rows, row_bytes)

    def f16_view(self, shape: Tuple[int, ...]) -> np.ndarray:
        return self.f16[: int(np.prod(shape))].reshape(tuple(reversed(shape)))

    def f32(self, shape: Tuple[int, ...], fill: str) -> np.ndarray:
        numpy_shape = tuple(reversed(shape))
        if fill == "ones":
            return np.ones(numpy_shape, dtype=np.float32)
        if fill == "decay":  # ssm_a = -exp(A_log), A_log ~ log U(1, 16) as transformers initialises it
            return -self.rng.uniform(1, 16, numpy_shape).astype(np.float32)
        return (self.rng.standard_normal(numpy_shape, dtype=np.float32) * WEIGHT_STD).astype(np.float32)


def tensor_type(fill: str, quant: str) -> str:
    if fill == "matmul":
        return quant
    return "F16" if fill == "f16" else "F32"


def nbytes(shape: Tuple[int, ...], kind: str) -> int:
    n = int(np.prod(shape))
    return {"Q8_0": n // Q8_BLOCK * Q8_BLOCK_BYTES, "F16": 2 * n, "F32": 4 * n}[kind]


def copy_metadata(gguf: Any, writer: Any, template: Path, prefix: str, overrides: Dict[str, Any], skip=()) -> None:
    """The template's keys, with `prefix`+key replaced by the overrides' values."""
    reader = gguf.GGUFReader(template)
    done = set()
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in skip:
            continue
        short = key[len(prefix) :] if key.startswith(prefix) else None
        value = overrides[short] if short in overrides else field.contents()
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, kind, sub_type=sub)
        if short in overrides:
            done.add(short)
    for short in overrides.keys() - done:
        value = overrides[short]
        if isinstance(value, list):
            sub = gguf.GGUFValueType.BOOL if isinstance(value[0], bool) else gguf.GGUFValueType.INT32
            writer.add_key_value(prefix + short, value, gguf.GGUFValueType.ARRAY, sub_type=sub)
        else:
            writer.add_key_value(prefix + short, value, gguf.GGUFValueType.UINT32)


def write_gguf(
    gguf: Any,
    path: Path,
    arch: str,
    template: Path,
    prefix: str,
    overrides: Dict[str, Any],
    tensors: List[Tensor],
    quant: str,
    pool: RandomPool,
    general: Dict[str, Any],
) -> int:
    writer = gguf.GGUFWriter(str(path), arch)
    skip = tuple(f"general.{k}" for k in general)
    copy_metadata(gguf, writer, template, prefix, overrides, skip)
    for key, value in general.items():
        kind = gguf.GGUFValueType.STRING if isinstance(value, str) else gguf.GGUFValueType.UINT32
        writer.add_key_value(f"general.{key}", value, kind)
    for name, shape, fill in tensors:
        kind = tensor_type(fill, quant)
        if kind == "Q8_0":
            writer.add_tensor(name, pool.q8_view(shape), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        elif kind == "F16":
            writer.add_tensor(name, pool.f16_view(shape))
        else:
            writer.add_tensor(name, pool.f32(shape, fill))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    return path.stat().st_size


def write(variant_name: str, quant: str, template: Path, out: Path) -> Dict[str, Any]:
    gguf = gguf_module()
    text, vision = variant(variant_name)
    out.mkdir(parents=True, exist_ok=True)
    model_tensors = text_tensors(text)
    vision_list = vision_tensors(vision, text["hidden_size"])
    every = [(shape, tensor_type(fill, quant)) for _, shape, fill in model_tensors + vision_list]
    largest = {kind: max((nbytes(shape, k) for shape, k in every if k == kind), default=0) for kind in ("Q8_0", "F16")}
    log(f"{variant_name} {quant}: drawing {(largest['Q8_0'] + largest['F16']) / 1e9:.2f} GB of random data")
    pool = RandomPool(largest["Q8_0"], largest["F16"] // 2)
    label = f"Qwen3.5 real-shape {variant_name}"
    file_type = {"Q8_0": 7, "F16": 1}[quant]
    model = out / f"qwen3.5-{variant_name}-{quant}.gguf"
    mmproj = out / f"mmproj-{variant_name}-F16.gguf"
    params = sum(int(np.prod(s)) for _, s, _ in model_tensors)
    log(f"{variant_name}: {params / 1e9:.2f} B text parameters -> {model.name}")
    size = write_gguf(
        gguf,
        model,
        "qwen35",
        template / TEMPLATE_MODEL,
        "qwen35.",
        text_metadata(text),
        model_tensors,
        quant,
        pool,
        {"name": label, "size_label": f"{params / 1e9:.1f}B", "file_type": file_type},
    )
    log(f"{model.name}: {size / 1e9:.2f} GB; mmproj")
    vsize = write_gguf(
        gguf,
        mmproj,
        "clip",
        template / TEMPLATE_MMPROJ,
        "clip.vision.",
        vision_metadata(vision, text["hidden_size"]),
        vision_list,
        "F16",
        pool,
        {"name": label, "file_type": 1},
    )
    log(f"{mmproj.name}: {vsize / 1e9:.2f} GB")
    return {"gguf": str(model), "mmproj": str(mmproj), "bytes": {"gguf": size, "mmproj": vsize}, "random_weights": True}


def template(model: Path, mmproj: Path, out: Path) -> None:
    """Metadata-only copies of a GGUF pair (no tensors): the tokenizer and templates a
    `write` needs, small enough to carry to another machine."""
    gguf = gguf_module()
    out.mkdir(parents=True, exist_ok=True)
    for source, name in ((model, TEMPLATE_MODEL), (mmproj, TEMPLATE_MMPROJ)):
        arch = gguf.GGUFReader(source).fields["general.architecture"].contents()
        writer = gguf.GGUFWriter(str(out / name), arch)
        copy_metadata(gguf, writer, source, "", {})
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
        writer.close()
        log(f"{name}: {(out / name).stat().st_size / 1e6:.1f} MB")


def listing(path: Path) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    reader = gguf_module().GGUFReader(path)
    return {t.name: (tuple(int(x) for x in t.shape), t.tensor_type.name) for t in reader.tensors}


def differences(expected: List[Tensor], quant: str, against: Path) -> List[str]:
    """How the tensors this script would write differ from a converter-made GGUF's."""
    mine = {name: (shape, tensor_type(fill, quant)) for name, shape, fill in expected}
    theirs = listing(against)
    out = [f"missing here: {n} {theirs[n]}" for n in sorted(theirs.keys() - mine.keys())]
    out += [f"extra here: {n} {mine[n]}" for n in sorted(mine.keys() - theirs.keys())]
    both = sorted(mine.keys() & theirs.keys())
    out += [f"{n}: here {mine[n]}, converter {theirs[n]}" for n in both if mine[n] != theirs[n]]
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("template", help="metadata-only copies of a qwen35 GGUF pair")
    t.add_argument("--model", type=Path, required=True)
    t.add_argument("--mmproj", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    w = sub.add_parser("write", help="write a random-weight GGUF pair")
    c = sub.add_parser("check", help="compare the tensors with a converter-made GGUF")
    for p in (w, c):
        p.add_argument("--variant", required=True, help=", ".join(VARIANTS))
        p.add_argument("--quant", choices=("Q8_0", "F16"), default="Q8_0")
    w.add_argument("--template", type=Path, required=True, help="a folder made by `template`")
    w.add_argument("--out", type=Path, required=True)
    c.add_argument("--against", type=Path, required=True, help="a converter-made model GGUF")
    c.add_argument("--against-mmproj", type=Path)
    args = parser.parse_args(argv)
    if args.command == "template":
        template(args.model, args.mmproj, args.out)
        return 0
    if args.command == "write":
        print(json.dumps(write(args.variant, args.quant, args.template, args.out), indent=2))
        return 0
    text, vision = variant(args.variant)
    found = differences(text_tensors(text), args.quant, args.against)
    if args.against_mmproj:
        found += differences(vision_tensors(vision, text["hidden_size"]), "F16", args.against_mmproj)
    for line in found:
        print(line)
    print(f"{len(found)} differences", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
