"""A plain description of the CLI's command tree, read from its Typer objects.

The configuration loader (config.py) and the shell-completion generator
(scripts/completions.py) both need to know every command, its options, which options
take a value, their choices and which values are paths. This module is the one place
that reads Typer's parameter objects (the Click that Typer 0.28 carries as
`typer._click`), duck-typed, so the rest of qwenocr sees frozen dataclasses.

Nothing here imports Typer or Click: callers pass the root command object in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence, Tuple

# Names that are never configuration: Click's own help and the root's eager options.
_NEVER_CONFIGURABLE = frozenset({"help", "version", "config"})  # QWENOCR_CONFIG is the file

# Rich console markup in help texts ("[bold]Examples[/bold]"): shells show plain text.
_RICH_MARKUP = re.compile(r"\[/?[a-z][a-z0-9 _.#=-]*\]")


@dataclass(frozen=True)
class OptionSpec:
    """One option of one command."""

    name: str  # the parameter's Python name, which Click's default_map is keyed by
    key: str  # the configuration key: the long option without "--", "-" as "_"
    opts: Tuple[str, ...]  # e.g. ("--format", "-f")
    secondary_opts: Tuple[str, ...]  # e.g. ("--no-normalize",)
    takes_value: bool  # False for flags and counters
    value_kind: str  # "choice", "file", "dir", "path" or "text"; "none" for flags
    choices: Tuple[str, ...]  # the allowed values of a choice option, else ()
    multiple: bool  # may be given several times (a list option)
    is_flag: bool
    is_eager: bool
    hidden: bool
    help: str  # first sentence, plain text
    param: Any = field(compare=False, repr=False)

    @property
    def configurable(self) -> bool:
        """Whether env variables and the config file may set it."""
        return not (self.is_eager or self.name in _NEVER_CONFIGURABLE or self.key in _NEVER_CONFIGURABLE)

    @property
    def envvar(self) -> str:
        return "QWENOCR_" + self.key.upper()

    @property
    def all_opts(self) -> Tuple[str, ...]:
        return self.opts + self.secondary_opts


@dataclass(frozen=True)
class ArgumentSpec:
    """One positional argument of one command."""

    name: str
    value_kind: str  # as OptionSpec.value_kind
    choices: Tuple[str, ...]
    nargs: int  # 1, or -1 for "any number"
    required: bool
    param: Any = field(compare=False, repr=False)


@dataclass(frozen=True)
class CommandSpec:
    """A command (leaf) or a group of commands, with everything below it."""

    name: str
    path: Tuple[str, ...]  # () for the root, ("scan",), ("models", "pull"), ...
    help: str  # first sentence, plain text
    options: Tuple[OptionSpec, ...]
    arguments: Tuple[ArgumentSpec, ...]
    subcommands: Tuple["CommandSpec", ...]
    hidden: bool
    command: Any = field(compare=False, repr=False)

    @property
    def is_group(self) -> bool:
        return bool(self.subcommands)

    def walk(self) -> Iterator["CommandSpec"]:
        """This command and every command below it, parents before children."""
        yield self
        for sub in self.subcommands:
            yield from sub.walk()

    def leaves(self) -> Iterator["CommandSpec"]:
        return (spec for spec in self.walk() if not spec.is_group)

    def find(self, path: Sequence[str]) -> Optional["CommandSpec"]:
        spec: Optional[CommandSpec] = self
        for name in path:
            spec = next((sub for sub in spec.subcommands if sub.name == name), None) if spec else None
        return spec

    def option(self, name_or_key: str) -> Optional[OptionSpec]:
        return next((o for o in self.options if name_or_key in (o.name, o.key)), None)


def describe(command: Any, name: Optional[str] = None, path: Tuple[str, ...] = ()) -> CommandSpec:
    """Describe a Click/Typer command object (usually the root group) and everything below it."""
    subcommands = []
    for sub_name, sub in _subcommands(command):
        subcommands.append(describe(sub, sub_name, path + (sub_name,)))
    options = []
    arguments = []
    for param in getattr(command, "params", ()):
        if getattr(param, "param_type_name", "") == "option":
            options.append(_describe_option(param))
        elif getattr(param, "param_type_name", "") == "argument":
            arguments.append(_describe_argument(param))
    return CommandSpec(
        name=name or getattr(command, "name", None) or "qwenocr",
        path=path,
        help=plain_help(getattr(command, "help", None) or getattr(command, "short_help", None) or ""),
        options=tuple(options),
        arguments=tuple(arguments),
        subcommands=tuple(subcommands),
        hidden=bool(getattr(command, "hidden", False)),
        command=command,
    )


def coerce(option: OptionSpec, value: Any, command: Any) -> Any:
    """Convert a configured value as the option's own type would; raise ValueError if invalid.

    Runs only the type conversion, not the option's callback (a callback may act, as
    --version does). qwenocr has no file-typed option: converting one would open the file.
    """
    param = option.param
    ctx = command.context_class(command) if hasattr(command, "context_class") else None
    if getattr(param, "count", False):  # -v -v: a count, configured as a number
        try:
            count = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a whole number") from None
        if isinstance(value, bool) or count < 0:
            raise ValueError(f"{value!r} is not a whole number >= 0")
        return count
    if option.is_flag and isinstance(value, str):
        flag = parse_bool(value)
        if flag is None:
            raise ValueError(f"{value!r} is not a boolean (use true/false, 1/0, yes/no)")
        return flag
    if option.is_flag and not isinstance(value, bool):
        raise ValueError(f"{value!r} is not a boolean (use true or false)")
    if not option.is_flag:
        for item in value if isinstance(value, list) else [value]:
            _check_toml_type(option, item)
    try:
        return param.type_cast_value(ctx, value)
    except Exception as error:  # Click's BadParameter, or whatever a custom type raises
        message = error.format_message() if hasattr(error, "format_message") else str(error)
        raise ValueError(" ".join(message.split())) from None


def _check_toml_type(option: OptionSpec, value: Any) -> None:
    """Refuse a config-file value of the wrong TOML type; strings (and env values) go to Click.

    Click converts leniently: a path type hands `output = 5` back as the int 5 (which
    failed later, as an internal error), an int type truncates `max_tokens = 2048.5` and
    takes `true` as 1. A TOML value that is not a string must already be of the option's kind.
    """
    if isinstance(value, str):
        return
    type_name = type(getattr(option.param, "type", None)).__name__
    if "Int" in type_name:  # IntParamType, IntRange
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not a whole number")
    elif "Float" in type_name:  # FloatParamType, FloatRange and qwenocr's finite floats
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{value!r} is not a number")
    elif option.value_kind in ("path", "file", "dir"):
        raise ValueError(f"{value!r} is not a path (write it as a string in quotes)")
    elif option.value_kind == "text" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return  # `vram = 24` or `pages = 5`: the digits are the text
    else:
        raise ValueError(f"{value!r} is not text (write it as a string in quotes)")


def parse_bool(text: str) -> Optional[bool]:
    """Click's own on/off words, so QWENOCR_QUIET=yes and quiet = "on" both work; None if neither."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "t", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "f", "no", "n", "off", ""):
        return False
    return None


def plain_help(text: str) -> str:
    """The first paragraph of a help text, without Rich markup or a final period, on one line."""
    text = _RICH_MARKUP.sub("", text or "").strip()
    first_paragraph = text.split("\n\n", 1)[0]
    line = " ".join(first_paragraph.split())
    return line[:-1] if line.endswith(".") and not line.endswith("..") else line


def _subcommands(command: Any):
    commands = getattr(command, "commands", None)
    if isinstance(commands, dict):
        return list(commands.items())
    return []


def _option_key(opts: Sequence[str], name: str) -> str:
    long_opts = [o for o in opts if o.startswith("--")]
    return long_opts[0][2:].replace("-", "_") if long_opts else name


def _describe_option(param: Any) -> OptionSpec:
    is_flag = bool(getattr(param, "is_flag", False)) or bool(getattr(param, "count", False))
    kind, choices = ("none", ()) if is_flag else _value_kind(param)
    multiple = bool(getattr(param, "multiple", False))
    return OptionSpec(
        name=param.name,
        key=_option_key(param.opts, param.name),
        opts=tuple(param.opts),
        secondary_opts=tuple(getattr(param, "secondary_opts", ()) or ()),
        takes_value=not is_flag,
        value_kind=kind,
        choices=choices,
        multiple=multiple,
        is_flag=is_flag,
        is_eager=bool(getattr(param, "is_eager", False)),
        hidden=bool(getattr(param, "hidden", False)),
        help=plain_help(getattr(param, "help", None) or ""),
        param=param,
    )


def _describe_argument(param: Any) -> ArgumentSpec:
    kind, choices = _value_kind(param)
    return ArgumentSpec(
        name=param.name,
        value_kind=kind,
        choices=choices,
        nargs=int(getattr(param, "nargs", 1) or 1),
        required=bool(getattr(param, "required", False)),
        param=param,
    )


def _value_kind(param: Any) -> Tuple[str, Tuple[str, ...]]:
    click_type = getattr(param, "type", None)  # Click's param types (Typer's paths are TyperPath)
    choices = getattr(click_type, "choices", None)
    if choices is not None:
        return "choice", tuple(_choice_text(c) for c in choices)
    type_name = type(click_type).__name__
    if type_name in ("File", "TyperFile"):
        return "file", ()
    if type_name in ("Path", "TyperPath"):
        if getattr(click_type, "dir_okay", True) and not getattr(click_type, "file_okay", True):
            return "dir", ()
        return "path", ()
    return "text", ()


def _choice_text(choice: Any) -> str:
    value = getattr(choice, "value", choice)  # Enum members complete as their value
    return str(value)
