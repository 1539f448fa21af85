"""A checkpoint is a file on disk, not a trusted source (issue #12, defects 1 and 6).

Records read back are checked field by field: a bad one is dropped with one warning and
its page done again; nothing foreign reaches the output. Symbolic links in place of the
checkpoint are refused, never followed. Text the model or a server hands back with a
lone surrogate is stored, and written, as U+FFFD.
"""

from __future__ import annotations

import io
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from qwenocr.scan.checkpoint import Checkpoint, default_root, run_key
from qwenocr.scan.output import DocumentInfo, make_writer
from qwenocr.scan.results import PageResult, checked_record
from tests.support import samples
from tests.support.clirun import run_cli

KEY = run_key("0" * 64, {"model": "tiny"})
LOGGER = "qwenocr.scan.checkpoint"


def _good(page: int, text: str = "") -> dict:
    return PageResult(page, text or f"page {page}", "ok", seconds=0.5, output_tokens=3).to_record()


def _write_lines(tmp_path: Path, *entries: object) -> Path:
    """A checkpoint file holding `entries` (JSON-encoded unless bytes), as a tamperer would write it."""
    directory = tmp_path / KEY
    directory.mkdir(mode=0o700)
    pages = directory / "pages.jsonl"
    with open(pages, "wb") as f:
        for entry in entries:
            f.write((entry if isinstance(entry, bytes) else json.dumps(entry).encode()) + b"\n")
    return pages


def _open(tmp_path: Path) -> Checkpoint:
    return Checkpoint.open(tmp_path, KEY, validate=checked_record)


def _saved(ckpt: Checkpoint, page: int) -> dict:
    """The record of a page that must be in the checkpoint."""
    record = ckpt.get(page)
    assert record is not None, f"page {page} is not in the checkpoint"
    return record


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


# -- records checked field by field ----------------------------------------------------


@pytest.mark.parametrize(
    "missing",
    ["number", "text", "status"],
)
def test_record_lacking_a_field_is_dropped_with_one_warning(tmp_path, caplog, missing):
    bad = {k: v for k, v in _good(2).items() if k != missing}
    _write_lines(tmp_path, {"page": 1, "record": _good(1)}, {"page": 2, "record": bad}, {"page": 3, "record": {}})
    with caplog.at_level(logging.WARNING, logger=LOGGER), _open(tmp_path) as ckpt:
        assert sorted(ckpt.finished()) == [1]  # the good page stays, the others are redone
        assert ckpt.get(2) is None and ckpt.get(3) is None
        assert ckpt.skipped_lines == 2
        PageResult.from_record(_saved(ckpt, 1))  # what is kept is a whole PageResult
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "2 invalid record(s)" in warnings[0] and "page 2" in warnings[0] and "done again" in warnings[0]


@pytest.mark.parametrize(
    "field,value",
    [
        ("number", "2"),
        ("number", True),
        ("number", 7),  # another page's record
        ("number", 0),
        ("text", 5),
        ("text", None),
        ("status", "pwned"),
        ("status", "error"),  # failed pages are never saved: redo it
        ("source", "elsewhere"),
        ("seconds", "soon"),
        ("seconds", -1),
        ("output_tokens", 2.5),
        ("output_tokens", -3),
        ("prompt_tokens", "many"),
        ("attempts", None),
        ("image_width", [1]),
        ("error", {"a": 1}),
        ("resumed", "yes"),
        ("text_layer", "usable"),
        ("text_layer", {"usable": "no", "reason": "x", "chars": 1}),
    ],
)
def test_record_with_a_wrong_type_is_dropped(tmp_path, caplog, field, value):
    bad = {**_good(2), field: value}
    _write_lines(tmp_path, {"page": 2, "record": bad})
    with caplog.at_level(logging.WARNING, logger=LOGGER), _open(tmp_path) as ckpt:
        assert ckpt.finished() == {}
    assert len(_warnings(caplog)) == 1


def test_injected_keys_never_reach_the_record(tmp_path):
    record = {
        **_good(1),
        "pwned": True,
        "file": "/etc/passwd",
        "text_layer": {"usable": True, "reason": "fine", "chars": 9, "script": "x"},
    }
    _write_lines(tmp_path, {"page": 1, "record": record})
    with _open(tmp_path) as ckpt:
        got = ckpt.get(1)
    assert got is not None
    assert set(got) == set(_good(1)) | {"text_layer"}
    assert got["text_layer"] == {"usable": True, "reason": "fine", "chars": 9}
    assert PageResult.from_record(got).extra == {"text_layer": {"usable": True, "reason": "fine", "chars": 9}}


def test_every_record_the_pipeline_writes_passes(tmp_path):
    results = [
        PageResult(1, "text", "ok"),
        PageResult(2, "", "blank", source="none", image_width=10, image_height=20),
        PageResult(3, "loop", "repetition", prompt_tokens=5, image_tokens=64, attempts=2, seconds=3),
        PageResult(
            4, "layer", "ok", source="text-layer", extra={"text_layer": {"usable": True, "reason": "r", "chars": 5}}
        ),
        PageResult(5, "cut", "truncated"),
        PageResult(6, "late", "timeout", error=None),
    ]
    with _open(tmp_path) as ckpt:
        for result in results:
            ckpt.put(result.number, result.to_record())
    with _open(tmp_path) as again:
        assert again.skipped_lines == 0
        assert [PageResult.from_record(_saved(again, r.number)) for r in results] == results


def test_a_bad_record_does_not_hide_an_earlier_good_one(tmp_path, caplog):
    _write_lines(tmp_path, {"page": 1, "record": _good(1, "kept")}, {"page": 1, "record": {"number": 1}})
    with caplog.at_level(logging.WARNING, logger=LOGGER), _open(tmp_path) as ckpt:
        assert _saved(ckpt, 1)["text"] == "kept"
    assert len(_warnings(caplog)) == 1


def test_records_appended_by_another_run_are_checked_too(tmp_path, caplog):
    with _open(tmp_path) as ckpt:
        ckpt.put(1, _good(1))
        with open(ckpt.path, "ab") as f:
            f.write(json.dumps({"page": 2, "record": {"status": "ok"}}).encode() + b"\n")
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert ckpt.get(2) is None
    assert len(_warnings(caplog)) == 1


# -- symbolic links are refused, never followed --------------------------------------


@pytest.mark.skipif(not hasattr(os, "O_NOFOLLOW"), reason="no O_NOFOLLOW here")
def test_symlinked_pages_file_is_refused_not_followed(tmp_path, caplog):
    target = tmp_path / "precious.txt"
    target.write_text("do not touch\n")
    target.chmod(0o644)
    directory = tmp_path / "root" / KEY
    directory.mkdir(parents=True)
    (directory / "pages.jsonl").symlink_to(target)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ckpt = Checkpoint.open(tmp_path / "root", KEY, validate=checked_record)
    assert not ckpt.persistent
    assert ckpt.finished() == {}
    ckpt.put(1, _good(1))  # the run goes on, without a checkpoint on disk
    assert ckpt.get(1) == _good(1)
    ckpt.discard()
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "symbolic link" in warnings[0] and "not using it" in warnings[0]
    assert target.read_text() == "do not touch\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert (directory / "pages.jsonl").is_symlink()  # not ours: left as it was


@pytest.mark.skipif(not hasattr(os, "O_NOFOLLOW"), reason="no O_NOFOLLOW here")
def test_symlinked_checkpoint_directory_is_refused(tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / KEY).symlink_to(elsewhere, target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ckpt = Checkpoint.open(tmp_path / "root", KEY)
    ckpt.put(1, _good(1))
    ckpt.discard()
    assert len(_warnings(caplog)) == 1
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]


def test_fifo_in_place_of_the_pages_file_is_refused(tmp_path, caplog):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    directory = tmp_path / KEY
    directory.mkdir()
    os.mkfifo(directory / "pages.jsonl")
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpoint.open(tmp_path, KEY) as ckpt:
        assert not ckpt.persistent
    assert "not a regular file" in _warnings(caplog)[0]


# -- lone surrogates ----------------------------------------------------------------


def test_lone_surrogate_is_stored_as_the_replacement_character(tmp_path):
    with Checkpoint.open(tmp_path, KEY) as ckpt:
        ckpt.put(1, {"text": "a\ud800b", "nested": ["\udfff"]})  # used to raise UnicodeEncodeError
        assert ckpt.get(1) == {"text": "a\ufffdb", "nested": ["\ufffd"]}
    (tmp_path / KEY / "pages.jsonl").read_bytes().decode("utf-8")  # valid UTF-8 on disk
    with Checkpoint.open(tmp_path, KEY) as again:
        assert _saved(again, 1)["text"] == "a\ufffdb"


def test_page_text_with_a_lone_surrogate_reaches_every_writer_as_utf8(tmp_path):
    result = PageResult(1, "caf\ud800 \U0001f600", "ok", error="server said \udc80")
    assert result.text == "caf\ufffd \U0001f600" and result.error == "server said \ufffd"
    with _open(tmp_path) as ckpt:
        ckpt.put(1, result.to_record())
        assert PageResult.from_record(_saved(ckpt, 1)).text == result.text
    info = DocumentInfo(source="doc.pdf", sha256="0" * 64, page_count=1, pages_selected=[1])
    for fmt in ("markdown", "json", "jsonl"):
        stream = io.StringIO()
        writer = make_writer(fmt, stream)
        writer.begin(info)
        writer.page(result)
        writer.end(info, [result])
        stream.getvalue().encode("utf-8")


# -- end to end: a damaged checkpoint costs one redone page, not the output ---------------


@pytest.mark.engine
def test_cli_redoes_a_page_whose_checkpoint_record_is_damaged(tiny_models, tmp_path):
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=2, size=(600, 800))
    args = ["scan", pdf, "-f", "json", "--max-tokens", "24", "--max-image-tokens", "128"]
    args += ["--model", tiny_models.dense_gguf, "--mmproj", tiny_models.dense_mmproj]
    first = run_cli(*args, timeout=300)
    assert first.returncode == 0, first.stderr.decode()
    document = json.loads(first.stdout)
    # The checkpoint an interrupted run would have left: page 1 done (with a foreign key
    # slipped in), page 2's record valid JSON but lacking its fields.
    page1 = {**document["pages"][0], "text": "FROM THE CHECKPOINT", "resumed": False, "pwned": True}
    directory = default_root() / run_key(document["sha256"], document["settings"])
    directory.mkdir(parents=True)
    lines = [{"page": 1, "record": page1}, {"page": 2, "record": {"number": 2}}]
    (directory / "pages.jsonl").write_bytes(b"".join(json.dumps(line).encode() + b"\n" for line in lines))

    again = run_cli(*args, timeout=300)
    stderr = again.stderr.decode()
    assert again.returncode == 0, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert "warning" in stderr and "page 2" in stderr and "invalid record" in stderr
    pages = json.loads(again.stdout)["pages"]
    assert [p["number"] for p in pages] == [1, 2]
    assert pages[0]["text"] == "FROM THE CHECKPOINT" and pages[0]["resumed"] is True
    assert "pwned" not in pages[0]
    assert pages[1]["resumed"] is False and pages[1]["status"] in {"ok", "repetition", "truncated"}


def test_what_a_run_puts_is_what_a_later_run_reads(tmp_path):
    with _open(tmp_path) as ckpt:
        ckpt.put(1, {**_good(1), "pwned": 1})
        ckpt.put(2, {"number": 2})  # never written by the pipeline; not trusted either
        assert ckpt.get(1) == _good(1) and ckpt.get(2) is None
    with _open(tmp_path) as again:
        assert again.finished() == {1: _good(1)}
