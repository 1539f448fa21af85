"""A fake engine for pipeline tests: a queue of canned answers, streamed in pieces.

It satisfies `qwenocr.engines.base.Backend` like the real engines do
(tests/test_engine_contract.py checks it).
"""

from __future__ import annotations

import threading
import time
from typing import List, Optional

from qwenocr.engines.base import Generation


class FakeBackend:
    """Answers each page with `answer(page_index, image, settings)`; streams it in pieces."""

    name = "fake"
    concurrency: int
    max_image_tokens: Optional[int] = None  # no limit of its own, as a server

    def __init__(self, answer=None, concurrency: int = 1, delay: float = 0.0):
        self.concurrency = concurrency
        self.delay = delay
        self.calls: List[tuple] = []  # (image size, settings) of each page asked for
        self.lock = threading.Lock()
        self.answer = answer or (lambda index, image, settings: f"text of call {index}")
        self.closed = False

    def generate(self, image, prompt, settings, on_piece=None):
        with self.lock:
            index = len(self.calls)
            self.calls.append((image.size, settings))
        if self.delay:
            time.sleep(self.delay)
        text = self.answer(index, image, settings)
        produced = []
        for start in range(0, len(text), 4):
            piece = text[start : start + 4]
            produced.append(piece)
            if on_piece is not None and on_piece(piece) is False:
                return Generation("".join(produced), len(produced), finish_reason="aborted")
        return Generation(text, len(produced), prompt_tokens=10, finish_reason="stop")

    def close(self):
        self.closed = True
