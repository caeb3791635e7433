"""``disco-zoo plan`` for a DISCO model: placement, split ratio, and the published variants.

One JSON-able document: the fastest placement of the model's nodes on the profile's
devices, every other placement that fits, the predicted latency at each split ratio on
those devices (2-node models), and which published variant of the same dense model is
closest to the optimum ratio and what the optimum would gain over it.
"""
from __future__ import annotations

from typing import Any

from disco_zoo.errors import DiscoZooError
from disco_zoo.planner.disco_plan import disco_facts, place_disco, ratio_sweep
from disco_zoo.planner.profiles import Profile

__all__ = ["plan_disco_model", "published_variants", "dense_architecture"]


def _share(ratios: Any, nodes: int) -> float:
    """Node 0's share of a variant's ratios (equal when none are given)."""
    ratios = list(ratios) if ratios else [1.0] * nodes
    return round(ratios[0] / sum(ratios), 4)


def dense_architecture(config: Any) -> Any:
    """The dense architecture a DISCO variant is made from, with random weights (for
    rebuilding its partition at other ratios; nothing is downloaded)."""
    from disco_zoo.registry import build_model, get_entry

    kwargs = dict(get_entry(config.arch).kwargs)
    dense = kwargs.pop("dense", None)
    if dense is None:
        raise DiscoZooError(f"{config.arch} names no dense architecture in the registry; the ratio sweep needs one")
    for key in ("nodes", "ratios"):
        kwargs.pop(key, None)
    args = {k: v for k, v in config.args.items() if k not in ("nodes", "ratios")}
    return build_model(dense, **{**kwargs, **args})


def published_variants(config: Any, same_nodes: bool = True) -> dict[str, float]:
    """Published DISCO variants with the same dense counterpart (and node count): name -> node 0's share."""
    from disco_zoo.hub import get_pretrained_cfg, list_pretrained

    out = {}
    for name in list_pretrained():
        other = get_pretrained_cfg(name)
        if other.kind == "disco" and other.dense == config.dense and (other.nodes == config.nodes or not same_nodes):
            part_ratios = (other.partition or {}).get("ratios") or other.ratios
            out[name] = _share(part_ratios, other.nodes)
    return out


def plan_disco_model(name: str, profile: Profile, input_size: int | None = None,
                     ratios: list[float] | None = None, out: str | None = None) -> dict[str, Any]:
    """Place the DISCO model ``name`` (a published name or folder) on ``profile``; with
    ``out``, write the placement as a plan ``disco-zoo run-plan`` runs.

    ``ratios`` picks the published variant at that split instead (one that no published
    variant serves is a clear error naming those that exist)."""
    from disco_zoo.hub import get_pretrained_cfg, load_folder, resolve_folder

    config = get_pretrained_cfg(name)
    if config.kind != "disco":
        raise DiscoZooError(f"{config.name} is a dense model; plan_disco_model places DISCO models")
    variants = published_variants(config)
    if ratios is not None:
        wanted = _share(ratios, config.nodes)
        chosen = [v for v, share in variants.items() if abs(share - wanted) < 0.01]
        if not chosen:
            raise DiscoZooError(f"no published variant of {config.dense} on {config.nodes} nodes is split "
                                f"{wanted:.2f}/{1 - wanted:.2f}; published: "
                                + ", ".join(f"{v} ({s:.2f})" for v, s in sorted(variants.items()))
                                + ". Train one with `disco-zoo sparsify --ratios`.")
        config = get_pretrained_cfg(chosen[0])
    folder = resolve_folder(config.name)
    model = load_folder(folder)
    side = input_size or config.input_size[-1]
    if config.fixed_input_size and side != config.input_size[-1]:
        raise DiscoZooError(f"{config.name} takes only {config.input_size[-1]}x{config.input_size[-1]} inputs")
    facts = disco_facts(model, config.name, (1, config.input_size[0], side, side))
    placements = place_disco(facts, profile)
    best = placements[0]
    doc: dict[str, Any] = {
        "model": config.name, "kind": "disco", "profile": profile.name, "input_shape": list(facts.input_shape),
        "devices": [d.name for d in profile.devices],
        "placement": best.to_dict(profile),
        "unused_devices": [profile.devices[d].name for d in range(len(profile)) if d not in best.devices],
        "placements": [p.to_dict(profile) for p in placements],
        "memory_per_node": list(facts.memory_per_node),
    }
    if out:
        from disco_zoo.planner.disco_plan_file import DiscoPlan, partition_fingerprint, save_disco_plan

        save_disco_plan(DiscoPlan(config.name, facts.input_shape, profile, best.devices,
                                  partition_fingerprint(facts.partition),
                                  {"latency_s": best.latency_s, "bytes": best.bytes_total}), out)
        doc["plan"] = out
    if config.nodes == 2:
        sweep = ratio_sweep(facts, dense_architecture(config), profile, best.devices)
        doc["ratio_sweep"] = [{"share": p.ratios[0], "latency_s": p.latency_s, "bytes": p.bytes_total} for p in sweep]
        if sweep:
            optimum = min(sweep, key=lambda p: p.latency_s)
            own_share = _share(facts.partition.ratios, 2)
            closest, closest_share = min(variants.items(), key=lambda kv: abs(kv[1] - optimum.ratios[0]))
            at_closest = min(sweep, key=lambda p: abs(p.ratios[0] - closest_share))
            closest_latency = best.latency_s if closest == config.name else at_closest.latency_s
            doc["optimum"] = {"share": optimum.ratios[0], "latency_s": optimum.latency_s, "bytes": optimum.bytes_total}
            doc["closest_published"] = {"name": closest, "share": closest_share, "latency_s": closest_latency,
                                        "optimum_gain": closest_latency / optimum.latency_s}
            doc["this_variant_share"] = own_share
    return doc


def _dense_graph(config: Any, side: int) -> tuple[str, Any]:
    """(name, traced graph at ``side``) of a DISCO model's dense counterpart."""
    from disco_zoo.graph import trace_model
    from disco_zoo.hub import get_pretrained_cfg
    from disco_zoo.registry import build_model

    dense = get_pretrained_cfg(config.dense)
    return dense.name, trace_model(build_model(dense.arch, **dense.args), (1, dense.input_size[0], side, side))


def compare_report(name: str, profile: Profile, input_size: int | None = None,
                   links: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every strategy (:func:`disco_zoo.planner.compare.compare_strategies`) for the DISCO
    model ``name``'s dense counterpart and each of its published DISCO variants that the
    profile has devices for, on ``profile`` as given and at each of ``links`` (label ->
    Link; default :data:`~disco_zoo.planner.compare.LINK_SPEEDS`)."""
    from disco_zoo.hub import get_pretrained_cfg, load_folder, resolve_folder
    from disco_zoo.planner.compare import LINK_SPEEDS, compare_strategies, with_link

    config = get_pretrained_cfg(name)
    if config.kind != "disco":
        raise DiscoZooError(f"{config.name} is a dense model; --compare takes a DISCO model (its dense counterpart "
                            "and every published variant are compared)")
    side = input_size or config.input_size[-1]
    dense_name, graph = _dense_graph(config, side)
    variants, skipped = {}, []
    for other in published_variants(config, same_nodes=False):
        cfg = get_pretrained_cfg(other)
        if cfg.nodes > len(profile):
            skipped.append(other)
            continue
        variants[other] = disco_facts(load_folder(resolve_folder(other)), other, (1, cfg.input_size[0], side, side))
    settings = {"as profiled": profile, **{label: with_link(profile, link, label)
                                           for label, link in (links or LINK_SPEEDS).items()}}
    tables = {label: [row.to_dict() for row in compare_strategies(graph, prof, variants)]
              for label, prof in settings.items()}
    return {"model": config.name, "dense_model": dense_name, "profile": profile.name, "input_size": side,
            "devices": [d.name for d in profile.devices], "tables": tables, "skipped_variants": skipped}
