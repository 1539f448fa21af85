"""Where each model comes from: candidate sources as data, and how hub facts judge them.

For each family ("3.5", and "3.6" for its 27B and 35B-A3B) × variant × backend ("mlx",
"llama.cpp") × precision (4, 8, 16 bits) there is an ordered list of candidate repos
(`candidates`), each with the exact files to fetch, the quantization an MLX repo must
declare, its publisher, and where the fact came from (`../shared/FACTS.md` §3/§9 as of
November 2026). Only repos a public listing showed are here: where none was found the
list is empty, never filled from a name pattern, and an MLX 4-bit pick then becomes a
*convert* plan (`qwenocr models convert`, which keeps the vision tower).

Nothing here touches the network or the disk. What the hub says about a repo (does it
exist, its files and sizes, does it hold the vision tower, its quantization) arrives as
`RepoFacts`, gathered by qwenocr/store/verify.py (fit may not import store), and
`resolve_source` turns candidates + facts into the `ModelSource` a plan uses: the first
candidate that passes, the reasons the others were rejected, and the real sizes where
known. docs/model-sources.md describes all of this for users.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from qwenocr.fit import catalog
from qwenocr.fit.catalog import GB, MLX_FILES, Variant

__all__ = [
    "DEFAULT_FAMILY",
    "FAMILIES",
    "FAMILY_VARIANTS",
    "ModelSource",
    "Rejection",
    "RepoFacts",
    "SourceCandidate",
    "SourceFacts",
    "candidates",
    "convert_command",
    "convert_source",
    "family_variants",
    "judge",
    "model_source",
    "official_repo",
    "resolve_source",
]

FAMILIES = ("3.5", "3.6")
DEFAULT_FAMILY = "3.5"
# Qwen3.6 shares the 3.5 architecture classes (`qwen3_5`, `qwen3_5_moe`; FACTS §9) and
# sizes, so its memory figures are the 3.5 rows of the same name.
FAMILY_VARIANTS: Dict[str, Tuple[str, ...]] = {
    "3.5": tuple(v.name for v in catalog.VARIANTS),
    "3.6": ("27B", "35B-A3B"),
}

# The quantization an MLX repo's config.json must declare (store/files.quantization_mode):
# MLX's 4-bit is MXFP4 (FACTS §5); mlx-community's -8bit repos are plain ("affine")
# 8-bit; -bf16 repos are not quantized (None).
MLX_QUANT_MODE: Dict[int, Optional[str]] = {4: "mxfp4", 8: "affine", 16: None}

_GGUF_TAG = {4: "UD-Q4_K_XL", 8: "Q8_0", 16: "BF16"}
GGUF_MMPROJ = "mmproj-F16.gguf"

# Unsloth's split GGUFs (FACTS §9): shards per (variant, bits); every other file is single.
_UNSLOTH_SHARDS: Dict[Tuple[str, int], int] = {
    ("122B-A10B", 4): 3,
    ("397B-A17B", 4): 6,
    ("122B-A10B", 8): 4,
    ("397B-A17B", 8): 10,
    ("27B", 16): 2,
    ("35B-A3B", 16): 2,
    ("122B-A10B", 16): 5,
    ("397B-A17B", 16): 17,
}

_F9_UNSLOTH = "FACTS §9: unsloth/Qwen3.5-<size>-GGUF found for all eight sizes with mmproj-F16.gguf"
_F9_UNSLOTH_SPLIT = "FACTS §9: unsloth split quants and their shard counts"
_F3_BARTOWSKI = "FACTS §3: bartowski/Qwen_Qwen3.5-<size>-GGUF, file naming given for 9B Q4_K_M"
_F9_MXFP4 = "FACTS §9: mlx-community Qwen3.5-{0.8B,2B,4B,9B}-mxfp4 listed"
_F9_8BIT = "FACTS §9: mlx-community -8bit listed for all sizes (vision not verified)"
_F9_BF16 = "FACTS §9: mlx-community -bf16 listed up to 122B (vision not verified)"
_F9_OSAURUS = "FACTS §9: OsaurusAI/Qwen3.6-27B-MXFP4 (MXFP4, 14 GB, 27-layer vision tower kept)"
_F9_OFFICIAL = "FACTS §1: the official Qwen/Qwen3.5-<size> weights (BF16)"
_F9_OFFICIAL_36 = "FACTS §9 lists Qwen3.6-27B and Qwen3.6-35B-A3B; the official repo id follows Qwen's naming"


@dataclass(frozen=True)
class SourceCandidate:
    """One repo that may hold a variant at one precision for one backend.

    `files`: GGUF: every file by its exact name (each shard of a split model, then the
    projector); MLX: the download patterns (the repo is the model). `quant_mode` is the
    mode an MLX config.json must declare (None: unquantized; GGUF: not checked).
    `listed_gb`: a total size a public listing showed (FACTS §9), used until the hub
    gives the real one.
    """

    family: str
    variant: str
    backend: str
    bits: int
    repo: str
    files: Tuple[str, ...]
    mmproj: Optional[str]
    quant_mode: Optional[str]
    publisher: str
    note: str
    listed_gb: Optional[float] = None

    @property
    def model_files(self) -> Tuple[str, ...]:
        """The weights (GGUF: every shard; MLX: the patterns), without the projector."""
        return tuple(f for f in self.files if f != self.mmproj)

    @property
    def download_patterns(self) -> List[str]:
        """What to download, shards folded into one glob (llama.cpp loads the first)."""
        if self.backend != "llama.cpp" or len(self.model_files) == 1:
            return list(self.files)
        glob = re.sub(r"-\d{5}-of-\d{5}\.gguf$", "-*.gguf", self.model_files[0])
        return [glob] + ([self.mmproj] if self.mmproj else [])


def _unsloth(variant: str, bits: int) -> SourceCandidate:
    tag = _GGUF_TAG[bits]
    stem = f"Qwen3.5-{variant}-{tag}"
    shards = _UNSLOTH_SHARDS.get((variant, bits))
    if shards:
        model: Tuple[str, ...] = tuple(f"{tag}/{stem}-{i:05d}-of-{shards:05d}.gguf" for i in range(1, shards + 1))
        note = f"{_F9_UNSLOTH}; {_F9_UNSLOTH_SPLIT} ({shards})"
    else:
        model, note = (f"{stem}.gguf",), _F9_UNSLOTH
    listed = None
    if (variant, bits) == ("397B-A17B", 8):
        listed, note = 421.5, note + "; FACTS §9: 421.5 GB seen"
    if (variant, bits) in (("122B-A10B", 4), ("397B-A17B", 4)):
        note += "; unverified listing: about 77 GB (122B) / 245 GB (397B) after the March 2026 re-quantization"
    return SourceCandidate(
        "3.5", variant, "llama.cpp", bits, f"unsloth/Qwen3.5-{variant}-GGUF", model + (GGUF_MMPROJ,), GGUF_MMPROJ,
        None, "unsloth", note, listed,
    )  # fmt: skip


def _mlx(family: str, variant: str, bits: int, repo: str, publisher: str, note: str, listed=None) -> SourceCandidate:
    return SourceCandidate(
        family, variant, "mlx", bits, repo, tuple(MLX_FILES), None, MLX_QUANT_MODE[bits], publisher, note, listed
    )


def _build() -> Dict[Tuple[str, str, str, int], Tuple[SourceCandidate, ...]]:
    table: Dict[Tuple[str, str, str, int], List[SourceCandidate]] = {}

    def add(c: SourceCandidate) -> None:
        table.setdefault((c.family, c.variant, c.backend, c.bits), []).append(c)

    for v in catalog.VARIANTS:
        for bits in catalog.BITS:
            add(_unsloth(v.name, bits))
    bartowski_9b = SourceCandidate(
        "3.5", "9B", "llama.cpp", 4, "bartowski/Qwen_Qwen3.5-9B-GGUF",
        ("Qwen_Qwen3.5-9B-Q4_K_M.gguf", "mmproj-Qwen_Qwen3.5-9B-f16.gguf"), "mmproj-Qwen_Qwen3.5-9B-f16.gguf",
        None, "bartowski", _F3_BARTOWSKI + " (Q4_K_M, not Unsloth's dynamic Q4_K_XL)",
    )  # fmt: skip
    add(bartowski_9b)
    for name in ("0.8B", "2B", "4B", "9B"):
        add(_mlx("3.5", name, 4, f"mlx-community/Qwen3.5-{name}-mxfp4", "mlx-community", _F9_MXFP4))
    for v in catalog.VARIANTS:
        listed = 422.0 if v.name == "397B-A17B" else None
        note = _F9_8BIT + ("; FACTS §9: 422 GB seen" if listed else "")
        add(_mlx("3.5", v.name, 8, f"mlx-community/Qwen3.5-{v.name}-8bit", "mlx-community", note, listed))
        if v.name != "397B-A17B":
            add(_mlx("3.5", v.name, 16, f"mlx-community/Qwen3.5-{v.name}-bf16", "mlx-community", _F9_BF16))
    add(_mlx("3.6", "27B", 4, "OsaurusAI/Qwen3.6-27B-MXFP4", "OsaurusAI", _F9_OSAURUS, 14.0))
    return {key: tuple(value) for key, value in table.items()}


_CANDIDATES = _build()


def family_variants(family: str) -> Tuple[str, ...]:
    if family not in FAMILY_VARIANTS:
        raise KeyError(family)
    return FAMILY_VARIANTS[family]


def candidates(family: str, variant: str, backend: str, bits: int) -> Tuple[SourceCandidate, ...]:
    """The known repos for one model, in the order they are tried (empty: none known)."""
    if backend not in catalog.BACKENDS:
        raise ValueError(f"backend must be one of {catalog.BACKENDS}, not {backend!r}")
    if bits not in catalog.BITS:
        raise ValueError(f"bits must be one of {catalog.BITS}, not {bits}")
    return _CANDIDATES.get((family, variant, backend, bits), ())


def all_candidates() -> List[SourceCandidate]:
    return [c for group in _CANDIDATES.values() for c in group]


def official_repo(family: str, variant: str) -> str:
    """The official BF16 weights, the source of a local conversion."""
    return f"Qwen/Qwen{family}-{variant}"


def convert_command(family: str, variant: str) -> str:
    return f"qwenocr models convert {official_repo(family, variant)} --quant mxfp4"


# --- facts from the hub (gathered by store/verify.py) -------------------------------------


@dataclass(frozen=True)
class RepoFacts:
    """What the hub (or the cache of what it said) knows of one repo at one commit.

    `error` set: the hub could not be asked (the repo is "not verified"). `vision` and
    `quant_mode` are MLX facts: None where not checked; `quant_mode` "none" is an
    unquantized model (config.json without a quantization block).
    """

    repo: str
    exists: bool = True
    revision: Optional[str] = None
    files: Mapping[str, Optional[int]] = field(default_factory=dict)
    vision: Optional[bool] = None
    quant_mode: Optional[str] = None
    quant_bits: Optional[int] = None
    error: Optional[str] = None
    from_cache: bool = False

    def to_json(self) -> dict:
        return {
            "repo": self.repo,
            "exists": self.exists,
            "revision": self.revision,
            "files": dict(self.files),
            "vision": self.vision,
            "quant_mode": self.quant_mode,
            "quant_bits": self.quant_bits,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> "RepoFacts":
        return cls(
            repo=str(data["repo"]),
            exists=bool(data.get("exists", True)),
            revision=data.get("revision"),
            files={str(k): (int(v) if v is not None else None) for k, v in (data.get("files") or {}).items()},
            vision=data.get("vision"),
            quant_mode=data.get("quant_mode"),
            quant_bits=data.get("quant_bits"),
            from_cache=True,
        )


@dataclass(frozen=True)
class LocalModel:
    """A model converted here and registered (store/registry.py): no download needed."""

    path: str
    size_bytes: Optional[int] = None


@dataclass(frozen=True)
class SourceFacts:
    """Everything known about the sources when a plan is made: repo facts by repo id,
    models converted locally by (family, variant, bits), and whether the hub was asked."""

    repos: Mapping[str, RepoFacts] = field(default_factory=dict)
    local: Mapping[Tuple[str, str, int], LocalModel] = field(default_factory=dict)
    offline: bool = True


NO_FACTS = SourceFacts()


@dataclass(frozen=True)
class Rejection:
    repo: str
    reason: str

    def to_dict(self) -> dict:
        return {"repo": self.repo, "reason": self.reason}


def _matches(pattern: str, names: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(n, pattern) for n in names)


def judge(c: SourceCandidate, facts: Optional[RepoFacts]) -> Tuple[Optional[bool], str]:
    """(True: passes / False: rejected / None: not verified, the reason)."""
    if facts is None:
        return None, "not verified"
    if facts.error:
        return None, f"not verified ({facts.error})"
    if not facts.exists:
        return False, "repo not found"
    names = list(facts.files)
    required = ("config.json", "*.safetensors") if c.backend == "mlx" else c.files
    for pattern in required:
        if not _matches(pattern, names):
            return False, f"no file matching {pattern}"
    if c.backend == "mlx":
        if facts.vision is False:
            return False, "no vision tower"
        if facts.quant_mode is not None:
            expected = c.quant_mode or "none"
            if facts.quant_mode != expected:
                return False, f"quantization is {facts.quant_mode}, not {expected}"
            if c.quant_mode == "affine" and facts.quant_bits not in (None, c.bits):
                return False, f"quantization is {facts.quant_bits}-bit, not {c.bits}-bit"
        if facts.vision is None or facts.quant_mode is None:
            return None, "not verified (vision tower or quantization unknown)"
    return True, "verified"


# --- the source a plan uses ----------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """Where the planned model comes from, and what is known of its size.

    `kind`: "hub" (a repo to download), "convert" (no hub repo passed: make it locally
    with `command`), "local" (converted here before: `path`), "none" (nothing known).
    `files` are what to download: for llama.cpp, `files[0]` is the model (one `.gguf`,
    or a glob of the shards of a split one, which llama.cpp loads from the first) and
    `mmproj` the projector; for MLX the repo is the model and `files` are patterns.
    `weights_bytes` / `mmproj_bytes` are the real sizes (hub, cache or a listing) or
    None (the planner then uses the table). `verified`: True checked on the hub (or in
    its cached facts), False rejected, None not checked.
    """

    backend: str
    repo: str
    files: List[str]
    mmproj: Optional[str]
    download_gb: float
    kind: str = "hub"
    verified: Optional[bool] = None
    status: str = "not verified"
    weights_bytes: Optional[int] = None
    mmproj_bytes: Optional[int] = None
    size_from: str = "table"  # "hub" | "cache" | "listing" | "table"
    revision: Optional[str] = None
    publisher: Optional[str] = None
    note: Optional[str] = None
    path: Optional[str] = None
    command: Optional[str] = None
    disk_gb: Optional[float] = None
    rejected: Tuple[Rejection, ...] = ()

    @property
    def model(self) -> str:
        return self.files[0]

    @property
    def split(self) -> bool:
        return "*" in self.files[0] and self.backend == "llama.cpp"

    @property
    def size_bytes(self) -> Optional[int]:
        if self.weights_bytes is None:
            return None
        return self.weights_bytes + (self.mmproj_bytes or 0)

    @property
    def available(self) -> bool:
        return self.kind in ("hub", "convert", "local")

    def to_dict(self) -> dict:
        """The `source` object of `doctor --json` (docs/model-sources.md)."""
        data: dict = {
            "repo": self.repo if self.kind != "local" else None,
            "files": list(self.files),
            "size_bytes": self.size_bytes,
            "verified": self.verified,
            "kind": self.kind,
            "status": self.status,
            "size_from": self.size_from,
            "revision": self.revision,
            "publisher": self.publisher,
            "note": self.note,
        }
        if self.kind == "local":
            data["path"] = self.path
        if self.kind == "convert":
            data.update(
                command=self.command,
                source_repo=self.repo,
                download_bytes=int(self.download_gb * GB),
                disk_bytes=int((self.disk_gb or 0) * GB),
            )
        return data


def _table_download_gb(v: Variant, bits: int, backend: str) -> float:
    return round(v.weights_gb(bits) + (v.vision_gb if backend == "llama.cpp" or bits != 4 else 0.0), 1)


def convert_source(family: str, v: Variant, rejected: Sequence[Rejection] = ()) -> ModelSource:
    """No hub repo passed for MLX MXFP4: download the official BF16 weights and convert."""
    download = v.weights_gb(16) + v.vision_gb
    result = v.weights_gb(4)
    return ModelSource(
        backend="mlx",
        repo=official_repo(family, v.name),
        files=["*.safetensors", "*.json", "*.jinja", "*.txt"],
        mmproj=None,
        download_gb=round(download, 1),
        kind="convert",
        verified=None,
        status="no hub repo with MXFP4 and the vision tower: convert locally",
        weights_bytes=int(result * GB),
        size_from="table",
        publisher="Qwen",
        note=_F9_OFFICIAL if family == "3.5" else _F9_OFFICIAL_36,
        command=convert_command(family, v.name),
        disk_gb=round(download + result, 1),
        rejected=tuple(rejected),
    )


def _sizes(c: SourceCandidate, facts: RepoFacts) -> Tuple[Optional[int], Optional[int]]:
    """(weights, projector) bytes from the hub's file listing."""
    files = facts.files
    if c.backend == "mlx":
        sizes = [s for n, s in files.items() if any(fnmatch.fnmatch(n, p) for p in c.files)]
        return (sum(s for s in sizes if s) if sizes and all(s is not None for s in sizes) else None), None
    model = [files.get(n) for n in c.model_files]
    weights = sum(s for s in model if s) if all(s is not None for s in model) else None
    projector = files.get(c.mmproj) if c.mmproj else None
    return weights, projector


def _from_candidate(c: SourceCandidate, v: Variant, verified: Optional[bool], status: str, facts, rejected):
    weights_b: Optional[int] = None
    mmproj_b: Optional[int] = None
    size_from = "table"
    if facts is not None and verified is not False and facts.exists and not facts.error:
        weights_b, mmproj_b = _sizes(c, facts)
        if weights_b is not None:
            size_from = "cache" if facts.from_cache else "hub"
    if weights_b is None and c.listed_gb is not None:
        weights_b, size_from = int(c.listed_gb * GB), "listing"
    if weights_b is not None:
        projector = mmproj_b if mmproj_b is not None else (v.vision_gb * GB if c.backend == "llama.cpp" else 0)
        download = (weights_b + projector) / GB
    else:
        download = _table_download_gb(v, c.bits, c.backend)
    return ModelSource(
        backend=c.backend,
        repo=c.repo,
        files=c.download_patterns,
        mmproj=c.mmproj,
        download_gb=round(download, 1),
        kind="hub",
        verified=verified,
        status=status,
        weights_bytes=weights_b,
        mmproj_bytes=mmproj_b,
        size_from=size_from,
        revision=facts.revision if facts is not None else None,
        publisher=c.publisher,
        note=c.note,
        rejected=tuple(rejected),
    )


def resolve_source(family: str, v: Variant, bits: int, backend: str, facts: SourceFacts = NO_FACTS) -> ModelSource:
    """The source a plan uses for one model: a locally converted one, else the first
    candidate that is not rejected (verified or not), else a conversion (MLX MXFP4), else
    none. Rejected candidates keep their reason."""
    if v.name not in family_variants(family):
        raise ValueError(f"Qwen{family} has no {v.name}: only {', '.join(family_variants(family))}")
    local = facts.local.get((family, v.name, bits)) if backend == "mlx" else None
    if local is not None:
        return ModelSource(
            backend="mlx",
            repo=official_repo(family, v.name),
            files=[],
            mmproj=None,
            download_gb=0.0,
            kind="local",
            verified=True,
            status="converted locally",
            weights_bytes=local.size_bytes,
            size_from="local" if local.size_bytes else "table",
            path=local.path,
        )
    rejected: List[Rejection] = []
    for c in candidates(family, v.name, backend, bits):
        repo_facts = facts.repos.get(c.repo)
        verdict, reason = judge(c, repo_facts)
        if verdict is False:
            rejected.append(Rejection(c.repo, reason))
            continue
        if verdict is None and reason == "not verified" and facts.offline:
            reason = "not verified (offline)"
        if verdict and repo_facts is not None and repo_facts.from_cache:
            reason = "verified (cached hub facts)"
        return _from_candidate(c, v, verdict, reason, repo_facts, rejected)
    if backend == "mlx" and bits == 4:
        return convert_source(family, v, rejected)
    what = "every known repo was rejected" if rejected else "no repo is known"
    return ModelSource(
        backend=backend,
        repo="",
        files=[],
        mmproj=None,
        download_gb=_table_download_gb(v, bits, backend),
        kind="none",
        verified=False if rejected else None,
        status=f"no source: {what} for Qwen{family}-{v.name} {catalog.quant_name(backend, bits)} ({backend})",
        rejected=tuple(rejected),
    )


def model_source(variant: "Variant | str", bits: int, backend: str, family: str = DEFAULT_FAMILY) -> ModelSource:
    """The planned source for `variant` at `bits` on `backend`, from the data alone."""
    v = catalog.get_variant(variant) if isinstance(variant, str) else variant
    return resolve_source(family, v, bits, backend)
