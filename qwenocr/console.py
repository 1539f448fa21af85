"""The Rich console that writes tables (the product) to stdout.

Rich already writes no escape codes when stdout is not a terminal, and honours
`FORCE_COLOR` and `COLUMNS`. `NO_COLOR` (https://no-color.org) in Rich only drops the
colours and keeps bold and underline codes; qwenocr takes it to mean plain text, so a
set `NO_COLOR` turns every style off.
"""

from __future__ import annotations

import os
from typing import Optional, TextIO


def stdout_console(file: Optional[TextIO] = None):
    """A Console for stdout (or `file`): styled on a terminal, plain text otherwise."""
    from rich.console import Console

    plain = bool(os.environ.get("NO_COLOR"))  # set and not empty, as the convention says
    return Console(
        file=file,
        color_system=None if plain else "auto",
        no_color=plain,
        highlight=False,  # numbers in a table are data, not something to colour
        emoji=False,
        markup=False,
    )
