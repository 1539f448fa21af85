"""Candidate sources as data (qwenocr/fit/sources.py), judged from hub facts, and what the
what-if Macs are offered from the data alone (no hub)."""

from __future__ import annotations

import json
import re

import pytest

from qwenocr.errors import ExitCode
from qwenocr.fit import catalog, sources
from qwenocr.fit.hardware import hardware_profile
from qwenocr.fit.plan import make_plan
from qwenocr.fit.sources import RepoFacts, SourceFacts
from tests.support.clirun import run_cli

# The MLX repos FACTS §9 lists (November 2026), and the other publishers it names.
FACTS_MLX = (
    {f"mlx-community/Qwen3.5-{s}-mxfp4" for s in ("0.8B", "2B", "4B", "9B")}
    | {f"mlx-community/Qwen3.5-{v}-8bit" for v in catalog.variant_names()}
    | {f"mlx-community/Qwen3.5-{v}-bf16" for v in catalog.variant_names() if v != "397B-A17B"}
    | {"OsaurusAI/Qwen3.6-27B-MXFP4"}
)
FACTS_GGUF = {f"unsloth/Qwen3.5-{v}-GGUF" for v in catalog.variant_names()} | {"bartowski/Qwen_Qwen3.5-9B-GGUF"}


def test_every_candidate_says_where_the_fact_came_from():
    everything = sources.all_candidates()
    assert everything
    for c in everything:
        assert re.search(r"FACTS §[139]|unverified listing", c.note), c
        assert c.publisher and c.repo.count("/") == 1
        assert c.variant in sources.family_variants(c.family)


def test_no_pattern_built_repo_for_what_facts_does_not_list():
    repos = {c.repo for c in sources.all_candidates()}
    assert repos == FACTS_MLX | FACTS_GGUF
    for big in ("27B", "35B-A3B", "122B-A10B", "397B-A17B"):
        assert sources.candidates("3.5", big, "mlx", 4) == ()  # no vision-keeping MXFP4 repo is known
    assert sources.candidates("3.5", "397B-A17B", "mlx", 16) == ()  # -bf16 listed up to 122B only
    # Qwen3.6: only OsaurusAI's 27B MXFP4 is known; nothing is invented for the rest.
    assert [c.repo for c in sources.candidates("3.6", "27B", "mlx", 4)] == ["OsaurusAI/Qwen3.6-27B-MXFP4"]
    assert all(not sources.candidates("3.6", v, "llama.cpp", b) for v in ("27B", "35B-A3B") for b in catalog.BITS)


def test_mlx_candidates_declare_the_planned_quantization():
    for c in sources.all_candidates():
        if c.backend == "mlx":
            assert c.quant_mode == {4: "mxfp4", 8: "affine", 16: None}[c.bits]
            assert c.mmproj is None
        else:
            assert c.mmproj and c.mmproj in c.files and c.quant_mode is None


def test_split_ggufs_list_every_shard_and_download_as_one_glob():
    (c,) = sources.candidates("3.5", "397B-A17B", "llama.cpp", 8)
    assert len(c.model_files) == 10
    assert c.model_files[0] == "Q8_0/Qwen3.5-397B-A17B-Q8_0-00001-of-00010.gguf"
    assert c.model_files[-1] == "Q8_0/Qwen3.5-397B-A17B-Q8_0-00010-of-00010.gguf"
    assert c.download_patterns == ["Q8_0/Qwen3.5-397B-A17B-Q8_0-*.gguf", "mmproj-F16.gguf"]
    assert c.listed_gb == 421.5  # FACTS §9: the real Q8_0 size, not the table's 512


def test_397b_mlx_4bit_offers_convert_with_download_and_disk():
    s = sources.model_source("397B-A17B", 4, "mlx")
    assert s.kind == "convert" and s.repo == "Qwen/Qwen3.5-397B-A17B"
    assert s.command == "qwenocr models convert Qwen/Qwen3.5-397B-A17B --quant mxfp4"
    v = catalog.get_variant("397B-A17B")
    assert s.download_gb == pytest.approx(v.weights_gb(16) + v.vision_gb, abs=0.1)
    assert s.disk_gb == pytest.approx(s.download_gb + v.weights_gb(4), abs=0.1)
    data = s.to_dict()
    assert data["kind"] == "convert" and data["verified"] is None and data["size_bytes"] == int(214e9)


def _mlx_facts(repo, *, vision=True, mode="mxfp4", bits=4, files=None):
    files = files if files is not None else {"config.json": 2_000, "model.safetensors": 5_000_000_000}
    return RepoFacts(repo, revision="a" * 40, files=files, vision=vision, quant_mode=mode, quant_bits=bits)


@pytest.mark.parametrize(
    "facts, verdict, reason",
    [
        (None, None, "not verified"),
        (RepoFacts("r", error="hub unreachable"), None, "not verified (hub unreachable)"),
        (RepoFacts("r", exists=False), False, "repo not found"),
        (_mlx_facts("r"), True, "verified"),
        (_mlx_facts("r", vision=False), False, "no vision tower"),
        (_mlx_facts("r", mode="affine"), False, "quantization is affine, not mxfp4"),
        (_mlx_facts("r", files={"config.json": 10}), False, "no file matching *.safetensors"),
    ],
)
def test_judge_mlx_mxfp4(facts, verdict, reason):
    (c,) = sources.candidates("3.5", "9B", "mlx", 4)
    assert sources.judge(c, facts) == (verdict, reason)


def test_judge_gguf_needs_every_shard():
    (c,) = sources.candidates("3.5", "122B-A10B", "llama.cpp", 4)
    files = {name: 25_000_000_000 for name in c.files}
    assert sources.judge(c, RepoFacts(c.repo, files=files)) == (True, "verified")
    del files[c.model_files[2]]
    assert sources.judge(c, RepoFacts(c.repo, files=files)) == (False, f"no file matching {c.model_files[2]}")


def test_a_rejected_first_candidate_falls_through_to_the_second():
    unsloth, bartowski = sources.candidates("3.5", "9B", "llama.cpp", 4)
    facts = SourceFacts(
        repos={
            unsloth.repo: RepoFacts(unsloth.repo, exists=False),
            bartowski.repo: RepoFacts(
                bartowski.repo, files={bartowski.files[0]: 5_500_000_000, bartowski.files[1]: 900_000_000}
            ),
        },
        offline=False,
    )
    s = sources.resolve_source("3.5", catalog.get_variant("9B"), 4, "llama.cpp", facts)
    assert s.repo == bartowski.repo and s.verified is True and s.size_from == "hub"
    assert [r.to_dict() for r in s.rejected] == [{"repo": unsloth.repo, "reason": "repo not found"}]
    assert s.weights_bytes == 5_500_000_000 and s.mmproj_bytes == 900_000_000


def test_mlx_estimate_never_adds_the_vision_tower_twice():
    p = make_plan(hardware_profile("apple", memory_gb=16))
    assert (p.variant, p.quant) == ("9B", "MXFP4") and p.estimate is not None
    assert p.estimate.vision_gb == 0 and p.estimate.weights_gb == catalog.get_variant("9B").weights_gb(4)
    gguf = make_plan(hardware_profile("apple", memory_gb=16), backend="llama.cpp", variant="9B", quant="4bit")
    assert (
        gguf.estimate is not None and gguf.estimate.vision_gb == catalog.get_variant("9B").vision_gb
    )  # the mmproj is a file of its own


@pytest.mark.parametrize("memory", [16, 32, 36, 48, 64, 128, 192, 256, 512])
def test_what_if_macs_name_a_listed_source_or_a_convert_plan(memory):
    done = run_cli("doctor", "--json", "--platform", "apple", "--memory", memory)
    assert done.returncode == ExitCode.OK, done.stderr
    data = json.loads(done.stdout)
    choice = data["choice"]
    source = choice["source"]
    assert source["kind"] in ("hub", "convert")
    if source["kind"] == "hub":
        assert source["repo"] in FACTS_MLX and source["verified"] is None
        assert source["status"] == "not verified (offline)"
    else:
        assert source["command"] == f"qwenocr models convert Qwen/Qwen3.5-{choice['variant']} --quant mxfp4"
        assert data["alternative"]["backend"] == "llama.cpp"
        assert data["alternative"]["source"]["repo"] in FACTS_GGUF
    assert choice["rejected_sources"] == []
    for c in data["candidates"]:
        assert c["source"]["kind"] in ("hub", "convert", "none")
        assert c["source"]["repo"] in FACTS_MLX | {None, ""} or c["source"]["kind"] == "convert"
    if memory == 16:
        assert (choice["variant"], choice["quant"]) == ("9B", "MXFP4")  # as the seeds recommend
        assert source["repo"] == "mlx-community/Qwen3.5-9B-mxfp4"


def test_family_36_offers_only_its_two_models():
    p = make_plan(hardware_profile("apple", memory_gb=48), family="3.6")
    assert {c.variant for c in p.candidates} == {"27B", "35B-A3B"}
    assert p.family == "3.6"
    osaurus = next(c for c in p.candidates if c.variant == "27B" and c.bits == 4)
    assert osaurus.source.repo == "OsaurusAI/Qwen3.6-27B-MXFP4" and osaurus.estimate.weights_gb == 14.0
    moe = next(c for c in p.candidates if c.variant == "35B-A3B" and c.bits == 4)
    assert moe.source.kind == "convert" and moe.source.repo == "Qwen/Qwen3.6-35B-A3B"


@pytest.mark.parametrize("command", ["doctor", "scan"])
def test_family_36_with_another_variant_is_a_usage_error(command, tmp_path):
    args = [command, "--family", "3.6", "--variant", "9B"]
    if command == "scan":
        image = tmp_path / "page.png"
        from tests.support.samples import page_image

        page_image(1).save(image)
        args.append(image)
    done = run_cli(*args)
    assert done.returncode == ExitCode.USAGE, done.stderr
    line = done.stderr.decode().strip()
    assert "27B" in line and "35B-A3B" in line and len(line.splitlines()) == 1


def test_family_from_the_environment(monkeypatch):
    done = run_cli("doctor", "--json", "--platform", "apple", "--memory", "48", env={"QWENOCR_FAMILY": "3.6"})
    assert done.returncode == ExitCode.OK, done.stderr
    data = json.loads(done.stdout)
    assert data["family"] == "3.6" and {c["variant"] for c in data["candidates"]} == {"27B", "35B-A3B"}
