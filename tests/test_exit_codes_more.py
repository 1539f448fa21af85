"""Exit codes at the edges (issue #12, defect 14), through the real CLI as a user meets them.

Each case runs `python -m qwenocr` as a subprocess and checks what docs/exit-codes.md
promises: a non-finite number or a config value of the wrong type is a usage error
(2), config and password files that are pipes, devices, endless or not UTF-8 are usage
errors and never block, a closed stdout is an output error (4) before any work, a reader
that goes away (`| head -c 10`) ends the run quietly with 0, SIGHUP ends it like SIGTERM
(129, the "terminated" line, no temporary file left), and an input's error is said once.

The scans that must run use `--mode text` on a PDF with a text layer (no model) or, for
SIGHUP, the tiny GGUF (marked `engine`), as tests/test_interrupt.py does for SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import broken_inputs, samples
from tests.support.clirun import QWENOCR, run_cli
from tests.test_interrupt import _assert_no_output, _command, _finished_pages, _start_and_stop

# Never reached: every run here either fails before the model or reads the text layer only.
NO_MODEL = ["--model", "/nonexistent/qwenocr-tests/model.gguf"]
TEXT = ["--mode", "text", *NO_MODEL]


def assert_one_error(proc, code: int, *needles: str) -> str:
    """Exit `code`, stdout empty, stderr exactly one `qwenocr: error:` line holding `needles`."""
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, stderr
    assert proc.stdout == b""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("qwenocr: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def assert_usage_error(proc, *needles: str) -> None:
    """Exit 2 from Click's own check of a flag: its usage lines, no traceback, nothing on stdout."""
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, stderr
    assert proc.stdout == b""
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    for needle in needles:
        assert needle in stderr, stderr


@pytest.fixture(scope="module")
def text_pdf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "good.pdf"
    path.write_bytes(broken_inputs.text_pdf(3))
    return path


# -- numbers that are not numbers --------------------------------------------------


@pytest.mark.parametrize("flag", ["--temperature", "--dpi", "--page-timeout", "--render-timeout"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_flag_is_a_usage_error(text_pdf, flag, value):
    assert_usage_error(run_cli("scan", text_pdf, flag, value, *TEXT), flag, "finite")


def test_non_finite_doctor_memory_is_a_usage_error():
    assert_usage_error(run_cli("doctor", "--memory", "nan"), "--memory", "finite")


def test_non_finite_from_the_environment_is_one_line(text_pdf):
    proc = run_cli("scan", text_pdf, *TEXT, env={"QWENOCR_TEMPERATURE": "nan"})
    assert_one_error(proc, 2, "QWENOCR_TEMPERATURE", "finite")


def test_non_finite_from_the_config_file_is_one_line(text_pdf, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[scan]\ndpi = nan\n")
    proc = run_cli("scan", text_pdf, *TEXT, env={"QWENOCR_CONFIG": str(config)})
    assert_one_error(proc, 2, f"{config}:2", "dpi", "finite")


# -- config values of the wrong type -----------------------------------------------


@pytest.mark.parametrize(
    "line,key",
    [("output = 5", "output"), ("max_tokens = 20.5", "max_tokens"), ("max_tokens = true", "max_tokens")],
)
def test_config_value_of_the_wrong_type_names_key_and_file(text_pdf, tmp_path, line, key):
    config = tmp_path / "config.toml"
    config.write_text(f"[scan]\n{line}\n")
    proc = run_cli("scan", text_pdf, *TEXT, env={"QWENOCR_CONFIG": str(config)})
    assert_one_error(proc, 2, f"{config}:2", key)


def test_config_values_of_the_right_type_still_work(text_pdf, tmp_path):
    config = tmp_path / "config.toml"
    out = tmp_path / "out.md"
    config.write_text(f'[scan]\noutput = "{out}"\ndpi = 100\nmax_tokens = 200\ntemperature = 0\n')
    proc = run_cli("scan", text_pdf, *TEXT, env={"QWENOCR_CONFIG": str(config)})
    assert proc.returncode == 0, proc.stderr.decode()
    assert "line 1" in out.read_text()


# -- config and password files: small regular UTF-8 files, never a wait --------------


def _fifo(tmp_path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = tmp_path / "fifo"
    os.mkfifo(path)  # no writer ever comes: opening it for reading would block forever
    return path


def _special(tmp_path: Path, kind: str) -> Path:
    if kind == "fifo":
        return _fifo(tmp_path)
    if kind == "device":
        if not Path("/dev/zero").exists():
            pytest.skip("no /dev/zero")
        return Path("/dev/zero")  # endless
    path = tmp_path / kind
    if kind == "latin1":
        path.write_bytes("pässwörd\n".encode("latin-1"))
    elif kind == "huge":
        path.write_bytes(b"x" * (2 * 1024 * 1024))
    return path


@pytest.mark.parametrize(
    "kind,needle",
    [("fifo", "pipe or a device"), ("device", "pipe or a device"), ("latin1", "UTF-8"), ("huge", "larger than")],
)
def test_bad_config_file_is_one_line_without_blocking(text_pdf, tmp_path, kind, needle):
    path = _special(tmp_path, kind)
    proc = run_cli("scan", text_pdf, *TEXT, env={"QWENOCR_CONFIG": str(path)}, timeout=30)
    assert_one_error(proc, 2, "config file", str(path), needle)


@pytest.mark.parametrize(
    "kind,needle",
    [("fifo", "pipe or a device"), ("device", "pipe or a device"), ("latin1", "UTF-8"), ("huge", "larger than")],
)
def test_bad_password_file_is_one_line_without_blocking(text_pdf, tmp_path, kind, needle):
    path = _special(tmp_path, kind)
    proc = run_cli("scan", text_pdf, "--password-file", path, *TEXT, timeout=30)
    assert_one_error(proc, 2, "--password-file", str(path), needle)


# -- stdout closed, or its reader gone -------------------------------------------------


def _closed_stdout(*args) -> subprocess.CompletedProcess:
    """`qwenocr ARGS >&-`: descriptor 1 closed, as the shell does it."""
    return subprocess.run(
        [*QWENOCR, *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.close(1),
        timeout=120,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX descriptors")
def test_closed_stdout_is_an_output_error_before_any_work(text_pdf):
    proc = _closed_stdout("scan", text_pdf, *TEXT)
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 4, stderr
    assert stderr.splitlines() == [
        "qwenocr: error: stdout is closed, so the document has nowhere to go (give -o FILE, or leave stdout open)"
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX descriptors")
def test_closed_stdout_with_an_output_file_is_fine(text_pdf, tmp_path):
    out = tmp_path / "out.md"
    proc = _closed_stdout("scan", text_pdf, "-o", out, *TEXT)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b""
    assert "line 1" in out.read_text()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
def test_reader_that_goes_away_ends_the_run_quietly_with_0(tmp_path):
    """`qwenocr scan big.pdf | head -c 10`, five times: always 0, nothing on stderr."""
    big = tmp_path / "big.pdf"
    big.write_bytes(broken_inputs.text_pdf(200))  # far more than a pipe's buffer
    for _ in range(5):
        proc = subprocess.Popen([*QWENOCR, "scan", str(big), *TEXT], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        assert len(proc.stdout.read(10)) == 10
        proc.stdout.close()  # as `head -c 10` exits
        stderr = proc.stderr.read()
        assert proc.wait(timeout=120) == 0, stderr.decode()
        assert stderr == b""


# -- one input's error, once -----------------------------------------------------------


def test_each_missing_input_is_reported_once(tmp_path):
    first, second = tmp_path / "first.pdf", tmp_path / "second.pdf"
    proc = run_cli("scan", first, second, *NO_MODEL)
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 3, stderr
    lines = stderr.splitlines()
    assert len(lines) == 2, stderr
    assert sum("first.pdf" in line for line in lines) == 1, stderr
    assert sum("second.pdf" in line for line in lines) == 1, stderr


# -- SIGHUP ---------------------------------------------------------------------------------


@pytest.mark.engine
@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_ends_like_sigterm_and_leaves_no_temp_file(tiny_models, tmp_path):
    pdf = samples.write_pdf(tmp_path / "six.pdf", pages=6, size=(600, 800))
    cache, out = tmp_path / "cache", tmp_path / "out.json"
    code, stderr, done, _ = _start_and_stop(_command(pdf, out, tiny_models.dense_gguf), cache, signal.SIGHUP)
    assert code == 129, stderr
    assert stderr.splitlines() == [
        "qwenocr: error: terminated; finished pages are kept: run the same command again to resume"
    ]
    _assert_no_output(out)  # neither the output nor its temporary file
    assert set(_finished_pages(cache)) >= done
