"""Budgets that several rooms share, defined once: the CLI offers them as option defaults,
the renderer sizes pages by the first, engines stop at the second, and the planner sizes
the KV cache from both.

Kept apart from everything else so that importing them costs nothing (`qwenocr --help`).
"""

# Visual tokens per page: the render size follows from it (pages/sizing.py).
DEFAULT_MAX_IMAGE_TOKENS = 1536

# Output tokens generated per page at most: a dense page of text is about 1,000.
DEFAULT_MAX_OUTPUT_TOKENS = 4096
