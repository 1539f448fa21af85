"""Page-level checkpoints: an interrupted run loses no finished page.

A thousand-page archive OCRed overnight must survive Ctrl-C, SIGTERM, a crash, SIGKILL
or a power cut. Each finished page is appended as one JSON line to
`<root>/<key>/pages.jsonl` and fsynced before `put()` returns, so a page is either
durable or will be redone; at most the page in flight is lost. Running the same command
again opens the same checkpoint (the key is a hash of the input's content and of the
settings that change the output) and skips every page already in it.

Why an append-only JSON Lines file: one `write()` plus one `fsync()` per page, no
rewriting of earlier pages, and it is readable with `jq`. A process killed in the middle
of a write leaves at most a torn last line; readers ignore it and the next writer cuts
it off before appending. Writers hold an exclusive `flock` for the whole write, so a
reader (or a second run on the same input) never mistakes a line being written for a
torn one, and two runs appending at once never interleave. The last record for a page
wins.

The key covers what changes a page's text: model id, quantisation, prompt, max tokens,
image token budget, DPI and the like. It must not include the output format or paths:
the same pages serve Markdown, JSON and JSONL. `run_key` hashes canonical JSON, so the
order of the settings does not matter, nor does 0 versus 0.0.

Documents are often private: directories are created 0o700 and the file 0o600.
The checkpoint's directory and `pages.jsonl` are opened without following symbolic
links (`O_NOFOLLOW`): a link there is refused with a warning and the run goes on without
a checkpoint, rather than writing to, or chmod-ing, whatever the link points at.

A checkpoint is a file anyone with the user's rights can edit. With `validate` (the
scan passes `results.checked_record`) each record is checked when read: a bad one is
dropped with one warning and its page is simply done again, never trusted into the
output. Text is stored as UTF-8; a lone surrogate (which UTF-8 can't hold) is saved as
U+FFFD.

A checkpoint only saves work; the output is what matters. When the disk under it fails
(full, over quota, read-only, an I/O error), creating it or writing a page, the run says
so once and goes on with the pages kept in memory: it finishes, it just can't be resumed.
Any other error still stops the run.

The default root is `$QWENOCR_CACHE_DIR/checkpoints`, else the platform's user cache
directory plus `checkpoints`: `~/.cache/qwenocr` on Linux (honouring `$XDG_CACHE_HOME`),
`~/Library/Caches/qwenocr` on macOS, `%LOCALAPPDATA%\\qwenocr\\Cache` on Windows.
`prune()` removes checkpoints left untouched for a while.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import enum
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path, PurePath
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Union

from qwenocr.paths import cache_root
from qwenocr.scan.results import clean_text

try:
    import fcntl
except ImportError:  # Windows: one run per checkpoint, no cross-process locking
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "Checkpoint",
    "bytes_digest",
    "default_root",
    "file_digest",
    "prune",
    "run_key",
]

# Part of every key: bump it when the meaning of a saved record changes, so that old
# checkpoints are not reused by a qwenocr that would read them differently.
SCHEMA_VERSION = 1
PAGES_FILE = "pages.jsonl"
_CHUNK = 1 << 20
_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")

PathLike = Union[str, "os.PathLike[str]"]
# Checks one record read back, for its page: returns the record to use, or raises
# ValueError (or TypeError) saying what is wrong with it.
Validator = Callable[[int, Any], dict]

log = logging.getLogger(__name__)

# What a full or failing disk raises: the run goes on without saving pages (see the top).
_DISK_FAILURES = {
    errno.ENOSPC: "the disk is full",
    getattr(errno, "EDQUOT", errno.ENOSPC): "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "the disk reported an I/O error",
}


# -- digests and keys ----------------------------------------------------------------


def file_digest(path: PathLike) -> str:
    """SHA-256 of a file's content (hex), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_digest(data: Union[bytes, bytearray, memoryview]) -> str:
    """SHA-256 of in-memory content (hex), e.g. a document read from stdin."""
    return hashlib.sha256(data).hexdigest()


def run_key(input_digest: str, settings: Mapping[str, Any]) -> str:
    """A stable 32-hex-digit key for (input content, output-changing settings).

    `settings` may hold strings, numbers, booleans, None, lists/tuples, dicts with string
    keys, paths, enums and dataclasses; anything else is a TypeError, because a `repr`
    with a memory address in it would make the key change on every run.
    """
    payload = {
        "schema": SCHEMA_VERSION,
        "input": str(input_digest),
        "settings": _canonical(dict(settings)),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _canonical(value: Any) -> Any:
    """JSON-ready value with one spelling per meaning (1.0 is 1, a tuple is a list)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, enum.Enum):
        return _canonical(value.value)
    if isinstance(value, PurePath):
        return value.as_posix()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _canonical(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"run_key settings need string keys, not {k!r}")
            out[k] = _canonical(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_canonical(v) for v in value)
    raise TypeError(f"run_key can't hash a {type(value).__name__} setting stably: {value!r}")


# -- where checkpoints live ----------------------------------------------------------


def default_root() -> Path:
    """`$QWENOCR_CACHE_DIR/checkpoints`, else `<user cache dir>/checkpoints`."""
    return cache_root() / "checkpoints"


def _make_private_dirs(path: Path) -> None:
    """Create `path` and any missing parents as 0o700; existing ones are left alone."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another run made it meanwhile
            os.mkdir(directory, 0o700)


# -- the checkpoint ------------------------------------------------------------------


class Checkpoint:
    """The finished pages of one (input, settings) run. Open with `Checkpoint.open`."""

    def __init__(self, directory: Path, key: str, fd: int, validate: Optional[Validator] = None) -> None:
        self.directory = directory
        self.key = key
        self.path = directory / PAGES_FILE
        self.skipped_lines = 0  # complete lines that were not valid records (corruption)
        # False when the checkpoint on disk was refused (a symbolic link): the pages then
        # go to an anonymous temporary file, and nothing on disk is touched or deleted.
        self.persistent = True
        # False once a write failed for want of disk (see _DISK_FAILURES): pages are then
        # kept in memory only, and the file is left as it was before that write.
        self.writable = True
        self._validate = validate
        self._fd: Optional[int] = fd
        self._offset = 0  # bytes of the file already parsed
        self._pages: Dict[int, dict] = {}
        self._thread_lock = threading.Lock()

    @classmethod
    def open(cls, root_dir: Optional[PathLike], key: str, validate: Optional[Validator] = None) -> "Checkpoint":
        """Open (creating if needed) the checkpoint `key` under `root_dir`.

        `root_dir=None` means `default_root()`. Pages already saved are loaded; a torn
        last line left by a killed run is cut off. `validate(page, record)` checks each
        record read back (see `Validator`); without it any JSON object is a record.
        """
        if not isinstance(key, str) or not _KEY_PATTERN.fullmatch(key):
            raise ValueError(f"not a checkpoint key: {key!r}")
        root = Path(root_dir) if root_dir is not None else default_root()
        directory = root / key
        try:
            _make_private_dirs(directory)
            fd = _open_pages(directory)
        except (_Refused, OSError) as refused:
            if isinstance(refused, OSError) and refused.errno not in _DISK_FAILURES:
                raise
            log.warning(f"checkpoint {directory}: {_why(refused)}; not using it, so this run can't be resumed")
            if isinstance(refused, _Refused):
                checkpoint = cls(directory, key, _anonymous_file(), validate)
            else:  # the disk failed: keep the pages in memory, touch no disk at all
                checkpoint = cls(directory, key, _scratch_file(), validate)
                checkpoint.writable = False
            checkpoint.persistent = False
            return checkpoint
        try:
            if hasattr(os, "fchmod"):
                with contextlib.suppress(OSError):  # not ours to change: keep going
                    os.fchmod(fd, 0o600)
            checkpoint = cls(directory, key, fd, validate)
            with checkpoint._locked(exclusive=True):
                checkpoint._refresh(repair=True)
        except BaseException:
            os.close(fd)
            raise
        return checkpoint

    # -- reading ---------------------------------------------------------------------

    def get(self, page_number: int) -> Optional[dict]:
        """The saved record of a finished page, or None if it still has to be done."""
        with self._locked(exclusive=False):
            self._refresh(repair=False)
            record = self._pages.get(page_number)
        return copy.deepcopy(record) if record is not None else None

    def finished(self) -> Dict[int, dict]:
        """All finished pages, by page number."""
        with self._locked(exclusive=False):
            self._refresh(repair=False)
            return copy.deepcopy(self._pages)

    def __contains__(self, page_number: object) -> bool:
        return self.get(page_number) is not None if isinstance(page_number, int) else False

    # -- writing ---------------------------------------------------------------------

    def put(self, page_number: int, record: Mapping[str, Any]) -> None:
        """Save a finished page; durable (fsynced) when this returns."""
        if not isinstance(page_number, int) or isinstance(page_number, bool):
            raise TypeError(f"page numbers are ints, not {page_number!r}")
        line = json.dumps({"page": page_number, "record": dict(record)}, ensure_ascii=False, separators=(",", ":"))
        # A lone surrogate (from a server's "\\ud800") can't be encoded as UTF-8: stored
        # as U+FFFD, which is what every reader, and the output, can take.
        line = clean_text(line)
        data = (line + "\n").encode("utf-8")
        stored = json.loads(line)["record"]  # what a later reader will see, not an alias
        with self._locked(exclusive=True):
            self._refresh(repair=self.writable)
            if self.writable:
                try:
                    _write_all(self._require_fd(), data)
                    os.fsync(self._require_fd())
                    self._offset += len(data)
                except OSError as error:
                    self._stop_writing(error)
            # Kept as a later reader will see it: checked, or (when invalid) left out.
            try:
                self._pages[page_number] = self._validate(page_number, stored) if self._validate else stored
            except (ValueError, TypeError):
                self._pages.pop(page_number, None)

    def clear(self) -> None:
        """Forget every page (`--no-resume`)."""
        with self._locked(exclusive=True):
            fd = self._require_fd()
            self._offset = 0
            try:
                os.ftruncate(fd, 0)
                os.fsync(fd)
            except OSError as error:
                self._stop_writing(error)
                # What could not be cleared must not be read back as finished pages.
                self._offset = os.fstat(fd).st_size
            self._pages = {}
            self.skipped_lines = 0

    def close(self) -> None:
        """Release the file. Idempotent; the pages stay on disk."""
        with self._thread_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def discard(self) -> None:
        """Close and delete this checkpoint (after a run completed, if wanted)."""
        self.close()
        if self.persistent:  # a refused one was never ours to delete
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.directory)!r}, pages={len(self._pages)})"

    # -- internals -------------------------------------------------------------------

    def _stop_writing(self, error: OSError) -> None:
        """After a failed write: re-raise unless the disk failed; else warn once, write no more.

        The torn bytes of the failed line are cut off where the disk lets us (a reader
        would skip them anyway), so the pages saved before stay resumable.
        """
        if error.errno not in _DISK_FAILURES:
            raise error
        self.writable = False
        with contextlib.suppress(OSError):
            os.ftruncate(self._require_fd(), self._offset)
        log.warning(
            f"checkpoint in {self.directory}: {_DISK_FAILURES[error.errno]}; continuing without saving "
            "pages, so the rest of this run can't be resumed"
        )

    def _require_fd(self) -> int:
        if self._fd is None:
            raise ValueError("checkpoint is closed")
        return self._fd

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        """This thread alone, and (with fcntl) this process alone or among readers."""
        with self._thread_lock:
            fd = self._require_fd()
            if fcntl is None:
                yield
                return
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _refresh(self, repair: bool) -> None:
        """Parse what other writers appended since the last look; lock held.

        A tail without a newline can only be a torn write (writers hold the lock for a
        whole line): skipped, and with `repair` (exclusive lock) cut off the file.
        """
        fd = self._require_fd()
        size = os.fstat(fd).st_size
        if size < self._offset:  # another process cleared it
            self._offset, self._pages, self.skipped_lines = 0, {}, 0
        if size == self._offset:
            return
        data = _read_from(fd, self._offset, size - self._offset)
        end = data.rfind(b"\n") + 1
        dropped: List[str] = []
        for raw in data[:end].splitlines():
            problem = self._load_line(raw)
            if problem is not None:
                dropped.append(problem)
        self._offset += end
        if dropped:
            # One warning for the lot: a damaged file may hold thousands of bad lines.
            shown = "; ".join(dropped[:3]) + (f"; and {len(dropped) - 3} more" if len(dropped) > 3 else "")
            log.warning(
                f"checkpoint {self.path}: ignored {len(dropped)} invalid record(s) ({shown}); "
                "their pages will be done again"
            )
        if end < len(data) and repair:
            os.ftruncate(fd, self._offset)
            os.fsync(fd)

    def _load_line(self, raw: bytes) -> Optional[str]:
        """Take one complete line; what is wrong with it, if it is not a record."""
        if not raw.strip():
            return None
        try:
            entry = json.loads(raw)
            page, record = entry["page"], entry["record"]
            if not isinstance(page, int) or isinstance(page, bool) or not isinstance(record, dict):
                raise ValueError("not a page record")
        except (ValueError, KeyError, TypeError):
            self.skipped_lines += 1
            return "a line that is not a page record"
        if self._validate is not None:
            try:
                record = self._validate(page, record)
            except (ValueError, TypeError) as error:
                # Dropped, not just skipped: an earlier good record for the page still counts.
                self.skipped_lines += 1
                return f"page {page}: {error}"
        self._pages[page] = record
        return None


class _Refused(Exception):
    """The checkpoint on disk is not ours to use (a symbolic link, not a regular file)."""


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _open_pages(directory: Path) -> int:
    """`directory/pages.jsonl` for reading and appending, created 0o600 if missing.

    Neither the directory nor the file may be a symbolic link (raises _Refused): the
    directory is opened with O_NOFOLLOW and the file relative to it, so a link swapped in
    between the two can't redirect the writes either. Where the platform lacks
    O_NOFOLLOW or dir_fd (Windows), a check before opening is the best there is.
    """
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | _CLOEXEC | getattr(os, "O_BINARY", 0) | _NOFOLLOW
    # O_NONBLOCK: a FIFO put there must not hang the open (it is refused just after).
    flags |= getattr(os, "O_NONBLOCK", 0)
    if not (_NOFOLLOW and os.open in os.supports_dir_fd):
        if directory.is_symlink() or (directory / PAGES_FILE).is_symlink():
            raise _Refused("it is a symbolic link")
        created = not (directory / PAGES_FILE).exists()
        fd = os.open(directory / PAGES_FILE, flags, 0o600)
        _check_regular(fd)
        if created:
            _fsync_directory(directory)
        return fd
    try:
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _Refused("it is a symbolic link or not a directory") from None
        raise
    try:
        try:
            os.stat(PAGES_FILE, dir_fd=dir_fd, follow_symlinks=False)
            created = False
        except FileNotFoundError:
            created = True
        try:
            fd = os.open(PAGES_FILE, flags, 0o600, dir_fd=dir_fd)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise _Refused(f"{PAGES_FILE} is a symbolic link") from None
            raise
        _check_regular(fd)
        if created:
            with contextlib.suppress(OSError):
                os.fsync(dir_fd)
        return fd
    finally:
        os.close(dir_fd)


def _why(problem: Exception) -> str:
    return _DISK_FAILURES[problem.errno] if isinstance(problem, OSError) and problem.errno else str(problem)


def _check_regular(fd: int) -> None:
    """Refuse (closing `fd`) anything but a regular file: a FIFO or device is no checkpoint."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _Refused(f"{PAGES_FILE} is not a regular file")


def _anonymous_file() -> int:
    """A private, already-deleted file: the pages of a run whose checkpoint was refused."""
    with tempfile.TemporaryFile() as handle:
        return os.dup(handle.fileno())


def _scratch_file() -> int:
    """A file descriptor to lock for a checkpoint that writes nothing: `_anonymous_file`,
    or the null device when the temporary directory fails too (one full disk often holds
    both)."""
    try:
        return _anonymous_file()
    except OSError:
        return os.open(os.devnull, os.O_RDWR | _CLOEXEC)


def _read_from(fd: int, offset: int, length: int) -> bytes:
    """Read `length` bytes at `offset` (O_APPEND writes ignore the file position)."""
    os.lseek(fd, offset, os.SEEK_SET)
    chunks = []
    while length > 0:
        chunk = os.read(fd, length)
        if not chunk:
            break
        chunks.append(chunk)
        length -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- housekeeping --------------------------------------------------------------------


def prune(older_than_days: float, root_dir: Optional[PathLike] = None) -> int:
    """Delete checkpoints not written for `older_than_days` days; returns how many.

    Only directories that look like checkpoints (a key name holding `pages.jsonl`) are
    touched, so a mistaken root can't cost unrelated files.
    """
    if older_than_days < 0:
        raise ValueError("older_than_days must not be negative")
    root = Path(root_dir) if root_dir is not None else default_root()
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_days * 86400
    removed = 0
    for entry in root.iterdir():
        pages = entry / PAGES_FILE
        if entry.is_symlink() or not entry.is_dir() or not _KEY_PATTERN.fullmatch(entry.name):
            continue
        try:
            newest = max(entry.stat().st_mtime, pages.stat().st_mtime)
        except FileNotFoundError:
            continue
        if newest < cutoff:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed
