"""The one way to the Hugging Face hub: the file listing, the download, and what their
failures mean to the user.

`models pull` and `scan` both download through `download`, into the standard Hugging
Face cache, and every hub, network or disk error they meet becomes a `QwenOCRError`
through `hub_error`. `--offline` (or HF_HUB_OFFLINE=1) never touches the network: a file
that is not cached then fails with a message naming it and how to get it.
huggingface_hub is imported inside the functions, so that `qwenocr --help` stays fast.
"""

from __future__ import annotations

import errno
import importlib
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Type

from qwenocr.errors import ModelUnavailableError, OutputError, QwenOCRError
from qwenocr.store.targets import Target

# huggingface_hub's HTTP errors are OSErrors; a failed transfer from Xet storage and the
# HTTP library's own errors (httpx2 under huggingface_hub 2.x, httpx before) are not.
_OTHER_NETWORK_ERRORS = (
    ("huggingface_hub.errors", "XetDownloadError"),
    ("httpx2", "HTTPError"),
    ("httpx", "HTTPError"),
)


def offline_requested(flag: bool) -> bool:
    """--offline, or HF_HUB_OFFLINE set the way huggingface_hub reads it."""
    return flag or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def network_errors() -> Tuple[Type[BaseException], ...]:
    """The exceptions a hub call can fail with, for `except` (then mapped by `hub_error`)."""
    errors: List[Type[BaseException]] = [OSError]
    for module, name in _OTHER_NETWORK_ERRORS:
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):  # an older or newer huggingface_hub
            pass
    return tuple(errors)


def hub_error(
    error: BaseException, repo: str, *, needed: Optional[Target] = None, offline: bool = False
) -> QwenOCRError:
    """What a failed hub call means, with what to do about it.

    `needed`: the model a scan is resolving; when its files are neither cached nor
    downloadable, the message names them and the `models pull` line that gets them.
    """
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if needed is not None and isinstance(error, LocalEntryNotFoundError):
        # huggingface_hub raises this both in offline mode and when the hub can't be
        # reached; say which, since the remedies differ.
        return not_cached_error(needed, needed.patterns, offline)
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
            "free space (`qwenocr models list` shows what each model takes, `qwenocr models rm` removes one)"
            " and run the same command again: it resumes",
        )
    if isinstance(error, HfHubHTTPError):
        return ModelUnavailableError(
            f"the Hugging Face hub refused or failed the request for {repo}: {reason}",
            "run the same command again later: finished files are kept and a partial one resumes",
        )
    return ModelUnavailableError(
        f"can't reach the Hugging Face hub for {repo}: {reason}",
        "check the network (HF_ENDPOINT for a mirror) and run the same command again:"
        " finished files are kept and a partial one resumes",
    )


def not_cached_error(target: Target, patterns: Sequence[str], offline: bool) -> ModelUnavailableError:
    """Files of `target` a scan needs are not cached, and can't be downloaded now."""
    reason = (
        "offline mode forbids downloading" if offline else "the Hugging Face hub could not be reached to download them"
    )
    return ModelUnavailableError(
        f"model files {', '.join(patterns)} from {target.repo} are not in the Hugging Face cache, and {reason}",
        f"download them once with `{target.pull_command()}` while online, or pass --model PATH",
    )


def no_such_files_error(target: Target, missing: Sequence[str]) -> ModelUnavailableError:
    """The repo has nothing that matches some of `target`'s required patterns."""
    return ModelUnavailableError(
        f"{target.repo} has no file matching {', '.join(missing)} (for {target.label})",
        f"the repository may have renamed its files: see https://huggingface.co/{target.repo}/tree/main"
        f" and pull the right ones with `qwenocr models pull --repo {target.repo} --include PATTERN`",
    )


def remote_files(repo: str, revision: Optional[str] = None) -> Tuple[str, Dict[str, Optional[int]]]:
    """(commit, {path: size}) from the hub: `model_info(files_metadata=True)`."""
    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
    except network_errors() as error:
        raise hub_error(error, repo) from None
    if info.sha is None:  # the hub always gives the commit of what it lists
        raise ModelUnavailableError(f"the Hugging Face hub gave no commit for {repo}", "run the command again")
    return info.sha, {s.rfilename: s.size for s in (info.siblings or [])}


def download(
    repo: str,
    patterns: Sequence[str],
    *,
    cache_dir: Optional[Path] = None,
    offline: bool = False,
    needed: Optional[Target] = None,
) -> Path:
    """The files of `repo` matching `patterns` into the cache (offline: from it); the snapshot folder.

    By branch, not by commit, so that refs/main is written and `scan --offline` finds it.
    """
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(repo, allow_patterns=list(patterns), cache_dir=cache_dir, local_files_only=offline)
        )
    except network_errors() as error:
        raise hub_error(error, repo, needed=needed, offline=offline) from None


def download_again(repo: str, paths: Sequence[str], revision: str, cache_dir: Path) -> List[str]:
    """Fetch `paths` of `revision` afresh, over what the cache holds; the paths done."""
    from huggingface_hub import hf_hub_download

    done: List[str] = []
    try:
        for path in paths:
            hf_hub_download(repo, path, revision=revision, force_download=True, cache_dir=cache_dir)
            done.append(path)
    except network_errors() as error:
        raise hub_error(error, repo) from None
    return done
