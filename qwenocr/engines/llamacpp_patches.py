"""What qwenocr changes inside llama-cpp-python, in one place, for the versions it was written for.

llama-cpp-python's chat handler and `Llama` class cost most of qwenocr's overhead per
page with a small model (docs/performance.md). Three changes reach into its internals:

- the chat template: `MTMDChatHandler` compiles the GGUF's Jinja template on every
  request (about 35 ms for Qwen 3.5's template on a 2-core machine);
  `cache_chat_templates` makes it compile each template once per process;
- the page image: the handler takes images as data URIs, so a page would be
  PNG-encoded, base64-encoded and decoded again (about 40 ms at 1,536 visual tokens);
  `PageHandoff` gives it the page as an uncompressed BMP in memory (about 3 ms);
- the sampler: each request's native sampler chain is freed only by Python's cyclic
  garbage collector; `free_sampler` frees it when the page ends, so memory stays flat.

Internals change between releases without notice, so these apply only to the versions
they were written against (`WRITTEN_FOR`) and only where the internal they touch is still
there. Otherwise they do nothing, the engine runs as stock llama-cpp-python does (slower,
same text), and the reason is logged once (shown with --verbose).

The log filter is here too: it goes through llama-cpp-python's public logging API, so it
is installed on every version, but it is the other place where C code calls qwenocr.

So is the projector's load: `MTMDChatHandler` loads the mmproj (its mtmd context) only on
the first request, so a truncated or damaged mmproj failed every page (exit 10) instead
of the load (exit 11). `load_projector` makes it load with the model, through the
handler's own `_init_mtmd_context` (the same call the first request makes; that call then
finds it loaded), on every version that has it.

So is one safety switch, applied on every version whose model parameters have the field:
llama.cpp built with its AMX backend (Intel Sapphire Rapids and later Xeons) crashes with
SIGSEGV in `ggml_backend_amx_mul_mat` on the first image with quantized GGUFs (Q8_0, Q4_K)
as llama-cpp-python 0.3.36 builds it; loading with `use_extra_bufts = False` (no extra
buffer types: no AMX or CPU weight repacking) avoids it. `Llama` takes no argument for it,
so `without_extra_buffer_types` sets it on the default model parameters while a model loads.
`QWENOCR_LLAMA_REPACK=0` forces it off on any machine, `=1` keeps it on even with AMX.

And so is MoE expert offload (the plan's placement "gpu+cpu-experts"): llama.cpp keeps
tensors whose names match a pattern in a chosen buffer type (`--override-tensor
exps=CPU` of its CLI), through `llama_model_params.tensor_buft_overrides`, a
NULL-terminated array of (pattern, buffer type) pairs. `Llama` takes no argument for it
and its ctypes structure declares the field as a plain pointer, so `experts_on_cpu`
builds the array (the CPU device's buffer type from ggml's device registry) and sets it
on the default model parameters while a model loads, like the switch above. The experts
then stay in RAM and every other layer goes where `n_gpu_layers` puts it.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import functools
import io
import logging
import os
import re
import sys
from typing import Any, Iterator, Optional, Set, Tuple

from PIL import Image

log = logging.getLogger(__name__)

# Written against, and tested in CI with, 0.3.36; trusted up to (not including) 0.4, as
# long as each internal is found where these patches expect it.
WRITTEN_FOR: Tuple[Tuple[int, ...], Tuple[int, ...]] = ((0, 3, 36), (0, 4))

# What the chat messages name the page by when the handler holds its bytes (PageHandoff).
PAGE_URL = "qwenocr:page"

_said: Set[str] = set()
_log_callbacks: list = []  # keep ctypes callbacks alive for as long as the process runs
_template_cache: dict = {}


def supports(version: str) -> bool:
    """Whether the patches were written for this llama-cpp-python version string."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    if match is None:
        return False
    number = tuple(int(part or 0) for part in match.groups())
    first, beyond = WRITTEN_FOR
    return first <= number < beyond


@functools.lru_cache(maxsize=None)
def active() -> bool:
    """Whether the patches apply to the llama-cpp-python in this process (checked once)."""
    import llama_cpp

    version = str(getattr(llama_cpp, "__version__", "unknown"))
    if supports(version):
        return True
    first, beyond = WRITTEN_FOR
    _say_once(
        f"llama-cpp-python {version} is not a version qwenocr's llama.cpp speed-ups were written for "
        f"({_dotted(first)} up to {_dotted(beyond)}): running without them (slower per page, same text)"
    )
    return False


def _dotted(version: Tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        log.info(message)


def _missing(internal: str, consequence: str) -> None:
    _say_once(f"llama-cpp-python has no {internal}: {consequence}")


def extra_buffer_types_off(system_info: str, setting: Optional[str] = None) -> bool:
    """Whether to load without llama.cpp's extra buffer types: when the build reports its
    AMX backend (`llama_print_system_info()`: "AMX_INT8 = 1"), unless QWENOCR_LLAMA_REPACK
    (`setting`) says otherwise."""
    if setting is not None and setting.strip().lower() in ("0", "false", "no", "off"):
        return True
    if setting is not None and setting.strip().lower() in ("1", "true", "yes", "on"):
        return False
    return "AMX" in system_info


@contextlib.contextmanager
def without_extra_buffer_types(llama_cpp_module: Any) -> Iterator[bool]:
    """While a model loads (`Llama(...)`), its default parameters say `use_extra_bufts = False`
    when `extra_buffer_types_off` says so. Yields whether it did."""
    info = llama_cpp_module.llama_print_system_info().decode("utf-8", "replace")
    params_type = getattr(llama_cpp_module, "llama_model_params", None)
    fields = {name for name, *_ in getattr(params_type, "_fields_", ())}
    if not extra_buffer_types_off(info, os.environ.get("QWENOCR_LLAMA_REPACK")):
        yield False
        return
    if "use_extra_bufts" not in fields:
        _missing("use_extra_bufts in llama_model_params", "extra buffer types stay on (AMX CPUs may crash)")
        yield False
        return
    original = llama_cpp_module.llama_model_default_params

    def defaults() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    reason = "llama.cpp's AMX backend is built in" if "AMX" in info else "QWENOCR_LLAMA_REPACK=0"
    _say_once(f"loading without extra buffer types (no weight repacking): {reason}")
    llama_cpp_module.llama_model_default_params = defaults
    try:
        yield True
    finally:
        llama_cpp_module.llama_model_default_params = original


# The routed experts' weights in a Qwen 3.5 MoE GGUF: blk.N.ffn_{gate,up,down}_exps.weight
# (also a fused gate_up); the shared expert (ffn_*_shexp) stays with its layer.
EXPERT_TENSORS = r"\.ffn_(gate_up|gate|up|down)_exps\."
_GGML_BACKEND_DEVICE_TYPE_CPU = 0
_overrides_alive: list = []  # the arrays llama.cpp reads while a model loads


class _BuftOverride(ctypes.Structure):
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def cpu_buffer_type() -> Optional[int]:
    """The CPU device's buffer type (what `-ot ...=CPU` names), or None if ggml's device
    registry can't be reached."""
    try:
        from llama_cpp import _ggml

        lib = _ggml.libggml
        by_type = lib.ggml_backend_dev_by_type
        by_type.argtypes, by_type.restype = [ctypes.c_int], ctypes.c_void_p
        buffer_type = lib.ggml_backend_dev_buffer_type
        buffer_type.argtypes, buffer_type.restype = [ctypes.c_void_p], ctypes.c_void_p
    except (ImportError, AttributeError, OSError):
        return None
    device = by_type(_GGML_BACKEND_DEVICE_TYPE_CPU)
    return buffer_type(device) if device else None


@contextlib.contextmanager
def experts_on_cpu(llama_cpp_module: Any, enabled: bool = True) -> Iterator[bool]:
    """While a model loads, its default parameters keep the MoE experts (EXPERT_TENSORS) in
    the CPU's buffer type. Yields whether it did: not when `enabled` is False, nor when
    the field or the CPU buffer type can't be reached (then the reason is logged once and
    the model loads as usual, all layers where n_gpu_layers puts them)."""
    if not enabled:
        yield False
        return
    params_type = getattr(llama_cpp_module, "llama_model_params", None)
    fields = {name for name, *_ in getattr(params_type, "_fields_", ())}
    buft = cpu_buffer_type() if "tensor_buft_overrides" in fields else None
    if buft is None:
        _missing(
            "tensor_buft_overrides in llama_model_params or a CPU buffer type",
            "MoE experts load with their layers (on the GPU), not in RAM",
        )
        yield False
        return
    overrides = (_BuftOverride * 2)(_BuftOverride(EXPERT_TENSORS.encode(), buft), _BuftOverride(None, None))
    _overrides_alive.append(overrides)
    original = llama_cpp_module.llama_model_default_params

    def defaults() -> Any:
        params = original()
        params.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p)
        return params

    _say_once("loading with the MoE experts in RAM (tensor_buft_overrides: exps -> CPU)")
    llama_cpp_module.llama_model_default_params = defaults
    try:
        yield True
    finally:
        llama_cpp_module.llama_model_default_params = original


def install(verbose: bool) -> None:
    """Everything that must be in place before a model loads."""
    install_log_filter(verbose)
    cache_chat_templates()


def load_projector(handler: Any, llm: Any) -> None:
    """Load the vision projector of `handler` for `llm` now, not on the first page.

    Raises what the handler raises for a projector it can't load (ValueError: "Failed to
    load mtmd context from: ..."), so that the caller fails the load.
    """
    init = getattr(handler, "_init_mtmd_context", None)
    if not callable(init):
        _missing("MTMDChatHandler._init_mtmd_context", "a damaged mmproj is found on the first page, not at load")
        return
    init(llm)


def install_log_filter(verbose: bool) -> None:
    """Route llama.cpp's (and the vision projector's) native logs to stderr with --verbose,
    and nowhere without it."""
    import llama_cpp

    from qwenocr.interrupts import register_callback

    @llama_cpp.llama_log_callback
    @register_callback  # C calls it: a Ctrl-C must not be raised (and lost) in here
    def forward(level: int, text: bytes, user_data) -> None:
        if verbose:
            sys.stderr.write(text.decode("utf-8", "replace"))

    _log_callbacks.append(forward)
    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
    try:
        import llama_cpp.mtmd_cpp as mtmd_cpp

        mtmd_cpp.mtmd_log_set(forward, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(forward, ctypes.c_void_p(0))
    except (ImportError, AttributeError):
        pass


def cache_chat_templates() -> None:
    """Make llama-cpp-python's chat handlers compile each chat template once per process.

    `MTMDChatHandler.__call__` builds a fresh sandboxed Jinja environment and compiles
    the GGUF's template on every request. A compiled template does not change, so the
    environment class it uses is swapped (in this process only) for one whose
    `from_string` returns the template compiled before for the same source and the same
    settings.
    """
    if not active():
        return
    try:
        from llama_cpp import llama_chat_format
    except ImportError:
        return
    base = getattr(llama_chat_format, "ImmutableSandboxedEnvironment", None)
    if base is None:
        _missing("llama_chat_format.ImmutableSandboxedEnvironment", "the chat template is compiled for every page")
        return
    if getattr(base, "_qwenocr_caching", False):
        return

    class CachingEnvironment(base):  # type: ignore[misc, valid-type]  # a class found at run time
        _qwenocr_caching = True

        def from_string(self, source, globals=None, template_class=None):
            if globals or template_class is not None or not isinstance(source, str):
                return super().from_string(source, globals, template_class)
            key = (
                source,
                self.trim_blocks,
                self.lstrip_blocks,
                tuple(sorted(self.extensions)),
                tuple(sorted((name, id(function)) for name, function in self.filters.items())),
            )
            template = _template_cache.get(key)
            if template is None:
                template = _template_cache[key] = super().from_string(source)
            return template

    llama_chat_format.ImmutableSandboxedEnvironment = CachingEnvironment  # type: ignore[misc]  # the swap is the point


def free_sampler(llm: Any) -> None:
    """Free the page's native sampler chain now, not at some later garbage collection.

    llama-cpp-python makes a new sampler chain for every request and frees the old one
    only through a reference cycle (the chain's free callback closes over its owner), so
    chains pile up until Python's cyclic collector runs, each holding native buffers the
    size of the vocabulary (Qwen 3.5: 248k entries). Over a long document that made the
    peak RSS climb by tens of MB (docs/performance.md); freed per page, it stays flat.
    The next request makes its own chain, as it always does.
    """
    if not active():
        return
    if not hasattr(llm, "_sampler"):
        _missing("Llama._sampler", "sampler chains are freed by the garbage collector")
        return
    sampler = llm._sampler
    if sampler is not None and hasattr(sampler, "close"):
        sampler.close()
        llm._sampler = None


class PageHandoff:
    """Mixed into llama-cpp-python's `MTMDChatHandler`: it takes the page as bytes.

    The handler fetches each image of a chat message through `load_image(url)`; for
    `PAGE_URL` this returns the bytes `hand_over_page` left here, and anything else goes
    to the handler's own loader.
    """

    page: Optional[bytes] = None  # the BMP of the page being read

    def load_image(self, image_url: str) -> bytes:
        if image_url == PAGE_URL and self.page is not None:
            return self.page
        return super().load_image(image_url)  # type: ignore[misc]  # the handler after this mixin has it


def hand_over_page(handler: PageHandoff, image: Image.Image) -> str:
    """Make the page ready for `handler`; return the URL the chat message names it by.

    Patched: the handler holds the page as an uncompressed BMP (lossless like PNG, but
    encoding is a copy) under `PAGE_URL`. Otherwise: a PNG data URI, as the stock
    handler expects.
    """
    if active() and callable(getattr(super(PageHandoff, handler), "load_image", None)):
        handler.page = _encode(image, "BMP")
        return PAGE_URL
    if active():
        _missing("MTMDChatHandler.load_image", "each page is sent as a PNG data URI")
    return "data:image/png;base64," + base64.b64encode(_encode(image, "PNG")).decode("ascii")


def end_page(llm: Any, handler: PageHandoff) -> None:
    """Release what one page held: its sampler chain and its bytes."""
    free_sampler(llm)
    handler.page = None


def _encode(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format=image_format)
    return buffer.getvalue()
