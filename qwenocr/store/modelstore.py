"""`qwenocr models`: the catalog's models against the Hugging Face cache.

Everything goes through the standard Hugging Face cache (`HF_HUB_CACHE`, by default
`~/.cache/huggingface/hub`): it is read with `huggingface_hub.scan_cache_dir()`, written
with `snapshot_download` and pruned with `delete_revisions` / `delete_files`, so files
that mlx-vlm or anything else built on `huggingface_hub` already fetched are reused, and
they reuse ours.

- `list`: every variant × precision of the catalog with what the cache holds of it.
- `pull`: download one model (or any repo's files) with huggingface_hub's progress bars
  on stderr, then check every file's size against the hub's metadata. Interrupted
  downloads resume: huggingface_hub keeps the partial file (`blobs/*.incomplete`) and
  continues it on the next run.
- `rm`: remove a model's cached files, keeping files another cached model still uses.
- `path`: where a model's files are, for scripts.

Nothing here prints: the CLI renders what these functions return, and errors a user can
cause are `QwenOCRError`s. huggingface_hub is imported inside the functions, so that
`qwenocr --help` stays fast.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from qwenocr.errors import ModelUnavailableError, OutputError, QwenOCRError, UsageError
from qwenocr.fit import catalog

_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")

# MLX repos come with tokenizer files whose names vary: only the config and the weights
# are required for a repo to count as complete when no hub listing is cached.
_OPTIONAL_MLX_PATTERNS = frozenset({"*.jinja", "*.txt"})


# --- what a command names ------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A model a `models` command names: a catalog entry, or files of any repo.

    `patterns` are globs relative to the repo (empty: every file of the repo).
    """

    repo: str
    patterns: Tuple[str, ...]
    backend: Optional[str]  # "mlx" | "llama.cpp", None for a --repo
    variant: Optional[str] = None
    quant: Optional[str] = None
    bits: Optional[int] = None
    mmproj: Optional[str] = None
    download_gb: Optional[float] = None

    @property
    def label(self) -> str:
        if self.variant is not None:
            return f"{self.variant} {self.quant} ({self.backend})"
        return self.repo + (f" [{' '.join(self.patterns)}]" if self.patterns else "")

    @property
    def required_patterns(self) -> Tuple[str, ...]:
        if self.backend == "mlx":
            return tuple(p for p in self.patterns if p not in _OPTIONAL_MLX_PATTERNS)
        return self.patterns

    def matches(self, path: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatch(path, pattern) for pattern in self.patterns)

    def pull_command(self) -> str:
        if self.variant is not None:
            return f"qwenocr models pull {self.variant} --quant {self.quant} --backend {self.backend}"
        return "qwenocr models pull --repo " + self.repo + "".join(f" --include '{p}'" for p in self.patterns)


def catalog_target(variant: "catalog.Variant | str", bits: int, backend: str) -> Target:
    v = catalog.get_variant(variant) if isinstance(variant, str) else variant
    source = catalog.model_source(v, bits, backend)
    return Target(
        repo=source.repo,
        patterns=tuple(source.files),
        backend=backend,
        variant=v.name,
        quant=catalog.quant_name(backend, bits),
        bits=bits,
        mmproj=source.mmproj,
        download_gb=source.download_gb,
    )


def planned_target(variant: str, quant: Optional[str], backend: Optional[str], hardware=None) -> Tuple[Target, Any]:
    """The model `scan --variant VARIANT` would load here: `doctor`'s plan fills in quant/backend.

    Returns (target, plan). Unknown names are a UsageError (from the planner).
    """
    from qwenocr.fit.plan import make_plan

    if hardware is None:
        from qwenocr.fit.hardware import detect

        hardware = detect()
    plan = make_plan(hardware, variant=variant, quant=quant, backend=backend)
    return catalog_target(plan.variant, plan.bits, plan.backend), plan


def variant_targets(variant: str, quant: Optional[str], backend: Optional[str]) -> List[Target]:
    """Every catalog entry of `variant` (for `rm`): all precisions and both backends unless narrowed."""
    try:
        v = catalog.get_variant(variant)
    except KeyError:
        raise UsageError(f"unknown variant {variant!r}", "use one of " + ", ".join(catalog.variant_names())) from None
    bits_wanted: Sequence[int] = catalog.BITS
    backends: Sequence[str] = (backend,) if backend else catalog.BACKENDS
    if quant is not None:
        chosen, bits = catalog.quant_for_backend(quant, backend)
        bits_wanted = (bits,)
        backends = (chosen,) if chosen else backends
    return [catalog_target(v, bits, b) for b in backends for bits in bits_wanted]


def repo_target(repo: str, include: Sequence[str] = ()) -> Target:
    repo = repo.strip()
    org, _, name = repo.partition("/")
    if not org or not name or "/" in name or any(ch.isspace() for ch in repo):
        raise UsageError(
            f"--repo {repo!r} is not a Hugging Face repo id", "write it as ORG/NAME, e.g. unsloth/Qwen3.5-9B-GGUF"
        )
    patterns = tuple(p.strip() for p in include if p.strip())
    return Target(repo=repo, patterns=patterns, backend=None)


def catalog_targets(backends: Sequence[str]) -> List[Target]:
    return [catalog_target(v, bits, b) for b in backends for v in catalog.VARIANTS for bits in catalog.BITS]


# --- the cache -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedFile:
    """One file of one cached revision."""

    repo: str
    revision: str
    path: str  # relative to the snapshot folder, with "/"
    local: Path  # the entry in snapshots/<rev>/ (a link into blobs/, or the file itself)
    size: int
    blob: Path
    info: Any = field(compare=False, repr=False)  # huggingface_hub's CachedFileInfo


@dataclass(frozen=True)
class Snapshot:
    """One cached revision of one repo."""

    repo: str
    revision: str
    refs: Tuple[str, ...]
    folder: Path
    files: Tuple[CachedFile, ...]
    last_modified: float

    @property
    def short(self) -> str:
        return self.revision[:7]


@dataclass(frozen=True)
class Found:
    """What one revision holds of a target; `complete` when nothing is missing or wrong."""

    target: Target
    snapshot: Snapshot
    files: Tuple[CachedFile, ...]
    missing: Tuple[str, ...]  # patterns or file names (the hub listing's, when cached) not there
    wrong_size: Tuple[str, ...] = ()  # "name: N bytes, the hub listing says M"

    @property
    def complete(self) -> bool:
        return bool(self.files) and not self.missing and not self.wrong_size

    @property
    def size(self) -> int:
        return sum({f.blob: f.size for f in self.files}.values())

    def load_paths(self) -> List[Path]:
        """What an engine loads: the MLX folder, or the GGUF (first shard) and the projector."""
        return load_paths(self.snapshot.folder, [f.path for f in self.files], self.target.backend)

    def problems(self) -> str:
        parts = []
        if self.missing:
            parts.append("missing " + ", ".join(self.missing))
        if self.wrong_size:
            parts.append("wrong size " + "; ".join(self.wrong_size))
        return "; ".join(parts)


def load_paths(folder: Path, names: Sequence[str], backend: Optional[str]) -> List[Path]:
    """The paths a script needs, one per line: for llama.cpp the model (the first shard of
    a split one) and then the projector; for MLX the folder; otherwise every file."""
    ggufs = sorted(n for n in names if n.endswith(".gguf"))
    is_mlx = "config.json" in names and any(n.endswith(".safetensors") for n in names)
    if backend == "mlx" or (backend is None and is_mlx and not ggufs):
        return [folder]
    if backend == "llama.cpp" or ggufs:
        weights = [n for n in ggufs if not _is_mmproj(n) and _first_shard(n)]
        projectors = _prefer_f16([n for n in ggufs if _is_mmproj(n)])
        return [folder / n for n in weights + projectors]
    return [folder / n for n in sorted(names)]


def _is_mmproj(name: str) -> bool:
    return "mmproj" in name.rsplit("/", 1)[-1].lower()


def _first_shard(name: str) -> bool:
    match = _SHARD.search(name)
    return match is None or int(match.group(1)) == 1


def _prefer_f16(names: List[str]) -> List[str]:
    def key(name: str):
        lower = name.lower()
        return (0 if "f16" in lower and "bf16" not in lower else 1, name)

    return sorted(names, key=key)


def _missing_shards(names: Iterable[str]) -> List[str]:
    """Shards of a split GGUF that are absent, from the -0000N-of-0000M names present."""
    groups: Dict[Tuple[str, int], set] = {}
    for name in names:
        match = _SHARD.search(name)
        if match:
            groups.setdefault((name[: match.start()], int(match.group(2))), set()).add(int(match.group(1)))
    missing = []
    for (stem, total), present in sorted(groups.items()):
        missing += [f"{stem}-{i:05d}-of-{total:05d}.gguf" for i in range(1, total + 1) if i not in present]
    return missing


def default_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


class Cache:
    """The Hugging Face cache as `scan_cache_dir()` sees it (an empty one if the folder is absent)."""

    def __init__(self, directory: Path, info: Any = None):
        self.directory = directory
        self.info = info
        self._snapshots: Dict[str, List[Snapshot]] = {}
        self._trees: Dict[Tuple[str, str], Optional[Dict[str, int]]] = {}
        if info is not None:
            for repo in info.repos:
                if repo.repo_type != "model":
                    continue
                snaps = []
                for rev in repo.revisions:
                    files = tuple(
                        sorted(
                            (
                                CachedFile(
                                    repo=repo.repo_id,
                                    revision=rev.commit_hash,
                                    path=f.file_path.relative_to(rev.snapshot_path).as_posix(),
                                    local=f.file_path,
                                    size=f.size_on_disk,
                                    blob=f.blob_path,
                                    info=f,
                                )
                                for f in rev.files
                            ),
                            key=lambda f: f.path,
                        )
                    )
                    snaps.append(
                        Snapshot(
                            repo.repo_id,
                            rev.commit_hash,
                            tuple(sorted(rev.refs)),
                            rev.snapshot_path,
                            files,
                            rev.last_modified,
                        )
                    )
                # What `snapshot_download` uses offline first: the revision `main` points at.
                snaps.sort(key=lambda s: ("main" not in s.refs, -s.last_modified))
                self._snapshots[repo.repo_id] = snaps

    @classmethod
    def scan(cls, directory: Optional[Path] = None) -> "Cache":
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound

        directory = Path(directory) if directory is not None else default_cache_dir()
        try:
            info = scan_cache_dir(directory)
        except CacheNotFound:
            return cls(directory, None)
        except ValueError as error:  # the cache path is a file
            raise UsageError(
                f"the Hugging Face cache {directory} is not a directory: {error}", "fix HF_HUB_CACHE / HF_HOME"
            ) from None
        return cls(directory, info)

    @property
    def warnings(self) -> List[str]:
        return [str(w) for w in self.info.warnings] if self.info is not None else []

    def repos(self) -> List[str]:
        return sorted(self._snapshots)

    def snapshots(self, repo: str) -> List[Snapshot]:
        return list(self._snapshots.get(repo, ()))

    def repo_path(self, repo: str) -> Optional[Path]:
        if self.info is None:
            return None
        return next((r.repo_path for r in self.info.repos if r.repo_id == repo and r.repo_type == "model"), None)

    def incomplete(self) -> List[Tuple[str, Path, int]]:
        """Partial downloads (blobs/*.incomplete): (repo, path, bytes so far)."""
        if self.info is None:
            return []
        out = []
        for item in self.info.incomplete_files:
            folder = item.file_path.parent.parent.name  # models--org--name
            kind, _, rest = folder.partition("--")
            if kind == "models":
                out.append((rest.replace("--", "/"), item.file_path, item.size_on_disk))
        return sorted(out, key=lambda item: (item[0], str(item[1])))

    def hub_listing(self, repo: str, revision: str) -> Optional[Dict[str, int]]:
        """The hub's file sizes for this revision, as `snapshot_download` cached them (or None)."""
        key = (repo, revision)
        if key not in self._trees:
            try:
                from huggingface_hub import get_cached_repo_tree

                tree = get_cached_repo_tree(repo, revision=revision, cache_dir=self.directory)
                self._trees[key] = {f.path: f.size for f in tree}
            except Exception:  # no listing cached (older huggingface_hub, another tool, a test cache)
                self._trees[key] = None
        return self._trees[key]

    def match(self, target: Target, snapshot: Snapshot) -> Found:
        files = tuple(f for f in snapshot.files if target.matches(f.path))
        names = [f.path for f in files]
        missing = [p for p in target.required_patterns if not any(fnmatch.fnmatch(n, p) for n in names)]
        missing += _missing_shards(names)
        wrong = []
        listing = self.hub_listing(snapshot.repo, snapshot.revision)
        if listing is not None:
            expected = {path: size for path, size in listing.items() if target.matches(path)}
            present = {f.path: f.size for f in files}
            missing += [p for p in sorted(expected) if p not in present and p not in missing]
            wrong = [
                f"{p}: {present[p]:,} bytes, the hub listing says {expected[p]:,}"
                for p in sorted(expected)
                if p in present and expected[p] is not None and present[p] != expected[p]
            ]
        return Found(target, snapshot, files, tuple(dict.fromkeys(missing)), tuple(wrong))

    def find(self, target: Target) -> Optional[Found]:
        """The best revision for `target`: the first complete one (main first), else the fullest."""
        best: Optional[Found] = None
        for snapshot in self.snapshots(target.repo):
            found = self.match(target, snapshot)
            if found.complete:
                return found
            if target.mmproj and all(f.path == target.mmproj for f in found.files):
                continue  # only the projector every precision shares: not this model
            if found.files and (best is None or len(found.files) > len(best.files)):
                best = found
        return best

    def files_of(self, target: Target) -> List[CachedFile]:
        """Every cached file of `target`, in every revision."""
        return [f for s in self.snapshots(target.repo) for f in s.files if target.matches(f.path)]


# --- list ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListRow:
    target: Target
    found: Optional[Found]
    planned: bool  # what `scan` would pick on this machine

    @property
    def status(self) -> str:
        if self.found is None:
            return "absent"
        return "cached" if self.found.complete else "partial"

    def to_dict(self) -> dict:
        t, found = self.target, self.found
        return {
            "variant": t.variant,
            "quant": t.quant,
            "bits": t.bits,
            "backend": t.backend,
            "repo": t.repo,
            "files": list(t.patterns),
            "mmproj": t.mmproj,
            "download_gb": t.download_gb,
            "planned": self.planned,
            "status": self.status,
            "size_on_disk": found.size if found else 0,
            "revision": found.snapshot.revision if found else None,
            "cached_files": [{"path": f.path, "size": f.size} for f in found.files] if found else [],
            "missing": list(found.missing) if found else [],
            "wrong_size": list(found.wrong_size) if found else [],
            "paths": [str(p) for p in found.load_paths()] if found and found.complete else [],
        }


@dataclass(frozen=True)
class OtherFiles:
    """Cached files of a Qwen 3.5 repo that no catalog row accounts for (e.g. a Q4_K_M)."""

    repo: str
    revision: str
    files: Tuple[CachedFile, ...]

    @property
    def size(self) -> int:
        return sum({f.blob: f.size for f in self.files}.values())

    def to_dict(self) -> dict:
        return {
            "repo": self.repo,
            "revision": self.revision,
            "files": [{"path": f.path, "size": f.size} for f in self.files],
            "size_on_disk": self.size,
        }


@dataclass(frozen=True)
class Listing:
    cache_dir: Path
    backends: Tuple[str, ...]
    rows: Tuple[ListRow, ...]
    other: Tuple[OtherFiles, ...]
    incomplete: Tuple[Tuple[str, Path, int], ...]
    warnings: Tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "cache_dir": str(self.cache_dir),
            "backends": list(self.backends),
            "models": [row.to_dict() for row in self.rows],
            "other": [o.to_dict() for o in self.other],
            "incomplete": [{"repo": r, "path": str(p), "size": n} for r, p, n in self.incomplete],
            "warnings": list(self.warnings),
        }


def _is_qwen35(repo: str) -> bool:
    return re.search(r"qwen[_-]?3\.5", repo, re.IGNORECASE) is not None


def list_models(cache: Cache, backends: Sequence[str], planned: Optional[Target] = None) -> Listing:
    rows = []
    for target in catalog_targets(backends):
        rows.append(ListRow(target, cache.find(target), planned is not None and target == planned))
    # Everything of a Qwen 3.5 repo that no catalog entry (of either backend) claims.
    every = catalog_targets(catalog.BACKENDS)
    other = []
    for repo in cache.repos():
        claims = [t for t in every if t.repo == repo]
        if not claims and not _is_qwen35(repo):
            continue
        for snapshot in cache.snapshots(repo):
            loose = tuple(f for f in snapshot.files if not any(t.matches(f.path) for t in claims))
            if loose:
                other.append(OtherFiles(repo, snapshot.revision, loose))
    incomplete = tuple(item for item in cache.incomplete() if item[0] in {t.repo for t in every} or _is_qwen35(item[0]))
    return Listing(cache.directory, tuple(backends), tuple(rows), tuple(other), incomplete, tuple(cache.warnings))


# --- pull ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeProblem:
    path: str
    expected: Optional[int]
    actual: Optional[int]  # None: the file is not there

    def describe(self) -> str:
        if self.actual is None:
            return f"{self.path} is missing"
        return f"{self.path} is {self.actual:,} bytes, the hub says {self.expected:,}"


def select_files(remote: Mapping[str, Optional[int]], target: Target) -> Tuple[Dict[str, Optional[int]], List[str]]:
    """The repo files `target` asks for, with their sizes, and the required patterns nothing matches."""
    selected = {path: size for path, size in sorted(remote.items()) if target.matches(path)}
    missing = [p for p in target.required_patterns if not any(fnmatch.fnmatch(path, p) for path in selected)]
    return selected, missing


def gguf_models(paths: Iterable[str]) -> List[str]:
    """The distinct GGUF models among a repo's files (split shards count once; projectors not)."""
    models = set()
    for path in paths:
        if path.endswith(".gguf") and not _is_mmproj(path):
            match = _SHARD.search(path)
            models.add(path[: match.start()] + ".gguf" if match else path)
    return sorted(models)


def verify_sizes(folder: Path, expected: Mapping[str, Optional[int]]) -> List[SizeProblem]:
    """Each file under `folder` against the size the hub gives (None: unknown, only presence is checked)."""
    problems = []
    for path, size in sorted(expected.items()):
        local = folder / path
        try:
            actual = local.stat().st_size  # follows the snapshot link to the blob
        except OSError:
            problems.append(SizeProblem(path, size, None))
            continue
        if size is not None and actual != size:
            problems.append(SizeProblem(path, size, actual))
    return problems


@dataclass(frozen=True)
class PullResult:
    target: Target
    folder: Path
    revision: str
    files: Dict[str, Optional[int]]
    already: bool  # nothing had to be downloaded (or offline and everything is there)
    verified: bool  # sizes were checked against the hub's metadata
    redownloaded: Tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return sum(size or 0 for size in self.files.values())

    def load_paths(self) -> List[Path]:
        return load_paths(self.folder, list(self.files), self.target.backend)


def pull_offline(target: Target, cache: Cache) -> PullResult:
    """Offline, `pull` can only confirm that everything is cached already."""
    found = cache.find(target)
    if found is None or not found.complete:
        wanted = found.problems() if found is not None else "missing " + ", ".join(target.patterns or ("every file",))
        where = "is not in" if found is None else "is only partly in"
        raise ModelUnavailableError(
            f"{target.label} {where} the Hugging Face cache ({cache.directory}): {wanted}; offline mode forbids downloading",
            f"run `{target.pull_command()}` while online, without --offline and with HF_HUB_OFFLINE unset",
        )
    files = {f.path: f.size for f in found.files}
    return PullResult(target, found.snapshot.folder, found.snapshot.revision, files, already=True, verified=False)


def _hub_error(error: BaseException, repo: str) -> QwenOCRError:
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(error, GatedRepoError):
        return ModelUnavailableError(
            f"{repo} is gated: its files need an accepted licence and a login",
            f"accept the terms at https://huggingface.co/{repo} and run `hf auth login`",
        )
    if isinstance(error, RepositoryNotFoundError):
        return ModelUnavailableError(
            f"the model repository {repo} does not exist (or is private)",
            "check the name; for a private repo run `hf auth login`",
        )
    if isinstance(error, RevisionNotFoundError):
        return ModelUnavailableError(f"{repo}: the revision is gone from the hub", "run the command again")
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return OutputError(
            f"the disk holding the Hugging Face cache is full (downloading {repo})",
            "free space (`qwenocr models list` shows what each model takes, `qwenocr models rm` removes one) and run the same command again: it resumes",
        )
    if isinstance(error, HfHubHTTPError):
        return ModelUnavailableError(
            f"the Hugging Face hub refused or failed the request for {repo}: {reason}",
            "run the same command again later: finished files are kept and a partial one resumes",
        )
    return ModelUnavailableError(
        f"can't reach the Hugging Face hub for {repo}: {reason}",
        "check the network (HF_ENDPOINT for a mirror) and run the same command again: finished files are kept and a partial one resumes",
    )


def _network_errors() -> tuple:
    errors: List[type] = [OSError]  # huggingface_hub's HTTP errors are OSErrors too
    try:
        from huggingface_hub.errors import XetDownloadError  # a failed transfer from Xet storage

        errors.append(XetDownloadError)
    except ImportError:  # pragma: no cover - older huggingface_hub
        pass
    try:
        import httpx2  # what huggingface_hub 2.x speaks HTTP with

        errors.append(httpx2.HTTPError)
    except ImportError:  # pragma: no cover - older huggingface_hub uses requests / httpx
        pass
    try:
        import httpx

        errors.append(httpx.HTTPError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def remote_files(repo: str, revision: Optional[str] = None) -> Tuple[str, Dict[str, Optional[int]]]:
    """(commit, {path: size}) from the hub: `model_info(files_metadata=True)`."""
    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
    except _network_errors() as error:
        raise _hub_error(error, repo) from None
    return info.sha, {s.rfilename: s.size for s in (info.siblings or [])}


def pull(target: Target, *, announce=None, quiet: bool = False, cache: Optional[Cache] = None) -> PullResult:
    """Download `target` into the cache, then check every file's size against the hub.

    `announce(text)` receives the lines worth telling the user (stderr). huggingface_hub
    draws its own progress bars on stderr unless `quiet`.
    """
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.utils import disable_progress_bars

    say = announce or (lambda text: None)
    if quiet:
        disable_progress_bars()
    commit, remote = remote_files(target.repo)
    selected, missing = select_files(remote, target)
    if missing:
        raise ModelUnavailableError(
            f"{target.repo} has no file matching {', '.join(missing)} (for {target.label})",
            f"the repository may have renamed its files: see https://huggingface.co/{target.repo}/tree/main"
            f" and pull the right ones with `qwenocr models pull --repo {target.repo} --include PATTERN`",
        )
    if not selected:
        raise ModelUnavailableError(
            f"{target.repo} has no files" + (f" matching {' '.join(target.patterns)}" if target.patterns else "")
        )
    if not target.patterns:
        models = gguf_models(selected)
        if len(models) > 1:
            shown = ", ".join(models[:6]) + (f", … ({len(models)} in all)" if len(models) > 6 else "")
            raise UsageError(
                f"{target.repo} holds {len(models)} GGUF models ({shown}); pulling all of them is rarely what you want",
                "pick one with --include, e.g. --include '*Q4_K_M*.gguf' --include 'mmproj*'",
            )

    cache = cache if cache is not None else Cache.scan()
    have = {}
    for snapshot in cache.snapshots(target.repo):
        if snapshot.revision == commit:
            have = {f.path: f.size for f in snapshot.files if f.path in selected and f.size == selected[f.path]}
    total = sum(size or 0 for size in selected.values())
    cached = sum(size or 0 for size in have.values())
    say(
        f"pulling {target.label} from {target.repo} (commit {commit[:7]}): {len(selected)} file(s), {human_size(total)}"
        + (f", {human_size(cached)} of it already cached" if cached else "")
    )
    say("an interrupted download resumes where it stopped: run the same command again")
    try:
        # By branch, not by commit, so that refs/main is written and `scan --offline` finds it.
        folder = Path(snapshot_download(target.repo, allow_patterns=sorted(selected), cache_dir=cache.directory))
    except _network_errors() as error:
        raise _hub_error(error, target.repo) from None
    if folder.name != commit:  # main moved between the two calls: check against what came
        commit, remote = remote_files(target.repo, revision=folder.name)
        selected, _ = select_files(remote, target)

    problems = verify_sizes(folder, selected)
    redone: List[str] = []
    if problems:
        # A wrong size in the cache is not fixed by downloading again normally (the file
        # "exists"): fetch those files afresh, once.
        say("size check failed for " + "; ".join(p.describe() for p in problems) + ": downloading them again")
        try:
            for problem in problems:
                hf_hub_download(
                    target.repo, problem.path, revision=commit, force_download=True, cache_dir=cache.directory
                )
                redone.append(problem.path)
        except _network_errors() as error:
            raise _hub_error(error, target.repo) from None
        problems = verify_sizes(folder, selected)
    if problems:
        raise ModelUnavailableError(
            f"{target.repo}: downloaded files don't match the hub: " + "; ".join(p.describe() for p in problems),
            "remove them with `qwenocr models rm --repo "
            + target.repo
            + "".join(f" --include '{p.path}'" for p in problems)
            + " --yes` and pull again",
        )
    already = set(have) == set(selected)
    return PullResult(target, folder, commit, selected, already=already, verified=True, redownloaded=tuple(redone))


# --- rm --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    """What `rm` will delete, what it keeps and why, and the huggingface_hub strategies."""

    cache_dir: Path
    files: Tuple[CachedFile, ...]
    whole_repos: Tuple[str, ...]  # repos removed entirely (every revision)
    kept: Tuple[Tuple[CachedFile, str], ...]  # (file, the cached model that still uses it)
    strategies: Tuple[Any, ...] = field(compare=False, repr=False)
    freed: int = 0

    @property
    def empty(self) -> bool:
        return not self.files

    def execute(self) -> None:
        for strategy in self.strategies:
            strategy.execute()
        # delete_files leaves the snapshot folders; drop the ones it emptied.
        for folder in sorted({f.local.parent for f in self.files}, key=lambda p: len(p.parts), reverse=True):
            _prune_empty(folder)


def _prune_empty(folder: Path) -> None:
    """Remove `folder` and its parents while they are empty, up to snapshots/<rev> (and its refs)."""
    if "snapshots" not in folder.parts:
        return
    while True:
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone)
            return
        if folder.parent.name == "snapshots":
            _drop_refs_to(folder.parent.parent, folder.name)
            return
        folder = folder.parent


def _drop_refs_to(repo_path: Path, revision: str) -> None:
    refs = repo_path / "refs"
    for ref in refs.rglob("*") if refs.is_dir() else ():
        try:
            if ref.is_file() and ref.read_text().strip() == revision:
                ref.unlink()
        except OSError:
            pass


def plan_removal(cache: Cache, targets: Sequence[Target]) -> Removal:
    """The files of `targets` in every revision, minus those another cached catalog model uses.

    A GGUF repo holds every precision of a variant beside one projector, so removing one
    precision keeps the projector while another cached precision needs it. Files named
    with --repo/--include are removed as asked.
    """
    chosen: Dict[Path, CachedFile] = {}
    for target in targets:
        for f in cache.files_of(target):
            chosen[f.local] = f
    kept: List[Tuple[CachedFile, str]] = []
    if all(t.variant is not None for t in targets):
        removed = set(targets)
        repos = {f.repo for f in chosen.values()}
        for other in catalog_targets(catalog.BACKENDS):
            if other in removed or other.repo not in repos:
                continue
            for snapshot in cache.snapshots(other.repo):
                found = cache.match(other, snapshot)
                if not any(not _is_mmproj(f.path) for f in found.files):
                    continue  # only the shared projector of it is cached: not a model that stays
                for f in found.files:
                    if f.local in chosen:
                        kept.append((chosen.pop(f.local), other.label))
    files = tuple(sorted(chosen.values(), key=lambda f: (f.repo, str(f.local))))
    if not files:
        return Removal(cache.directory, (), (), tuple(kept), (), 0)

    by_repo: Dict[str, set] = {}
    for f in files:
        by_repo.setdefault(f.repo, set()).add(f.local)
    whole = sorted(
        repo for repo, picked in by_repo.items() if picked == {f.local for s in cache.snapshots(repo) for f in s.files}
    )
    strategies = []
    freed = 0
    if whole:
        strategy = cache.info.delete_revisions(*(s.revision for repo in whole for s in cache.snapshots(repo)))
        strategies.append(strategy)
        freed += strategy.expected_freed_size
    partial = [f.info for f in files if f.repo not in whole]
    if partial:
        strategy = cache.info.delete_files(*partial)
        strategies.append(strategy)
        freed += strategy.expected_freed_size
    return Removal(cache.directory, files, tuple(whole), tuple(kept), tuple(strategies), freed)


# --- path ------------------------------------------------------------------------------------


def locate(cache: Cache, target: Target) -> Found:
    """The cached files of `target`, complete, or ModelUnavailableError (exit 7)."""
    found = cache.find(target)
    if found is None:
        raise ModelUnavailableError(
            f"{target.label} is not in the Hugging Face cache ({cache.directory})",
            f"download it with `{target.pull_command()}`",
        )
    if not found.complete:
        raise ModelUnavailableError(
            f"{target.label} is only partly in the Hugging Face cache ({cache.directory}): {found.problems()}",
            f"complete it with `{target.pull_command()}`",
        )
    return found


# --- formatting ------------------------------------------------------------------------------


def human_size(n: Optional[int]) -> str:
    """Bytes in decimal units, as the hub and `doctor` count them (GB = 10^9 bytes)."""
    if n is None:
        return "?"
    for unit, scale, digits in (("TB", 1e12, 2), ("GB", 1e9, 2), ("MB", 1e6, 1), ("kB", 1e3, 1)):
        if n >= scale:
            return f"{n / scale:.{digits}f} {unit}"
    return f"{n} B"


def cache_dir_source() -> str:
    """Which setting chose the cache folder, for messages."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        if os.environ.get(name):
            return name
    return "default"


def render_listing(listing: Listing) -> list:
    """Rich renderables for `models list` (the CLI prints them to stdout)."""
    from rich.table import Table
    from rich.text import Text

    several = len(listing.backends) > 1
    parts: list = []
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("variant", no_wrap=True)
    table.add_column("quant", no_wrap=True)
    if several:
        table.add_column("backend", no_wrap=True)
    table.add_column("download", justify="right", no_wrap=True)
    table.add_column("in cache", no_wrap=True)
    table.add_column("repo", overflow="fold")
    for row in listing.rows:
        t, found = row.target, row.found
        if found is None:
            state = Text("—", style="dim")
        elif found.complete:
            state = Text(human_size(found.size), style="green")
        else:
            state = Text(f"partial, {human_size(found.size)}", style="yellow")
        cells = [("→ " if row.planned else "  ") + (t.variant or ""), t.quant or ""]
        if several:
            cells.append(t.backend or "")
        cells += [f"≈{t.download_gb:g} GB", state, t.repo]
        table.add_row(*cells, style="bold" if row.planned else None)
    parts.append(table)
    notes = []
    if any(row.planned for row in listing.rows):
        notes.append("→ what `qwenocr scan` picks on this machine (`qwenocr doctor` says why)")
    cached = [row for row in listing.rows if row.found is not None]
    total = sum({f.blob: f.size for row in cached for f in row.found.files}.values())
    notes.append(
        f"{sum(1 for row in cached if row.found.complete)} cached, {human_size(total)} on disk in {listing.cache_dir}"
    )
    partial = [row for row in listing.rows if row.found is not None and not row.found.complete]
    for row in partial:
        notes.append(f"partial {row.target.label}: {row.found.problems()} (`{row.target.pull_command()}` completes it)")
    if listing.other:
        other = Table(
            title="Other Qwen 3.5 files in the cache",
            title_justify="left",
            show_edge=False,
            pad_edge=False,
            header_style="bold",
        )
        other.add_column("repo", overflow="fold")
        other.add_column("files", overflow="fold")
        other.add_column("size", justify="right", no_wrap=True)
        for item in listing.other:
            names = ", ".join(f.path for f in item.files[:4]) + (
                f", … ({len(item.files)} files)" if len(item.files) > 4 else ""
            )
            other.add_row(item.repo, names, human_size(item.size))
        parts += [Text(""), other]
    for repo, path, size in listing.incomplete:
        notes.append(
            f"interrupted download in {repo}: {human_size(size)} so far ({path.name}); pulling it again resumes it"
        )
    for warning in listing.warnings:
        notes.append(f"cache warning: {warning}")
    parts.append(Text(""))
    parts += [Text(note, style="dim") for note in notes]
    return parts


def describe_removal(removal: Removal) -> List[str]:
    """Lines for stderr: every file `rm` removes with its size, what it keeps, the total."""
    lines = [f"in {removal.cache_dir}:"]
    for f in removal.files:
        lines.append(f"  {f.repo}  {f.path}  {human_size(f.size)}  (revision {f.revision[:7]})")
    for repo in removal.whole_repos:
        lines.append(f"  (all of {repo} goes: its folder is removed)")
    for f, user in removal.kept:
        lines.append(f"  keeps {f.repo}  {f.path}: {user} uses it too")
    lines.append(f"frees {human_size(removal.freed)}")
    return lines
