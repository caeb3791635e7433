"""The link type (disco_zoo.timing.links), the emulator's delivery schedule and the byte
counter (no processes)."""
import time

import pytest

from disco_zoo.errors import DiscoZooError
from disco_zoo.runtime.link import LinkEmulator
from disco_zoo.timing.links import Link, parse_bandwidth, parse_latency
from disco_zoo.runtime.transport import ByteCounter, tag_id, wait_until


@pytest.mark.parametrize(
    "text, bps",
    [("100mbit", 1e8), ("10Mbit", 1e7), ("1gbit", 1e9), ("500kbit", 5e5), ("2.5mbit", 2.5e6), ("64bit", 64.0), (1e6, 1e6)],
)
def test_parse_bandwidth(text, bps):
    assert parse_bandwidth(text) == pytest.approx(bps)


@pytest.mark.parametrize("text, seconds", [("2ms", 0.002), ("500us", 5e-4), ("0.25s", 0.25), ("3", 3.0), (0.01, 0.01)])
def test_parse_latency(text, seconds):
    assert parse_latency(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["fast", "100 furlongs", "-5mbit", "0mbit", ""])
def test_bad_bandwidth_is_a_clear_error(bad):
    with pytest.raises(DiscoZooError, match="bandwidth"):
        parse_bandwidth(bad)


def test_bad_latency_is_a_clear_error():
    with pytest.raises(DiscoZooError, match="latency"):
        parse_latency("2 fortnights")


def test_profile_transfer_time_and_ideal():
    link = Link.parse("100mbit", "2ms")
    assert link.transfer_time(12_500_000) == pytest.approx(1.0)
    assert link.latency_s == pytest.approx(0.002)
    assert Link.parse(None, None).is_ideal
    assert Link(**link.to_dict()) == link == Link.from_dict(link.to_dict())
    assert link.seconds(12_500_000) == pytest.approx(1.002) and link.seconds(0) == 0.0  # no bytes: no message
    assert Link(float("inf"), 0.0) == Link() and Link(float("inf")).is_ideal  # one spelling of "unlimited"


def test_delivery_schedule_queues_on_one_link_and_not_across_links():
    emu = LinkEmulator(0, {(0, 1): Link(8e6, 0.5), (0, 2): Link(8e6, 0.5)})  # 1 MB/s
    # two 1 MB messages to rank 1 posted at t=0: the second waits for the first
    assert emu.delivery_time(1, 1_000_000, now=0.0) == pytest.approx(1.5)
    assert emu.delivery_time(1, 1_000_000, now=0.0) == pytest.approx(2.5)
    # a message to rank 2 does not queue behind them
    assert emu.delivery_time(2, 1_000_000, now=0.0) == pytest.approx(1.5)
    # after the link went idle, only latency + serialisation count
    assert emu.delivery_time(1, 500_000, now=10.0) == pytest.approx(11.0)


def test_emulator_knows_its_outgoing_links_and_which_incoming_ones_are_stamped():
    links = {(0, 1): Link(8e6, 0.5), (1, 0): Link(), (2, 0): Link(None, 0.01), (1, 2): Link(1e9)}
    emu = LinkEmulator(0, links)
    assert set(emu.profiles) == {1} and emu.sources == {2}  # (1, 0) is ideal: not emulated
    assert LinkEmulator(1, links).sources == {0} and set(LinkEmulator(1, links).profiles) == {2}
    assert not LinkEmulator(0, {(0, 1): Link()})


def test_wait_until_returns_at_its_time_not_before():
    for ahead in (0.0002, 0.003, 0.03):
        when = time.monotonic() + ahead
        wait_until(when)
        late = time.monotonic() - when
        assert 0 <= late < 0.02


def test_byte_counter_merge_counts_each_message_once():
    a, b = ByteCounter(), ByteCounter()
    a.add(0, 1, "conv1", 100)
    a.add(0, 1, "fc", 8)
    b.add(1, 0, "conv1", 60)
    merged = ByteCounter.merge([a.to_dict(), b.to_dict()])
    assert merged["pairs"] == {(0, 1): 108, (1, 0): 60}
    assert merged["tags"] == {"conv1": 160, "fc": 8}
    assert a.total == 108


def test_tag_ids_are_stable_and_in_mpi_range():
    assert tag_id("layer1.0.conv1") == tag_id("layer1.0.conv1")
    assert all(0 <= tag_id(f"t{i}") < 32768 for i in range(1000))
