"""What `qwenocr scan` was asked to do: the parsed command line, as one immutable value.

The CLI builds a `ScanRequest` from its options and hands it to `run_scan`; from there
every step reads it (input checks, model choice, engine loading, the page settings in
`options`) and none changes it, so what a step sees is what the user asked for. What
the run learns on the way (the inputs a directory expanded to, what each input holds,
the engine's image cap) travels in values of its own (scan/inputs.py, scan/run.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from qwenocr.scan.pipeline import ScanOptions


@dataclass(frozen=True)
class ScanRequest:
    inputs: List[str]  # as given: files, directories, patterns, "-" for stdin
    output: Optional[Path] = None
    # --figures DIR (layout mode): where figure files go; None: beside -o's file, or nowhere on stdout
    figures: Optional[Path] = None
    fmt: str = "markdown"
    pages: Optional[str] = None
    password: Optional[str] = None
    backend: Optional[str] = None  # "mlx" | "llama.cpp" | "openai" | None (the plan decides)
    family: Optional[str] = None  # "3.5" | "3.6" | None (3.5)
    variant: Optional[str] = None
    quant: Optional[str] = None
    model: Optional[str] = None
    mmproj: Optional[str] = None
    offline: bool = False
    resume: bool = True
    force: bool = False  # skip the memory check
    n_ctx: Optional[int] = None
    prefer: Optional[str] = None  # "accuracy" | "speed" | None: the plan's dense-or-MoE trade-off
    verbose: bool = False
    # --backend openai: the servers, the model they serve, pages in flight
    base_urls: List[str] = field(default_factory=list)
    api_model: Optional[str] = None
    concurrency: int = 4
    batch: Optional[int] = None  # local llama.cpp: pages decoding at once; None: the plan's, else 1
    options: ScanOptions = field(default_factory=ScanOptions)
