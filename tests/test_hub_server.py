"""The loopback hub server against the real huggingface_hub client.

The client runs in a subprocess whose environment is `hub.client_env(...)`: huggingface_hub
reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE once, at import, and this pytest process
has HF_HUB_OFFLINE=1 (tests/conftest.py), so an in-process client could not be pointed at
the server. See tests/support/hub_server.py for the pattern other tests copy.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pytest

from tests.support.hub_server import (
    HubRepo,
    HubServer,
    hub_server,  # noqa: F401 - the fixture, used by test_fixture_points_subprocesses_here
    safetensors_bytes,
    safetensors_sparse,
    sparse,
)

FIVE_GB = 5_000_000_000
CONFIG = json.dumps({"architectures": ["Qwen3_5ForConditionalGeneration"], "model_type": "qwen3_5"}).encode()
SINGLE = safetensors_bytes(
    {"vision_tower.blocks.0.weight": ("F16", [4, 4]), "language_model.lm_head.weight": ("BF16", [8, 2])},
    {"format": "mlx"},
)
SHARD_1 = {"model.visual.patch_embed.weight": ("BF16", [1024, 1024, 512])}  # 1 GiB, header only
SHARD_2 = {"model.language_model.embed_tokens.weight": ("BF16", [151_936, 4096])}
INDEX = json.dumps(
    {
        "metadata": {"total_size": 2 * 1024 * 1024 * 512 + 2 * 151_936 * 4096},
        "weight_map": {
            **{name: "model-00001-of-00002.safetensors" for name in SHARD_1},
            **{name: "model-00002-of-00002.safetensors" for name in SHARD_2},
        },
    }
).encode()


def single_repo() -> HubRepo:
    return HubRepo(
        "mlx-community/Tiny-mxfp4",
        {
            "config.json": CONFIG,
            "model.safetensors": SINGLE,
            "big.gguf": sparse(FIVE_GB),
            "tokenizer/vocab.txt": b"a\nb\n",
        },
    )


def sharded_repo() -> HubRepo:
    return HubRepo(
        "Qwen/Tiny-Sharded",
        {
            "config.json": CONFIG,
            "model.safetensors.index.json": INDEX,
            "model-00001-of-00002.safetensors": safetensors_sparse(SHARD_1),
            "model-00002-of-00002.safetensors": safetensors_sparse(SHARD_2),
        },
    )


def client(hub: HubServer, home: Path, code: str) -> Any:
    """Run `code` with huggingface_hub pointed at `hub`; it sets `out`, which comes back (JSON)."""
    script = textwrap.dedent(code) + "\nimport json as _json\nprint(_json.dumps(out))\n"
    env = {**os.environ, **hub.client_env(home)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def raw(hub: HubServer, method: str, path: str, headers: Optional[Dict[str, str]] = None) -> Tuple[int, Any, bytes]:
    """One request without the client (http.client: no proxy variables consulted)."""
    host, port = hub.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def test_model_info_gives_sizes_sha_and_lfs(tmp_path):
    repo = single_repo()
    with HubServer([repo]) as hub:
        assert hub.url.startswith("http://127.0.0.1:")
        out = client(
            hub,
            tmp_path,
            """
            from huggingface_hub import HfApi
            info = HfApi().model_info("mlx-community/Tiny-mxfp4", files_metadata=True)
            plain = HfApi().model_info("mlx-community/Tiny-mxfp4", revision=info.sha)
            out = {
                "sha": info.sha, "id": info.id, "plain_sha": plain.sha,
                "sizes": {s.rfilename: s.size for s in info.siblings},
                "lfs": {s.rfilename: s.lfs.sha256 for s in info.siblings if s.lfs},
                "plain_sizes": [s.size for s in plain.siblings],
                "params": info.safetensors.total, "config": info.config,
            }
            """,
        )
    assert out["sha"] == out["plain_sha"] == repo.sha and len(repo.sha) == 40
    assert out["id"] == "mlx-community/Tiny-mxfp4"
    assert out["sizes"] == {
        ".gitattributes": repo.files[".gitattributes"].size,
        "config.json": len(CONFIG),
        "model.safetensors": len(SINGLE),
        "big.gguf": FIVE_GB,
        "tokenizer/vocab.txt": 4,
    }
    assert out["lfs"]["model.safetensors"] == hashlib.sha256(SINGLE).hexdigest()
    assert set(out["lfs"]) == {"model.safetensors", "big.gguf"}
    assert set(out["plain_sizes"]) == {None}  # sizes only with files_metadata, as on the hub
    assert out["params"] == 16 + 16
    assert out["config"]["model_type"] == "qwen3_5"
    assert ("GET", "/api/models/mlx-community/Tiny-mxfp4") in hub.requests
    assert ("GET", f"/api/models/mlx-community/Tiny-mxfp4/revision/{repo.sha}") in hub.requests
    assert hub.log[0].query == {"blobs": "true"}


def test_sha_is_stable_and_follows_content():
    assert single_repo().sha == single_repo().sha
    assert HubRepo("a/b", {"x": b"1"}).sha != HubRepo("a/b", {"x": b"2"}).sha
    assert HubRepo("a/b", {"x": b"1"}).sha != HubRepo("a/c", {"x": b"1"}).sha


def test_downloads_land_in_the_standard_cache(tmp_path):
    repo = single_repo()
    with HubServer([repo]) as hub:
        out = client(
            hub,
            tmp_path,
            """
            from huggingface_hub import hf_hub_download, snapshot_download
            one = hf_hub_download("mlx-community/Tiny-mxfp4", "config.json")
            snap = snapshot_download("mlx-community/Tiny-mxfp4", allow_patterns=["*.json", "tokenizer/*"])
            out = {"one": one, "snap": snap}
            """,
        )
        gets = [path for method, path in hub.requests if method == "GET" and "/resolve/" in path]
    cache = tmp_path / "hub" / "models--mlx-community--Tiny-mxfp4"
    snapshot = cache / "snapshots" / repo.sha
    assert Path(out["one"]) == snapshot / "config.json"
    assert Path(out["snap"]) == snapshot
    assert (cache / "refs" / "main").read_text() == repo.sha
    assert (snapshot / "config.json").read_bytes() == CONFIG
    assert (snapshot / "tokenizer" / "vocab.txt").read_bytes() == b"a\nb\n"
    assert (snapshot / "config.json").resolve() == cache / "blobs" / repo.files["config.json"].etag
    assert sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()) == [
        "config.json",
        "tokenizer/vocab.txt",
    ]
    assert not any(path.endswith(("big.gguf", "model.safetensors")) for path in gets)


def test_safetensors_metadata_of_single_file_and_sharded_repos(tmp_path):
    with HubServer([single_repo(), sharded_repo()]) as hub:
        out = client(
            hub,
            tmp_path,
            """
            from huggingface_hub import HfApi
            api = HfApi()
            one = api.get_safetensors_metadata("mlx-community/Tiny-mxfp4")
            two = api.get_safetensors_metadata("Qwen/Tiny-Sharded")
            out = {
                "one": sorted(one.weight_map), "one_sharded": one.sharded,
                "two": sorted(two.weight_map), "two_sharded": two.sharded,
                "two_files": sorted(two.files_metadata),
                "shape": two.files_metadata["model-00002-of-00002.safetensors"].tensors[
                    "model.language_model.embed_tokens.weight"].shape,
            }
            """,
        )
        shard_reads = [r for r in hub.log if r.method == "GET" and r.path.endswith("-of-00002.safetensors")]
    assert out["one"] == ["language_model.lm_head.weight", "vision_tower.blocks.0.weight"]
    assert out["one_sharded"] is False
    assert out["two"] == sorted([*SHARD_1, *SHARD_2]) and out["two_sharded"] is True
    assert out["two_files"] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert out["shape"] == [151_936, 4096]
    # the shards (1+ GiB each) were only read through their header
    assert len(shard_reads) == 2 and all(r.headers.get("range", r.headers.get("Range")) for r in shard_reads)


def test_safetensors_bytes_reads_with_the_safetensors_library(tmp_path):
    numpy = pytest.importorskip("numpy")
    safetensors = pytest.importorskip("safetensors")
    path = tmp_path / "model.safetensors"
    path.write_bytes(SINGLE)
    with safetensors.safe_open(str(path), framework="np") as handle:
        assert sorted(handle.keys()) == ["language_model.lm_head.weight", "vision_tower.blocks.0.weight"]
        assert handle.metadata() == {"format": "mlx"}
        assert handle.get_slice("language_model.lm_head.weight").get_shape() == [8, 2]
        tensor = handle.get_tensor("vision_tower.blocks.0.weight")  # numpy has no bfloat16: the F16 one
    assert tensor.shape == (4, 4) and tensor.dtype == numpy.float16 and not tensor.any()


def test_list_repo_tree_lists_paths_and_sizes(tmp_path):
    with HubServer([single_repo()]) as hub:
        out = client(
            hub,
            tmp_path,
            """
            from huggingface_hub import HfApi, RepoFile
            api = HfApi()
            def listing(**kw):
                return {f.path: (f.size if isinstance(f, RepoFile) else "dir") for f in api.list_repo_tree(
                    "mlx-community/Tiny-mxfp4", **kw)}
            out = {"deep": listing(recursive=True), "top": listing(), "sub": listing(path_in_repo="tokenizer")}
            """,
        )
    assert out["deep"] == {
        ".gitattributes": out["deep"][".gitattributes"],
        "big.gguf": FIVE_GB,
        "config.json": len(CONFIG),
        "model.safetensors": len(SINGLE),
        "tokenizer": "dir",
        "tokenizer/vocab.txt": 4,
    }
    assert out["top"]["tokenizer"] == "dir" and "tokenizer/vocab.txt" not in out["top"]
    assert out["sub"] == {"tokenizer/vocab.txt": 4}


def test_missing_repo_file_and_revision_raise_the_hub_errors(tmp_path):
    with HubServer([single_repo()]) as hub:
        out = client(
            hub,
            tmp_path,
            """
            from huggingface_hub import HfApi, hf_hub_download
            from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
            def kind(call):
                try:
                    call()
                except (RevisionNotFoundError, EntryNotFoundError, RepositoryNotFoundError) as error:
                    return type(error).__mro__[0].__name__, [
                        c.__name__ for c in (RepositoryNotFoundError, EntryNotFoundError, RevisionNotFoundError)
                        if isinstance(error, c)]
                return None
            out = {
                "info": kind(lambda: HfApi().model_info("mlx-community/Nope")),
                "download": kind(lambda: hf_hub_download("mlx-community/Nope", "config.json")),
                "file": kind(lambda: hf_hub_download("mlx-community/Tiny-mxfp4", "nope.json")),
                "revision": kind(lambda: HfApi().model_info("mlx-community/Tiny-mxfp4", revision="v9")),
                "exists": HfApi().file_exists("mlx-community/Tiny-mxfp4", "nope.json"),
            }
            """,
        )
    assert out["info"][1] == ["RepositoryNotFoundError"]
    assert out["download"][1] == ["RepositoryNotFoundError"]
    assert out["file"][1] == ["EntryNotFoundError"]
    assert out["revision"][1] == ["RevisionNotFoundError"]
    assert out["exists"] is False


def test_sparse_file_is_sized_and_served_without_being_allocated(tmp_path):
    repo = single_repo()
    with HubServer([repo]) as hub:
        tracemalloc.start()
        try:
            out = client(
                hub,
                tmp_path,
                """
                from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
                info = HfApi().model_info("mlx-community/Tiny-mxfp4", files_metadata=True)
                meta = get_hf_file_metadata(hf_hub_url("mlx-community/Tiny-mxfp4", "big.gguf"))
                out = {"size": {s.rfilename: s.size for s in info.siblings}["big.gguf"], "head": meta.size,
                       "commit": meta.commit_hash, "etag": meta.etag}
                """,
            )
            status, headers, body = raw(
                hub, "GET", "/mlx-community/Tiny-mxfp4/resolve/main/big.gguf", {"Range": "bytes=-10"}
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert out["size"] == out["head"] == FIVE_GB
    assert out["commit"] == repo.sha and out["etag"] == repo.files["big.gguf"].etag
    assert status == 206 and body == bytes(10)
    assert headers["Content-Range"] == f"bytes {FIVE_GB - 10}-{FIVE_GB - 1}/{FIVE_GB}"
    assert peak < 32 << 20


def test_raw_answers_carry_the_hub_headers():
    repo = single_repo()
    with HubServer([repo]) as hub:
        status, headers, body = raw(hub, "HEAD", "/mlx-community/Tiny-mxfp4/resolve/main/model.safetensors")
        assert status == 200 and body == b""
        assert headers["X-Repo-Commit"] == repo.sha
        assert headers["ETag"] == f'"{repo.files["model.safetensors"].sha256}"'
        assert headers["X-Linked-Size"] == headers["Content-Length"] == str(len(SINGLE))
        assert not any(name.lower().startswith("x-xet") for name in headers)

        status, headers, body = raw(
            hub, "GET", "/mlx-community/Tiny-mxfp4/resolve/main/config.json", {"Range": "bytes=2-5"}
        )
        assert (status, body, headers["Content-Range"]) == (206, CONFIG[2:6], f"bytes 2-5/{len(CONFIG)}")
        status, headers, _ = raw(
            hub, "GET", "/mlx-community/Tiny-mxfp4/resolve/main/config.json", {"Range": "bytes=999-"}
        )
        assert status == 416 and headers["Content-Range"] == f"bytes */{len(CONFIG)}"

        status, headers, _ = raw(hub, "HEAD", "/mlx-community/Tiny-mxfp4/resolve/main/missing.bin")
        assert (status, headers["X-Error-Code"], headers["X-Repo-Commit"]) == (404, "EntryNotFound", repo.sha)
        status, headers, _ = raw(hub, "GET", "/api/models/other/repo")
        assert (status, headers["X-Error-Code"]) == (404, "RepoNotFound")
        status, headers, _ = raw(hub, "GET", "/api/models/mlx-community/Tiny-mxfp4/revision/dev")
        assert (status, headers["X-Error-Code"]) == (404, "RevisionNotFound")


def test_add_remove_and_request_log(tmp_path):
    with HubServer() as hub:
        status, _, _ = raw(hub, "GET", "/api/models/mlx-community/Tiny-mxfp4")
        assert status == 404
        repo = hub.add(single_repo())
        status, _, body = raw(hub, "GET", "/api/models/mlx-community/Tiny-mxfp4")
        assert status == 200 and json.loads(body)["sha"] == repo.sha
        hub.remove("mlx-community/Tiny-mxfp4")
        status, _, _ = raw(hub, "GET", "/api/models/mlx-community/Tiny-mxfp4")
        assert status == 404
        with pytest.raises(KeyError):
            hub.remove("mlx-community/Tiny-mxfp4")
        assert hub.requests == [("GET", "/api/models/mlx-community/Tiny-mxfp4")] * 3
    with pytest.raises(RuntimeError):
        hub.url  # noqa: B018 - stopped: no address any more


def test_fixture_points_subprocesses_here(hub_server):  # noqa: F811 - the imported fixture
    hub_server.add(HubRepo("org/fixture", {"config.json": b"{}"}))
    assert os.environ["HF_ENDPOINT"] == hub_server.url
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    script = (
        "from huggingface_hub import hf_hub_download; print(open(hf_hub_download('org/fixture', 'config.json')).read())"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{}"
    assert Path(os.environ["HF_HUB_CACHE"], "models--org--fixture", "refs", "main").is_file()
