"""Where qwenocr keeps its own files: one cache root, shared by the checkpoints of
`scan` (scan/checkpoint.py) and the conversions of `models convert` (store/registry.py).

`$QWENOCR_CACHE_DIR` when set, else the platform's per-user cache directory:
`~/.cache/qwenocr` on Linux (honouring an absolute `$XDG_CACHE_HOME`),
`~/Library/Caches/qwenocr` on macOS, `%LOCALAPPDATA%\\qwenocr\\Cache` on Windows.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def user_cache_dir(app: str = "qwenocr") -> Path:
    """The platform's per-user cache directory for `app`.

    Not platformdirs: it would move existing checkpoints. platformdirs 4 honours
    $XDG_CACHE_HOME on macOS too (we keep ~/Library/Caches there), asks Windows for the
    Local AppData known folder instead of reading %LOCALAPPDATA%, and picks its platform
    once at import, so the paths it gives differ from the ones tests/test_checkpoint.py
    pins for each platform.
    """
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / app
    if os.name == "nt":
        local = os.environ.get("LOCALAPPDATA")
        return (Path(local) if local else home / "AppData" / "Local") / app / "Cache"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says to ignore a relative path.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".cache"
    return base / app


def cache_root() -> Path:
    """`$QWENOCR_CACHE_DIR`, else the platform's user cache directory for qwenocr."""
    override = os.environ.get("QWENOCR_CACHE_DIR")
    return Path(override).expanduser() if override else user_cache_dir()
