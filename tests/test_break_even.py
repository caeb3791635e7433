"""The break-even bandwidth against one dense device: hand-worked programs, the schema-2
records that carry it, and the recorded results checked against their measured links; each
link's prediction replayed from the programs its own launch measured (schema 3)."""
import copy
import dataclasses
import json

import pytest

from disco_zoo.card_facts import break_even_check, link_compute_ratios, link_programs_text, shared_cores
from disco_zoo.errors import DiscoZooError
from disco_zoo.harness.break_even import (
    LOWEST_BPS, break_even_bandwidth, break_even_of, link_predicted_ms, link_profile, predicted_ms, program_gaps,
    recorded_message_cost, recorded_profile, with_gaps,
)
from disco_zoo.harness.report import EvalReport, LinkPrograms
from disco_zoo.model_cards import RESULTS_DIR
from disco_zoo.timing import ComputeProfile, Event, Link, MessageCost, RankProgram, predict_latency

RECORDED = sorted(RESULTS_DIR.glob("*.json"))


def _one_message(rank1_gap_s: float = 0.0) -> ComputeProfile:
    """Rank 0 computes 1 ms, sends 1000 bytes; rank 1 computes ``rank1_gap_s``, waits, computes 1 ms."""
    return ComputeProfile([
        RankProgram(0, [Event("send", 1, 0, 0.001, 1000)]),
        RankProgram(1, [Event("recv", 0, 0, rank1_gap_s)], tail_s=0.001),
    ])


def test_hand_worked_single_message():
    # T(B) = 1 ms + 8000 bit / B + 1 ms; T = 3 ms at B = 8000 / 0.001 = 8 Mbit/s
    bps = break_even_bandwidth(_one_message(), 0.003)
    assert bps == pytest.approx(8e6, rel=1e-3)
    assert predict_latency(_one_message(), Link(bps)) == pytest.approx(0.003, rel=1e-3)
    # 0.5 ms of message cost on the arrival: 2.5 ms + 8000 / B = 3 ms at 16 Mbit/s
    assert break_even_bandwidth(_one_message(), 0.003, MessageCost(fixed_s=0.0005)) == pytest.approx(16e6, rel=1e-3)


def test_hand_worked_overlap_of_compute_and_wire():
    # rank 1 computes 1.5 ms before it waits: T = max(1.5 ms, 1 ms + 8000 / B) + 1 ms
    profile = _one_message(rank1_gap_s=0.0015)
    assert break_even_bandwidth(profile, 0.0026) == pytest.approx(8000 / 0.0006, rel=1e-3)
    assert break_even_bandwidth(profile, 0.0024) is None  # 2.5 ms even over an unlimited link
    assert break_even_bandwidth(profile, 10.0) == LOWEST_BPS  # 8 s of wire at 1 kbit/s: already within 10 s
    with pytest.raises(DiscoZooError, match="positive target"):
        break_even_bandwidth(profile, 0.0)


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
def test_recorded_break_even_is_the_cost_models_and_agrees_with_the_measured_links(path):
    report = EvalReport.read(path)
    for lat in (report.latency, report.latency_paper_size):
        if lat is None:
            continue
        assert lat.break_even == break_even_of(lat)  # recomputed from the recorded programs
        be = lat.break_even
        if be.bandwidth_bps is not None:
            assert predicted_ms(lat, "disco", be.bandwidth_bps) == pytest.approx(lat.dense_single_ms, rel=1e-3)
        else:
            assert predicted_ms(lat, "disco", None) > lat.dense_single_ms
        # the measured point on each side of the break-even is on the side the model says
        check = break_even_check(lat, shared_cores(report.nodes, report.environment))
        assert check.consistent, check.text()
        # the programs reproduce the predictions recorded in the run at every timed link: each
        # link's own launch's programs where the result records them (schema 3), else the
        # section's (20%, or 3 ms: a 32x32 inference takes ~10 ms, where this VM's scheduling
        # jitter is milliseconds; a median program predicts a few % off the median round)
        for link in lat.links:
            for run, recorded in (("disco", link.disco_predicted_ms), ("dense_tp", link.dense_tp_predicted_ms)):
                assert link_predicted_ms(lat, link, run) == pytest.approx(recorded, rel=0.2, abs=3.0), (link.bandwidth, run)
        assert recorded_message_cost(lat).fixed_s == pytest.approx(lat.message_overhead_ms / 1000)


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
def test_a_links_own_programs_replay_its_median_round_exactly(path):
    # a link records the programs of its median round (schema 3): replaying them gives back
    # that round's prediction, which is the recorded median for an odd count of rounds
    # (1 at the deployment size, 5 or 11 at the model's own)
    report = EvalReport.read(path)
    for lat in (report.latency, report.latency_paper_size):
        for link in (lat.links if lat is not None else []):
            if link.programs is None:
                continue
            assert link.programs.source.startswith("measured")
            for run, rounds, recorded, per_round in (
                    ("disco", link.rounds.disco, link.disco_predicted_ms, link.per_round.disco_predicted_ms),
                    ("dense_tp", link.rounds.dense_tp, link.dense_tp_predicted_ms, link.per_round.dense_tp_predicted_ms)):
                replayed = link_predicted_ms(lat, link, run)
                assert any(replayed == pytest.approx(p, rel=1e-9) for p in per_round), (link.bandwidth, run)
                if rounds % 2:
                    assert replayed == pytest.approx(recorded, rel=1e-9), (link.bandwidth, run)


def test_a_link_is_predicted_from_its_own_launchs_compute():
    lat = EvalReport.read(RESULTS_DIR / "resnet50_disco_2node.digits.json").latency_paper_size
    link = max(lat.links, key=lambda link: link.bandwidth_bps)  # 1 Gbit/s: compute is most of the latency
    assert link.programs is None  # schema 2: the section's programs stand in
    assert link_predicted_ms(lat, link, "disco") == predicted_ms(lat, "disco", link.bandwidth_bps)
    section = recorded_profile(lat, "disco")
    # the link's launch ran on a machine 1.5x slower than the localhost launch
    slower = LinkPrograms(source="measured: test",
                          disco=[[1.5 * g for g in program_gaps(p)] for p in section.programs],
                          dense_tp=[program_gaps(p) for p in recorded_profile(lat, "dense_tp").programs])
    timed = dataclasses.replace(link, programs=slower)
    assert link_profile(lat, timed, "disco").compute_s == pytest.approx([1.5 * c for c in section.compute_s])
    assert link_predicted_ms(lat, timed, "disco") > 1.2 * predicted_ms(lat, "disco", link.bandwidth_bps)
    assert link_predicted_ms(lat, timed, "dense_tp") == pytest.approx(predicted_ms(lat, "dense_tp", link.bandwidth_bps))
    # the gaps go back on the section's events: same messages, or a clear error
    assert [e.nbytes for e in link_profile(lat, timed, "disco").programs[0].events] ==         [e.nbytes for e in section.programs[0].events]
    short = dataclasses.replace(slower, disco=[gaps[:-2] for gaps in slower.disco])
    with pytest.raises(DiscoZooError, match="recorded gaps for a program of"):
        link_predicted_ms(lat, dataclasses.replace(link, programs=short), "disco")
    with pytest.raises(DiscoZooError, match="gaps for 1 ranks"):
        link_profile(lat, dataclasses.replace(link, programs=dataclasses.replace(slower, disco=slower.disco[:1])),
                     "disco")
    other = section.programs[1]
    with pytest.raises(DiscoZooError, match="messages differ"):
        program_gaps(other, like=section.programs[0])
    assert with_gaps(other, program_gaps(other, like=other)) == other
    # and the record round-trips through its JSON
    report = EvalReport.read(RESULTS_DIR / "resnet50_disco_2node.digits.json")
    links = [timed if l is link else l for l in lat.links]
    changed = dataclasses.replace(report, latency_paper_size=dataclasses.replace(lat, links=links))
    assert EvalReport.from_dict(json.loads(changed.to_json())) == changed
    # what a card says of it: the link launch's compute against the localhost launch's
    (only,) = link_compute_ratios(changed.latency_paper_size)
    assert only[0] == timed and only[1] == pytest.approx(1.5)
    assert "1.50x at 1gbit" in link_programs_text(changed.latency_paper_size)
    assert link_compute_ratios(lat) == [] and link_programs_text(lat) is None


def test_schema_1_documents_still_load_and_say_what_they_lack():
    doc = json.loads((RESULTS_DIR / "resnet50_disco_2node.digits.json").read_text())
    old = copy.deepcopy(doc)
    old.pop("schema_version")
    for key in ("latency", "latency_paper_size"):
        old[key].pop("programs")
        old[key].pop("break_even")
    report = EvalReport.from_dict(old, "old")
    assert report.latency.programs is None and report.latency.break_even is None
    assert break_even_check(report.latency) is None
    with pytest.raises(DiscoZooError, match="records no programs"):
        predicted_ms(report.latency, "disco", 1e7)
    new = EvalReport.from_dict(doc, "new")
    assert dataclasses.replace(new.latency, programs=None, break_even=None) == report.latency
    assert EvalReport.from_dict(json.loads(new.to_json())) == new


def test_a_measured_point_counts_against_the_break_even_only_where_the_model_is_sure():
    lat = EvalReport.read(RESULTS_DIR / "resnet50_disco_2node.digits.json").latency_paper_size
    slowest = min(lat.links, key=lambda link: link.bandwidth_bps)  # predicted far slower than one device
    assert break_even_check(lat).consistent
    # measured faster than the device where the model is sure DISCO is slower: a disagreement
    wrong = dataclasses.replace(slowest, disco_ms=lat.dense_single_ms * 0.5)
    check = break_even_check(dataclasses.replace(lat, links=[wrong if l is slowest else l for l in lat.links]))
    assert not check.consistent and check.disagreeing == [wrong]
    # the same side where the break-even's programs predict within the model's accuracy of the device: too
    # close to call (the link's in-run prediction, from its own launch's compute, does not decide it)
    device = predicted_ms(lat, "disco", slowest.bandwidth_bps) / 1.05
    near = dataclasses.replace(slowest, disco_ms=device * 0.5, disco_predicted_ms=device * 0.5)
    check = break_even_check(dataclasses.replace(lat, dense_single_ms=device, links=[near]))
    assert check.consistent and check.close == [near] and "too close to call" in check.text()
    check = break_even_check(dataclasses.replace(lat, dense_single_ms=device * 0.8, links=[near]))
    assert not check.consistent and check.disagreeing == [near]


def test_ranks_that_shared_too_few_cores_cannot_refute_a_break_even():
    report = EvalReport.read(RESULTS_DIR / "resnet50_disco_2node.digits.json")
    lat = report.latency_paper_size
    slowest = min(lat.links, key=lambda link: link.bandwidth_bps)
    wrong = dataclasses.replace(slowest, disco_ms=lat.dense_single_ms * 0.5)  # a disagreement (as above)
    lat = dataclasses.replace(lat, links=[wrong if l is slowest else l for l in lat.links])
    assert shared_cores(2, dataclasses.replace(report.environment, cores=2)) is None
    assert not break_even_check(lat, shared_cores(2, dataclasses.replace(report.environment, cores=2))).consistent
    shared = shared_cores(4, dataclasses.replace(report.environment, cores=2, threads_per_rank=1))
    assert shared == (4, 2) and shared_cores(2, dataclasses.replace(report.environment, cores=None)) is None
    check = break_even_check(lat, shared)
    assert check.consistent and check.disagreeing == [] and "4 ranks shared 2 cores" in check.text()
