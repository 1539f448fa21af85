"""`models rm`: remove a model's cached files, keeping files another cached model still uses.

The cache is pruned with huggingface_hub's `delete_revisions` / `delete_files`
strategies; `plan_removal` decides, `Removal.execute` deletes, `describe_removal` says
what will go for the CLI to show (and ask about) first.

Nothing outside the cache folder is ever deleted. huggingface_hub takes a snapshot
entry's link target for its blob and deletes it, wherever it is; a link a user (or
another tool) pointed at a file elsewhere would cost that file. Such entries are kept
out of the strategies' deletions: the link itself goes, its target stays, and one
warning names them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Sequence, Set, Tuple

from qwenocr.fit import catalog
from qwenocr.store.cache import Cache, CachedFile, human_size
from qwenocr.store.files import is_mmproj
from qwenocr.store.targets import Target, catalog_targets


@dataclass(frozen=True)
class Removal:
    """What `rm` will delete, what it keeps and why, and the huggingface_hub strategies."""

    cache_dir: Path
    files: Tuple[CachedFile, ...]
    whole_repos: Tuple[str, ...]  # repos removed entirely (every revision)
    kept: Tuple[Tuple[CachedFile, str], ...]  # (file, the cached model that still uses it)
    strategies: Tuple[Any, ...] = field(compare=False, repr=False)
    freed: int = 0
    outside: Tuple[Tuple[CachedFile, Path], ...] = ()  # (entry, its target outside the cache): link only

    @property
    def empty(self) -> bool:
        return not self.files

    def execute(self) -> None:
        if self.outside:
            named = "; ".join(f"{f.repo} {f.path} -> {target}" for f, target in self.outside)
            print(
                f"warning: not deleting {len(self.outside)} file(s) outside the Hugging Face cache "
                f"({self.cache_dir}) that cached entries link to, only the links: {named}",
                file=sys.stderr,
            )
        for strategy in self.strategies:
            strategy.execute()
        # delete_files leaves the snapshot folders; drop the ones it emptied.
        for folder in sorted({f.local.parent for f in self.files}, key=lambda p: len(p.parts), reverse=True):
            _prune_empty(folder)


def _inside(path: Path, root: str) -> bool:
    """Whether `path`, its last part not followed (unlinking a link removes the link), is under `root`."""
    try:
        real = os.path.join(os.path.realpath(path.parent), path.name)
    except (OSError, ValueError):
        return False
    return os.path.commonpath([real, root]) == root


def _target_outside(f: CachedFile, root: str) -> Path | None:
    """Where `f`'s entry really leads when that is outside the cache `root` (else None)."""
    try:
        real = os.path.realpath(f.local)
    except (OSError, ValueError):
        return Path(f.local)
    if os.path.commonpath([real, root]) != root or not _inside(f.local, root) or not _inside(f.blob, root):
        return Path(real)
    return None


def _confined(strategy: Any, root: str) -> Tuple[Any, FrozenSet[Path]]:
    """`strategy` without the paths it would unlink outside the cache, and those paths.

    `repos` and `snapshots` are removed with rmtree (or unlinked if links), which never
    follows a link inside them; `files` and `blobs` are unlinked one by one, and a blob
    is wherever a link pointed."""
    dropped = frozenset(p for p in strategy.blobs | strategy.files if not _inside(p, root))
    return dataclasses.replace(strategy, blobs=strategy.blobs - dropped, files=strategy.files - dropped), dropped


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
                if not any(not is_mmproj(f.path) for f in found.files):
                    continue  # only the shared projector of it is cached: not a model that stays
                for f in found.files:
                    if f.local in chosen:
                        kept.append((chosen.pop(f.local), other.label))
    files = tuple(sorted(chosen.values(), key=lambda f: (f.repo, str(f.local))))
    if not files:
        return Removal(cache.directory, (), (), tuple(kept), (), 0)

    by_repo: Dict[str, Set[Path]] = {}
    for f in files:
        by_repo.setdefault(f.repo, set()).add(f.local)
    whole = sorted(
        repo for repo, picked in by_repo.items() if picked == {f.local for s in cache.snapshots(repo) for f in s.files}
    )
    root = os.path.realpath(cache.directory)
    outside = tuple((f, target) for f in files for target in [_target_outside(f, root)] if target is not None)
    strategies = []
    freed = 0
    dropped: Set[Path] = set()
    if whole:
        strategy = cache.info.delete_revisions(*(s.revision for repo in whole for s in cache.snapshots(repo)))
        strategy, gone = _confined(strategy, root)
        strategies.append(strategy)
        freed += strategy.expected_freed_size
        dropped |= gone
    partial = [f.info for f in files if f.repo not in whole]
    if partial:
        strategy = cache.info.delete_files(*partial)
        strategy, gone = _confined(strategy, root)
        strategies.append(strategy)
        freed += strategy.expected_freed_size
        dropped |= gone
    # What stays outside frees nothing here (the hub counted it as a blob it would delete).
    freed -= sum({f.blob: f.size for f, _ in outside if f.blob in dropped or not _inside(f.blob, root)}.values())
    return Removal(cache.directory, files, tuple(whole), tuple(kept), tuple(strategies), max(freed, 0), outside)


def describe_removal(removal: Removal) -> List[str]:
    """Lines for stderr: every file `rm` removes with its size, what it keeps, the total."""
    lines = [f"in {removal.cache_dir}:"]
    for f in removal.files:
        lines.append(f"  {f.repo}  {f.path}  {human_size(f.size)}  (revision {f.revision[:7]})")
    for f, target in removal.outside:
        lines.append(f"  (the link {f.path} only: its target {target} is outside the cache and stays)")
    for repo in removal.whole_repos:
        lines.append(f"  (all of {repo} goes: its folder is removed)")
    for f, user in removal.kept:
        lines.append(f"  keeps {f.repo}  {f.path}: {user} uses it too")
    lines.append(f"frees {human_size(removal.freed)}")
    return lines
