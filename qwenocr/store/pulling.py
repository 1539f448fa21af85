"""`models pull`: download a target into the cache, then check every file's size against the hub.

huggingface_hub draws its progress bars on stderr. Interrupted downloads resume:
huggingface_hub keeps the partial file (`blobs/*.incomplete`) and continues it on the
next run. Offline, `pull_offline` only confirms that everything is cached already.

(Named `pulling`, not `pull`: the package exports the function `pull`, which would
shadow a submodule of the same name.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from qwenocr.errors import ModelUnavailableError, UsageError
from qwenocr.store import files as model_files
from qwenocr.store import hub
from qwenocr.store.cache import Cache, human_size
from qwenocr.store.targets import Target


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
    return selected, target.missing_from(list(selected))


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
        return model_files.load_paths(self.folder, list(self.files), self.target.backend)


def pull_offline(target: Target, cache: Cache) -> PullResult:
    """Offline, `pull` can only confirm that everything is cached already."""
    found = cache.find(target)
    if found is None or not found.complete:
        wanted = found.problems() if found is not None else "missing " + ", ".join(target.patterns or ("every file",))
        where = "is not in" if found is None else "is only partly in"
        raise ModelUnavailableError(
            f"{target.label} {where} the Hugging Face cache ({cache.directory}): {wanted};"
            " offline mode forbids downloading",
            f"run `{target.pull_command()}` while online, without --offline and with HF_HUB_OFFLINE unset",
        )
    files: Dict[str, Optional[int]] = {f.path: f.size for f in found.files}
    return PullResult(target, found.snapshot.folder, found.snapshot.revision, files, already=True, verified=False)


def pull(
    target: Target,
    *,
    announce: Optional[Callable[[str], None]] = None,
    quiet: bool = False,
    cache: Optional[Cache] = None,
) -> PullResult:
    """Download `target` into the cache, then check every file's size against the hub.

    `announce(text)` receives the lines worth telling the user (stderr). huggingface_hub
    draws its own progress bars on stderr unless `quiet`.
    """
    from huggingface_hub.utils import disable_progress_bars

    say = announce or (lambda text: None)
    if quiet:
        disable_progress_bars()
    commit, remote = hub.remote_files(target.repo)
    selected, missing = select_files(remote, target)
    if missing:
        raise hub.no_such_files_error(target, missing)
    if not selected:
        raise ModelUnavailableError(
            f"{target.repo} has no files" + (f" matching {' '.join(target.patterns)}" if target.patterns else "")
        )
    if not target.patterns:
        models = model_files.gguf_models(selected)
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
    folder = hub.download(target.repo, sorted(selected), cache_dir=cache.directory)
    if folder.name != commit:  # main moved between the two calls: check against what came
        commit, remote = hub.remote_files(target.repo, revision=folder.name)
        selected, _ = select_files(remote, target)

    problems = verify_sizes(folder, selected)
    redone: List[str] = []
    if problems:
        # A wrong size in the cache is not fixed by downloading again normally (the file
        # "exists"): fetch those files afresh, once.
        say("size check failed for " + "; ".join(p.describe() for p in problems) + ": downloading them again")
        redone = hub.download_again(target.repo, [p.path for p in problems], commit, cache.directory)
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
