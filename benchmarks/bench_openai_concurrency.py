"""Client overhead and concurrency of `--backend openai` (issue 6 benchmark).

Starts the fake OpenAI-compatible server (tests/support/openai_fake_server.py) in its own
process, answering every request after a fixed delay and serving requests in
parallel, then pushes N page images through `OpenAIBackend.generate` from a thread
pool of `c` workers, the way the pipeline keeps `concurrency` pages in flight. With a
server that takes `delay` seconds per page whatever the load, the ideal is
`c / delay` pages/s; the ratio to it is what the client (image encoding, HTTP, SSE
parsing, threads) costs. Goal: >= 0.9 up to 16 pages in flight.

The server runs in a separate process so that its Python threads don't compete with
the client's for the GIL: a real inference server never shares the client's process.

    .venv/bin/python benchmarks/bench_openai_concurrency.py            # 1, 4, 16
    .venv/bin/python benchmarks/bench_openai_concurrency.py --levels 1 4 16 32 --pages 96
    .venv/bin/python benchmarks/bench_openai_concurrency.py --pre-encode   # transport only

By default each page image is encoded inside `generate` (as in a real run), so the
numbers include the client's image encoding, which on a small machine is the ceiling
at high page rates. `--pre-encode` hands `generate` ready `data:` URIs to measure
HTTP, streaming and threads alone. `--repeat N` keeps each level's best of N runs
(the machine may be shared).

With `--capacity K` the server takes only K requests at once (`--over-capacity`:
"interrupt", like llama-cpp-python's server with its defaults; "queue"; 429 or 503),
and each level runs twice: with the adaptive limit per server (what scan does) and with
the limit fixed at the level (`adaptive=False`, what qwenocr did before). It shows what
pushing more pages than a server takes costs, in pages/s and failed pages:

    .venv/bin/python benchmarks/bench_openai_concurrency.py --capacity 2 --over-capacity 429 --levels 2 4 8

Results go to stdout as a table (and as JSON with --json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qwenocr.engines.base import GenerationSettings  # noqa: E402
from qwenocr.engines.openai import OpenAIBackend, encode_image  # noqa: E402
from qwenocr.errors import BackendError  # noqa: E402
from tests.support.samples import page_image  # noqa: E402


def start_server(delay: float, capacity: Optional[int] = None, over_capacity: str = "interrupt") -> tuple:
    command = [sys.executable, "-m", "tests.support.openai_fake_server", "--delay", str(delay)]
    if capacity:
        # The answer's time spread over its 40 pieces, so that an interruption can land.
        command = [*command[:-1], "0", "--piece-delay", str(delay / 40)]
        command += ["--capacity", str(capacity), "--over-capacity", over_capacity]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    url = process.stdout.readline().strip()
    if not url.startswith("http://"):
        process.kill()
        raise SystemExit(f"the fake server did not start (said {url!r})")
    return process, url


def run_level(url: str, images: list, concurrency: int, adaptive: bool = True) -> dict:
    client = OpenAIBackend([url], model="qwen3.5-fake", concurrency=concurrency, timeout=60, adaptive=adaptive)
    settings = GenerationSettings(max_tokens=512)

    def page(image: Any) -> bool:
        try:
            return bool(client.generate(image, "Read all the text in the image.", settings).text)
        except BackendError:  # out of attempts: the page would be `error`
            return False

    started = time.perf_counter()
    with ThreadPoolExecutor(client.concurrency) as pool:
        # map keeps the page order, as the pipeline does; the pool keeps c in flight.
        results = list(pool.map(page, images))
    elapsed = time.perf_counter() - started
    done = sum(results)
    return {
        "concurrency": concurrency,
        "adaptive": adaptive,
        "pages": len(images),
        "failed": len(images) - done,
        "seconds": elapsed,
        "pages_per_s": done / elapsed,
        "limit_after": next(iter(client.limits.values())),
    }


def compare(args: argparse.Namespace, images: list) -> None:
    """--capacity: adaptive against fixed at each level."""
    process, url = start_server(args.delay, args.capacity, args.over_capacity)
    try:
        rows = [run_level(url, images, c, adaptive) for c in args.levels for adaptive in (True, False)]
    finally:
        process.stdin.close()
        process.wait(10)
    if args.json:
        print(json.dumps({"delay_s": args.delay, "capacity": args.capacity, "levels": rows}, indent=2))
        return
    print(
        f"fake server: {args.delay * 1000:.0f} ms per page, {args.capacity} at once, beyond: {args.over_capacity};"
        f" {args.pages} pages per run; ideal {args.capacity / args.delay:.1f} pages/s"
    )
    print(f"{'in flight':>9} {'limit':>9} {'seconds':>8} {'pages/s':>8} {'failed':>6} {'limit after':>11}")
    for row in rows:
        kind = "adaptive" if row["adaptive"] else "fixed"
        print(
            f"{row['concurrency']:>9} {kind:>9} {row['seconds']:>8.2f} {row['pages_per_s']:>8.2f}"
            f" {row['failed']:>6} {row['limit_after']:>11}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=0.2, help="server seconds per page (default 0.2)")
    parser.add_argument("--pages", type=int, default=64, help="pages per level (default 64)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--size", type=int, nargs=2, default=[1240, 1754], metavar=("W", "H"), help="page image size (A4 at 150 DPI)"
    )
    parser.add_argument("--pre-encode", action="store_true", help="encode the images before timing (transport only)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per level; the best is kept")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--capacity", type=int, help="the server takes this many at once: adaptive vs fixed")
    parser.add_argument("--over-capacity", default="interrupt", help='"interrupt", "queue", 429 or 503')
    args = parser.parse_args()

    images = [page_image(n, size=tuple(args.size)) for n in range(1, args.pages + 1)]
    started = time.perf_counter()
    for image in images[:16]:
        encode_image(image)
    encode_ms = (time.perf_counter() - started) / min(16, len(images)) * 1000
    if args.pre_encode:
        images = [encode_image(image) for image in images]
    if args.capacity:
        compare(args, images)
        return

    process, url = start_server(args.delay)
    try:
        run_level(url, images[: min(8, len(images))], 4)  # warm-up: imports, first connections
        rows = [
            max((run_level(url, images, c) for _ in range(max(1, args.repeat))), key=lambda row: row["pages_per_s"])
            for c in args.levels
        ]
    finally:
        process.stdin.close()
        process.wait(10)

    base = rows[0]["pages_per_s"] / rows[0]["concurrency"]
    for row in rows:
        ideal = row["concurrency"] / args.delay
        row["ideal_pages_per_s"] = ideal
        row["ratio_to_ideal"] = row["pages_per_s"] / ideal
        row["ratio_to_linear_from_first"] = row["pages_per_s"] / (base * row["concurrency"])
    summary = {
        "delay_s": args.delay,
        "page_size": args.size,
        "encode_ms_per_page": round(encode_ms, 1),
        "pre_encoded": args.pre_encode,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "levels": rows,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(
        f"fake server: {args.delay * 1000:.0f} ms per page, parallel;"
        f" {args.pages} pages of {args.size[0]}x{args.size[1]} per level"
    )
    encoding = "done before timing (--pre-encode)" if args.pre_encode else "inside generate, timed"
    print(
        f"client image encoding: {encode_ms:.1f} ms per page, {encoding};"
        f" {os.cpu_count()} CPUs; Python {summary['python']}"
    )
    print(
        f"{'in flight':>9} {'seconds':>8} {'pages/s':>8} {'ideal':>7} {'ratio':>6}"
        f" {'vs c=' + str(rows[0]['concurrency']):>7}"
    )
    for row in rows:
        print(
            f"{row['concurrency']:>9} {row['seconds']:>8.2f} {row['pages_per_s']:>8.2f} "
            f"{row['ideal_pages_per_s']:>7.1f} {row['ratio_to_ideal']:>6.2f} {row['ratio_to_linear_from_first']:>7.2f}"
        )


if __name__ == "__main__":
    main()
