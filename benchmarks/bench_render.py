"""Benchmark: pages rendered per second with R render workers (qwenocr/scan/pipeline.py).

With several pages in flight (llama.cpp's --batch, a server's --concurrency), pages
finish every fraction of a second and rendering must keep up. This runs the real page
loop (`run_document`: checkpoint lookup, guarded render in child processes, blank check,
pages yielded in order) with a model that answers at once, so that the loop's pace is
the rendering's, on a generated PDF of scan-like pages at the given visual-token budget,
with R = 1, 2, 4 (or --workers) in one run: the repeats interleave the settings and the
median is kept, so the ratios hold on a noisy machine. The children are started before
the timing (a warm-up run leaves them in the pool), as they are in a scan, where they
start while the model loads. Not a test: run

    python benchmarks/bench_render.py --pages 40 --tokens 1536 --workers 1 2 4 --repeats 5
    python benchmarks/bench_render.py --pages 40 --tokens 1536 --workers 1 2 4 --repeats 5 --scan-dpi 300
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qwenocr.pages import renderguard  # noqa: E402
from qwenocr.pages.document import RenderSettings, open_document  # noqa: E402
from qwenocr.scan.pipeline import ScanOptions, available_cores, render_workers, run_document  # noqa: E402
from tests.support import samples  # noqa: E402
from tests.support.fake_engine import FakeBackend  # noqa: E402


def one_run(pdf: Path, pages: int, workers: int, in_flight: int, settings: RenderSettings, blank: bool) -> float:
    """Seconds for the whole document through the page loop with `workers` renderers."""
    backend = FakeBackend(lambda index, image, s: "", concurrency=in_flight)
    options = ScanOptions(render=settings, render_workers=workers, skip_blank=blank)
    started = time.perf_counter()
    with open_document(pdf, timeout=settings.timeout) as document:
        results = list(run_document(document, list(range(1, pages + 1)), backend, options))
    seconds = time.perf_counter() - started
    bad = [result for result in results if result.status not in ("ok", "blank")]
    if len(results) != pages or bad:
        raise SystemExit(f"the run went wrong: {len(results)} pages, failures {[r.error for r in bad]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--tokens", type=int, default=1536, help="visual-token budget per page")
    parser.add_argument("--scan-dpi", type=int, default=100, help="each page is a Letter scan at this resolution")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--in-flight", type=int, default=8, help="pages at the model at once (--batch)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-blank-check", action="store_true", help="leave out the blank check (numpy)")
    args = parser.parse_args()

    settings = RenderSettings(max_image_tokens=args.tokens, timeout=120)
    blank = not args.no_blank_check
    with tempfile.TemporaryDirectory() as folder:
        scan = (round(8.5 * args.scan_dpi), round(11 * args.scan_dpi))
        pdf = samples.write_pdf(Path(folder) / "scan.pdf", pages=args.pages, size=scan)
        with open_document(pdf) as document:
            size = document.render(1, settings).size
        one_run(pdf, args.pages, max(args.workers), args.in_flight, settings, blank)  # warm-up: children in the pool
        times: dict = {workers: [] for workers in args.workers}
        for _ in range(args.repeats):
            for workers in args.workers:
                times[workers].append(one_run(pdf, args.pages, workers, args.in_flight, settings, blank))
    renderguard._discard_spare()

    cores = available_cores()
    print(
        f"{args.pages} pages scanned at {args.scan_dpi} dpi ({scan[0]}x{scan[1]} px), rendered at {size[0]}x{size[1]}"
        f" ({args.tokens} visual tokens), {args.in_flight} in flight,"
        f" {cores} cores (os.cpu_count {os.cpu_count()}), load average {os.getloadavg()[0]:.2f};"
        f" blank check {'on' if blank else 'off'};"
        f" median of {args.repeats}; the rule picks R = {render_workers(args.in_flight, cores)} here"
    )
    base = args.pages / statistics.median(times[args.workers[0]])
    print("| R | pages/s | ms/page | vs R=%d | runs (s) |" % args.workers[0])
    print("|---|---|---|---|---|")
    for workers in args.workers:
        rate = args.pages / statistics.median(times[workers])
        runs = " ".join(f"{seconds:.2f}" for seconds in times[workers])
        print(f"| {workers} | {rate:.1f} | {1000 / rate:.1f} | {rate / base:.2f}x | {runs} |")


if __name__ == "__main__":
    main()
