"""Benchmark: text-layer structure scores on born-digital PDFs typeset from known Markdown.

Each document of tests/support/markdown_pdfs.py is typeset to a PDF (one column with
headings, a list and hyphenated words; code in Courier; a title over two columns, also
stored line by line across both columns, with a running header and page number, with
an arXiv-like stamp turned in the margin; a table and an embedded image, also under
each /Rotate; authors with superscript marks), read back through `textlayer.extract`
and `PageText.layout` (qwenocr/pages/textmarkdown.py), and compared with the Markdown
that made it: word order similarity (difflib ratio over the word sequences, 1.0 = same
words in the same order) and the counts of headings, paragraphs, list items, table rows
and code blocks, expected -> got. The same for the raw text layer as the scan wrote it
before (`to_markdown(text)`), for comparison. Times are the median of --repeats runs
per page, in milliseconds: `extract` (PDFium: text, boxes, and every character's box
and font) and `layout` (pure Python). Not a test: run

    python benchmarks/bench_textlayer.py --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pypdfium2 as pdfium  # noqa: E402

from qwenocr.pages.textlayer import extract, to_markdown  # noqa: E402
from tests.support import markdown_pdfs as mp  # noqa: E402

KEYS = ("headings", "paragraphs", "list_items", "table_rows", "code_blocks")


def cases():
    for name, parts in mp.DOCUMENTS.items():
        yield name, mp.markdown_pdf(parts), mp.document_markdown(parts)
    parts = mp.DOCUMENTS["two-columns"]
    yield "two-columns/stored-across", mp.markdown_pdf(parts, across=True), mp.document_markdown(parts)
    header = "Journal of Text Layers, vol. 3\n\n"  # expected as a paragraph: headers are kept in the Markdown
    data = mp.markdown_pdf(parts, header=header.strip(), footer="17")
    yield "two-columns/header-footer", data, header + mp.document_markdown(parts) + "\n17\n"
    stamp = "arXiv:2611.01234v1 [cs.CL] 27 Nov 2026"  # turned in the margin: comes last
    yield "two-columns/margin-stamp", mp.markdown_pdf(parts, stamp=stamp), mp.document_markdown(parts) + "\n" + stamp
    data, expected = mp.superscript_pdf()
    yield "superscripts", data, expected
    parts = mp.DOCUMENTS["table-and-figure"]
    for rotate in (90, 180, 270):
        size = (792, 612) if rotate in (90, 270) else mp.PAGE
        yield f"table-and-figure/rotate-{rotate}", mp.markdown_pdf(parts, rotate, size), mp.document_markdown(parts)


def counts(expected: str, got: str) -> str:
    want, have = mp.structure_counts(expected), mp.structure_counts(got)
    return " ".join(f"{key[:4]} {want[key]}->{have[key]}" for key in KEYS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--show", action="store_true", help="print each page's Markdown")
    args = parser.parse_args()
    header = f"{'document':30} {'sim':>5} {'raw':>5}  {'structure (expected->got)':42} {'raw text layer':42}"
    print(header + " ms extract/layout")
    exact = total = 0
    for name, data, expected in cases():
        doc = pdfium.PdfDocument(data)
        page = doc[0]
        extract_times, layout_times = [], []
        for _ in range(max(args.repeats, 1)):
            started = time.perf_counter()
            page_text = extract(page)
            middle = time.perf_counter()
            layout = page_text.layout()
            extract_times.append(middle - started)
            layout_times.append(time.perf_counter() - middle)
        raw = to_markdown(page_text.text)
        similarity = mp.word_order_similarity(expected, layout.markdown)
        raw_similarity = mp.word_order_similarity(expected, raw)
        total += 1
        exact += mp.structure_counts(expected) == mp.structure_counts(layout.markdown)
        print(
            f"{name:30} {similarity:5.3f} {raw_similarity:5.3f}  {counts(expected, layout.markdown):42} "
            f"{counts(expected, raw):42} {statistics.median(extract_times) * 1000:6.2f}/"
            f"{statistics.median(layout_times) * 1000:.2f}"
        )
        if args.show:
            print(layout.markdown)
        doc.close()
    print(f"structure counts exact on {exact}/{total} pages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
