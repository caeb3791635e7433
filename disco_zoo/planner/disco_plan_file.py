"""A DISCO plan as a file: which device runs which node of which model, as predicted.

``disco-zoo plan MODEL-disco --out FILE`` writes it and ``disco-zoo run-plan FILE`` runs it
with the real DISCO executor (:mod:`disco_zoo.runtime.disco_plan_executor`). The file names
the model and carries a fingerprint of its partition, so a plan made for another model or
another training of it is refused before any rank starts.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from disco_zoo.disco.partition import Partition
from disco_zoo.errors import DiscoZooError
from disco_zoo.planner.profiles import Profile, profile_from_dict

__all__ = ["FORMAT", "DiscoPlan", "partition_fingerprint", "save_disco_plan", "load_disco_plan", "is_disco_plan"]

FORMAT = "disco-zoo/disco-plan/v1"


def partition_fingerprint(part: Partition) -> str:
    """sha256 of the partition's canonical JSON: equal exactly when the split and every S_kj are."""
    return hashlib.sha256(json.dumps(part.to_dict(), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class DiscoPlan:
    model: str  # published name (or folder) of the DISCO model
    input_shape: tuple[int, ...]
    profile: Profile
    devices: tuple[int, ...]  # node k runs on profile.devices[devices[k]]
    partition_sha256: str
    predicted: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "model": self.model, "input_shape": list(self.input_shape),
                "profile": self.profile.to_dict(), "devices": [self.profile.devices[d].name for d in self.devices],
                "partition_sha256": self.partition_sha256, "predicted": self.predicted}


def save_disco_plan(plan: DiscoPlan, path: str | Path) -> None:
    """Write ``plan`` whole or not at all (a temporary file renamed into place)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(plan.to_dict(), handle, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_disco_plan(raw: Any) -> bool:
    return isinstance(raw, dict) and raw.get("format") == FORMAT


def load_disco_plan(path: str | Path) -> DiscoPlan:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DiscoZooError(f"cannot read plan {path}: {err}") from err
    if not is_disco_plan(raw):
        raise DiscoZooError(f"{path} is not a DISCO plan (expected \"format\": \"{FORMAT}\")")
    try:
        profile = profile_from_dict(raw["profile"], f"{path} profile")
        names = [d.name for d in profile.devices]
        unknown = [d for d in raw["devices"] if d not in names]
        if unknown:
            raise DiscoZooError(f"{path}: devices {unknown} are not in its profile ({', '.join(names)})")
        return DiscoPlan(str(raw["model"]), tuple(int(s) for s in raw["input_shape"]), profile,
                         tuple(names.index(d) for d in raw["devices"]), str(raw["partition_sha256"]),
                         dict(raw.get("predicted", {})))
    except (KeyError, TypeError, ValueError) as err:
        raise DiscoZooError(f"{path}: malformed DISCO plan, missing or bad field {err}") from err
