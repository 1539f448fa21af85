"""Progress on stderr: a Rich bar per file (pages i/N, tokens/s, ETA), and warnings.

The bar is shown only when stderr is a terminal and --quiet is off, so logs and CI
output stay clean. Warnings and the final summary still go to stderr (not with --quiet).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from qwenocr.pages.base import display_name
from qwenocr.scan.results import GOOD_STATUSES, PageResult, status_counts


class _ReporterLogHandler(logging.Handler):
    """Routes qwenocr's library logs (e.g. a server retry) through the reporter."""

    def __init__(self, reporter: "Reporter"):
        super().__init__()
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            self.reporter.warn(message)
        else:
            self.reporter.info(message)


class Reporter:
    def __init__(self, quiet: bool = False, verbose: bool = False, stream=None):
        self.quiet = quiet
        self.verbose = verbose
        self.console = Console(file=stream or sys.stderr, stderr=True, highlight=False)
        logger = logging.getLogger("qwenocr")
        logger.handlers[:] = [_ReporterLogHandler(self)]
        logger.setLevel(logging.INFO if verbose else logging.WARNING)
        logger.propagate = False
        self.interactive = self.console.is_terminal and not quiet
        self._progress: Optional[Progress] = None
        self._task: Optional[TaskID] = None
        self._tokens = 0
        self._started = 0.0
        self._run_started = time.monotonic()

    # --- messages -------------------------------------------------------------------
    def info(self, message: str) -> None:
        if self.verbose and not self.quiet:
            self.console.print(message, markup=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"qwenocr: warning: {message}", markup=False, style="yellow", soft_wrap=True)

    def error(self, message: str) -> None:
        self.console.print(f"qwenocr: error: {message}", markup=False, style="red", soft_wrap=True)

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
        if result.status not in GOOD_STATUSES and not self.quiet:
            detail = f": {result.error}" if result.error else ""
            self.warn(f"page {result.number}: {result.status}{detail}")

    def summary(self, finished: Sequence[Tuple[str, Sequence[PageResult], float]], failed_inputs: int) -> None:
        """A table of the run on stderr: files, pages, statuses, pages/s."""
        if self.quiet:
            return
        from rich.table import Table

        table = Table(title="qwenocr scan", title_justify="left", show_edge=False)
        for column in ("file", "pages", *GOOD_STATUSES, "other", "seconds", "pages/s"):
            table.add_column(column, justify="left" if column == "file" else "right")
        total_pages = 0
        totals: Dict[str, int] = {}
        for name, results, seconds in finished:
            counts = status_counts(results)
            for status, count in counts.items():
                totals[status] = totals.get(status, 0) + count
            table.add_row(
                _short(name, 40),
                str(len(results)),
                *_status_cells(counts),
                f"{seconds:.1f}",
                f"{len(results) / seconds:.2f}" if seconds > 0 else "-",
            )
            total_pages += len(results)
        label = f"{len(finished)} file(s)" + (f", {failed_inputs} failed" if failed_inputs else "")
        table.add_row(
            label,
            str(total_pages),
            *_status_cells(totals),
            f"{self._elapsed():.1f}",
            f"{total_pages / self._elapsed():.2f}" if self._elapsed() > 0 else "-",
            style="bold",
        )
        self.console.print(table)

    def _elapsed(self) -> float:
        return time.monotonic() - self._run_started


def _status_cells(counts: Dict[str, int]) -> List[str]:
    """The summary's status columns: one per good status, then the others in one cell."""
    other = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()) if status not in GOOD_STATUSES)
    return [str(counts.get(status, 0)) for status in GOOD_STATUSES] + [other or "-"]


def _short(name: str, width: int = 32) -> str:
    name = display_name(name)
    return name if len(name) <= width else "…" + name[-(width - 1) :]
