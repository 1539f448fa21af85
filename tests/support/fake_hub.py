"""A Hugging Face hub cache built in code, standing in for the real one in tests.

The layout is the one huggingface_hub writes (`models--org--name/{blobs,refs,snapshots}`):
each file is a blob named after a hash, and the snapshot holds a relative symlink to
it. Blobs are sparse files of the given size, so a "5 GB" model costs no disk. A
`trees/<commit>.json` listing (what `snapshot_download` records of the hub's metadata)
can be added to test size checks against it. Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Mapping, Optional

# Sizes used by the tests: small, distinct, and none a multiple of another.
Q4 = 5_970_123
Q8 = 9_530_456
BF16 = 17_900_789
MMPROJ = 918_321
Q4_K_M = 5_680_012


def repo_folder(cache: Path, repo: str) -> Path:
    return Path(cache) / ("models--" + repo.replace("/", "--"))


def blob_name(repo: str, path: str, size: int) -> str:
    return hashlib.sha256(f"{repo}/{path}/{size}".encode()).hexdigest()


def add_snapshot(
    cache: Path,
    repo: str,
    files: Mapping[str, int],
    revision: str = "a" * 40,
    ref: Optional[str] = "main",
    tree: Optional[Mapping[str, int]] = None,
) -> Path:
    """Put `files` ({path: size}) into the cache as revision `revision`; returns the snapshot folder."""
    root = repo_folder(cache, repo)
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = root / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for path, size in files.items():
        blob = root / "blobs" / blob_name(repo, path, size)
        with open(blob, "wb") as handle:
            handle.truncate(size)
        link = snapshot / path
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / ref).write_text(revision)
    if tree is not None:
        add_tree(cache, repo, revision, tree)
    return snapshot


def add_tree(cache: Path, repo: str, revision: str, sizes: Mapping[str, int]) -> None:
    """The hub's file listing for `revision`, as huggingface_hub caches it (format 1)."""
    folder = repo_folder(cache, repo) / "trees"
    folder.mkdir(parents=True, exist_ok=True)
    files = {path: {"size": size, "blob_id": "0" * 40} for path, size in sizes.items()}
    (folder / f"{revision}.json").write_text(json.dumps({"format_version": 1, "files": files}))


def add_incomplete(cache: Path, repo: str, size: int, name: str = "f" * 64) -> Path:
    """A partial download, as huggingface_hub leaves one when interrupted."""
    path = repo_folder(cache, repo) / "blobs" / f"{name}.incomplete"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def standard_cache(cache: Path) -> Dict[str, Path]:
    """The cache most tests start from; returns the snapshot folders by repo.

    - unsloth/Qwen3.5-9B-GGUF: UD-Q4_K_XL, Q8_0, the F16 projector, and a Q4_K_M that
      no catalog row names;
    - mlx-community/Qwen3.5-9B-mxfp4: a complete MLX model;
    - unsloth/Qwen3.5-122B-A10B-GGUF: a split UD-Q4_K_XL missing its third shard.
    """
    cache.mkdir(parents=True, exist_ok=True)
    return {
        "gguf": add_snapshot(
            cache,
            "unsloth/Qwen3.5-9B-GGUF",
            {
                "Qwen3.5-9B-UD-Q4_K_XL.gguf": Q4,
                "Qwen3.5-9B-Q8_0.gguf": Q8,
                "mmproj-F16.gguf": MMPROJ,
                "Qwen3.5-9B-Q4_K_M.gguf": Q4_K_M,
            },
        ),
        "mlx": add_snapshot(
            cache,
            "mlx-community/Qwen3.5-9B-mxfp4",
            {
                "config.json": 3_100,
                "model.safetensors.index.json": 61_000,
                "model-00001-of-00002.safetensors": 3_000_000,
                "model-00002-of-00002.safetensors": 2_100_000,
                "tokenizer.json": 1_100_000,
                "chat_template.jinja": 7_000,
            },
            revision="b" * 40,
        ),
        "split": add_snapshot(
            cache,
            "unsloth/Qwen3.5-122B-A10B-GGUF",
            {
                "UD-Q4_K_XL/Qwen3.5-122B-A10B-UD-Q4_K_XL-00001-of-00003.gguf": 4_000_001,
                "UD-Q4_K_XL/Qwen3.5-122B-A10B-UD-Q4_K_XL-00002-of-00003.gguf": 4_000_002,
                "mmproj-F16.gguf": MMPROJ,
            },
            revision="c" * 40,
        ),
    }
