"""Documents to page images: PDFs (pypdfium2, in a guarded render process) and images,
the PDF's own text layer, and blank-page detection.
"""
