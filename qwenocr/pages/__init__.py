"""Documents to page images: PDFs (pypdfium2, in a guarded render process) and images,
the PDF's own text layer, and blank-page detection.

document.py is the front door (`open_document`, `parse_page_ranges`). Below it, imports
go one way: renderguard.py (the render child process) -> pdf.py (PDFium and its lock);
pdf.py and images.py (Pillow) -> base.py (the `Document` interface) and sizing.py (the
token budget). textlayer.py and blank.py stand on their own.
"""
