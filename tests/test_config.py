"""Configuration: QWENOCR_* variables and the TOML file; flag > env > file > default.

The precedence is shown end to end on real `qwenocr eval` subprocesses; the generic
mechanism (nested commands, list options, sources for `doctor`) on a small Typer app
built here, wired the way qwenocr/cli/app.py wires it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import pytest
import typer
import typer.main

from qwenocr.cli import config
from qwenocr.cli.config import ConfigEntry, config_path, effective_config, render_config_table
from qwenocr.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------
# Where the file is


@pytest.mark.parametrize(
    "platform, environ, expected",
    [
        ("linux", {"HOME": "/home/u"}, "/home/u/.config/qwenocr/config.toml"),
        ("linux", {"HOME": "/home/u", "XDG_CONFIG_HOME": "/xdg"}, "/xdg/qwenocr/config.toml"),
        ("darwin", {"HOME": "/Users/u"}, "/Users/u/Library/Application Support/qwenocr/config.toml"),
        (
            "win32",
            {"HOME": "C:/Users/u", "APPDATA": "C:/Users/u/AppData/Roaming"},
            "C:/Users/u/AppData/Roaming/qwenocr/config.toml",
        ),
        ("darwin", {"HOME": "/Users/u", "QWENOCR_CONFIG": "/etc/q.toml"}, "/etc/q.toml"),
    ],
)
def test_config_path(platform, environ, expected):
    assert config_path(environ, platform) == Path(expected)


# --------------------------------------------------------------------------------------
# Precedence, end to end on `qwenocr eval`


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "out.md").write_text("# Title\n\nkitten\n")
    (tmp_path / "ref.md").write_text("Title\nsitting\n")
    return tmp_path


def run_cli(*args: str, cwd: Path, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QWENOCR_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "qwenocr", *args], cwd=cwd, env=clean, capture_output=True, text=True, timeout=60
    )


def test_precedence_flag_over_env_over_file_over_default(workdir):
    cfg = workdir / "config.toml"
    env_file = {"QWENOCR_CONFIG": str(cfg)}
    # Top-level keys apply to every command with that option: --json for eval here.
    cfg.write_text("json = true\n")

    def normalized(*extra: str, env: dict) -> bool:
        result = run_cli("eval", "out.md", "ref.md", *extra, cwd=workdir, env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["normalized"]

    assert normalized(env=env_file) is True  # default: --normalize
    cfg.write_text("json = true\n[eval]\nnormalize = false\n")
    assert normalized(env=env_file) is False  # file beats default
    assert normalized(env={**env_file, "QWENOCR_NORMALIZE": "true"}) is True  # env beats file
    assert normalized("--no-normalize", env={**env_file, "QWENOCR_NORMALIZE": "true"}) is False  # flag beats env
    assert normalized("--normalize", env=env_file) is True  # flag beats file


def test_file_in_the_platform_directory_is_read(workdir):
    xdg = workdir / "xdg"
    (xdg / "qwenocr").mkdir(parents=True)
    (xdg / "qwenocr" / "config.toml").write_text("[eval]\njson = true\n")
    result = run_cli("eval", "out.md", "ref.md", cwd=workdir, env={"XDG_CONFIG_HOME": str(xdg)})
    assert result.returncode == 0 and json.loads(result.stdout)["cer"] > 0


def test_env_alone(workdir):
    result = run_cli("eval", "out.md", "ref.md", cwd=workdir, env={"QWENOCR_JSON": "1"})
    assert result.returncode == 0 and json.loads(result.stdout)["normalized"] is True


@pytest.mark.parametrize(
    "toml, env, fragment",
    [
        ("json = \n", {}, "config.toml:1: invalid TOML"),
        ("# comment\n[eval]\nnormalise = false\n", {}, "config.toml:3: unknown key 'normalise' in [eval]"),
        ("\n\njson = 3\n", {}, "config.toml:3: json = 3 is not valid for qwenocr eval --json"),
        ("[evaluate]\njson = true\n", {}, "config.toml:1: unknown table [evaluate]"),
        ("eval = true\n", {}, "config.toml:1: 'eval' is a command"),
        ("bogus = 1\n", {}, "config.toml:1: unknown key 'bogus' in the top level"),
        ("", {"QWENOCR_JSON": "maybe"}, "QWENOCR_JSON='maybe' is not valid for qwenocr eval --json"),
    ],
)
def test_bad_configuration_is_a_usage_error_on_one_line(workdir, toml, env, fragment):
    cfg = workdir / "config.toml"
    cfg.write_text(toml)
    result = run_cli("eval", "out.md", "ref.md", cwd=workdir, env={"QWENOCR_CONFIG": str(cfg), **env})
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("qwenocr: error: ") and fragment in lines[0], result.stderr


def test_missing_file_named_by_qwenocr_config(workdir):
    result = run_cli("eval", "out.md", "ref.md", cwd=workdir, env={"QWENOCR_CONFIG": str(workdir / "nope.toml")})
    assert result.returncode == 2 and "nope.toml not found" in result.stderr


def test_a_bad_value_for_another_command_does_not_stop_this_one(workdir):
    if "scan" not in typer.main.get_command(_real_app()).commands:
        pytest.skip("the scan command is not registered yet")
    cfg = workdir / "config.toml"
    cfg.write_text('[scan]\nmax_tokens = "lots"\n')
    result = run_cli("eval", "out.md", "ref.md", "--json", cwd=workdir, env={"QWENOCR_CONFIG": str(cfg)})
    assert result.returncode == 0, result.stderr
    scan = run_cli("scan", "x.pdf", cwd=workdir, env={"QWENOCR_CONFIG": str(cfg)})
    assert scan.returncode == 2 and "config.toml:2: max_tokens = 'lots'" in scan.stderr


def test_scan_gets_env_and_file_defaults_with_no_code_of_its_own(workdir):
    """The mechanism is generic: `scan --help` shows the configured defaults."""
    if "scan" not in typer.main.get_command(_real_app()).commands:
        pytest.skip("the scan command is not registered yet")
    cfg = workdir / "config.toml"
    cfg.write_text("[scan]\nmax_tokens = 2048\n")
    env = {"QWENOCR_CONFIG": str(cfg), "COLUMNS": "250"}
    assert "[default: 2048]" in run_cli("scan", "--help", cwd=workdir, env=env).stdout
    assert "[default: 999]" in run_cli("scan", "--help", cwd=workdir, env={**env, "QWENOCR_MAX_TOKENS": "999"}).stdout


def _real_app():
    from qwenocr.cli import app

    return app


# --------------------------------------------------------------------------------------
# The generic mechanism, on a small app wired like qwenocr's


def _demo_app(seen: dict) -> typer.Typer:
    app = typer.Typer()
    models = typer.Typer()
    app.add_typer(models, name="models")

    @app.callback()
    def root(ctx: typer.Context) -> None:
        config.apply_config(ctx)

    @app.command("scan")
    def scan(
        ctx: typer.Context,
        max_tokens: Annotated[int, typer.Option("--max-tokens", min=16)] = 4096,
        fmt: Annotated[str, typer.Option("--format")] = "markdown",
        password: Annotated[Optional[str], typer.Option("--password")] = None,
        exclude: Annotated[Optional[List[str]], typer.Option("--exclude")] = None,
        quiet: Annotated[bool, typer.Option("--quiet")] = False,
    ) -> None:
        seen["params"] = dict(ctx.params)
        seen["config"] = effective_config(ctx.command, ctx=ctx)

    @models.command("pull")
    def pull(
        ctx: typer.Context,
        quant: Annotated[str, typer.Option("--quant")] = "Q4",
        quiet: Annotated[bool, typer.Option("--quiet")] = False,
    ) -> None:
        seen["params"] = dict(ctx.params)
        seen["config"] = effective_config(ctx.command, ctx=ctx, path=("models", "pull"))

    @app.command("doctor")
    def doctor(ctx: typer.Context, quiet: Annotated[bool, typer.Option("--quiet")] = False) -> None:
        seen["config"] = config.effective_config_of(ctx, "scan")
        seen["table"] = render_config_table(seen["config"], title="scan")

    @models.command("list")
    def list_(quiet: Annotated[bool, typer.Option("--quiet")] = False) -> None:
        pass

    return app


def _invoke(args, env, tmp_path, toml=None) -> dict:
    from typer.testing import CliRunner

    cfg = tmp_path / "demo.toml"
    cfg.write_text(toml or "")
    seen: dict = {}
    result = CliRunner().invoke(_demo_app(seen), args, env={"QWENOCR_CONFIG": str(cfg), **env})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return seen


def test_effective_config_names_each_source(tmp_path, monkeypatch):
    toml = 'quiet = true\n[scan]\nmax_tokens = 2048\nformat = "json"\n'
    seen = _invoke(["scan", "--format", "jsonl"], {"QWENOCR_PASSWORD": "hunter2"}, tmp_path, toml)
    assert seen["params"]["max_tokens"] == 2048 and seen["params"]["fmt"] == "jsonl" and seen["params"]["quiet"] is True
    entries = {e.name: e for e in seen["config"]}
    assert entries["format"] == ConfigEntry("format", "jsonl", "flag")
    assert entries["max_tokens"] == ConfigEntry("max_tokens", 2048, f"file {tmp_path / 'demo.toml'}")
    assert entries["quiet"].source == f"file {tmp_path / 'demo.toml'}"
    assert entries["password"] == ConfigEntry("password", "***", "env QWENOCR_PASSWORD")  # never shown
    assert entries["exclude"].source == "default"


def test_effective_config_without_a_context_as_doctor_shows_it(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[scan]\nmax_tokens = 2048\n")
    monkeypatch.setenv("QWENOCR_CONFIG", str(cfg))
    monkeypatch.setenv("QWENOCR_FORMAT", "json")
    root = typer.main.get_command(_demo_app({}))
    entries = {e.name: (e.value, e.source) for e in effective_config(root.commands["scan"])}
    assert entries["max_tokens"] == (2048, f"file {cfg}")
    assert entries["format"] == ("json", "env QWENOCR_FORMAT")
    assert entries["quiet"] == (False, "default")
    table = render_config_table(effective_config(root.commands["scan"]), title="scan")
    assert table.row_count == len(entries) and [c.header for c in table.columns] == ["Option", "Value", "From"]


def test_nested_commands_tables_and_list_options_from_env(tmp_path):
    toml = 'quiet = true\n[models]\nquant = "Q8"\n[models.pull]\nquant = "BF16"\n'
    seen = _invoke(["models", "pull"], {}, tmp_path, toml)
    assert seen["params"] == {"quant": "BF16", "quiet": True}  # the deepest table wins
    seen = _invoke(["scan"], {"QWENOCR_EXCLUDE": "a.pdf b.pdf"}, tmp_path)
    assert list(seen["params"]["exclude"]) == ["a.pdf", "b.pdf"]  # a list or a tuple, by Typer version


@pytest.mark.parametrize(
    "toml, env, message",
    [
        ("[scan]\nmax_tokens = 8\n", {}, "demo.toml:2: max_tokens = 8 is not valid for qwenocr scan --max-tokens"),
        ('[models]\nformat = "json"\n', {}, "demo.toml:2: unknown key 'format' in [models]"),
        ('[models.push]\nquant = "Q8"\n', {}, "unknown table [models.push]"),
        ('[scan]\nexclude = "a.pdf"\n', {}, "expected a list"),
        ("", {"QWENOCR_MAX_TOKENS": "many"}, "QWENOCR_MAX_TOKENS='many' is not valid"),
        ('[scan]\npassword = ["hunter2"]\n', {}, "password = '***' is not valid"),
    ],
)
def test_generic_validation(tmp_path, toml, env, message):
    with pytest.raises(UsageError) as caught:
        _invoke(["scan"], env, tmp_path, toml)
    assert message in caught.value.one_line()
    assert "\n" not in caught.value.one_line()


def test_empty_env_values_are_unset(tmp_path):
    seen = _invoke(["scan"], {"QWENOCR_MAX_TOKENS": ""}, tmp_path)
    assert seen["params"]["max_tokens"] == 4096


def test_verbosity_rules():
    assert config.verbosity(False, False) == 0
    assert config.verbosity(True, False) == -1
    assert config.verbosity(False, True) == 1
    assert config.verbosity(True, True, debug=True) == 2
    with pytest.raises(UsageError, match="contradict"):
        config.verbosity(True, True)


def test_doctor_shows_another_commands_configuration(tmp_path):
    seen = _invoke(["doctor", "--quiet"], {"QWENOCR_FORMAT": "json"}, tmp_path, "[scan]\nmax_tokens = 2048\n")
    entries = {e.name: (e.value, e.source) for e in seen["config"]}
    assert entries["format"] == ("json", "env QWENOCR_FORMAT")
    assert entries["max_tokens"] == (2048, f"file {tmp_path / 'demo.toml'}")
    assert entries["quiet"] == (False, "default")  # doctor's own --quiet flag is not scan's
    assert seen["table"].row_count == len(entries)
