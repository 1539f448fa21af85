"""Where option values come from: the command line, QWENOCR_* variables, a config file.

Precedence, highest first: a flag on the command line, an environment variable
`QWENOCR_<OPTION>`, the TOML config file, the option's built-in default.

- Environment: every option of every command can be set as `QWENOCR_` + its long
  name in upper case with `_` for `-`: `--max-tokens` is `QWENOCR_MAX_TOKENS`,
  `--no-normalize` (of `--normalize/--no-normalize`) is `QWENOCR_NORMALIZE=false`.
  List options take several values separated by spaces.
- The file: `$QWENOCR_CONFIG` if set, else `$XDG_CONFIG_HOME/qwenocr/config.toml`
  (`~/.config/qwenocr/config.toml`) on Linux, `~/Library/Application
  Support/qwenocr/config.toml` on macOS, `%APPDATA%\\qwenocr\\config.toml` on Windows.
  Top-level keys apply to every command that has that option; a `[scan]` table (or
  `[models.pull]` for a nested command) applies to that command only and wins over
  top-level keys. Keys are long option names with `_`: `max_tokens = 2048`.

The mechanism is generic over the Click command tree: `apply_config(ctx)`, called
from the root callback, puts file and environment values into Click's `default_map`
(which Click consults after the command line), so any command registered on the app
gets them with no code of its own. A bad value or an unknown key is a `UsageError`
(exit 2) naming the file and line, or the variable, before the command runs.
"""

from __future__ import annotations

import importlib
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from qwenocr.cli.commandtree import CommandSpec, OptionSpec, coerce, describe
from qwenocr.errors import UsageError

CONFIG_ENV = "QWENOCR_CONFIG"
ENV_PREFIX = "QWENOCR_"

# Values that must never be shown in full (doctor prints the effective configuration).
_SECRET = re.compile(r"(password|passphrase|secret|api_key|apikey|(^|_)token$)")


class ConfigEntry(NamedTuple):
    """One option's effective value and where it came from."""

    name: str  # the configuration key, e.g. "max_tokens"
    value: Any
    source: str  # "flag", "env QWENOCR_X", "file PATH", "default" (or "prompt")


def config_path(environ: Optional[Mapping[str, str]] = None, platform: Optional[str] = None) -> Path:
    """Where the config file is (whether or not it exists).

    The rule is written out, not taken from platformdirs: `user_config_dir` (platformdirs
    4.14) differs from it on each platform in some setup, and it reads only os.environ
    and sys.platform, where this function takes both (tests give them):
    - macOS: it honours $XDG_CONFIG_HOME, which qwenocr and its docs do not;
    - Windows: it asks the Known Folder API (or $WIN_PD_OVERRIDE_APPDATA), not %APPDATA%;
    - Linux: it ignores a relative $XDG_CONFIG_HOME or $HOME, which this rule uses.
    """
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]).expanduser()
    home = Path(environ.get("HOME") or Path.home())
    if platform == "darwin":
        base = home / "Library" / "Application Support"
    elif platform.startswith("win"):
        base = Path(environ.get("APPDATA") or home / "AppData" / "Roaming")
    else:
        base = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    return base / "qwenocr" / "config.toml"


@dataclass(frozen=True)
class ConfigFile:
    """A parsed config file: its data and its text (to find the line of a bad key)."""

    path: Path
    data: Mapping[str, Any]
    text: str

    def line_of(self, table: Sequence[str], key: str) -> Optional[int]:
        return _line_of(self.text, tuple(table), key)

    def where(self, table: Sequence[str], key: str) -> str:
        line = self.line_of(table, key)
        return f"{self.path}:{line}" if line else str(self.path)


def load_file(environ: Optional[Mapping[str, str]] = None, path: Optional[Path] = None) -> Optional[ConfigFile]:
    """Read and parse the config file; None if there is none. Bad TOML is a UsageError."""
    environ = os.environ if environ is None else environ
    explicit = path is not None or bool(environ.get(CONFIG_ENV))
    path = path if path is not None else config_path(environ)
    try:
        os.stat(path)
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"config file {path} not found", f"fix or unset {CONFIG_ENV}") from None
        return None
    except OSError:
        pass  # read_small_text says what is wrong
    text = read_small_text(path, f"config file {path}")
    # tomllib from Python 3.11, its original tomli before; by name, so that mypy (which
    # checks for 3.10) needs neither installed.
    tomllib = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        match = re.search(r"\(at line (\d+), column \d+\)", message)
        if match:
            message = message[: match.start()].strip()
            raise UsageError(f"{path}:{match.group(1)}: invalid TOML: {message}") from None
        raise UsageError(f"{path}: invalid TOML: {message}") from None
    return ConfigFile(path, data, text)


# Config and password files are a few lines; anything bigger is not one (and /dev/zero
# or a runaway generator would otherwise be read until memory runs out).
MAX_SMALL_FILE = 1024 * 1024


def read_small_text(path: Path, what: str, limit: int = MAX_SMALL_FILE) -> str:
    """The UTF-8 text of a small regular file; anything else is a UsageError naming `what`.

    A FIFO, a device or a socket is refused before it is opened (opening a FIFO blocks
    until a writer comes, reading /dev/zero never ends); the file is opened with
    O_NONBLOCK all the same, in case it was swapped for one between the check and the
    open, and checked again on its descriptor.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{what} not found") from None
    except OSError as error:
        raise UsageError(f"can't read {what}: {error.strerror or error}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{what} is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{what} is a pipe or a device, not a regular file", "give a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as error:
        raise UsageError(f"can't read {what}: {error.strerror or error}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{what} is a pipe or a device, not a regular file", "give a regular file")
        chunks: List[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as error:
        raise UsageError(f"can't read {what}: {error.strerror or error}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise UsageError(f"{what} is larger than {limit // 1024} KiB: not a config or password file")
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{what} is not UTF-8 text") from None


@dataclass(frozen=True)
class _Value:
    raw: Any
    source: str


def resolve(
    root: Any,
    environ: Optional[Mapping[str, str]] = None,
    file: Optional[ConfigFile] = None,
    *,
    read_file: bool = True,
    command: Optional[str] = None,
) -> Dict[Tuple[str, ...], Dict[str, _Value]]:
    """Configured values for the commands below `root` (or only below `command`), validated.

    Returns {command path: {parameter name: value and source}}, env winning over file.
    Raises UsageError for an unknown key anywhere in the file, a table where a value
    belongs, or a value the option's type rejects. Values are checked only for the
    commands asked for, so a bad `[scan]` setting doesn't stop `qwenocr eval`.
    """
    environ = os.environ if environ is None else environ
    tree = root if isinstance(root, CommandSpec) else describe(root)
    if file is None and read_file:
        file = load_file(environ)
    if file is not None:
        _check_keys(tree, file, file.data, ())
    resolved: Dict[Tuple[str, ...], Dict[str, _Value]] = {}
    scope = tree.find((command,)) if command is not None else tree
    for leaf in scope.leaves() if scope is not None else ():
        resolved[leaf.path] = _resolve_one(leaf, environ, file)
    return resolved


def default_map(resolved: Mapping[Tuple[str, ...], Mapping[str, _Value]]) -> Dict[str, Any]:
    """Click's nested `default_map` ({"scan": {"max_tokens": 2048}, "models": {"pull": {...}}})."""
    mapping: Dict[str, Any] = {}
    for path, values in resolved.items():
        if not values:
            continue
        node = mapping
        for name in path:
            node = node.setdefault(name, {})
        node.update({name: value.raw for name, value in values.items()})
    return mapping


def apply_config(ctx: Any) -> None:
    """Give the invoked command its configured defaults; call from the root callback.

    Click looks a parameter up in `ctx.default_map` only when the command line doesn't
    set it, which is exactly "flag > env > file > default". The provenance is kept in
    `ctx.meta` for `effective_config`.
    """
    if ctx.resilient_parsing or ctx.invoked_subcommand is None:
        return
    resolved = resolve(ctx.command, command=ctx.invoked_subcommand)
    ctx.meta["qwenocr.cli.config"] = resolved
    ctx.default_map = {**(ctx.default_map or {}), **default_map(resolved)}


def effective_config(
    command: Any,
    *,
    path: Optional[Sequence[str]] = None,
    ctx: Any = None,
    environ: Optional[Mapping[str, str]] = None,
    file: Optional[ConfigFile] = None,
    read_file: bool = True,
) -> List[ConfigEntry]:
    """Each configurable option of `command` with its effective value and its source.

    Without `ctx` (as `doctor` shows the configuration `scan` would run with), a value
    comes from the environment, the file or the default. With the command's own
    context, after parsing, values given as flags show as "flag" (another command's
    context is ignored). `path` is the command's place in the tree, (command.name,) by
    default; ("models", "pull") for a nested one, so that its file table is found (a
    CommandSpec knows its own). Secrets are masked.
    """
    environ = os.environ if environ is None else environ
    spec = command if isinstance(command, CommandSpec) else describe(command, path=tuple(path or (command.name,)))
    if ctx is not None and getattr(ctx, "command", None) is not spec.command:
        ctx = None  # another command's context (doctor showing scan's): flags don't apply
    resolved: Optional[Mapping[str, _Value]] = None
    if ctx is not None:
        stored = ctx.meta.get("qwenocr.cli.config") or {}
        resolved = stored.get(spec.path)  # what apply_config resolved for this run
    if resolved is None:
        if file is None and read_file:
            file = load_file(environ)
        resolved = _resolve_one(spec, environ, file)
    entries = []
    click_ctx = ctx if ctx is not None else spec.command.context_class(spec.command)
    for option in spec.options:
        if not option.configurable or option.hidden:
            continue
        source_name = _source_name(ctx, option.name)
        if source_name == "COMMANDLINE":
            value, source = ctx.params.get(option.name), "flag"
        elif source_name == "PROMPT":
            value, source = ctx.params.get(option.name), "prompt"
        elif source_name == "ENVIRONMENT":  # the option declares its own envvar
            value, source = ctx.params.get(option.name), f"env {option.param.envvar}"
        elif option.name in resolved:
            configured = resolved[option.name]
            value = ctx.params.get(option.name) if ctx is not None else configured.raw
            source = configured.source
        else:
            value = ctx.params.get(option.name) if ctx is not None else option.param.get_default(click_ctx)
            source = "default"
        entries.append(ConfigEntry(option.key, _display(option, value), source))
    return entries


def effective_config_of(ctx: Any, *path: str, environ: Optional[Mapping[str, str]] = None) -> List[ConfigEntry]:
    """The effective configuration of the command at `path`, from any command's context.

    For `doctor`: `render_config_table(effective_config_of(ctx, "scan"))`. Raises
    KeyError if there is no such command.
    """
    spec = describe(ctx.find_root().command).find(path)
    if spec is None or spec.is_group:
        raise KeyError(" ".join(path))
    return effective_config(spec, environ=environ)


def render_config_table(entries: Sequence[ConfigEntry], title: Optional[str] = None):
    """A Rich table of `effective_config` entries: option, value, source."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("Option")
    table.add_column("Value")
    table.add_column("From")
    for entry in entries:
        value = entry.value
        shown = "" if value is None else ("true" if value else "false") if isinstance(value, bool) else str(value)
        table.add_row(entry.name, shown, entry.source)
    return table


def verbosity(quiet: bool, verbose: bool, debug: bool = False, ctx: Any = None) -> int:
    """-1 quiet, 0 normal, 1 verbose, 2 debug: one level from the three convention flags.

    When --quiet and --verbose are both on, the one given as a flag wins over one from
    the environment or the file; both as flags is a usage error.
    """
    if debug:
        return 2
    if quiet and verbose:
        quiet_flag = from_command_line(ctx, "quiet")
        verbose_flag = from_command_line(ctx, "verbose")
        if quiet_flag == verbose_flag:
            raise UsageError("--quiet and --verbose contradict each other", "give one of them")
        return -1 if quiet_flag else 1
    return -1 if quiet else 1 if verbose else 0


# --------------------------------------------------------------------------------------


def _resolve_one(spec: CommandSpec, environ: Mapping[str, str], file: Optional[ConfigFile]) -> Dict[str, _Value]:
    values: Dict[str, _Value] = {}
    if file is not None:
        for option, raw, table in _file_values(spec, file):
            values[option.name] = _validated(spec, option, raw, f"file {file.path}", file.where(table, option.key))
    for option in spec.options:
        raw = environ.get(option.envvar) if option.configurable else None
        if raw:
            value = raw.split() if option.multiple else raw
            values[option.name] = _validated(spec, option, value, f"env {option.envvar}", option.envvar)
    return values


def _file_values(leaf: CommandSpec, file: ConfigFile) -> List[Tuple[OptionSpec, Any, Tuple[str, ...]]]:
    """(option, raw value, table) from the file for one command; deeper tables win."""
    found: Dict[str, Tuple[OptionSpec, Any, Tuple[str, ...]]] = {}
    table: Mapping[str, Any] = file.data
    tables: List[Tuple[Tuple[str, ...], Mapping[str, Any]]] = [((), table)]
    for depth, name in enumerate(leaf.path):
        sub = table.get(name)
        if not isinstance(sub, Mapping):
            break
        table = sub
        tables.append((leaf.path[: depth + 1], table))
    for table_path, table in tables:
        for key, raw in table.items():
            if isinstance(raw, Mapping):
                continue
            option = leaf.option(key.replace("-", "_"))
            if option is not None and option.configurable:
                found[option.name] = (option, raw, table_path)
    return list(found.values())


def _check_keys(node: CommandSpec, file: ConfigFile, table: Mapping[str, Any], table_path: Tuple[str, ...]) -> None:
    label = f"[{'.'.join(table_path)}]" if table_path else "the top level"
    for key, value in table.items():
        where = file.where(table_path, key)
        sub = next((s for s in node.subcommands if s.name == key), None)
        if isinstance(value, Mapping):
            if sub is None:
                known = ", ".join(s.name for s in node.subcommands) or "none"
                raise UsageError(f"{where}: unknown table [{'.'.join(table_path + (key,))}] (commands here: {known})")
            _check_keys(sub, file, value, table_path + (key,))
            continue
        if sub is not None:
            raise UsageError(
                f"{where}: {key!r} is a command; its settings go in a [{'.'.join(table_path + (key,))}] table"
            )
        name = key.replace("-", "_")
        options = [o for leaf in node.leaves() for o in leaf.options if name in (o.key, o.name) and o.configurable]
        if not options:
            scope = (
                f"any command under {' '.join(('qwenocr',) + table_path)}"
                if node.is_group
                else f"qwenocr {' '.join(table_path)}"
            )
            raise UsageError(
                f"{where}: unknown key {key!r} in {label} (no --{name.replace('_', '-')} option in {scope})"
            )


def _validated(leaf: CommandSpec, option: OptionSpec, raw: Any, source: str, where: str) -> _Value:
    command = " ".join(("qwenocr",) + leaf.path)
    try:
        if option.multiple and not isinstance(raw, list):
            raise ValueError("expected a list of values")
        if not option.multiple and isinstance(raw, (list, dict)):
            raise ValueError("expected one value, not a list")
        coerce(option, raw, leaf.command)
    except ValueError as error:
        shown = repr(raw) if _SECRET.search(option.key) is None else "'***'"
        setting = f"{where}={shown}" if source.startswith("env ") else f"{where}: {option.key} = {shown}"
        reason = re.sub(r"^Invalid value for [^:]*: ", "", str(error))
        raise UsageError(f"{setting} is not valid for {command} {option.opts[0]}: {reason}") from None
    return _Value(raw, source)


def from_command_line(ctx: Any, name: str) -> bool:
    """Whether the parameter `name` was given on the command line (not by env, file or default)."""
    return _source_name(ctx, name) == "COMMANDLINE"


def _source_name(ctx: Any, name: str) -> Optional[str]:
    if ctx is None or not hasattr(ctx, "get_parameter_source"):
        return None
    source = ctx.get_parameter_source(name)
    return getattr(source, "name", None)


def _display(option: OptionSpec, value: Any) -> Any:
    if value is None:
        return None
    if _SECRET.search(option.key):
        return "***"
    value = getattr(value, "value", value)  # Enum members show as their value
    if isinstance(value, (list, tuple)):
        return " ".join(str(getattr(v, "value", v)) for v in value)
    return value


_TABLE_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _line_of(text: str, table: Tuple[str, ...], key: str) -> Optional[int]:
    """The line that sets `key` in `table`, for error messages (best effort)."""
    wanted = ".".join(table)
    current = ""
    key_pattern = re.compile(rf"""^\s*(["']?){re.escape(key)}\1\s*=""")
    dotted = re.compile(rf"""^\s*{re.escape(wanted + "." + key) if wanted else "(?!)"}\s*=""")
    header = re.compile(rf"""^\s*\[\s*{re.escape(".".join(table + (key,)))}\s*\]""")
    for number, line in enumerate(text.splitlines(), 1):
        match = _TABLE_HEADER.match(line)
        if match:
            current = re.sub(r"\s*\.\s*", ".", match.group(1)).replace('"', "")
            if header.match(line):
                return number
            continue
        if (current == wanted and key_pattern.match(line)) or (current == "" and dotted.match(line)):
            return number
    return None
