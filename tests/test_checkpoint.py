"""Page checkpoints: durable, private, keyed right, and tolerant of a killed writer."""

from __future__ import annotations

import enum
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from qwenocr import paths
from qwenocr.scan import checkpoint as cp
from qwenocr.scan.checkpoint import Checkpoint, bytes_digest, file_digest, prune, run_key

SETTINGS = {
    "model": "Qwen/Qwen3.5-4B",
    "quant": "4bit",
    "prompt": "Transcribe this page to Markdown.",
    "max_tokens": 4096,
    "image_tokens": 1280,
    "dpi": 200,
    "temperature": 0.0,
}
KEY = run_key("0" * 64, SETTINGS)
GOLDEN_KEY = "07d0043ee9ba11c3f44379340af84e4d"


def _record(page: int) -> dict:
    return {"page": page, "status": "ok", "text": f"# Page {page}\n\nÉté — {page * 7} €\n", "seconds": 1.5}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- storing pages -------------------------------------------------------------------


def test_put_get_finished_and_reopen(tmp_path: Path) -> None:
    with Checkpoint.open(tmp_path, KEY) as ckpt:
        assert ckpt.finished() == {}
        assert ckpt.get(1) is None
        ckpt.put(1, _record(1))
        ckpt.put(3, _record(3))
        assert ckpt.get(1) == _record(1)
        assert 3 in ckpt and 2 not in ckpt
    with Checkpoint.open(tmp_path, KEY) as again:
        assert again.finished() == {1: _record(1), 3: _record(3)}
        assert again.skipped_lines == 0


def test_one_json_line_per_page(tmp_path: Path) -> None:
    with Checkpoint.open(tmp_path, KEY) as ckpt:
        ckpt.put(1, _record(1))
        ckpt.put(2, _record(2))
    lines = (tmp_path / KEY / "pages.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"page": 1, "record": _record(1)},
        {"page": 2, "record": _record(2)},
    ]


def test_records_are_copies(tmp_path: Path) -> None:
    record = _record(1)
    with Checkpoint.open(tmp_path, KEY) as ckpt:
        ckpt.put(1, record)
        record["text"] = "changed after put"
        got = ckpt.get(1)
        got["text"] = "changed after get"
        assert ckpt.get(1) == _record(1)
        # What is returned is what a later run reads back: JSON types.
        ckpt.put(2, {"boxes": (1, 2), "by_id": {"a": 1}})
        assert ckpt.get(2) == {"boxes": [1, 2], "by_id": {"a": 1}}


def test_last_record_for_a_page_wins(tmp_path: Path) -> None:
    with Checkpoint.open(tmp_path, KEY) as ckpt:
        ckpt.put(5, {"status": "repetition"})
        ckpt.put(5, {"status": "ok"})
    with Checkpoint.open(tmp_path, KEY) as again:
        assert again.finished() == {5: {"status": "ok"}}


def test_put_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync
    with Checkpoint.open(tmp_path, KEY) as ckpt:
        monkeypatch.setattr(cp.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
        ckpt.put(1, _record(1))
    assert synced, "put() must fsync before returning"


def test_unserialisable_record_writes_nothing(tmp_path: Path) -> None:
    with Checkpoint.open(tmp_path, KEY) as ckpt:
        ckpt.put(1, _record(1))
        with pytest.raises(TypeError):
            ckpt.put(2, {"image": object()})
        with pytest.raises(TypeError):
            ckpt.put("2", {})  # type: ignore[arg-type]
    with Checkpoint.open(tmp_path, KEY) as again:
        assert list(again.finished()) == [1]


def test_clear_and_discard(tmp_path: Path) -> None:
    ckpt = Checkpoint.open(tmp_path, KEY)
    ckpt.put(1, _record(1))
    ckpt.clear()
    assert ckpt.finished() == {}
    ckpt.put(2, _record(2))
    ckpt.close()
    with Checkpoint.open(tmp_path, KEY) as again:
        assert again.finished() == {2: _record(2)}
        again.discard()
    assert not (tmp_path / KEY).exists()


def test_close_is_idempotent_and_final(tmp_path: Path) -> None:
    ckpt = Checkpoint.open(tmp_path, KEY)
    ckpt.close()
    ckpt.close()
    with pytest.raises(ValueError):
        ckpt.put(1, {})
    with pytest.raises(ValueError):
        ckpt.get(1)


def test_bad_keys_are_refused(tmp_path: Path) -> None:
    for key in ("", "..", "../escape", "a/b", ".hidden", "x" * 200, "abc\n"):
        with pytest.raises(ValueError):
            Checkpoint.open(tmp_path, key)
    assert list(tmp_path.iterdir()) == []


# -- killed writers ------------------------------------------------------------------


def test_torn_last_line_is_ignored_and_cut_off(tmp_path: Path) -> None:
    with Checkpoint.open(tmp_path, KEY) as ckpt:
        ckpt.put(1, _record(1))
        ckpt.put(2, _record(2))
    pages = tmp_path / KEY / "pages.jsonl"
    whole = json.dumps({"page": 3, "record": _record(3)}).encode()
    with open(pages, "ab") as f:
        f.write(whole[: len(whole) // 2])  # SIGKILL in the middle of write()
    with Checkpoint.open(tmp_path, KEY) as again:
        assert sorted(again.finished()) == [1, 2]
        assert again.skipped_lines == 0
        again.put(3, _record(3))
    # The fragment is gone: every line of the file is a whole record.
    lines = pages.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    with Checkpoint.open(tmp_path, KEY) as final:
        assert sorted(final.finished()) == [1, 2, 3]


def test_last_line_without_its_newline_counts_as_torn(tmp_path: Path) -> None:
    # Even a line that is complete JSON but lacks its newline was never acknowledged.
    with Checkpoint.open(tmp_path, KEY) as ckpt:
        ckpt.put(1, _record(1))
    with open(tmp_path / KEY / "pages.jsonl", "ab") as f:
        f.write(json.dumps({"page": 2, "record": {}}).encode())
    with Checkpoint.open(tmp_path, KEY) as again:
        assert sorted(again.finished()) == [1]


def test_corrupt_complete_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    pages = tmp_path / KEY / "pages.jsonl"
    with Checkpoint.open(tmp_path, KEY) as ckpt:
        ckpt.put(1, _record(1))
    with open(pages, "ab") as f:
        f.write(b'{"page": 2, "rec\x00\xff garbage\n[1, 2]\n{"page": true, "record": {}}\n\n')
    with Checkpoint.open(tmp_path, KEY) as again:
        again.put(4, _record(4))
        assert sorted(again.finished()) == [1, 4]
        assert again.skipped_lines == 3


def test_sigkill_mid_run_loses_at_most_the_page_in_flight(tmp_path: Path) -> None:
    script = (
        "import os, signal, sys\n"
        "from qwenocr.scan.checkpoint import Checkpoint\n"
        "ckpt = Checkpoint.open(sys.argv[1], sys.argv[2])\n"
        "for page in (1, 2, 3):\n"
        "    ckpt.put(page, {'text': 'page %d' % page})\n"
        'os.write(ckpt._fd, b\'{"page": 4, "record": {"text": "pa\')\n'
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path), KEY], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with Checkpoint.open(tmp_path, KEY) as ckpt:
        assert ckpt.finished() == {p: {"text": f"page {p}"} for p in (1, 2, 3)}


# -- several writers -----------------------------------------------------------------


def test_concurrent_reopen_in_one_process(tmp_path: Path) -> None:
    first = Checkpoint.open(tmp_path, KEY)
    second = Checkpoint.open(tmp_path, KEY)
    first.put(1, _record(1))
    assert second.get(1) == _record(1)  # sees the other handle's page
    second.put(2, _record(2))
    first.put(3, _record(3))
    assert first.finished() == second.finished() == {p: _record(p) for p in (1, 2, 3)}
    first.close()
    second.close()


_WRITER = """
import sys
from qwenocr.scan.checkpoint import Checkpoint
root, key, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
ckpt = Checkpoint.open(root, key)
for i in range(40):
    page = worker * 1000 + i
    ckpt.put(page, {"text": ("w%d " % worker) * 2000, "page": page})
    ckpt.get(page - 1)
ckpt.close()
"""


def test_concurrent_processes_never_interleave_lines(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), KEY, str(w)]) for w in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    with Checkpoint.open(tmp_path, KEY) as ckpt:
        pages = ckpt.finished()
        assert ckpt.skipped_lines == 0
    assert len(pages) == 160
    assert all(rec["text"] == f"w{page // 1000} " * 2000 for page, rec in pages.items())


def test_threads_share_a_checkpoint(tmp_path: Path) -> None:
    with Checkpoint.open(tmp_path, KEY) as ckpt:

        def work(start: int) -> None:
            for page in range(start, start + 25):
                ckpt.put(page, _record(page))
                ckpt.finished()

        threads = [threading.Thread(target=work, args=(s,)) for s in (0, 100, 200, 300)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(ckpt.finished()) == 100
    with Checkpoint.open(tmp_path, KEY) as again:
        assert len(again.finished()) == 100


# -- privacy -------------------------------------------------------------------------


def test_files_are_private(tmp_path: Path) -> None:
    root = tmp_path / "cache" / "checkpoints"
    old = os.umask(0o022)
    try:
        with Checkpoint.open(root, KEY) as ckpt:
            ckpt.put(1, _record(1))
    finally:
        os.umask(old)
    assert _mode(root / KEY / "pages.jsonl") == 0o600
    assert _mode(root / KEY) == 0o700
    assert _mode(root) == 0o700
    assert _mode(tmp_path / "cache") == 0o700


def test_existing_root_is_not_chmodded(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    with Checkpoint.open(tmp_path, KEY):
        pass
    assert _mode(tmp_path) == 0o755
    assert _mode(tmp_path / KEY) == 0o700


# -- keys and digests ----------------------------------------------------------------


def test_key_is_stable() -> None:
    reordered = dict(reversed(list(SETTINGS.items())))
    assert run_key("0" * 64, reordered) == KEY
    assert run_key("0" * 64, {**SETTINGS, "temperature": 0}) == KEY  # 0 is 0.0
    assert len(KEY) == 32 and int(KEY, 16) >= 0
    # Pinned: a qwenocr upgrade that changes keys by accident would silently redo every
    # interrupted run. Change this value only together with SCHEMA_VERSION.
    assert KEY == run_key("0" * 64, json.loads(json.dumps(SETTINGS)))
    assert KEY == GOLDEN_KEY


def test_key_changes_with_every_setting_and_the_input() -> None:
    changed = {
        "model": "Qwen/Qwen3.5-9B",
        "quant": "8bit",
        "prompt": "Transcribe this page to Markdown. ",
        "max_tokens": 8192,
        "image_tokens": 1024,
        "dpi": 300,
        "temperature": 0.2,
    }
    keys = {KEY}
    for name, value in changed.items():
        keys.add(run_key("0" * 64, {**SETTINGS, name: value}))
    keys.add(run_key("1" + "0" * 63, SETTINGS))
    keys.add(run_key("0" * 64, {**SETTINGS, "pages_hint": None}))
    assert len(keys) == len(changed) + 3


def test_key_accepts_structured_settings() -> None:
    class Engine(enum.Enum):
        MLX = "mlx"

    @dataclass(frozen=True)
    class Sampling:
        temperature: float = 0.0
        top_p: float = 1.0

    a = run_key(
        "d",
        {
            "engine": Engine.MLX,
            "model_path": Path("/models/q"),
            "sampling": Sampling(),
            "langs": ("en", "fr"),
            "tags": {"b", "a"},
        },
    )
    b = run_key(
        "d",
        {
            "engine": "mlx",
            "model_path": "/models/q",
            "sampling": {"temperature": 0, "top_p": 1},
            "langs": ["en", "fr"],
            "tags": ["a", "b"],
        },
    )
    assert a == b
    with pytest.raises(TypeError):
        run_key("d", {"callback": object()})
    with pytest.raises(TypeError):
        run_key("d", {"by_page": {1: "x"}})
    with pytest.raises(ValueError):
        run_key("d", {"t": float("nan")})


def test_file_digest_streams_and_matches_bytes_digest(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # more than one chunk
    path = tmp_path / "scan.pdf"
    path.write_bytes(data)
    assert file_digest(path) == hashlib.sha256(data).hexdigest() == bytes_digest(data)
    assert file_digest(str(path)) == bytes_digest(memoryview(data))
    assert bytes_digest(b"") == hashlib.sha256(b"").hexdigest()


# -- where checkpoints live ----------------------------------------------------------


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QWENOCR_CACHE_DIR", str(tmp_path / "c"))
    assert cp.default_root() == tmp_path / "c" / "checkpoints"
    monkeypatch.delenv("QWENOCR_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(paths.sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cp.default_root() == tmp_path / "xdg" / "qwenocr" / "checkpoints"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert cp.default_root() == tmp_path / ".cache" / "qwenocr" / "checkpoints"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cp.default_root() == tmp_path / ".cache" / "qwenocr" / "checkpoints"
    monkeypatch.setattr(paths.sys, "platform", "darwin")
    assert cp.default_root() == tmp_path / "Library" / "Caches" / "qwenocr" / "checkpoints"


def test_open_with_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QWENOCR_CACHE_DIR", str(tmp_path))
    with Checkpoint.open(None, KEY) as ckpt:
        ckpt.put(1, {})
    assert (tmp_path / "checkpoints" / KEY / "pages.jsonl").is_file()


def test_prune_removes_only_old_checkpoints(tmp_path: Path) -> None:
    old_key, new_key = run_key("old", {}), run_key("new", {})
    for key in (old_key, new_key):
        with Checkpoint.open(tmp_path, key) as ckpt:
            ckpt.put(1, {})
    month_ago = time.time() - 31 * 86400
    for path in (tmp_path / old_key / "pages.jsonl", tmp_path / old_key):
        os.utime(path, (month_ago, month_ago))
    (tmp_path / "notes").mkdir()  # not a checkpoint: never touched
    os.utime(tmp_path / "notes", (month_ago, month_ago))
    (tmp_path / "stray.txt").write_text("x")

    assert prune(30, tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([new_key, "notes", "stray.txt"])
    assert prune(30, tmp_path / "missing") == 0
    assert prune(0, tmp_path) == 1  # everything written before now
    with pytest.raises(ValueError):
        prune(-1, tmp_path)
