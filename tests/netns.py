"""Two Linux network namespaces joined by a veth pair shaped with ``tc`` (a test helper).

    with veth_pair("50mbit") as link:
        subprocess.run(link.exec_cmd(0, [...]))   # runs in namespace 0, address link.addrs[0]

Both veth ends are named ``link.iface`` (each lives in its own namespace), so one env
(``GLOO_SOCKET_IFNAME``, ``UCX_NET_DEVICES``, ...) serves every rank. Each direction is
shaped on its sender's egress by a token bucket (``tbf``: no netem needed, no added delay).
The route between the two sets ``quickack``, so every TCP segment is acknowledged at
once: without it, a delayed ACK now and then stalls a transfer for 40 ms, which no link
model predicts.

What the shaper counts: tbf charges every Ethernet frame (IP packet + 14 bytes; it cuts
GSO packets into frames itself). A TCP segment carries ``mss = mtu - 52`` payload bytes
(20 IP + 20 TCP + 12 timestamp option) in an ``mtu + 14`` byte frame, and each segment
coming the other way puts one 66-byte ACK frame on this direction. So, with
``reverse`` = payload bytes the other way / payload bytes this way,
``payload_rate_bps(rate, mtu, reverse) = rate * mss / (mtu + 14 + 66 * reverse)``:
95.6% of the rate one way, 91.6% when both directions carry as much (MTU 1500).

Namespaces are named ``dzns<pid>-<n>a|b`` and deleted on exit (which deletes the veth);
:func:`clean_stale` removes those left by a process that is gone (a killed run).
"""
from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from disco_zoo.runtime.launch import pid_alive

__all__ = ["VethLink", "veth_pair", "unavailable_reason", "clean_stale", "payload_rate_bps", "PREFIX"]

PREFIX = "dzns"
IFACE = "dzveth"
SUBNET = "10.213.7"
ETH_HEADER = 14  # what tbf counts per frame beyond the IP packet
TCP_IP_HEADERS = 20 + 20 + 12  # IPv4 + TCP + timestamp option (Linux default)
ACK_FRAME = TCP_IP_HEADERS + ETH_HEADER
_counter = itertools.count()


def payload_rate_bps(rate_bps: float, mtu: int = 1500, reverse: float = 0.0) -> float:
    """TCP payload bits/s through a shaper of ``rate_bps`` that counts Ethernet frames,
    when the other direction carries ``reverse`` times as many payload bytes (each of
    its segments is acknowledged by one ACK frame sent this way)."""
    return rate_bps * (mtu - TCP_IP_HEADERS) / (mtu + ETH_HEADER + ACK_FRAME * reverse)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def _namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def clean_stale(prefix: str = PREFIX) -> list[str]:
    """Delete the namespaces ``<prefix><pid>-...`` whose pid no longer runs."""
    removed = []
    for name in _namespaces():
        match = re.fullmatch(re.escape(prefix) + r"(\d+)-(?:\d+[ab]|probe)", name)
        if match and not pid_alive(int(match.group(1))):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


def unavailable_reason() -> str | None:
    """Why namespaces + veth + tbf cannot be set up here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root (ip netns, tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs iproute2's {tool!r}"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        steps = [
            ["ip", "netns", "add", probe],
            ["ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1"],
            ["tc", "-n", probe, "qdisc", "add", "dev", "p0", "root", "tbf",
             "rate", "50mbit", "burst", "6kb", "limit", "1mb"],
        ]
        for cmd in steps:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            if res.returncode != 0:
                return f"'{' '.join(cmd[:4])} ...' failed: {res.stderr.strip()}"
    except (OSError, subprocess.SubprocessError) as err:
        return f"cannot set up network namespaces: {err}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


@dataclass(frozen=True)
class VethLink:
    namespaces: tuple[str, str]
    iface: str
    addrs: tuple[str, str]
    rate_bps: float
    mtu: int

    def exec_cmd(self, side: int, cmd: list[str]) -> list[str]:
        """``cmd`` run inside namespace ``side`` (0 or 1)."""
        return ["ip", "netns", "exec", self.namespaces[side], *cmd]

    def sent_bytes(self, side: int) -> int:
        """Bytes the shaper of ``side`` has let out so far (frames, headers included)."""
        out = subprocess.run(["tc", "-s", "-n", self.namespaces[side], "qdisc", "show", "dev", self.iface],
                             capture_output=True, text=True, timeout=20).stdout
        match = re.search(r"Sent (\d+) bytes", out)
        return int(match.group(1)) if match else 0


@contextmanager
def veth_pair(rate: str = "50mbit", mtu: int = 1500) -> Iterator[VethLink]:
    """Two fresh namespaces and a veth between them, each direction shaped to ``rate``;
    torn down whatever happens."""
    from disco_zoo.runtime.link import parse_bandwidth

    clean_stale()
    n = next(_counter)
    names = (f"{PREFIX}{os.getpid()}-{n}a", f"{PREFIX}{os.getpid()}-{n}b")
    addrs = (f"{SUBNET}.1", f"{SUBNET}.2")
    created = []
    try:
        for ns in names:
            _ip("netns", "add", ns)
            created.append(ns)
        # made straight inside the namespaces: its names cannot clash with anything outside
        _ip("link", "add", IFACE, "netns", names[0], "mtu", str(mtu), "type", "veth",
            "peer", "name", IFACE, "netns", names[1], "mtu", str(mtu))
        for ns, addr in zip(names, addrs):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", IFACE)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", IFACE, "up")
            _ip("-n", ns, "route", "change", f"{SUBNET}.0/24", "dev", IFACE, "quickack", "1")
            # a few frames of burst: the rate holds on a millisecond scale
            res = subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", IFACE, "root", "tbf", "rate", rate,
                                  "burst", str(max(4 * (1500 + ETH_HEADER), 2 * (mtu + ETH_HEADER))), "limit", "4mb"],
                                 capture_output=True, text=True, timeout=20)
            if res.returncode != 0:
                raise RuntimeError(f"tc tbf in {ns}: {res.stderr.strip()}")
        yield VethLink(names, IFACE, addrs, parse_bandwidth(rate), mtu)
    finally:
        for ns in created:
            _ip("netns", "del", ns, check=False)
