"""What the searchable-PDF writer (qwenocr/searchable) costs: time and bytes per page.

A scanned PDF of N pages (one 300-dpi grey image each, from tests' page images) gets the
text layer of a full layout page on each page (a heading, ten paragraphs of about 80
words, a table, a list; Latin with some CJK and Arabic), as `scan --format pdf` writes it
after the model. Reported: milliseconds per page for the whole file (open, lay out, save),
the bytes the text layer adds per page, and the same for an image input (PNG frames).

    python benchmarks/bench_searchable.py [--pages 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qwenocr.searchable.document import images_with_text, pdf_with_text  # noqa: E402
from tests.support import samples  # noqa: E402

WORDS = "the quarterly report shows revenue growth across all regions while costs remained stable".split()


def _record(number: int) -> dict:
    blocks = [{"type": "heading", "bbox": [72, 60, 540, 90], "text": f"Section {number}: results 中文 مرحبا"}]
    y = 100.0
    for paragraph in range(10):
        text = " ".join(WORDS[(paragraph + i) % len(WORDS)] for i in range(80))
        blocks.append({"type": "paragraph", "bbox": [72, y, 540, y + 50], "text": text})
        y += 55
    table = "<table>" + "".join(f"<tr><td>item {i}</td><td>{i * 3}</td></tr>" for i in range(8)) + "</table>"
    blocks.append({"type": "table", "bbox": [72, 660, 540, 740], "html": table})
    blocks.append({"type": "list", "bbox": [72, 745, 540, 780], "text": "- first\n- second\n- third"})
    return {
        "number": number,
        "status": "ok",
        "source": "model",
        "text": "x",
        "blocks": blocks,
        "layout": {"width": 612.0, "height": 792.0, "unit": "pt", "rotation": 0, "coords": "relative"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scan = samples.pdf_bytes(pages=args.pages)
    tiff = io.BytesIO()
    frames = [samples.page_image(n, size=(1275, 1650)).convert("L") for n in range(1, 11)]
    frames[0].save(tiff, format="TIFF", save_all=True, append_images=frames[1:], compression="tiff_deflate")
    records = [_record(n) for n in range(1, args.pages + 1)]
    for name, run, pages, size in (
        ("PDF input", lambda out, recs: pdf_with_text(scan, None, recs, out), args.pages, len(scan)),
        ("TIFF input (10 frames)", lambda out, recs: images_with_text(tiff.getvalue(), recs, out), 10, None),
    ):
        best, with_text, without = None, 0, 0
        for _ in range(args.repeats):
            out = io.BytesIO()
            started = time.perf_counter()
            written = run(out, records[:pages])
            seconds = time.perf_counter() - started
            best = seconds if best is None else min(best, seconds)
            with_text = len(out.getvalue())
        empty = io.BytesIO()
        run(empty, [])
        without = len(empty.getvalue())
        print(
            f"{name}: {pages} pages, {written.lines} lines;"
            f" {1000 * best / pages:.1f} ms a page (best of {args.repeats});"
            f" the text layer adds {(with_text - without) / pages / 1024:.1f} KiB a page"
            + (f" to {size / pages / 1024:.0f} KiB of scan" if size else "")
        )


if __name__ == "__main__":
    main()
