"""`qwenocr scan`'s inputs and outputs, checked before any model is loaded.

Directories and unexpanded patterns become files; every input is opened once and its
page ranges checked, so that a bad path or a --pages beyond the end fails in
milliseconds; -o is checked for being writable and for not being an input.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from qwenocr.errors import InputError, OutputError, QwenOCRError, UsageError
from qwenocr.pages.document import IMAGE_SUFFIXES, open_document, parse_page_ranges
from qwenocr.scan.output import extension
from qwenocr.scan.request import ScanRequest


@dataclass
class CheckedInput:
    name: str
    data: Optional[bytes] = None  # stdin's bytes
    error: Optional[QwenOCRError] = None
    kind: Optional[str] = None  # "pdf" or "image", once opened
    done_checkpoint: Optional[object] = None  # discarded once the whole run has ended


SUPPORTED_SUFFIXES = {".pdf"} | IMAGE_SUFFIXES


_GLOB_CHARS = set("*?[")


def expand_inputs(names: List[str]) -> List[str]:
    """Directories become the PDFs and images inside them (recursively, sorted); a
    pattern the shell did not expand (quoted, or on Windows) is expanded here."""
    import glob

    expanded: List[str] = []
    for name in names:
        path = Path(name)
        if name != "-" and path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
            if not found:
                raise InputError(f"{name}: no PDF or image (PNG, JPEG, TIFF, WebP) in this directory")
            expanded.extend(found)
        elif name != "-" and not path.exists() and _GLOB_CHARS & set(name):
            matches = sorted(glob.glob(name, recursive=True))
            expanded.extend(matches or [name])  # no match: reported as a missing file
        else:
            expanded.append(name)
    return expanded


def output_names(items: List[CheckedInput], request: ScanRequest, several: bool) -> dict:
    """Each input's output file under -o DIR: the input's name with the format's
    extension; a name used twice (a/x.pdf, b/x.pdf) gets -2, -3… Only file names are
    used, so an input name can never place an output outside the directory."""
    out = request.output
    if out is None:
        return {}
    if not (several or out.is_dir()):
        return {items[0].name: out} if items else {}
    taken: set = set()
    names = {}
    for item in items:
        stem = "stdin" if item.name == "-" else Path(item.name).stem
        stem = stem.lstrip(".") or "document"
        candidate, counter = stem, 1
        while candidate.lower() in taken:
            counter += 1
            candidate = f"{stem}-{counter}"
        taken.add(candidate.lower())
        names[item.name] = out / (candidate + extension(request.fmt))
    return names


def check_inputs(request: ScanRequest) -> List[CheckedInput]:
    if not request.inputs:
        raise UsageError("no input given", "pass a PDF or image, or - for stdin")
    if request.inputs.count("-") > 1:
        raise UsageError("stdin (-) can only be read once")
    several = len(request.inputs) > 1
    if several and request.output is not None and not request.output.is_dir():
        if request.output.suffix:
            raise UsageError(
                f"-o {request.output}: several inputs need an output directory", "create it, or pass one input"
            )
        try:
            request.output.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"-o {request.output}: could not create the directory ({error.strerror})") from None
    if not several and request.output is not None and not request.output.is_dir():
        _check_output_file(request.output, request.inputs)
    checked: List[CheckedInput] = []
    for name in request.inputs:
        item = CheckedInput(name)
        if name == "-":
            item.data = sys.stdin.buffer.read()
        try:
            with open_document(name, request.password, item.data) as document:
                parse_page_ranges(request.pages, document.page_count)
                item.kind = document.kind
        except QwenOCRError as error:
            item.error = error
        checked.append(item)
    return checked


def _check_output_file(path: Path, inputs: List[str]) -> None:
    """-o FILE: fail now, not after the model has loaded, when it plainly can't be
    written, or when writing it would replace the input (`scan a.pdf -o a.pdf`)."""
    import os

    for name in inputs:
        with contextlib.suppress(OSError):
            if name != "-" and path.exists() and os.path.samefile(name, path):
                raise UsageError(
                    f"-o {path} is the input {name}: writing it would destroy the input",
                    "pick another output name, e.g. -o out.md",
                )
    parent = path.parent
    if not parent.is_dir():
        what = "does not exist" if not parent.exists() else "is not a directory"
        raise OutputError(f"-o {path}: {parent} {what}", "create the directory first, or pick another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"-o {path}: the directory {parent} is not writable", "check its permissions, or pick another path"
        )
