"""A local engine in a worker process, so that a native crash costs one page, not the run.

llama.cpp and MLX are C++ libraries: a bug in them (a segmentation fault in a matrix
kernel, a failed assertion on an odd image size) kills the process that called them, with
no Python exception and no message. `IsolatedEngine` is the `Backend` that
`engines.factory` hands out for local engines: it loads the model in a child process
(`python -m qwenocr.engines.isolated`) and runs each page there. When the child dies,
`generate` raises `EngineCrashedError` (a page error, with the signal and the engine's
last words); the next call starts a fresh child, which loads the model again. The
pipeline retries a crashed page once and then marks it `error`; after
`CRASHES_TO_STOP` crashes with no page finished between them the engine raises
`EngineCrashLoopError` and the run stops (exit 12): by then the engine cannot read this
document on this machine, and reloading it over and over would only waste time.

The child also makes a hung engine recoverable: when a page has a deadline
(`--page-timeout`) and the child says nothing for `HANG_GRACE` seconds past it, it is
killed and the page ends as a timeout.

Protocol, parent to child: one JSON line per request. First the engine's arguments (the
child loads and answers `ready`, with the engine's limits, or the load error); then
`generate` requests, each with its own `serial` and followed by the page's raw pixels
(`width*height*channels` bytes: no PNG round trip), and `stop` requests when a caller's
`on_piece` says stop. Child to parent: one JSON line per message: `piece` (text as it is
generated), then `done` (the `Generation`) or `error`, each with the request's serial;
`log` messages (the engine's qwenocr log records) may come at any time.

Several pages in flight: an engine that decodes several pages at once (`concurrency` > 1,
a batch engine of `--batch N`, llama.cpp or MLX) gets up to that many `generate` requests at
once; the child runs each in its own thread and the parent routes each message to its
page by serial. A crash then ends every page in flight: each is retried, and until as
many pages have been read as were in flight, pages go through the fresh engine one at a
time, so that a page that crashes the engine crashes it alone and the others are read.

The child ignores SIGINT and SIGHUP (the parent decides what they mean, and kills it),
exits when its stdin closes or its parent disappears, and keeps its descriptor 1 pointed
at stderr so that nothing the native library prints can corrupt the messages.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Deque, Dict, List, Optional

from PIL import Image

from qwenocr import errors
from qwenocr.childproc import end_child, exit_with_parent
from qwenocr.engines.base import Generation, GenerationSettings, PieceCallback
from qwenocr.errors import BackendError, EngineCrashedError, EngineCrashLoopError, QwenOCRError

# Crashes with no page finished between them before the run is stopped: three pages in a
# row, each crashed twice (once, and once more on the retry in a fresh engine).
CRASHES_TO_STOP = 6
# How long past a page's deadline a silent engine is given before it is killed.
HANG_GRACE = 10.0
# Test-only hook: a comma-separated list of generate calls (1 = the run's first) at which
# the child aborts (`N`) or hangs (`N:hang`), standing in for a native crash or hang.
TEST_FAULTS_ENV = "QWENOCR_TEST_ENGINE_FAULTS"
# The lines of the child's stderr kept for a crash message (native libraries say why
# they abort there: "GGML_ASSERT(...) failed", "libc++abi: terminating ...").
STDERR_LINES_KEPT = 20
# Image modes sent as they are; anything else (palette, CMYK, 16-bit) is converted to RGB.
_MODES = {"RGB": 3, "L": 1, "RGBA": 4}


class IsolatedEngine:
    """A local engine (`mlx` or `llama.cpp`) running in a worker process."""

    name: str  # the engine's own: "mlx" or "llama.cpp"
    concurrency: int  # the engine's own: pages it decodes at once (1 unless it batches)
    max_image_tokens: Optional[int]  # the engine's own limit, as the worker reports it

    def __init__(self, backend: str, load_args: Dict[str, Any], *, verbose: bool = False):
        self.name = backend
        self.concurrency = 1
        self.max_image_tokens: Optional[int] = None
        self._load = {"backend": backend, "verbose": verbose, **load_args}
        self._verbose = verbose
        self._worker: Optional[_Worker] = None
        self._crashes_in_a_row = 0
        self._calls = 0
        self._faults = _parse_faults(os.environ.get(TEST_FAULTS_ENV, ""))
        self._closed = False
        # Pages in the worker now, and how many must still go through it one at a time
        # after a crash (see the module docstring); `_gate` guards both and the worker.
        self._gate = threading.Condition()
        self._active = 0
        self._solo_left = 0
        self._solo = False
        self._start()  # load now: a model that cannot load fails the run before any page

    def generate(
        self,
        image: Image.Image,
        prompt: str,
        settings: GenerationSettings,
        on_piece: Optional[PieceCallback] = None,
    ) -> Generation:
        if self._closed:
            raise BackendError(f"the {self.name} engine was closed")
        solo = self._enter()
        ok = False
        try:
            with self._gate:
                if self._closed:  # closed while this page waited for its turn
                    raise BackendError(f"the {self.name} engine was closed")
                self._calls += 1
                fault = self._faults.get(self._calls)
                worker = self._worker if self._worker is not None and self._worker.alive() else self._restart()
            deadline = getattr(on_piece, "deadline", None)
            generation = self._generate_in(worker, image, prompt, settings, on_piece, deadline, fault)
            ok = True
            return generation
        finally:
            self._leave(solo, ok)

    def _generate_in(
        self,
        worker: "_Worker",
        image: Image.Image,
        prompt: str,
        settings: GenerationSettings,
        on_piece: Optional[PieceCallback],
        deadline: Optional[float],
        fault: Optional[str],
    ) -> Generation:
        try:
            generation = worker.generate(image, prompt, settings, on_piece, deadline, fault, HANG_GRACE)
        except _WorkerGone as gone:
            with self._gate:
                # Every page in flight sees the same death: the first counts it and
                # starts the fresh engine; the pages in flight are then retried alone.
                first = self._worker is worker
                if first:
                    self._worker = None
                    self._crashes_in_a_row += 1
                    self._solo_left = max(self._solo_left, self._active if self.concurrency > 1 else 0)
                crashes = self._crashes_in_a_row
                if self._closed:
                    raise BackendError(f"the {self.name} engine was stopped") from None
                how = gone.describe() if not worker.killed_by_us else "restarted after another page hung"
                if crashes >= CRASHES_TO_STOP:
                    raise EngineCrashLoopError(
                        f"the {self.name} engine crashed {crashes} times in a row ({how}); stopping the run",
                        "finished pages are kept: rerun to resume; see docs/troubleshooting.md#the-engine-crashed",
                    ) from None
                if first:
                    # A fresh engine now, so that its loading time is charged to the page
                    # that crashed, not to the deadline of the next one.
                    self._restart()
            raise EngineCrashedError(f"the {self.name} engine crashed ({how})") from None
        except _WorkerHung:
            with self._gate:
                if self._worker is worker:
                    self._worker = None
                    self._restart()
            return Generation(text="", output_tokens=0, prompt_tokens=None, finish_reason="aborted")
        with self._gate:
            self._crashes_in_a_row = 0
        return generation

    def _enter(self) -> bool:
        """Wait for a turn in the worker; True when the page must go alone (after a crash)."""
        with self._gate:
            while True:
                if self._solo_left > 0 and self._active == 0:
                    self._active, self._solo = 1, True
                    return True
                if self._solo_left == 0 and not self._solo:
                    self._active += 1
                    return False
                self._gate.wait()

    def _leave(self, solo: bool, ok: bool) -> None:
        with self._gate:
            self._active -= 1
            if solo:
                self._solo = False
                if ok:
                    self._solo_left = max(0, self._solo_left - 1)
            self._gate.notify_all()

    def close(self) -> None:
        self._closed = True
        with self._gate:
            worker, self._worker = self._worker, None
            self._gate.notify_all()
        if worker is not None:
            worker.close()

    def _start(self) -> "_Worker":
        worker = _Worker(self._load, self._verbose)
        ready = worker.start()
        self.max_image_tokens = ready.get("max_image_tokens")
        self.concurrency = max(1, int(ready.get("concurrency") or 1))
        self._worker = worker
        return worker

    def _restart(self) -> "_Worker":
        try:
            return self._start()
        except QwenOCRError as error:
            # The model loaded before and does not now: nothing later will go better.
            error.ends_run = True
            raise


class _WorkerGone(Exception):
    def __init__(self, status: Optional[int], last_words: str = ""):
        super().__init__(status)
        self.status = status
        self.last_words = last_words

    def describe(self) -> str:
        status = self.status
        if status is None:
            how = "it stopped answering"
        elif status < 0:
            try:
                how = f"signal {-status}, {signal.Signals(-status).name}"
            except ValueError:
                how = f"signal {-status}"
        else:
            how = f"exit status {status}"
        return f"{how}: {self.last_words}" if self.last_words else how


class _WorkerHung(Exception):
    pass


class _Worker:
    """One child process with the model loaded. Pages may be in flight from several
    threads at once: each has its own serial and its own inbox of the child's messages."""

    def __init__(self, load: Dict[str, Any], verbose: bool):
        self._load = load
        self._verbose = verbose
        self._proc: Optional[subprocess.Popen] = None
        self._stderr_tail: Deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._threads: List[threading.Thread] = []
        self._lock = threading.Lock()  # guards the inboxes, the serial and `_dead`
        self._send_lock = threading.Lock()  # one request at a time on the child's stdin
        # Serial -> the page's inbox; None: the load's answer.
        self._inboxes: Dict[Optional[int], "queue.Queue[Optional[dict]]"] = {None: queue.Queue()}
        self._serial = 0
        self._dead = False
        self._closed = threading.Event()
        self.killed_by_us = False  # closed for a hang (or by the engine), not crashed

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and not self._closed.is_set()

    def start(self) -> dict:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop(TEST_FAULTS_ENV, None)  # the parent decides which call fails
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "qwenocr.engines.isolated", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._read_messages, args=(self._proc.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(self._proc.stderr,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        try:
            self._send({"op": "load", **self._load})
            answer = self._next(self._inboxes[None], None)
        except _WorkerGone as gone:
            self.close()
            raise BackendError(
                f"the {self._load['backend']} engine died while loading the model ({gone.describe()})",
                "run with --verbose to see the engine's own messages",
            ) from None
        except BaseException:
            self.close()
            raise
        if "error" in answer:
            self.close()
            raise _as_error(answer)
        return answer

    def generate(
        self,
        image: Image.Image,
        prompt: str,
        settings: GenerationSettings,
        on_piece: Optional[PieceCallback],
        deadline: Optional[float],
        fault: Optional[str],
        hang_grace: float,
    ) -> Generation:
        if image.mode not in _MODES:
            image = image.convert("RGB")
        pixels = image.tobytes()
        inbox: "queue.Queue[Optional[dict]]" = queue.Queue()
        with self._lock:
            self._serial += 1
            serial = self._serial
            self._inboxes[serial] = inbox
            if self._dead:
                inbox.put(None)
        request = {
            "op": "generate",
            "serial": serial,
            "prompt": prompt,
            "settings": settings.__dict__,
            "mode": image.mode,
            "width": image.width,
            "height": image.height,
            "fault": fault,
        }
        try:
            self._send(request, pixels)
            stopping = False
            hang_deadline = deadline + hang_grace if deadline is not None else None
            while True:
                message = self._next(inbox, hang_deadline)
                if "piece" in message:
                    if on_piece is not None and not stopping and on_piece(message["piece"]) is False:
                        stopping = True
                        self._send({"op": "stop", "serial": serial})
                    continue
                if "error" in message:
                    raise _as_error(message)
                done = message["done"]
                return Generation(
                    text=done["text"],
                    output_tokens=int(done["output_tokens"]),
                    prompt_tokens=done.get("prompt_tokens"),
                    finish_reason=done.get("finish_reason") or "stop",
                )
        finally:
            with self._lock:
                self._inboxes.pop(serial, None)

    def close(self) -> None:
        """End the child on purpose (a hang, the end of the run): the pages still in
        flight then fail as stopped, not as crashed."""
        self.killed_by_us = True
        self._end()

    def _end(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._proc is not None:
            end_child(self._proc)

    # -- plumbing -----------------------------------------------------------------------

    def _send(self, request: dict, payload: bytes = b"") -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or self._closed.is_set():
            raise self._gone()
        try:
            with self._send_lock:
                proc.stdin.write(json.dumps(request).encode() + b"\n")
                if payload:
                    proc.stdin.write(payload)
                proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise self._gone() from None

    def _next(self, inbox: "queue.Queue[Optional[dict]]", hang_deadline: Optional[float]) -> dict:
        """The child's next message in `inbox`; `_WorkerGone` when it died, `_WorkerHung`
        when it said nothing until `hang_deadline` (then it is killed)."""
        try:
            if hang_deadline is None:
                message = inbox.get()
            else:
                left = hang_deadline - time.monotonic()
                if left <= 0:
                    raise queue.Empty
                message = inbox.get(timeout=left)
        except queue.Empty:
            self.close()
            raise _WorkerHung() from None
        if message is None:
            raise self._gone()
        return message

    def _gone(self) -> _WorkerGone:
        status = None
        if self._proc is not None:
            try:
                status = self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                status = None
        self._end()
        for thread in self._threads[1:]:
            thread.join(timeout=2)  # the stderr reader: its last lines say why
        return _WorkerGone(status, _last_words(self._stderr_tail))

    def _read_messages(self, stream: IO[bytes]) -> None:
        try:
            for line in stream:
                message = json.loads(line)
                if "log" in message:
                    # The engine's own qwenocr log records, said here as if said here.
                    logging.getLogger(str(message.get("name") or "qwenocr")).log(
                        int(message["log"]), "%s", message["text"]
                    )
                    continue
                with self._lock:
                    inbox = self._inboxes.get(message.get("serial"))
                if inbox is not None:  # else: the answer to an abandoned request
                    inbox.put(message)
        except (ValueError, OSError):
            pass
        with self._lock:
            self._dead = True
            inboxes = list(self._inboxes.values())
        for inbox in inboxes:
            inbox.put(None)

    def _read_stderr(self, stream: IO[bytes]) -> None:
        try:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip()
                if self._verbose:
                    print(line, file=sys.stderr, flush=True)
                if line.strip():
                    self._stderr_tail.append(line)
        except (ValueError, OSError):
            pass


def _last_words(lines: Deque[str]) -> str:
    """The line of the child's stderr that most likely says why it died."""
    for line in reversed(lines):
        lowered = line.lower()
        if any(word in lowered for word in ("assert", "error", "abort", "terminat", "fault", "fatal")):
            return line.strip()[:200]
    return ""


def _as_error(message: dict) -> QwenOCRError:
    """The `QwenOCRError` the child reported, as the same class."""
    error_class = getattr(errors, str(message.get("error")), None)
    if not (isinstance(error_class, type) and issubclass(error_class, QwenOCRError)):
        error_class = BackendError
    return error_class(str(message.get("message") or "the engine failed"), message.get("hint"))


def _parse_faults(spec: str) -> Dict[int, str]:
    faults: Dict[int, str] = {}
    for item in spec.split(","):
        call, _, kind = item.strip().partition(":")
        if call.isdigit():
            faults[int(call)] = kind or "abort"
    return faults


# -- the child's side ----------------------------------------------------------------


def _child(parent: int) -> int:
    for name in ("SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    exit_with_parent(parent)
    # Messages go out on a private copy of stdout; descriptor 1 itself points at stderr,
    # so that nothing the native library prints can corrupt them.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    send_lock = threading.Lock()

    def send(message: dict) -> None:
        data = json.dumps(message).encode() + b"\n"
        with send_lock:
            out.write(data)
            out.flush()

    stdin = sys.stdin.buffer
    requests: "queue.Queue[Optional[tuple]]" = queue.Queue()
    stopped: Dict[int, bool] = {}

    def read_requests() -> None:
        # Requests are read here, beside the generation, so that a `stop` reaches the
        # page while it is being generated.
        try:
            while True:
                line = stdin.readline()
                if not line:
                    break
                request = json.loads(line)
                if request["op"] == "stop":
                    stopped[request["serial"]] = True
                    continue
                payload = b""
                if request["op"] == "generate":
                    size = request["width"] * request["height"] * _MODES[request["mode"]]
                    payload = stdin.read(size)
                    if len(payload) != size:
                        break
                requests.put((request, payload))
        finally:
            requests.put(None)

    threading.Thread(target=read_requests, daemon=True).start()
    engine: Any = None
    logger = logging.getLogger("qwenocr")
    logger.addHandler(_ForwardLogs(send))
    logger.propagate = False

    def serve(request: dict, payload: bytes) -> None:
        serial = request["serial"]
        try:
            if engine is None:
                raise BackendError("the model is not loaded")
            image = Image.frombytes(request["mode"], (request["width"], request["height"]), payload)
            fault = request.get("fault")

            def on_piece(piece: str, serial: int = serial) -> bool:
                send({"serial": serial, "piece": piece})
                return not stopped.get(serial, False)

            settings = GenerationSettings(**request["settings"])
            if fault:
                _fault(fault)
            generation = engine.generate(image, request["prompt"], settings, on_piece)
            send(
                {
                    "serial": serial,
                    "done": {
                        "text": generation.text,
                        "output_tokens": generation.output_tokens,
                        "prompt_tokens": generation.prompt_tokens,
                        "finish_reason": generation.finish_reason,
                    },
                }
            )
        except QwenOCRError as error:
            send({"serial": serial, "error": type(error).__name__, "message": error.message, "hint": error.hint})
        except Exception as error:  # noqa: BLE001 - the parent turns it into a page error
            send({"serial": serial, "error": "BackendError", "message": f"{type(error).__name__}: {error}"})
        finally:
            stopped.pop(serial, None)

    pages: List[threading.Thread] = []
    while True:
        item = requests.get()
        if item is None:
            for thread in pages:
                thread.join()
            if engine is not None:
                engine.close()
            return 0
        request, payload = item
        if request["op"] == "load":
            logger.setLevel(logging.INFO if request.get("verbose") else logging.WARNING)
            engine = _load(request, send)
            continue
        if engine is not None and getattr(engine, "concurrency", 1) > 1:
            # An engine that decodes several pages at once: each page waits in its own
            # thread while the engine's scheduler runs them together.
            thread = threading.Thread(target=serve, args=(request, payload), daemon=True)
            thread.start()
            pages = [t for t in pages if t.is_alive()] + [thread]
        else:
            serve(request, payload)


class _ForwardLogs(logging.Handler):
    """Sends the child's qwenocr log records to the parent, which shows them as its own."""

    def __init__(self, send: Any):
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send({"log": record.levelno, "name": record.name, "text": record.getMessage()})
        except Exception:  # noqa: BLE001 - a log line must never fail a page
            pass


def _load(request: dict, send: Any) -> Any:
    from qwenocr.engines.local import load_in_process

    try:
        engine = load_in_process(
            request["backend"],
            Path(request["model_path"]),
            Path(request["mmproj_path"]) if request.get("mmproj_path") else None,
            n_ctx=request["n_ctx"],
            n_gpu_layers=request["n_gpu_layers"],
            tensor_split=request.get("tensor_split"),
            verbose=request.get("verbose", False),
            experts_on_cpu=request.get("experts_on_cpu", False),
            batch=int(request.get("batch") or 1),
        )
    except QwenOCRError as error:
        send({"error": type(error).__name__, "message": error.message, "hint": error.hint})
        return None
    except Exception as error:  # noqa: BLE001 - reported to the parent as a load failure
        send({"error": "BackendError", "message": f"the {request['backend']} engine failed to load: {error}"})
        return None
    send({"ready": True, "max_image_tokens": engine.max_image_tokens, "concurrency": engine.concurrency})
    return engine


def _fault(kind: str) -> None:
    """The test-only stand-ins for a native crash and a native hang."""
    if kind == "hang":
        while True:
            time.sleep(60)
    os.abort()


if __name__ == "__main__":
    sys.exit(_child(int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()))
