"""Where a model's files are: a local path, or a Hugging Face repo resolved into the cache.

Downloads go through `huggingface_hub` into the standard Hugging Face cache, so files
that LM Studio, mlx-vlm or llama.cpp already fetched are reused, and the other tools
reuse ours. `--offline` (or HF_HUB_OFFLINE=1) never touches the network; a missing file
then fails with a message naming it and how to get it.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from qwenocr.errors import ModelUnavailableError, UsageError

_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


@dataclass(frozen=True)
class ModelFiles:
    """A model ready to load: the engine, the weights and (GGUF) the vision projector."""

    backend: str  # "mlx" or "llama.cpp"
    path: Path  # an MLX directory, or a GGUF file (the first shard of a split model)
    mmproj: Optional[Path]
    label: str  # what to show and record: a repo id or a local path


def offline_requested(flag: bool) -> bool:
    return flag or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _is_mmproj(path: Path) -> bool:
    return "mmproj" in path.name.lower()


def _first_weights_gguf(paths: Sequence[Path]) -> Optional[Path]:
    candidates = sorted(p for p in paths if p.suffix == ".gguf" and not _is_mmproj(p))
    for path in candidates:  # llama.cpp loads a split model from its first shard
        match = _SHARD.search(path.name)
        if match is None or match.group(1) == "00001":
            return path
    return None


def _find_mmproj(folder: Path) -> Optional[Path]:
    found = sorted(p for p in folder.glob("*.gguf") if _is_mmproj(p))
    # Prefer F16 (what the converters make by default), then anything else.
    found.sort(key=lambda p: (0 if "f16" in p.name.lower() and "bf16" not in p.name.lower() else 1, p.name))
    return found[0] if found else None


def resolve_local(model: str, mmproj: Optional[str] = None) -> Optional[ModelFiles]:
    """A --model that names a local path: an MLX dir, a .gguf file, or a dir of GGUFs."""
    path = Path(model).expanduser()
    if not path.exists():
        return None
    if path.is_file():
        if path.suffix != ".gguf":
            raise UsageError(f"--model {model}: not a .gguf file or a model directory")
        projector = Path(mmproj).expanduser() if mmproj else _find_mmproj(path.parent)
        if projector is None:
            raise UsageError(
                f"--model {model}: no vision projector (mmproj*.gguf) beside it",
                "pass it with --mmproj FILE",
            )
        _require_file(projector, "--mmproj")
        return ModelFiles("llama.cpp", path.resolve(), projector.resolve(), str(path))
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return ModelFiles("mlx", path.resolve(), None, str(path))
    weights = _first_weights_gguf(list(path.glob("*.gguf")) + list(path.glob("*/*.gguf")))
    if weights is not None:
        projector = Path(mmproj).expanduser() if mmproj else _find_mmproj(path)
        if projector is None:
            raise UsageError(
                f"--model {model}: no vision projector (mmproj*.gguf) in the folder", "pass it with --mmproj FILE"
            )
        _require_file(projector, "--mmproj")
        return ModelFiles("llama.cpp", weights.resolve(), projector.resolve(), str(path))
    raise UsageError(
        f"--model {model}: neither an MLX model directory (config.json + *.safetensors) nor a folder with a GGUF",
    )


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise UsageError(f"{what} {path}: no such file")


def fetch(
    repo: str,
    patterns: List[str],
    offline: bool,
    what: str = "",
    pull_command: Optional[str] = None,
    optional: Sequence[str] = (),
) -> Path:
    """Download (or find in the cache) the files of `repo` matching `patterns` (and
    `optional` ones, which may be absent). Returns the snapshot folder; raises
    ModelUnavailableError naming the required patterns that matched nothing.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        folder = Path(
            snapshot_download(
                repo_id=repo,
                allow_patterns=list(patterns) + list(optional),
                local_files_only=offline,
            )
        )
    except LocalEntryNotFoundError:
        # huggingface_hub raises this both in offline mode and when the hub can't be
        # reached; say which, since the remedies differ.
        reason = (
            "offline mode forbids downloading"
            if offline
            else "the Hugging Face hub could not be reached to download them"
        )
        raise ModelUnavailableError(
            f"model files {', '.join(patterns)} from {repo} are not in the Hugging Face cache, and {reason}",
            f"download them once with `{pull_command or 'qwenocr models pull'}` while online, or pass --model PATH",
        ) from None
    except RepositoryNotFoundError:
        raise ModelUnavailableError(
            f"the model repository {repo} does not exist (or needs a login)", "check the name, or pass --model PATH"
        ) from None
    except (HfHubHTTPError, OSError) as error:
        raise ModelUnavailableError(
            f"downloading {repo} failed: {error}", "check the network, or pass --model PATH"
        ) from None
    present = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    missing = [pattern for pattern in patterns if not any(fnmatch.fnmatch(name, pattern) for name in present)]
    if missing:
        hint = (
            "download them with `qwenocr models pull`"
            if offline
            else "check the file names (the repository may have renamed them)"
        )
        raise ModelUnavailableError(f"{repo} has no file matching {', '.join(missing)}{what}", hint)
    return folder


def resolve_repo(
    repo: str,
    backend: str,
    patterns: List[str],
    mmproj_patterns: List[str],
    offline: bool,
    pull_command: Optional[str] = None,
    optional: Sequence[str] = (),
) -> ModelFiles:
    """A repo id (from the plan or from --model) to local files."""
    wanted = list(dict.fromkeys(patterns + mmproj_patterns))  # once each, in order
    folder = fetch(repo, wanted, offline, pull_command=pull_command, optional=optional)
    if backend == "mlx":
        return ModelFiles("mlx", folder, None, repo)
    files = [p for p in folder.rglob("*.gguf")]
    weights = _first_weights_gguf(
        [p for p in files if any(fnmatch.fnmatch(p.relative_to(folder).as_posix(), pat) for pat in patterns)]
    )
    projector = _find_mmproj(folder) or next((p for p in files if _is_mmproj(p)), None)
    if weights is None or projector is None:
        raise ModelUnavailableError(f"{repo}: the GGUF weights or the mmproj are missing after download")
    return ModelFiles("llama.cpp", weights, projector, repo)


def guess_backend_for_repo(repo: str) -> str:
    return "llama.cpp" if "gguf" in repo.lower() else "mlx"
