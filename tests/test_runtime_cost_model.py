"""The model of time (disco_zoo.timing): replay semantics on hand-written programs, and a
profile of a real DISCO model (disco_zoo.runtime.profiling) whose messages are exactly
the accounting's (so the wire time it predicts is for the right bytes). Agreement with
measured runs is a benchmark (bench/bench_disco_latency.py) and, on a real shaped link,
tests/test_runtime_netns.py."""
import pytest
import torch

from disco_zoo.disco.accounting import layer_shapes, wire_bytes_per_pair
from disco_zoo.errors import DiscoZooError
from disco_zoo.runtime.calibrate import measure_message_cost
from disco_zoo.runtime.profiling import profile_compute, run_without_wire
from disco_zoo.timing import ComputeProfile, Event, Link, MessageCost, RankProgram, predict_latency, replay
from helpers import DISCO_SHAPE, sparse_disco_folder

MB_PER_S = Link(8e6, 0.001)  # 1e6 bytes/s, 1 ms


def _programs(*programs: RankProgram) -> ComputeProfile:
    return ComputeProfile(list(programs))


def test_a_receiver_waits_for_serialisation_plus_latency():
    sender = RankProgram(0, [Event("send", 1, 7, 0.010, 1_000_000), Event("send_done", 1, 7, 0.0)], tail_s=0.002)
    receiver = RankProgram(1, [Event("recv", 0, 7, 0.002)], tail_s=0.005)
    profile = _programs(sender, receiver)
    # arrival 0.010 + 1.0 s on the wire + 1 ms; the receiver then computes 5 ms more
    assert predict_latency(profile, MB_PER_S) == pytest.approx(1.016)
    assert predict_latency(profile, None) == pytest.approx(0.015)  # ideal link: compute only
    assert predict_latency(profile, MB_PER_S, message_cost=0.002) == pytest.approx(1.018)
    # a per-byte software cost (copies) on top: 1e6 bytes x 1 ns
    assert predict_latency(profile, MB_PER_S, MessageCost(0.002, 1e-9)) == pytest.approx(1.019)
    assert profile.compute_s == pytest.approx([0.012, 0.007])


def test_posting_a_message_takes_the_senders_own_time():
    # rank 0 posts two small messages 1 ms apart, then computes 10 ms; each post costs it
    # 3 ms of its own time, which delays the second message and its end, not the first
    sender = RankProgram(0, [Event("send", 1, 1, 0.0, 10), Event("send", 1, 2, 0.001, 10)], tail_s=0.010)
    receiver = RankProgram(1, [Event("recv", 0, 1, 0.0), Event("recv", 0, 2, 0.0)])
    profile = _programs(sender, receiver)
    fast = Link(None, 0.001)
    assert predict_latency(profile, fast) == pytest.approx(0.011)
    cost = MessageCost(send_fixed_s=0.003)
    assert cost.sender(10) == pytest.approx(0.003) and cost(10) == 0.0
    # second post at 0.003 + 0.001, arrives 1 ms later; the sender ends at 0.004 + 0.003 + 0.010
    assert predict_latency(profile, fast, cost) == pytest.approx(0.017)
    assert predict_latency(_programs(RankProgram(0, [Event("send", 1, 1, 0.0, 10)]), RankProgram(1, [Event("recv", 0, 1, 0.0)])),
                           fast, cost) == pytest.approx(0.003)  # the receiver is not slowed: 1 ms after the post


def test_back_to_back_sends_queue_on_one_link_but_not_across_links():
    two_to_one = RankProgram(0, [Event("send", 1, 1, 0.0, 500_000), Event("send", 1, 2, 0.0, 500_000)])
    receiver = RankProgram(1, [Event("recv", 0, 1, 0.0), Event("recv", 0, 2, 0.0)])
    assert predict_latency(_programs(two_to_one, receiver), MB_PER_S) == pytest.approx(1.001)

    # a per-pair map: 0->1 slow, 0->2 fast; the sends overlap
    fan_out = RankProgram(0, [Event("send", 1, 1, 0.0, 500_000), Event("send", 2, 1, 0.0, 500_000)])
    links = {(0, 1): MB_PER_S, (0, 2): Link(80e6, 0.0)}
    profile = _programs(fan_out, RankProgram(1, [Event("recv", 0, 1, 0.0)]), RankProgram(2, [Event("recv", 0, 1, 0.0)]))
    assert predict_latency(profile, links) == pytest.approx(0.501)


def test_exchange_overlaps_compute_as_the_executor_does():
    # each rank posts its send, computes its diagonal block (30 ms), then waits
    def rank(k: int) -> RankProgram:
        return RankProgram(k, [Event("send", 1 - k, 3, 0.0, 10_000), Event("recv", 1 - k, 3, 0.030),
                               Event("send_done", 1 - k, 3, 0.0)], tail_s=0.010)
    # 10 kB at 1 MB/s = 10 ms + 1 ms < 30 ms of compute: the link is hidden
    assert predict_latency(_programs(rank(0), rank(1)), MB_PER_S) == pytest.approx(0.040)


def test_a_program_waiting_for_a_message_never_sent_is_an_error():
    lonely = RankProgram(0, [Event("recv", 1, 9, 0.0)])
    with pytest.raises(DiscoZooError, match="deadlock"):
        predict_latency(_programs(lonely, RankProgram(1, [])), MB_PER_S)


def test_profile_of_a_real_model_moves_exactly_the_accounted_bytes(tmp_path):
    folder, model, part = sparse_disco_folder(tmp_path, 2)
    profile = profile_compute(folder, DISCO_SHAPE, repeats=1, warmup=0)
    expected = wire_bytes_per_pair(part, layer_shapes(model, tuple(DISCO_SHAPE)), tuple(DISCO_SHAPE), 4)
    assert profile.bytes_per_pair == expected
    assert all(c > 0 for c in profile.compute_s)
    # with an ideal link nothing waits longer than the slower rank's compute, give or
    # take the other rank's lead; a slow link cannot beat its own serialisation time
    ideal = predict_latency(profile, None)
    assert max(profile.compute_s) <= ideal <= sum(profile.compute_s)
    slow = Link.parse("10mbit")
    assert predict_latency(profile, slow) >= max(ideal, slow.transfer_time(max(expected.values())))
    assert torch.get_num_threads() == 1  # the profile restores the caller's threads


def test_message_cost_is_measured_small_and_positive():
    cost = measure_message_cost("mpi", emulated=True, iters=20)
    assert cost.fixed_s > 0 and cost.per_byte_s >= 0
    assert cost.send_fixed_s > 0 and cost.send_per_byte_s >= 0 and cost.sender(1 << 20) < 0.05
    assert cost(1 << 20) < 0.05


def test_running_without_wire_restores_the_transport_and_emulator():
    from disco_zoo.runtime.link import LinkEmulator
    from disco_zoo.runtime.null_backend import NullBackend
    from disco_zoo.runtime.transport import Transport

    backend = NullBackend(0, 2)
    t = Transport(backend, links=Link.parse("1mbit"))
    emulator = t._emulator
    assert isinstance(emulator, LinkEmulator)

    def forward():
        assert t._emulator is None and t.backend is not backend  # no link, no wire while profiling
        t.isend(torch.zeros(250), 1, "a").wait()
        got = t.irecv((4, 8), torch.float32, 1, "b").wait()
        assert got.std() > 0.5  # noise, not constants: conv on constant data runs faster than on real data
        return 0

    program = run_without_wire(t, forward)
    assert t.backend is backend and t._emulator is emulator
    assert [(e.kind, e.peer, e.nbytes) for e in program.events] == [("send", 1, 1000), ("send_done", 1, 0), ("recv", 1, 0)]
    assert RankProgram.from_dict(program.to_dict()) == program


def test_replay_traces_labelled_compute_segments_for_a_timeline():
    # rank 0 computes 'a' (2 s), sends 1e6 bytes (1 s + 1 ms) and computes 'b' (1 s);
    # rank 1 waits, then computes 'c' (0.5 s)
    sender = RankProgram(0, [Event("compute", -1, "", 2.0, 0, "a"), Event("send", 1, "x", 0.0, 1_000_000),
                             Event("compute", -1, "", 1.0, 0, "b")])
    receiver = RankProgram(1, [Event("recv", 0, "x", 0.0), Event("compute", -1, "", 0.5, 0, "c")])
    played = replay(ComputeProfile([sender, receiver]), MB_PER_S, trace=True)
    assert [(s.label, s.start_s, s.end_s) for s in played.segments[0]] == [("a", 0.0, 2.0), ("b", 2.0, 3.0)]
    ((label, start, end),) = [(s.label, s.start_s, s.end_s) for s in played.segments[1]]
    assert label == "c" and start == pytest.approx(3.001) and end == pytest.approx(3.501)
    assert played.latency_s == pytest.approx(3.501) == predict_latency(ComputeProfile([sender, receiver]), MB_PER_S)
    assert RankProgram.from_dict(sender.to_dict()) == sender  # labels survive the JSON form
