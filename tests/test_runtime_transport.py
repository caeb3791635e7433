"""Transport on both backends: values, counted bytes, wire dtype, link emulation."""
import pytest

from disco_zoo.runtime.launch import launch
from disco_zoo.timing.links import Link
from disco_zoo.runtime.transport import ByteCounter

BACKENDS = ["mpi", "gloo"]


def _expected(rank: int, peer: int, numel: int) -> list[float]:
    """What selftest.exchange sends from ``peer`` to ``rank``."""
    import torch

    return (torch.arange(numel, dtype=torch.float32) / 3 + 100 * peer + 10 * rank).tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_exchange_values_and_bytes_per_pair_and_tag(backend):
    world, numel = 3, 6
    results = launch("disco_zoo.runtime.selftest:exchange", world, backend, args={"numel": numel}, timeout_s=20)
    for rank, res in enumerate(results):
        for peer in range(world):
            if peer != rank:
                assert res["got"][f"conv1:{peer}"] == _expected(rank, peer, numel)
    merged = ByteCounter.merge([r["bytes"] for r in results])
    per_message = numel * 4
    assert merged["pairs"] == {(s, d): 2 * per_message for s in range(world) for d in range(world) if s != d}
    assert merged["tags"] == {"conv1": world * (world - 1) * per_message, "fc": world * (world - 1) * per_message}


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp16_wire_halves_the_bytes_and_rounds_the_values(backend):
    numel = 6
    results = launch(
        "disco_zoo.runtime.selftest:exchange", 2, backend, args={"numel": numel, "tags": ["x"]},
        timeout_s=20, wire_dtype="fp16",
    )
    merged = ByteCounter.merge([r["bytes"] for r in results])
    assert merged["pairs"] == {(0, 1): numel * 2, (1, 0): numel * 2}
    got, exact = results[0]["got"]["x:1"], _expected(0, 1, numel)
    assert got != exact  # 100.333 is not representable in fp16 ...
    assert max(abs(g - e) for g, e in zip(got, exact)) < 0.1  # ... but close


@pytest.mark.parametrize("backend", BACKENDS)
def test_link_emulation_delivers_at_latency_plus_serialisation(backend):
    # 3 messages of 12.5 kB on 1 Mbit/s + 50 ms: 0.1 s each on the wire, queued
    link = Link.parse("1mbit", "50ms")
    results = launch(
        "disco_zoo.runtime.selftest:timed_send", 2, backend, args={"nbytes": 12500, "messages": 3},
        timeout_s=20, link=link,
    )
    arrivals = results[1]["arrivals"]
    for i, expected in enumerate([0.15, 0.25, 0.35]):
        assert expected - 0.005 <= arrivals[i] <= expected + 0.08, arrivals
    assert results[0]["send_s"] >= 0.345


@pytest.mark.parametrize("backend", BACKENDS)
def test_messages_on_emulated_links_keep_their_values_in_both_wire_dtypes(backend):
    # on an emulated link every message is followed by its delivery time: the payload must
    # come out exactly as it does with no link (fp16 rounds the same way)
    for wire_dtype in ("fp32", "fp16"):
        plain, stamped = (
            launch("disco_zoo.runtime.selftest:exchange", 3, backend, args={"numel": 7}, timeout_s=20,
                   wire_dtype=wire_dtype, link=link)
            for link in (None, Link.parse("1gbit", "1ms"))
        )
        assert [r["got"] for r in stamped] == [r["got"] for r in plain]
        assert [r["bytes"] for r in stamped] == [r["bytes"] for r in plain]  # the stamp is not counted


def test_per_pair_links_emulate_only_their_own_pair():
    # 0 -> 1 is slow (1 Mbit/s + 50 ms); the reverse direction has its own, fast link.
    links = {(0, 1): Link.parse("1mbit", "50ms"), (1, 0): Link.parse("1gbit")}
    results = launch("disco_zoo.runtime.selftest:timed_send", 2, "mpi", args={"nbytes": 12500},
                     timeout_s=20, link=links)
    assert 0.145 <= results[1]["arrivals"][0] <= 0.23


def test_without_emulation_a_message_is_fast():
    results = launch("disco_zoo.runtime.selftest:timed_send", 2, "mpi", args={"nbytes": 12500}, timeout_s=20)
    assert results[1]["arrivals"][0] < 0.05


def test_threads_per_rank_is_applied_on_every_rank():
    results = launch("disco_zoo.runtime.selftest:threads", 2, "mpi", timeout_s=20, threads_per_rank=2)
    assert [(r["rank"], r["torch_threads"], r["omp"]) for r in results] == [(0, 2, "2"), (1, 2, "2")]
