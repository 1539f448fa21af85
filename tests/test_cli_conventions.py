"""The conventions every command shares, checked on every command as a user meets them.

--quiet/-q, --verbose/-v and --debug, and their QWENOCR_QUIET/VERBOSE/DEBUG variables,
mean the same on doctor, scan, eval and each models command (qwenocr/cli/options.py):
a user error ends in one line and its documented exit code, with the traceback before
it under QWENOCR_DEBUG=1 or --debug; -q and -v together on the command line are refused
(exit 2, one line); one from the environment and the other as a flag: the flag wins.

Real subprocesses of the CLI, offline: errors a user can cause without a model or the
network (a missing input, an unknown variant, a bad --platform, a cache that is a file),
with HF_HUB_OFFLINE=1 and an empty Hugging Face cache in tmp_path.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Dict, List, NamedTuple

import pytest

from qwenocr.errors import ExitCode
from tests.support.clirun import run_cli

TRACEBACK = "Traceback (most recent call last):"
CONTRADICTION = "qwenocr: error: --quiet and --verbose contradict each other (give one of them)"


class Case(NamedTuple):
    """One command: arguments that fail the way a user can, and arguments with something to say under -v."""

    failing: List[str]
    code: int  # the documented exit code of that failure
    message: str  # a piece of its one line
    talking: List[str]  # run under -v they say more on stderr than under -q
    failing_env: Dict[str, str] = {}


COMMANDS: Dict[str, Case] = {
    "doctor": Case(
        ["doctor", "--platform", "amiga"],
        ExitCode.USAGE,
        "unknown platform 'amiga'",
        ["doctor", "--platform", "cpu", "--memory", "32"],
    ),
    "scan": Case(
        ["scan", "missing.pdf"],
        ExitCode.INPUT_ERROR,
        "missing.pdf: no such file",
        ["scan", "blank.png", "--variant", "0.8B"],  # the plan under -v, then: not cached (offline)
    ),
    "eval": Case(
        ["eval", "missing.md", "ref.md"],
        ExitCode.INPUT_ERROR,
        "output file not found: missing.md",
        ["eval", "out.md", "ref.md"],
    ),
    "models list": Case(
        ["models", "list"],
        ExitCode.USAGE,
        "the Hugging Face cache not-a-folder is not a directory",
        ["models", "list"],
        failing_env={"HF_HUB_CACHE": "not-a-folder"},  # a file in `workdir`
    ),
    "models pull": Case(["models", "pull", "7B"], ExitCode.USAGE, "unknown variant '7B'", ["models", "pull", "9B"]),
    "models rm": Case(["models", "rm", "7B"], ExitCode.USAGE, "unknown variant '7B'", ["models", "rm", "9B"]),
    "models path": Case(["models", "path", "7B"], ExitCode.USAGE, "unknown variant '7B'", ["models", "path", "9B"]),
    "models convert": Case(
        ["models", "convert", "7B"],
        ExitCode.USAGE,
        "7B: neither a local folder",
        ["models", "convert", "9B", "--offline"],
    ),
}


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch):
    """A folder with inputs, an empty offline Hugging Face cache, no config file and no QWENOCR_* settings."""
    for name in [name for name in os.environ if name.startswith("QWENOCR_")]:
        monkeypatch.delenv(name)
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # where the config file would be (Linux)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # (macOS)
    monkeypatch.setenv("APPDATA", str(tmp_path / "appdata"))  # (Windows)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out.md").write_text("# Title\n\nkitten\n")
    (tmp_path / "ref.md").write_text("Title\nsitting\n")
    (tmp_path / "not-a-folder").write_text("")
    from PIL import Image

    Image.new("RGB", (64, 64), "white").save(tmp_path / "blank.png")
    return tmp_path


def qwenocr(args: List[str], **env: str) -> subprocess.CompletedProcess:
    """`qwenocr ARGS` in the current folder (`workdir`), text in and out."""
    done = run_cli(*args, env=env, stdin=b"")
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def stderr_lines(done: subprocess.CompletedProcess) -> List[str]:
    # Durations and free memory differ from run to run ("scored in 0.004 s", "5.6 GB of 24.7 GB").
    return [re.sub(r"\d+(\.\d+)?", "N", line) for line in done.stderr.splitlines()]


# --------------------------------------------------------------------------------------
# (a) QWENOCR_DEBUG=1 and --debug: the traceback, then the one line and the exit code


@pytest.mark.parametrize("command", COMMANDS)
def test_an_error_is_one_line_and_its_exit_code(command):
    case = COMMANDS[command]
    done = qwenocr(case.failing, **case.failing_env)
    assert done.returncode == case.code, done.stderr
    assert TRACEBACK not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("qwenocr: error: ") and case.message in lines[0], done.stderr


@pytest.mark.parametrize("how", ["QWENOCR_DEBUG=1", "--debug"])
@pytest.mark.parametrize("command", COMMANDS)
def test_debug_shows_the_traceback_then_the_same_line(command, how):
    case = COMMANDS[command]
    plain = qwenocr(case.failing, **case.failing_env)
    if how == "--debug":
        done = qwenocr(case.failing + ["--debug"], **case.failing_env)
    else:
        done = qwenocr(case.failing, **case.failing_env, QWENOCR_DEBUG="1")
    assert done.returncode == case.code, done.stderr
    assert done.stderr.startswith(TRACEBACK), done.stderr
    assert done.stderr.splitlines()[-1] == plain.stderr.strip()
    assert done.stdout == ""


# --------------------------------------------------------------------------------------
# (b) -q and -v together on the command line: refused


@pytest.mark.parametrize("command", COMMANDS)
def test_quiet_and_verbose_as_flags_are_refused(command):
    case = COMMANDS[command]
    done = qwenocr(case.failing + ["-q", "-v"], **case.failing_env)
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.splitlines() == [CONTRADICTION]
    assert done.stdout == ""


@pytest.mark.parametrize("command", COMMANDS)
def test_quiet_and_verbose_both_from_the_environment_are_refused(command):
    done = qwenocr(COMMANDS[command].talking, QWENOCR_QUIET="1", QWENOCR_VERBOSE="1")
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.splitlines() == [CONTRADICTION]


# --------------------------------------------------------------------------------------
# (c) one from the environment, the other as a flag: the flag wins


@pytest.mark.parametrize("command", COMMANDS)
def test_a_verbose_flag_wins_over_qwenocr_quiet(command):
    args = COMMANDS[command].talking
    quiet = qwenocr(args, QWENOCR_QUIET="1")
    verbose = qwenocr(args, QWENOCR_VERBOSE="1")
    assert stderr_lines(verbose) != stderr_lines(quiet), "the command says nothing more under -v: pick other args"
    flag_wins = qwenocr(args + ["-v"], QWENOCR_QUIET="1")
    assert flag_wins.returncode == verbose.returncode, flag_wins.stderr
    assert stderr_lines(flag_wins) == stderr_lines(verbose)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_quiet_flag_wins_over_qwenocr_verbose(command):
    args = COMMANDS[command].talking
    quiet = qwenocr(args, QWENOCR_QUIET="1")
    flag_wins = qwenocr(args + ["-q"], QWENOCR_VERBOSE="1")
    assert flag_wins.returncode == quiet.returncode, flag_wins.stderr
    assert stderr_lines(flag_wins) == stderr_lines(quiet)


# --------------------------------------------------------------------------------------
# The same three options everywhere, and the config file's errors


def test_every_command_has_the_three_options_last():
    import typer.main

    from qwenocr.cli import app
    from qwenocr.cli.commandtree import describe

    root = describe(typer.main.get_command(app))
    leaves = {" ".join(leaf.path): leaf for leaf in root.leaves()}
    assert set(leaves) == set(COMMANDS)
    for name, leaf in leaves.items():
        last = [(o.key, o.opts, o.is_flag) for o in leaf.options if o.key != "help"][-3:]
        assert last == [
            ("quiet", ("--quiet", "-q"), True),
            ("verbose", ("--verbose", "-v"), True),
            ("debug", ("--debug",), True),
        ], name
        assert leaf.option("debug").help == "Show tracebacks for errors"


@pytest.mark.parametrize("how", [{"QWENOCR_DEBUG": "1"}, {"debug": "--debug"}])
def test_a_bad_config_file_is_one_line_and_a_traceback_under_debug(how, workdir):
    config = workdir / "config.toml"
    config.write_text("json = \n")
    args = ["eval", "out.md", "ref.md"] + (["--debug"] if "debug" in how else [])
    env = {"QWENOCR_CONFIG": str(config), **{k: v for k, v in how.items() if k != "debug"}}
    plain = qwenocr(["eval", "out.md", "ref.md"], QWENOCR_CONFIG=str(config))
    assert plain.returncode == ExitCode.USAGE
    assert plain.stderr.splitlines() == [f"qwenocr: error: {config}:1: invalid TOML: Invalid value"]
    done = qwenocr(args, **env)
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.startswith(TRACEBACK) and done.stderr.splitlines()[-1] == plain.stderr.strip()


def test_debug_from_the_config_file(workdir):
    config = workdir / "config.toml"
    config.write_text("debug = true\n")
    done = qwenocr(["eval", "missing.md", "ref.md"], QWENOCR_CONFIG=str(config))
    assert done.returncode == ExitCode.INPUT_ERROR
    assert done.stderr.startswith(TRACEBACK)


def test_importing_the_cli_leaves_the_commands_dependencies_alone():
    probe = (
        "import sys, qwenocr.cli\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('huggingface_hub', 'numpy', 'PIL', 'pypdfium2', 'psutil', 'llama_cpp', 'mlx', 'rapidfuzz')"
        " or m.startswith(('qwenocr.scan', 'qwenocr.store', 'qwenocr.eval', 'qwenocr.engines', 'qwenocr.pages')))))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []
