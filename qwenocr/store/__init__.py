"""Model files: which files make a model (shards, projectors, MLX file sets), where they
are (a local path or the Hugging Face cache), and how they are pulled, listed and removed.

    files.py     what makes a model on disk: GGUF shards, projectors, MLX file sets (the one home)
    targets.py   what a command names: a catalog model or files of any repo (`Target`)
    cache.py     the Hugging Face cache read: snapshots, what of a target is there (`locate`)
    hub.py       the one way to the hub: listing, download, and its errors as QwenOCRErrors
    pulling.py   `models pull`: download, then check sizes against the hub
    remove.py    `models rm`: what to delete and what another model still uses
    listing.py   `models list`: the catalog against the cache, and its table
    resolve.py   what `scan` loads: a local path or a repo's files (`ModelFiles`)

The names below are what the CLI uses (`from qwenocr import store`). Each is imported
from its module on first use, so that `scan`, which needs only resolve.py, does not
load the listing, pull and removal code; huggingface_hub and rich are imported inside
the functions that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names are, for type checkers; at run time __getattr__ imports them
    from qwenocr.store.cache import Cache as Cache
    from qwenocr.store.cache import cache_dir_source as cache_dir_source
    from qwenocr.store.cache import human_size as human_size
    from qwenocr.store.cache import locate as locate
    from qwenocr.store.hub import offline_requested as offline_requested
    from qwenocr.store.listing import list_models as list_models
    from qwenocr.store.listing import render_listing as render_listing
    from qwenocr.store.pulling import pull as pull
    from qwenocr.store.pulling import pull_offline as pull_offline
    from qwenocr.store.remove import describe_removal as describe_removal
    from qwenocr.store.remove import plan_removal as plan_removal
    from qwenocr.store.targets import Target as Target
    from qwenocr.store.targets import catalog_target as catalog_target
    from qwenocr.store.targets import planned_target as planned_target
    from qwenocr.store.targets import repo_target as repo_target
    from qwenocr.store.targets import variant_targets as variant_targets

_HOMES = {
    "Cache": "cache",
    "cache_dir_source": "cache",
    "human_size": "cache",
    "locate": "cache",
    "offline_requested": "hub",
    "list_models": "listing",
    "render_listing": "listing",
    "pull": "pulling",
    "pull_offline": "pulling",
    "describe_removal": "remove",
    "plan_removal": "remove",
    "Target": "targets",
    "catalog_target": "targets",
    "planned_target": "targets",
    "repo_target": "targets",
    "variant_targets": "targets",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # once: later lookups find it without coming here
    return value
