"""`qwenocr scan`'s inputs and outputs, checked before any model is loaded.

A mistake should cost milliseconds, not the minute a model takes to load: directories
and patterns the shell left alone become files; every input is opened once, its kind
sniffed and its page ranges (`--pages`) read against its page count; `-o` is checked
for being writable and for not being an input. An input that fails its check carries
its error, so that with several inputs the others still run.

What a check learns stays in its `CheckedInput` (kind, page count, the selected pages),
so the scan does not parse a range again. The document itself is closed after the
check and opened again for the scan: an open PDF holds its file and PDFium's parsed
structures, an open image its decoded pixels (up to 300 MP, about 900 MB), and a
directory of thousands of scans would hold all of them at once; opening again is
linear in the file's size and costs milliseconds.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from qwenocr.errors import InputError, OutputError, QwenOCRError, UsageError
from qwenocr.pages.document import IMAGE_SUFFIXES, display_name, open_document, parse_page_ranges, sniff_kind
from qwenocr.scan.output import extension, is_binary
from qwenocr.scan.request import ScanRequest


@dataclass(frozen=True)
class CheckedInput:
    """One input after its check: what it holds, or why it can't be scanned."""

    name: str  # as shown in messages and outputs ("-" for stdin)
    data: Optional[bytes] = None  # stdin's bytes: read once, opened again for the scan
    error: Optional[QwenOCRError] = None
    kind: Optional[str] = None  # "pdf" or "image", once opened
    page_count: int = 0
    page_numbers: Tuple[int, ...] = ()  # the pages --pages selects (1-based, sorted)

    @property
    def shown(self) -> str:
        """The name as outputs and messages show it (undecodable bytes as U+FFFD)."""
        return display_name(self.name)


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
                raise InputError(f"{display_name(name)}: no PDF or image (PNG, JPEG, TIFF, WebP) in this directory")
            expanded.extend(found)
        elif name != "-" and not path.exists() and _GLOB_CHARS & set(name):
            matches = sorted(glob.glob(name, recursive=True))
            expanded.extend(matches or [name])  # no match: reported as a missing file
        else:
            expanded.append(name)
    return expanded


def output_names(items: List[CheckedInput], request: ScanRequest, several: bool) -> Dict[str, Path]:
    """Each input's output file under -o DIR: the input's name with the format's
    extension; a name used twice (a/x.pdf, b/x.pdf) gets -2, -3… Only file names are
    used, so an input name can never place an output outside the directory."""
    out = request.output
    if out is None:
        return {}
    if not (several or out.is_dir()):
        return {items[0].name: out} if items else {}
    taken: Set[str] = set()
    names: Dict[str, Path] = {}
    for item in items:
        stem = unique_stem("stdin" if item.name == "-" else Path(item.name).stem, taken)
        names[item.name] = out / (stem + extension(request.fmt))
    return names


def unique_stem(stem: str, taken: Set[str]) -> str:
    """`stem` as a file name of ours: no leading dots (never a hidden file, never `..`),
    and a name not in `taken` (compared without case, for case-insensitive disks: -2,
    -3... added), which it then joins."""
    stem = stem.lstrip(".") or "document"
    candidate, counter = stem, 1
    while candidate.lower() in taken:
        counter += 1
        candidate = f"{stem}-{counter}"
    taken.add(candidate.lower())
    return candidate


def check_inputs(request: ScanRequest) -> List[CheckedInput]:
    """The request's inputs, expanded (directories, patterns) and each one checked.

    Mistakes in the command line itself (no input, stdin twice, -o that can't be
    written) raise; an input that can't be read is returned with its error.
    """
    names = expand_inputs(request.inputs)
    if not names:
        raise UsageError("no input given", "pass a PDF or image, or - for stdin")
    if names.count("-") > 1:
        raise UsageError("stdin (-) can only be read once")
    several = len(names) > 1
    if several and request.output is None and is_binary(request.fmt):
        raise UsageError(
            f"--format {request.fmt} writes one file per input: with several inputs, stdout cannot take them",
            "pass -o DIR (one .pdf per input)",
        )
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
        _check_output_file(request.output, names)
    items = [_check_input(name, request) for name in names]
    if request.output is not None and (several or request.output.is_dir()):
        _check_outputs_in_directory(items, request, several)
    return items


# The most stdin (`-`) may hold. A file's size is known before it is read; a pipe's is
# not, and `cat /dev/zero | qwenocr scan -` would otherwise fill memory. 2 GiB is far
# beyond any real scan (a 500-page 300 dpi PDF is a few hundred MB); docs/commands.md.
STDIN_LIMIT = 2 * 1024**3
# What is read before the type is sniffed: a stream that is neither PDF nor image is
# refused after this much, not after the whole of it.
_SNIFF_BYTES = 2048
_CHUNK = 1024 * 1024


def read_stdin(limit: Optional[int] = None) -> bytes:
    """All of stdin, at most `limit` bytes (STDIN_LIMIT); its type sniffed from the first
    bytes before the rest is read. Raises InputError: not a PDF/image, empty, too large."""
    limit = STDIN_LIMIT if limit is None else limit
    if sys.stdin is None:  # started with stdin closed
        raise InputError("-: stdin is closed", "pass a file, or pipe a PDF or image into qwenocr")
    stream = sys.stdin.buffer
    try:
        head = stream.read(_SNIFF_BYTES)
        sniff_kind(head, "-")
        chunks = [head]
        size = len(head)
        while size <= limit:
            chunk = stream.read(min(_CHUNK, limit + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
    except OSError as error:
        raise InputError(f"-: stdin could not be read ({error.strerror or error})") from None
    shown = f"{limit / 1024**3:g} GiB" if limit >= 1024**3 else f"{limit} bytes"
    raise InputError(
        f"-: stdin is larger than {shown}, the most qwenocr reads from a pipe",
        "save it to a file and pass its path",
    )


def _check_input(name: str, request: ScanRequest) -> CheckedInput:
    data = None
    try:
        data = read_stdin() if name == "-" else None
        # Guarded like the pages (renderguard.py): opening a PDF can itself be hostile
        # (a Flate bomb in /Metadata, which PDFium inflates at open).
        with open_document(name, request.password, data, request.options.render.timeout) as document:
            page_numbers = parse_page_ranges(request.pages, document.page_count)
            return CheckedInput(name, data, None, document.kind, document.page_count, tuple(page_numbers))
    except QwenOCRError as error:
        return CheckedInput(name, data, error)


def _file_key(path: Path) -> Optional[Tuple[int, int]]:
    """What identifies a file whatever its path (device, inode), or None if it does not exist."""
    try:
        info = path.stat()
    except (OSError, ValueError):
        return None
    return (info.st_dev, info.st_ino)


def _check_outputs_in_directory(items: List[CheckedInput], request: ScanRequest, several: bool) -> None:
    """-o DIR: no output may be an input. An input's type comes from its content, so a PNG
    named scan.md would get scan.md as its output, in the folder it is in; and one input's
    output can be another input (a.png -> a.md, beside a PNG named a.md). The names are
    the ones `output_names` gives the scan (of the inputs that passed their check).

    Inputs are indexed once by file identity (what os.path.samefile compares) and by
    resolved path, so a folder of thousands of scans costs one lookup per output."""
    by_key: Dict[Tuple[int, int], str] = {}
    by_path: Dict[Path, str] = {}
    for item in items:
        if item.name == "-":
            continue
        key = _file_key(Path(item.name))
        if key is not None:
            by_key.setdefault(key, item.name)
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            by_path.setdefault(Path(item.name).resolve(), item.name)
    good = [item for item in items if item.error is None]
    for source, path in output_names(good, request, several).items():
        key = _file_key(path)
        if key is not None:
            victim = by_key.get(key)
        else:  # not written yet: compare where it would be
            try:
                victim = by_path.get(path.resolve())
            except (OSError, RuntimeError, ValueError):
                victim = None
        if victim is not None:
            raise UsageError(
                f"-o {display_name(str(request.output))}: the output of {display_name(source)} would be "
                f"{display_name(str(path))}, which is the input {display_name(victim)}: "
                "writing it would destroy the input",
                "rename the input to its type (e.g. .png), or pick another output directory",
            )


def _check_output_file(path: Path, inputs: List[str]) -> None:
    """-o FILE: fail now, not after the model has loaded, when it plainly can't be
    written, or when writing it would replace the input (`scan a.pdf -o a.pdf`)."""
    import os

    for name in inputs:
        with contextlib.suppress(OSError):
            if name != "-" and path.exists() and os.path.samefile(name, path):
                raise UsageError(
                    f"-o {display_name(str(path))} is the input {display_name(name)}: "
                    "writing it would destroy the input",
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
