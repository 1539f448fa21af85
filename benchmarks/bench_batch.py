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
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import batch_child  # noqa: E402 - found through the path above

# How the child builds the engine (batch_child.py runs it): the bare one-page engine for
# batch 0, else the batch engine.
ENGINE = r"""
model, mmproj, n_ctx = Path(sys.argv[4]), Path(sys.argv[5]), int(sys.argv[6])
if batch == 0:
    from qwenocr.engines.llamacpp import LlamaCppBackend
    engine = LlamaCppBackend(model, mmproj, n_ctx=n_ctx)
else:
    from qwenocr.engines.llamacpp_batch import LlamaCppBatchBackend
    engine = LlamaCppBatchBackend(model, mmproj, batch=batch, n_ctx=n_ctx)
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


def run_child(ckpt: Dict[str, Any], folder: Path, batch: int, max_tokens: int, n_ctx: int) -> Dict[str, Any]:
    return batch_child.run_child(
        ENGINE, folder, batch, max_tokens, [str(ckpt["gguf"]), str(ckpt["mmproj"]), str(n_ctx)]
    )


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
        batch_child.render_pages(folder, args.pages, args.image_tokens)
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
