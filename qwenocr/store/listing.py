"""`models list`: every variant × precision of the catalog with what the cache holds of it.

`list_models` builds the listing (its `to_dict` is the JSON); `render_listing` turns it
into Rich renderables for the table. Nothing here prints, and nothing touches the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from qwenocr.fit import catalog
from qwenocr.store.cache import Cache, CachedFile, Found, disk_size, human_size
from qwenocr.store.targets import Target, catalog_targets

if TYPE_CHECKING:
    from rich.console import RenderableType


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
        return disk_size(self.files)

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


def render_listing(listing: Listing) -> "List[RenderableType]":
    """Rich renderables for `models list` (the CLI prints them to stdout)."""
    from rich.table import Table
    from rich.text import Text

    several = len(listing.backends) > 1
    parts: "List[RenderableType]" = []
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
        cells: "List[RenderableType]" = [("→ " if row.planned else "  ") + (t.variant or ""), t.quant or ""]
        if several:
            cells.append(t.backend or "")
        cells += [f"≈{t.download_gb:g} GB", state, t.repo]
        table.add_row(*cells, style="bold" if row.planned else None)
    parts.append(table)
    notes = []
    if any(row.planned for row in listing.rows):
        notes.append("→ what `qwenocr scan` picks on this machine (`qwenocr doctor` says why)")
    cached = [row.found for row in listing.rows if row.found is not None]
    total = disk_size(f for found in cached for f in found.files)
    notes.append(
        f"{sum(1 for found in cached if found.complete)} cached, {human_size(total)} on disk in {listing.cache_dir}"
    )
    for row in listing.rows:
        if row.found is not None and not row.found.complete:
            notes.append(
                f"partial {row.target.label}: {row.found.problems()} (`{row.target.pull_command()}` completes it)"
            )
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
