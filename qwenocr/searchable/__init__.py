"""Searchable PDFs: the input's pages untouched, with the recognised text laid under
them as an invisible text layer (`scan --format pdf`, and the OCRmyPDF plugin).

glyphless.py (the invisible font), lines.py (a block's text as lines in its box),
textlayer.py (lines into a page's content stream), document.py (a whole output PDF
from the input and its pages' results). pikepdf is imported only here, and only when a
PDF is written.
"""
