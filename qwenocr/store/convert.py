"""`qwenocr models convert`: an MXFP4 MLX model, with its vision tower, made from BF16 weights.

No MXFP4 MLX repo with vision weights was found on the hub for the large Qwen 3.5 sizes
(FACTS §9), so qwenocr makes one: mlx-vlm's converter keeps `vision_tower.*` (in BF16)
and quantizes the language model to MXFP4 with group size 32 (the only group size mxfp4
takes). The steps, each refused in one line before the expensive one that follows:

1. what SOURCE is: a catalog VARIANT (the official `Qwen/Qwen3.5-<variant>` repo, or
   `Qwen/Qwen3.6-…` with `--family 3.6`), a repo id, or a local Hugging Face folder;
   a local one must be a Qwen 3.5-family vision checkpoint, not quantized (store/inspect.py);
2. the disk: free space for the download (what the cache lacks) and the result (about
   4.25/16 of the BF16 language model plus the vision tower in BF16), checked with
   `shutil.disk_usage` on each filesystem;
3. the download, through the store's one download path (store/hub.py) into the standard
   Hugging Face cache (so it resumes, and other tools reuse it), then the same checks on
   what arrived;
4. the conversion, into a hidden temporary sibling of the output folder, which is checked
   (config, vision weights, mxfp4 with group 32) and only then renamed into place: an
   interrupted or failed conversion leaves no output folder, and its temporary one is
   removed;
5. the result is registered (store/registry.py) for `scan` and `doctor`.

mlx-vlm prints its own progress to stdout; it is turned into phases on stderr, so stdout
carries only the result's path.
"""

from __future__ import annotations

import contextlib
import errno
import inspect as pyinspect
import io
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from qwenocr.errors import (
    BackendError,
    EngineMissingError,
    InsufficientMemoryError,
    ModelUnavailableError,
    OutputError,
    UsageError,
)
from qwenocr.fit import catalog
from qwenocr.store import files as model_files
from qwenocr.store import hub, registry
from qwenocr.store import inspect as model_inspect
from qwenocr.store.cache import human_size

__all__ = [
    "FAMILIES",
    "QUANTS",
    "ConvertResult",
    "DiskNeed",
    "Quant",
    "Source",
    "check_disk",
    "convert",
    "estimate_result_bytes",
    "parse_source",
    "verify_result",
]

# Qwen families with the same architecture classes (qwen3_5, qwen3_5_moe), and the
# variants each has official weights for (None: every catalog variant).
FAMILIES: Dict[str, Optional[Tuple[str, ...]]] = {"3.5": None, "3.6": ("27B", "35B-A3B")}
DEFAULT_FAMILY = "3.5"


@dataclass(frozen=True)
class Quant:
    name: str
    bits: int
    group_size: int
    mode: str

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per quantized weight: the values and one 8-bit scale per group."""
        return self.bits + 8 / self.group_size


# mxfp4 takes group size 32 only (mlx refuses the default 64).
QUANTS: Dict[str, Quant] = {"mxfp4": Quant("mxfp4", 4, 32, "mxfp4")}

# What a conversion needs of a repo: mlx-vlm's own download set, less `*.py`: qwenocr
# never runs code shipped with a model.
SOURCE_PATTERNS = ("*.json", "*.jsonl", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja")

# Headroom on the result's estimate: layers mlx-vlm leaves unquantized (norms, biases,
# small matrices), the tokenizer and the index.
_RESULT_MARGIN = 1.05

_NAMED = re.compile(r"Qwen3\.(\d)-(\d+(?:\.\d+)?B(?:-A\d+B)?)", re.IGNORECASE)

Phase = Callable[[str], None]


# -- what SOURCE is -------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """What to convert: a repo of the hub, or a local Hugging Face folder."""

    kind: str  # "hub" | "local"
    ref: str  # the repo id, or the folder's absolute path
    family: Optional[str]
    variant: Optional[str]

    @property
    def label(self) -> str:
        return self.ref


def _variant_named(text: str) -> Optional[str]:
    try:
        return catalog.get_variant(text).name
    except KeyError:
        return None


def _named_in(text: str) -> Tuple[Optional[str], Optional[str]]:
    """(family, variant) from a name such as `Qwen/Qwen3.6-27B` or a cache path holding one."""
    match = _NAMED.search(text)
    if match is None:
        return None, None
    family = f"3.{match.group(1)}"
    return (family if family in FAMILIES else None), _variant_named(match.group(2))


def _variant_from_config(folder: Path) -> Optional[str]:
    """The catalog variant whose layer count and width match a local checkpoint's config."""
    config = model_inspect.read_config(folder) or {}
    nested = config.get("text_config")
    text: Dict[str, Any] = nested if isinstance(nested, dict) else config
    layers, hidden = text.get("num_hidden_layers"), text.get("hidden_size")
    matches = [v.name for v in catalog.VARIANTS if v.layers == layers and v.hidden_size == hidden]
    return matches[0] if len(matches) == 1 else None


def official_repo(variant: str, family: str) -> str:
    """`Qwen/Qwen3.5-<variant>`: the BF16 weights Qwen publishes."""
    return f"Qwen/Qwen{family}-{variant}"


def parse_source(source: str, family: Optional[str] = None) -> Source:
    """A local folder if one exists by that name, else a repo id (ORG/NAME), else a VARIANT."""
    if family is not None and family not in FAMILIES:
        raise UsageError(f"--family {family}: not a known family", f"use one of {', '.join(FAMILIES)}")
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{source}: a file; SOURCE is a Hugging Face model folder, a repo id or a VARIANT")
        folder = path.resolve()
        named_family, named_variant = _named_in(str(folder))
        return Source("local", str(folder), family or named_family, named_variant or _variant_from_config(folder))
    if source.count("/") == 1 and all(source.split("/")):
        named_family, named_variant = _named_in(source)
        return Source("hub", source, family or named_family or DEFAULT_FAMILY, named_variant)
    variant = _variant_named(source)
    if variant is None:
        raise UsageError(
            f"{source}: neither a local folder, a repo id (ORG/NAME), nor a Qwen 3.5 size",
            f"sizes: {' '.join(catalog.variant_names())}",
        )
    family = family or DEFAULT_FAMILY
    offered = FAMILIES[family]
    if offered is not None and variant not in offered:
        raise UsageError(
            f"Qwen{family} has no {variant}: its sizes are {', '.join(offered)}",
            f"use --family {DEFAULT_FAMILY} for {variant}",
        )
    return Source("hub", official_repo(variant, family), family, variant)


def default_output(source: Source, quant: Quant) -> Path:
    """`<qwenocr cache>/models/Qwen3.5-27B-mxfp4` (or the source's own name plus the quant)."""
    if source.family and source.variant:
        name = f"Qwen{source.family}-{source.variant}"
    elif source.kind == "hub":
        name = source.ref.split("/")[1]
    else:
        name = Path(source.ref).name
    return registry.models_dir() / f"{name}-{quant.name}"


# -- disk ---------------------------------------------------------------------------


def estimate_result_bytes(counts: model_inspect.WeightCounts, quant: Quant, other_files: int = 0) -> int:
    """The converted model's size: the language model at `quant`, the vision tower in BF16,
    and the tokenizer and config files (`other_files` bytes in the source; mlx-vlm
    rewrites the tokenizer indented, about twice the size)."""
    language = counts.other_params * quant.bits_per_weight / 8
    vision = counts.vision_params * 2
    return int((language + vision) * _RESULT_MARGIN) + 2 * other_files


@dataclass(frozen=True)
class DiskNeed:
    what: str  # "the download", "the result"
    path: Path  # where it is written (need not exist yet)
    size: int


def _existing(path: Path) -> Path:
    """`path`, or the nearest of its parents that exists (where disk_usage can look)."""
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_disk(
    needs: Sequence[DiskNeed],
    *,
    disk_usage: Callable[[Path], Any] = shutil.disk_usage,
    device_of: Callable[[Path], int] = lambda p: os.stat(p).st_dev,
) -> None:
    """Refuse (OutputError) when a filesystem lacks the room for what is written to it."""
    by_device: Dict[int, List[DiskNeed]] = {}
    places: Dict[int, Path] = {}
    for need in needs:
        if need.size <= 0:
            continue
        where = _existing(need.path)
        device = device_of(where)
        by_device.setdefault(device, []).append(need)
        places.setdefault(device, where)
    for device, group in by_device.items():
        total = sum(n.size for n in group)
        free = int(disk_usage(places[device]).free)
        if total > free:
            parts = " + ".join(f"{human_size(n.size)} for {n.what}" for n in group)
            raise OutputError(
                f"not enough disk space: the conversion needs {human_size(total)} ({parts}) on"
                f" {places[device]}, which has {human_size(free)} free",
                "free space, or write the result elsewhere with -o DIR (HF_HUB_CACHE moves the download)",
            )


# -- the converter ------------------------------------------------------------------


def _mlx_vlm_convert() -> Callable[..., Any]:
    """mlx-vlm's `convert`, or EngineMissingError with the install command."""
    import platform
    import sys

    from qwenocr.fit.doctor import install_command

    device = "metal" if sys.platform == "darwin" and platform.machine() == "arm64" else "cpu"
    try:
        import mlx.core  # noqa: F401
        from mlx_vlm.convert import convert as mlx_convert
    except ImportError:
        raise EngineMissingError(
            "`models convert` needs mlx-vlm (and mlx), which is not installed",
            f"install it with: {install_command('mlx', device)}",
        ) from None
    if "q_mode" not in pyinspect.signature(mlx_convert).parameters:
        raise EngineMissingError(
            "the installed mlx-vlm is too old to make MXFP4 (its convert has no q_mode)",
            "upgrade it with: pip install -U mlx-vlm",
        )
    return mlx_convert


class _PhaseStream(io.TextIOBase):
    """Stands in for stdout while mlx-vlm converts: its `[INFO] …` lines become phases
    on stderr (the whole line with --verbose), and nothing reaches stdout."""

    _PHASES = (("[INFO] Loading", "loading the weights"), ("[INFO] Quantizing", "quantizing and writing"))

    def __init__(self, phase: Phase, echo: Optional[Callable[[str], None]]) -> None:
        self._phase, self._echo, self._pending = phase, echo, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            for prefix, phase in self._PHASES:
                if line.startswith(prefix):
                    self._phase(phase)
            if self._echo is not None and line.strip():
                self._echo(line)
        return len(text)


def verify_result(folder: Path, quant: Quant) -> None:
    """Refuse a conversion that is not what was asked: Qwen 3.5-family, vision kept, `quant`."""
    found = model_inspect.inspect_folder(folder)
    problems = []
    if not found.config_found:
        problems.append("no readable config.json")
    elif found.qwen35 is not True:
        problems.append(f"model_type {found.model_type!r}")
    if found.vision is not True:
        problems.append("no vision_tower.* weights")
    if (found.quantization, found.group_size, found.bits) != (quant.mode, quant.group_size, quant.bits):
        problems.append(f"quantization {found.quantization} group {found.group_size} bits {found.bits}")
    if problems:
        raise BackendError(
            f"mlx-vlm's conversion is not a {quant.name} vision model: {'; '.join(problems)}",
            "report it, with `qwenocr models convert … --verbose` output and the mlx-vlm version",
        )


def _converter_error(error: BaseException, label: str) -> Exception:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return OutputError(
            f"the disk filled up while converting {label}", "free space, or choose another -o DIR, and run it again"
        )
    if isinstance(error, MemoryError):
        return InsufficientMemoryError(
            f"not enough memory to convert {label}", "close other programs, or convert on a machine with more memory"
        )
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return BackendError(
        f"mlx-vlm could not convert {label}: {reason}", "--debug shows the traceback; check the source's files"
    )


@contextlib.contextmanager
def _temporary_sibling(output: Path) -> Iterator[Path]:
    """A fresh hidden folder beside `output`, removed on the way out unless it was renamed."""
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{output.name}.converting-", dir=output.parent))
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def convert_folder(
    folder: Path,
    output: Path,
    quant: Quant,
    label: str,
    *,
    phase: Phase,
    echo: Optional[Callable[[str], None]] = None,
    converter: Optional[Callable[..., Any]] = None,
) -> None:
    """Convert the local checkpoint `folder` into `output`, all at once or not at all."""
    mlx_convert = converter or _mlx_vlm_convert()
    with _temporary_sibling(output) as temporary:
        target = temporary / "model"  # mlx-vlm creates the folder it writes
        phase("converting")
        try:
            with contextlib.redirect_stdout(_PhaseStream(phase, echo)):
                mlx_convert(
                    str(folder),
                    mlx_path=str(target),
                    quantize=True,
                    q_bits=quant.bits,
                    q_group_size=quant.group_size,
                    q_mode=quant.mode,
                    trust_remote_code=False,  # never run code shipped with a model
                )
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except Exception as error:
            raise _converter_error(error, label) from error
        phase("checking the result")
        verify_result(target, quant)
        try:
            os.rename(target, output)
        except OSError as error:
            if output.exists():
                raise OutputError(f"{output} appeared while converting", "remove it or choose another -o DIR") from None
            raise OutputError(f"can't move the result into {output}: {error.strerror}") from None


# -- the whole command ----------------------------------------------------------------


@dataclass(frozen=True)
class ConvertResult:
    path: Path
    source: Source
    already: bool  # the output was there already, complete
    result_bytes: int


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _other_files_bytes(folder: Path) -> int:
    """Bytes of a checkpoint's files other than the weights (tokenizer, configs)."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.suffix != ".safetensors")


def _hub_counts(repo: str, revision: str, sizes: Mapping[str, Optional[int]], source: Source):
    """Parameter counts of a repo's weights from their headers on the hub, else from file sizes (BF16)."""
    from huggingface_hub import HfApi

    try:
        metadata = HfApi().get_safetensors_metadata(repo, revision=revision)
        pairs = [
            (name, {"dtype": info.dtype, "shape": info.shape})
            for file in metadata.files_metadata.values()
            for name, info in file.tensors.items()
        ]
        return model_inspect.split_counts(pairs), [name for name, _ in pairs]
    except Exception:  # noqa: BLE001 - any failure here only makes the estimate coarser
        total = sum(size or 0 for name, size in sizes.items() if name.endswith(".safetensors"))
        variant = catalog.get_variant(source.variant) if source.variant else None
        vision = variant.vision_params if variant is not None else 0
        return model_inspect.WeightCounts(vision, max(total // 2 - vision, 0), vision * 2, 0), None


def _not_cached(repo: str, revision: str, names: Sequence[str]) -> List[str]:
    from huggingface_hub import try_to_load_from_cache

    return [n for n in names if not isinstance(try_to_load_from_cache(repo, n, revision=revision), str)]


def _hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def convert(
    source_text: str,
    quant_name: str = "mxfp4",
    output: Optional[Path] = None,
    *,
    family: Optional[str] = None,
    offline: bool = False,
    phase: Phase = lambda text: None,
    echo: Optional[Callable[[str], None]] = None,
    converter: Optional[Callable[..., Any]] = None,
) -> ConvertResult:
    """`qwenocr models convert SOURCE --quant QUANT [-o DIR]`, from SOURCE to a registered MLX folder."""
    quant = QUANTS.get(quant_name.strip().lower())
    if quant is None:
        raise UsageError(f"--quant {quant_name}: `models convert` makes {', '.join(QUANTS)}")
    source = parse_source(source_text, family)
    if source.kind == "local":  # cheap, and the first thing to fix if it is wrong
        model_inspect.check_source_checkpoint(Path(source.ref), source.label)
    mlx_convert = converter or _mlx_vlm_convert()  # before any download: nothing to convert with
    out = (output.expanduser() if output is not None else default_output(source, quant)).absolute()
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # an empty folder made by hand for -o: take its place
        else:
            try:
                verify_result(out, quant)
            except BackendError:
                raise OutputError(
                    f"{out} exists and is not a {quant.name} conversion", "remove it or choose another -o DIR"
                ) from None
            registry.register(out, family=source.family, variant=source.variant, quant=quant.name, source=source.ref)
            return ConvertResult(out, source, True, _folder_bytes(out))

    if source.kind == "local":
        folder = Path(source.ref)
        counts = model_inspect.weight_counts(folder)
        if counts is None:
            raise ModelUnavailableError(f"{source.label}: its safetensors headers can't be read (damaged files?)")
        result_bytes = estimate_result_bytes(counts, quant, _other_files_bytes(folder))
        check_disk([DiskNeed("the result", out.parent, result_bytes)])
    else:
        folder, result_bytes = _fetch_source(source, quant, out, offline=offline, phase=phase)

    convert_folder(folder, out, quant, source.label, phase=phase, echo=echo, converter=mlx_convert)
    registry.register(out, family=source.family, variant=source.variant, quant=quant.name, source=source.ref)
    return ConvertResult(out, source, False, _folder_bytes(out))


def _fetch_source(source: Source, quant: Quant, out: Path, *, offline: bool, phase: Phase) -> Tuple[Path, int]:
    """A hub source into the Hugging Face cache, after checking it and the disk; (folder, result estimate)."""
    repo = source.ref
    if offline:
        phase(f"looking for {repo} in the Hugging Face cache (offline)")
        try:
            folder = hub.download(repo, SOURCE_PATTERNS, offline=True)
        except ModelUnavailableError:
            raise ModelUnavailableError(
                f"{repo} is not in the Hugging Face cache, and offline mode forbids downloading it",
                f"run `qwenocr models convert {repo}` once while online",
            ) from None
        _check_downloaded(folder, repo)
        counts = model_inspect.weight_counts(folder)
        result_bytes = estimate_result_bytes(counts, quant, _other_files_bytes(folder)) if counts is not None else 0
        check_disk([DiskNeed("the result", out.parent, result_bytes)])
        return folder, result_bytes

    phase(f"checking {repo} on the hub")
    revision, sizes = hub.remote_files(repo)
    wanted = {name: size for name, size in sizes.items() if any(_glob(name, p) for p in SOURCE_PATTERNS)}
    if "config.json" not in wanted or not any(name.endswith(".safetensors") for name in wanted):
        raise ModelUnavailableError(
            f"{repo} is not a Hugging Face checkpoint (it needs config.json and *.safetensors weights)",
            "convert a repo with the original weights, e.g. Qwen/Qwen3.5-27B",
        )
    counts, names = _hub_counts(repo, revision, sizes, source)
    if names is not None and not model_files.has_vision_weights(names):
        raise ModelUnavailableError(
            f"{repo}: its weights have no vision tower (model.visual.*); a conversion of it could not see",
            "convert the official Qwen/Qwen3.5-<size> weights, which include it",
        )
    missing = _not_cached(repo, revision, list(wanted))
    download = sum(wanted[name] or 0 for name in missing)
    others = sum(size or 0 for name, size in wanted.items() if not name.endswith(".safetensors"))
    result_bytes = estimate_result_bytes(counts, quant, others)
    check_disk([DiskNeed("the download", _hf_cache_dir(), download), DiskNeed("the result", out.parent, result_bytes)])
    # config.json first (a few kB): a foreign or quantized checkpoint is refused before
    # the weights are fetched.
    config_folder = hub.download(repo, ["config.json"])
    model_inspect.check_source_config(config_folder, repo)
    phase(f"downloading {repo} ({human_size(download)} not yet in the Hugging Face cache)")
    folder = hub.download(repo, SOURCE_PATTERNS)
    _check_downloaded(folder, repo)
    return folder, result_bytes


def _glob(name: str, pattern: str) -> bool:
    import fnmatch

    return "/" not in name and fnmatch.fnmatch(name, pattern)


def _check_downloaded(folder: Path, repo: str) -> None:
    model_inspect.check_source_checkpoint(folder, repo)
