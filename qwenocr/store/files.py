"""Which files make a model: the one home of that knowledge.

- GGUF (llama.cpp): a model is one `.gguf` file, or one split into shards
  (`NAME-00001-of-00003.gguf`, ...) that llama.cpp loads from the first. The vision
  projector is a `.gguf` with `mmproj` in its name; F16, what the converters make by
  default, is preferred over the others (BF16, Q8_0).
- MLX (mlx-vlm): a model is a folder; `config.json` and the `*.safetensors` weights are
  required, the tokenizer and chat-template files come along under names that vary by
  repo. What to download for one is the catalog's `MLX_FILES`.

Names are paths relative to a model folder or a repo, with "/", as the hub and the cache
list them. Everything here is pure: no disk, no network.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

# The download set of an MLX repo is catalog data (doctor shows it), and fit may not
# import store: so the catalog states it and this module only adds which part of it a
# model cannot load without.
from qwenocr.fit.catalog import MLX_FILES

__all__ = [
    "MLX_FILES",
    "MLX_REQUIRED",
    "MLX_WEIGHTS",
    "DEFAULT_GGUF_QUANT",
    "gguf_models",
    "gguf_patterns",
    "guess_backend_for_repo",
    "is_mlx_model",
    "is_mmproj",
    "load_paths",
    "missing_shards",
    "model_ggufs",
    "projectors",
    "split_model_glob",
    "QWEN35_MODEL_TYPES",
    "VISION_WEIGHT_PREFIXES",
    "has_vision_weights",
    "quantization_mode",
]

MLX_WEIGHTS = "*.safetensors"
MLX_REQUIRED: Tuple[str, ...] = ("config.json", MLX_WEIGHTS)

# A repo named by --model holds many quantisations under names that vary; without
# --quant, this one (the common 4-bit of GGUF repos) is taken.
DEFAULT_GGUF_QUANT = "Q4_K_M"

_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")

# The `model_type` in config.json of every Qwen 3.5-family model (3.6 uses the same).
QWEN35_MODEL_TYPES = frozenset({"qwen3_5", "qwen3_5_moe"})

# Where the vision tower's weights sit: `vision_tower.*` in mlx-vlm conversions,
# `model.visual.*` (or `visual.*`) in Transformers checkpoints. Conversions made with
# mlx-lm keep only the language model: they cannot read a page.
VISION_WEIGHT_PREFIXES: Tuple[str, ...] = ("vision_tower.", "model.visual.", "visual.")


def has_vision_weights(weight_names: Iterable[str]) -> bool:
    """Whether a checkpoint's weight names include the vision tower."""
    return any(name.startswith(VISION_WEIGHT_PREFIXES) for name in weight_names)


def quantization_mode(config: Dict) -> Optional[str]:
    """The quantization of an MLX `config.json`: "mxfp4", "affine" (mlx's plain
    N-bit), ... or None when the weights are not quantized."""
    quantization = config.get("quantization") or config.get("quantization_config")
    if not isinstance(quantization, dict):
        return None
    return str(quantization.get("mode") or "affine")


def _basename(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def is_mmproj(name: str) -> bool:
    """A GGUF vision projector, by its file name."""
    return "mmproj" in _basename(name).lower()


def _is_first_shard(name: str) -> bool:
    match = _SHARD.search(name)
    return match is None or int(match.group(1)) == 1


def model_ggufs(names: Iterable[str]) -> List[str]:
    """The GGUFs llama.cpp is pointed at, sorted: each unsplit model and the first shard of
    each split one (projectors excluded)."""
    return sorted(n for n in names if n.endswith(".gguf") and not is_mmproj(n) and _is_first_shard(n))


def projectors(names: Iterable[str]) -> List[str]:
    """The vision projectors among `names`, the preferred (F16) first."""

    def preference(name: str) -> Tuple[int, str]:
        lower = name.lower()  # a folder named F16 counts too
        return (0 if "f16" in lower and "bf16" not in lower else 1, name)

    return sorted((n for n in names if n.endswith(".gguf") and is_mmproj(n)), key=preference)


def gguf_patterns(quant: str) -> Tuple[str, str]:
    """Globs for one quantisation of a GGUF repo and its projectors, whatever the repo calls them."""
    return (f"*{quant}*.gguf", "*mmproj*")


def split_model_glob(name: str) -> str:
    """A glob for every shard of the split model `name` is one of (`name` itself if unsplit)."""
    return _SHARD.sub(lambda match: f"-*-of-{match.group(2)}.gguf", name)


def missing_shards(names: Iterable[str]) -> List[str]:
    """Shards of a split GGUF that are absent, from the -0000N-of-0000M names present."""
    groups: Dict[Tuple[str, int], Set[int]] = {}
    for name in names:
        match = _SHARD.search(name)
        if match:
            groups.setdefault((name[: match.start()], int(match.group(2))), set()).add(int(match.group(1)))
    missing = []
    for (stem, total), present in sorted(groups.items()):
        missing += [f"{stem}-{i:05d}-of-{total:05d}.gguf" for i in range(1, total + 1) if i not in present]
    return missing


def gguf_models(names: Iterable[str]) -> List[str]:
    """The distinct GGUF models among a repo's files (split shards count once; projectors not)."""
    models = set()
    for name in names:
        if name.endswith(".gguf") and not is_mmproj(name):
            match = _SHARD.search(name)
            models.add(name[: match.start()] + ".gguf" if match else name)
    return sorted(models)


def unmatched(patterns: Iterable[str], names: Sequence[str]) -> List[str]:
    """The patterns no name matches."""
    return [p for p in patterns if not any(fnmatch.fnmatch(name, p) for name in names)]


def is_mlx_model(names: Sequence[str]) -> bool:
    """Whether a folder holding `names` is an MLX model (its required files are there)."""
    return not unmatched(MLX_REQUIRED, names)


def guess_backend_for_repo(repo: str) -> str:
    """The engine a repo's files are for, by its name: GGUF repos say so (…-GGUF)."""
    return "llama.cpp" if "gguf" in repo.lower() else "mlx"


def load_paths(folder: Path, names: Sequence[str], backend: Optional[str]) -> List[Path]:
    """What an engine (or a script) loads, one per line: for llama.cpp the model (the first
    shard of a split one) and then the projector; for MLX the folder; otherwise every file."""
    has_gguf = any(n.endswith(".gguf") for n in names)
    if backend == "mlx" or (backend is None and is_mlx_model(names) and not has_gguf):
        return [folder]
    if backend == "llama.cpp" or has_gguf:
        return [folder / n for n in model_ggufs(names) + projectors(names)]
    return [folder / n for n in sorted(names)]
