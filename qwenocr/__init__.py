"""qwenocr: PDFs and scans to Markdown or JSON with Qwen 3.5 vision-language models, locally."""

__version__ = "0.1.0"
