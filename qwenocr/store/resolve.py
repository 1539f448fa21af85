"""Where a model's files are: a local path, or a repo's files resolved into the cache.

`scan` loads what this returns. A `--model` that names a path is used as it is (an MLX
folder, a `.gguf` with its projector beside it, or a folder of GGUFs); a repo id, or the
catalog model the plan picked, is downloaded through the store's one download path
(store/hub.py) into the standard Hugging Face cache, so files that LM Studio, mlx-vlm or
llama.cpp already fetched are reused, and the other tools reuse ours.

Whatever the source, a model that cannot see (an MLX folder without its vision tower, a
GGUF without its projector) or that is not Qwen 3.5-family is refused here, in one line,
before the engine loads (store/inspect.py reads what a model is from its headers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from qwenocr.errors import ModelUnavailableError, UsageError
from qwenocr.store import files as model_files
from qwenocr.store import hub
from qwenocr.store import inspect as model_inspect
from qwenocr.store.targets import Target


@dataclass(frozen=True)
class ModelFiles:
    """A model ready to load: the engine, the weights and (GGUF) the vision projector."""

    backend: str  # "mlx" or "llama.cpp"
    path: Path  # an MLX directory, or a GGUF file (the first shard of a split model)
    mmproj: Optional[Path]
    label: str  # what to show and record: a repo id or a local path


def _projector_beside(folder: Path) -> Optional[Path]:
    found = model_files.projectors(p.name for p in folder.glob("*.gguf"))
    return folder / found[0] if found else None


def _projector(mmproj: Optional[str], folder: Path, model: str, where: str) -> Path:
    """--mmproj, else the projector found in `folder`; refused if there is none."""
    projector = Path(mmproj).expanduser() if mmproj else _projector_beside(folder)
    if projector is None:
        # Without its projector llama.cpp loads the text model only: it would fail every page.
        raise ModelUnavailableError(
            f"--model {model}: a GGUF without its vision projector (no mmproj*.gguf {where}); it cannot read a page",
            "pass the projector with --mmproj FILE: the mmproj-F16.gguf of the model's repo",
        )
    if not projector.is_file():
        raise UsageError(f"--mmproj {projector}: no such file")
    return projector.resolve()


def check_sees(model: ModelFiles) -> ModelFiles:
    """`model`, once its headers say it is a Qwen 3.5-family model with its vision part."""
    if model.backend == "mlx":
        model_inspect.check_mlx_sees(model.path, model.label)
    elif model.mmproj is not None:
        model_inspect.check_gguf_sees(model.path, model.mmproj, model.label)
    return model


def resolve_local(model: str, mmproj: Optional[str] = None) -> Optional[ModelFiles]:
    """A --model that names a local path: an MLX dir, a .gguf file, or a dir of GGUFs (None: no such path)."""
    found = _find_local(model, mmproj)
    return check_sees(found) if found is not None else None


def _find_local(model: str, mmproj: Optional[str]) -> Optional[ModelFiles]:
    path = Path(model).expanduser()
    if not path.exists():
        return None
    if path.is_file():
        if path.suffix != ".gguf":
            raise UsageError(f"--model {model}: not a .gguf file or a model directory")
        projector = _projector(mmproj, path.parent, model, "beside it")
        return ModelFiles("llama.cpp", path.resolve(), projector, str(path))
    if model_files.is_mlx_model([p.name for p in path.glob("*") if p.is_file()]):
        return ModelFiles("mlx", path.resolve(), None, str(path))
    ggufs = [p.relative_to(path).as_posix() for pattern in ("*.gguf", "*/*.gguf") for p in path.glob(pattern)]
    weights = model_files.model_ggufs(ggufs)
    if weights:
        projector = _projector(mmproj, path, model, "in the folder")
        return ModelFiles("llama.cpp", (path / weights[0]).resolve(), projector, str(path))
    raise UsageError(
        f"--model {model}: neither an MLX model directory ({' + '.join(model_files.MLX_REQUIRED)})"
        " nor a folder with a GGUF",
    )


def resolve_target(target: Target, offline: bool) -> ModelFiles:
    """A repo's model (the plan's pick, or --model ORG/NAME) to local files, downloading what is missing."""
    folder = hub.download(target.repo, target.patterns, offline=offline, needed=target)
    present = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    missing = target.missing_from(present)
    if missing:
        # Offline, a snapshot can be there with only some of the files in it.
        raise hub.not_cached_error(target, missing, offline) if offline else hub.no_such_files_error(target, missing)
    if target.backend == "mlx":
        return check_sees(ModelFiles("mlx", folder, None, target.repo))
    names = [name for name in present if target.matches(name)]
    weights, projectors = model_files.model_ggufs(names), model_files.projectors(names)
    if not weights:
        raise ModelUnavailableError(f"{target.repo}: the GGUF weights are missing after download")
    if not projectors:
        raise ModelUnavailableError(
            f"{target.repo}: a GGUF without its vision projector (no mmproj*.gguf in the repo's files); it cannot"
            " read a page",
            f"pull the repo's projector too (`qwenocr models pull --repo {target.repo} --include 'mmproj*'`)"
            " and pass --model PATH --mmproj FILE, or use a repo that ships one (e.g. unsloth/Qwen3.5-9B-GGUF)",
        )
    return check_sees(ModelFiles("llama.cpp", folder / weights[0], folder / projectors[0], target.repo))
