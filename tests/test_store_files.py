"""The store's one home of model-file knowledge (qwenocr/store/files.py), and its users:
the one download path and its error mapping (store/hub.py), and resolving a repo's files
for `scan` (store/resolve.py). Nothing here touches the network: huggingface_hub's
download is replaced by a fake that returns a folder built by tests/support/fake_hub.py.
"""

from __future__ import annotations

import fnmatch

import pytest

from qwenocr import store
from qwenocr.errors import ExitCode, ModelUnavailableError, OutputError
from qwenocr.fit import catalog
from qwenocr.store import files, hub
from qwenocr.store.resolve import resolve_target
from qwenocr.store.targets import Target, repo_model_target
from tests.support import fake_hub

SPLIT = [f"Q4_K_M/m-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]


def test_model_ggufs_are_whole_models_and_first_shards_without_projectors():
    names = SPLIT + ["m-Q8_0.gguf", "mmproj-F16.gguf", "README.md", "mmproj/notes.txt"]
    assert files.model_ggufs(names) == ["Q4_K_M/m-Q4_K_M-00001-of-00003.gguf", "m-Q8_0.gguf"]


def test_a_projector_is_named_so_and_f16_comes_first():
    assert files.is_mmproj("sub/mmproj-BF16.gguf") and files.is_mmproj("Model-MMPROJ.gguf")
    assert not files.is_mmproj("mmproj/model-Q4_K_M.gguf")  # the file's name counts, not its folder's
    names = ["mmproj-BF16.gguf", "mmproj-Q8_0.gguf", "mmproj-F16.gguf", "m-F16.gguf"]
    assert files.projectors(names) == ["mmproj-F16.gguf", "mmproj-BF16.gguf", "mmproj-Q8_0.gguf"]


def test_split_model_glob_matches_every_shard_of_that_model_only():
    pattern = files.split_model_glob(SPLIT[0])
    assert [n for n in SPLIT + ["Q4_K_M/m-Q4_K_M-00001-of-00002.gguf"] if fnmatch.fnmatch(n, pattern)] == SPLIT
    assert files.split_model_glob("m-Q8_0.gguf") == "m-Q8_0.gguf"


def test_missing_shards_are_named():
    assert files.missing_shards([SPLIT[0], SPLIT[2], "m-Q8_0.gguf"]) == [SPLIT[1]]
    assert files.missing_shards(SPLIT) == []


def test_the_required_mlx_files_are_part_of_what_is_downloaded():
    # MLX_FILES (the catalog's download set) and MLX_REQUIRED must agree: a required file
    # that no download pattern fetches would make every MLX pull incomplete.
    examples = [required.replace("*", "model") for required in files.MLX_REQUIRED]
    assert all(any(fnmatch.fnmatch(name, p) for p in catalog.MLX_FILES) for name in examples)
    assert files.MLX_FILES is catalog.MLX_FILES
    assert files.is_mlx_model(["config.json", "model.safetensors"])
    assert not files.is_mlx_model(["tokenizer.json", "model.safetensors"])


def test_an_mlx_target_needs_only_the_config_and_the_weights():
    target = store.catalog_target("9B", 4, "mlx")
    assert target.required_patterns == files.MLX_REQUIRED
    assert target.missing_from(["config.json", "model.safetensors"]) == []
    assert target.missing_from(["tokenizer.json", "model.safetensors", "chat_template.jinja"]) == ["config.json"]


def test_a_repo_named_by_model_uses_the_stores_file_sets():
    gguf = repo_model_target("bartowski/Qwen_Qwen3.5-9B-GGUF", "llama.cpp", None)
    assert gguf.patterns == files.gguf_patterns(files.DEFAULT_GGUF_QUANT) == ("*Q4_K_M*.gguf", "*mmproj*")
    assert "--include '*Q4_K_M*.gguf' --include '*mmproj*'" in gguf.pull_command()
    assert repo_model_target("x/y-GGUF", "llama.cpp", "Q8_0").patterns[0] == "*Q8_0*.gguf"
    mlx = repo_model_target("x/y-mlx", "mlx", None)
    assert mlx.patterns == tuple(files.MLX_FILES) and mlx.required_patterns == files.MLX_REQUIRED
    assert mlx.pull_command() == "qwenocr models pull --repo x/y-mlx"  # pulled whole: its extras vary


@pytest.fixture
def fake_download(tmp_path, monkeypatch):
    """huggingface_hub.snapshot_download returning a snapshot of `files` (or raising `error`)."""
    import huggingface_hub

    calls = []

    def install(repo, files=None, error=None):
        def snapshot_download(repo_id, allow_patterns=None, cache_dir=None, local_files_only=False, **kwargs):
            calls.append({"repo": repo_id, "patterns": allow_patterns, "offline": local_files_only})
            if error is not None:
                raise error
            return str(fake_hub.add_snapshot(tmp_path / "hub", repo, files))

        monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
        return calls

    return install


def test_resolve_a_catalog_gguf_picks_its_weights_and_the_f16_projector(fake_download):
    target = store.catalog_target("9B", 4, "llama.cpp")
    calls = fake_download(
        target.repo,
        {"Qwen3.5-9B-UD-Q4_K_XL.gguf": 10, "Qwen3.5-9B-Q8_0.gguf": 20, "mmproj-F16.gguf": 3, "mmproj-BF16.gguf": 3},
    )
    model = resolve_target(target, offline=True)
    assert calls == [{"repo": target.repo, "patterns": list(target.patterns), "offline": True}]
    assert (model.backend, model.path.name, model.mmproj and model.mmproj.name) == (
        "llama.cpp",
        "Qwen3.5-9B-UD-Q4_K_XL.gguf",
        "mmproj-F16.gguf",
    )
    assert model.label == target.repo


def test_resolve_an_mlx_model_without_its_optional_files(fake_download):
    target = store.catalog_target("9B", 4, "mlx")
    fake_download(target.repo, {"config.json": 1, "model.safetensors": 2})
    model = resolve_target(target, offline=True)
    assert model.backend == "mlx" and model.mmproj is None and (model.path / "config.json").exists()


def test_resolve_offline_with_files_missing_says_they_are_not_cached(fake_download):
    target = store.catalog_target("9B", 4, "llama.cpp")
    fake_download(target.repo, {"mmproj-F16.gguf": 3})
    with pytest.raises(ModelUnavailableError) as caught:
        resolve_target(target, offline=True)
    error = caught.value
    assert "Qwen3.5-9B-UD-Q4_K_XL.gguf" in error.message and "offline mode forbids" in error.message
    assert target.pull_command() in (error.hint or "")
    with pytest.raises(ModelUnavailableError) as caught:
        resolve_target(target, offline=False)  # online, the repo itself lacks the file
    assert "has no file matching Qwen3.5-9B-UD-Q4_K_XL.gguf" in caught.value.message


def test_a_cache_miss_names_the_files_for_scan_and_the_network_for_pull(fake_download):
    from huggingface_hub.errors import LocalEntryNotFoundError

    target = store.catalog_target("0.8B", 4, "llama.cpp")
    fake_download(target.repo, error=LocalEntryNotFoundError("not cached"))
    with pytest.raises(ModelUnavailableError) as caught:
        hub.download(target.repo, target.patterns, offline=True, needed=target)
    assert caught.value.one_line().count("\n") == 0
    assert "offline" in caught.value.message and ".gguf" in caught.value.message
    with pytest.raises(ModelUnavailableError) as caught:
        hub.download(target.repo, target.patterns, offline=False, needed=target)
    assert "could not be reached" in caught.value.message
    with pytest.raises(ModelUnavailableError) as caught:
        hub.download(target.repo, target.patterns)  # `models pull`: no model being resolved
    assert "can't reach the Hugging Face hub" in caught.value.message


def test_scan_and_pull_map_a_full_disk_the_same_way(fake_download):
    import errno

    target = Target("x/y", ("*.gguf",), "llama.cpp")
    fake_download("x/y", error=OSError(errno.ENOSPC, "No space left on device"))
    for needed in (target, None):
        with pytest.raises(OutputError) as caught:
            hub.download("x/y", target.patterns, needed=needed)
        assert "disk" in caught.value.message and caught.value.exit_code == ExitCode.OUTPUT_ERROR
