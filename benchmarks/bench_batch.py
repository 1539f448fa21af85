"""Pages per second with several pages decoding at once in llama.cpp (`scan --batch N`).

For each checkpoint (the tiny dense and MoE GGUFs of tests/fixtures/build_tiny_models.py;
the real-dimension 0.8B of benchmarks/real_shapes.py when it has been built, F16 and
Q8_0) the same pre-rendered pages go through:

- the bare sequential engine: qwenocr's one-page-at-a-time `LlamaCppBackend`, page after
  page (what `--batch 1` runs);
- `LlamaCppBatchBackend` at batch 1, 2, 4 and 8, with as many threads as the batch
  calling `generate` (what `scan --batch N` runs in its worker);

each in a fresh child process (one model in memory at a time), interleaved over the
repeats, all generating exactly `--max-tokens` tokens a page (greedy; random weights
rarely end a page early, and the check below says when they do). Reported: pages/s, the
ratio to the bare engine in the same run, and where the batch engine's time went (image
prefill, one page at a time, against the shared decode steps), with the peak RSS of each
child for the memory each extra sequence costs. Not a test: the numbers go to
docs/performance.md.

    python benchmarks/bench_batch.py                       # tiny checkpoints
    python benchmarks/bench_batch.py --real                # + the 0.8B real dimensions (slow)
    python benchmarks/bench_batch.py --batches 1,2,4 --pages 8 --max-tokens 64 --image-tokens 256
    python benchmarks/bench_batch.py --no-tiny --gguf M.gguf --mmproj P.gguf --name "9B real dims Q8_0"

The last form runs any GGUF pair, e.g. the 9B written by benchmarks/real_shapes_gguf.py on
a GPU machine (docs/performance.md says how the CUDA numbers there were taken).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# One run in a child: load, read every page, print what it measured as one JSON line.
CHILD = r"""
import json, sys, threading, time, resource
from pathlib import Path
from PIL import Image
from qwenocr.engines.base import GenerationSettings
from qwenocr.scan.pipeline import DEFAULT_PROMPT

model, mmproj, folder, batch, max_tokens, n_ctx = sys.argv[1:7]
batch, max_tokens, n_ctx = int(batch), int(max_tokens), int(n_ctx)
pages = []
for png in sorted(Path(folder).glob("*.png")):
    with Image.open(png) as image:
        pages.append(image.convert("RGB"))
settings = GenerationSettings(max_tokens=max_tokens, temperature=0.0)
t0 = time.perf_counter()
if batch == 0:
    from qwenocr.engines.llamacpp import LlamaCppBackend
    engine = LlamaCppBackend(Path(model), Path(mmproj), n_ctx=n_ctx)
else:
    from qwenocr.engines.llamacpp_batch import LlamaCppBatchBackend
    engine = LlamaCppBatchBackend(Path(model), Path(mmproj), batch=batch, n_ctx=n_ctx)
load_s = time.perf_counter() - t0
tokens = [0] * len(pages)
texts = [""] * len(pages)
lock = threading.Lock()
queue = list(range(len(pages)))

def worker():
    while True:
        with lock:
            if not queue:
                return
            index = queue.pop(0)
        generation = engine.generate(pages[index], DEFAULT_PROMPT, settings)
        tokens[index], texts[index] = generation.output_tokens, generation.text

t1 = time.perf_counter()
threads = [threading.Thread(target=worker) for _ in range(max(batch, 1))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
wall = time.perf_counter() - t1
stats = dict(getattr(engine, "stats", {}) or {})
gpu_mb = None  # on a GPU machine: the card's used memory with this model loaded (one child at a time)
try:
    import subprocess
    smi = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=20)
    gpu_mb = int(smi.stdout.split()[0]) if smi.returncode == 0 else None
except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
    pass
engine.close()
print(json.dumps({"load_s": load_s, "wall_s": wall, "tokens": tokens, "texts": texts, "stats": stats,
                  "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "gpu_mb": gpu_mb}))
"""


def checkpoints(args: argparse.Namespace) -> List[Dict[str, Any]]:
    import real_shapes

    found: List[Dict[str, Any]] = [] if args.no_tiny else real_shapes.tiny_checkpoints()
    real = args.real
    if real:
        entry = real_shapes.built("qwen3.5-0.8B")
        if entry is None:
            print("(no real-dimension 0.8B: run python benchmarks/real_shapes.py --only qwen3.5-0.8B)", file=sys.stderr)
        else:
            found.append({"name": "0.8B real dims F16", "gguf": Path(entry["gguf"]), "mmproj": Path(entry["mmproj"])})
            if "gguf_q8_0" in entry:
                found.append(
                    {"name": "0.8B real dims Q8_0", "gguf": Path(entry["gguf_q8_0"]), "mmproj": Path(entry["mmproj"])}
                )
    if args.gguf:
        found.append({"name": args.name or args.gguf.stem, "gguf": args.gguf, "mmproj": args.mmproj})
    return found


def render_pages(folder: Path, pages: int, image_tokens: int) -> None:
    from qwenocr.pages.document import RenderSettings, open_document
    from tests.support import samples

    pdf = samples.write_pdf(folder / "doc.pdf", pages=pages, size=(850, 1100))
    with open_document(pdf) as document:
        for number in range(1, document.page_count + 1):
            document.render(number, RenderSettings(max_image_tokens=image_tokens)).save(folder / f"{number:04d}.png")


def run_child(ckpt: Dict[str, Any], folder: Path, batch: int, max_tokens: int, n_ctx: int) -> Dict[str, Any]:
    command = [sys.executable, "-c", CHILD, str(ckpt["gguf"]), str(ckpt["mmproj"]), str(folder)]
    command += [str(batch), str(max_tokens), str(n_ctx)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="also the real-dimension 0.8B (F16 and Q8_0)")
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--image-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--no-tiny", action="store_true", help="leave out the tiny checkpoints")
    parser.add_argument("--gguf", type=Path, help="also this model GGUF (with --mmproj)")
    parser.add_argument("--mmproj", type=Path)
    parser.add_argument("--name", help="the --gguf checkpoint's name in the table")
    args = parser.parse_args()
    if bool(args.gguf) != bool(args.mmproj):
        parser.error("--gguf and --mmproj go together")
    batches = [int(b) for b in args.batches.split(",")]
    n_ctx = args.image_tokens + args.max_tokens + 512
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        render_pages(folder, args.pages, args.image_tokens)
        for ckpt in checkpoints(args):
            runs: Dict[int, List[Dict[str, Any]]] = {b: [] for b in [0, *batches]}
            for _ in range(args.repeats):
                for batch in runs:  # interleaved: each repeat runs every setting once
                    runs[batch].append(run_child(ckpt, folder, batch, args.max_tokens, n_ctx))
                    print(f"[bench] {ckpt['name']} batch {batch}: {runs[batch][-1]['wall_s']:.2f} s", file=sys.stderr)
            bare = statistics.median(r["wall_s"] for r in runs[0])
            reference = runs[0][0]["texts"]
            for batch, results in runs.items():
                wall = statistics.median(r["wall_s"] for r in results)
                stats = results[-1]["stats"]
                rows.append(
                    {
                        "checkpoint": ckpt["name"],
                        "batch": batch or "bare",
                        "pages_per_s": round(args.pages / wall, 3),
                        "vs_bare": round(bare / wall, 2),
                        "tokens": sum(results[-1]["tokens"]),
                        "same_text_as_bare": results[-1]["texts"] == reference,
                        **divergence(results[-1]["texts"], reference),
                        "peak_rss_gb": round(max(r["peak_rss_kib"] for r in results) * 1024 / 1e9, 3),
                        "gpu_gb": gpu_gb(results),
                        "stats": stats,
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(
        f"{args.pages} pages, {args.image_tokens} visual tokens, {args.max_tokens} tokens a page (greedy), "
        f"n_ctx {n_ctx} per page, median of {args.repeats}\n"
    )
    on_gpu = any(r["gpu_gb"] is not None for r in rows)
    memory = "gpu_gb" if on_gpu else "peak_rss_gb"
    memory_label = "GPU memory" if on_gpu else "peak RSS"
    print(f"| checkpoint | batch | pages/s | ÷ bare engine | tokens | same text as bare | {memory_label} GB |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(
            f"| {r['checkpoint']} | {r['batch']} | {r['pages_per_s']:.3f} | {r['vs_bare']:.2f}× | {r['tokens']} |"
            f" {'yes' if r['same_text_as_bare'] else 'no'} | {r[memory]:.2f} |"
        )
    print(
        "\nPages whose text differs from the bare engine's (median share of the bare text before the first difference):"
    )
    for r in rows:
        if r["differing_agree_before"] is not None:
            agree = r["differing_agree_before"]
            print(
                f"- {r['checkpoint']} batch {r['batch']}: {r['pages_same']} same, the rest agree on {agree:.0%} first"
            )
    print("\nWhere the batch engine's time went (scheduler thread, last repeat):")
    for r in rows:
        st = r["stats"]
        if st.get("steps"):
            print(
                f"- {r['checkpoint']} batch {r['batch']}: prefill {st['prefill_s']:.2f} s (one page at a time),"
                f" decode {st['decode_s']:.2f} s in {st['steps']:.0f} steps,"
                f" {1000 * st['decode_s'] / st['steps']:.1f} ms a step for {st['step_tokens'] / st['steps']:.1f} pages"
            )
    where = "the GPU's used memory" if on_gpu else "peak RSS"
    print(f"\nMemory per extra page ({where} at the largest batch less at batch 1, per page added):")
    for name in dict.fromkeys(r["checkpoint"] for r in rows):
        mine = {r["batch"]: r for r in rows if r["checkpoint"] == name}
        largest = max(b for b in mine if b != "bare")
        if largest > 1 and 1 in mine:
            grown = (mine[largest][memory] - mine[1][memory]) / (largest - 1)
            print(f"- {name}: {grown * 1000:.0f} MB measured{plan_per_page(name, args, n_ctx)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def divergence(texts: List[str], reference: List[str]) -> Dict[str, Any]:
    """How far the pages' texts agree with the bare engine's: pages identical, and for the
    others how much of the bare text comes before the first differing character."""
    same = sum(a == b for a, b in zip(texts, reference, strict=True))
    shares = [
        len(os.path.commonprefix([a, b])) / max(len(b), 1) for a, b in zip(texts, reference, strict=True) if a != b
    ]
    return {
        "pages_same": f"{same}/{len(reference)}",
        "differing_agree_before": statistics.median(shares) if shares else None,
    }


def gpu_gb(results: List[Dict[str, Any]]) -> Any:
    found = [r["gpu_mb"] for r in results if r.get("gpu_mb") is not None]
    return round(max(found) * 1024 * 1024 / 1e9, 3) if found else None


def plan_per_page(name: str, args: argparse.Namespace, n_ctx: int) -> str:
    """What the plan counts for each page at once, for the checkpoints that are a catalog
    variant with real dimensions ("0.8B real dims F16", "9B real dims Q8_0"): its
    estimate at batch 2 less at batch 1."""
    from qwenocr.fit import catalog, plan

    variant = name.split()[0]
    if "real dims" not in name or variant not in {v.name for v in catalog.VARIANTS}:
        return ""

    bits = 8 if "Q8" in name else 16
    one, two = (
        plan.estimate(
            variant,
            bits,
            max_image_tokens=args.image_tokens,
            max_output_tokens=args.max_tokens,
            n_ctx=n_ctx,
            batch=batch,
        )
        for batch in (1, 2)
    )
    per_page = (two.kv_gb + two.activations_gb) - (one.kv_gb + one.activations_gb)
    return f", the plan's {per_page * 1000:.0f} MB (KV cache, recurrent state, a logits row)"


if __name__ == "__main__":
    sys.exit(main())
