"""What `qwenocr scan` was asked to do: the parsed command line, as one value."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from qwenocr.scan.pipeline import ScanOptions


@dataclass
class ScanRequest:
    inputs: List[str]
    output: Optional[Path] = None
    fmt: str = "markdown"
    pages: Optional[str] = None
    password: Optional[str] = None
    backend: Optional[str] = None  # "mlx" | "llama.cpp" | None (the plan decides)
    variant: Optional[str] = None
    quant: Optional[str] = None
    model: Optional[str] = None
    mmproj: Optional[str] = None
    offline: bool = False
    resume: bool = True
    force: bool = False  # skip the memory check
    n_ctx: Optional[int] = None
    verbose: bool = False
    # --backend openai: the servers, the model they serve, pages in flight
    base_urls: List[str] = field(default_factory=list)
    api_model: Optional[str] = None
    concurrency: int = 4
    options: ScanOptions = field(default_factory=ScanOptions)
