"""Interleaved timing rounds (disco_zoo.runtime.rounds) and the latency report built on
them: every figure is there, ratios are per-round, the profiled programs move the
accounted bytes, and the bytes the timed inference counted equal the plain run's.
Whether the numbers meet the runtime's targets is a benchmark (bench/), not a test."""
import statistics

import pytest

from disco_zoo.disco.accounting import layer_shapes, wire_bytes_per_pair
from disco_zoo.harness.latency import dense_tp_copy, measure_latencies
from disco_zoo.harness.options import EvalOptions
from disco_zoo.runtime.launch import launch
from disco_zoo.runtime.rounds import ROUNDS_ENTRY
from disco_zoo.runtime.transport import ByteCounter
from disco_zoo.timing import ComputeProfile, RankProgram
from helpers import sparse_disco_folder

SIZE = 32


def test_rounds_interleave_dense_solo_concurrent_and_real(tmp_path):
    assert ROUNDS_ENTRY == "disco_zoo.runtime.rounds:time_rounds"
    folder, model, part = sparse_disco_folder(tmp_path, 2)
    shape = [1, 3, SIZE, SIZE]
    args = {"folder": str(folder), "input_shape": shape, "rounds": 3, "warmup": 1, "dense": "resnet18", "solo": True}
    results = launch(ROUNDS_ENTRY, 2, "mpi", args=args, timeout_s=60)
    for r in results:
        assert len(r["real_s"]) == len(r["solo_s"]) == len(r["concurrent_s"]) == len(r["programs"]) == 3
        assert all(v > 0 for v in r["real_s"] + r["solo_s"] + r["concurrent_s"])
        assert r["rss_load_growth_bytes"] > 0 and r["weight_bytes"] > 0
    assert len(results[0]["dense_s"]) == 3 and results[1]["dense_s"] == []  # the dense model lives on rank 0 only
    assert results[0]["dense_weight_bytes"] > results[0]["weight_bytes"]

    # the timed inference counted the accounting's bytes (plus the image scatter) ...
    expected = wire_bytes_per_pair(part, layer_shapes(model, tuple(shape)), tuple(shape), 4)
    assert ByteCounter.merge([r["bytes"] for r in results])["pairs"] == expected
    # ... and so does every profiled program, which replays as the cost model's input
    profile = ComputeProfile([RankProgram.from_dict(r["programs"][0]) for r in results])
    assert profile.bytes_per_pair == expected


def test_latency_report_is_made_of_per_round_ratios(tmp_path):
    folder, model, _ = sparse_disco_folder(tmp_path, 2)
    tp_folder = dense_tp_copy(model, folder, tmp_path / "dense_tp")
    opts = EvalOptions(bandwidths=("100mbit",), repeats=3, warmup=1)
    lat = measure_latencies(folder, tp_folder, "resnet18", 2, [1, 3, SIZE, SIZE], opts, progress=lambda _: None,
                            link_warmup=0, link_repeats=1)
    rounds = lat.per_round
    assert len(rounds.dense_ms) == len(rounds.disco_ms) == len(rounds.compute_alone_ms) == 3
    assert lat.speedup_localhost_vs_dense == pytest.approx(
        statistics.median(d / r for d, r in zip(rounds.dense_ms, rounds.disco_ms)))
    assert lat.localhost_over_compute_alone == pytest.approx(
        statistics.median(r / c for r, c in zip(rounds.disco_ms, rounds.compute_alone_ms)))
    assert lat.disco_localhost_ms == pytest.approx(statistics.median(rounds.disco_ms))
    (link,) = lat.links
    assert link.disco_predicted_ms > 0 and link.dense_tp_predicted_ms > link.disco_predicted_ms
    per_round = link.per_round
    assert len(per_round.disco_ms) == len(per_round.disco_predicted_ms) == link.rounds.disco
    assert link.disco_measured_over_predicted == pytest.approx(
        statistics.median(r / p for r, p in zip(per_round.disco_ms, per_round.disco_predicted_ms)))
    assert link.dense_tp_measured_over_predicted == pytest.approx(
        statistics.median(r / p for r, p in zip(per_round.dense_tp_ms, per_round.dense_tp_predicted_ms)))
    assert lat.message_overhead_ms > 0 and lat.message_ms_per_mib >= 0
    assert lat.message_send_ms > 0 and lat.message_send_ms_per_mib >= 0
    # schema 2: the programs the model of time replays, and the break-even read off them
    from disco_zoo.harness.break_even import break_even_of

    assert lat.programs.source.startswith("measured") and len(lat.programs.disco) == len(lat.programs.dense_tp) == 2
    assert lat.break_even == break_even_of(lat) and lat.break_even.dense_single_ms == lat.dense_single_ms
    # schema 3: the link's own launch's programs, on the section's events, replay its prediction
    from disco_zoo.harness.break_even import link_predicted_ms

    assert link.programs.source.startswith("measured") and len(link.programs.disco) == len(link.programs.dense_tp) == 2
    assert [len(g) for g in link.programs.disco] == [len(p["events"]) + 1 for p in lat.programs.disco]
    assert link.rounds.disco == 3  # a quick link: the localhost rounds; its median round is replayed exactly
    assert link_predicted_ms(lat, link, "disco") == pytest.approx(link.disco_predicted_ms, rel=1e-9)
    assert link_predicted_ms(lat, link, "dense_tp") == pytest.approx(link.dense_tp_predicted_ms, rel=1e-9)
