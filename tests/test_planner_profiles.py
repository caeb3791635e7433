"""Device profiles: presets load, malformed files fail with messages that name the problem."""
from __future__ import annotations

import json

import pytest

from disco_zoo.errors import DiscoZooError
from disco_zoo.planner.profiles import list_presets, load_profile, profile_from_dict

GOOD = {"devices": [{"name": "a", "flops": 1e9, "memory_bytes": 1e9, "flops_by_op": {"linear": 5e8}},
                    {"name": "b", "flops": 2e9}],
        "links": {"default": {"bandwidth_bps": 1e8, "latency_s": 0.001},
                  "pairs": [{"between": ["a", "b"], "bandwidth_bps": 1e9, "latency_s": 0.0}]}}


def test_presets_load_and_state_their_basis() -> None:
    names = list_presets()
    assert len(names) >= 3
    for name in names:
        prof = load_profile(name)
        assert len(prof) >= 3 and prof.basis
        assert all(d.basis and d.flops > 0 and d.memory_bytes > 0 for d in prof.devices)


def test_rates_links_and_round_trip() -> None:
    prof = profile_from_dict(GOOD)
    assert prof.devices[0].rate("linear") == 5e8 and prof.devices[0].rate("conv") == 1e9
    assert prof.link(1, 0).bandwidth_bps == 1e9 and prof.link(0, 1).latency_s == 0.0
    assert prof.link(0, 1).seconds(125) == pytest.approx(1e-6)
    assert prof.fastest() == 1
    again = profile_from_dict(json.loads(json.dumps(prof.to_dict())))
    assert again.to_dict() == prof.to_dict()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("devices"), "'devices' must be a non-empty list"),
    (lambda d: d["devices"][0].pop("flops"), "missing 'flops'"),
    (lambda d: d["devices"][0].update(flops=-3), "devices[0].flops must be > 0"),
    (lambda d: d["devices"][1].update(flops="fast"), "must be a finite number"),
    (lambda d: d["devices"][1].update(name="a"), "device names must be unique"),
    (lambda d: (d["links"].pop("default"), d["links"].pop("pairs")), "'default' link and/or 'pairs'"),
    (lambda d: d["links"]["default"].pop("latency_s"), "missing 'latency_s'"),
    (lambda d: d["links"]["pairs"][0].update(between=["a", "zz"]), "unknown device 'zz'"),
])
def test_malformed_profiles(mutate, message) -> None:
    raw = json.loads(json.dumps(GOOD))
    mutate(raw)
    with pytest.raises(DiscoZooError, match=None) as err:
        profile_from_dict(raw, "p.json")
    assert message in str(err.value) and "p.json" in str(err.value)


def test_bad_files(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DiscoZooError, match="not a JSON device profile"):
        load_profile(bad)
    with pytest.raises(DiscoZooError, match="not found.*presets"):
        load_profile(tmp_path / "missing.json")


def test_a_misspelt_field_is_an_error_not_a_default(tmp_path) -> None:
    import json

    doc = {"devices": [{"name": "a", "flops": 1e9, "memmory_bytes": 1e9}],
           "links": {"default": {"bandwidth_bps": 1e8, "latency_s": 0.001}}}
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DiscoZooError, match="unknown field 'memmory_bytes'.*did you mean 'memory_bytes'"):
        load_profile(path)
    doc["devices"][0]["memory_bytes"] = doc["devices"][0].pop("memmory_bytes")
    doc["links"]["default"]["latency"] = 1
    path.write_text(json.dumps(doc))
    with pytest.raises(DiscoZooError, match="links.default has an unknown field 'latency'"):
        load_profile(path)
