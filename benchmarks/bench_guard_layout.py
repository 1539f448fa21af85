"""The loop guard (qwenocr/scan/repetition.py) on layout mode's HTML answers.

Uses the corpus of tests/test_repetition_layout.py: realistic layout pages (a 320-row
ledger three ways, a form with identical empty fields, a sparse statistics table, a
contents page, a two-column article, a 100-item list, references) and looping answers
(the same paragraph or row with a fixed or creeping box, a soup of empty cells, an empty
form field, a list item, a reference), each also as the same loop in Markdown. Reports:

- false alarms on the legitimate pages: the HTML-mode guard (`html=True`, what --layout
  uses) and the plain guard (what --layout used before);
- for each loop, the tokens and copies the model had generated when the guard stopped
  it: HTML answer with the HTML guard, HTML answer with the plain guard, and the same
  loop in Markdown with the plain guard;
- the guard's cost per token, streaming the legitimate pages token by token.

Tokens are counted with Qwen3.5's own tokenizer (tokenizer.json of the tiny test
checkpoint: QWENOCR_TEST_MODELS, or tests/fixtures/build_tiny_models.py builds it) when
the `tokenizers` package and the file are there, else estimated as 3.5 characters each.

    python benchmarks/bench_guard_layout.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qwenocr.scan.repetition import RepetitionGuard  # noqa: E402
from tests.test_repetition_layout import LEGIT, LOOPS, MARKDOWN_HEAD, looping  # noqa: E402

Splitter = Callable[[str], List[str]]


def _tokenizer() -> Optional[Splitter]:
    """Text -> its tokens' pieces (Qwen3.5's tokenizer), or None where unavailable."""
    models = os.environ.get("QWENOCR_TEST_MODELS")
    if not models:
        return None
    try:
        from tokenizers import Tokenizer

        manifest = json.loads((Path(models) / "manifest.json").read_text())
        tok = Tokenizer.from_file(str(Path(models) / manifest["dense_hf"] / "tokenizer.json"))
    except Exception:  # no package, no file: estimate instead
        return None

    def split(text: str) -> List[str]:
        pieces, start = [], 0
        for _, end in tok.encode(text, add_special_tokens=False).offsets:
            if end > start:
                pieces.append(text[start:end])
                start = end
        if start < len(text):
            pieces.append(text[start:])
        return pieces

    return split


def _estimate(text: str) -> List[str]:
    # 3.5 characters a token: alternate 3- and 4-character pieces.
    pieces, i, k = [], 0, 0
    while i < len(text):
        n = 3 + k % 2
        pieces.append(text[i : i + n])
        i, k = i + n, k + 1
    return pieces


def caught_after(pieces: List[str], html: bool) -> Optional[tuple]:
    """(tokens, characters) fed when the guard stopped the model; None if it never did."""
    guard = RepetitionGuard(html=html)
    fed = 0
    for n, piece in enumerate(pieces, 1):
        fed += len(piece)
        if guard.feed(piece):
            return n, fed
    return (len(pieces), fed) if guard.finish() else None


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="timing runs (the median is reported)")
    args = parser.parse_args(argv)
    split = _tokenizer()
    print(f"tokens: {'Qwen3.5 tokenizer' if split else 'estimated, 3.5 characters each'}")
    split = split or _estimate

    print("\nfalse alarms on legitimate layout pages (loop kind, or -)")
    print(f"{'page':36} {'chars':>7} {'tokens':>7}  {'html guard':12} {'plain guard':12}")
    alarms = {True: 0, False: 0}
    for name, text in LEGIT.items():
        pieces = split(text)
        row = []
        for html in (True, False):
            guard = RepetitionGuard(html=html)
            for piece in pieces:
                if guard.feed(piece):
                    break
            guard.finish()
            row.append(guard.loop.kind if guard.loop else "-")
            alarms[html] += guard.looping
        print(f"{name:36} {len(text):>7} {len(pieces):>7}  {row[0]:12} {row[1]:12}")
    print(f"false alarms: html guard {alarms[True]}/{len(LEGIT)}, plain guard {alarms[False]}/{len(LEGIT)}")

    print("\nloops: tokens (copies) generated when the guard stopped the model; miss = ran to max tokens")
    print(f"{'loop':32} {'HTML, html guard':>18} {'HTML, plain guard':>18} {'Markdown, plain':>18}")
    caught = {"html": 0, "plain": 0, "md": 0}
    for name, (prefix, copy, _, markdown_unit) in LOOPS.items():
        text = looping(prefix, copy, 30_000)
        markdown = looping(MARKDOWN_HEAD, lambda i, unit=markdown_unit: unit, 30_000)
        cells = []
        for key, sample, head, unit, html in (
            ("html", text, prefix, len(copy(0)), True),
            ("plain", text, prefix, len(copy(0)), False),
            ("md", markdown, MARKDOWN_HEAD, len(markdown_unit), False),
        ):
            head_tokens = len(split(head))
            found = caught_after(split(sample), html)
            if found is None:
                cells.append("miss")
                continue
            caught[key] += 1
            tokens, chars = found
            cells.append(f"{tokens - head_tokens} ({(chars - len(head)) / unit:.1f})")
        print(f"{name:32} {cells[0]:>18} {cells[1]:>18} {cells[2]:>18}")
    n = len(LOOPS)
    html, plain, md = caught["html"], caught["plain"], caught["md"]
    print(f"caught: HTML with html guard {html}/{n}, with plain guard {plain}/{n}; Markdown {md}/{n}")

    print("\ncost: the legitimate pages neither guard stops, in a row, token by token (median of runs)")
    corpus = "\n".join(text for name, text in LEGIT.items() if "statistics" not in name and "form" not in name)
    pieces = split(corpus)
    markdown_like = split(
        looping("", lambda i: f"| S{i:03d} | Station {i} | 12.5 | | 3.25 | estimated |\n", len(corpus))
    )
    for label, sample, html in (
        ("HTML pages, html guard", pieces, True),
        ("HTML pages, plain guard", pieces, False),
        ("Markdown table, plain guard", markdown_like, False),
    ):
        runs = []
        for _ in range(args.repeat):
            guard = RepetitionGuard(html=html)
            start = time.perf_counter()
            for piece in sample:
                guard.feed(piece)
            guard.finish()
            runs.append(time.perf_counter() - start)
        seconds = statistics.median(runs)
        print(
            f"{label:30} {len(sample):>7} tokens  {seconds * 1e3:7.1f} ms  "
            f"{seconds / len(sample) * 1e6:5.2f} us/token  ({guard.scans} checks)"
        )


if __name__ == "__main__":
    main()
