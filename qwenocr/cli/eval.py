"""`qwenocr eval`: the options, and the scores of qwenocr/eval printed as a table or JSON."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from qwenocr.cli.options import NORMAL, VERBOSE, verbosity_level, verbosity_options


def register(app: typer.Typer) -> None:
    app.command("eval", help=_EVAL_HELP, no_args_is_help=True)(eval_command)


_EVAL_HELP = """Score OCR output against ground truth: CER/WER per page and overall, and text checks.

OUTPUT is what qwenocr (or another tool) produced: Markdown/text, qwenocr JSON or JSONL; - reads it from stdin. \
REFERENCE is the ground truth: Markdown/text with pages split by <!-- page N --> lines or form feeds (or one page), \
or JSON. Pages pair by number.

Markdown syntax is normalised away before scoring (see docs/eval.md); --no-normalize compares the raw text.

[bold]Examples[/bold]

  qwenocr eval report.md truth.md

  qwenocr eval report.json truth.md --json | jq .cer

  qwenocr eval report.md --checks checks.jsonl          present / absent / order checks

  qwenocr scan page.png | qwenocr eval - page.txt
"""


@verbosity_options(quiet="No warnings on stderr.", verbose="Also say how pages were paired and how long scoring took.")
def eval_command(
    ctx: typer.Context,
    output: Annotated[
        Path, typer.Argument(help="OCR output: .md/.txt, qwenocr .json or .jsonl; - for stdin.", show_default=False)
    ],
    reference: Annotated[
        Optional[Path],
        typer.Argument(help="Ground truth (.md/.txt or .json); optional with --checks.", show_default=False),
    ] = None,
    checks: Annotated[
        Optional[Path],
        typer.Option(
            "--checks", "-c", help="JSONL of checks: present, absent, order (olmOCR-Bench style).", show_default=False
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the scores as JSON (rates as fractions) instead of a table.")
    ] = False,
    normalize: Annotated[
        bool,
        typer.Option(
            "--normalize/--no-normalize", help="Strip Markdown, unify quotes and whitespace before comparing."
        ),
    ] = True,
) -> None:
    import json
    import time

    from qwenocr.console import stdout_console
    from qwenocr.errors import UsageError
    from qwenocr.eval import evaluate

    level = verbosity_level(ctx)
    if reference is None and checks is None:
        raise UsageError("nothing to score against", "give a REFERENCE file, or --checks FILE.jsonl, or both")
    if str(output) == "-" and reference is not None and str(reference) == "-":
        raise UsageError("only one of OUTPUT and REFERENCE can be - (stdin)")
    started = time.perf_counter()
    out_doc = evaluate.read_document(output, role="output")
    ref_doc = evaluate.read_document(reference, role="reference") if reference is not None else None
    check_list = evaluate.read_checks(checks) if checks is not None else None
    result = evaluate.evaluate(
        out_doc, ref_doc, check_list, normalized=normalize, checks_source=str(checks) if checks else None
    )
    elapsed = time.perf_counter() - started
    if level >= NORMAL:
        for note in result.warnings():
            typer.echo(f"qwenocr: warning: {note}", err=True)
    if level >= VERBOSE:
        if result.scores is not None:
            how = (
                "by page number"
                if result.scores.alignment == "page"
                else "as whole documents (one side has no page markers)"
            )
            typer.echo(f"qwenocr: compared {len(result.scores.pages)} page(s) {how}", err=True)
        typer.echo(f"qwenocr: scored in {elapsed:.3f} s", err=True)
    if json_output:
        sys.stdout.write(json.dumps(result.to_dict(), ensure_ascii=False, indent=2) + "\n")
        return
    console = stdout_console()
    for part in evaluate.render(result):
        console.print(part)
