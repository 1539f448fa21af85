"""Checking candidate sources on a hub before download (qwenocr/store/verify.py), through
`qwenocr doctor --json` and `qwenocr scan` run as a user runs them: real subprocesses,
the real huggingface_hub client, a hub on loopback (tests/support/hub_server.py) that
serves repos shaped like the real ones."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from qwenocr.errors import ExitCode
from qwenocr.fit import catalog
from tests.support.clirun import run_cli
from tests.support.hub_server import HubRepo, HubServer, hub_server, safetensors_sparse, sparse  # noqa: F401

MXFP4_9B = "mlx-community/Qwen3.5-9B-mxfp4"
GGUF_122B = "unsloth/Qwen3.5-122B-A10B-GGUF"
MAC_16 = ("--platform", "apple", "--memory", "16")
WEIGHTS = 5_970_000_000  # FACTS §9: mlx 9B-4bit is 5.97 GB in total with its vision tower


def mlx_repo(repo_id: str, *, vision: bool = True, mode: str = "mxfp4", bits: int = 4) -> HubRepo:
    """An mlx-vlm conversion: `vision_tower.*` beside `language_model.*` (mlx-lm's text-only
    conversions lack the first), and the quantization block in config.json."""
    tensors = {"language_model.model.embed_tokens.weight": ("U8", [WEIGHTS - 4096])}
    if vision:
        tensors["vision_tower.blocks.0.attn.qkv.weight"] = ("F16", [16, 16])
    quantization = {"group_size": 32 if mode == "mxfp4" else 64, "bits": bits, "mode": mode}
    config = {"model_type": "qwen3_5", "quantization": quantization}
    return HubRepo(
        repo_id,
        {
            "config.json": json.dumps(config).encode(),
            "model.safetensors": safetensors_sparse(tensors),
            "tokenizer.json": b"{}",
            "chat_template.jinja": b"{{ messages }}",
        },
    )


def mlx_total(hub: HubServer, repo_id: str) -> int:
    """What the hub lists for the MLX download set (everything but .gitattributes here)."""
    info = hub.repo(repo_id).info(blobs=True)
    return sum(s["size"] for s in info["siblings"] if s["rfilename"] != ".gitattributes")


def doctor(*args, env=None, expect=ExitCode.OK):
    done = run_cli("doctor", "--json", *args, env=env, timeout=60)
    assert done.returncode == expect, done.stderr
    return json.loads(done.stdout)


def facts_file() -> Path:
    import os

    return Path(os.environ["HF_HOME"]) / "qwenocr" / "sources.json"


def test_a_vision_mxfp4_repo_is_verified_and_sized_from_the_hub(hub_server):  # noqa: F811
    hub_server.add(mlx_repo(MXFP4_9B))
    data = doctor(*MAC_16)
    choice = data["choice"]
    assert (choice["variant"], choice["quant"]) == ("9B", "MXFP4")
    source = choice["source"]
    total = mlx_total(hub_server, MXFP4_9B)
    assert source["kind"] == "hub" and source["repo"] == MXFP4_9B and source["verified"] is True
    assert source["size_bytes"] == total and source["size_from"] == "hub"
    assert source["revision"] == hub_server.repo(MXFP4_9B).sha
    assert choice["rejected_sources"] == []
    # The real size replaces the table's, and the vision tower inside it is not added again.
    assert choice["breakdown"]["weights_gb"] == round(total / 1e9, 2)
    assert choice["breakdown"]["vision_gb"] == 0
    # Only the config was downloaded; the weights' names came from a ranged header read.
    gets = [path for method, path in hub_server.requests if method == "GET" and "/resolve/" in path]
    assert any(path.endswith("/config.json") for path in gets)
    ranged = [r for r in hub_server.log if r.path.endswith("model.safetensors") and r.method == "GET"]
    assert ranged and all("range" in {k.lower() for k in r.headers} for r in ranged)
    cached = json.loads(facts_file().read_text())
    assert cached["repos"][MXFP4_9B]["latest"] == hub_server.repo(MXFP4_9B).sha


@pytest.mark.parametrize(
    "repo, reason",
    [
        (mlx_repo(MXFP4_9B, vision=False), "no vision tower"),
        (mlx_repo(MXFP4_9B, mode="affine"), "quantization is affine, not mxfp4"),
        (None, "repo not found"),
    ],
    ids=["text-only", "affine", "missing"],
)
def test_a_rejected_repo_keeps_its_reason_and_the_plan_offers_convert(hub_server, repo, reason):  # noqa: F811
    if repo is not None:
        hub_server.add(repo)
    data = doctor(*MAC_16)
    choice = data["choice"]
    assert (choice["variant"], choice["quant"]) == ("9B", "MXFP4")
    assert choice["rejected_sources"] == [{"repo": MXFP4_9B, "reason": reason}]
    assert choice["source"]["kind"] == "convert"
    assert choice["source"]["command"] == "qwenocr models convert Qwen/Qwen3.5-9B --quant mxfp4"
    # The ready alternative: the largest GGUF that fits (9B's own mmproj puts it just over 16 GB).
    alternative = data["alternative"]
    assert alternative["backend"] == "llama.cpp" and alternative["fits"]
    assert alternative["source"]["repo"] == f"unsloth/Qwen3.5-{alternative['variant']}-GGUF"
    assert any("qwenocr models convert Qwen/Qwen3.5-9B --quant mxfp4" in a for a in data["advice"])
    # The same candidate row in the table says so too.
    row = next(c for c in data["candidates"] if c["variant"] == "9B" and c["bits"] == 4)
    assert row["rejected_sources"] == choice["rejected_sources"]


def test_a_split_gguf_is_sized_from_its_real_shards(hub_server):  # noqa: F811
    shard, projector = 25_700_000_000, 912_000_000  # 77.1 GB in all, not the table's 70
    files = {f"UD-Q4_K_XL/Qwen3.5-122B-A10B-UD-Q4_K_XL-0000{i}-of-00003.gguf": sparse(shard) for i in (1, 2, 3)}
    files["mmproj-F16.gguf"] = sparse(projector)
    hub_server.add(HubRepo(GGUF_122B, files))
    data = doctor("--platform", "cuda", "--vram", "48,48")
    choice = data["choice"]
    assert (choice["variant"], choice["quant"]) == ("122B-A10B", "Q4_K_XL")
    assert choice["source"]["verified"] is True and choice["source"]["size_bytes"] == 3 * shard + projector
    assert choice["breakdown"]["weights_gb"] == 77.1 and choice["breakdown"]["vision_gb"] == 0.91
    assert choice["breakdown"]["weights_gb"] != catalog.get_variant("122B-A10B").weights_gb(4)
    assert choice["files"][0] == "UD-Q4_K_XL/Qwen3.5-122B-A10B-UD-Q4_K_XL-*.gguf"
    # A shard missing on the hub rejects the repo (and no other 4-bit GGUF of 122B is known).
    hub_server.remove(GGUF_122B)
    del files["UD-Q4_K_XL/Qwen3.5-122B-A10B-UD-Q4_K_XL-00003-of-00003.gguf"]
    hub_server.add(HubRepo(GGUF_122B, files))
    forced = ("--variant", "122B", "--quant", "Q4_K_XL")
    data = doctor("--platform", "cuda", "--vram", "48,48", *forced, expect=ExitCode.NOTHING_FITS)
    rejected = data["choice"]["rejected_sources"]
    assert rejected == [
        {"repo": GGUF_122B, "reason": "no file matching UD-Q4_K_XL/Qwen3.5-122B-A10B-UD-Q4_K_XL-00003-of-00003.gguf"}
    ]
    assert data["choice"]["source"]["kind"] == "none" and data["exit_code"] == ExitCode.NOTHING_FITS


def test_offline_reuses_what_the_hub_said(hub_server):  # noqa: F811
    hub_server.add(mlx_repo(MXFP4_9B))
    online = doctor(*MAC_16)["choice"]["source"]
    seen = len(hub_server.requests)
    for flag in (("--offline",), ()):
        env = {"HF_HUB_OFFLINE": "1"} if not flag else None
        source = doctor(*MAC_16, *flag, env=env)["choice"]["source"]
        assert source["verified"] is True and source["status"] == "verified (cached hub facts)"
        assert source["size_from"] == "cache" and source["size_bytes"] == online["size_bytes"]
    assert len(hub_server.requests) == seen  # offline: not one request
    # A rejection is remembered too.
    hub_server.add(mlx_repo(MXFP4_9B, vision=False))
    doctor(*MAC_16)
    offline = doctor(*MAC_16, "--offline")["choice"]
    assert offline["rejected_sources"] == [{"repo": MXFP4_9B, "reason": "no vision tower"}]


def test_offline_without_cached_facts_says_not_verified():
    data = doctor(*MAC_16, "--offline")
    source = data["choice"]["source"]
    assert source["verified"] is None and source["status"] == "not verified (offline)"
    assert "offline" in data["sources_note"]


def test_an_unreachable_hub_never_crashes_doctor(tmp_path):
    # Nothing listens on this port: every request fails at once.
    with HubServer() as hub:
        env = hub.client_env(tmp_path / "hf")
    started = time.monotonic()
    data = doctor(*MAC_16, env=env)
    assert time.monotonic() - started < 30
    source = data["choice"]["source"]
    assert source["verified"] is None and source["status"] == "not verified (hub unreachable)"
    assert "hub unreachable" in data["sources_note"]


def test_a_hub_that_does_not_answer_is_given_up_within_the_deadline(tmp_path):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    try:
        with HubServer() as hub:
            env = hub.client_env(tmp_path / "hf")
        env["HF_ENDPOINT"] = "http://127.0.0.1:%d" % silent.getsockname()[1]
        started = time.monotonic()
        data = doctor(*MAC_16, env=env)
        assert time.monotonic() - started < 15  # the deadline is a few seconds in all
        assert data["choice"]["source"]["verified"] is None
    finally:
        silent.close()


def test_scan_with_a_convert_plan_fails_before_loading_with_both_options(tmp_path):
    from tests.support.samples import page_image

    image = tmp_path / "page.png"
    page_image(1).save(image)
    done = run_cli("scan", image, "--backend", "mlx", "--variant", "27B", "--quant", "mxfp4", timeout=60)
    assert done.returncode == ExitCode.MODEL_UNAVAILABLE, done.stderr
    assert done.stdout == b""
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "qwenocr models convert Qwen/Qwen3.5-27B --quant mxfp4" in lines[0]
    assert "--backend llama.cpp" in lines[0]


def test_a_registered_conversion_is_the_local_source(tmp_path):
    folder = tmp_path / "Qwen3.5-27B-mxfp4"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"quantization": {"group_size": 32, "bits": 4, "mode": "mxfp4"}}))
    with open(folder / "model.safetensors", "wb") as handle:
        handle.truncate(14_000_000_000)
    try:
        from qwenocr.store.registry import register
    except ImportError:
        pytest.skip("the registry (qwenocr/store/registry.py) is not there yet")
    register(folder, family="3.5", variant="27B", quant="mxfp4", source="Qwen/Qwen3.5-27B")
    data = doctor("--platform", "apple", "--memory", "32", "--offline")
    source = data["choice"]["source"]
    assert data["choice"]["variant"] == "27B" and source["kind"] == "local"
    assert source["path"] == str(folder.resolve()) and source["size_bytes"] == 14_000_000_000
    assert data["choice"]["breakdown"]["weights_gb"] == 14.0
