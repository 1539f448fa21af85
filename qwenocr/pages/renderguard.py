"""Render PDF pages in a child process, so that a page PDFium can't finish costs one page.

A PDFium call can't be interrupted from Python: a malformed or hostile page (form
XObjects nested to draw themselves millions of times, a content stream with millions of
operators) keeps it busy for minutes or hours, and a crash inside PDFium takes the
interpreter with it. `GuardedPdfDocument` is the `PdfDocument` that `open_document`
hands out: with `RenderSettings.timeout` set (the CLI's `--render-timeout`, 120 s by
default) its pages are rendered by a `RenderWorker`, which runs `PdfDocument.render` in
a child process (`python -m qwenocr.pages.renderguard`) that opens the same document;
the parent waits for each page with a deadline, and on timeout (or when the child dies)
kills it, reports the page as an `InputError` and starts a fresh child for the next
page. Opening the document, its page count and its text layer stay in this process:
they are linear in the file's size.

The common path stays fast: one child per document, started ahead (`prestart`: while
the model loads, or while the document before is read) so that its start-up (about
0.15 s) is not waited for; a page comes back as raw RGB bytes over a pipe (10-40 ms for
a 1536-token page on a 2-core machine); rendering overlaps with the model's work on the
page before.
Measured in docs/troubleshooting.md.

Protocol, parent to child: one JSON line per request (`open`, then `render` requests),
the `open` line followed by the document's bytes when it came from stdin. Child to
parent: one JSON line per answer, a page answer followed by `width*height*3` bytes.
The password travels in the pipe, never on a command line.

The child ignores SIGINT (Ctrl-C in a terminal reaches the whole process group; the
parent decides what an interrupt means), exits when its stdin closes, and exits if its
parent disappears (a SIGKILLed run must not leave a child rendering for an hour). On
Linux its address space is capped, so a page that would need gigabytes fails cleanly.
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
from typing import Optional, Union

from PIL import Image

from qwenocr.errors import EncryptedError, InputError, QwenOCRError
from qwenocr.pages.pdf import PdfDocument
from qwenocr.pages.sizing import RenderSettings

# Generous for any real page at any budget qwenocr renders (the bitmap is at most
# 16.7 MP, 67 MB), small enough that a page asking for far more fails instead of
# pushing the machine into swap.
CHILD_ADDRESS_SPACE = 4 * 2**30
_ERRORS = {"InputError": InputError, "EncryptedError": EncryptedError}


class GuardedPdfDocument(PdfDocument):
    """A `PdfDocument` whose pages render in a child process when `settings.timeout` is set.

    The child is started on the first guarded render and lives as long as the document
    (or until a page times out or crashes it; the next page starts a fresh one).
    """

    def __init__(self, source: Union[Path, bytes], name: str, password: Optional[str] = None):
        self._source = source
        self._password = password
        self._worker: Optional[RenderWorker] = None  # set before opening: a failed open closes
        super().__init__(source, name, password)

    def render(self, number: int, settings: RenderSettings) -> Image.Image:
        if settings.timeout is None:
            return super().render(number, settings)
        if self._worker is None or self._worker.timeout != settings.timeout:
            if self._worker is not None:
                self._worker.close()
            self._worker = RenderWorker(self._source, self.name, self._password, settings.timeout)
        return self._worker.render(number, settings)

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()  # first: it can't be holding the lock, and it ends a wait
        super().close()


class RenderWorker:
    """A child process holding one PDF open; `render` waits at most `timeout` seconds."""

    def __init__(self, source: Union[Path, bytes], name: str, password: Optional[str], timeout: float):
        self.name = name
        self.timeout = timeout
        self._source = source
        self._password = password
        self._proc: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()  # one request at a time
        self._closed = False

    # -- the parent's side -----------------------------------------------------------

    def render(self, number: int, settings: RenderSettings) -> Image.Image:
        with self._lock:
            if self._closed:
                raise InputError(f"{self.name}: page {number}: the document was closed")
            deadline = time.monotonic() + self.timeout
            try:
                self._ensure_started()
                self._send(
                    {
                        "op": "render",
                        "page": number,
                        "max_image_tokens": settings.max_image_tokens,
                        "dpi": settings.dpi,
                        "engine_max_tokens": settings.engine_max_tokens,
                    }
                )
                answer, data = self._receive(deadline)
                if not answer.get("ok"):
                    error_class = _ERRORS.get(answer.get("error") or "", InputError)
                    raise error_class(
                        answer.get("message") or f"{self.name}: page {number} could not be rendered", answer.get("hint")
                    )
                width, height = int(answer["width"]), int(answer["height"])
            except _Timeout:
                self._kill()
                raise InputError(
                    f"{self.name}: page {number} took longer than {self.timeout:g} s to render and was skipped",
                    "a damaged or hostile page; --render-timeout SECONDS allows longer",
                ) from None
            except _ChildGone as gone:
                status = self._kill()
                if self._closed:  # close() ended the wait: the run is stopping
                    raise InputError(f"{self.name}: page {number}: not rendered, the run is stopping") from None
                how = f"signal {-status}" if status is not None and status < 0 else f"exit status {status}"
                if str(gone):
                    how += f": {gone}"
                raise InputError(
                    f"{self.name}: page {number} crashed the PDF renderer ({how}) and was skipped",
                    "the page is damaged; try repairing the file, e.g. with qpdf",
                ) from None
        return Image.frombytes("RGB", (width, height), data)

    def close(self) -> None:
        """Stop the child. Safe from any thread, also while a render waits (it ends it)."""
        self._closed = True
        self._kill()

    def _ensure_started(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        if self._proc is not None:  # died between pages: start again, as after a timeout
            self._kill()
        self._proc = _take_spare() or _spawn()
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

    def _send(self, request: dict, payload: Optional[bytes] = None) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(request).encode() + b"\n")
            if payload:
                self._proc.stdin.write(payload)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise _ChildGone() from None

    def _receive(self, deadline: float) -> tuple[dict, bytes]:
        """The child's answer (and the page's pixels) if they come before `deadline`.

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
                data = b""
                if answer.get("ok"):
                    size = int(answer["width"]) * int(answer["height"]) * 3
                    data = stream.read(size)
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
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass
        try:
            status = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a kill that did not take
            status = None
        _close_pipes(proc)
        return status


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


# One child started ahead of need: it imports Python, Pillow and PDFium (about 0.15 s)
# while the model loads, or while the document before is being read, instead of while
# the first page is awaited.
_spare: Optional[subprocess.Popen] = None
_spares_wanted = 0  # children still to hand out: the PDFs the run has yet to start
_spare_lock = threading.Lock()


def prestart(documents: int = 1) -> None:
    """Expect `documents` PDFs to be rendered: start the first one's child now, and each
    time a `RenderWorker` takes it, start the next one's."""
    global _spares_wanted
    with _spare_lock:
        _spares_wanted = max(0, documents)
        _start_spare()


def _start_spare() -> None:
    """Lock held."""
    global _spare
    if _spares_wanted <= 0 or (_spare is not None and _spare.poll() is None):
        return
    try:
        _spare = _spawn()
    except OSError:  # no spare then; the worker starts its own when it needs one
        _spare = None


def _take_spare() -> Optional[subprocess.Popen]:
    global _spare, _spares_wanted
    with _spare_lock:
        proc, _spare = _spare, None
        if proc is not None:
            _spares_wanted -= 1
            _start_spare()
    if proc is not None and proc.poll() is not None:
        _discard(proc)
        return None
    return proc


def _close_pipes(proc: subprocess.Popen) -> None:
    for stream in (proc.stdin, proc.stdout):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


def _discard(proc: subprocess.Popen) -> None:
    """End a child nobody needs: closing its stdin makes it exit on its own."""
    _close_pipes(proc)
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@atexit.register
def _discard_spare() -> None:
    global _spare, _spares_wanted
    with _spare_lock:
        proc, _spare, _spares_wanted = _spare, None, 0
    if proc is not None:
        _discard(proc)


class _Timeout(Exception):
    pass


class _ChildGone(Exception):
    pass


# -- the child's side ----------------------------------------------------------------


def _watch_parent(parent: int) -> None:
    """Exit when the parent is gone (it was SIGKILLed: nobody waits for our pages)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def _limit_memory() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = CHILD_ADDRESS_SPACE if hard == resource.RLIM_INFINITY else min(hard, CHILD_ADDRESS_SPACE)
        if soft == resource.RLIM_INFINITY or soft > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):  # Windows, or not allowed: no cap
        pass


def _child(parent: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if sys.platform.startswith("linux"):
        _limit_memory()
    # The pages go out on a private copy of stdout; descriptor 1 itself points at stderr
    # (which the parent discards), so that nothing PDFium might print can corrupt them.
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    document = None
    name = "document"
    open_error: Optional[BaseException] = None

    def answer(header: dict, payload: bytes = b"") -> None:
        stdout.write(json.dumps(header).encode() + b"\n")
        if payload:
            stdout.write(payload)
        stdout.flush()

    while True:
        line = stdin.readline()
        if not line:
            return 0
        request = json.loads(line)
        if request["op"] == "open":
            # No answer here: the first render answers for both, so that the parent
            # never waits twice.
            name = request["name"]
            source = stdin.read(request["size"]) if request["path"] is None else Path(request["path"])
            try:
                document = PdfDocument(source, name, request.get("password"))
            except BaseException as error:  # noqa: BLE001 - reported with the first page
                open_error = error
            continue
        number = request["page"]
        try:
            if document is None:
                raise open_error if open_error is not None else InputError(f"{name}: the document could not be opened")
            settings = RenderSettings(request["max_image_tokens"], request["dpi"], request["engine_max_tokens"])
            image = document.render(number, settings)
            answer({"ok": True, "width": image.width, "height": image.height}, image.tobytes())
        except QwenOCRError as error:
            answer({"ok": False, "error": type(error).__name__, "message": error.message, "hint": error.hint})
        except MemoryError:
            answer(
                {
                    "ok": False,
                    "message": f"{name}: page {number} needs more memory to render than a page may have",
                    "hint": "the page is damaged or declares an absurd size",
                }
            )
        except Exception as error:  # noqa: BLE001 - whatever PDFium or Pillow raise, the parent reports it
            answer(
                {
                    "ok": False,
                    "message": f"{name}: page {number} could not be rendered ({type(error).__name__}: {error})",
                }
            )


if __name__ == "__main__":
    sys.exit(_child(int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()))
