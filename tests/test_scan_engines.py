"""`qwenocr scan` end to end through the real engines, as a user runs it: a subprocess of
the CLI on real PDFs, with tiny random-weight Qwen 3.5 checkpoints (MLX MXFP4, and GGUF
+ mmproj; dense and MoE) built offline by tests/fixtures/build_tiny_models.py.

Random weights give garbage text, so these tests check the structure: exit codes, page
count and order, statuses, valid JSON, and that stdout holds the document and nothing else.
"""

from __future__ import annotations

import functools
import json

import pytest

from tests.support import clirun, samples

pytestmark = pytest.mark.engine

# Tiny budgets keep each page to a fraction of a second on a 2-core CPU.
FAST = ["--max-tokens", "24", "--max-image-tokens", "128", "--no-resume"]
STATUSES = {"ok", "repetition", "truncated"}


run_cli = functools.partial(clirun.run_cli, timeout=300)  # engines on a 2-core CPU take a while


def _model_args(tiny_models, engine: str, kind: str):
    if engine == "mlx":
        return ["--model", getattr(tiny_models, f"{kind}_mlx")]
    return ["--model", getattr(tiny_models, f"{kind}_gguf"), "--mmproj", getattr(tiny_models, f"{kind}_mmproj")]


@pytest.fixture(scope="module")
def pdf(tmp_path_factory):
    return samples.write_pdf(tmp_path_factory.mktemp("in") / "doc.pdf", pages=3, size=(600, 800))


ENGINES = [("mlx", "dense"), ("mlx", "moe"), ("llama.cpp", "dense"), ("llama.cpp", "moe")]


@pytest.mark.parametrize("engine,kind", ENGINES, ids=[f"{e}-{k}" for e, k in ENGINES])
def test_scan_json_through_real_engine(tiny_models, pdf, engine, kind):
    proc = run_cli("scan", pdf, "--format", "json", *FAST, *_model_args(tiny_models, engine, kind))
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    document = json.loads(proc.stdout)  # stdout is exactly one JSON document
    assert document["model"]["backend"] == engine
    assert [p["number"] for p in document["pages"]] == [1, 2, 3]
    for page in document["pages"]:
        assert page["status"] in STATUSES, page
        assert page["source"] == "model"
        assert page["output_tokens"] > 0
        assert page["image_tokens"] <= 128
    assert document["totals"]["pages"] == 3


@pytest.mark.parametrize("engine", ["mlx", "llama.cpp"])
def test_scan_markdown_stdout_is_only_the_document(tiny_models, pdf, engine):
    proc = run_cli("scan", pdf, "--pages", "2-3", "--verbose", *FAST, *_model_args(tiny_models, engine, "dense"))
    assert proc.returncode == 0, proc.stderr.decode()
    stdout = proc.stdout.decode()
    assert stdout.startswith("<!-- page 2")
    markers = [line for line in stdout.splitlines() if line.startswith("<!-- page")]
    assert [m.split()[2] for m in markers] == ["2", "3"]
    # --verbose lets the engine's own log through: it must land on stderr, not stdout.
    for noise in ("llama_model_load", "load_tensors", "clip_model_loader", "mtmd", "Fetching"):
        assert noise not in stdout


def test_scan_jsonl_from_stdin_with_llama(tiny_models):
    data = samples.pdf_bytes(pages=2)
    proc = run_cli("scan", "-", "--format", "jsonl", *FAST, *_model_args(tiny_models, "llama.cpp", "dense"), stdin=data)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert [json.loads(line)["number"] for line in lines] == [1, 2]
    assert all(json.loads(line)["file"] == "-" for line in lines)


def test_scan_image_input_to_output_file(tiny_models, tmp_path):
    image = tmp_path / "photo.jpg"
    samples.page_image(1, (640, 480)).save(image, quality=85)
    out = tmp_path / "photo.json"
    proc = run_cli("scan", image, "-f", "json", "-o", out, *FAST, *_model_args(tiny_models, "mlx", "dense"))
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b""
    document = json.loads(out.read_text())
    assert document["page_count"] == 1 and document["pages"][0]["status"] in STATUSES


def test_random_weights_loop_and_the_guard_catches_it(tiny_models, pdf):
    """Random weights repeat one token: with room to loop, the guard must stop it early."""
    proc = run_cli(
        "scan",
        pdf,
        "--pages",
        "1",
        "-f",
        "json",
        "--max-tokens",
        "400",
        "--max-image-tokens",
        "128",
        "--no-resume",
        *_model_args(tiny_models, "llama.cpp", "dense"),
    )
    assert proc.returncode == 0, proc.stderr.decode()
    page = json.loads(proc.stdout)["pages"][0]
    if page["status"] == "repetition":
        assert page["attempts"] == 2
        assert page["output_tokens"] < 400
    else:  # the model happened not to loop: then it must have run to its end
        assert page["status"] in ("ok", "truncated")


def test_offline_without_cached_model_names_the_files(pdf):
    """No --model: the plan picks a model; offline and uncached, it fails with exit 7."""
    proc = run_cli("scan", pdf, "--offline", "--backend", "llama.cpp", "--variant", "0.8B")
    assert proc.returncode == 7, proc.stderr.decode()
    stderr = proc.stderr.decode().strip().splitlines()
    assert len(stderr) == 1 and "offline" in stderr[0] and ".gguf" in stderr[0]
    assert proc.stdout == b""
