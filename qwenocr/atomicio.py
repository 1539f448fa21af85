"""Replace a file all at once, or not at all.

An OCR run can be interrupted at any moment (Ctrl-C, SIGTERM, a crash, a full disk).
Output files must never be left half-written: a reader sees either the old file or the
complete new one. `atomic_write` writes to a temporary file in the same directory (so
the final rename stays on one filesystem), flushes and fsyncs it, then `os.replace`s the
target, and fsyncs the directory so the rename itself survives a power cut. On any
exception, KeyboardInterrupt included, the temporary file is removed and the old file is
left untouched.

SIGKILL (or a power cut) can't be caught, and leaves the temporary file behind (never a
damaged target). So the writer holds an exclusive `flock` on its temporary file for as
long as it writes, and the next write to the same path removes the ones left behind: a
file beside it named exactly `.NAME.<8 hex digits>.tmp`, a regular file (never through a
symlink) owned by this user, whose lock it can take, which only happens once its writer
is gone (the kernel drops a dead process's locks; a live writer, in this process or
another, still holds it). Anything else is left alone. Where there is no `flock`
(Windows) or the filesystem refuses locks, nothing is removed.

Permissions: a new file gets the mode an ordinary `open(path, "w")` would give it
(0o666 less the umask); replacing a file keeps that file's mode, so a private output
(0o600) stays private. The temporary file is never more open than the final one.
Ownership and extended attributes are not copied. A symlink at the target is replaced
by a regular file, never written through: output names can't be redirected elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Union

try:
    import fcntl
except ImportError:  # Windows: no flock, and so no cleanup of temp files left behind
    fcntl = None  # type: ignore[assignment]

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
    _remove_abandoned_temps(directory, target.name, keep=os.path.basename(tmp))
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
            if fcntl is not None:
                # While the writer's lock is still held: a cleanup beside us can't take
                # the finished file for abandoned between the close and the rename.
                os.replace(tmp, target)
        if fcntl is None:
            os.replace(tmp, target)  # Windows can't rename a file that is open
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
        tmp = os.path.join(directory, _temp_name(name, secrets.token_hex(4)))
        try:
            fd = os.open(tmp, flags, mode)
        except FileExistsError:
            continue
        if _claim(fd, tmp):
            return fd, tmp
        # Another write's cleanup took it for abandoned between our open and our lock;
        # it removes it (or has): start again with another name.
        os.close(fd)
    raise FileExistsError(f"could not create a temporary file in {directory}")


def _temp_name(name: str, token: str) -> str:
    return f".{name}.{token}.tmp"


def _claim(fd: int, tmp: str) -> bool:
    """Take the writer's lock on a new temp file; False if a cleanup got to it first."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # a cleanup holds it, and will remove it
    except OSError:
        return True  # no locks on this filesystem: cleanups can't lock it either
    try:
        # A cleanup may have locked, removed and released it before our lock: ours only
        # if the name still leads to this very file.
        named, held = os.lstat(tmp), os.fstat(fd)
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _remove_abandoned_temps(directory: Path, name: str, *, keep: str) -> None:
    """Remove the temp files of earlier writes to `name` whose writer is gone (see the
    module docstring). Never fails the write: anything unexpected leaves the file be."""
    if fcntl is None:
        return
    pattern = re.compile(re.escape(_temp_name(name, "@")).replace("@", "[0-9a-f]{8}"))
    try:
        with os.scandir(directory) as entries:
            stale = [entry.name for entry in entries if entry.name != keep and pattern.fullmatch(entry.name)]
    except OSError:
        return
    for entry in stale:
        _remove_if_abandoned(os.path.join(directory, entry))


def _remove_if_abandoned(path: str) -> None:
    """Remove `path` if it is a regular file of ours whose writer's lock is free."""
    assert fcntl is not None
    try:
        seen = os.lstat(path)
        if not stat.S_ISREG(seen.st_mode) or (hasattr(os, "getuid") and seen.st_uid != os.getuid()):
            return
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        held = os.fstat(fd)
        if (held.st_dev, held.st_ino) != (seen.st_dev, seen.st_ino):
            return  # replaced between the look and the open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # its writer is alive (or the filesystem has no locks): leave it
        # Holding its lock, and it is still the file the name leads to: abandoned.
        now = os.lstat(path)
        if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)  # and with it the lock


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
