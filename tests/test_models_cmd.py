"""`qwenocr models` against a Hugging Face cache built in a temp dir (tests/support/fake_hub.py).

The commands run as real subprocesses with HF_HUB_CACHE pointing at the fake cache and
HF_HUB_OFFLINE=1. `pull` can't reach the hub from a test: its pieces (file selection,
the size check, the re-download of a wrong file, error mapping) are tested in-process
with the hub calls replaced by fakes that write into the fake cache.
"""

from __future__ import annotations

import errno
import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwenocr import store
from qwenocr.errors import ExitCode, ModelUnavailableError, UsageError
from qwenocr.store import files as store_files
from qwenocr.store import hub as store_hub
from qwenocr.store import pulling
from tests.support import fake_hub
from tests.support.fake_hub import BF16, MMPROJ, Q4, Q4_K_M, Q8

GGUF_REPO = "unsloth/Qwen3.5-9B-GGUF"
MLX_REPO = "mlx-community/Qwen3.5-9B-mxfp4"
SPLIT_REPO = "unsloth/Qwen3.5-122B-A10B-GGUF"


def qwenocr_command():
    script = Path(sys.executable).with_name("qwenocr")
    return [str(script)] if script.exists() else [sys.executable, "-m", "qwenocr"]


@pytest.fixture
def hub(tmp_path):
    cache = tmp_path / "hub"
    snapshots = fake_hub.standard_cache(cache)
    return cache, snapshots


def run(cache: Path, *args, stdin=subprocess.DEVNULL, env_extra=None, timeout=60):
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    env.update({"HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "hf-home"), "HF_HUB_OFFLINE": "1"})
    env.update(env_extra or {})
    return subprocess.run(
        qwenocr_command() + ["models", *args], capture_output=True, text=True, timeout=timeout, stdin=stdin, env=env
    )


def rows(data, repo=None, **match):
    return [
        m for m in data["models"] if (repo is None or m["repo"] == repo) and all(m[k] == v for k, v in match.items())
    ]


# --- list -----------------------------------------------------------------------------------


def test_list_json_shows_what_is_cached_and_its_size(hub):
    cache, snapshots = hub
    done = run(cache, "list", "--all", "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    data = json.loads(done.stdout)
    assert data["cache_dir"] == str(cache.resolve())
    assert set(data["backends"]) == {"mlx", "llama.cpp"}
    # Every variant x precision x engine with a known hub repo: none holds an MLX 4-bit
    # with its vision tower for 27B and up, nor an MLX bf16 of 397B (FACTS §9; doctor
    # offers `models convert` there).
    assert len(data["models"]) == 8 * 3 * 2 - 5

    (q4,) = rows(data, variant="9B", backend="llama.cpp", bits=4)
    assert q4["status"] == "cached" and q4["quant"] == "Q4_K_XL"
    assert q4["size_on_disk"] == Q4 + MMPROJ
    assert q4["paths"] == [
        str(snapshots["gguf"] / "Qwen3.5-9B-UD-Q4_K_XL.gguf"),
        str(snapshots["gguf"] / "mmproj-F16.gguf"),
    ]
    (q8,) = rows(data, variant="9B", backend="llama.cpp", bits=8)
    assert q8["status"] == "cached" and q8["size_on_disk"] == Q8 + MMPROJ
    # Only the projector every precision shares is there: BF16 is not cached.
    (bf16,) = rows(data, variant="9B", backend="llama.cpp", bits=16)
    assert bf16["status"] == "absent" and bf16["size_on_disk"] == 0

    (mlx,) = rows(data, variant="9B", backend="mlx", bits=4)
    assert mlx["status"] == "cached" and mlx["quant"] == "MXFP4"
    assert mlx["size_on_disk"] == 3_100 + 61_000 + 3_000_000 + 2_100_000 + 1_100_000 + 7_000
    assert mlx["paths"] == [str(snapshots["mlx"])]

    (split,) = rows(data, variant="122B-A10B", backend="llama.cpp", bits=4)
    assert split["status"] == "partial"
    assert split["missing"] == ["UD-Q4_K_XL/Qwen3.5-122B-A10B-UD-Q4_K_XL-00003-of-00003.gguf"]
    assert split["paths"] == []

    assert all(m["status"] == "absent" for m in rows(data, variant="27B"))
    # The Q4_K_M no catalog row names is reported, not hidden.
    (other,) = data["other"]
    assert other["repo"] == GGUF_REPO
    assert other["files"] == [{"path": "Qwen3.5-9B-Q4_K_M.gguf", "size": Q4_K_M}]


def test_list_table_defaults_to_one_engine_and_shows_sizes(hub):
    cache, _ = hub
    done = run(cache, "list", "--backend", "llama.cpp")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    q4 = next(line for line in lines if " 9B " in line and "Q4_K_XL" in line)
    assert store.human_size(Q4 + MMPROJ) in q4 and GGUF_REPO in q4
    q8 = next(line for line in lines if " 9B " in line and "Q8_0" in line)
    assert store.human_size(Q8 + MMPROJ) in q8
    assert "mlx-community" not in done.stdout  # one engine unless --all
    assert "partial" in next(line for line in lines if "122B-A10B" in line and "Q4_K_XL" in line)
    assert "Other Qwen 3.5 files" in done.stdout and "Qwen3.5-9B-Q4_K_M.gguf" in done.stdout
    assert str(cache.resolve()) in done.stdout


def test_list_with_no_cache_folder_is_empty_not_an_error(tmp_path):
    done = run(tmp_path / "nothing-here", "list", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert all(m["status"] == "absent" for m in data["models"])


def test_list_reports_interrupted_downloads_and_sizes_the_hub_disagrees_with(hub):
    cache, snapshots = hub
    fake_hub.add_incomplete(cache, GGUF_REPO, 1_234_567)
    # The hub listing huggingface_hub cached says the Q8_0 is bigger than what is on disk.
    fake_hub.add_tree(
        cache,
        GGUF_REPO,
        "a" * 40,
        {
            "Qwen3.5-9B-UD-Q4_K_XL.gguf": Q4,
            "Qwen3.5-9B-Q8_0.gguf": Q8 + 1,
            "mmproj-F16.gguf": MMPROJ,
            "Qwen3.5-9B-Q4_K_M.gguf": Q4_K_M,
            "Qwen3.5-9B-BF16.gguf": BF16,
        },
    )
    data = json.loads(run(cache, "list", "--json", "--backend", "llama.cpp").stdout)
    assert data["incomplete"] == [
        {
            "repo": GGUF_REPO,
            "path": str(cache.resolve() / "models--unsloth--Qwen3.5-9B-GGUF" / "blobs" / ("f" * 64 + ".incomplete")),
            "size": 1_234_567,
        }
    ]
    (q8,) = rows(data, variant="9B", bits=8)
    assert q8["status"] == "partial"
    assert q8["wrong_size"] == [f"Qwen3.5-9B-Q8_0.gguf: {Q8:,} bytes, the hub listing says {Q8 + 1:,}"]
    (q4,) = rows(data, variant="9B", bits=4)
    assert q4["status"] == "cached"
    done = run(cache, "path", "9B", "--quant", "Q8_0")
    assert done.returncode == ExitCode.MODEL_UNAVAILABLE
    assert "wrong size" in done.stderr


# --- path -----------------------------------------------------------------------------------


def test_path_prints_the_gguf_then_the_mmproj(hub):
    cache, snapshots = hub
    done = run(cache, "path", "9B", "--quant", "Q4_K_XL", "--backend", "llama.cpp")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    paths = done.stdout.splitlines()
    assert paths == [str(snapshots["gguf"] / "Qwen3.5-9B-UD-Q4_K_XL.gguf"), str(snapshots["gguf"] / "mmproj-F16.gguf")]
    assert [Path(p).stat().st_size for p in paths] == [Q4, MMPROJ]


def test_path_of_an_mlx_model_is_its_folder(hub):
    cache, snapshots = hub
    done = run(cache, "path", "9b", "--backend", "mlx", "--quant", "mxfp4")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(snapshots["mlx"])]
    assert (Path(done.stdout.strip()) / "config.json").exists()


def test_path_of_a_split_model_is_its_first_shard(hub):
    cache, snapshots = hub
    fake_hub.add_snapshot(
        cache, SPLIT_REPO, {"UD-Q4_K_XL/Qwen3.5-122B-A10B-UD-Q4_K_XL-00003-of-00003.gguf": 4_000_003}, revision="c" * 40
    )
    done = run(cache, "path", "122B", "--quant", "Q4_K_XL")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        str(snapshots["split"] / "UD-Q4_K_XL" / "Qwen3.5-122B-A10B-UD-Q4_K_XL-00001-of-00003.gguf"),
        str(snapshots["split"] / "mmproj-F16.gguf"),
    ]


def test_path_without_quant_is_what_the_plan_picks(hub):
    from qwenocr.fit.hardware import detect
    from qwenocr.fit.plan import make_plan

    cache, _ = hub
    plan = make_plan(detect(), variant="9B", backend="llama.cpp")
    done = run(cache, "path", "9B", "--backend", "llama.cpp")
    if plan.bits in (4, 8):  # the fake cache holds those two
        assert done.returncode == 0, done.stderr
        assert Path(done.stdout.splitlines()[0]).name == plan.source.model
    else:
        assert done.returncode == ExitCode.MODEL_UNAVAILABLE


def test_path_of_a_model_not_cached_exits_7_with_one_line(hub):
    cache, _ = hub
    done = run(cache, "path", "27B", "--quant", "Q8_0", "--backend", "llama.cpp")
    assert done.returncode == ExitCode.MODEL_UNAVAILABLE
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert "27B Q8_0 (llama.cpp) is not in the Hugging Face cache" in done.stderr
    assert "qwenocr models pull 27B --quant Q8_0 --backend llama.cpp" in done.stderr


def test_path_of_a_partial_split_model_names_the_missing_shard(hub):
    cache, _ = hub
    done = run(cache, "path", "122B-A10B", "--quant", "4bit", "--backend", "llama.cpp")
    assert done.returncode == ExitCode.MODEL_UNAVAILABLE
    assert done.stdout == ""
    assert "only partly" in done.stderr and "00003-of-00003.gguf" in done.stderr


def test_path_of_a_repo_with_include(hub):
    cache, snapshots = hub
    done = run(cache, "path", "--repo", GGUF_REPO, "--include", "*Q4_K_M.gguf", "--include", "mmproj-*")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        str(snapshots["gguf"] / "Qwen3.5-9B-Q4_K_M.gguf"),
        str(snapshots["gguf"] / "mmproj-F16.gguf"),
    ]
    done = run(cache, "path", "--repo", "someone/Qwen3.5-9B-Other-GGUF")
    assert done.returncode == ExitCode.MODEL_UNAVAILABLE


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "name a model"),
        (("9B", "--repo", GGUF_REPO), "not both"),
        (("9B", "--include", "*.gguf"), "--include picks files of a --repo"),
        (("--repo", GGUF_REPO, "--quant", "Q8_0"), "--quant applies to a VARIANT"),
        (("--repo", "not-a-repo-id"), "not a Hugging Face repo id"),
        (("12B",), "unknown variant '12B'"),
        (("9B", "--quant", "Q5_K_S"), "unknown quant"),
        (("9B", "--quant", "MXFP4", "--backend", "llama.cpp"), "MXFP4 is for mlx"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(hub, args, message):
    cache, _ = hub
    done = run(cache, "path", *args)
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert message in done.stderr
    assert done.stderr.startswith("qwenocr: error: ") and len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == ""


def test_scan_settings_in_the_environment_do_not_break_a_repo(hub):
    # QWENOCR_QUANT is meant for scan; `models path --repo` ignores it instead of failing.
    cache, snapshots = hub
    done = run(cache, "path", "--repo", MLX_REPO, env_extra={"QWENOCR_QUANT": "Q8_0", "QWENOCR_BACKEND": "llama.cpp"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(snapshots["mlx"])]


# --- pull -----------------------------------------------------------------------------------


def test_pull_offline_fails_with_7_naming_the_files(hub):
    cache, _ = hub
    done = run(cache, "pull", "27B", "--quant", "Q4_K_XL", "--backend", "llama.cpp", "--offline")
    assert done.returncode == ExitCode.MODEL_UNAVAILABLE
    assert done.stdout == ""
    error = [line for line in done.stderr.splitlines() if line.startswith("qwenocr: error:")]
    assert len(error) == 1
    assert "Qwen3.5-27B-UD-Q4_K_XL.gguf" in error[0] and "mmproj-F16.gguf" in error[0]
    assert "offline" in error[0]


def test_pull_offline_under_hf_hub_offline_without_the_flag(hub):
    cache, _ = hub  # run() sets HF_HUB_OFFLINE=1
    done = run(cache, "pull", "--repo", "unsloth/Qwen3.5-4B-GGUF", "--include", "*Q8_0.gguf")
    assert done.returncode == ExitCode.MODEL_UNAVAILABLE
    assert "*Q8_0.gguf" in done.stderr


def test_pull_offline_of_a_cached_model_succeeds_and_prints_its_paths(hub):
    cache, snapshots = hub
    done = run(cache, "pull", "9B", "--quant", "Q8_0", "--backend", "llama.cpp", "--offline")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        str(snapshots["gguf"] / "Qwen3.5-9B-Q8_0.gguf"),
        str(snapshots["gguf"] / "mmproj-F16.gguf"),
    ]
    assert "in the cache" in done.stderr


# --- rm -------------------------------------------------------------------------------------


def test_rm_without_yes_and_without_a_terminal_refuses(hub):
    cache, snapshots = hub
    done = run(cache, "rm", "9B", "--quant", "Q8_0", "--backend", "llama.cpp")
    assert done.returncode == ExitCode.USAGE
    assert "Qwen3.5-9B-Q8_0.gguf" in done.stderr and "--yes" in done.stderr
    assert (snapshots["gguf"] / "Qwen3.5-9B-Q8_0.gguf").exists()
    assert done.stdout == ""


def test_rm_yes_removes_one_precision_and_keeps_the_shared_projector(hub):
    cache, snapshots = hub
    blob = (snapshots["gguf"] / "Qwen3.5-9B-Q8_0.gguf").resolve()
    done = run(cache, "rm", "9B", "--quant", "Q8_0", "--backend", "llama.cpp", "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert f"freed {store.human_size(Q8)}" in done.stderr
    assert not (snapshots["gguf"] / "Qwen3.5-9B-Q8_0.gguf").exists() and not blob.exists()
    assert (snapshots["gguf"] / "mmproj-F16.gguf").exists()  # 9B Q4_K_XL still needs it
    data = json.loads(run(cache, "list", "--json", "--backend", "llama.cpp").stdout)
    assert rows(data, variant="9B", bits=8)[0]["status"] == "absent"
    assert rows(data, variant="9B", bits=4)[0]["status"] == "cached"
    assert run(cache, "path", "9B", "--quant", "Q4_K_XL", "--backend", "llama.cpp").returncode == 0


def test_rm_variant_removes_every_cached_precision_of_both_engines(hub):
    cache, snapshots = hub
    done = run(cache, "rm", "9B", "--yes", "--verbose")
    assert done.returncode == 0, done.stderr
    for name in ("Qwen3.5-9B-UD-Q4_K_XL.gguf", "Qwen3.5-9B-Q8_0.gguf", "mmproj-F16.gguf"):
        assert name in done.stderr
        assert not (snapshots["gguf"] / name).exists()
    # The MLX repo held nothing else: it goes entirely.
    assert not fake_hub.repo_folder(cache, MLX_REPO).exists()
    # The Q4_K_M is no catalog model's: it stays, and so does its repo.
    assert (snapshots["gguf"] / "Qwen3.5-9B-Q4_K_M.gguf").exists()
    assert (fake_hub.repo_folder(cache, GGUF_REPO) / "refs" / "main").exists()


def test_rm_repo_removes_the_whole_repo(hub):
    cache, _ = hub
    done = run(cache, "rm", "--repo", SPLIT_REPO, "--yes")
    assert done.returncode == 0, done.stderr
    assert not fake_hub.repo_folder(cache, SPLIT_REPO).exists()
    data = json.loads(run(cache, "list", "--json", "--backend", "llama.cpp").stdout)
    assert rows(data, variant="122B-A10B", bits=4)[0]["status"] == "absent"


def test_rm_of_the_last_files_of_a_revision_drops_the_revision(hub):
    cache, snapshots = hub
    fake_hub.add_snapshot(cache, GGUF_REPO, {"Qwen3.5-9B-Q4_K_M.gguf": Q4_K_M + 7}, revision="d" * 40, ref=None)
    done = run(cache, "rm", "--repo", GGUF_REPO, "--include", "*Q4_K_M.gguf", "--yes")
    assert done.returncode == 0, done.stderr
    assert not (fake_hub.repo_folder(cache, GGUF_REPO) / "snapshots" / ("d" * 40)).exists()
    assert not (snapshots["gguf"] / "Qwen3.5-9B-Q4_K_M.gguf").exists()
    assert (snapshots["gguf"] / "Qwen3.5-9B-Q8_0.gguf").exists()


def test_rm_of_something_not_cached_is_not_an_error(hub):
    cache, _ = hub
    done = run(cache, "rm", "27B", "--yes")
    assert done.returncode == 0, done.stderr
    assert "nothing to remove" in done.stderr


def _link_outside(snapshot: Path, name: str, outside: Path) -> None:
    """Replace the snapshot entry `name` by a symlink to `outside`, a file beyond the cache."""
    outside.write_bytes(b"not the cache's: keep me")
    (snapshot / name).unlink()
    (snapshot / name).symlink_to(outside)


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
@pytest.mark.parametrize(
    "args",
    [
        ("9B", "--quant", "Q8_0", "--backend", "llama.cpp"),
        ("--repo", GGUF_REPO, "--include", "*Q8_0.gguf"),
    ],
)
def test_rm_never_deletes_the_target_of_a_link_out_of_the_cache(hub, tmp_path, args):
    # issue 12 defect 2: huggingface_hub's strategies delete a link's target as its "blob".
    cache, snapshots = hub
    outside = tmp_path / "elsewhere" / "precious.gguf"
    outside.parent.mkdir()
    _link_outside(snapshots["gguf"], "Qwen3.5-9B-Q8_0.gguf", outside)
    done = run(cache, "rm", *args, "--yes")
    assert done.returncode == 0, done.stderr
    assert outside.read_bytes() == b"not the cache's: keep me"
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(outside) in warnings[0] and "Qwen3.5-9B-Q8_0.gguf" in warnings[0]
    assert (snapshots["gguf"] / "Qwen3.5-9B-UD-Q4_K_XL.gguf").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_rm_of_a_whole_repo_with_a_link_out_of_the_cache_keeps_its_target(hub, tmp_path):
    cache, snapshots = hub
    outside = tmp_path / "precious.gguf"
    _link_outside(snapshots["split"], "mmproj-F16.gguf", outside)
    done = run(cache, "rm", "--repo", SPLIT_REPO, "--yes")
    assert done.returncode == 0, done.stderr
    assert outside.read_bytes() == b"not the cache's: keep me"
    assert not fake_hub.repo_folder(cache, SPLIT_REPO).exists()


def _rm_on_a_terminal(cache: Path, answer: bytes, *args):
    """Run `models rm` with stdin on a pseudo-terminal and type `answer` at the prompt."""
    master, slave = pty.openpty()
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "hf-home"), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        qwenocr_command() + ["models", "rm", *args],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(slave)
    try:
        time.sleep(0.2)
        os.write(master, answer)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        os.close(master)
    return proc.returncode, stdout.decode(), stderr.decode()


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_rm_asks_on_a_terminal(hub):
    cache, snapshots = hub
    code, out, err = _rm_on_a_terminal(cache, b"n\n", "9B", "--quant", "Q8_0", "--backend", "llama.cpp")
    assert code == 0, err
    assert "Remove 1 file(s)?" in err and "nothing removed" in err
    assert (snapshots["gguf"] / "Qwen3.5-9B-Q8_0.gguf").exists()
    code, out, err = _rm_on_a_terminal(cache, b"y\n", "9B", "--quant", "Q8_0", "--backend", "llama.cpp")
    assert code == 0, err
    assert "removed 1 file(s)" in err and out == ""
    assert not (snapshots["gguf"] / "Qwen3.5-9B-Q8_0.gguf").exists()


# --- the pieces of pull, in-process ----------------------------------------------------------


def test_select_files_by_pattern_and_what_is_missing():
    target = store.catalog_target("9B", 4, "llama.cpp")
    remote = {"Qwen3.5-9B-UD-Q4_K_XL.gguf": Q4, "Qwen3.5-9B-Q8_0.gguf": Q8, "mmproj-F16.gguf": MMPROJ, "README.md": 10}
    selected, missing = pulling.select_files(remote, target)
    assert selected == {"Qwen3.5-9B-UD-Q4_K_XL.gguf": Q4, "mmproj-F16.gguf": MMPROJ}
    assert missing == []
    selected, missing = pulling.select_files({"mmproj-F16.gguf": MMPROJ}, target)
    assert missing == ["Qwen3.5-9B-UD-Q4_K_XL.gguf"]

    split = store.catalog_target("122B-A10B", 4, "llama.cpp")
    shards = {f"UD-Q4_K_XL/Qwen3.5-122B-A10B-UD-Q4_K_XL-0000{i}-of-00003.gguf": 10 + i for i in (1, 2, 3)}
    selected, missing = pulling.select_files({**shards, "mmproj-F16.gguf": 1, "Q8_0/x-00001-of-00002.gguf": 5}, split)
    assert sorted(selected) == sorted(shards) + ["mmproj-F16.gguf"] and missing == []

    # MLX repos: config and weights are required, tokenizer extras are taken when present.
    mlx = store.catalog_target("9B", 4, "mlx")
    selected, missing = pulling.select_files({"config.json": 1, "model.safetensors": 2, "README.md": 3}, mlx)
    assert selected == {"config.json": 1, "model.safetensors": 2} and missing == []
    _, missing = pulling.select_files({"config.json": 1}, mlx)
    assert missing == ["*.safetensors"]


def test_verify_sizes(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.gguf").write_bytes(b"x" * 5)
    assert pulling.verify_sizes(tmp_path, {"a.gguf": 10, "sub/b.gguf": 5}) == []
    problems = pulling.verify_sizes(tmp_path, {"a.gguf": 11, "sub/b.gguf": None, "c.gguf": 3})
    assert [(p.path, p.expected, p.actual) for p in problems] == [("a.gguf", 11, 10), ("c.gguf", 3, None)]
    assert problems[0].describe() == "a.gguf is 10 bytes, the hub says 11"
    assert problems[1].describe() == "c.gguf is missing"


def test_gguf_models_counts_a_split_model_once():
    names = [
        "Q4_K_M/m-Q4_K_M-00001-of-00002.gguf",
        "Q4_K_M/m-Q4_K_M-00002-of-00002.gguf",
        "m-Q8_0.gguf",
        "mmproj-F16.gguf",
        "README.md",
    ]
    assert store_files.gguf_models(names) == ["Q4_K_M/m-Q4_K_M.gguf", "m-Q8_0.gguf"]


class FakeHub:
    """`remote_files` and the downloads of huggingface_hub, writing into a fake cache."""

    def __init__(self, cache: Path, repo: str, files, revision="e" * 40, wrong_once=(), wrong_always=()):
        self.cache, self.repo, self.files, self.revision = cache, repo, dict(files), revision
        self.wrong_once, self.wrong_always = set(wrong_once), set(wrong_always)
        self.downloads, self.forced = [], []

    def remote_files(self, repo, revision=None):
        assert repo == self.repo
        return self.revision, dict(self.files)

    def _size(self, path):
        return self.files[path] + (1 if path in self.wrong_once | self.wrong_always else 0)

    def snapshot_download(self, repo, allow_patterns=None, cache_dir=None, **kwargs):
        assert Path(cache_dir) == self.cache
        chosen = {p: self._size(p) for p in allow_patterns}
        self.downloads.append(sorted(chosen))
        return str(fake_hub.add_snapshot(self.cache, repo, chosen, revision=self.revision))

    def hf_hub_download(self, repo, filename, revision=None, force_download=False, cache_dir=None, **kwargs):
        self.forced.append(filename)
        self.wrong_once.discard(filename)
        fake_hub.add_snapshot(self.cache, repo, {filename: self._size(filename)}, revision=revision)


@pytest.fixture
def fake_pull(tmp_path, monkeypatch):
    import huggingface_hub

    def install(repo, files, **kwargs):
        cache = tmp_path / "hub"
        cache.mkdir(exist_ok=True)
        hub = FakeHub(cache, repo, files, **kwargs)
        monkeypatch.setattr(store_hub, "remote_files", hub.remote_files)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub.hf_hub_download)
        return hub, store.Cache.scan(cache)

    return install


def test_pull_downloads_the_selected_files_and_checks_their_sizes(fake_pull):
    hub, cache = fake_pull(
        GGUF_REPO, {"Qwen3.5-9B-UD-Q4_K_XL.gguf": Q4, "Qwen3.5-9B-Q8_0.gguf": Q8, "mmproj-F16.gguf": MMPROJ}
    )
    said = []
    result = store.pull(store.catalog_target("9B", 4, "llama.cpp"), announce=said.append, quiet=True, cache=cache)
    assert hub.downloads == [["Qwen3.5-9B-UD-Q4_K_XL.gguf", "mmproj-F16.gguf"]] and hub.forced == []
    assert result.verified and result.revision == "e" * 40 and not result.already
    assert result.size == Q4 + MMPROJ
    assert [p.name for p in result.load_paths()] == ["Qwen3.5-9B-UD-Q4_K_XL.gguf", "mmproj-F16.gguf"]
    assert any("resumes" in line for line in said)
    # Everything is there now: the same pull says so.
    again = store.pull(store.catalog_target("9B", 4, "llama.cpp"), quiet=True, cache=store.Cache.scan(cache.directory))
    assert again.already


def test_pull_fetches_a_file_of_the_wrong_size_again_once(fake_pull):
    hub, cache = fake_pull(
        GGUF_REPO, {"Qwen3.5-9B-Q8_0.gguf": Q8, "mmproj-F16.gguf": MMPROJ}, wrong_once={"Qwen3.5-9B-Q8_0.gguf"}
    )
    said = []
    result = store.pull(store.catalog_target("9B", 8, "llama.cpp"), announce=said.append, quiet=True, cache=cache)
    assert hub.forced == ["Qwen3.5-9B-Q8_0.gguf"]
    assert result.redownloaded == ("Qwen3.5-9B-Q8_0.gguf",)
    assert any("size check failed" in line for line in said)


def test_pull_fails_when_a_file_stays_the_wrong_size(fake_pull):
    hub, cache = fake_pull(
        GGUF_REPO, {"Qwen3.5-9B-Q8_0.gguf": Q8, "mmproj-F16.gguf": MMPROJ}, wrong_always={"Qwen3.5-9B-Q8_0.gguf"}
    )
    with pytest.raises(ModelUnavailableError) as caught:
        store.pull(store.catalog_target("9B", 8, "llama.cpp"), quiet=True, cache=cache)
    assert f"Qwen3.5-9B-Q8_0.gguf is {Q8 + 1:,} bytes, the hub says {Q8:,}" in caught.value.message
    assert caught.value.exit_code == ExitCode.MODEL_UNAVAILABLE


def test_pull_names_the_files_the_repo_lacks(fake_pull):
    hub, cache = fake_pull(GGUF_REPO, {"Qwen3.5-9B-UD-Q4_K_XL.gguf": Q4, "mmproj-BF16.gguf": MMPROJ})
    with pytest.raises(ModelUnavailableError) as caught:
        store.pull(store.catalog_target("9B", 4, "llama.cpp"), quiet=True, cache=cache)
    assert "has no file matching mmproj-F16.gguf" in caught.value.message
    assert hub.downloads == []


def test_pull_of_a_whole_gguf_repo_asks_which_model(fake_pull):
    hub, cache = fake_pull(
        "bartowski/Qwen_Qwen3.5-9B-GGUF",
        {"Qwen_Qwen3.5-9B-Q4_K_M.gguf": 1, "Qwen_Qwen3.5-9B-Q8_0.gguf": 2, "mmproj-Qwen_Qwen3.5-9B-f16.gguf": 3},
    )
    with pytest.raises(UsageError) as caught:
        store.pull(store.repo_target("bartowski/Qwen_Qwen3.5-9B-GGUF"), quiet=True, cache=cache)
    assert "--include" in caught.value.one_line()
    result = store.pull(
        store.repo_target("bartowski/Qwen_Qwen3.5-9B-GGUF", ["*Q4_K_M.gguf", "mmproj-*"]), quiet=True, cache=cache
    )
    assert [p.name for p in result.load_paths()] == ["Qwen_Qwen3.5-9B-Q4_K_M.gguf", "mmproj-Qwen_Qwen3.5-9B-f16.gguf"]


def test_hub_errors_become_exit_7_with_a_hint():
    import httpx2
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    from huggingface_hub.utils import OfflineModeIsEnabled

    response = httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co/api/models/x/y"))
    gated = store_hub.hub_error(GatedRepoError("gated", response=response), "x/y")
    assert "gated" in gated.message and "hf auth login" in gated.hint
    missing = store_hub.hub_error(RepositoryNotFoundError("nope", response=response), "x/y")
    assert "does not exist" in missing.message
    offline = store_hub.hub_error(OfflineModeIsEnabled("offline"), "x/y")
    assert "can't reach the Hugging Face hub" in offline.message
    server = store_hub.hub_error(HfHubHTTPError("503 Service Unavailable", response=response), "x/y")
    assert "refused or failed" in server.message
    assert all(e.exit_code == ExitCode.MODEL_UNAVAILABLE for e in (gated, missing, offline, server))
    full = store_hub.hub_error(OSError(errno.ENOSPC, "No space left on device"), "x/y")
    assert "disk" in full.message and full.exit_code == ExitCode.OUTPUT_ERROR


def test_load_paths_shapes(tmp_path):
    names = ["m-Q4_K_M.gguf", "mmproj-BF16.gguf", "mmproj-F16.gguf"]
    assert store_files.load_paths(tmp_path, names, None) == [
        tmp_path / "m-Q4_K_M.gguf",
        tmp_path / "mmproj-F16.gguf",
        tmp_path / "mmproj-BF16.gguf",
    ]
    assert store_files.load_paths(tmp_path, ["config.json", "model.safetensors"], None) == [tmp_path]
    assert store_files.load_paths(tmp_path, ["README.md"], None) == [tmp_path / "README.md"]


def test_models_help_offers_convert_and_the_registry_ignores_gone_folders(tmp_path):
    from qwenocr.store import registry

    done = subprocess.run([sys.executable, "-m", "qwenocr", "models", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "convert" in done.stdout
    # What `models convert` registers, `find_converted` finds; once the folder is gone, not.
    folder = tmp_path / "Qwen3.5-27B-mxfp4"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    registry.register(folder, family="3.5", variant="27B", quant="mxfp4", source="Qwen/Qwen3.5-27B")
    assert registry.find_converted("3.5", "27b", "MXFP4") == folder.resolve()
    assert registry.find_converted("3.6", "27B", "mxfp4") is None
    assert [e.variant for e in registry.registered()] == ["27B"]
    (folder / "config.json").unlink()
    folder.rmdir()
    assert registry.find_converted("3.5", "27B", "mxfp4") is None and registry.registered() == []
    registry.registry_path().write_text("not json")  # a damaged registry reads as empty
    assert registry.registered() == []
