"""Check candidate sources on the hub before anything is downloaded, and remember what was learnt.

For the model a plan picks, each candidate repo of fit/sources.py is asked, in order:
does it exist and hold the planned files (`HfApi.model_info(files_metadata=True)`: the
files, their sizes and the commit), and for MLX, do its weights include the vision tower
(`HfApi.get_safetensors_metadata`: weight names from the index and headers, no weights
downloaded) and does `config.json` (one small file, through `hf_hub_download`) declare
the planned quantization. The first candidate that passes is the choice; the others keep
their reason. If the pick changes because every candidate of it was rejected, the new
pick is checked the same way.

What the hub said is cached as JSON beside the Hugging Face cache,
`<HF_HUB_CACHE>/../qwenocr/sources.json` (by repo and commit), written atomically, so
that `doctor` and `scan --offline` reuse it. The hub is never asked when offline
(`--offline`, HF_HUB_OFFLINE=1), and never for longer than `DEADLINE_S` seconds in all:
past that, or when it cannot be reached, the rest stays "not verified" and the plan uses
the cache and the data. No network error escapes from here.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple

from qwenocr import atomicio
from qwenocr.fit import sources
from qwenocr.fit.sources import LocalModel, RepoFacts, SourceFacts
from qwenocr.store import files as model_files

if TYPE_CHECKING:
    from qwenocr.fit.hardware import Hardware
    from qwenocr.fit.plan import Plan

__all__ = ["DEADLINE_S", "check_repo", "facts_path", "gather", "load_cached", "save_facts", "verified_plan"]

# The most the hub may take, over all the checks of one command: `doctor` stays quick
# when the network is slow or absent.
DEADLINE_S = 4.0
CACHE_VERSION = 1
_MAX_ROUNDS = 6  # plan, check, re-plan: at most this many picks are checked


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, by huggingface_hub's rule (without importing it)."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.path.expandvars(os.environ[name])).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def facts_path() -> Path:
    """Where the hub facts are cached: beside the hub cache, `<HF_HUB_CACHE>/../qwenocr/sources.json`."""
    return hub_cache_dir().parent / "qwenocr" / "sources.json"


def _read_cache(path: Optional[Path] = None) -> Dict[str, Any]:
    path = path or facts_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"version": CACHE_VERSION, "repos": {}}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("repos"), dict):
        return {"version": CACHE_VERSION, "repos": {}}
    return data


def load_cached(path: Optional[Path] = None) -> Dict[str, RepoFacts]:
    """The latest cached facts of each repo (marked `from_cache`)."""
    out: Dict[str, RepoFacts] = {}
    for repo, entry in _read_cache(path)["repos"].items():
        try:
            latest = entry.get("latest") or ""
            out[repo] = RepoFacts.from_json(entry["revisions"][latest])
        except (KeyError, TypeError, ValueError, AttributeError):
            continue  # a damaged entry is ignored: the hub is asked again when it answers
    return out


def save_facts(learnt: List[RepoFacts], path: Optional[Path] = None) -> bool:
    """Merge what was learnt into the cache file, atomically; False when it can't be written."""
    usable = [f for f in learnt if not f.error]
    if not usable:
        return False
    path = path or facts_path()
    data = _read_cache(path)
    for facts in usable:
        entry = data["repos"].setdefault(facts.repo, {"revisions": {}})
        key = facts.revision or ""
        entry.setdefault("revisions", {})[key] = facts.to_json()
        entry["latest"] = key
        entry["checked_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomicio.write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError:
        return False  # a read-only cache: the facts are used for this run only
    return True


def local_models(family: str) -> Dict[Tuple[str, str, int], LocalModel]:
    """Models `qwenocr models convert` registered (MXFP4, 4-bit), by (family, variant, bits)."""
    from qwenocr.store.registry import find_converted

    found: Dict[Tuple[str, str, int], LocalModel] = {}
    for name in sources.family_variants(family):
        path = find_converted(family, name, "mxfp4")
        if path is not None:
            size = sum(p.stat().st_size for p in Path(path).glob(model_files.MLX_WEIGHTS)) or None
            found[(family, name, 4)] = LocalModel(str(path), size)
    return found


def gather(family: str, offline: bool) -> SourceFacts:
    """What is known without the network: the cached hub facts and the local models."""
    return SourceFacts(repos=load_cached(), local=local_models(family), offline=offline)


# --- asking the hub ------------------------------------------------------------------------


def _describe(error: BaseException) -> str:
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled

    if isinstance(error, GatedRepoError):
        return "gated: accept its licence and run `hf auth login`"
    if isinstance(error, OfflineModeIsEnabled):
        return "offline"
    return "hub unreachable"


def check_repo(repo: str, backend: str, known: Optional[RepoFacts] = None, timeout: float = DEADLINE_S) -> RepoFacts:
    """What the hub says of `repo` now. Never raises: a failure is `error` ("not verified")."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError

    api = HfApi()
    try:
        info = api.model_info(repo, files_metadata=True, timeout=timeout)
    except RepositoryNotFoundError:
        return RepoFacts(repo, exists=False)
    except Exception as error:  # noqa: BLE001 - any failure leaves the repo not verified, never a crash
        return RepoFacts(repo, error=_describe(error))
    sha = info.sha
    names = {s.rfilename: s.size for s in (info.siblings or [])}
    facts = RepoFacts(repo, exists=True, revision=sha, files=names)
    if backend != "mlx":
        return facts
    if known is not None and known.revision == sha and known.vision is not None and known.quant_mode is not None:
        # The same commit was checked before: its weight names and config can't have changed.
        return replace(facts, vision=known.vision, quant_mode=known.quant_mode, quant_bits=known.quant_bits)
    try:
        if "config.json" in names:
            path = hf_hub_download(repo, "config.json", revision=sha, etag_timeout=timeout)
            config = json.loads(Path(path).read_text(encoding="utf-8"))
            quantization = config.get("quantization") or config.get("quantization_config")
            bits = quantization.get("bits") if isinstance(quantization, dict) else None
            facts = replace(
                facts,
                quant_mode=model_files.quantization_mode(config) or "none",
                quant_bits=int(bits) if isinstance(bits, (int, float)) else None,
            )
        if any(n.endswith(".safetensors") for n in names):
            meta = api.get_safetensors_metadata(repo, revision=sha, timeout=timeout)
            weights = list(meta.weight_map)
            facts = replace(facts, vision=model_files.has_vision_weights(weights))
    except Exception as error:  # noqa: BLE001 - see above
        return replace(facts, error=_describe(error))
    return facts


def _in_time(work: Callable[[], RepoFacts], repo: str, seconds: float) -> RepoFacts:
    """`work()` in a daemon thread, for at most `seconds`: a hung connection can't hold
    `doctor` (or keep the process alive after it is done)."""
    box: List[RepoFacts] = []
    thread = threading.Thread(target=lambda: box.append(work()), name=f"qwenocr-verify {repo}", daemon=True)
    thread.start()
    thread.join(max(seconds, 0.0))
    return box[0] if box else RepoFacts(repo, error="the hub did not answer in time")


def _pick(plan: "Plan") -> Optional[Tuple[str, int, str]]:
    return None if plan.choice is None else (plan.choice.variant, plan.choice.bits, plan.choice.backend)


def _pick_candidates(plan: "Plan") -> List[sources.SourceCandidate]:
    choice = plan.choice
    if choice is None or choice.source.kind == "local":
        return []
    return list(sources.candidates(choice.family, choice.variant, choice.backend, choice.bits))


def verified_plan(
    hardware: "Hardware",
    *,
    offline: bool = False,
    deadline_s: float = DEADLINE_S,
    family: Optional[str] = None,
    **plan_options: Any,
) -> "Plan":
    """`make_plan` with what is known of the sources: cached facts and local models,
    and, unless offline, the hub's answers for the pick's candidates (re-planning when
    they reject the pick). The plan's `sources_note` says which."""
    from qwenocr.fit.plan import check_family, make_plan

    family = check_family(family)
    known = gather(family, offline)
    plan = make_plan(hardware, family=family, facts=known, **plan_options)
    if offline:
        return replace(plan, sources_note=_offline_note())
    repos: Dict[str, RepoFacts] = dict(known.repos)
    asked: Set[str] = set()
    learnt: List[RepoFacts] = []
    started = time.monotonic()
    unreachable: Optional[str] = None
    for _ in range(_MAX_ROUNDS):
        asked_now = False
        for c in _pick_candidates(plan):
            if c.repo in asked:
                if sources.judge(c, repos.get(c.repo))[0] is False:
                    continue
                break  # passed (or could not be judged): this candidate is the pick's source
            left = deadline_s - (time.monotonic() - started)
            if left <= 0:
                unreachable = f"the hub did not answer within {deadline_s:g} s"
                break
            asked.add(c.repo)
            asked_now = True
            previous = repos.get(c.repo)
            answer = _in_time(functools.partial(check_repo, c.repo, c.backend, previous, left), c.repo, left)
            if answer.error:
                unreachable = answer.error
                if previous is None:  # a failed check is no news: keep what the cache knew
                    repos[c.repo] = answer
                break
            repos[c.repo] = answer
            learnt.append(answer)
            if sources.judge(c, answer)[0] is not False:
                break
        if not asked_now:
            break
        new = make_plan(hardware, family=family, facts=SourceFacts(repos, known.local, offline=False), **plan_options)
        same_pick = _pick(new) == _pick(plan)
        plan = new
        if same_pick or unreachable:
            break
    save_facts(learnt)
    elapsed = time.monotonic() - started
    if unreachable:
        note = f"hub checks stopped ({unreachable}); the rest is not verified: cached facts ({facts_path()}) and data"
    elif learnt or asked:
        note = f"checked on the hub in {elapsed:.1f} s; facts cached in {facts_path()}"
    else:
        note = f"nothing to check on the hub; cached facts: {facts_path()}"
    return replace(plan, sources_note=note)


def _offline_note() -> str:
    return f"offline: sources not verified on the hub; cached hub facts from {facts_path()} where present"
