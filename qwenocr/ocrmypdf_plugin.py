"""qwenocr as an OCRmyPDF engine: `ocrmypdf --plugin qwenocr.ocrmypdf_plugin in.pdf out.pdf`.

OCRmyPDF keeps everything it does (rasterising, deskew, --rotate-pages, PDF/A, optimisation,
its batch habits); this plugin replaces Tesseract's recognition with qwenocr's: each page
image OCRmyPDF hands over goes through qwenocr's own page pipeline (scan/pipeline.py) in
layout mode, on the model `qwenocr scan` would choose (the plan, or --qwenocr-model, the
QWENOCR_* variables and the config file's `[scan]` table), with its engines, its loop guard
and a checkpoint, and the layout blocks come back as OCRmyPDF's OCR tree.

Why these shapes:
- OCRmyPDF 17's current engine API is `generate_ocr` (an `OcrElement` tree, rendered by its
  fpdf2 renderer, the default `--pdf-renderer auto`); `generate_hocr` is the older path and
  `generate_pdf` serves `--pdf-renderer sandwich`. All three are given, from the same blocks:
  the tree and the hOCR with block-level paragraphs, estimated lines inside each block
  (searchable/lines.py) and words spread over their line by length; the sandwich PDF by
  qwenocr's own text layer (searchable/textlayer.py). Positions are block and line level,
  never per glyph (docs/searchable-pdf.md).
- Loading the plugin blocks OCRmyPDF's Tesseract plugin: the engine is qwenocr, and
  Tesseract need not be installed. `--ocr-engine auto` (the default) selects it; `none`
  still means OCRmyPDF's null engine, `tesseract` is refused.
- The engine is loaded once per process and shared: OCRmyPDF's workers are threads by
  default, so `--jobs N` gives N pages in flight on one model, as many at the model at once
  as the engine takes (1, or llama.cpp's/MLX's --qwenocr-batch, or the servers' slots).
- The checkpoint is keyed by the page image's pixels and the settings that change a page's
  text (scan/checkpoint.py's `run_key`): rerunning OCRmyPDF on the same file with the same
  image options finds every finished page, whatever the file is called; a page whose image
  changed (other --deskew, --clean, --oversample...) is read again. Checkpoints are kept
  after the run, since a plugin never learns that OCRmyPDF's run is over.
- OCRmyPDF is an optional extra (`qwenocr[ocrmypdf]`): nothing else in qwenocr imports this
  module, and qwenocr itself is imported here only when OCRmyPDF calls in.
"""

from __future__ import annotations

import atexit
import hashlib
import html
import json
import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple, cast

from ocrmypdf import hookimpl
from ocrmypdf.exceptions import BadArgsError, ExitCodeException, MissingDependencyError
from ocrmypdf.pluginspec import OcrEngine, OrientationConfidence
from pydantic import BaseModel

if TYPE_CHECKING:
    from ocrmypdf.models.ocr_element import OcrElement
    from PIL import Image

    from qwenocr.engines.base import Backend, Generation
    from qwenocr.errors import QwenOCRError
    from qwenocr.scan.pipeline import ScanOptions
    from qwenocr.scan.progress import Reporter
    from qwenocr.scan.results import PageResult
    from qwenocr.store.resolve import ModelFiles

log = logging.getLogger(__name__)

TESSERACT_PLUGIN = "ocrmypdf.builtin_plugins.tesseract_ocr"

# The plugin's own options: OCRmyPDF flag -> `qwenocr scan` flag (what it means and how it
# is checked is scan's). (flag, scan flag, argparse keywords)
_VALUE_OPTIONS: Tuple[Tuple[str, str, Dict[str, Any]], ...] = (
    ("model", "--model", {"metavar": "PATH_OR_REPO", "help": "a local .gguf or MLX dir, or a Hugging Face repo id"}),
    ("mmproj", "--mmproj", {"metavar": "GGUF", "help": "vision projector for --qwenocr-model"}),
    ("backend", "--backend", {"metavar": "NAME", "help": "mlx, llama.cpp or openai (default: the plan's)"}),
    ("base_url", "--base-url", {"metavar": "URL", "action": "append", "help": "OpenAI-compatible server (repeat)"}),
    ("api_model", "--api-model", {"metavar": "NAME", "help": "model name on the server"}),
    ("variant", "--variant", {"metavar": "SIZE", "help": "Qwen 3.5 size for the plan, e.g. 9B"}),
    ("quant", "--quant", {"metavar": "QUANT", "help": "quantization for the plan, e.g. Q4_K_M"}),
    ("family", "--family", {"metavar": "FAMILY", "help": "3.5 or 3.6"}),
    ("prefer", "--prefer", {"metavar": "WHAT", "help": "accuracy or speed (dense or MoE, where both fit)"}),
    ("max_image_tokens", "--max-image-tokens", {"metavar": "N", "help": "visual-token budget per page"}),
    ("max_tokens", "--max-tokens", {"metavar": "N", "help": "most tokens generated per page"}),
    ("page_timeout", "--page-timeout", {"metavar": "SECONDS", "help": "seconds per page before it is given up"}),
    ("layout_coords", "--layout-coords", {"metavar": "HOW", "help": "relative (0-1000) or absolute boxes"}),
    ("batch", "--batch", {"metavar": "N", "help": "pages decoding at once in the local engine"}),
    ("concurrency", "--concurrency", {"metavar": "N", "help": "pages in flight with --qwenocr-backend openai"}),
    ("n_ctx", "--n-ctx", {"metavar": "N", "help": "llama.cpp context size"}),
)
_FLAG_OPTIONS: Tuple[Tuple[str, str, str], ...] = (
    ("offline", "--offline", "never touch the network"),
    ("force", "--force", "load the model even if the memory check says it will not fit"),
    ("no_resume", "--no-resume", "read every page again, ignoring qwenocr's checkpoints"),
)


class QwenocrOptions(BaseModel):
    """The `--qwenocr-*` options, as OCRmyPDF 17 registers a plugin's options."""

    model: Optional[str] = None
    mmproj: Optional[str] = None
    backend: Optional[str] = None
    base_url: Optional[List[str]] = None
    api_model: Optional[str] = None
    variant: Optional[str] = None
    quant: Optional[str] = None
    family: Optional[str] = None
    prefer: Optional[str] = None
    max_image_tokens: Optional[str] = None
    max_tokens: Optional[str] = None
    page_timeout: Optional[str] = None
    layout_coords: Optional[str] = None
    batch: Optional[str] = None
    concurrency: Optional[str] = None
    n_ctx: Optional[str] = None
    offline: bool = False
    force: bool = False
    no_resume: bool = False


# -- OCRmyPDF's hooks ----------------------------------------------------------------


@hookimpl
def initialize(plugin_manager: Any) -> None:
    # With this plugin loaded the engine is qwenocr; Tesseract's plugin would otherwise
    # insist on a tesseract binary before any page is read.
    plugin_manager.set_blocked(TESSERACT_PLUGIN)


@hookimpl
def register_options() -> Dict[str, type]:
    # OCRmyPDF 17's own option checks read `options.tesseract` whichever engine runs, and
    # that namespace is registered by the Tesseract plugin blocked above: its option model
    # (defaults only, never used) is registered here in its place.
    from ocrmypdf.builtin_plugins.tesseract_ocr import TesseractOptions

    return {"qwenocr": QwenocrOptions, "tesseract": TesseractOptions}


@hookimpl
def add_options(parser: Any) -> None:
    group = parser.add_argument_group(
        "qwenocr", "Recognition by qwenocr (the same choices as `qwenocr scan`; QWENOCR_* and its config apply)"
    )
    for name, _, keywords in _VALUE_OPTIONS:
        group.add_argument(f"--qwenocr-{name.replace('_', '-')}", dest=f"qwenocr_{name}", **keywords)
    for name, _, text in _FLAG_OPTIONS:
        group.add_argument(
            f"--qwenocr-{name.replace('_', '-')}", dest=f"qwenocr_{name}", action="store_true", help=text
        )


@hookimpl
def check_options(options: Any) -> None:
    """Check the settings and find the model now, in the main process: a missing model
    file or a bad value fails in a second, with one line, before any page is rasterised."""
    engine = getattr(options, "ocr_engine", "auto")
    if engine == "tesseract":
        raise BadArgsError(
            "qwenocr: --ocr-engine tesseract: the qwenocr plugin replaces Tesseract; run without"
            " --plugin qwenocr.ocrmypdf_plugin to use Tesseract"
        )
    if engine == "none":
        return  # OCRmyPDF's null engine: no model needed
    _session_for(options, load=False)
    if not options.use_threads and options.jobs != 1:
        log.warning("qwenocr: every worker process loads its own copy of the model (--no-use-threads)")


@hookimpl
def get_ocr_engine(options: Any) -> Optional[OcrEngine]:
    if options is not None and getattr(options, "ocr_engine", "auto") not in ("auto", "qwenocr"):
        return None  # --ocr-engine none
    return QwenocrEngine()


class QwenocrEngine(OcrEngine):
    """OCRmyPDF's engine interface over qwenocr's page pipeline."""

    @staticmethod
    def version() -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("qwenocr")
        except PackageNotFoundError:  # a source tree without installed metadata
            return "unknown"

    @staticmethod
    def creator_tag(options: Any) -> str:
        return f"qwenocr {QwenocrEngine.version()}"

    def __str__(self) -> str:
        return f"qwenocr {QwenocrEngine.version()}"

    @staticmethod
    def languages(options: Any) -> Set[str]:
        # The model reads whatever script it was trained on; -l changes nothing for it.
        from ocrmypdf.languages import ISO_639_3

        return set(ISO_639_3)

    @staticmethod
    def get_orientation(input_file: Path, options: Any) -> OrientationConfidence:
        """qwenocr's detector (pages/orientation.py), for --rotate-pages: it names a turn
        only when it is sure, so that answer gets full confidence."""
        from PIL import Image

        from qwenocr.pages.orientation import detect

        with Image.open(input_file) as image:
            found = detect(image)
        return OrientationConfidence(angle=found.turn, confidence=15.0 if found.turn else 0.0)

    @staticmethod
    def get_deskew(input_file: Path, options: Any) -> float:
        return 0.0

    @staticmethod
    def supports_generate_ocr() -> bool:
        return True

    @staticmethod
    def generate_ocr(input_file: Path, options: Any, page_number: int = 0) -> Tuple["OcrElement", str]:
        page = _read_page(input_file, options, page_number)
        return _ocr_tree(page), page.text

    @staticmethod
    def generate_hocr(input_file: Path, output_hocr: Path, output_text: Path, options: Any) -> None:
        page = _read_page(input_file, options, 0)
        output_hocr.write_text(_hocr(_ocr_tree(page)), encoding="utf-8")
        output_text.write_text(page.text, encoding="utf-8")

    @staticmethod
    def generate_pdf(input_file: Path, output_pdf: Path, output_text: Path, options: Any) -> None:
        from qwenocr.searchable.textlayer import text_only_pdf

        page = _read_page(input_file, options, 0)
        to_points = 72.0 / page.dpi
        blocks = [
            {**block, "bbox": [value * to_points for value in block["bbox"]]} if block.get("bbox") else block
            for block in page.blocks
        ]
        width, height = page.size
        pdf = text_only_pdf(width * to_points, height * to_points, blocks, page.text)
        output_pdf.write_bytes(pdf)
        output_text.write_text(page.text, encoding="utf-8")


# -- settings and the engine, once per process ----------------------------------------


@dataclass
class _Session:
    """What every page of one configuration shares in this process."""

    model: "ModelFiles"
    plan: Any
    request: Any  # the ScanRequest the options amount to
    options: "ScanOptions"
    settings: Dict[str, Any]  # what changes a page's text: keys the checkpoints
    backend: Optional["Backend"] = None


_sessions: Dict[str, _Session] = {}
_sessions_lock = threading.Lock()


def _scan_arguments(options: Any) -> List[str]:
    """The `--qwenocr-*` options as `qwenocr scan` arguments."""
    ours = getattr(options, "qwenocr", None)
    arguments: List[str] = []
    for name, flag, _ in _VALUE_OPTIONS:
        value = getattr(ours, name, None) if ours is not None else None
        for item in value if isinstance(value, list) else [value] if value is not None else []:
            arguments += [flag, str(item)]
    for name, flag, _ in _FLAG_OPTIONS:
        if ours is not None and getattr(ours, name, False):
            arguments.append(flag)
    return arguments


def _scan_request(arguments: List[str]) -> Any:
    """The ScanRequest `qwenocr scan --layout ARGUMENTS` would build: Click parses the
    arguments with scan's own rules, over the QWENOCR_* variables and the config file."""
    import typer.main
    from typer._click.exceptions import ClickException  # Typer 0.28 carries its own Click (cli/app.py)

    from qwenocr.cli.app import app
    from qwenocr.cli.config import default_map, resolve
    from qwenocr.engines.base import GenerationSettings
    from qwenocr.errors import UsageError
    from qwenocr.fit.plan import check_family, check_family_variant
    from qwenocr.pages.document import RenderSettings
    from qwenocr.scan.pipeline import ScanOptions, layout_prompt
    from qwenocr.scan.request import ScanRequest

    root = typer.main.get_command(app)
    scan = root.commands["scan"]  # type: ignore[attr-defined]
    defaults = default_map(resolve(root, command="scan")).get("scan", {})
    try:
        ctx = scan.make_context("scan", [*arguments, "-"], default_map=defaults)
    except ClickException as error:
        raise UsageError(_ours(error.format_message())) from None
    p = ctx.params

    def plain(value: Any) -> Any:
        return getattr(value, "value", value)  # Click hands enums back

    family = check_family(plain(p["family"]))
    if p["variant"] is not None:
        check_family_variant(family, p["variant"])
    options = ScanOptions(
        # Always layout mode: the blocks' boxes are where the text goes on the page.
        prompt=layout_prompt(plain(p["layout_coords"])),
        generation=GenerationSettings(max_tokens=p["max_tokens"], temperature=p["temperature"], seed=p["seed"]),
        # OCRmyPDF rasterises the page; qwenocr sizes that image to its token budget.
        render=RenderSettings(max_image_tokens=p["max_image_tokens"], timeout=None),
        page_timeout=p["page_timeout"],
        skip_blank=p["skip_blank"],
        auto_rotate=p["auto_rotate"],
        mode="ocr",
        layout=True,
        layout_coords=plain(p["layout_coords"]),
    )
    return ScanRequest(
        inputs=[],
        family=family,
        backend=plain(p["backend"]),
        variant=p["variant"],
        quant=p["quant"],
        model=p["model"],
        mmproj=str(p["mmproj"]) if p["mmproj"] else None,
        offline=p["offline"],
        resume=p["resume"],
        force=p["force"],
        base_urls=list(p["base_url"] or []),
        api_model=p["api_model"],
        concurrency=p["concurrency"],
        batch=p["batch"],
        n_ctx=p["n_ctx"],
        prefer=plain(p["prefer"]),
        options=options,
    )


def _ours(message: str) -> str:
    """Click's message about a scan option, in the plugin's own option names."""
    for name, flag, _ in (*_VALUE_OPTIONS, *_FLAG_OPTIONS):
        message = message.replace(f"'{flag}'", f"'--qwenocr-{name.replace('_', '-')}'")
    return message


def _session_for(options: Any, load: bool = True) -> _Session:
    """This process's session for `options`: the model found at the first call, loaded
    at the first page."""
    from qwenocr.errors import QwenOCRError

    arguments = _scan_arguments(options)
    key = json.dumps(arguments)
    try:
        with _sessions_lock:
            session = _sessions.get(key)
            if session is None:
                session = _sessions[key] = _new_session(arguments)
            if load and session.backend is None:
                session.backend = _load(session)
    except QwenOCRError as error:
        raise _exit_error(error) from None
    return session


def _new_session(arguments: List[str]) -> _Session:
    from qwenocr.scan.engine import connect_server
    from qwenocr.scan.model_choice import resolve_model
    from qwenocr.store.resolve import ModelFiles

    request = _scan_request(arguments)
    reporter = cast("Reporter", _LogReporter())
    backend = None
    if request.backend == "openai":
        model, plan, backend = connect_server(request, reporter)
    else:
        model, plan = resolve_model(request, reporter)
    session = _Session(model, plan, request, request.options, {})
    if backend is not None:
        _adopt(session, backend)
    assert isinstance(session.model, ModelFiles)
    return session


def _load(session: _Session) -> "Backend":
    from qwenocr.scan.engine import load_engine

    backend = load_engine(session.model, session.request, session.plan, cast("Reporter", _LogReporter()))
    _adopt(session, backend)
    return _Shared(backend)


def _adopt(session: _Session, backend: "Backend") -> None:
    """The render size capped at what the engine takes, and the checkpoint's settings."""
    from qwenocr.scan.run import output_settings

    render = session.request.options.render
    cap = backend.max_image_tokens or render.engine_max_tokens
    session.options = replace(
        session.request.options, render=replace(render, engine_max_tokens=min(cap, render.engine_max_tokens))
    )
    session.settings = {**output_settings(session.request, session.options, session.model), "via": "ocrmypdf"}
    session.backend = _Shared(backend) if not isinstance(backend, _Shared) else backend
    atexit.register(backend.close)


class _Shared:
    """One engine for every OCRmyPDF worker thread of this process: at most as many pages
    at it at once as it takes (`concurrency`); each page's pipeline sees one slot."""

    concurrency = 1

    def __init__(self, backend: "Backend"):
        self._backend = backend
        self._slots = threading.BoundedSemaphore(max(1, backend.concurrency))
        self.name = backend.name
        self.max_image_tokens = backend.max_image_tokens

    def generate(self, *args: Any, **kwargs: Any) -> "Generation":
        with self._slots:
            return self._backend.generate(*args, **kwargs)

    def close(self) -> None:
        pass  # closed at exit (atexit), after every page of the process


def _exit_error(error: "QwenOCRError") -> ExitCodeException:
    """A qwenocr error as OCRmyPDF's: one line, and an exit code of OCRmyPDF's kind."""
    from qwenocr.errors import EngineMissingError, ModelUnavailableError, UsageError

    kind: type = ExitCodeException
    if isinstance(error, UsageError):
        kind = BadArgsError
    elif isinstance(error, (EngineMissingError, ModelUnavailableError)):
        kind = MissingDependencyError
    return cast(ExitCodeException, kind(f"qwenocr: {error.one_line()}"))


# -- one page ------------------------------------------------------------------------


@dataclass
class _Page:
    """A page's recognised text and blocks, boxes in pixels of OCRmyPDF's page image."""

    number: int  # 1-based, for messages
    size: Tuple[int, int]
    dpi: float
    text: str
    blocks: List[Dict[str, Any]]


def _read_page(input_file: Path, options: Any, page_number: int) -> _Page:
    """The page image through qwenocr's pipeline (render to the token budget, blank check,
    orientation, the model, the loop guard, layout), resumed from its checkpoint."""
    from PIL import Image

    from qwenocr.pages.document import open_document
    from qwenocr.scan.checkpoint import Checkpoint, default_root, run_key
    from qwenocr.scan.pipeline import run_document
    from qwenocr.scan.results import checked_record

    session = _session_for(options)
    assert session.backend is not None
    with Image.open(input_file) as image:
        image.load()
        size = image.size
        dpi = _dpi(image)
        digest = _pixels_digest(image)
    number = page_number + 1
    try:
        checkpoint = Checkpoint.open(default_root(), run_key(digest, session.settings), validate=checked_record)
    except OSError as error:
        log.warning(f"qwenocr: page {number}: no checkpoint ({error}); it cannot be resumed")
        checkpoint = None
    try:
        if checkpoint is not None and not session.request.resume:
            checkpoint.clear()
        with open_document(input_file, timeout=None) as document:
            (result,) = run_document(document, [1], session.backend, session.options, checkpoint)
    finally:
        if checkpoint is not None:
            checkpoint.close()
    _report(number, result)
    blocks = _blocks_in_image_pixels(result, size)
    return _Page(number, size, dpi, result.text if not result.failed else "", blocks)


def _report(number: int, result: "PageResult") -> None:
    from qwenocr.scan.results import BLANK, OK

    if result.resumed:
        log.info(f"qwenocr: page {number}: from the checkpoint")
    elif result.failed:
        # The page keeps its image without text; no checkpoint, so a rerun tries it again.
        log.warning(f"qwenocr: page {number}: {result.error}")
    elif result.status not in (OK, BLANK):
        log.warning(f"qwenocr: page {number}: {result.status}")
    else:
        log.info(f"qwenocr: page {number}: {result.status}, {result.output_tokens} tokens in {result.seconds:.1f} s")


def _dpi(image: "Image.Image") -> float:
    dpi = image.info.get("dpi")
    value = dpi[0] if isinstance(dpi, tuple) else dpi
    return float(value) if value else 72.0


def _pixels_digest(image: "Image.Image") -> str:
    """The page image's pixels (not its file, whose metadata may differ run to run)."""
    digest = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\n".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def _blocks_in_image_pixels(result: "PageResult", size: Tuple[int, int]) -> List[Dict[str, Any]]:
    """The page's blocks with their boxes in pixels of OCRmyPDF's image. Layout mode gives
    an image input's boxes in pixels of the image the model saw (`layout` width and
    height, before any token-budget resize): scaled up here."""
    blocks = [dict(block) for block in result.blocks or []]
    layout = result.extra.get("layout") or {}
    width, height = layout.get("width"), layout.get("height")
    if not width or not height:
        return [{key: value for key, value in block.items() if key != "bbox"} for block in blocks]
    scale_x, scale_y = size[0] / float(width), size[1] / float(height)
    for block in blocks:
        box = block.get("bbox")
        if box:
            block["bbox"] = [box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y]
    return blocks


# -- the OCR tree --------------------------------------------------------------------


def _ocr_tree(page: _Page) -> "OcrElement":
    """The page as OCRmyPDF's OCR tree: a paragraph per text block (the model's box), its
    estimated lines (searchable/lines.py), each line's words spread over it by length.
    Without any box, the page's text is one block over the whole page."""
    from ocrmypdf.models.ocr_element import BoundingBox, OcrClass, OcrElement

    from qwenocr.searchable.lines import block_lines

    width, height = page.size
    boxed = [block for block in page.blocks if block.get("bbox")]
    if not boxed and page.text.strip():
        boxed = [{"type": "text", "text": page.text, "bbox": [0.0, 0.0, float(width), float(height)]}]
    paragraphs = []
    for block in boxed:
        lines = []
        for line in block_lines(block):
            x0, y0, x1, y1 = line.box
            words = [
                OcrElement(ocr_class=OcrClass.WORD, text=text, bbox=BoundingBox(left, y0, right, y1))
                for text, left, right in _spread(line.text, x0, x1, line.rtl)
            ]
            if words:
                lines.append(
                    OcrElement(
                        ocr_class=OcrClass.LINE,
                        bbox=BoundingBox(x0, y0, x1, y1),
                        direction="rtl" if line.rtl else "ltr",
                        children=words,
                    )
                )
        if lines:
            x0, y0, x1, y1 = (float(value) for value in block["bbox"])
            paragraphs.append(
                OcrElement(ocr_class=OcrClass.PARAGRAPH, bbox=BoundingBox(x0, y0, x1, y1), children=lines)
            )
    return OcrElement(
        ocr_class=OcrClass.PAGE,
        bbox=BoundingBox(0, 0, width, height),
        dpi=page.dpi,
        page_number=page.number - 1,
        children=paragraphs,
    )


def _spread(text: str, left: float, right: float, rtl: bool) -> List[Tuple[str, float, float]]:
    """A line's words with the stretch of the line each takes: its share of the characters
    (a space counted with the word before it). Right-to-left lines start at the right."""
    words = text.split()
    total = sum(len(word) + 1 for word in words) - 1
    if not words or total <= 0:
        return []
    step = (right - left) / total
    out, position = [], 0
    for word in words:
        start, end = position * step, (position + len(word)) * step
        out.append((word, right - end, right - start) if rtl else (word, left + start, left + end))
        position += len(word) + 1
    return out


def _hocr(tree: "OcrElement") -> str:
    """The tree as hOCR, for the older `generate_hocr` path."""

    def box(element: "OcrElement") -> str:
        b = element.bbox
        assert b is not None
        return f"bbox {round(b.left)} {round(b.top)} {round(b.right)} {round(b.bottom)}"

    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><head>',
        '<meta http-equiv="Content-Type" content="text/html;charset=utf-8"/>',
        "<meta name='ocr-system' content='qwenocr'/></head><body>",
        f"<div class='ocr_page' title='{box(tree)}'>",
    ]
    for paragraph in tree.children:
        parts.append(f"<p class='ocr_par' title='{box(paragraph)}'>")
        for line in paragraph.children:
            direction = f" dir='{line.direction}'" if line.direction == "rtl" else ""
            parts.append(f"<span class='ocr_line' title='{box(line)}'{direction}>")
            for word in line.children:
                parts.append(f"<span class='ocrx_word' title='{box(word)}'>{html.escape(word.text)}</span> ")
            parts.append("</span>")
        parts.append("</p>")
    parts.append("</div></body></html>\n")
    return "\n".join(parts)


class _LogReporter:
    """What model choice and engine loading report, into OCRmyPDF's log (they take a
    scan Reporter; only its `info` and `warn` are used there)."""

    def info(self, message: str) -> None:
        log.info(f"qwenocr: {message}")

    def warn(self, message: str) -> None:
        log.warning(f"qwenocr: {message}")
