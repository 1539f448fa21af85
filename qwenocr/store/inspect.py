"""What a local model is, read from its headers only: architecture, vision weights, quantization.

A model that cannot see fails every page (mlx-vlm: `'NoneType' object has no attribute
'patch_embed'`; llama.cpp: no image input) only after it has loaded, once per page. The
checks here read what a model is from the cheap parts of its files, before anything
loads: `config.json`, the safetensors headers (8 bytes of length, then JSON) or their
index, and the metadata at the head of a GGUF. No weights are read, and nothing heavy is
imported (no `gguf`, no mlx): a GGUF header is parsed here, as far as the model's own keys go.

Each check refuses only what it can tell is wrong. A file it cannot read (a damaged or
a placeholder file) is left to the engine, whose own error then names the problem.
Refusals are `ModelUnavailableError` (exit 7): the model can't be used for reading pages.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Dict, Iterable, List, Optional, Tuple

from qwenocr.errors import ModelUnavailableError
from qwenocr.store import files as model_files

__all__ = [
    "GGUF_ARCHITECTURES",
    "FolderModel",
    "WeightCounts",
    "check_gguf_sees",
    "check_mlx_sees",
    "check_source_checkpoint",
    "check_source_config",
    "gguf_architecture",
    "gguf_metadata",
    "inspect_folder",
    "read_config",
    "safetensors_header",
    "split_counts",
    "truncated_weights",
    "weight_counts",
]

# `general.architecture` of the Qwen 3.5 family's GGUFs (llama.cpp's names), and of a
# vision projector.
GGUF_ARCHITECTURES = frozenset({"qwen35", "qwen35moe"})
_PROJECTOR_ARCHITECTURE = "clip"

# What to offer instead of a model that can't be used.
_VISION_MLX_EXAMPLE = "mlx-community/Qwen3.5-9B-mxfp4"
_CONVERT = "qwenocr models convert"

# A safetensors header is JSON of a few kB per hundred tensors; anything past this is
# not a header (a damaged or foreign file).
_MAX_HEADER_BYTES = 100 * 2**20

_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}


# -- reading ---------------------------------------------------------------------------


def read_config(folder: Path) -> Optional[Dict[str, Any]]:
    """`config.json` of a model folder, or None when it is missing or not a JSON object."""
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def safetensors_header(path: Path) -> Optional[Dict[str, Any]]:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, offsets), or None if unreadable."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(8)
            if len(raw) != 8:
                return None
            (length,) = struct.unpack("<Q", raw)
            if not 2 <= length <= _MAX_HEADER_BYTES:
                return None
            body = handle.read(length)
    except OSError:
        return None
    try:
        header = json.loads(body)
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


def _weight_files(folder: Path) -> List[Path]:
    return sorted(folder.glob(model_files.MLX_WEIGHTS))


def weight_names(folder: Path) -> Optional[List[str]]:
    """Every tensor name in a folder's safetensors, from their headers (what a loader reads),
    else from `model.safetensors.index.json`; None when neither can be read."""
    names: List[str] = []
    weights = _weight_files(folder)
    for path in weights:
        header = safetensors_header(path)
        if header is None:
            break
        names += [name for name in header if name != "__metadata__"]
    else:
        if weights:
            return names
    try:
        index = json.loads((folder / "model.safetensors.index.json").read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return list(weight_map) if isinstance(weight_map, dict) else None


@dataclass(frozen=True)
class WeightCounts:
    """Parameters and bytes of a checkpoint's tensors, the vision tower's apart."""

    vision_params: int
    other_params: int
    vision_bytes: int
    other_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.vision_bytes + self.other_bytes


def weight_counts(folder: Path) -> Optional[WeightCounts]:
    """Parameter and byte counts from the safetensors headers; None if one can't be read."""
    counts = [0, 0, 0, 0]  # vision params, other params, vision bytes, other bytes
    weights = _weight_files(folder)
    if not weights:
        return None
    for path in weights:
        header = safetensors_header(path)
        if header is None:
            return None
        for name, info in header.items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            shape = info.get("shape") or []
            params = math.prod(int(n) for n in shape)
            offsets = info.get("data_offsets") or [0, params * _DTYPE_BYTES.get(str(info.get("dtype")), 2)]
            size = int(offsets[1]) - int(offsets[0])
            vision = model_files.has_vision_weights([name])
            counts[0 if vision else 1] += params
            counts[2 if vision else 3] += size
    return WeightCounts(*counts)


# -- GGUF metadata (header only) -------------------------------------------------------

# GGUF value types: fixed-size scalars (struct formats), strings, arrays.
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
# The model's keys come before the tokenizer's (llama.cpp's converters write them so);
# past this many keys, or at the tokenizer's, the walk stops: the vocabulary is large.
_GGUF_MAX_KEYS = 256
_GGUF_MAX_ARRAY = 4096  # a per-layer array (head_count_kv, recurrent_layers) is this at most


class _Unreadable(Exception):
    pass


def gguf_metadata(path: Path, partial: bool = False) -> Dict[str, Any]:
    """`general.architecture` and the numeric keys (and short numeric arrays) of a GGUF's
    header, up to the tokenizer's keys; {} when the header can't be read (with `partial`,
    what was read before the damage). No weights are read."""
    found: Dict[str, Any] = {}
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != b"GGUF" or _unpack(handle, "<I") not in (2, 3):
                return {}  # GGUF v1 (2023) and big-endian files: not worth parsing
            _unpack(handle, "<Q")  # tensor count
            for _ in range(min(_unpack(handle, "<Q"), _GGUF_MAX_KEYS)):
                key, kind = _gguf_string(handle), _unpack(handle, "<I")
                if key.startswith("tokenizer."):
                    break
                if kind == _GGUF_STRING:
                    text = _gguf_string(handle)
                    if key == "general.architecture":
                        found[key] = text
                elif kind == _GGUF_ARRAY:
                    item, count = _unpack(handle, "<I"), _unpack(handle, "<Q")
                    items = _gguf_array(handle, item, count)
                    if items is not None:
                        found[key] = items
                elif kind in _GGUF_SCALARS:
                    found[key] = _unpack(handle, _GGUF_SCALARS[kind])
                else:
                    raise _Unreadable
    except (OSError, struct.error, _Unreadable, UnicodeDecodeError):
        return found if partial else {}
    return found


def gguf_architecture(path: Path) -> Optional[str]:
    """`general.architecture` from a GGUF's header (e.g. "qwen35", "clip"); None if unreadable."""
    # The first key, in every converter's output: a damaged rest does not hide it.
    architecture = gguf_metadata(path, partial=True).get("general.architecture")
    return architecture if isinstance(architecture, str) else None


def _unpack(handle: IO[bytes], fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = handle.read(size)
    if len(data) != size:
        raise _Unreadable
    return struct.unpack(fmt, data)[0]


def _gguf_string(handle: IO[bytes]) -> str:
    length = _unpack(handle, "<Q")
    if length > 2**20:
        raise _Unreadable
    data = handle.read(length)
    if len(data) != length:
        raise _Unreadable
    return data.decode("utf-8", errors="replace")


def _gguf_array(handle: IO[bytes], item: int, count: int) -> Optional[List[Any]]:
    """A short numeric array's items; longer ones and arrays of strings are skipped (None)."""
    if item in _GGUF_SCALARS and count <= _GGUF_MAX_ARRAY:
        return [_unpack(handle, _GGUF_SCALARS[item]) for _ in range(count)]
    if item in _GGUF_SCALARS:
        handle.seek(struct.calcsize(_GGUF_SCALARS[item]) * count, 1)
    elif item == _GGUF_STRING:
        for _ in range(count):
            handle.seek(_unpack(handle, "<Q"), 1)
    else:
        raise _Unreadable
    return None


# -- what a folder is ------------------------------------------------------------------


@dataclass(frozen=True)
class FolderModel:
    """What a model folder's config and weight names say; None where they can't be read."""

    model_type: Optional[str]
    vision: Optional[bool]  # whether the weights include the vision tower
    quantization: Optional[str]  # "mxfp4", "affine", ... (None: not quantized or unknown)
    group_size: Optional[int]
    bits: Optional[int]
    config_found: bool

    @property
    def qwen35(self) -> Optional[bool]:
        return None if self.model_type is None else self.model_type in model_files.QWEN35_MODEL_TYPES


def inspect_folder(folder: Path) -> FolderModel:
    """A Hugging Face or MLX model folder, from `config.json` and the safetensors headers."""
    config = read_config(folder)
    names = weight_names(folder)
    quantization: Dict[str, Any] = {}
    model_type = None
    if config is not None:
        raw = config.get("quantization") or config.get("quantization_config")
        quantization = raw if isinstance(raw, dict) else {}
        model_type = config.get("model_type")
    group, bits = quantization.get("group_size"), quantization.get("bits")
    return FolderModel(
        model_type=str(model_type) if model_type else None,
        vision=None if names is None else model_files.has_vision_weights(names),
        quantization=model_files.quantization_mode(config) if config is not None else None,
        group_size=int(group) if isinstance(group, int) else None,
        bits=int(bits) if isinstance(bits, int) else None,
        config_found=config is not None,
    )


# -- the checks --------------------------------------------------------------------------


def _family_error(label: str, what: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"{label}: not a Qwen 3.5-family model ({what}); qwenocr reads pages with Qwen 3.5 and 3.6 vision models only",
        "pass one of those, or leave --model out to use the plan's pick; `qwenocr models list` shows the catalog",
    )


def check_mlx_sees(folder: Path, label: str) -> None:
    """Refuse an MLX (or Hugging Face) folder that is not Qwen 3.5-family or has no vision tower."""
    found = inspect_folder(folder)
    if found.qwen35 is False:
        known = ", ".join(sorted(model_files.QWEN35_MODEL_TYPES))
        raise _family_error(label, f"config.json says model_type {found.model_type!r}, not {known}")
    if found.vision is False:
        raise ModelUnavailableError(
            f"{label}: an MLX model without its vision tower (no vision_tower.* weights: a text-only conversion,"
            " e.g. made with mlx-lm); it cannot read a page",
            f"use a vision conversion such as {_VISION_MLX_EXAMPLE}, or make one with `{_CONVERT}`",
        )


def check_gguf_sees(model: Path, mmproj: Path, label: str) -> None:
    """Refuse a GGUF that is not Qwen 3.5-family, or a --mmproj that is not a vision projector."""
    architecture = gguf_architecture(model)
    if architecture is not None and architecture not in GGUF_ARCHITECTURES:
        if architecture == _PROJECTOR_ARCHITECTURE:
            raise ModelUnavailableError(
                f"{label}: {model.name} is a vision projector, not the model's weights",
                "pass the model GGUF with --model and the projector with --mmproj",
            )
        known = ", ".join(sorted(GGUF_ARCHITECTURES))
        raise _family_error(label, f"a GGUF of architecture {architecture!r}, not {known}")
    projector = gguf_architecture(mmproj)
    if projector is not None and projector != _PROJECTOR_ARCHITECTURE:
        raise ModelUnavailableError(
            f"{label}: {mmproj.name} is not a vision projector (a GGUF of architecture {projector!r})",
            "pass the mmproj*.gguf that comes with the model, e.g. mmproj-F16.gguf from the same repo",
        )


def check_source_config(folder: Path, label: str) -> FolderModel:
    """A conversion source's config.json: Qwen 3.5-family, and not quantized already."""
    found = inspect_folder(folder)
    if not found.config_found:
        raise ModelUnavailableError(
            f"{label}: not a Hugging Face model folder (no readable config.json)",
            "pass a folder downloaded from the hub (e.g. Qwen/Qwen3.5-27B), or the repo id itself",
        )
    if found.qwen35 is not True:
        raise _family_error(label, f"config.json says model_type {found.model_type!r}")
    if found.quantization is not None:
        config = read_config(folder) or {}
        raw = config.get("quantization_config") or config.get("quantization")
        how = (raw.get("quant_method") if isinstance(raw, dict) else None) or found.quantization
        raise ModelUnavailableError(
            f"{label}: already quantized ({how}); converting it again would lose precision",
            "convert the unquantized (BF16) checkpoint, e.g. Qwen/Qwen3.5-<size>",
        )
    return found


def truncated_weights(folder: Path) -> List[str]:
    """Safetensors files shorter than their header says (an interrupted download, a damaged copy)."""
    short = []
    for path in _weight_files(folder):
        try:
            with open(path, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
            header = safetensors_header(path) or {}
            ends = [int(info["data_offsets"][1]) for name, info in header.items() if name != "__metadata__"]
            if ends and 8 + length + max(ends) > path.stat().st_size:
                short.append(path.name)
        except (OSError, KeyError, TypeError, IndexError, ValueError, struct.error):
            continue  # unreadable: the converter's own error will say what is wrong
    return short


def check_source_checkpoint(folder: Path, label: str) -> FolderModel:
    """A conversion source must be a Qwen 3.5-family vision checkpoint, and not quantized already."""
    found = check_source_config(folder, label)
    if not _weight_files(folder):
        raise ModelUnavailableError(
            f"{label}: not a Hugging Face model folder (no *.safetensors weights)",
            "pass a folder downloaded from the hub (e.g. Qwen/Qwen3.5-27B), or the repo id itself",
        )
    if found.vision is False:
        raise ModelUnavailableError(
            f"{label}: the checkpoint has no vision tower weights (model.visual.*); a conversion of it could not see",
            "convert the official Qwen/Qwen3.5-<size> weights, which include it",
        )
    short = truncated_weights(folder)
    if short:
        raise ModelUnavailableError(
            f"{label}: {', '.join(short)} is shorter than its header says (an interrupted download or a damaged copy)",
            "download it again (a repo id as SOURCE resumes through the Hugging Face cache)",
        )
    return found


def split_counts(headers: Iterable[Tuple[str, Dict[str, Any]]]) -> WeightCounts:
    """WeightCounts from (name, info) pairs of safetensors headers read elsewhere (the hub)."""
    counts = [0, 0, 0, 0]
    for name, info in headers:
        shape = info.get("shape") or []
        params = math.prod(int(n) for n in shape)
        size = params * _DTYPE_BYTES.get(str(info.get("dtype")), 2)
        vision = model_files.has_vision_weights([name])
        counts[0 if vision else 1] += params
        counts[2 if vision else 3] += size
    return WeightCounts(*counts)
