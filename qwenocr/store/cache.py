"""The Hugging Face cache, read: which revisions of which repos hold which files.

Everything goes through the standard Hugging Face cache (`HF_HUB_CACHE`, by default
`~/.cache/huggingface/hub`), read with `huggingface_hub.scan_cache_dir()`, so files that
mlx-vlm or anything else built on `huggingface_hub` fetched count as ours and ours as
theirs. `locate` is `models path`: a target's cached files, complete, or an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from qwenocr.errors import ModelUnavailableError, UsageError
from qwenocr.store import files as model_files
from qwenocr.store.targets import Target


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


def disk_size(files: Iterable[CachedFile]) -> int:
    """Bytes on disk: a blob two revisions share counts once."""
    return sum({f.blob: f.size for f in files}.values())


@dataclass(frozen=True)
class Snapshot:
    """One cached revision of one repo."""

    repo: str
    revision: str
    refs: Tuple[str, ...]
    folder: Path
    files: Tuple[CachedFile, ...]
    last_modified: float


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
        return disk_size(self.files)

    def load_paths(self) -> List[Path]:
        """What an engine loads: the MLX folder, or the GGUF (first shard) and the projector."""
        return model_files.load_paths(self.snapshot.folder, [f.path for f in self.files], self.target.backend)

    def problems(self) -> str:
        parts = []
        if self.missing:
            parts.append("missing " + ", ".join(self.missing))
        if self.wrong_size:
            parts.append("wrong size " + "; ".join(self.wrong_size))
        return "; ".join(parts)


def default_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def cache_dir_source() -> str:
    """Which setting chose the cache folder, for messages."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        if os.environ.get(name):
            return name
    return "default"


def human_size(n: Optional[int]) -> str:
    """Bytes in decimal units, as the hub and `doctor` count them (GB = 10^9 bytes)."""
    if n is None:
        return "?"
    for unit, scale, digits in (("TB", 1e12, 2), ("GB", 1e9, 2), ("MB", 1e6, 1), ("kB", 1e3, 1)):
        if n >= scale:
            return f"{n / scale:.{digits}f} {unit}"
    return f"{n} B"


class Cache:
    """The Hugging Face cache as `scan_cache_dir()` sees it (an empty one if the folder is absent)."""

    def __init__(self, directory: Path, info: Any = None):
        self.directory = directory
        self.info = info
        self._snapshots: Dict[str, List[Snapshot]] = {}
        self._trees: Dict[Tuple[str, str], Optional[Dict[str, int]]] = {}
        if info is not None:
            for repo in info.repos:
                if repo.repo_type == "model":
                    self._snapshots[repo.repo_id] = _snapshots_of(repo)

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
        missing = target.missing_from(names) + model_files.missing_shards(names)
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


def _snapshots_of(repo: Any) -> List[Snapshot]:
    """huggingface_hub's CachedRepoInfo as Snapshots, the one `snapshot_download` uses offline first."""
    snapshots = []
    for rev in repo.revisions:
        cached = (
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
        )
        files = tuple(sorted(cached, key=lambda f: f.path))
        snapshots.append(
            Snapshot(
                repo.repo_id, rev.commit_hash, tuple(sorted(rev.refs)), rev.snapshot_path, files, rev.last_modified
            )
        )
    # What `snapshot_download` uses offline first: the revision `main` points at.
    snapshots.sort(key=lambda s: ("main" not in s.refs, -s.last_modified))
    return snapshots


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
