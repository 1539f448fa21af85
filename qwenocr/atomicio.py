"""Replace a file all at once, or not at all.

An OCR run can be interrupted at any moment (Ctrl-C, SIGTERM, a crash, a full disk).
Output files must never be left half-written: a reader sees either the old file or the
complete new one. `atomic_write` writes to a temporary file in the same directory (so
the final rename stays on one filesystem), flushes and fsyncs it, then `os.replace`s the
target, and fsyncs the directory so the rename itself survives a power cut. On any
exception, KeyboardInterrupt included, the temporary file is removed and the old file is
left untouched. (SIGKILL can still leave a `.NAME.*.tmp` file behind, never a damaged
target.)

Permissions: a new file gets the mode an ordinary `open(path, "w")` would give it
(0o666 less the umask); replacing a file keeps that file's mode, so a private output
(0o600) stays private. The temporary file is never more open than the final one.
Ownership and extended attributes are not copied. A symlink at the target is replaced
by a regular file, never written through: output names can't be redirected elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Union

__all__ = ["atomic_write", "write_bytes", "write_text"]

_MODES = {"w": "w", "wt": "w", "wb": "wb"}


@contextlib.contextmanager
def atomic_write(
    path: Union[str, os.PathLike],
    mode: str = "w",
    *,
    encoding: Optional[str] = "utf-8",
    newline: Optional[str] = None,
) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on a clean exit it becomes `path`.

    `mode` is "w" (text, UTF-8 by default) or "wb" (bytes).
    """
    if mode not in _MODES:
        raise ValueError(f"atomic_write supports modes 'w' and 'wb', not {mode!r}")
    binary = "b" in mode
    target = Path(path)
    directory = target.parent

    existing_mode = _existing_file_mode(target)
    # With an existing file, start private and widen to its mode; without one, let the
    # umask decide as open() would.
    create_mode = 0o600 if existing_mode is not None else 0o666
    fd, tmp = _create_temp(directory, target.name, create_mode)
    try:
        if existing_mode is not None:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, existing_mode)
            else:  # Windows
                os.chmod(tmp, existing_mode)
        if binary:
            handle: IO[Any] = os.fdopen(fd, _MODES[mode])
        else:
            handle = os.fdopen(fd, _MODES[mode], encoding=encoding, newline=newline)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_directory(directory)


def write_text(path: Union[str, os.PathLike], text: str, *, encoding: str = "utf-8") -> None:
    """Atomically replace `path` with `text`."""
    with atomic_write(path, "w", encoding=encoding) as handle:
        handle.write(text)


def write_bytes(path: Union[str, os.PathLike], data: bytes) -> None:
    """Atomically replace `path` with `data`."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def _existing_file_mode(target: Path) -> Optional[int]:
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(info.st_mode):
        return stat.S_IMODE(info.st_mode)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(f"{target} is a directory")
    return None  # a symlink or something else: replaced, its mode means nothing here


def _create_temp(directory: Path, name: str, mode: int) -> tuple[int, str]:
    """Create a new, exclusive temporary file next to the target."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {directory}")


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable. Not possible (nor needed) on Windows."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
