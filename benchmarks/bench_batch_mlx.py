"""Pages per second with several pages decoding at once in MLX (`scan --batch N` on mlx).

For each MLX checkpoint (the tiny dense and MoE MXFP4 directories of
tests/fixtures/build_tiny_models.py; with --real the real-dimension 0.8B MXFP4 of
benchmarks/real_shapes.py, when it has been built) the same pre-rendered pages go
through:

- the bare sequential engine: qwenocr's one-page-at-a-time `MLXBackend`, page after page
  (what `--batch 1` runs);
- `MLXBatchBackend` (mlx-vlm's BatchGenerator) at batch 1, 2, 4 and 8, with as many
  threads as the batch calling `generate` (what `scan --batch N` runs in its worker);

each in a fresh child process (one model in memory at a time), interleaved over the
repeats, greedy with `--max-tokens` a page (random weights rarely end a page early; the
tokens column says when they do). Reported: pages/s, the ratio to the bare engine in the
same run, whether each page's text is the bare engine's, where the batch engine's time
went (page preparation + vision tower + prompt prefill, one page at a time, against the
shared decode steps) and the peak RSS of each child. Not a test: the numbers go to
docs/performance.md.

    python benchmarks/bench_batch_mlx.py                   # tiny checkpoints
    python benchmarks/bench_batch_mlx.py --real --no-tiny --image-tokens 64 --max-tokens 16 --pages 8 --repeats 1
    python benchmarks/bench_batch_mlx.py --model DIR --name "my MLX model"

On a CPU (mlx[cpu] on Linux) MLX's matrix products are slow (a few GFLOPS here), so the
real-dimension 0.8B takes small pages only; on Apple Silicon the same script measures
the GPU.
"""

from __future__ import annotations

import argparse
import json
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
# batch 0, else the batch engine (mlx-vlm's BatchGenerator).
ENGINE = r"""
model = Path(sys.argv[4])
if batch == 0:
    from qwenocr.engines.mlx import MLXBackend
    engine = MLXBackend(model)
else:
    from qwenocr.engines.mlx_batch import MLXBatchBackend
    engine = MLXBatchBackend(model, batch=batch)
"""


def checkpoints(args: argparse.Namespace) -> List[Dict[str, Any]]:
    import real_shapes

    found: List[Dict[str, Any]] = []
    if not args.no_tiny:
        tiny = real_shapes.tiny_checkpoints()  # builds the fixtures when needed
        if tiny:
            base = Path(tiny[0]["gguf"]).parents[1]
            manifest = json.loads((base / "manifest.json").read_text())
            found += [
                {"name": f"tiny {kind} MXFP4", "model": base / manifest[f"{kind}_mlx"]} for kind in ("dense", "moe")
            ]
    if args.real:
        entry = real_shapes.built("qwen3.5-0.8B")
        if entry is None or "mlx" not in entry:
            print(
                "(no real-dimension 0.8B MLX: run python benchmarks/real_shapes.py --only qwen3.5-0.8B)",
                file=sys.stderr,
            )
        else:
            found.append({"name": "0.8B real dims MXFP4", "model": Path(entry["mlx"])})
    if args.model:
        found.append({"name": args.name or args.model.name, "model": args.model})
    return found


def run_child(ckpt: Dict[str, Any], folder: Path, batch: int, max_tokens: int) -> Dict[str, Any]:
    return batch_child.run_child(ENGINE, folder, batch, max_tokens, [str(ckpt["model"])])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="also the real-dimension 0.8B MLX (slow on a CPU)")
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--image-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--no-tiny", action="store_true", help="leave out the tiny checkpoints")
    parser.add_argument("--model", type=Path, help="also this MLX model directory")
    parser.add_argument("--name", help="the --model checkpoint's name in the table")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        batch_child.render_pages(folder, args.pages, args.image_tokens)
        for ckpt in checkpoints(args):
            runs: Dict[int, List[Dict[str, Any]]] = {b: [] for b in [0, *batches]}
            for _ in range(args.repeats):
                for batch in runs:  # interleaved: each repeat runs every setting once
                    runs[batch].append(run_child(ckpt, folder, batch, args.max_tokens))
                    print(f"[bench] {ckpt['name']} batch {batch}: {runs[batch][-1]['wall_s']:.2f} s", file=sys.stderr)
            bare = statistics.median(r["wall_s"] for r in runs[0])
            reference = runs[0][0]["texts"]
            for batch, results in runs.items():
                wall = statistics.median(r["wall_s"] for r in results)
                same = sum(a == b for a, b in zip(results[-1]["texts"], reference, strict=True))
                rows.append(
                    {
                        "checkpoint": ckpt["name"],
                        "batch": batch or "bare",
                        "pages_per_s": round(args.pages / wall, 3),
                        "vs_bare": round(bare / wall, 2),
                        "tokens": sum(results[-1]["tokens"]),
                        "pages_same": f"{same}/{len(reference)}",
                        "load_s": round(statistics.median(r["load_s"] for r in results), 2),
                        "peak_rss_gb": round(max(r["peak_rss_kib"] for r in results) * 1024 / 1e9, 3),
                        "stats": results[-1]["stats"],
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(
        f"{args.pages} pages, {args.image_tokens} visual tokens, {args.max_tokens} tokens a page (greedy), "
        f"median of {args.repeats}\n"
    )
    print("| checkpoint | batch | pages/s | ÷ bare engine | tokens | text as bare | peak RSS GB |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(
            f"| {r['checkpoint']} | {r['batch']} | {r['pages_per_s']:.3f} | {r['vs_bare']:.2f}× | {r['tokens']} |"
            f" {r['pages_same']} | {r['peak_rss_gb']:.2f} |"
        )
    print("\nWhere the batch engine's time went (scheduler thread, last repeat):")
    for r in rows:
        st = r["stats"]
        if st.get("steps"):
            print(
                f"- {r['checkpoint']} batch {r['batch']}: prefill {st['prefill_s']:.2f} s (one page at a time:"
                f" inputs, vision tower, prompt), decode {st['decode_s']:.2f} s in {st['steps']:.0f} steps,"
                f" {1000 * st['decode_s'] / st['steps']:.1f} ms a step for {st['step_tokens'] / st['steps']:.1f} pages"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
