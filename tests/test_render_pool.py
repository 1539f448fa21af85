"""Several render workers for one document when several pages are in flight.

With a batching engine or a server, `run_document` renders through R readers of the
same PDF at once, each with a child process of its own (qwenocr/pages/renderguard.py).
These tests drive real children on real PDFs and check what must hold with the pool as
without it: pages in order and each page's own image, at most in_flight + R page images
alive, a slow or crashing page costing that page only, an interrupt and the end of a
run leaving no child at work, checkpoints, blank and text-layer pages, --pages, stdin
with a password, and images (one reader: no pool).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest

from qwenocr.pages import renderguard
from qwenocr.pages.document import RenderSettings, open_document
from qwenocr.scan import pipeline
from qwenocr.scan.pipeline import ScanOptions, render_workers, run_document
from qwenocr.scan.progress import Reporter
from qwenocr.scan.request import ScanRequest
from qwenocr.scan.run import run_scan
from qwenocr.store.resolve import ModelFiles
from tests.support import broken_inputs, samples
from tests.support.fake_engine import FakeBackend

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for the render children")

# The CLI's render settings always carry --render-timeout (120 s unless told): with a
# deadline the pages render in the children. Without one, in this process (one reader).
SMALL = RenderSettings(max_image_tokens=64, timeout=60)
PAGES = 32
POOL = ScanOptions(render=SMALL, render_workers=3)


def digest(image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()[:16]


def by_digest(index, image, settings) -> str:
    """The fake model's answer: which image it was given."""
    return digest(image)


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    return samples.write_pdf(tmp_path_factory.mktemp("pool") / "many.pdf", pages=PAGES, size=(300, 400))


@pytest.fixture(scope="module")
def reference(many) -> dict:
    """Each page's image digest, rendered one page at a time in this process."""
    with open_document(many, timeout=None) as document:  # in this process
        return {n: digest(document.render(n, SMALL)) for n in range(1, PAGES + 1)}


def with_slow_page(path: Path, pages: int, slow: int) -> Path:
    """`pages` sample pages, page `slow` replaced by one that keeps PDFium busy for minutes."""
    import pypdfium2 as pdfium

    good = samples.write_pdf(path.with_suffix(".good.pdf"), pages=pages, size=(300, 400))
    hostile = pdfium.PdfDocument(broken_inputs.slow_render_pdf(depth=7, with_good_pages=False))
    merged = pdfium.PdfDocument(str(good))
    merged.del_page(slow - 1)
    merged.import_pages(hostile, [0], index=slow - 1)
    merged.save(str(path))
    merged.close()
    hostile.close()
    return path


class Watch:
    """Instruments the readers `run_document` renders through: which reader rendered
    which page, with which child, what happened in which order, and how many rendered
    page images were alive at most (weak references: an image leaves when it is freed)."""

    def __init__(self, monkeypatch):
        self.lock = threading.Lock()
        self.live: dict = {}  # id -> weak reference, until the image is freed
        self.most_alive = 0
        self.readers: list = []
        self.rendered_by: dict = {}  # page -> reader index
        self.events: list = []  # ("start" | "end", page)
        self.children: dict = {}  # page -> pid of the child that rendered it
        self.started: dict = {}  # page -> (reader index, pid of its child then, if it had one)
        real = pipeline.page_readers

        def instrumented(document, count):
            readers = real(document, count)
            for reader in readers:
                self.wrap(reader)
            return readers

        monkeypatch.setattr(pipeline, "page_readers", instrumented)

    def wrap(self, reader):
        index = len(self.readers)
        self.readers.append(reader)
        original = reader.render

        def render(number, settings):
            worker = getattr(reader, "_worker", None)
            with self.lock:
                self.events.append(("start", number))
                self.started[number] = (index, worker._proc.pid if worker and worker._proc else None)
            try:
                image = original(number, settings)
            finally:
                with self.lock:
                    self.events.append(("end", number))
            with self.lock:
                # (An image is not hashable: no WeakSet. The callback runs when it is freed.)
                key = id(image)
                self.live[key] = weakref.ref(image, lambda _, key=key: self.live.pop(key, None))
                self.most_alive = max(self.most_alive, len(self.live))
                self.rendered_by[number] = index
                if worker is not None and worker._proc is not None:
                    self.children[number] = worker._proc.pid
            return image

        reader.render = render

    def alive_now(self) -> int:
        with self.lock:
            self.most_alive = max(self.most_alive, len(self.live))
            return len(self.live)


def idle_children() -> set:
    """The render children parked for the next document (not at work)."""
    spare = renderguard._spare
    return {proc.pid for proc in renderguard._pool} | ({spare.pid} if spare is not None else set())


def assert_no_child_at_work() -> None:
    """Every render child of this process is parked idle; once the idle ones are ended, none is left."""
    deadline = time.monotonic() + 5
    while not set(broken_inputs.render_workers_of(os.getpid())) <= idle_children():
        assert time.monotonic() < deadline, "a render child is still at work after the run"
        time.sleep(0.05)
    renderguard._discard_spare()
    assert broken_inputs.render_workers_of(os.getpid()) == []


def test_the_rule_sizes_workers_to_the_pages_in_flight_and_the_cores():
    assert render_workers(1, cores=64) == 1  # one page at the model: one page ahead is enough
    assert render_workers(8, cores=6) == 3  # half the cores
    assert render_workers(8, cores=2) == 2  # but at least two
    assert render_workers(8, cores=1) == 1  # and never more than the cores
    assert render_workers(2, cores=16) == 2  # no more than pages in flight
    assert render_workers(8, cores=16) == 4  # and never more than MAX_RENDER_WORKERS
    assert render_workers(256, cores=128) == pipeline.MAX_RENDER_WORKERS


def test_pages_render_in_several_children_and_come_out_in_order(many, reference, monkeypatch):
    renderguard._discard_spare()
    watch = Watch(monkeypatch)
    backend = FakeBackend(by_digest, concurrency=4, delay=0.01)
    with open_document(many) as document:
        results = list(run_document(document, list(range(1, PAGES + 1)), backend, POOL))
    assert [r.number for r in results] == list(range(1, PAGES + 1))
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    # Each page went to the model with its own image, whichever child rendered it.
    assert {r.number: r.text for r in results} == reference
    assert len(watch.readers) == 3 and set(watch.rendered_by.values()) == {0, 1, 2}
    assert len(set(watch.children.values())) == 3  # three children, one per reader
    assert_no_child_at_work()


@pytest.mark.parametrize("in_flight, workers", [(1, 1), (4, 2), (8, 4)])
def test_at_most_in_flight_plus_workers_images_are_alive(many, monkeypatch, in_flight, workers):
    watch = Watch(monkeypatch)

    class Counting(FakeBackend):
        def generate(self, image, prompt, settings, on_piece=None):
            watch.alive_now()
            return super().generate(image, prompt, settings, on_piece)

    # A slow model: the renderers run ahead as far as they are allowed to.
    backend = Counting(concurrency=in_flight, delay=0.03)
    with open_document(many) as document:
        options = ScanOptions(render=SMALL, render_workers=workers)
        for _ in run_document(document, list(range(1, PAGES + 1)), backend, options):
            watch.alive_now()
    assert len(watch.readers) == workers
    assert watch.most_alive <= in_flight + workers, f"{watch.most_alive} page images alive at once"
    assert watch.most_alive > in_flight  # the renderers did run ahead of the model
    renderguard._discard_spare()


def test_a_slow_page_times_out_in_its_worker_while_the_others_go_on(tmp_path, monkeypatch):
    slow = 10
    pdf = with_slow_page(tmp_path / "slow.pdf", 31, slow)
    watch = Watch(monkeypatch)
    settings = RenderSettings(max_image_tokens=64, timeout=3)
    with open_document(pdf, timeout=3) as document:
        results = list(
            run_document(
                document, list(range(1, 32)), FakeBackend(concurrency=4), ScanOptions(render=settings, render_workers=3)
            )
        )
    assert [r.number for r in results] == list(range(1, 32))
    assert [r.number for r in results if r.status != "ok"] == [slow]
    assert "took longer than 3 s" in results[slow - 1].error
    # While the slow page held its worker, the other workers rendered later pages ...
    started, ended = watch.events.index(("start", slow)), watch.events.index(("end", slow))
    assert any(kind == "end" and page > slow for kind, page in watch.events[started:ended])
    # ... and the slow page's worker went on with a fresh child; the stuck one is gone.
    reader, stuck = watch.started[slow]
    assert stuck is not None and slow not in watch.rendered_by
    after = [watch.children[page] for page, index in watch.rendered_by.items() if index == reader and page > slow]
    assert after and stuck not in after
    assert stuck not in broken_inputs.render_workers_of(os.getpid())
    assert_no_child_at_work()


def kill_during(reader, page: int, number: int, signum: int = signal.SIGKILL, target=None) -> None:
    """Once `reader`'s child is rendering page `page` (it takes minutes), send `signum`
    to it (or to `target`, a pid, e.g. this process)."""
    worker = reader._worker

    def kill() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            proc = worker._proc
            # The request is under way: the lock is held and the child has the page.
            if proc is not None and worker._lock.locked():
                time.sleep(0.3)
                os.kill(target or proc.pid, signum)
                return
            time.sleep(0.02)

    if number == page:
        threading.Thread(target=kill, daemon=True).start()


def test_a_crashed_child_costs_one_page(tmp_path, monkeypatch):
    slow = 7
    pdf = with_slow_page(tmp_path / "crash.pdf", 30, slow)
    watch = Watch(monkeypatch)
    real_wrap = watch.wrap

    def wrap(reader):
        real_wrap(reader)
        rendered = reader.render

        def render(number, settings):
            kill_during(reader, slow, number)
            return rendered(number, settings)

        reader.render = render

    watch.wrap = wrap
    settings = RenderSettings(max_image_tokens=64, timeout=600)
    with open_document(pdf, timeout=600) as document:
        results = list(
            run_document(
                document, list(range(1, 31)), FakeBackend(concurrency=4), ScanOptions(render=settings, render_workers=3)
            )
        )
    assert [r.number for r in results if r.status != "ok"] == [slow]
    assert "crashed the PDF renderer (signal 9)" in results[slow - 1].error
    assert len(results) == 30
    assert_no_child_at_work()


class Interrupted(BaseException):
    """What qwenocr's SIGINT handler raises (KeyboardInterrupt), without pytest's own meaning."""


def test_an_interrupt_stops_every_child(tmp_path, monkeypatch):
    slow = 5
    pdf = with_slow_page(tmp_path / "interrupt.pdf", 30, slow)
    renderguard._discard_spare()
    watch = Watch(monkeypatch)
    real_wrap = watch.wrap
    busy = {}

    def wrap(reader):
        real_wrap(reader)
        rendered = reader.render

        def render(number, settings):
            if number == slow:
                busy["reader"] = reader
            kill_during(reader, slow, number, signal.SIGINT, target=os.getpid())
            return rendered(number, settings)

        reader.render = render

    watch.wrap = wrap

    def interrupt(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGINT, interrupt)
    settings = RenderSettings(max_image_tokens=64, timeout=600)
    try:
        with open_document(pdf, timeout=600) as document:
            with pytest.raises(Interrupted):
                for _ in run_document(
                    document,
                    list(range(1, 31)),
                    FakeBackend(concurrency=4, delay=0.05),
                    ScanOptions(render=settings, render_workers=3),
                ):
                    pass
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "reader" in busy  # the slow page was being rendered when the interrupt came
    assert_no_child_at_work()


SCRIPT = r"""
import sys
from qwenocr.pages.document import RenderSettings, open_document
from qwenocr.scan.pipeline import ScanOptions, run_document
from tests.support.fake_engine import FakeBackend

settings = RenderSettings(max_image_tokens=64, timeout=600)
with open_document(sys.argv[1], timeout=600) as document:
    for result in run_document(document, list(range(1, 31)), FakeBackend(concurrency=4),
                               ScanOptions(render=settings, render_workers=3)):
        print(result.number, flush=True)
"""


def test_an_interrupted_process_leaves_no_render_child(tmp_path):
    """Ctrl-C in a terminal reaches the whole process group; the process ends, and none of
    its render children (one of them busy with a page that takes minutes) is left."""
    slow = 5
    pdf = with_slow_page(tmp_path / "orphans.pdf", 30, slow)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(pdf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=root,
        start_new_session=True,
    )
    assert proc.stdout is not None
    # Pages 1-4 come out; then the consumer waits for page 5, which never renders.
    lines = [proc.stdout.readline() for _ in range(slow - 1)]
    assert [int(line) for line in lines] == list(range(1, slow))
    deadline = time.monotonic() + 30
    while len(broken_inputs.render_workers_of(proc.pid)) < 3:
        assert time.monotonic() < deadline, "the three render children never started"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0 and b"KeyboardInterrupt" in stderr
    deadline = time.monotonic() + 5  # a child whose parent is gone notices within 0.5 s
    while broken_inputs.render_workers_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert broken_inputs.render_workers_of(proc.pid) == []


# --- everything else that holds without the pool ------------------------------------


def _engine(backend):
    return lambda: (ModelFiles("fake", Path("fake"), None, "fake-model"), None, backend)


def _scan(inputs, backend, stdin=None, **kwargs):
    out = io.StringIO()
    request = ScanRequest(inputs=[str(i) for i in inputs], fmt="jsonl", **kwargs)
    code = run_scan(request, out, Reporter(quiet=True), engine=_engine(backend))
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def test_resume_blank_pages_and_selection_with_a_pool(tmp_path):
    pdf = samples.write_pdf(tmp_path / "blanks.pdf", pages=PAGES, blank_pages=(3, 17, 30), size=(300, 400))
    options = POOL

    def crash_on_twelfth(index, image, settings):
        if index == 11:
            raise KeyboardInterrupt
        return f"first {digest(image)}"

    with pytest.raises(KeyboardInterrupt):
        _scan([pdf], FakeBackend(crash_on_twelfth, concurrency=4), options=options, pages="2-31")
    backend = FakeBackend(lambda i, image, s: f"second {digest(image)}", concurrency=4)
    code, pages = _scan([pdf], backend, options=options, pages="2-31")
    assert code == 0
    assert [p["number"] for p in pages] == list(range(2, 32))
    status = {p["number"]: p["status"] for p in pages}
    assert [n for n, s in status.items() if s == "blank"] == [3, 17, 30]
    resumed = [p for p in pages if p["resumed"]]
    assert resumed and all(p["text"].startswith("first ") for p in resumed)
    fresh = [p for p in pages if not p["resumed"] and p["status"] == "ok"]
    assert fresh and all(p["text"].startswith("second ") for p in fresh)
    assert len(backend.calls) == len(fresh)  # no finished page went to the model again
    # The same pages as rendered one at a time, in this process.
    with open_document(pdf, timeout=None) as document:
        for page in pages:
            if page["status"] == "ok":
                assert page["text"].split()[1] == digest(document.render(page["number"], SMALL))
    renderguard._discard_spare()


def test_text_layer_pages_with_a_pool(tmp_path):
    from tests.support import textlayer_pdfs

    pdf = tmp_path / "mixed.pdf"
    pdf.write_bytes(textlayer_pdfs.mixed_pdf())
    one = _scan([pdf], FakeBackend(by_digest, concurrency=4), options=ScanOptions(mode="auto", skip_blank=False))[1]
    pool = _scan(
        [pdf],
        FakeBackend(by_digest, concurrency=4),
        options=ScanOptions(mode="auto", skip_blank=False, render_workers=3),
    )[1]
    assert [p["source"] for p in pool] == ["text-layer", "model", "model", "model"]
    assert [(p["number"], p["text"]) for p in pool] == [(p["number"], p["text"]) for p in one]
    renderguard._discard_spare()


def test_stdin_with_a_password_is_read_by_every_worker(tmp_path, monkeypatch):
    import pikepdf

    plain = samples.write_pdf(tmp_path / "plain.pdf", pages=12, size=(300, 400))
    locked = tmp_path / "locked.pdf"
    with pikepdf.open(plain) as pdf:
        pdf.save(locked, encryption=pikepdf.Encryption(user=broken_inputs.PASSWORD, owner="o", R=6, aes=True))
    watch = Watch(monkeypatch)
    data = locked.read_bytes()
    with open_document("-", broken_inputs.PASSWORD, data=data) as document:
        results = list(
            run_document(
                document,
                list(range(1, 13)),
                FakeBackend(by_digest, concurrency=4),
                POOL,
            )
        )
    with open_document(plain, timeout=None) as document:
        expected = [digest(document.render(n, SMALL)) for n in range(1, 13)]
    assert [r.text for r in results] == expected
    assert len(watch.readers) == 3 and len(set(watch.children.values())) == 3
    assert_no_child_at_work()


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_images_need_no_pool(tmp_path, monkeypatch, caplog):
    """A TIFF's frames are decoded in this process from one open file: one reader, and
    the pages still come out in order with several in flight."""
    tiff = samples.write_tiff(tmp_path / "scan.tiff", frames=6)
    watch = Watch(monkeypatch)
    caplog.set_level(logging.INFO, logger="qwenocr.scan.pipeline")
    log = Lines()
    logging.getLogger("qwenocr.scan.pipeline").addHandler(log)
    with open_document(tiff) as document:
        expected = [digest(document.render(n, SMALL)) for n in range(1, 7)]
        results = list(
            run_document(
                document,
                list(range(1, 7)),
                FakeBackend(by_digest, concurrency=4),
                POOL,
            )
        )
    logging.getLogger("qwenocr.scan.pipeline").removeHandler(log)
    assert [r.text for r in results] == expected
    assert len(watch.readers) == 1
    assert log.lines == [f"{tiff}: 4 pages in flight, 1 rendered at a time"]


def test_documents_in_flight_together_share_the_extra_workers(many, monkeypatch):
    """A server keeps several documents in flight (scan/run.py): the first one's extra
    readers are not given to the second until it is done."""
    monkeypatch.setattr(pipeline, "available_cores", lambda: 16)
    watch = Watch(monkeypatch)
    options = ScanOptions(render=SMALL)  # sized by the rule: 4 for 8 in flight on 16 cores
    pages = list(range(1, PAGES + 1))
    with open_document(many) as first, open_document(many) as second:
        a = run_document(first, pages, FakeBackend(concurrency=8), options)
        next(a)
        assert len(watch.readers) == 4
        b = run_document(second, pages, FakeBackend(concurrency=8), options)
        assert len(list(b)) == PAGES
        assert len(watch.readers) == 5  # the second document: its own reader only
        assert len(list(a)) == PAGES - 1
        c = run_document(second, pages, FakeBackend(concurrency=8), options)
        assert len(list(c)) == PAGES
        assert len(watch.readers) == 9  # the first is done: its extras are free again
    assert_no_child_at_work()


def test_the_verbose_output_says_how_many_pages_render_at_once(many):
    stream = io.StringIO()
    request = ScanRequest(inputs=[str(many)], fmt="jsonl", options=ScanOptions(render=SMALL, render_workers=2))
    reporter = Reporter(verbose=True, stream=stream)
    run_scan(request, io.StringIO(), reporter, engine=_engine(FakeBackend(concurrency=4)))
    assert "many.pdf: 4 pages in flight, 2 rendered at a time" in stream.getvalue()
    renderguard._discard_spare()


def test_a_real_scan_with_several_pages_in_flight_renders_them_in_a_pool(tmp_path):
    """The CLI, a server backend with four pages in flight: the rule's R (two on a 2-core
    machine) said in --verbose, the pages on stdout in order, nothing else there."""
    from tests.support.clirun import run_cli
    from tests.support.openai_fake_server import FakeOpenAIServer

    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=PAGES, size=(300, 400))
    with FakeOpenAIServer(delay=0.02) as server:
        proc = run_cli(
            "scan", pdf, "--backend", "openai", "--base-url", server.url, "--concurrency", "4", "-f", "jsonl", "-v"
        )
    assert proc.returncode == 0, proc.stderr.decode()
    pages = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [p["number"] for p in pages] == list(range(1, PAGES + 1))
    assert all(p["status"] == "ok" for p in pages)
    assert f"{pdf}: 4 pages in flight, {render_workers(4)} rendered at a time" in proc.stderr.decode()
