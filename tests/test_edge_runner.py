"""The lean node runner: no torch in the process, the torch transport's wire, bounded
waits, and every bad input refused before any rank computes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from disco_zoo.runtime.session import decode_output
from helpers import DISCO_SHAPE, ONNX_ENTRY, exported_tiny_disco

LEAN_MODULES = ("disco_zoo.edge", "disco_zoo.edge.__main__", "disco_zoo.edge.runner", "disco_zoo.runtime.worker",
                "disco_zoo.edge.transport", "disco_zoo.edge.program")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return exported_tiny_disco(tmp_path_factory.mktemp("edge"))


def test_runner_imports_no_torch():
    code = ("import sys, importlib; [importlib.import_module(m) for m in sys.argv[1:]]; import onnxruntime, numpy; "
            "import disco_zoo.runtime.worker; "
            "print([m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'torchvision')])")
    out = subprocess.run([sys.executable, "-c", code, *LEAN_MODULES], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


class _Capture:
    """A backend that keeps what is posted (sends complete at once; receives never)."""

    name = "capture"

    def __init__(self, rank=0, world_size=2):
        self.rank, self.world_size, self.sent = rank, world_size, []

    def post_send(self, buf, dst, tag):
        data = buf.reshape(-1).view(torch.uint8).numpy() if isinstance(buf, torch.Tensor) else buf.reshape(-1).view(np.uint8)
        self.sent.append((dst, tag, bytes(data)))
        return "done"

    def post_recv(self, buf, src, tag):
        return "never"

    def wait(self, request, deadline):
        while request == "never" and time.monotonic() < deadline:
            time.sleep(0.01)
        return request == "done"

    def post_barrier(self):
        return "done"

    def close(self):
        pass


@pytest.mark.parametrize("wire", ["fp32", "fp16"])
def test_wire_is_the_torch_transports(wire):
    """Same tag ids, same payload bytes, same delivery stamp message, same byte counts."""
    from disco_zoo.edge.transport import EdgeTransport
    from disco_zoo.runtime.transport import Transport
    from disco_zoo.timing.links import Link

    x = np.random.default_rng(0).standard_normal((2, 3, 4), dtype=np.float32)
    link = Link(bandwidth_bps=1e9, latency_s=0.0)
    sides = []
    for cls, value in ((Transport, torch.from_numpy(x)), (EdgeTransport, x)):
        backend = _Capture()
        t = cls(backend, wire_dtype=wire, links=link)
        t.isend(value, 1, "layer1.0.conv1").wait()
        sides.append((backend.sent, t.counter.to_dict()))
    (torch_sent, torch_count), (edge_sent, edge_count) = sides
    assert [(d, tag, len(b)) for d, tag, b in edge_sent] == [(d, tag, len(b)) for d, tag, b in torch_sent]
    assert edge_sent[0][2] == torch_sent[0][2]  # the payload, byte for byte
    assert len(edge_sent) == 2  # payload + float64 stamp
    assert edge_count == torch_count


def test_hung_peer_is_a_clear_error_within_the_timeout():
    from disco_zoo.edge.transport import EdgeTransport
    from disco_zoo.runtime.errors import PeerError

    t = EdgeTransport(_Capture(), timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(PeerError, match=r"timed out after 0.3 s waiting to receive from rank 1 \(tag/layer 'fc'\)"):
        t.irecv([2, 10], np.float32, 1, "fc").wait()
    assert time.monotonic() - start < 2


def test_mpiexec_runs_the_lean_runner(tiny, tmp_path):
    """The multi-host way: `mpiexec -n 2 python -m disco_zoo.edge --program DIR` (results as
    rank<k>.json: mpiexec may cut long stdout lines of two ranks into each other)."""
    from disco_zoo.runtime.launch import LOCAL_NET_ENV, local_mpiexec_path
    from disco_zoo.runtime.session import seeded_input

    folder, model, part, out, x_path = tiny
    res = subprocess.run([local_mpiexec_path(), "-n", "2", sys.executable, "-m", "disco_zoo.edge", "--program", str(out),
                          "--input", str(x_path), "--timeout", "30", "--out-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=os.getcwd(), **LOCAL_NET_ENV))
    assert res.returncode == 0, res.stderr[-2000:]
    results = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]
    assert sorted(r["rank"] for r in results) == [0, 1] and all(r["ok"] for r in results)
    root = next(r["result"] for r in results if "logits" in r["result"])
    with torch.no_grad():
        ref = model(seeded_input(DISCO_SHAPE, 0))
    assert (decode_output(root["logits"]) - ref).abs().max().item() <= 1e-4
    assert not any(r["result"]["torch_imported"] for r in results)


# -- bad input: refused before the first barrier (so before any rank computes) ----------


def _copy_export(out, tmp_path):
    import shutil

    target = tmp_path / "onnx"
    shutil.copytree(out, target)
    return target


def _rehash(node):
    """Rewrite SHA256SUMS as the exporter does (a consistent but wrong folder)."""
    from disco_zoo.store import sha256_file

    names = sorted(p.name for p in node.iterdir() if p.name != "SHA256SUMS")
    (node / "SHA256SUMS").write_text("".join(f"{sha256_file(node / n)}  {n}\n" for n in names))


def test_tampered_segment_is_refused(tiny, tmp_path):
    from disco_zoo.edge.program import load_program
    from disco_zoo.store import IntegrityError

    out = _copy_export(tiny[3], tmp_path)
    seg = out / "node1" / "seg003.onnx"
    data = bytearray(seg.read_bytes())
    data[-10] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"seg003.onnx sha256 .* differs from SHA256SUMS.*tampered"):
        load_program(out, 1, 2)
    _rehash(out / "node1")  # hashes made to agree: the program's own record still refuses it
    with pytest.raises(IntegrityError, match=r"seg003.onnx sha256 .* differs from program.json's"):
        load_program(out, 1, 2)


def test_program_of_another_shard_is_refused(tiny, tmp_path):
    from disco_zoo.edge.program import load_program
    from disco_zoo.errors import DiscoZooError

    out = _copy_export(tiny[3], tmp_path)
    program_path = out / "node1" / "program.json"
    program = json.loads(program_path.read_text())
    other = json.loads((out / "node0" / "program.json").read_text())["shard"]
    program["shard"] = {**other, "name": "node1.safetensors"}  # cut from a different shard
    program_path.write_text(json.dumps(program))
    _rehash(out / "node1")
    with pytest.raises(DiscoZooError, match="does not match this model's shard"):
        load_program(out, 1, 2)


def test_missing_op_is_refused_before_running(tiny, tmp_path):
    import onnx
    from onnx import helper

    from disco_zoo.edge.program import load_program
    from disco_zoo.edge.runner import load_sessions
    from disco_zoo.errors import DiscoZooError
    from disco_zoo.store import sha256_file

    out = _copy_export(tiny[3], tmp_path)
    node = out / "node0"
    seg = node / "seg001.onnx"
    model = onnx.load(str(seg))
    last = model.graph.output[0].name
    for n in model.graph.node:  # the output's producer and users now see it under another name
        n.output[:] = [last + "_in" if name == last else name for name in n.output]
        n.input[:] = [last + "_in" if name == last else name for name in n.input]
    model.graph.node.append(helper.make_node("FancyNorm", [last + "_in"], [last], domain="org.example.missing"))
    model.opset_import.append(helper.make_opsetid("org.example.missing", 1))
    onnx.save(model, str(seg))
    program_path = node / "program.json"
    program = json.loads(program_path.read_text())
    program["segments"][1]["sha256"] = sha256_file(seg)
    program_path.write_text(json.dumps(program))
    _rehash(node)
    with pytest.raises(DiscoZooError, match=r"cannot load .*seg001.onnx.*(FancyNorm|org.example.missing).*lacks an op"):
        load_sessions(load_program(out, 0, 2))


def test_node_folder_given_to_the_wrong_rank(tiny):
    """Both ranks given node1's folder: rank 0 refuses it at load, naming the fix; the run
    stops there (rank 1 never gets past the first barrier)."""
    from disco_zoo.runtime.errors import PeerError
    from disco_zoo.runtime.session import run_entry

    out = tiny[3]
    with pytest.raises(PeerError, match=r"node 1's program, given to rank 0: give rank 0 the folder node0"):
        run_entry(ONNX_ENTRY, 2, "mpi", timeout_s=20, args={"program": str(out / "node1"), "input_shape": DISCO_SHAPE})
