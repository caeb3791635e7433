"""Device profiles: how fast each device computes and how fast each pair talks.

A profile is a JSON file (format in docs/edgeflow.md)::

    {"name": "...", "basis": "where the figures come from",
     "devices": [{"name": "pi4", "flops": 1.2e10, "memory_bytes": 2147483648,
                  "flops_by_op": {"linear": 8e9}, "basis": "..."}],
     "links": {"default": {"bandwidth_bps": 5e7, "latency_s": 0.002},
               "pairs": [{"between": ["pi4", "phone"], "bandwidth_bps": 1e8, "latency_s": 0.001}]}}

Rates are FLOP/s as ``FlopCounterMode`` counts them (2 per multiply-add), so a
layer's compute time is simply its counted FLOPs over the rate. Links are symmetric,
and are the one link type of the model of time (:class:`disco_zoo.timing.links.Link`).
Validation happens once, here, so the planner can trust every number it reads.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disco_zoo.errors import DiscoZooError
from disco_zoo.timing.links import Link

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass(frozen=True)
class Device:
    name: str
    flops: float
    memory_bytes: float = math.inf
    flops_by_op: dict[str, float] = field(default_factory=dict)
    basis: str = ""

    def rate(self, op: str) -> float:
        """FLOP/s for a layer of kind ``op`` (falls back to the overall rate)."""
        return self.flops_by_op.get(op, self.flops)


@dataclass
class Profile:
    name: str
    devices: list[Device]
    default_link: Link | None  # None: only the listed pairs are connected
    pair_links: dict[tuple[int, int], Link] = field(default_factory=dict)
    basis: str = ""

    def __len__(self) -> int:
        return len(self.devices)

    def has_link(self, src: int, dst: int) -> bool:
        return (src, dst) in self.pair_links or self.default_link is not None

    def link(self, src: int, dst: int) -> Link:
        """The link from ``src`` to ``dst``; a pair the profile does not connect is a clear error."""
        link = self.pair_links.get((src, dst), self.default_link)
        if link is None:
            a, b = self.devices[src].name, self.devices[dst].name
            raise DiscoZooError(f"profile {self.name!r} has no link between {a} and {b}, which must talk; add "
                                f'{{"between": ["{a}", "{b}"], ...}} to links.pairs or give links.default')
        return link

    def links(self) -> dict[tuple[int, int], Link]:
        """Every ordered pair's link (what the replay and the link emulator take)."""
        n = len(self.devices)
        return {(i, j): self.link(i, j) for i in range(n) for j in range(n) if i != j}

    def fastest(self, op: str = "conv") -> int:
        return max(range(len(self.devices)), key=lambda i: self.devices[i].rate(op))

    def to_dict(self) -> dict[str, Any]:
        def dev(d: Device) -> dict[str, Any]:
            out: dict[str, Any] = {"name": d.name, "flops": d.flops}
            if math.isfinite(d.memory_bytes):
                out["memory_bytes"] = d.memory_bytes
            if d.flops_by_op:
                out["flops_by_op"] = dict(d.flops_by_op)
            if d.basis:
                out["basis"] = d.basis
            return out

        pairs, seen = [], set()
        for (a, b), link in self.pair_links.items():
            if (b, a) not in seen:
                seen.add((a, b))
                pairs.append({"between": [self.devices[a].name, self.devices[b].name],
                              "bandwidth_bps": link.bandwidth_bps, "latency_s": link.latency_s})
        return {
            "name": self.name,
            "basis": self.basis,
            "devices": [dev(d) for d in self.devices],
            "links": {**({"default": {"bandwidth_bps": self.default_link.bandwidth_bps,
                                      "latency_s": self.default_link.latency_s}} if self.default_link else {}),
                      "pairs": pairs},
        }


def _number(value: Any, where: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DiscoZooError(f"{where} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise DiscoZooError(f"{where} must be > 0, got {value!r}")
    if not positive and value < 0:
        raise DiscoZooError(f"{where} must be >= 0, got {value!r}")
    return float(value)


def _only_known(raw: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    """A misspelt field (``memmory_bytes``) must not silently mean its default."""
    import difflib

    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DiscoZooError(f"{where} has an unknown field {key!r}{hint}; known fields: {', '.join(known)}")


def _link(raw: Any, where: str, known: tuple[str, ...] = ("bandwidth_bps", "latency_s", "basis")) -> Link:
    if not isinstance(raw, dict):
        raise DiscoZooError(f"{where} must be an object with bandwidth_bps and latency_s")
    _only_known(raw, known, where)
    for key in ("bandwidth_bps", "latency_s"):
        if key not in raw:
            raise DiscoZooError(f"{where} is missing {key!r}")
    return Link(_number(raw["bandwidth_bps"], f"{where}.bandwidth_bps"),
                _number(raw["latency_s"], f"{where}.latency_s", positive=False))


def profile_from_dict(raw: Any, source: str = "profile") -> Profile:
    """Validate a parsed profile; every problem names the field and what is expected."""
    if not isinstance(raw, dict):
        raise DiscoZooError(f"{source}: top level must be a JSON object with 'devices' and 'links'")
    _only_known(raw, ("name", "basis", "devices", "links"), source)
    devices_raw = raw.get("devices")
    if not isinstance(devices_raw, list) or not devices_raw:
        raise DiscoZooError(f"{source}: 'devices' must be a non-empty list")
    devices: list[Device] = []
    for k, d in enumerate(devices_raw):
        where = f"{source}: devices[{k}]"
        if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not d["name"]:
            raise DiscoZooError(f"{where} must be an object with a non-empty 'name'")
        _only_known(d, ("name", "flops", "memory_bytes", "flops_by_op", "basis"), f"{where} ({d['name']})")
        if "flops" not in d:
            raise DiscoZooError(f"{where} ({d['name']}) is missing 'flops' (compute rate in FLOP/s)")
        by_op = d.get("flops_by_op", {})
        if not isinstance(by_op, dict):
            raise DiscoZooError(f"{where}.flops_by_op must be an object op -> FLOP/s")
        devices.append(Device(
            name=d["name"],
            flops=_number(d["flops"], f"{where}.flops"),
            memory_bytes=_number(d["memory_bytes"], f"{where}.memory_bytes") if "memory_bytes" in d else math.inf,
            flops_by_op={op: _number(v, f"{where}.flops_by_op.{op}") for op, v in by_op.items()},
            basis=str(d.get("basis", "")),
        ))
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise DiscoZooError(f"{source}: device names must be unique, got {names}")
    links = raw.get("links", {})
    if not isinstance(links, dict) or not ("default" in links or links.get("pairs")):
        raise DiscoZooError(f"{source}: 'links' must be an object with a 'default' link and/or 'pairs'")
    _only_known(links, ("default", "pairs"), f"{source}: links")
    if not isinstance(links.get("pairs", []), list):
        raise DiscoZooError(f"{source}: links.pairs must be a list of {{between, bandwidth_bps, latency_s}}")
    default = _link(links["default"], f"{source}: links.default") if "default" in links else None
    pairs: dict[tuple[int, int], Link] = {}
    for k, p in enumerate(links.get("pairs", [])):
        where = f"{source}: links.pairs[{k}]"
        between = p.get("between") if isinstance(p, dict) else None
        if not isinstance(between, list) or len(between) != 2 or between[0] == between[1]:
            raise DiscoZooError(f"{where}.between must name two different devices")
        for n in between:
            if n not in names:
                raise DiscoZooError(f"{where} names unknown device {n!r}; devices are {names}")
        a, b = names.index(between[0]), names.index(between[1])
        pairs[(a, b)] = pairs[(b, a)] = _link(p, where, ("between", "bandwidth_bps", "latency_s", "basis"))
    return Profile(str(raw.get("name", source)), devices, default, pairs, str(raw.get("basis", "")))


def load_profile(path_or_preset: str | Path) -> Profile:
    """Load a profile file, or a preset by name (``disco_zoo/planner/presets/NAME.json``)."""
    path = Path(path_or_preset)
    if not path.exists():
        preset = PRESET_DIR / f"{path_or_preset}.json"
        if not preset.exists():
            raise DiscoZooError(
                f"device profile {str(path_or_preset)!r} not found; give a JSON file or one of the presets: "
                f"{', '.join(list_presets())}")
        path = preset
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DiscoZooError(f"{path}: not a JSON device profile ({type(err).__name__}: {err})") from None
    except OSError as err:
        raise DiscoZooError(f"{path}: cannot read the device profile ({err.strerror or err})") from None
    return profile_from_dict(raw, str(path))


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))
