"""atomic_write: a reader sees the old file or the whole new one, never a mix."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from qwenocr import atomicio
from qwenocr.atomicio import atomic_write, write_bytes, write_text


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_a_new_text_file(tmp_path: Path) -> None:
    target = tmp_path / "page.md"
    with atomic_write(target) as f:
        f.write("# Title\n\nÉté à Paris — 42 €\n")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_text(encoding="utf-8") == "# Title\n\nÉté à Paris — 42 €\n"
    assert _leftovers(tmp_path) == []


def test_writes_bytes(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with atomic_write(target, "wb") as f:
        f.write(b"\x00\x01\xff" * 1000)
    assert target.read_bytes() == b"\x00\x01\xff" * 1000


def test_helpers_and_str_paths(tmp_path: Path) -> None:
    write_text(str(tmp_path / "a.txt"), "hello\n")
    write_bytes(tmp_path / "b.bin", b"\x89PNG")
    assert (tmp_path / "a.txt").read_text() == "hello\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x89PNG"


def test_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "doc.json"
    target.write_text("old")
    with atomic_write(target) as f:
        f.write("new")
    assert target.read_text() == "new"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError("engine died"), KeyboardInterrupt()])
def test_exception_midway_leaves_the_old_file_and_no_temp_file(tmp_path: Path, error: BaseException) -> None:
    target = tmp_path / "doc.md"
    target.write_text("the complete old document\n")
    with pytest.raises(type(error)):
        with atomic_write(target) as f:
            f.write("half of the new docu")
            f.flush()
            assert _leftovers(tmp_path) != []  # the temp file exists while writing
            raise error
    assert target.read_text() == "the complete old document\n"
    assert _leftovers(tmp_path) == []


def test_exception_with_no_old_file_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "new.md"
    with pytest.raises(ValueError):
        with atomic_write(target) as f:
            f.write("partial")
            raise ValueError("bad page")
    assert list(tmp_path.iterdir()) == []


def test_failed_replace_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "doc.md"
    target.write_text("old")

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomicio.os, "replace", refuse)
    with pytest.raises(OSError):
        with atomic_write(target) as f:
            f.write("new")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_new_file_mode_respects_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_text(tmp_path / "a.md", "x")
        with open(tmp_path / "reference", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.md") == 0o640 == _mode(tmp_path / "reference")


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o755])
def test_existing_file_mode_is_preserved(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "private.md"
    target.write_text("old")
    target.chmod(mode)
    old = os.umask(0o077)  # a stricter umask must not change a replaced file's mode
    try:
        write_text(target, "new")
    finally:
        os.umask(old)
    assert _mode(target) == mode
    assert target.read_text() == "new"


def test_temp_file_is_never_more_open_than_the_target(tmp_path: Path) -> None:
    target = tmp_path / "secret.md"
    target.write_text("old")
    target.chmod(0o600)
    with atomic_write(target) as f:
        (tmp,) = _leftovers(tmp_path)
        assert _mode(tmp_path / tmp) == 0o600
        f.write("new")


def test_fsync_before_replace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomicio.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(atomicio.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    write_text(tmp_path / "a.md", "x")
    # The file's data, then the rename, then the directory entry.
    assert calls == ["fsync", "replace", "fsync"]


def test_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("must not change")
    link = tmp_path / "out.md"
    link.symlink_to(elsewhere)
    write_text(link, "new")
    assert not link.is_symlink()
    assert link.read_text() == "new"
    assert elsewhere.read_text() == "must not change"


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        with atomic_write(tmp_path / "a", "a"):
            pass
    with pytest.raises(IsADirectoryError):
        with atomic_write(tmp_path):
            pass
    with pytest.raises(FileNotFoundError):
        write_text(tmp_path / "missing" / "a.md", "x")
    assert list(tmp_path.iterdir()) == []


def test_sigkill_midway_never_damages_the_target(tmp_path: Path) -> None:
    target = tmp_path / "doc.md"
    target.write_text("the complete old document\n")
    script = (
        "import os, signal, sys\n"
        "from qwenocr.atomicio import atomic_write\n"
        "with atomic_write(sys.argv[1]) as f:\n"
        "    f.write('x' * 100000)\n"
        "    f.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_text() == "the complete old document\n"
    # Only a recognisable temp file may remain after SIGKILL.
    assert all(name.startswith(".doc.md.") for name in _leftovers(tmp_path))
