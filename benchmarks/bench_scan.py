"""Benchmarks for `qwenocr scan`: pipeline overhead, memory growth, start-up time.

Each is a ratio or a difference measured on the same machine in one run, because these
machines are noisy; the numbers are recorded in docs/performance.md. Not a test: run

    python benchmarks/bench_scan.py overhead --pages 20 --repeats 5
    python benchmarks/bench_scan.py memory --small 10 --large 500
    python benchmarks/bench_scan.py modes --pages 50
    python benchmarks/bench_scan.py startup --runs 15
    python benchmarks/bench_scan.py isolation --pages 20 --repeats 3

The tiny random-weight checkpoints come from tests/fixtures/build_tiny_models.py
(QWENOCR_TEST_MODELS, as set by scripts/test.sh; or --models DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import samples  # noqa: E402

# The engine settings both sides of the overhead comparison use. Sampling (not greedy)
# because greedy decoding of random weights emits blank lines, which the loop guard
# rightly stops and retries: that would compare retry policy, not pipeline overhead.
MAX_TOKENS = 24
IMAGE_TOKENS = 256
TEMPERATURE = "1.0"

# The bare engine calls, as a user of llama-cpp-python would write them: load the model,
# call create_chat_completion with each pre-rendered page as a PNG data URI. It prints the
# number of tokens generated, so the benchmark can check both sides did the same work.
BARE_ENGINE = r"""
import base64, sys, ctypes
from pathlib import Path
import llama_cpp
from llama_cpp.llama_chat_format import MTMDChatHandler

@llama_cpp.llama_log_callback
def quiet(level, text, data):
    pass
llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))

class Handler(MTMDChatHandler):
    def __call__(self, **kwargs):
        kwargs["enable_thinking"] = False
        return super().__call__(**kwargs)

model, mmproj, folder, max_tokens, n_ctx, prompt, temperature = sys.argv[1:8]
llm = llama_cpp.Llama(model_path=model, chat_handler=Handler(clip_model_path=mmproj, verbose=False),
                      n_ctx=int(n_ctx), n_gpu_layers=-1, verbose=False)
tokens = 0
for png in sorted(Path(folder).glob("*.png")):
    uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    llm.reset()
    out = llm.create_chat_completion(
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}},
                                                {"type": "text", "text": prompt}]}],
        max_tokens=int(max_tokens), temperature=float(temperature), top_k=0, top_p=1.0, min_p=0.0,
        repeat_penalty=1.0, seed=0)
    tokens += out["usage"]["completion_tokens"]
print(tokens)
"""

# qwenocr's llama.cpp backend alone on the same pre-rendered pages: the difference between
# this and the whole CLI is the pipeline's own cost (start-up, rendering, checks, output).
BACKEND_ONLY = r"""
import sys
from pathlib import Path
from PIL import Image
from qwenocr.engines.base import GenerationSettings
from qwenocr.engines.llamacpp import LlamaCppBackend

model, mmproj, folder, max_tokens, n_ctx, prompt, temperature = sys.argv[1:8]
backend = LlamaCppBackend(Path(model), Path(mmproj), n_ctx=int(n_ctx))
settings = GenerationSettings(max_tokens=int(max_tokens), temperature=float(temperature))
tokens = 0
for png in sorted(Path(folder).glob("*.png")):
    with Image.open(png) as image:
        tokens += backend.generate(image.convert("RGB"), prompt, settings).output_tokens
backend.close()
print(tokens)
"""


def _models(args) -> Path:
    root = args.models or os.environ.get("QWENOCR_TEST_MODELS")
    if not root:
        sys.exit("set QWENOCR_TEST_MODELS or pass --models (run bash scripts/test.sh first)")
    return Path(root)


def _gguf(models: Path) -> tuple[Path, Path]:
    manifest = json.loads((models / "manifest.json").read_text())
    return models / manifest["dense_gguf"], models / manifest["dense_mmproj"]


def _scan_command(pdf: Path, model: Path, mmproj: Path, *options: object) -> list[str]:
    """`qwenocr scan PDF` on the tiny GGUF, quiet and without resuming, plus `options`."""
    return [
        sys.executable,
        "-m",
        "qwenocr",
        "scan",
        str(pdf),
        "--model",
        str(model),
        "--mmproj",
        str(mmproj),
        "--no-resume",
        "--quiet",
        *map(str, options),
    ]


def _timed(command: list[str]) -> tuple[float, int, float, str]:
    """Wall seconds, peak RSS (KiB), CPU seconds (user + system) and stdout of a child.

    CPU seconds are reported beside wall time because they suffer less from other
    processes competing for the machine's two cores."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", *command], capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(command)}\n{proc.stderr[-2000:]}")
    peak_kib, user, system = proc.stderr.strip().splitlines()[-1].split()
    return elapsed, int(peak_kib), float(user) + float(system), proc.stdout


def overhead(args) -> None:
    """qwenocr scan vs the bare engine calls on the same pre-rendered pages.

    Three sides, interleaved run by run so that drifting load hits all alike: `bare`
    (stock llama-cpp-python calls), `backend` (qwenocr's backend alone) and `qwenocr`
    (the whole CLI on the PDF). qwenocr/bare is the goal (≤ 1.05); qwenocr/backend is
    what the pipeline itself adds. Medians and minimums are both reported: on a shared
    machine noise only ever adds time, so the minimum is the steadier estimate."""
    from qwenocr.pages.document import RenderSettings, open_document
    from qwenocr.scan.pipeline import DEFAULT_PROMPT

    model, mmproj = _gguf(_models(args))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pdf = samples.write_pdf(tmp / "doc.pdf", pages=args.pages, size=(850, 1100))
        rendered = tmp / "pages"
        rendered.mkdir()
        with open_document(pdf) as document:
            for number in range(1, document.page_count + 1):
                document.render(number, RenderSettings(max_image_tokens=IMAGE_TOKENS)).save(
                    rendered / f"{number:04d}.png"
                )
        n_ctx = str(IMAGE_TOKENS + MAX_TOKENS + 512 + 256)
        engine_args = [str(model), str(mmproj), str(rendered), str(MAX_TOKENS), n_ctx, DEFAULT_PROMPT, TEMPERATURE]
        commands = {
            "bare": [sys.executable, "-c", BARE_ENGINE, *engine_args],
            "backend": [sys.executable, "-c", BACKEND_ONLY, *engine_args],
            "qwenocr": _scan_command(
                pdf,
                model,
                mmproj,
                "--max-tokens",
                MAX_TOKENS,
                "--max-image-tokens",
                IMAGE_TOKENS,
                "--temperature",
                TEMPERATURE,
                "--n-ctx",
                n_ctx,
                "-f",
                "json",
                "-o",
                tmp / "out.json",
            ),
        }
        wall = {name: [] for name in commands}
        cpu = {name: [] for name in commands}
        tokens = {}
        for _ in range(args.repeats):
            for name, command in commands.items():
                seconds, _, cpu_seconds, stdout = _timed(command)
                wall[name].append(seconds)
                cpu[name].append(cpu_seconds)
                if name == "qwenocr":
                    pages = json.loads((tmp / "out.json").read_text())["pages"]
                    tokens[name] = sum(p["output_tokens"] or 0 for p in pages)
                    retried = sum(1 for p in pages if p["attempts"] > 1)
                else:
                    tokens[name] = int(stdout.split()[-1])

    def ratio(a, b, pick):
        return round(pick(wall[a]) / pick(wall[b]), 3)

    median = statistics.median
    print(
        json.dumps(
            {
                "benchmark": "overhead",
                "pages": args.pages,
                "repeats": args.repeats,
                "median_s": {name: round(median(times), 2) for name, times in wall.items()},
                "ratio_vs_bare": ratio("qwenocr", "bare", median),
                "ratio_vs_bare_min": ratio("qwenocr", "bare", min),
                "cpu_ratio_vs_bare": round(median(cpu["qwenocr"]) / median(cpu["bare"]), 3),
                "ratio_vs_backend": ratio("qwenocr", "backend", median),
                "ratio_vs_backend_min": ratio("qwenocr", "backend", min),
                "cpu_ratio_vs_backend": round(median(cpu["qwenocr"]) / median(cpu["backend"]), 3),
                "tokens": tokens,
                "pages_retried": retried,
                "all_s": {name: [round(t, 2) for t in times] for name, times in wall.items()},
            }
        )
    )


def memory(args) -> None:
    """Peak RSS of qwenocr scan on a small and a large PDF: the growth must stay small."""
    model, mmproj = _gguf(_models(args))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for pages in (args.small, args.large):
            pdf = samples.write_pdf(tmp / f"doc{pages}.pdf", pages=pages, size=(850, 1100))
            command = _scan_command(
                pdf,
                model,
                mmproj,
                "--max-tokens",
                16,
                "--max-image-tokens",
                64,
                "-f",
                "json",
                "-o",
                tmp / f"out{pages}.json",
            )
            seconds, peak, _, _ = _timed(command)
            results[pages] = {"seconds": round(seconds, 1), "peak_rss_mb": round(peak / 1024, 1)}
    growth = results[args.large]["peak_rss_mb"] - results[args.small]["peak_rss_mb"]
    print(json.dumps({"benchmark": "memory", "runs": results, "growth_mb": round(growth, 1)}))


def startup(args) -> None:
    """`qwenocr --help` against a bare `python -c pass` (median of several runs)."""

    def median_of(command):
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    bare = median_of([sys.executable, "-c", "pass"])
    help_ = median_of([sys.executable, "-m", "qwenocr", "--help"])
    scan_help = median_of([sys.executable, "-m", "qwenocr", "scan", "--help"])
    print(
        json.dumps(
            {
                "benchmark": "startup",
                "python_s": round(bare, 3),
                "help_s": round(help_, 3),
                "scan_help_s": round(scan_help, 3),
                "help_minus_python_s": round(help_ - bare, 3),
            }
        )
    )


def modes(args) -> None:
    """--mode auto vs --mode ocr on a born-digital PDF: the text layer skips the model."""
    from tests.support import textlayer_pdfs

    model, mmproj = _gguf(_models(args))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pdf = tmp / "born-digital.pdf"
        one_page = textlayer_pdfs.born_digital_pdf()
        import pypdfium2 as pdfium

        document = pdfium.PdfDocument.new()
        source = pdfium.PdfDocument(one_page)
        for _ in range(args.pages):
            document.import_pages(source)
        document.save(str(pdf))
        for mode in ("ocr", "auto"):
            command = _scan_command(
                pdf,
                model,
                mmproj,
                "--mode",
                mode,
                "--max-tokens",
                MAX_TOKENS,
                "--max-image-tokens",
                IMAGE_TOKENS,
                "-o",
                tmp / f"{mode}.md",
            )
            results[mode] = round(_timed(command)[0], 2)
    print(
        json.dumps(
            {
                "benchmark": "modes",
                "pages": args.pages,
                "seconds": results,
                "speedup": round(results["ocr"] / results["auto"], 1),
            }
        )
    )


def isolation(args) -> None:
    """What running the engine in a worker process costs (`engines.isolated`).

    Two measurements. Per page: the same pre-rendered pages through llama.cpp in this
    process and through `IsolatedEngine` (both loaded side by side, calls interleaved,
    sampling with the same seed so both generate the same tokens); the ratio of the
    medians is the isolation's cost per page (the page's pixels through a pipe, the
    text back as messages). Per run: the whole CLI with QWENOCR_ISOLATE_ENGINE=0 and 1,
    interleaved, which adds the worker's start-up."""
    from PIL import Image

    from qwenocr.engines.base import GenerationSettings
    from qwenocr.engines.isolated import IsolatedEngine
    from qwenocr.engines.llamacpp import LlamaCppBackend
    from qwenocr.pages.document import RenderSettings, open_document
    from qwenocr.scan.pipeline import DEFAULT_PROMPT

    model, mmproj = _gguf(_models(args))
    settings = GenerationSettings(max_tokens=MAX_TOKENS, temperature=float(TEMPERATURE))
    per_page = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pdf = samples.write_pdf(tmp / "doc.pdf", pages=args.pages, size=(850, 1100))
        for image_tokens in (IMAGE_TOKENS, 1536):
            with open_document(pdf) as document:
                pages = [
                    document.render(number, RenderSettings(max_image_tokens=image_tokens))
                    for number in range(1, document.page_count + 1)
                ]
            n_ctx = image_tokens + MAX_TOKENS + 512 + 256
            local = LlamaCppBackend(model, mmproj, n_ctx=n_ctx)
            isolated = IsolatedEngine(
                "llama.cpp",
                {"model_path": str(model), "mmproj_path": str(mmproj), "n_ctx": n_ctx, "n_gpu_layers": -1},
            )
            times: dict = {"in_process": [], "isolated": []}
            tokens = {"in_process": 0, "isolated": 0}
            try:
                for index, page in enumerate(pages * args.repeats):
                    order = [("in_process", local), ("isolated", isolated)]
                    for name, engine in order if index % 2 == 0 else reversed(order):
                        assert isinstance(page, Image.Image)
                        start = time.perf_counter()
                        generation = engine.generate(page, DEFAULT_PROMPT, settings)
                        times[name].append(time.perf_counter() - start)
                        tokens[name] += generation.output_tokens
            finally:
                local.close()
                isolated.close()
            median = statistics.median
            per_page[image_tokens] = {
                "median_s": {name: round(median(values), 4) for name, values in times.items()},
                "ratio": round(median(times["isolated"]) / median(times["in_process"]), 3),
                "ratio_min": round(min(times["isolated"]) / min(times["in_process"]), 3),
                "tokens": tokens,
            }
        command = _scan_command(
            pdf,
            model,
            mmproj,
            "--max-tokens",
            MAX_TOKENS,
            "--max-image-tokens",
            IMAGE_TOKENS,
            "--temperature",
            TEMPERATURE,
            "-f",
            "json",
            "-o",
            tmp / "out.json",
        )
        wall: dict = {"0": [], "1": []}
        for _ in range(args.repeats):
            for flag in ("0", "1"):
                os.environ["QWENOCR_ISOLATE_ENGINE"] = flag
                wall[flag].append(_timed(command)[0])
        os.environ.pop("QWENOCR_ISOLATE_ENGINE", None)
    print(
        json.dumps(
            {
                "benchmark": "isolation",
                "pages": args.pages,
                "repeats": args.repeats,
                "per_page_by_image_tokens": per_page,
                "cli_median_s": {
                    "in_process": round(statistics.median(wall["0"]), 2),
                    "isolated": round(statistics.median(wall["1"]), 2),
                },
                "cli_ratio": round(statistics.median(wall["1"]) / statistics.median(wall["0"]), 3),
                "cli_ratio_min": round(min(wall["1"]) / min(wall["0"]), 3),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="tiny model fixture dir (default: $QWENOCR_TEST_MODELS)")
    sub = parser.add_subparsers(dest="which", required=True)
    p = sub.add_parser("overhead")
    p.add_argument("--pages", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p = sub.add_parser("memory")
    p.add_argument("--small", type=int, default=10)
    p.add_argument("--large", type=int, default=500)
    p = sub.add_parser("modes")
    p.add_argument("--pages", type=int, default=50)
    p = sub.add_parser("startup")
    p.add_argument("--runs", type=int, default=15)
    p = sub.add_parser("isolation")
    p.add_argument("--pages", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    commands = {"overhead": overhead, "memory": memory, "modes": modes, "startup": startup, "isolation": isolation}
    commands[args.which](args)


if __name__ == "__main__":
    main()
