"""PDFs opened, read and rendered in a child process, so that a hostile file costs one input or one page.

A PDFium call can't be interrupted from Python, and some can't be bounded either: a
malformed or hostile page (form XObjects nested to draw themselves millions of times, a
content stream with millions of operators) keeps it busy for minutes or hours; a Flate
bomb (a few MB that inflate to gigabytes) makes it allocate gigabytes; a crash inside
PDFium takes the interpreter with it. Opening a document is exposed too: PDFium's
`FPDF_LoadDocument` inflates and parses the catalog's /Metadata stream (its check for
unsupported features), so a 2 MB file with a bombed /Metadata took 8 GB and half a
minute at open; reading a page's text layer inflates its content streams.

`GuardedPdfDocument` is the `PdfDocument` that `open_document` hands out. With a
`timeout` (the CLI's `--render-timeout`, 120 s by default) nothing of the PDF touches
PDFium in this process: a `RenderWorker` child (`python -m qwenocr.pages.renderguard`)
opens the document (its page count comes back), renders its pages and reads their text
layers; the parent waits for each answer with the deadline, and on timeout (or when the
child dies) kills it. A failed open is an `InputError` for the whole input, a failed
page an `InputError` for that page; the next page starts a fresh child. On Linux the
child's address space is capped (`CHILD_ADDRESS_SPACE`), so a bomb fails there, cleanly,
instead of pushing the machine into swap. Without a timeout (`--render-timeout 0`) the
document is a plain in-process `PdfDocument`, as the user asked.

When several pages are in flight (a batching engine, a server), the scan reads one
document through several children at once: `GuardedPdfDocument.reader()` hands out a
second reader of the same PDF, with a child of its own (it opens the document there at
its first request: a path is opened by name, stdin's bytes travel again, the password in
the pipe as always). Each child has its own deadline and its own fate: a page that
times out or crashes one costs that page, and the other readers go on.

The common path stays fast: children are reused. A document's child serves its open,
every page and every text layer; when the document is closed, a healthy child goes back
to a small pool and opens the next document (so checking 1,000 inputs and then scanning
them starts one child, not 2,000). A child can also be started ahead (`prestart`: while
the model loads) so that its start-up (about 0.15 s) is not waited for. A page comes
back as raw RGB bytes over a pipe (10-40 ms for a 1536-token page on a 2-core machine),
a text layer as one JSON line. Measured in docs/troubleshooting.md.

Protocol, parent to child: one JSON line per request (`open`, `render`, `text`,
`geometry`, `images`, `close`), the `open` line followed by the document's bytes when it
came from stdin. Child to parent: one JSON line per answer (none for `close`), followed by
`bytes` bytes of payload when it says so (a page's pixels; for `images`, the figures'
embedded images one after the other, their sizes in the answer). Decoding an embedded
image is PDFium work on the user's file like rendering, so it runs here too, within the
render deadline. The password travels in the pipe, never on
a command line.

The child ignores SIGINT (Ctrl-C in a terminal reaches the whole process group; the
parent decides what an interrupt means), exits when its stdin closes, and exits if its
parent disappears (a SIGKILLed run must not leave a child rendering for an hour).
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

from PIL import Image

from qwenocr.childproc import close_pipes, end_child, exit_with_parent
from qwenocr.errors import EncryptedError, InputError, QwenOCRError
from qwenocr.pages.base import Document
from qwenocr.pages.pdf import PdfDocument
from qwenocr.pages.sizing import RenderSettings
from qwenocr.pages.textlayer import PageText
from qwenocr.pages.textmarkdown import TextLine

# Generous for any real page at any budget qwenocr renders (the bitmap is at most
# 16.7 MP, 67 MB), small enough that a page asking for far more fails instead of
# pushing the machine into swap.
CHILD_ADDRESS_SPACE = 4 * 2**30
# The CLI's --render-timeout default: what `open_document` guards with unless told.
DEFAULT_TIMEOUT = 120.0
# A page's text layer beyond these is not a page (a dense page has about 10,000
# characters): a content stream that repeats text operators millions of times. Refused in
# the child, so that the parent never receives hundreds of MB of it.
MAX_TEXT_CHARS = 1_000_000
MAX_TEXT_BOXES = 100_000
# Idle children kept for the next document: as many as documents are read at once.
POOL_SIZE = 4
_ERRORS = {"InputError": InputError, "EncryptedError": EncryptedError}


class GuardedPdfDocument(Document):
    """A PDF read through a child process when `timeout` is set, else in this process.

    Guarded, PDFium never runs in this process: the open (and the page count), every
    page's pixels and every text layer come from a `RenderWorker`, each within `timeout`
    seconds. A render asked for without a timeout (`RenderSettings.timeout` None) is
    done in this process, as asked, on a document opened here when first needed.
    """

    kind = "pdf"

    def __init__(
        self,
        source: Union[Path, bytes],
        name: str,
        password: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        page_count: Optional[int] = None,
    ):
        """`page_count` given: the document was opened already (by the reader this one
        is a `reader()` of); the child opens it at the first request."""
        self.name = name
        self._source = source
        self._password = password
        self._timeout = timeout
        self._local: Optional[PdfDocument] = None
        self._worker: Optional[RenderWorker] = None
        self._lock = threading.Lock()  # guards the lazy in-process open
        if timeout is None:
            self._local = PdfDocument(source, name, password)
            self.page_count = self._local.page_count
        elif page_count is not None:
            self._worker = RenderWorker(source, name, password, timeout, use_spare=False)
            self.page_count = page_count
        else:
            worker = RenderWorker(source, name, password, timeout)
            try:
                self.page_count = worker.open()
            except BaseException:
                worker.release()
                raise
            self._worker = worker

    def reader(self) -> Optional[GuardedPdfDocument]:
        """Another reader of this PDF, with a child process of its own, for rendering
        pages in parallel; the caller closes it. None when this one renders in this
        process (`timeout` None): PDFium serialises every call here (pdf.PDFIUM_LOCK),
        so a second in-process reader would render nothing sooner."""
        if self._worker is None or self._timeout is None:
            return None
        return GuardedPdfDocument(self._source, self.name, self._password, self._timeout, self.page_count)

    def render(self, number: int, settings: RenderSettings) -> Image.Image:
        if self._worker is not None and settings.timeout is not None:
            return self._worker.render(number, settings, settings.timeout)
        return self._in_process().render(number, settings)

    def text_layer(self, number: int) -> PageText:
        if self._worker is not None:
            return self._worker.text_layer(number)
        return self._in_process().text_layer(number)

    def page_geometry(self, number: int) -> tuple[float, float, int]:
        """Page `number`'s size in points as displayed and its /Rotate (PdfDocument.page_geometry)."""
        if self._worker is not None:
            return self._worker.page_geometry(number)
        return self._in_process().page_geometry(number)

    def embedded_images(
        self,
        number: int,
        boxes: Sequence[Tuple[float, float, float, float]],
        max_pixels: int,
        timeout: Optional[float] = None,
    ) -> List[Optional[Image.Image]]:
        """The figures' embedded images (PdfDocument.embedded_images), decoded in the child
        within `timeout` seconds; in this process, as asked, when `timeout` is None."""
        if self._worker is not None and timeout is not None:
            return self._worker.embedded_images(number, boxes, max_pixels, timeout)
        return self._in_process().embedded_images(number, boxes, max_pixels)

    def _in_process(self) -> PdfDocument:
        with self._lock:
            if self._local is None:
                self._local = PdfDocument(self._source, self.name, self._password)
            return self._local

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.release()  # first: it ends a wait, and a healthy child serves the next document
        with self._lock:
            local, self._local = self._local, None
        if local is not None:
            local.close()


class RenderWorker:
    """A child process holding one PDF open; each request waits at most `timeout` seconds."""

    def __init__(
        self, source: Union[Path, bytes], name: str, password: Optional[str], timeout: float, use_spare: bool = True
    ):
        self.name = name
        self.timeout = timeout
        # A document's first reader may take the child started ahead for it (`prestart`);
        # further readers of the same document leave it to the next document.
        self._use_spare = use_spare
        self.page_count = 0
        self._source = source
        self._password = password
        self._proc: Optional[subprocess.Popen] = None
        self._opened = False  # the child in _proc holds this document open
        self._open_error: Optional[QwenOCRError] = None  # the document itself is bad: every request says so
        self._lock = threading.Lock()  # one request at a time
        self._closed = False

    # -- the parent's side -----------------------------------------------------------

    def open(self) -> int:
        """Open the document in the child; its page count. The whole input's errors
        (damaged, encrypted, too slow, a crash or a bomb at open) are raised here."""
        with self._lock:
            deadline = time.monotonic() + self.timeout
            try:
                self._ensure_open(deadline)
            except _Timeout:
                self._kill()
                raise InputError(
                    f"{self.name}: opening the PDF took longer than {self.timeout:g} s; the file was skipped",
                    "a damaged or hostile file; --render-timeout SECONDS allows longer",
                ) from None
            except _ChildGone as gone:
                raise self._crashed(gone, "opening the PDF", "the file was skipped") from None
            return self.page_count

    def render(self, number: int, settings: RenderSettings, timeout: Optional[float] = None) -> Image.Image:
        answer, data = self._request(
            number,
            {
                "op": "render",
                "page": number,
                "max_image_tokens": settings.max_image_tokens,
                "dpi": settings.dpi,
                "engine_max_tokens": settings.engine_max_tokens,
            },
            "to render",
            timeout,
        )
        return Image.frombytes("RGB", (int(answer["width"]), int(answer["height"])), data)

    def text_layer(self, number: int) -> PageText:
        answer, _ = self._request(number, {"op": "text", "page": number}, "to read its text layer", None)
        return PageText(
            text=str(answer["text"]),
            width=float(answer["width"]),
            height=float(answer["height"]),
            boxes=tuple((float(x0), float(y0), float(x1), float(y1)) for x0, y0, x1, y1 in answer["boxes"]),
            image_fraction=float(answer["image_fraction"]),
            path_objects=int(answer["path_objects"]),
            lines=tuple(TextLine.from_list(row) for row in answer["lines"]),
            figures=tuple((float(x0), float(y0), float(x1), float(y1)) for x0, y0, x1, y1 in answer["figures"]),
            display_size=(float(answer["display_size"][0]), float(answer["display_size"][1])),
            rotation=int(answer["rotation"]),
        )

    def page_geometry(self, number: int) -> tuple[float, float, int]:
        answer, _ = self._request(number, {"op": "geometry", "page": number}, "to read its size", None)
        return float(answer["width"]), float(answer["height"]), int(answer["rotation"])

    def embedded_images(
        self, number: int, boxes: Sequence[Tuple[float, float, float, float]], max_pixels: int, timeout: float
    ) -> List[Optional[Image.Image]]:
        request = {"op": "images", "page": number, "boxes": [list(box) for box in boxes], "max_pixels": max_pixels}
        answer, data = self._request(number, request, "to decode its images", timeout)
        found: List[Optional[Image.Image]] = []
        offset = 0
        for size in answer["images"]:
            if size is None:
                found.append(None)
                continue
            width, height = int(size[0]), int(size[1])
            found.append(Image.frombytes("RGB", (width, height), data[offset : offset + 3 * width * height]))
            offset += 3 * width * height
        return found

    def _request(self, number: int, request: dict, doing: str, timeout: Optional[float]) -> tuple[dict, bytes]:
        limit = timeout if timeout is not None else self.timeout
        with self._lock:
            if self._closed:
                raise InputError(f"{self.name}: page {number}: the document was closed")
            deadline = time.monotonic() + limit
            try:
                self._ensure_open(deadline)
                self._send(request)
                answer, data = self._receive(deadline)
            except _Timeout:
                self._kill()
                raise InputError(
                    f"{self.name}: page {number} took longer than {limit:g} s {doing} and was skipped",
                    "a damaged or hostile page; --render-timeout SECONDS allows longer",
                ) from None
            except _ChildGone as gone:
                raise self._crashed(gone, f"page {number}", "the page was skipped") from None
        if not answer.get("ok"):
            raise _answer_error(answer, f"{self.name}: page {number} could not be read")
        return answer, data

    def _crashed(self, gone: _ChildGone, what: str, skipped: str) -> InputError:
        status = self._kill()
        if self._closed:  # close() ended the wait: the run is stopping
            return InputError(f"{self.name}: {what}: not read, the run is stopping")
        how = f"signal {-status}" if status is not None and status < 0 else f"exit status {status}"
        if str(gone):
            how += f": {gone}"
        return InputError(
            f"{self.name}: {what} crashed the PDF renderer ({how}) and {skipped}",
            "the file is damaged or hostile (a compression bomb, a page that needs more than"
            f" {CHILD_ADDRESS_SPACE // 2**30} GiB); try repairing it, e.g. with qpdf",
        )

    def release(self) -> None:
        """Done with the document: a healthy child goes back to the pool for the next one."""
        self._closed = True
        if not self._lock.acquire(blocking=False):  # a request is in flight: end it
            self._kill()
            return
        try:
            proc, self._proc = self._proc, None
            self._opened = False
        finally:
            self._lock.release()
        if proc is None:
            return
        # After a failed open too: the child itself is fine, and a folder of damaged
        # files must not cost a new child (0.15 s) each.
        if proc.poll() is None and _give_back(proc):
            return
        end_child(proc)

    def close(self) -> None:
        """Stop the child. Safe from any thread, also while a request waits (it ends it)."""
        self._closed = True
        self._kill()

    def _ensure_open(self, deadline: float) -> None:
        """Lock held. A child holding the document, started (and the document opened in
        it) when there is none; raises the document's own error, _Timeout or _ChildGone."""
        if self._open_error is not None:
            raise self._open_error
        if self._proc is not None and self._proc.poll() is None and self._opened:
            return
        if self._proc is not None:  # died between pages: start again, as after a timeout
            self._kill()
        self._proc = _take_child(self._use_spare) or _spawn()
        self._opened = False
        data = self._source if isinstance(self._source, bytes) else None
        self._send(
            {
                "op": "open",
                "path": None if data is not None else str(self._source),
                "size": len(data) if data is not None else 0,
                "name": self.name,
                "password": self._password,
            },
            data,
        )
        answer, _ = self._receive(deadline)
        if not answer.get("ok"):
            self._open_error = _answer_error(answer, f"{self.name}: the document could not be opened")
            raise self._open_error
        self.page_count = int(answer["pages"])
        self._opened = True

    def _send(self, request: dict, payload: Optional[bytes] = None) -> None:
        assert self._proc is not None
        if not _write(self._proc, request, payload):
            raise _ChildGone()

    def _receive(self, deadline: float) -> tuple[dict, bytes]:
        """The child's answer (and its payload) if they come before `deadline`.

        A thread does the blocking reads and the caller waits on it with a timeout:
        portable (Windows can't select() on a pipe), and a kill of the child ends the
        reads with EOF, so the thread never outlives the request by long.
        """
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise _ChildGone()
        stream = proc.stdout
        box: queue.Queue[Union[tuple[dict, bytes], BaseException]] = queue.Queue(maxsize=1)

        def read() -> None:
            try:
                line = stream.readline()
                if not line.endswith(b"\n"):
                    raise _ChildGone()
                answer = json.loads(line)
                size = int(answer.get("bytes") or 0)
                data = stream.read(size) if size else b""
                if len(data) != size:
                    raise _ChildGone()
                box.put((answer, data))
            except BaseException as error:  # noqa: BLE001 - handed to the waiting caller
                box.put(error if isinstance(error, _ChildGone) else _ChildGone())

        threading.Thread(target=read, name="qwenocr-render-read", daemon=True).start()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Timeout()
            try:
                # Short slices, so that close() from another thread ends the wait soon.
                item = box.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self._closed:
                    raise _ChildGone("the run is stopping") from None
                continue
            if isinstance(item, BaseException):
                raise item
            return item

    def _kill(self) -> Optional[int]:
        proc, self._proc = self._proc, None
        self._opened = False
        if proc is None:
            return None
        status = end_child(proc)
        return status


def _answer_error(answer: dict, default: str) -> QwenOCRError:
    error_class = _ERRORS.get(answer.get("error") or "", InputError)
    return error_class(answer.get("message") or default, answer.get("hint"))


def _write(proc: subprocess.Popen, request: dict, payload: Optional[bytes] = None) -> bool:
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(request).encode() + b"\n")
        if payload:
            proc.stdin.write(payload)
        proc.stdin.flush()
        return True
    except (BrokenPipeError, OSError, ValueError):
        return False


def _spawn() -> subprocess.Popen:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "qwenocr.pages.renderguard", str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # PDFium's own complaints are not the user's business
        env=env,
        close_fds=True,
    )


# Children not serving a document: those that finished one (`_pool`, most recent last)
# and one started ahead of need (`_spare`): it imports Python, Pillow and PDFium (about
# 0.15 s) while the model loads, instead of while the first page is awaited.
_pool: List[subprocess.Popen] = []
_spare: Optional[subprocess.Popen] = None
_spares_wanted = 0  # children still to hand out: the PDFs the run has yet to start
_spare_lock = threading.Lock()


def prestart(documents: int = 1) -> None:
    """Expect `documents` PDFs to be read: unless a child is idle already, start one now
    for the first; each time a `RenderWorker` takes it, start the next one's."""
    global _spares_wanted
    with _spare_lock:
        _spares_wanted = max(0, documents)
        _start_spare()


def _start_spare() -> None:
    """Lock held. Idle children in the pool serve the next documents: no spare then."""
    global _spare
    if _spares_wanted <= 0 or _pool or (_spare is not None and _spare.poll() is None):
        return
    try:
        _spare = _spawn()
    except OSError:  # no spare then; the worker starts its own when it needs one
        _spare = None


def _take_child(use_spare: bool = True) -> Optional[subprocess.Popen]:
    """An idle child (one that served a document before, or the spare), or None."""
    global _spare, _spares_wanted
    while True:
        with _spare_lock:
            if _pool:
                proc: Optional[subprocess.Popen] = _pool.pop()
            elif not use_spare:
                return None
            else:
                proc, _spare = _spare, None
                if proc is not None:
                    _spares_wanted -= 1
                    _start_spare()
        if proc is None:
            return None
        if proc.poll() is None:
            return proc
        _discard(proc)


def _give_back(proc: subprocess.Popen) -> bool:
    """Put a child that finished a document into the pool; False if it is not wanted."""
    if not _write(proc, {"op": "close"}):
        return False
    with _spare_lock:
        if len(_pool) < POOL_SIZE:
            _pool.append(proc)
            return True
    return False


def _discard(proc: subprocess.Popen) -> None:
    """End a child nobody needs: closing its stdin makes it exit on its own."""
    close_pipes(proc)
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@atexit.register
def _discard_spare() -> None:
    """End every idle child (the spare and the pool): at exit, and in tests."""
    global _spare, _spares_wanted
    with _spare_lock:
        procs = [proc for proc in (_spare, *_pool) if proc is not None]
        _spare, _spares_wanted = None, 0
        _pool.clear()
    for proc in procs:
        _discard(proc)


class _Timeout(Exception):
    pass


class _ChildGone(Exception):
    pass


# -- the child's side ----------------------------------------------------------------


def _limit_memory() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = CHILD_ADDRESS_SPACE if hard == resource.RLIM_INFINITY else min(hard, CHILD_ADDRESS_SPACE)
        if soft == resource.RLIM_INFINITY or soft > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):  # Windows, or not allowed: no cap
        pass


def _text_answer(document: PdfDocument, number: int) -> dict:
    page = document.text_layer(number)
    if len(page.text) > MAX_TEXT_CHARS or len(page.boxes) > MAX_TEXT_BOXES:
        raise InputError(
            f"{document.name}: page {number} has a text layer of {len(page.text):,} characters,"
            " far more than a page holds",
            "the page is damaged or hostile; --mode ocr reads it from its pixels",
        )
    return {
        "ok": True,
        "text": page.text,
        "width": page.width,
        "height": page.height,
        "boxes": page.boxes,
        "image_fraction": page.image_fraction,
        "path_objects": page.path_objects,
        # For the page's Markdown and blocks (textmarkdown.py): lines, not characters.
        "lines": [line.to_list() for line in page.lines],
        "figures": page.figures,
        "display_size": page.display_size,
        "rotation": page.rotation,
    }


def _child(parent: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent)
    if sys.platform.startswith("linux"):
        _limit_memory()
    # The answers go out on a private copy of stdout; descriptor 1 itself points at
    # stderr (which the parent discards), so that nothing PDFium might print can corrupt them.
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    document: Optional[PdfDocument] = None
    name = "document"

    def answer(header: dict, payload: bytes = b"") -> None:
        if payload:
            header = {**header, "bytes": len(payload)}
        stdout.write(json.dumps(header).encode() + b"\n")
        if payload:
            stdout.write(payload)
        stdout.flush()

    def failed(error: BaseException, what: str) -> dict:
        if isinstance(error, QwenOCRError):
            return {"ok": False, "error": type(error).__name__, "message": error.message, "hint": error.hint}
        if isinstance(error, MemoryError):
            return {
                "ok": False,
                "message": f"{name}: {what} needs more memory than a PDF may take",
                "hint": "the file is damaged or hostile (e.g. a compression bomb, or an absurd page size)",
            }
        # Whatever PDFium or Pillow raise, the parent reports it in one line.
        return {"ok": False, "message": f"{name}: {what} could not be done ({type(error).__name__}: {error})"}

    while True:
        line = stdin.readline()
        if not line:
            return 0
        request = json.loads(line)
        op = request["op"]
        if op in ("open", "close") and document is not None:
            document.close()
            document = None
        if op == "close":
            continue
        if op == "open":
            name = request["name"]
            try:
                source: Any = stdin.read(request["size"]) if request["path"] is None else Path(request["path"])
                document = PdfDocument(source, name, request.get("password"))
                answer({"ok": True, "pages": document.page_count})
            except Exception as error:  # noqa: BLE001 - reported to the parent
                answer(failed(error, "opening the PDF"))
            continue
        number = request["page"]
        try:
            if document is None:
                raise InputError(f"{name}: the document is not open")
            if op == "text":
                answer(_text_answer(document, number))
                continue
            if op == "geometry":
                width, height, rotation = document.page_geometry(number)
                answer({"ok": True, "width": width, "height": height, "rotation": rotation})
                continue
            if op == "images":
                boxes = [(float(x0), float(y0), float(x1), float(y1)) for x0, y0, x1, y1 in request["boxes"]]
                images = document.embedded_images(number, boxes, int(request["max_pixels"]))
                sizes = [None if image is None else [image.width, image.height] for image in images]
                payload = b"".join(image.tobytes() for image in images if image is not None)
                answer({"ok": True, "images": sizes}, payload)
                continue
            settings = RenderSettings(request["max_image_tokens"], request["dpi"], request["engine_max_tokens"])
            image = document.render(number, settings)
            answer({"ok": True, "width": image.width, "height": image.height}, image.tobytes())
        except Exception as error:  # noqa: BLE001 - reported to the parent
            doing = {"text": " (its text layer)", "geometry": " (its size)", "images": " (its images)"}.get(
                op, " (rendering)"
            )
            answer(failed(error, f"page {number}{doing}"))


if __name__ == "__main__":
    sys.exit(_child(int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()))
