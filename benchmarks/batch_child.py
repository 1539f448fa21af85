"""What bench_batch.py (llama.cpp) and bench_batch_mlx.py (MLX) share: the pages, and one
run of an engine in a fresh child process.

A run loads the engine (the bare one-page engine for batch 0, else the batch engine with
`batch` pages at once), reads every pre-rendered page with as many threads as the batch
calling `generate`, and prints what it measured as one JSON line: load and wall seconds,
each page's tokens and text, the engine's `stats` (where a batch engine's time went), the
peak RSS, and on a GPU machine the card's used memory with the model loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]

# The child's program; ENGINE is replaced by the lines that read sys.argv[4:] and build `engine`.
_CHILD = r"""
import json, sys, threading, time, resource
from pathlib import Path
from PIL import Image
from qwenocr.engines.base import GenerationSettings
from qwenocr.scan.pipeline import DEFAULT_PROMPT

folder, batch, max_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pages = []
for png in sorted(Path(folder).glob("*.png")):
    with Image.open(png) as image:
        pages.append(image.convert("RGB"))
settings = GenerationSettings(max_tokens=max_tokens, temperature=0.0)
t0 = time.perf_counter()
ENGINE
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


def render_pages(folder: Path, pages: int, image_tokens: int) -> None:
    """`pages` sample pages rendered once, as PNGs in `folder`, for every run to read.

    One page size, so every page renders to one shape and costs the same."""
    from qwenocr.pages.document import RenderSettings, open_document
    from tests.support import samples

    pdf = samples.write_pdf(folder / "doc.pdf", pages=pages, size=(850, 1100))
    with open_document(pdf) as document:
        for number in range(1, document.page_count + 1):
            document.render(number, RenderSettings(max_image_tokens=image_tokens)).save(folder / f"{number:04d}.png")


def run_child(engine: str, folder: Path, batch: int, max_tokens: int, engine_args: List[str]) -> Dict[str, Any]:
    """One run in a fresh process: `engine` is Python that builds `engine` from `batch`
    and `sys.argv[4:]` (= `engine_args`); returns what the child measured."""
    command = [sys.executable, "-c", _CHILD.replace("ENGINE", engine.strip()), str(folder), str(batch)]
    command += [str(max_tokens), *engine_args]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
