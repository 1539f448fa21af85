"""The page loop: render, skip blanks, run the model, guard against loops, checkpoint.

`run_document` yields one `PageResult` per selected page, in page order. It never
prints; it reports through the `Events` callbacks (the CLI turns them into progress).

Why it is shaped this way:
- Render threads prepare the next pages while the model works on the current ones.
  With one page at the model, one thread renders one page ahead (the rendering itself
  happens in the document's guarded child process). With several (`concurrency` > 1: a
  server, llama.cpp's `--batch`), pages finish every fraction of a second and one child
  rendering page after page becomes the bottleneck: R threads then render at once, each
  through a reader with a child process of its own (`pages.document.page_readers`), R
  sized to the pages in flight and the cores (`render_workers`). Pages are handed out in
  order and yielded in order.
- Memory stays flat however many pages there are: a page takes one of in_flight + R
  permits before it is rendered and gives it back once the model is done with its
  image (at once when it needs no model), so at most in_flight + R page images are
  alive at any time (no list of page images is ever built).
- Local engines take one page at a time; a server backend declares `concurrency` > 1
  and several pages are then in flight, their results still yielded in page order.
- Every finished page goes to the checkpoint before it is yielded, so an interrupted
  run loses at most the pages in flight; a rerun takes finished pages from there.
- Layout mode with a figure target (scan/figures.py): once the model has answered, the
  page's figures are written (the PDF's own image where the figure is one, else a crop of
  the page rendered again at the figures' resolution, both through the same guarded
  reader) and the blocks link them; a text-layer page's figures are written in the render
  thread that read it. The checkpoint keeps the blocks without their links, which depend
  on where this run writes: a resumed page is linked again, to the files already there or
  to fresh ones.
- Sideways and upside-down scans (`auto_rotate`, pages/orientation.py): a page going to
  the model is turned upright first, from its pixels, where the detector is confident;
  the page's record says so (`rotation_fix`, degrees turned clockwise). Layout mode's
  boxes are what the model saw, in the turned image: they are turned back onto the page
  as displayed, and figures are cropped from it, so that `blocks` mean the same with or
  without a turn; each figure file is then turned as the page was, to stand upright.
- A page that crashes the engine (local engines run in a worker process, see
  `engines.isolated`) is tried once more in a fresh engine, then marked `error`; only an
  error that says it ends the run (`ends_run`: the engine crashing page after page)
  stops the loop.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Iterator, List, Optional

from PIL import Image

from qwenocr.engines.base import Backend, GenerationSettings
from qwenocr.errors import EngineCrashedError, QwenOCRError
from qwenocr.layout.coords import PageGeometry
from qwenocr.pages.document import Document, RenderSettings, image_tokens, page_geometry, page_readers
from qwenocr.scan.figures import FigureTarget, add_figures
from qwenocr.scan.results import BLANK, ERROR, OK, REPETITION, TIMEOUT, TRUNCATED, PageResult

DEFAULT_PROMPT = (
    "Convert this document page to Markdown. Transcribe all text exactly as written, "
    "in natural reading order. Use Markdown headings, lists and tables (pipe tables) "
    "where the page has them, and LaTeX for mathematical formulas ($...$ inline, "
    "$$...$$ for display). Do not describe images, do not summarise, do not add "
    "anything that is not on the page. If the page has no text, output nothing."
)

# Layout mode (--layout): Qwen-VL's document-parsing HTML (FACTS §11: the cookbook's
# "qwenvl html" prompt, with the rules some integrations spell out), boxes on every
# element. `{coords}` says which convention to use (--layout-coords, layout/coords.py).
LAYOUT_PROMPT = (
    "QwenVL HTML. Parse this document page into HTML, in natural reading order. Give every element a"
    ' data-bbox="x1 y1 x2 y2" attribute: its box {coords}. Use <h1>-<h6> for headings, <p> for'
    " paragraphs, <ul>/<ol> with <li> for lists, <table> for tables (rowspan and colspan for merged"
    ' cells), <div class="formula"> with LaTeX for formulas, <div class="image"> for figures and'
    ' pictures, <div class="caption"> for captions, <header> and <footer> for running headers,'
    " footers and page numbers. Transcribe all text exactly as written; do not describe images, do"
    " not add anything that is not on the page. Output only the HTML."
)
_LAYOUT_COORDS = {
    "relative": "in coordinates relative to the image, from 0 to 1000 on each axis",
    "absolute": "in pixels of the image",
}


def layout_prompt(coords: str = "relative") -> str:
    """The layout-mode prompt for a coordinate convention ("relative" or "absolute")."""
    return LAYOUT_PROMPT.format(coords=_LAYOUT_COORDS[coords])


def _retry_settings(settings: GenerationSettings) -> GenerationSettings:
    """Settings for the one retry after a loop: another seed, some randomness and a mild
    repetition penalty, which break most loops without changing a faithful transcription."""
    return replace(settings, seed=settings.seed + 1, temperature=0.3, top_p=0.9, top_k=40, repetition_penalty=1.1)


@dataclass(frozen=True)
class ScanOptions:
    prompt: str = DEFAULT_PROMPT
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    render: RenderSettings = field(default_factory=RenderSettings)
    page_timeout: Optional[float] = None  # seconds per page, None for no limit
    skip_blank: bool = True
    retry_on_repetition: bool = True
    # "ocr": always the model; "text": only the PDF's own text layer; "auto": the text
    # layer where it is present and trustworthy, the model for the other pages.
    mode: str = "ocr"
    # Pages rendered at once: None sizes it to the pages in flight and the cores
    # (`render_workers`); a number asks for exactly that many (tests, benchmarks).
    render_workers: Optional[int] = None
    # Layout mode: the answer is document-parsing HTML, read into `blocks` (qwenocr/layout);
    # the page's text is the Markdown built from them. The prompt must ask for that HTML
    # (the CLI puts `layout_prompt(layout_coords)` in `prompt` unless --prompt is given).
    layout: bool = False
    layout_coords: str = "relative"  # "relative" (0-1000) or "absolute" (image pixels)
    drop_headers_footers: bool = False  # left out of the Markdown (kept in `blocks`)
    # Pages for the model turned upright first when their text runs sideways or upside
    # down (pages/orientation.py); never text-layer pages.
    auto_rotate: bool = True


@dataclass
class Events:
    """Callbacks the pipeline reports through (all optional)."""

    page_started: Callable[[int], None] = lambda number: None
    tokens: Callable[[int], None] = lambda count: None  # new tokens generated
    page_done: Callable[[PageResult], None] = lambda result: None
    notice: Callable[[str], None] = lambda message: None  # something the user should know now


log = logging.getLogger(__name__)

# Render workers (child processes) for one document, and for all documents of a run
# together. Each child takes about 80 MiB with 300-dpi scans; four render 1536-token
# pages far faster than a batch of 8 on a GPU finishes them (benchmarks/bench_render.py).
MAX_RENDER_WORKERS = 4


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def render_workers(in_flight: int, cores: Optional[int] = None) -> int:
    """Pages rendered at once when `in_flight` pages can be at the model at once.

    One when the model takes one page at a time: a page renders in tens of
    milliseconds, a model page takes seconds, and one page ahead keeps it busy. With
    several in flight: no more than the pages in flight, half the cores but at least two,
    never more than the cores or MAX_RENDER_WORKERS. Half, because the engine needs its
    cores (all of them on a CPU) and this process receives and checks every page; at
    least two, because rendering takes no more CPU time in two processes than in one
    (it only happens sooner, within the bound on pages ahead), and two render 300-dpi
    scans 1.95x as fast as one even on a 2-core machine (benchmarks/bench_render.py).
    """
    if in_flight <= 1:
        return 1
    cores = cores or available_cores()
    return max(1, min(in_flight, cores, max(2, cores // 2), MAX_RENDER_WORKERS))


class _ExtraRenderers:
    """Render workers beyond each document's own, shared by every document of the process.

    A server backend keeps several documents in flight at once (scan/run.py), each of
    which renders through its own child already: the extra readers are shared among
    them, so that the run as a whole never renders more than `render_workers` allows.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used = 0

    def claim(self, wanted: int, limit: int) -> int:
        """Up to `wanted` extra workers, the run's total kept within `limit`; how many."""
        with self._lock:
            granted = max(0, min(wanted, limit - self._used))
            self._used += granted
            return granted

    def release(self, count: int) -> None:
        with self._lock:
            self._used -= count


_extra_renderers = _ExtraRenderers()


class _Rendered:
    """A page ready for the model, or already finished (checkpoint, text layer), or
    what stopped it from being ready."""

    __slots__ = ("number", "image", "error", "cached", "geometry", "turned")

    def __init__(self, number, image=None, error=None, cached=None, geometry=None, turned=0):
        self.number = number
        self.image: Optional[Image.Image] = image  # what the model sees: turned upright, if it was
        self.error: Optional[str] = error
        self.cached: Optional[PageResult] = cached
        self.geometry: Optional[PageGeometry] = geometry  # layout mode: the page as displayed
        self.turned: int = turned  # degrees clockwise the rendered page was turned (auto_rotate)


def _from_text_layer(document: Document, number: int, options: ScanOptions) -> Optional[PageResult]:
    """The page from the PDF's own text layer, when the mode asks for it and it is
    trustworthy; None sends the page to the model. Its Markdown is rebuilt from the
    characters' positions and fonts (pages/textmarkdown.py); in layout mode it carries
    blocks like a model page's."""
    mode = options.mode
    if mode == "ocr":
        return None
    started = time.monotonic()
    from qwenocr.pages.textlayer import to_markdown

    page_text = document.text_layer(number)
    if page_text is None:  # only PDFs carry a text layer
        if mode == "text":
            return PageResult(
                number, "", ERROR, source="none", error="an image has no text layer (use --mode auto or ocr)"
            )
        return None
    verdict = page_text.assess()
    extra = {"text_layer": {"usable": verdict.usable, "reason": verdict.reason, "chars": verdict.chars}}
    if verdict.usable:
        layout = page_text.layout()
        result = PageResult(
            number,
            layout.markdown,
            OK,
            source="text-layer",
            seconds=time.monotonic() - started,
            attempts=0,
            extra=extra,
        )
        if options.layout:
            width, height = page_text.display_size
            geometry = PageGeometry(width, height, unit="pt", rotation=page_text.rotation)
            result.blocks = layout.blocks
            result.extra["layout"] = {**geometry.to_dict(), "coords": "text-layer"}
            result.text = _layout_text(result, options)
        return result
    if mode == "text":
        return PageResult(
            number,
            to_markdown(page_text.text),
            ERROR,
            source="text-layer",
            error=f"no usable text layer: {verdict.reason} (use --mode auto or ocr)",
            seconds=time.monotonic() - started,
            extra=extra,
        )
    return None


def run_document(
    document: Document,
    page_numbers: List[int],
    backend: Backend,
    options: ScanOptions,
    checkpoint=None,
    events: Optional[Events] = None,
    figures: Optional[FigureTarget] = None,
) -> Iterator[PageResult]:
    """Yield a PageResult for each page number, in order. `figures`: where layout mode
    writes the pages' figure files (None: nowhere, the Markdown keeps a comment)."""
    events = events or Events()
    in_flight = max(1, backend.concurrency)
    count = len(page_numbers)
    forced = options.render_workers is not None
    wanted = max(1, min(options.render_workers or render_workers(in_flight), count))
    # Sized here: within the run's share of extra readers. Asked for: exactly that many.
    extra = wanted - 1 if forced else _extra_renderers.claim(wanted - 1, wanted - 1)
    # A render without a deadline runs in this process (--render-timeout 0), where PDFium
    # serialises every call: one reader then.
    readers = page_readers(document, 1 + extra if options.render.timeout is not None else 1)
    claimed = 0 if forced else len(readers) - 1  # the run's share: what this document really has
    if not forced:
        _extra_renderers.release(extra - claimed)
    if in_flight > 1 or len(readers) > 1:
        log.info(f"{document.name}: {in_flight} pages in flight, {len(readers)} rendered at a time")

    # A page holds a permit from before it is rendered until the model is done with its
    # image: at most in_flight + R page images alive, however long the document.
    permits = threading.Semaphore(in_flight + len(readers))
    handout = threading.Lock()  # the next page to hand out, in order
    cursor = [0]
    ready: Dict[int, _Rendered] = {}  # by index in page_numbers, until the consumer takes it
    arrived = threading.Condition()
    stop = threading.Event()
    # What broke a render thread, if anything did: the consumer raises it, so that a bug
    # there ends the run as an error instead of as a complete document with pages missing.
    broken: List[BaseException] = []

    def prepare(reader: Document, number: int) -> _Rendered:
        record = checkpoint.get(number) if checkpoint is not None else None
        if record is not None:
            resumed = _resumed(PageResult.from_record(record), options)
            if figures is not None:
                _add_figures(reader, resumed, None, options, figures, events, keep_existing=True)
            return _Rendered(number, cached=resumed)
        try:
            from_text = _from_text_layer(reader, number, options)
            if from_text is not None:
                if figures is not None:
                    _add_figures(reader, from_text, None, options, figures, events)
                return _Rendered(number, cached=from_text)
            image = reader.render(number, options.render)
            # Blank detection runs here, beside the model rather than before it, so it
            # costs no wall time.
            if options.skip_blank and _is_blank(image):
                return _Rendered(number, cached=PageResult(number, "", BLANK, source="none", **_size_fields(image)))
            geometry = _geometry(reader, number, image) if options.layout else None
            item = _Rendered(number, image=image, geometry=geometry)
            if options.auto_rotate and in_flight == 1:  # beside the model, like blank detection
                _turn_upright(item)
            return item
        except QwenOCRError as error:
            return _Rendered(number, error=error.one_line())
        except Exception as error:  # a page pdfium or Pillow chokes on
            return _Rendered(number, error=f"page {number} could not be rendered: {error}")

    def take_permit() -> bool:
        """A permit, waited for; False when the consumer has stopped."""
        while not stop.is_set():
            if permits.acquire(timeout=0.1):
                return True
        return False

    def render_pages(reader: Document) -> None:
        try:
            while take_permit():
                with handout:
                    index = cursor[0]
                    if stop.is_set() or index >= count:
                        permits.release()
                        return
                    cursor[0] += 1
                item = prepare(reader, page_numbers[index])
                with arrived:
                    ready[index] = item
                    arrived.notify_all()
        except BaseException as error:  # noqa: B036 - handed to the consumer thread, which raises it
            with arrived:
                broken.append(error)
                arrived.notify_all()

    renderers = [
        threading.Thread(target=render_pages, args=(reader,), name=f"qwenocr-render-{i}", daemon=True)
        for i, reader in enumerate(readers)
    ]
    for thread in renderers:
        thread.start()

    def items() -> Iterator[_Rendered]:
        for index in range(count):
            with arrived:
                while index not in ready:
                    if broken:
                        raise broken[0]
                    arrived.wait()
                item = ready.pop(index)
            if item.image is None:  # no model work holds it: its permit goes back now
                permits.release()
            yield item

    def finish(item: _Rendered) -> PageResult:
        if item.cached is not None:
            return item.cached
        try:
            events.page_started(item.number)
            if options.auto_rotate and in_flight > 1 and item.image is not None:
                # Here, in the page's own thread, rather than in a render thread: with several
                # pages in flight the renders must keep up with the server's answers.
                _turn_upright(item)
            result = process_page(item, backend, options, events)
            if checkpoint is not None and not result.failed:
                checkpoint.put(result.number, result.to_record())
            if figures is not None:  # after the checkpoint: it keeps no links (see above)
                displayed = _turn(item.image, -item.turned) if item.image is not None else None
                _add_figures(document, result, displayed, options, figures, events)
        finally:
            if item.image is not None:  # the model is done with it: the image goes, then its permit
                item.image = None
                permits.release()
        return result

    try:
        if in_flight == 1:
            for item in items():
                result = finish(item)
                events.page_done(result)
                yield result
        else:
            with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="qwenocr-page") as pool:
                pending: "deque[Future[PageResult]]" = deque()
                for item in items():
                    pending.append(pool.submit(finish, item))
                    while len(pending) >= in_flight or (pending and pending[0].done()):
                        result = pending.popleft().result()
                        events.page_done(result)
                        yield result
                while pending:
                    result = pending.popleft().result()
                    events.page_done(result)
                    yield result
    finally:
        stop.set()
        with arrived:
            arrived.notify_all()
        # The extra readers first: closing one ends a page it is waiting for (its child is
        # killed), so that an interrupt or an error stops every render at once. The
        # document's own reader is closed by its owner.
        for reader in readers[1:]:
            reader.close()
        for thread in renderers:
            thread.join(timeout=5)
        _extra_renderers.release(claimed)


def _geometry(reader: Document, number: int, image: Image.Image) -> PageGeometry:
    """The page as displayed, for layout mode: PDF points where the PDF says its size,
    else (an image input, or a size that could not be read) pixels of the rendered image."""
    try:
        found = page_geometry(reader, number)
    except QwenOCRError as error:  # the page rendered; only its size could not be read
        log.info(f"page {number}: boxes in image pixels: {error.one_line()}")
        found = None
    if found is None:
        return PageGeometry(float(image.width), float(image.height), unit="px", rotation=None)
    width, height, rotation = found
    return PageGeometry(width, height, unit="pt", rotation=rotation)


def _turn_upright(item: _Rendered) -> None:
    """The page's image turned upright when the detector is sure it is not (`turned` says
    by how much)."""
    from qwenocr.pages.orientation import detect, turn

    assert item.image is not None
    try:
        found = detect(item.image)
    except Exception as error:  # a detector bug must cost the turn, never the page
        log.warning(f"page {item.number}: its orientation could not be checked ({type(error).__name__}: {error})")
        return
    if found.turn:
        log.info(f"page {item.number}: turned {found.turn} degrees clockwise ({found})")
        item.image, item.turned = turn(item.image, found.turn), found.turn
    else:
        log.debug(f"page {item.number}: not turned: {found.reason}")


def _turn(image: Image.Image, degrees: int) -> Image.Image:
    from qwenocr.pages.orientation import turn

    return turn(image, degrees % 360)


def _with_layout(
    result: PageResult, geometry: Optional[PageGeometry], image_size, options: ScanOptions, turned: int = 0
) -> None:
    """Layout mode: the answer read into blocks (page coordinates), the text rebuilt from them.

    `image_size` is the image the model saw; `turned`, the degrees clockwise it was turned
    from the page as displayed (`geometry`): its boxes are read in the turned page's frame,
    then turned back."""
    from qwenocr.layout.blocks import Block
    from qwenocr.layout.markdown import to_markdown
    from qwenocr.layout.parse import page_blocks
    from qwenocr.pages.orientation import unturn_box

    if geometry is None:  # the displayed page's pixels: the model's image, turned back
        width, height = image_size if turned in (0, 180) else image_size[::-1]
        geometry = PageGeometry(float(width), float(height), unit="px", rotation=None)
    frame = geometry
    if turned in (90, 270):
        frame = replace(geometry, width=geometry.height, height=geometry.width)
    try:
        blocks = page_blocks(result.text, image_size, frame, options.layout_coords)
        if turned:
            blocks = [
                block
                if block.bbox is None
                else replace(block, bbox=unturn_box(block.bbox, (frame.width, frame.height), turned))
                for block in blocks
            ]
    except Exception as error:  # a parser bug must cost the structure, never the page
        log.warning(f"page {result.number}: the layout could not be read ({error}); kept as text")
        blocks = [Block("text", text=result.text)] if result.text else []
    result.blocks = [block.to_dict() for block in blocks]
    result.extra["layout"] = {**geometry.to_dict(), "coords": options.layout_coords}
    result.text = to_markdown(blocks, options.drop_headers_footers)


def _resumed(result: PageResult, options: ScanOptions) -> PageResult:
    """A page from the checkpoint; in layout mode its text is rebuilt from its blocks, so
    that --drop-headers-footers applies to it as to a fresh page. Figure links are not
    trusted from there (they depend on where a run writes): `_add_figures` sets them."""
    result = replace(result, resumed=True)
    if options.layout and result.blocks:
        result.blocks = [
            {key: value for key, value in block.items() if key not in ("file", "figure_source")}
            for block in result.blocks
        ]
        result.text = _layout_text(result, options)
    return result


def _layout_text(result: PageResult, options: ScanOptions) -> str:
    """The page's Markdown from its blocks, figures linked to their files where they have one."""
    from qwenocr.layout.blocks import from_dicts
    from qwenocr.layout.markdown import to_markdown

    blocks = result.blocks or []
    files = [block.get("file") for block in blocks]
    return to_markdown(from_dicts(blocks), options.drop_headers_footers, files, result.number)


def _add_figures(
    reader: Document,
    result: PageResult,
    image: Optional[Image.Image],
    options: ScanOptions,
    target: FigureTarget,
    events: Events,
    keep_existing: bool = False,
) -> None:
    """Layout mode: the page's figure files written and linked (scan/figures.py), its text
    rebuilt with the links. Model pages (turned upright as the model saw them, where they
    were) and text-layer pages (their figures are the page's image objects)."""
    if not options.layout or result.failed or result.source not in ("model", "text-layer") or not result.blocks:
        return
    if not any(block.get("type") == "figure" for block in result.blocks):
        return
    try:
        add_figures(
            reader,
            result.number,
            result.blocks,
            result.extra.get("layout"),
            image,
            options.render,
            target,
            events.notice,
            keep_existing=keep_existing,
            turned=int(result.extra.get("rotation_fix") or 0),
        )
    except Exception as error:  # a bug here must cost the figures, never the page
        log.warning(f"page {result.number}: its figures were not saved ({type(error).__name__}: {error})")
        return
    if any("file" in block for block in result.blocks):
        result.text = _layout_text(result, options)


def _is_blank(image: Image.Image) -> bool:
    from qwenocr.pages.blank import is_blank

    return is_blank(image)


def _size_fields(image: Image.Image) -> dict:
    return dict(image_width=image.width, image_height=image.height, image_tokens=image_tokens(*image.size))


def process_page(item: _Rendered, backend: Backend, options: ScanOptions, events: Events) -> PageResult:
    """One page through the model, the loop guard and one retry."""
    started = time.monotonic()
    if item.error is not None:
        return PageResult(item.number, "", ERROR, source="none", error=item.error)
    image = item.image
    assert image is not None
    size = _size_fields(image)

    settings = options.generation
    best: Optional[PageResult] = None
    attempts = 0
    crashed = False
    for attempt in range(2 if options.retry_on_repetition else 1):
        attempts += 1
        if attempt == 1:
            settings = _retry_settings(settings)
        try:
            try:
                result = _generate_once(item.number, image, backend, options, settings, events)
            except EngineCrashedError as crash:
                if crashed:
                    raise
                # A native crash: once more, with the same settings, in a fresh engine
                # (the backend starts one); a second crash on the page marks it `error`.
                crashed = True
                events.notice(f"page {item.number}: {crash.one_line()}; retrying the page in a fresh engine")
                attempts += 1
                result = _generate_once(item.number, image, backend, options, settings, events)
        except QwenOCRError as error:
            if error.ends_run:
                raise
            if isinstance(error, EngineCrashedError):
                error = EngineCrashedError(f"{error.message} again on the retry; the page is skipped", error.hint)
            return PageResult(
                item.number,
                "",
                ERROR,
                source="none",
                error=error.one_line(),
                attempts=attempts,
                seconds=time.monotonic() - started,
                **size,
            )
        except Exception as error:  # the engine failed on this page; the run goes on
            return PageResult(
                item.number,
                "",
                ERROR,
                source="none",
                attempts=attempts,
                error=f"the engine failed on this page: {type(error).__name__}: {error}",
                seconds=time.monotonic() - started,
                **size,
            )
        if best is None or result.status != REPETITION or len(result.text) > len(best.text):
            best = result
        if result.status != REPETITION:
            break
    assert best is not None
    if options.layout:
        _with_layout(best, item.geometry, image.size, options, item.turned)
    if item.turned:
        best.extra["rotation_fix"] = item.turned
    best.attempts = attempts
    best.seconds = time.monotonic() - started
    for key, value in size.items():
        setattr(best, key, value)
    return best


class _PieceSink:
    """`on_piece` with the page's deadline on it (`deadline`, time.monotonic() seconds).

    The callback alone checks the time only when text arrives; a server can stream
    keep-alives or hidden reasoning for ever without any. Engines that wait on something
    other than their own tokens (a server) read `deadline` and stop by then themselves.
    """

    __slots__ = ("feed", "deadline")

    def __init__(self, feed: Callable[[str], bool], deadline: Optional[float]):
        self.feed = feed
        self.deadline = deadline

    def __call__(self, piece: str) -> bool:
        return self.feed(piece)


def _generate_once(number, image, backend, options, settings, events) -> PageResult:
    from qwenocr.scan.repetition import RepetitionGuard

    guard = RepetitionGuard(html=options.layout)
    deadline = time.monotonic() + options.page_timeout if options.page_timeout else None
    state = {"looped": False, "timed_out": False}

    def feed(piece: str) -> bool:
        events.tokens(1)
        if guard.feed(piece):
            state["looped"] = True
            return False
        if deadline is not None and time.monotonic() > deadline:
            state["timed_out"] = True
            return False
        return True

    generation = backend.generate(image, options.prompt, settings, _PieceSink(feed, deadline))
    text = generation.text
    # The guard checks in steps of a few dozen characters; look at the very end too.
    if not state["looped"] and guard.finish():
        state["looped"] = True
    if (
        deadline is not None
        and generation.finish_reason == "aborted"
        and not state["looped"]
        and time.monotonic() >= deadline
    ):
        state["timed_out"] = True  # the engine stopped at the deadline on its own (no text came)
    if state["looped"]:
        status, text = REPETITION, guard.text_before_loop
    elif state["timed_out"]:
        status = TIMEOUT
    elif generation.finish_reason == "length":
        status = TRUNCATED
    else:
        status = OK
    return PageResult(
        number,
        clean_text(text),
        status,
        source="model",
        output_tokens=generation.output_tokens,
        prompt_tokens=generation.prompt_tokens,
    )


_THINK_BLOCK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)
_FENCE = re.compile(r"^\s*```(?:markdown|md)?\s*\n(.*?)\n?```\s*$", re.DOTALL)


def clean_text(text: str) -> str:
    """Drop an empty think block and a code fence wrapped around the whole page
    (models often answer "```markdown ... ```"), and surrounding whitespace."""
    text = _THINK_BLOCK.sub("", text)
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    return text.strip()
