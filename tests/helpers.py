"""Shared test helpers (tests never import each other; append new helpers below)."""
from __future__ import annotations

import glob
import ipaddress
import itertools
import os
import random
import re
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from disco_zoo.runtime.launch import pid_alive

# -- planner: tiny hand-built nets and profiles ----------------------------------------


class Branchy(nn.Module):
    """Conv stem, a residual add, a two-branch channel concat, a pooled head."""

    def __init__(self, k1: int = 3, s1: int = 1, k2: int = 3, d2: int = 1, pool: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, k1, stride=s1, padding=k1 // 2)
        self.bn = nn.BatchNorm2d(8)
        self.a = nn.Conv2d(8, 8, k2, padding=d2 * (k2 // 2), dilation=d2)
        self.b1 = nn.Conv2d(8, 4, 1)
        self.b2 = nn.Conv2d(8, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(pool, stride=pool, ceil_mode=True)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = x + torch.relu(self.a(x))
        x = torch.cat([self.b1(x), self.b2(x)], dim=1)
        x = self.pool(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def random_profile(rng: random.Random, n: int) -> object:
    from disco_zoo.planner import profile_from_dict

    devices = [{"name": f"d{i}", "flops": rng.choice([1e6, 3e6, 1e7, 4e7])} for i in range(n)]
    pairs = [{"between": [f"d{i}", f"d{j}"], "bandwidth_bps": rng.choice([1e5, 1e6, 1e7, 1e8]),
              "latency_s": rng.choice([0.0, 1e-4, 1e-3])}
             for i in range(n) for j in range(i + 1, n) if rng.random() < 0.7]
    return profile_from_dict({"devices": devices, "links": {
        "default": {"bandwidth_bps": rng.choice([1e6, 1e7]), "latency_s": 1e-4}, "pairs": pairs}})


def three_devices(memory: float | None = None) -> object:
    from disco_zoo.planner import profile_from_dict

    mem = {} if memory is None else {"memory_bytes": memory}
    return profile_from_dict({"devices": [{"name": "a", "flops": 2e7, **mem}, {"name": "b", "flops": 1e7, **mem},
                                          {"name": "c", "flops": 5e6, **mem}],
                              "links": {"default": {"bandwidth_bps": 1e8, "latency_s": 1e-4}}})


# -- runtime: small DISCO models saved as shards, and the executor check ---------------

DISCO_SHAPE = [2, 3, 32, 32]
DISCO_ENTRY = "disco_zoo.runtime.disco_executor:run_disco"
TINY_VIT = ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "embed_dim": 64, "num_heads": 4, "depth": 2})
TINY_SWIN = (
    "swin_tiny_patch4_window7_224",
    {"img_size": 32, "window_size": 4, "embed_dim": 32, "depths": (1, 1, 2, 1), "num_heads": (4, 4, 4, 4)},
)


def sparse_disco_folder(tmp_path, nodes, ratios=None, seed=0, arch="resnet18", args=None):
    """``arch`` (10 classes) over ``nodes`` nodes with random S_kj subsets, random BN
    statistics and some own channels compute-pruned, saved as shards; returns (folder,
    masked model, partition). (:func:`graph_disco_folder` with the classifier's size set.)"""
    return graph_disco_folder(tmp_path, arch, nodes, ratios, {**(args or {}), "num_classes": 10}, seed)


def check_disco_run(folder, model, part, backend, nodes, wire_dtype="fp32", shape=None):
    """Run the DISCO executor on ``folder``: its output equals the masked model's, and its
    bytes equal the accounting's (layer exchanges and the image scatter), per tag and pair."""
    from disco_zoo.disco.accounting import disco_traffic, input_pair_bytes, layer_shapes
    from disco_zoo.disco.adapters import apply_partition
    from disco_zoo.runtime.disco_executor import INPUT_TAG, disco_tags
    from disco_zoo.runtime.session import run_entry, seeded_input

    shape = shape or DISCO_SHAPE
    x = seeded_input(shape, 0)  # what run_disco feeds with seed 0
    with torch.no_grad():
        ref = model(x)
        dense = apply_partition(model, part.with_all_open())(x)
    apply_partition(model, part)
    from torch.utils._pytree import tree_leaves

    # the masks matter: a wrong exchange would show
    assert max((d - r).abs().max().item() for d, r in zip(tree_leaves(dense), tree_leaves(ref))) > 1e-3
    assert any(any(layer.dropped) for layer in part.layers.values() if layer.mode == "split")

    run = run_entry(DISCO_ENTRY, nodes, backend, args={"folder": str(folder), "input_shape": shape}, timeout_s=30,
                    wire_dtype=wire_dtype)
    from torch.utils._pytree import tree_flatten

    (outs, out_spec), (refs, ref_spec) = tree_flatten(run.output), tree_flatten(ref)
    assert out_spec == ref_spec  # the model's structure (tensor, tuple, dict) is kept
    for out, ref in zip(outs, refs):
        assert out.shape == ref.shape
        tolerance = 1e-4 if wire_dtype == "fp32" else 5e-2 * ref.abs().max().item()
        assert (out - ref).abs().max().item() <= tolerance

    dtype_bytes = 4 if wire_dtype == "fp32" else 2
    per_layer, per_pair = disco_traffic(part, layer_shapes(model, tuple(shape)), dtype_bytes)
    layer_of = {tag: name for name, tag in disco_tags(part).items()}  # the tag policy may salt a colliding name
    tags = {layer_of[tag]: n for tag, n in run.bytes["tags"].items()}
    image = input_pair_bytes(part, tuple(shape), dtype_bytes)
    assert tags.pop(INPUT_TAG) == sum(image.values())
    assert tags == {name: n for name, n in per_layer.items() if n}
    expected_pairs = dict(per_pair)
    for pair, n in image.items():
        expected_pairs[pair] = expected_pairs.get(pair, 0) + n
    assert run.bytes["pairs"] == {p: n for p, n in expected_pairs.items() if n}
    # each rank holds only its own shard: fewer parameters than the whole model
    total = sum(p.numel() for p in model.parameters())
    assert all(r["params"] < total for r in run.per_rank)
    return run.per_rank


# -- runtime: an in-process backend, so several nodes' layers can run in one test ------


class LoopbackHub:
    """Mailboxes shared by the :class:`LoopbackBackend` of every node in one process."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._boxes: dict = {}

    def box(self, src: int, dst: int, tag: int):
        import queue

        with self._lock:
            return self._boxes.setdefault((src, dst, tag), queue.Queue())


class LoopbackBackend:
    """A real wire inside one process: a send is queued for its receiver, a receive takes
    it (run each node in its own thread). Unlike the NullBackend, receives get the data
    that was sent, so several nodes' runtime layers can be checked against one model."""

    name = "loopback"

    def __init__(self, hub: LoopbackHub, rank: int, world_size: int) -> None:
        self.hub, self.rank, self.world_size = hub, rank, world_size

    def post_send(self, buf: torch.Tensor, dst: int, tag: int) -> None:
        self.hub.box(self.rank, dst, tag).put(buf.clone())

    def post_recv(self, buf: torch.Tensor, src: int, tag: int):
        return buf, src, tag

    def wait(self, request, deadline: float) -> bool:
        import queue
        import time

        if request is None:
            return True
        buf, src, tag = request
        try:
            buf.copy_(self.hub.box(src, self.rank, tag).get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            return False
        return True

    def post_barrier(self) -> None:
        return None

    def close(self) -> None:
        pass


def run_nodes(fn, nodes: int) -> list:
    """``fn(k)`` for every node k, each in its own thread (so their exchanges can meet); results in node order."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(nodes) as pool:
        return list(pool.map(fn, range(nodes)))


class LoopbackNodes:
    """A DISCO folder's nodes, each with its own shard, over one in-process wire: every
    call is one inference of the whole model (rank 0 gets the image), with the bytes it
    put on the wire (the transports' counters, merged)."""

    def __init__(self, folder, nodes: int, timeout_s: float = 30) -> None:
        from disco_zoo.runtime.disco_executor import build_node_model
        from disco_zoo.runtime.transport import Transport

        hub = LoopbackHub()
        self.nodes = nodes
        self.transports = [Transport(LoopbackBackend(hub, k, nodes), timeout_s=timeout_s) for k in range(nodes)]
        self.models = [build_node_model(folder, t)[0] for t in self.transports]

    def __call__(self, part, shape: list[int], x: torch.Tensor) -> tuple[list, dict]:
        from disco_zoo.runtime.disco_executor import inference_fn
        from disco_zoo.runtime.transport import ByteCounter

        for t in self.transports:
            t.counter.reset()
        with torch.inference_mode():
            outs = run_nodes(lambda k: inference_fn(self.transports[k], self.models[k], part, shape,
                                                    x if k == 0 else None)(), self.nodes)
        return outs, ByteCounter.merge([t.counter.to_dict() for t in self.transports])


# -- faults: processes, listening sockets (from /proc) ----------------------------------


def processes_mentioning(text: str) -> list[int]:
    """Pids (other than ours) whose command line contains ``text``, zombies excluded."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().decode(errors="replace")
            with open(f"/proc/{entry}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.split("/")[2]))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def _address(hex_address: str) -> str:
    """/proc/net/tcp{,6}'s little-endian hex address -> text."""
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def listening_addresses(pids: list[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that one of ``pids`` holds."""
    inodes = set()
    for pid in pids:
        for fd in glob.glob(f"/proc/{pid}/fd/*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.read().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN
                    address, port = fields[1].split(":")
                    found.append((_address(address), int(port, 16)))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


# -- data: a small ImageFolder of real PNG files ----------------------------------------


def write_image_folder(root, classes=("cat", "dog"), per_class=3, size=(40, 50)):
    """``root/<class>/<i>.png``: class c, image i has a constant red channel 60c + 20i
    (the first image of a class is greyscale: it must load as 3 channels too)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((*size, 3), (60 * c + 20 * i) % 256, dtype=np.uint8)
            pixels[..., 2] = rng.integers(0, 255, size)
            mode = "L" if i == 0 else "RGB"
            Image.fromarray(pixels[..., 0] if mode == "L" else pixels).save(root / name / f"{i}.png")
    return root


# -- network namespaces: two hosts joined by a tc-shaped veth pair ----------------------
# Two Linux network namespaces joined by a veth pair shaped with ``tc`` (a test helper).
#
#     with veth_pair("50mbit") as link:
#         subprocess.run(link.exec_cmd(0, [...]))   # runs in namespace 0, address link.addrs[0]
#
# Both veth ends are named ``link.iface`` (each lives in its own namespace), so one env
# (``GLOO_SOCKET_IFNAME``, ``UCX_NET_DEVICES``, ...) serves every rank. Each direction is
# shaped on its sender's egress by a token bucket (``tbf``: no netem needed, no added delay).
# The route between the two sets ``quickack``, so every TCP segment is acknowledged at
# once: without it, a delayed ACK now and then stalls a transfer for 40 ms, which no link
# model predicts.
#
# What the shaper counts: tbf charges every Ethernet frame (IP packet + 14 bytes; it cuts
# GSO packets into frames itself). A TCP segment carries ``mss = mtu - 52`` payload bytes
# (20 IP + 20 TCP + 12 timestamp option) in an ``mtu + 14`` byte frame, and each segment
# coming the other way puts one 66-byte ACK frame on this direction. So, with
# ``reverse`` = payload bytes the other way / payload bytes this way,
# ``payload_rate_bps(rate, mtu, reverse) = rate * mss / (mtu + 14 + 66 * reverse)``:
# 95.6% of the rate one way, 91.6% when both directions carry as much (MTU 1500).
#
# Namespaces are named ``dzns<pid>-<n>a|b`` and deleted on exit (which deletes the veth);
# :func:`clean_stale` removes those left by a process that is gone (a killed run).

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
    from disco_zoo.timing.links import parse_bandwidth

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


# -- hub: a local stand-in for the Hugging Face Hub and its cache -------------------------


def fake_hub_download(remote: dict, cache, calls: list):
    """A ``snapshot_download`` that serves ``remote`` ({repo_id: folder}) into ``cache``
    laid out as huggingface_hub lays it out (``models--org--name/snapshots/<commit>``),
    copying only the files huggingface_hub's own pattern filter keeps. Each call's
    repo id and allow_patterns go to ``calls``; offline, only the cache is read."""
    from pathlib import Path

    from huggingface_hub.utils import filter_repo_objects

    commit = "0123456789abcdef0123456789abcdef01234567"

    def download(repo_id, local_files_only=False, allow_patterns=None, **_):
        calls.append({"repo_id": repo_id, "allow_patterns": allow_patterns, "offline": local_files_only})
        repo_dir = Path(cache) / f"models--{repo_id.replace('/', '--')}"
        snapshot = repo_dir / "snapshots" / commit
        if local_files_only:
            if not snapshot.is_dir():
                raise FileNotFoundError(f"{repo_id} not in the cache")
            return str(snapshot)
        if repo_id not in remote:
            raise FileNotFoundError(f"{repo_id} not on the hub")
        source = Path(remote[repo_id])
        names = sorted(p.name for p in source.iterdir() if p.is_file())
        snapshot.mkdir(parents=True, exist_ok=True)
        for name in filter_repo_objects(names, allow_patterns=allow_patterns):
            (snapshot / name).write_bytes((source / name).read_bytes())
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / "main").write_text(commit)
        return str(snapshot)

    return download


def copy_to_hf_cache(folder, cache, repo_id: str):
    """Lay ``folder`` out in a Hugging Face cache as a downloaded snapshot; its path."""
    from pathlib import Path

    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo_dir = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for item in Path(folder).iterdir():
        (snapshot / item.name).write_bytes(item.read_bytes())
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


# -- onnx engine: an exported tiny DISCO model and the bytes the accounting predicts ----

ONNX_ENTRY = "disco_zoo.edge.runner:run_program"
TORCH_NODE_ENTRY = "disco_zoo.export.engines:run_torch_node"


def exported_tiny_disco(root, shape=None):
    """A sparse, compute-pruned 2-node resnet18 (``sparse_disco_folder``) exported to
    ``root/onnx``, with the seeded input saved as ``root/x.npy``; returns (shard folder,
    masked model, partition, export root, input path)."""
    import numpy as np

    from disco_zoo.export.onnx_node import export_onnx
    from disco_zoo.runtime.session import seeded_input

    shape = shape or DISCO_SHAPE
    folder, model, part = sparse_disco_folder(root, 2)
    export_onnx(folder, root / "onnx", shape)
    np.save(root / "x.npy", seeded_input(shape, 0).numpy())
    return folder, model, part, root / "onnx", root / "x.npy"


def expected_disco_bytes(model, part, shape, dtype_bytes=4):
    """(bytes per tag, bytes per (src, dst) pair) of one DISCO inference, image scatter
    included, as the accounting predicts them."""
    from disco_zoo.disco.accounting import disco_traffic, input_pair_bytes, layer_shapes
    from disco_zoo.graph.stages import core_input_shape
    from disco_zoo.runtime.disco_executor import INPUT_TAG, disco_tags

    per_layer, per_pair = disco_traffic(part, layer_shapes(model, tuple(shape)), dtype_bytes)
    image = input_pair_bytes(part, core_input_shape(model, tuple(shape)), dtype_bytes)  # what is scattered
    tags = disco_tags(part)
    by_tag = {tags[name]: n for name, n in per_layer.items() if n}
    by_tag[INPUT_TAG] = sum(image.values())
    pairs = dict(per_pair)
    for pair, n in image.items():
        pairs[pair] = pairs.get(pair, 0) + n
    return by_tag, {p: n for p, n in pairs.items() if n}


# -- graph adapter: tiny DAGs in the shapes of the segmentation and SR zoo -------------------


class TinyEDSR(nn.Module):
    """EDSR-baseline in miniature: conv head, residual blocks conv-relu-conv scaled by
    ``res_scale``, global skip add, conv -> pixel_shuffle(2) upsampler, final conv."""

    def __init__(self, channels: int = 8, blocks: int = 2, res_scale: float = 0.1) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))
            for _ in range(blocks)
        )
        self.body_tail = nn.Conv2d(channels, channels, 3, padding=1)
        self.res_scale = res_scale
        self.upsample = nn.Sequential(nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2))
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        res = x
        for block in self.body:
            res = res + block(res) * self.res_scale
        res = self.body_tail(res) + x
        return self.tail(self.upsample(res))


class TinyESPCN(nn.Module):
    """ESPCN x2: conv5x5-tanh, conv3x3-tanh, conv3x3 -> 3 * r^2, pixel_shuffle (the head)."""

    def __init__(self, channels: int = 8, scale: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 5, padding=2)
        self.conv2 = nn.Conv2d(channels, channels // 2, 3, padding=1)
        self.conv3 = nn.Conv2d(channels // 2, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        return self.shuffle(self.conv3(x))


class TinyGroupedTwoOutputs(nn.Module):
    """Depthwise and grouped convs, a squeeze-excitation scale, a concat, an inner pixel
    shuffle, and two outputs: a split feature map (gathered) and a reduced head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.grouped = nn.Conv2d(16, 8, 3, padding=1, groups=4)  # in != out channels per group
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 1),
                                nn.Hardsigmoid())
        self.side = nn.Conv2d(16, 8, 1)
        self.up = nn.Conv2d(16, 16, 1)
        self.feat = nn.Conv2d(4, 6, 3, padding=1, stride=2)
        self.feat_bn = nn.BatchNorm2d(6)
        self.head = nn.Conv2d(16, 5, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.relu(self.bn(self.stem(x)))
        x = x + nn.functional.hardswish(self.dw(x))
        g = self.grouped(x)
        g = g * self.se(g)
        y = torch.cat([g, self.side(x)], dim=1)
        shuffled = nn.functional.pixel_shuffle(self.up(y), 2)  # 16 -> 4 channels at twice the size
        features = torch.relu(self.feat_bn(self.feat(shuffled)))
        return features, nn.functional.interpolate(self.head(y), scale_factor=2.0, mode="bilinear")


class TinyGroupNormHead(nn.Module):
    """FCOS/RetinaNet-style conv + GroupNorm tower (groups of 4 and of 2 channels) with a
    residual add, ending in a spatial conv head (reduced on the root)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.gn1 = nn.GroupNorm(4, 16)
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.gn2 = nn.GroupNorm(8, 16)
        self.head = nn.Conv2d(16, 5, 3, padding=1)
        generator = torch.Generator().manual_seed(1)
        for gn in (self.gn1, self.gn2):  # not the identity affine, so a wrong slice shows
            gn.weight.data = torch.rand(16, generator=generator) + 0.5
            gn.bias.data = torch.randn(16, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.gn1(self.stem(x)))
        x = x + torch.relu(self.gn2(self.conv(x)))
        return self.head(x)


class TinyTwoLevelHead(nn.Module):
    """A detector's head layout: a GroupNorm tower on two pyramid levels, one conv head per
    level (reduced on the root), each flattened to (batch, positions, classes) and joined."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 8, 3, padding=1, stride=2)
        self.gn = nn.GroupNorm(4, 8)
        self.head_fine = nn.Conv2d(8, 3, 3, padding=1)
        self.head_coarse = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine = torch.relu(self.stem(x))
        coarse = torch.relu(self.gn(self.down(fine)))
        outs = []
        for head, feature in ((self.head_fine, fine), (self.head_coarse, coarse)):
            y = head(feature)
            n, c, h, w = y.shape
            outs.append(y.view(n, c, h * w).permute(0, 2, 1).reshape(n, -1, c))
        return torch.cat(outs, dim=1)


class TinyMeanShift(nn.Module):
    """EDSR-style mean shift on the image and after the head, and a per-channel layer scale."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean_in", torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))
        self.register_buffer("mean_out", torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, 8).view(1, 8, 1, 1))
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x - self.mean_in)
        x = x + torch.relu(x) * self.gamma
        return self.tail(x) + self.mean_out


def tiny_deeplabv3(num_classes: int = 11) -> nn.Module:
    """torchvision's DeepLabV3 over a torchvision resnet18 backbone (output stride 32:
    torchvision's BasicBlock does not take dilation), random weights."""
    from torchvision.models import resnet18
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

    return DeepLabV3(IntermediateLayerGetter(resnet18(), {"layer4": "out"}), DeepLabHead(512, num_classes))


def tiny_lraspp(num_classes: int = 11) -> nn.Module:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm statistics and affine terms away from their init, so a wrong slice shows."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
    return model


def graph_disco_folder(tmp_path, arch, nodes, ratios=None, args=None, seed=0):
    """Like :func:`sparse_disco_folder` for any registered ``arch`` built with exactly
    ``args``: random S_kj, some own channels compute-pruned, random BatchNorm; saved as
    shards; returns (folder, masked model, partition)."""
    from disco_zoo.disco.adapters import apply_partition, get_partition, to_disco
    from disco_zoo.disco.shards import save_shards
    from disco_zoo.registry import build_model

    torch.manual_seed(seed)
    model = randomise_batchnorm(to_disco(build_model(arch, **(args or {})), nodes, ratios).eval(), seed)
    rng = random.Random(seed)
    part = get_partition(model).with_random_selection(rng)
    for layer in part.layers.values():
        if layer.mode == "split":
            layer.dropped = [sorted(c for c in own if rng.random() < 0.1) for own in layer.in_groups]
    apply_partition(model, part)
    folder = tmp_path / "shards"
    save_shards(model, folder, extra={"arch": arch, "args": args or {}})
    return folder, model, part
# -- segmentation: a tiny hand-made mask folder -----------------------------------------


def write_mask_folder(root, count=3, size=(32, 64), classes=("background", "a", "b"), split="train"):
    """``root/split/{images,masks}/<i>.png`` and ``root/classes.txt``: image i's left half
    is class 1 (red), its right half class 2 (green), its first row ignored (255); size is
    (height, width). Returns the split folder."""
    import numpy as np
    from PIL import Image

    height, width = size
    folder = root / split
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(count):
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[:, : width // 2], mask[:, width // 2:] = 1, 2
        mask[0] = 255
        image = np.zeros((height, width, 3), dtype=np.uint8)
        image[mask == 1, 0], image[mask == 2, 1] = 200, 200
        Image.fromarray(image).save(folder / "images" / f"{i}.png")
        Image.fromarray(mask, mode="L").save(folder / "masks" / f"{i}.png")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return folder


def write_coco_folder(root, splits=("train", "val"), size=(32, 24), count=2):
    """A tiny COCO folder: per split ``count`` random ``size`` (w, h) PNGs in ``split/images``
    and ``annotations/instances_<split>.json`` with two boxes per image, categories 1 "a" and 3 "c"."""
    import json
    from pathlib import Path

    import numpy as np
    from PIL import Image

    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in splits:
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            name = f"{i:03d}.png"
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), mode="RGB").save(
                root / split / "images" / name)
            images.append({"id": 10 + i, "file_name": name, "width": size[0], "height": size[1]})
            for j, (box, category) in enumerate((([2, 3, 10, 8], 1), ([12.5, 4, 15, 12], 3))):
                annotations.append({"id": 100 * i + j + 1, "image_id": 10 + i, "category_id": category, "bbox": box,
                                    "area": box[2] * box[3], "iscrowd": 0})
        document = {"images": images, "annotations": annotations,
                    "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "c"}]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(document))
    return root


class TinySharedHead(nn.Module):
    """A two-level FPN with a detector head shared across its levels: one conv + GroupNorm
    tower and one conv head (reduced on the root), each called once per level on maps of
    different sizes; each level's head map is flattened and the levels joined. The tower's
    level-1 features are a second output (gathered on the root) unless ``features`` is False."""

    def __init__(self, features: bool = True) -> None:
        super().__init__()
        self.features = features
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 8, 3, padding=1, stride=2)
        self.lat_fine = nn.Conv2d(8, 8, 1)
        self.lat_coarse = nn.Conv2d(8, 8, 1)
        self.tower = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.ReLU())
        self.cls = nn.Conv2d(8, 3, 3, padding=1)
        generator = torch.Generator().manual_seed(1)
        gn = self.tower[1]  # not the identity affine, so a wrong slice shows; a positive
        gn.weight.data = torch.rand(8, generator=generator) + 0.5  # shift keeps the ReLU after it alive
        gn.bias.data = torch.rand(8, generator=generator) + 0.5

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        fine = torch.relu(self.stem(x))
        coarse = torch.relu(self.down(fine))
        p_coarse = self.lat_coarse(coarse)
        p_fine = self.lat_fine(fine) + nn.functional.interpolate(p_coarse, scale_factor=2.0, mode="nearest")
        outs, features = [], []
        for level in (p_fine, p_coarse):
            features.append(self.tower(level))
            y = self.cls(features[-1])
            n, c, h, w = y.shape
            outs.append(y.view(n, c, h * w).permute(0, 2, 1))
        return (torch.cat(outs, dim=1), features[1]) if self.features else torch.cat(outs, dim=1)


class DetectorCore(nn.Module):
    """A torchvision detector cut at its natural seams: the backbone + FPN and the head,
    from the image tensor to the head's outputs (FCOS: a dict of per-level maps flattened
    and joined). The transform and the box decoding stay outside (they run on the root)."""

    def __init__(self, detector: nn.Module, side: int = 64) -> None:
        super().__init__()
        self.backbone, self.head = detector.backbone, detector.head
        self.pretrained_cfg = {"input_size": (3, side, side)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(list(self.backbone(x).values()))


def fcos_core(num_classes: int = 11, side: int = 64) -> nn.Module:
    """torchvision FCOS on a ResNet-18 C3-C4 FPN (the zoo's ``fcos_resnet18_fpn``), backbone+FPN+head."""
    from disco_zoo.registry import build_model

    return DetectorCore(build_model("fcos_resnet18_fpn", num_classes=num_classes), side)


class TinySharedDepthwise(nn.Module):
    """Two levels through one depthwise conv and one BatchNorm (each called per level, so
    each keeps one slice for both) and a shared 1x1 head reduced on the root."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 8, 3, padding=1, stride=2)
        self.lat_a, self.lat_b = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine = torch.relu(self.stem(x))
        outs = []
        for level in (self.lat_a(fine), self.lat_b(self.down(fine))):
            y = self.head(torch.relu(self.bn(self.dw(level))))
            outs.append(y.flatten(2))
        return torch.cat(outs, dim=2)


def detections_masks_open_and_closed(dense: nn.Module, images: torch.Tensor) -> tuple[list, list, list]:
    """A dense detector's detections of ``images``, its DISCO conversion's with every mask
    open (the same weights: they must agree), and with every cross-node channel closed
    (they must not: the masks matter, so a wrong split shows)."""
    import copy

    from disco_zoo.disco.adapters import apply_partition, to_disco

    with torch.no_grad():
        dense_out = dense(images)
        model = to_disco(copy.deepcopy(dense), 2)
        part = model.disco_partition
        try:
            opened = model(images)
            closed = apply_partition(model, part.with_all_closed())(images)
        finally:
            apply_partition(model, part)
    return dense_out, opened, closed
