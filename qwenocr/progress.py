"""Progress on stderr: a Rich bar per file (pages i/N, tokens/s, ETA), and warnings.

The bar is shown only when stderr is a terminal and --quiet is off, so logs and CI
output stay clean. Warnings and the final summary still go to stderr (not with --quiet).
"""

from __future__ import annotations

import sys
import time
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from qwenocr.results import PageResult


class Reporter:
    def __init__(self, quiet: bool = False, verbose: bool = False, stream=None):
        self.quiet = quiet
        self.verbose = verbose
        self.console = Console(file=stream or sys.stderr, stderr=True, highlight=False)
        self.interactive = self.console.is_terminal and not quiet
        self._progress: Optional[Progress] = None
        self._task: Optional[TaskID] = None
        self._tokens = 0
        self._started = 0.0

    # --- messages -------------------------------------------------------------------
    def info(self, message: str) -> None:
        if self.verbose and not self.quiet:
            self.console.print(message, markup=False)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"qwenocr: warning: {message}", markup=False, style="yellow")

    def error(self, message: str) -> None:
        self.console.print(f"qwenocr: error: {message}", markup=False, style="red")

    # --- progress -------------------------------------------------------------------
    def __enter__(self) -> "Reporter":
        if self.interactive:
            self._progress = Progress(
                TextColumn("[bold]{task.fields[name]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("pages"),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    def start_document(self, name: str, pages: int) -> None:
        self._tokens = 0
        self._started = time.monotonic()
        if self._progress is not None:
            self._task = self._progress.add_task("", total=pages, name=_short(name), rate="")

    def tokens(self, count: int) -> None:
        self._tokens += count
        if self._progress is not None and self._task is not None:
            elapsed = max(1e-6, time.monotonic() - self._started)
            self._progress.update(self._task, rate=f"{self._tokens / elapsed:5.1f} tok/s")

    def page_done(self, result: PageResult) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)
        if result.status not in ("ok", "blank") and not self.quiet:
            detail = f": {result.error}" if result.error else ""
            self.warn(f"page {result.number}: {result.status}{detail}")


def _short(name: str, width: int = 32) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]
