"""Peak memory of ONE page, per vision tower, engine and visual-token budget.

What the fit's vision-activation term (qwenocr/fit/vision_memory.py) is fitted to, and
how docs/memory-measurements.md was made. For each checkpoint built by
benchmarks/real_shapes.py (real-dimension vision towers behind a small language model,
and the whole real-dimension 0.8B), each engine (llama.cpp through llama-cpp-python,
mlx-vlm on the CPU) and each budget (512 ... 4,096 visual tokens), a FRESH child
process:

1. loads the model through qwenocr's own engine class (the settings `scan` uses; for
   MLX the weights are evaluated once so that lazy loading is not counted as the page);
2. records its RSS after the load (`rss_load`) and resets the kernel's peak-RSS mark
   (``echo 5 > /proc/self/clear_refs``), so the load's own transient peak is not counted;
3. reads one page: an image of exactly that many 32x32 px visual tokens, with a tiny
   output budget (``--max-tokens``, default 2) so the vision encoder and the image
   prefill dominate;
4. reports the peak RSS (``VmHWM``) and, sampled every few ms by a thread, the peak of
   anonymous memory (``RssAnon``: activations; mmapped GGUF weights are file pages).

``page_gb`` = peak RSS - RSS after load: what one page adds. ``anon_page_gb`` = peak
RssAnon - RssAnon after load: the same without weight pages first touched during the
page (llama.cpp maps the GGUF and reads the weights on first use).

The parent watches every child's RSS and kills it above ``--max-rss-gb`` (default 10);
a point whose attention scores alone would pass that cap (llama.cpp's vision encoder
without flash attention keeps heads x patches^2 fp32 scores) is skipped up front.
``--flash-attn`` adds llama.cpp runs with flash attention (Llama(flash_attn=True),
which llama-cpp-python also passes to the mtmd vision context) and says whether the
output is the same.

Usage::

    python benchmarks/real_shapes.py            # once: builds the checkpoints
    python benchmarks/bench_fit_memory.py [--towers 0.8B,4B,9B,qwen3.5-0.8B]
        [--engines llama.cpp,mlx] [--budgets 512,1024,1536,2048,4096] [--flash-attn]
        [--mlx-depth 1] [--max-rss-gb 10] [--timeout 900] [--out results.json]

Prints one JSON document on stdout (and writes it to --out): the machine, the
settings and one record per point; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
BUDGETS = (512, 1024, 1536, 2048, 4096)
# (width tokens, height tokens) per budget: exact products, portrait like a page.
GRIDS = {512: (16, 32), 1024: (32, 32), 1536: (32, 48), 2048: (32, 64), 4096: (64, 64)}
PROMPT = "Read all the text in the image."


def grid(tokens: int):
    if tokens in GRIDS:
        return GRIDS[tokens]
    w = int(tokens**0.5)
    while tokens % w:
        w -= 1
    return w, tokens // w


# ----------------------------------------------------------------------------- child


def _status() -> Dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


class AnonPeak(threading.Thread):
    """Samples RssAnon every 2 ms; the page's activations are anonymous memory."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, _status()["RssAnon"])
            time.sleep(0.002)


def child(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from qwenocr.engines.base import GenerationSettings

    paths = json.loads(args.paths)
    tokens = args.tokens
    wt, ht = grid(tokens)
    rng = __import__("random").Random(tokens)
    # Random grey noise: the content does not change the memory a page needs.
    image = Image.frombytes("L", (wt * 32, ht * 32), rng.randbytes(wt * ht * 1024)).convert("RGB")
    max_tokens = args.max_tokens
    t0 = time.monotonic()
    if args.engine == "llama.cpp":
        import llama_cpp

        if args.flash_attn:
            base = llama_cpp.Llama

            class FlashLlama(base):  # type: ignore[misc, valid-type]
                def __init__(self, *a: Any, **k: Any) -> None:
                    k["flash_attn"] = True
                    super().__init__(*a, **k)

            llama_cpp.Llama = FlashLlama  # the engine calls llama_cpp.Llama(...)
        from qwenocr.engines.llamacpp import LlamaCppBackend

        n_ctx = tokens + 256 + max_tokens
        backend: Any = LlamaCppBackend(Path(paths["gguf"]), Path(paths["mmproj"]), n_ctx=n_ctx, n_gpu_layers=0)
    else:
        import mlx.core as mx

        from qwenocr.engines.mlx import MLXBackend

        backend = MLXBackend(Path(paths["mlx"]))
        if args.mlx_depth:
            # The vision blocks run one after another and each frees the one before's
            # activations: the page's peak is one block's, at any depth (checked against
            # full-depth points, docs/memory-measurements.md). Fewer blocks make a page on
            # mlx's slow CPU matmul affordable.
            tower = backend.model.vision_tower
            tower.blocks = tower.blocks[: args.mlx_depth]
        mx.eval(backend.model.parameters())  # mlx loads lazily: count the weights as the load
        __import__("gc").collect()
        mx.clear_cache()
        mx.reset_peak_memory()
    load_s = time.monotonic() - t0
    before = _status()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    sampler = AnonPeak()
    sampler.peak = before["RssAnon"]
    sampler.start()
    t1 = time.monotonic()
    settings = GenerationSettings(max_tokens=max_tokens, temperature=0.0)
    gen = backend.generate(image, PROMPT, settings)
    page_s = time.monotonic() - t1
    sampler.stop.set()
    sampler.join()
    after = _status()
    record = {
        "rss_load_gb": round(before["VmRSS"] / GB, 3),
        "anon_load_gb": round(before["RssAnon"] / GB, 3),
        "peak_rss_gb": round(after["VmHWM"] / GB, 3),
        "peak_anon_gb": round(sampler.peak / GB, 3),
        "file_after_gb": round(after["RssFile"] / GB, 3),
        "page_gb": round((after["VmHWM"] - before["VmRSS"]) / GB, 3),
        "anon_page_gb": round((sampler.peak - before["RssAnon"]) / GB, 3),
        "hwm_reset": reset,
        "load_s": round(load_s, 1),
        "page_s": round(page_s, 1),
        "output": gen.text,
        "output_tokens": gen.output_tokens,
        "image_px": [wt * 32, ht * 32],
    }
    if args.engine == "mlx":
        import mlx.core as mx

        record["mlx_peak_gb"] = round(mx.get_peak_memory() / GB, 3)
    print("RESULT " + json.dumps(record), flush=True)
    return 0


# ---------------------------------------------------------------------------- parent


def load_paths(name: str) -> Dict[str, str]:
    """The built checkpoint `name` ("qwen3.5-0.8B" or a tower "0.8B", "4B", "9B")."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import real_shapes

    paths = real_shapes.built(name)
    if paths is None:
        build = name if name in real_shapes.BUILDS else f"tower-{name}"
        raise SystemExit(f"error: no {build} checkpoint; run python benchmarks/real_shapes.py --only {build}")
    return paths


def tower_of(name: str) -> Dict[str, Any]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import real_shapes

    build = name if name in real_shapes.BUILDS else f"tower-{name}"
    return real_shapes.BUILDS[build]["vision"]


def scores_gb(vision: Dict[str, Any], tokens: int) -> float:
    """heads x patches^2 x 4 B: one layer's attention scores, materialised in fp32."""
    patches = 4 * tokens
    return vision["num_heads"] * patches * patches * 4 / GB


def run_point(cmd: List[str], cap_gb: float, timeout: float) -> Dict[str, Any]:
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(proc.pid)
    peak, killed, t0 = 0, None, time.monotonic()
    out_lines: List[str] = []
    err_tail: List[str] = []

    def drain(stream, sink, keep):
        for line in stream:
            sink.append(line)
            if keep and len(sink) > keep:
                del sink[0]

    threads = [
        threading.Thread(target=drain, args=(proc.stdout, out_lines, 0), daemon=True),
        threading.Thread(target=drain, args=(proc.stderr, err_tail, 20), daemon=True),
    ]
    for t in threads:
        t.start()
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.Error:
            pass
        if peak > cap_gb * GB:
            killed = f"killed: RSS passed the {cap_gb:g} GB cap"
        elif time.monotonic() - t0 > timeout:
            killed = f"killed: over the {timeout:g} s timeout"
        if killed:
            proc.kill()  # this child only, by its own handle
            break
        time.sleep(0.05)
    proc.wait()
    for t in threads:
        t.join(timeout=5)
    for line in out_lines:
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": killed or f"exit {proc.returncode}: {''.join(err_tail)[-600:]}", "parent_peak_gb": peak / GB}


def machine() -> Dict[str, Any]:
    import psutil

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    from importlib import metadata

    for pkg in ("llama-cpp-python", "mlx", "mlx-vlm"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / GB, 1),
        "os": platform.platform(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d"),
    }


def estimated(rec: Dict[str, Any], paths: Optional[Dict[str, str]] = None) -> Dict[str, float]:
    """What qwenocr's estimate says for a measured point: the vision term and, for the
    whole 0.8B model, the whole estimate with the real file sizes (margin shown apart)."""
    sys.path.insert(0, str(ROOT))
    from qwenocr.fit import catalog, vision_memory
    from qwenocr.fit import plan as planmod

    v = rec["vision"]
    tokens = rec["tokens"]
    fa = rec["flash_attn"]
    out = {
        "vision_gb": vision_memory.vision_activation_bytes(
            v["hidden_size"], v["intermediate_size"], v["num_heads"], tokens, rec["engine"], fa
        )
        / GB
    }
    if rec["checkpoint"] == "qwen3.5-0.8B" and paths:
        variant = catalog.get_variant("0.8B")
        n_ctx = tokens + 256 + rec.get("output_tokens", 2)
        est = planmod.estimate(variant, 16, max_image_tokens=tokens, backend=rec["engine"], n_ctx=n_ctx, flash_attn=fa)
        files = Path(paths["gguf"]).stat().st_size / GB + Path(paths["mmproj"]).stat().st_size / GB
        if rec["engine"] == "mlx":
            files = sum(f.stat().st_size for f in Path(paths["mlx"]).glob("*.safetensors")) / GB
        without_margin = files + est.kv_gb + est.vision_activations_gb + est.text_activations_gb
        out.update(
            whole_gb=without_margin,
            whole_with_margin_gb=without_margin + est.margin_gb,
            page_gb=est.vision_activations_gb + est.text_activations_gb,
        )
    return out


def report(files: List[Path]) -> str:
    """The Markdown table of docs/memory-measurements.md from result files."""
    rows = [
        "| checkpoint | engine | flash attn | visual tokens | RSS after load GB | page peak GB (measured) "
        "| vision term GB (estimated) | error | page s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    whole = [
        "| engine | flash attn | visual tokens | peak RSS GB (measured) | expected peak GB (estimated) | error "
        "| total with the 1 GiB margin GB |",
        "|---|---|---|---|---|---|---|",
    ]
    cache: Dict[str, Dict[str, str]] = {}
    for f in files:
        for rec in json.loads(f.read_text())["results"]:
            name = rec["checkpoint"]
            fa = "on" if rec["flash_attn"] else "off"
            if "page_gb" not in rec:
                label = name if name == "qwen3.5-0.8B" else f"tower {name}"
                rows.append(f"| {label} | {rec['engine']} | {fa} | {rec['tokens']} | | {rec.get('error')} | | | |")
                continue
            if name not in cache:
                cache[name] = load_paths(name)
            est = estimated(rec, cache[name])
            if name == "qwen3.5-0.8B":
                err = est["whole_gb"] / rec["peak_rss_gb"] - 1
                whole.append(
                    f"| {rec['engine']} | {fa} | {rec['tokens']} | {rec['peak_rss_gb']:.2f} | {est['whole_gb']:.2f} "
                    f"| {err:+.0%} | {est['whole_with_margin_gb']:.2f} |"
                )
                label = "whole 0.8B (vision + text terms)"
            else:
                label = f"tower {name}"
                if rec.get("blocks_run"):
                    label += f" ({rec['blocks_run']} of {rec['vision']['depth']} blocks)"
            page_est = est.get("page_gb", est["vision_gb"])
            err = page_est / rec["page_gb"] - 1
            rows.append(
                f"| {label} | {rec['engine']} | {fa} | {rec['tokens']} | {rec['rss_load_gb']:.2f} "
                f"| {rec['page_gb']:.3f} | {page_est:.3f} | {err:+.0%} | {rec['page_s']} |"
            )
    return "\n".join(rows) + "\n\n" + "\n".join(whole) + "\n"


def fit(files: List[Path]) -> Dict[str, Any]:
    """Least squares, on relative error, of the vision formula's coefficients per engine
    and mode: page = s x heads x patches^2 x 4 B + m x patches x (4 width + 2 intermediate)
    x 4 B + f x (4 width^2 + 2 width x intermediate) x 4 B, over the towers' points (the
    whole 0.8B is left out: its page holds the text part too). Flash attention has s = 0."""
    import numpy as np

    points: Dict[str, List[Any]] = {}
    for f in files:
        for rec in json.loads(f.read_text())["results"]:
            if "page_gb" not in rec or rec["checkpoint"] == "qwen3.5-0.8B":
                continue
            v = rec["vision"]
            w, i, h, p = v["hidden_size"], v["intermediate_size"], v["num_heads"], 4 * rec["tokens"]
            feats = [h * p * p * 4, p * (4 * w + 2 * i) * 4, (4 * w * w + 2 * w * i) * 4]
            mode = rec["engine"] if rec["engine"] == "mlx" else ("flash_attn" if rec["flash_attn"] else "no_flash_attn")
            points.setdefault(mode, []).append((feats, rec["page_gb"] * GB))
    out: Dict[str, Any] = {}
    for mode, pts in points.items():
        # Flash attention never makes the scores; mlx keeps the weights as loaded (no
        # fp32 copy of a block: that term came out negative when fitted).
        cols = {"flash_attn": [1, 2], "mlx": [0, 1]}.get(mode, [0, 1, 2])
        a = np.array([[x[0][c] / x[1] for c in cols] for x in pts])
        coef, *_ = np.linalg.lstsq(a, np.ones(len(pts)), rcond=None)
        worst = max(abs(float(np.dot(row, coef)) - 1) for row in a)
        names = ["scores", "per_patch", "layer_weights"]
        out[mode] = {
            **{names[c]: round(float(k), 3) for c, k in zip(cols, coef, strict=True)},
            "points": len(pts),
            "worst_relative_error": round(worst, 3),
        }
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--towers", default="0.8B,4B,9B,qwen3.5-0.8B")
    p.add_argument("--engines", default="llama.cpp,mlx")
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    p.add_argument("--flash-attn", action="store_true", help="also run llama.cpp with flash attention")
    p.add_argument("--flash-attn-only", action="store_true", help="run llama.cpp with flash attention only")
    p.add_argument("--max-tokens", type=int, default=2)
    p.add_argument("--mlx-depth", type=int, default=0, help="MLX: run only this many vision blocks (0: all)")
    p.add_argument("--max-rss-gb", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per point")
    p.add_argument("--out", type=Path)
    p.add_argument("--report", type=Path, nargs="+", help="print the Markdown table of these result files")
    p.add_argument("--fit", type=Path, nargs="+", help="fit the vision formula to these result files")
    # the child's arguments
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--tokens", type=int, help=argparse.SUPPRESS)
    p.add_argument("--paths", help=argparse.SUPPRESS)
    p.add_argument("--fa", dest="flash_attn_child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.flash_attn = args.flash_attn_child
        return child(args)
    if args.report:
        print(report(args.report))
        return 0
    if args.fit:
        print(json.dumps(fit(args.fit), indent=2))
        return 0

    results: List[Dict[str, Any]] = []
    doc: Dict[str, Any] = {"machine": machine(), "max_tokens": args.max_tokens, "results": results}
    budgets = [int(b) for b in args.budgets.split(",")]
    for name in [t.strip() for t in args.towers.split(",") if t.strip()]:
        paths = load_paths(name)
        vision = tower_of(name)
        for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
            modes = [False, True] if (engine == "llama.cpp" and args.flash_attn) else [False]
            if engine == "llama.cpp" and args.flash_attn_only:
                modes = [True]
            for fa in modes:
                for tokens in budgets:
                    rec: Dict[str, Any] = {"checkpoint": name, "engine": engine, "flash_attn": fa, "tokens": tokens}
                    rec["vision"] = {k: vision[k] for k in ("depth", "hidden_size", "intermediate_size", "num_heads")}
                    if engine == "mlx" and args.mlx_depth:
                        rec["blocks_run"] = min(args.mlx_depth, vision["depth"])
                    if engine == "mlx" and "mlx" not in paths:
                        rec["error"] = "no MLX build"
                    elif engine == "llama.cpp" and not fa and scores_gb(vision, tokens) > args.max_rss_gb / 2:
                        rec["error"] = (
                            f"skipped: fp32 attention scores alone {scores_gb(vision, tokens):.1f} GB "
                            f"> half the {args.max_rss_gb:g} GB cap"
                        )
                    else:
                        cmd = [sys.executable, __file__, "--child", "--engine", engine, "--tokens", str(tokens)]
                        cmd += ["--paths", json.dumps(paths), "--max-tokens", str(args.max_tokens)]
                        if fa:
                            cmd.append("--fa")
                        if engine == "mlx" and args.mlx_depth:
                            cmd += ["--mlx-depth", str(args.mlx_depth)]
                        print(f"[bench] {name} {engine}{' +fa' if fa else ''} {tokens} tokens ...", file=sys.stderr)
                        t0 = time.monotonic()
                        rec.update(run_point(cmd, args.max_rss_gb, args.timeout))
                        rec["wall_s"] = round(time.monotonic() - t0, 1)
                    print(f"[bench]   -> {json.dumps(rec)}", file=sys.stderr, flush=True)
                    results.append(rec)
                    if args.out:
                        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
