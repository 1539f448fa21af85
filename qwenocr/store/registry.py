"""The models `qwenocr models convert` made: where they are, so that `scan` and `doctor` find them.

One JSON file, `<qwenocr cache>/models/registry.json`, replaced atomically on each change
(qwenocr.atomicio). An entry is `{family, variant, quant, path, source, created}`:

    family   "3.5" or "3.6" (Qwen3.5 / Qwen3.6), None when a local source did not say
    variant  a catalog name ("27B", "35B-A3B"), None when the source matched none
    quant    "mxfp4"
    path     the converted MLX folder (absolute)
    source   the repo id or local folder it was converted from
    created  when, ISO 8601 UTC

An entry whose folder is gone (removed by hand, or on an unplugged disk) is ignored,
not an error. Converted models live by default under `<qwenocr cache>/models/`, beside
the checkpoints, not in the Hugging Face cache: they are made here, not downloaded.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

from qwenocr import atomicio
from qwenocr.paths import cache_root

__all__ = ["Converted", "find_converted", "models_dir", "register", "registered", "registry_path"]


def models_dir() -> Path:
    """Where `models convert` writes by default: `<qwenocr cache>/models`."""
    return cache_root() / "models"


def registry_path() -> Path:
    return models_dir() / "registry.json"


@dataclass(frozen=True)
class Converted:
    """One model `models convert` made."""

    family: Optional[str]
    variant: Optional[str]
    quant: str
    path: str
    source: str
    created: str

    @property
    def folder(self) -> Path:
        return Path(self.path)

    def present(self) -> bool:
        return (self.folder / "config.json").is_file()


def _load() -> List[Converted]:
    """Every entry on file, present or not; an unreadable registry counts as empty."""
    try:
        data = json.loads(registry_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    entries = []
    for raw in data.get("models", []) if isinstance(data, dict) else []:
        try:
            entries.append(
                Converted(
                    family=raw.get("family"),
                    variant=raw.get("variant"),
                    quant=str(raw["quant"]),
                    path=str(raw["path"]),
                    source=str(raw.get("source", "")),
                    created=str(raw.get("created", "")),
                )
            )
        except (KeyError, TypeError, AttributeError):
            continue  # an entry written by hand or by a newer version: skip it, keep the rest
    return entries


def _save(entries: List[Converted]) -> None:
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"version": 1, "models": [asdict(e) for e in entries]}
    atomicio.write_text(path, json.dumps(document, indent=2) + "\n")


def register(path: Path, *, family: Optional[str], variant: Optional[str], quant: str, source: str) -> Converted:
    """Record a finished conversion (replacing any entry for the same folder)."""
    folder = str(Path(path).resolve())
    created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    entry = Converted(family=family, variant=variant, quant=quant.lower(), path=folder, source=source, created=created)
    # Entries whose folder is gone are dropped on the way: the registry only grows with use.
    kept = [e for e in _load() if e.path != folder and e.present()]
    _save(kept + [entry])
    return entry


def registered() -> List[Converted]:
    """The conversions on record whose folder is still there, oldest first."""
    return [e for e in _load() if e.present()]


def find_converted(family: str, variant: str, quant: str) -> Optional[Path]:
    """The newest converted model of `family` ("3.5"), `variant` ("27B") and `quant` ("mxfp4"), if any."""
    wanted = (family.strip(), variant.strip().lower(), quant.strip().lower())
    for entry in reversed(registered()):
        if (entry.family, (entry.variant or "").lower(), entry.quant.lower()) == wanted:
            return entry.folder
    return None
