"""The command line: the only package that imports Typer.

One module per command, each registering itself on the app: doctor.py, scan.py,
eval.py, models.py. What they share: app.py (the Typer app, the root callback, the one
path from an error to its line on stderr and its exit code, and `main()`), options.py
(the --quiet/--verbose/--debug convention), config.py and commandtree.py (option values
from QWENOCR_* variables and the config file). The commands import the core (scan,
fit, store, eval) only when they run, so `qwenocr --help` stays instant.
"""

from qwenocr.cli.app import app, main

__all__ = ["app", "main"]
