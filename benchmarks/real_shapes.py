"""Build random-weight Qwen 3.5 checkpoints with the REAL dimensions, offline.

The tiny test checkpoints (tests/fixtures/build_tiny_models.py) have the real
architecture but toy sizes, so they say nothing about memory or speed. This script
builds checkpoints whose every tensor has the shape of a real Qwen 3.5 model, with
random weights (no real weights can be downloaded here), for the fit measurements
(benchmarks/bench_fit_memory.py, docs/memory-measurements.md) and for timing a page:

``qwen3.5-0.8B``
    the whole Qwen3.5-0.8B (text and vision) as its config says, as HF safetensors,
    GGUF F16 + Q8_0 + mmproj F16, and MLX MXFP4.
``tower-0.8B``, ``tower-4B``, ``tower-9B``
    each distinct vision tower of the family behind a SMALL language model (the tiny
    test model's text part: hidden 64, 4 layers), as GGUF F16 + mmproj F16 and MLX
    MXFP4; the vision part then dominates what a page costs.

Where each dimension comes from (the real config.json files are not reachable here;
these are public copies of them, found with the code search):

* 0.8B text: ``hidden_size`` 1024, ``intermediate_size`` 3584, 24 layers (3 Gated
  DeltaNet : 1 full attention), 8 attention heads, 2 KV heads x 256, DeltaNet 16 key /
  16 value heads x 128, conv kernel 4, tied embeddings, M-RoPE section [11, 11, 10],
  partial rotary 0.25, theta 1e7, vocabulary 248,320: a verbatim mirror of
  ``Qwen/Qwen3.5-0.8B/config.json`` in a public C++ test (brolm ``qwen35_config``
  tests), agreeing with THUDM/slime ``scripts/models/qwen3.5-0.8B.sh`` (24 layers,
  hidden 1024, ffn 3584, 8 heads, 2 query groups, kv-channels 256) and apxml.com's
  model page. The config's one MTP layer is left out (transformers' class has none;
  the GGUF is converted with ``--no-mtp``).
* 0.8B vision tower: depth 12, width 768, MLP 3072, 12 heads, out 1024: the same
  config.json mirror, and an ``OFFICIAL_VISION_CONTRACTS["0.8B"]`` table in another
  public repository (a KleidiAI Qwen 3.5 recipe validator).
* 2B / 4B vision tower: depth 24, width 1024, MLP 4096, 16 heads: that table's "4B"
  entry (out 2560). No public 2B config was found; the 2B is taken to share the 4B
  tower (as Qwen3-VL's 2B and 4B do: sgl-jax ``Qwen3VLVisionConfig``), so one build
  covers both. qwenocr/fit/catalog.py uses the same assumption.
* 9B and larger: depth 27, width 1152, MLP 4304, 16 heads: transformers'
  ``Qwen3_5VisionConfig`` defaults, the same in several public ports and in a
  Qwen3.5-MoE config.json (``qwen3_5_moe_vision``); FACTS §12.
* Common to all towers: 16 px patches, temporal patch 2, spatial merge 2, 2,304 learned
  position embeddings, ``gelu_pytorch_tanh``, no deepstack layers.

Output: ``${QWENOCR_FIXTURES_DIR:-~/.cache/qwenocr-fixtures}/real-shapes/<name>-<hash>/``
with ``manifest.json`` (written last: its presence means complete), where the hash
covers this script and the package versions. The benchmarks find the newest complete
build of each with ``built(name)``.

Usage::

    python benchmarks/real_shapes.py [--only qwen3.5-0.8B,tower-9B] [--no-mlx] [--force]

Progress on stderr; stdout carries one JSON object: name -> manifest path.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
_T0 = time.monotonic()


def _tiny():
    """The tiny-model builder: tokenizer, processor files and the two converters."""
    spec = importlib.util.spec_from_file_location("build_tiny_models", ROOT / "tests/fixtures/build_tiny_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def log(msg: str) -> None:
    print(f"[real-shapes {time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the real dimensions

ROPE = {
    "rope_type": "default",
    "rope_theta": 10000000.0,
    "partial_rotary_factor": 0.25,
    "mrope_section": [11, 11, 10],
    "mrope_interleaved": True,
}

# Qwen/Qwen3.5-0.8B text_config (see the module docstring for the sources).
TEXT_0_8B: Dict[str, Any] = {
    "vocab_size": 248320,
    "hidden_size": 1024,
    "intermediate_size": 3584,
    "num_hidden_layers": 24,
    "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * 6,
    "full_attention_interval": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 256,
    "linear_num_key_heads": 16,
    "linear_num_value_heads": 16,
    "linear_key_head_dim": 128,
    "linear_value_head_dim": 128,
    "linear_conv_kernel_dim": 4,
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "attention_bias": False,
    "tie_word_embeddings": True,
    "rope_parameters": ROPE,
}


def tower(depth: int, width: int, intermediate: int, heads: int) -> Dict[str, Any]:
    return {
        "depth": depth,
        "hidden_size": width,
        "intermediate_size": intermediate,
        "num_heads": heads,
        "in_channels": 3,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 2304,
        "hidden_act": "gelu_pytorch_tanh",
        "deepstack_visual_indexes": [],
    }


TOWERS = {
    "0.8B": tower(12, 768, 3072, 12),  # Qwen3.5-0.8B
    "4B": tower(24, 1024, 4096, 16),  # Qwen3.5-4B (and, assumed, 2B)
    "9B": tower(27, 1152, 4304, 16),  # Qwen3.5-9B and every larger variant
}
# Which catalog variants each tower build stands for.
TOWER_VARIANTS = {"0.8B": ["0.8B"], "4B": ["2B", "4B"], "9B": ["9B", "27B", "35B-A3B", "122B-A10B", "397B-A17B"]}

# The 9B and 27B text configs, for benchmarks/real_shapes_gguf.py (which writes their GGUFs
# directly; its docstring gives the public sources). Only what differs from the 0.8B.
TEXT_9B: Dict[str, Any] = {
    **TEXT_0_8B,
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "num_hidden_layers": 32,
    "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * 8,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "linear_num_value_heads": 32,
    "tie_word_embeddings": False,
}
TEXT_27B: Dict[str, Any] = {
    **TEXT_0_8B,
    "hidden_size": 5120,
    "intermediate_size": 17408,
    "num_hidden_layers": 64,
    "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * 16,
    "num_attention_heads": 24,
    "num_key_value_heads": 4,
    "linear_num_value_heads": 48,
    "tie_word_embeddings": False,
}
TEXT = {"0.8B": TEXT_0_8B, "9B": TEXT_9B, "27B": TEXT_27B}
TEXT_TOWER = {"0.8B": "0.8B", "9B": "9B", "27B": "9B"}

BUILDS: Dict[str, Dict[str, Any]] = {
    "qwen3.5-0.8B": {"text": TEXT_0_8B, "vision": TOWERS["0.8B"], "q8": True, "tower": "0.8B"},
    **{f"tower-{k}": {"text": None, "vision": v, "q8": False, "tower": k} for k, v in TOWERS.items()},
}


# ------------------------------------------------------------------------------- build


def cache_root() -> Path:
    env = os.environ.get("QWENOCR_FIXTURES_DIR")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "qwenocr-fixtures"
    return base / "real-shapes"


def build_hf(tiny, name: str, spec: Dict[str, Any], dest: Path, tokenizer) -> int:
    import torch
    import transformers

    text = dict(spec["text"] or tiny.text_config(False))
    text["eos_token_id"] = tiny.IM_END_ID
    vision = dict(spec["vision"], out_hidden_size=text["hidden_size"])
    config = transformers.Qwen3_5Config(
        text_config=text,
        vision_config=vision,
        image_token_id=tiny.IMAGE_PAD_ID,
        video_token_id=tiny.VIDEO_PAD_ID,
        vision_start_token_id=tiny.VISION_START_ID,
        vision_end_token_id=tiny.VISION_END_ID,
        tie_word_embeddings=True,
    )
    torch.manual_seed(tiny.SEED)
    # Made in bf16 from the start: an fp32 0.8B would need twice the memory for nothing.
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = transformers.Qwen3_5ForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(old)
    model.generation_config.eos_token_id = [tiny.IM_END_ID, tiny.ENDOFTEXT_ID]
    model.generation_config.pad_token_id = tiny.ENDOFTEXT_ID
    model.save_pretrained(dest)
    tiny.write_processor_files(dest, tokenizer)
    n = sum(p.numel() for p in model.parameters())
    del model
    log(f"{name}: {n / 1e6:.1f} M parameters -> {dest.name}/")
    return n


def convert_q8(tiny, src: Path, dest: Path, gguf_name: str, model_name: str, llama_cpp: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(llama_cpp / "gguf-py"))
    cmd = [sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(src), "--outtype", "q8_0", "--no-mtp"]
    cmd += ["--model-name", model_name, "--outfile", str(dest / gguf_name)]
    tiny.run(cmd, f"convert_hf_to_gguf.py --outtype q8_0 for {src.name}", env)


def sizes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def build_one(tiny, name: str, root: Path, key: str, versions: Dict[str, str], mlx: bool, force: bool) -> Path:
    spec = BUILDS[name]
    out = root / f"{name}-{key}"
    if (out / "manifest.json").is_file() and not force:
        log(f"{name}: up to date in {out}")
        return out / "manifest.json"
    llama_cpp = tiny.converter_dir(root.parent)
    template = (llama_cpp / "models" / "templates" / "Qwen3.5-4B.jinja").read_text(encoding="utf-8")
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        tokenizer = tiny.build_tokenizer(template)
        hf = tmp / "hf"
        params = build_hf(tiny, name, spec, hf, tokenizer)
        label = f"Qwen3.5 real-shape {name}"
        gguf = f"{name}-F16.gguf"
        log(f"{name}: GGUF F16 + mmproj F16")
        tiny.convert_gguf(hf, tmp / "gguf", gguf, label, llama_cpp)
        files: Dict[str, str] = {"hf": "hf", "gguf": f"gguf/{gguf}", "mmproj": f"gguf/{tiny.MMPROJ_NAME}"}
        if spec["q8"]:
            log(f"{name}: GGUF Q8_0")
            convert_q8(tiny, hf, tmp / "gguf", f"{name}-Q8_0.gguf", label, llama_cpp)
            files["gguf_q8_0"] = f"gguf/{name}-Q8_0.gguf"
        if mlx:
            log(f"{name}: MLX MXFP4")
            tiny.convert_mlx(hf, tmp / "mlx-mxfp4")
            files["mlx"] = "mlx-mxfp4"
        tiny.shrink_tokenizer_json(tmp)
        manifest = {
            **files,
            "name": name,
            "tower": spec["tower"],
            "tower_stands_for": TOWER_VARIANTS[spec["tower"]],
            "vision_config": spec["vision"],
            "text_config": "Qwen3.5-0.8B" if spec["text"] else "tiny (hidden 64, 4 layers)",
            "parameters": params,
            "bytes": {k: sizes(tmp / v) for k, v in files.items()},
            "key": key,
            "versions": versions,
            "random_weights": True,
            "built_by": "benchmarks/real_shapes.py",
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"{name}: done, {tiny.disk_bytes(out) / 1e9:.2f} GB in {out}")
    return out / "manifest.json"


def absolute_paths(manifest_path: Path) -> Dict[str, Any]:
    data = json.loads(manifest_path.read_text())
    base = manifest_path.parent
    keys = ("hf", "gguf", "gguf_q8_0", "mmproj", "mlx")
    return {"dir": str(base), **{k: str(base / data[k]) for k in keys if k in data}}


def tiny_checkpoints() -> List[Dict[str, Any]]:
    """The tiny dense and MoE GGUFs of tests/fixtures/build_tiny_models.py ($QWENOCR_TEST_MODELS,
    else built now), as {name, gguf, mmproj, config}: what the benchmarks set beside the
    real-dimension builds. Empty when they can't be built."""
    root = os.environ.get("QWENOCR_TEST_MODELS")
    if root is None:
        built_now = subprocess.run(
            [sys.executable, str(ROOT / "tests/fixtures/build_tiny_models.py")], capture_output=True, text=True
        )
        lines = built_now.stdout.strip().splitlines()
        root = lines[-1] if built_now.returncode == 0 and lines else None
    if not root:
        return []
    base = Path(root)
    manifest = json.loads((base / "manifest.json").read_text())
    return [
        {
            "name": f"tiny {kind}",
            "gguf": base / manifest[f"{kind}_gguf"],
            "mmproj": base / manifest[f"{kind}_mmproj"],
            "config": base / manifest[f"{kind}_hf"] / "config.json",
        }
        for kind in ("dense", "moe")
    ]


def built(name: str) -> Optional[Dict[str, Any]]:
    """The absolute paths of the newest complete build of `name` (a key of BUILDS, or a
    tower's short name "0.8B", "4B", "9B"), or None when it has not been built."""
    build = name if name in BUILDS else f"tower-{name}"
    found = sorted(cache_root().glob(f"{build}-*/manifest.json"), key=lambda p: p.stat().st_mtime)
    return absolute_paths(found[-1]) if found else None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(BUILDS), help=f"comma-separated: {', '.join(BUILDS)}")
    parser.add_argument("--no-mlx", action="store_true", help="skip the MLX MXFP4 conversions")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BUILDS]
    if unknown:
        print(f"error: unknown build {', '.join(unknown)}; choose from {', '.join(BUILDS)}", file=sys.stderr)
        return 2

    os.environ["HF_HUB_OFFLINE"] = "1"
    tiny = _tiny()
    versions = tiny.package_versions()
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update((ROOT / "tests/fixtures/build_tiny_models.py").read_bytes())
    h.update(json.dumps(versions, sort_keys=True).encode())
    key = h.hexdigest()[:10]
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    result: Dict[str, Any] = {}
    for name in names:
        try:
            manifest = build_one(tiny, name, root, key, versions, not args.no_mlx, args.force)
        except tiny.BuildError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        result[name] = absolute_paths(manifest)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
