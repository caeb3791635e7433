"""Run a node's ONNX program: segments on onnxruntime, exchanges over the edge transport.

The program's steps run in order. A segment step feeds its named inputs from the
values held so far and stores its outputs; an exchange step posts its receives, then
its sends, then waits for all of them, as the torch executor's layers do. A value is
dropped right after its last use, so activations live no longer than in torch.

Every session is built (and every file checked) before the first barrier, so a missing
op, a tampered file or a wrong folder fails before any rank computes.
"""
from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from disco_zoo.edge.program import NodeProgram, load_program
from disco_zoo.errors import DiscoZooError

__all__ = ["NodeRunner", "run_program", "load_image", "load_sessions", "session_options", "make_transport",
           "current_rss_bytes", "peak_rss_bytes", "OUTPUT_KEY", "encode_array", "encode_output"]

OUTPUT_KEY = "logits"  # as disco_zoo.runtime.session.OUTPUT_KEY (which imports torch)
_NP = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "bool": np.bool_}


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """The report's output as disco_zoo.runtime.session.encode_output writes a tensor: raw
    bytes in base64 with dtype and shape (nested lists of a spatial output are 10x larger)."""
    import base64

    array = np.ascontiguousarray(array)
    return {"array": base64.b64encode(array.tobytes()).decode("ascii"), "dtype": str(array.dtype),
            "shape": list(array.shape)}


def encode_output(output: np.ndarray | tuple[np.ndarray, ...], structure: dict[str, Any] | None) -> dict[str, Any]:
    """The node's output in the structure the torch engine reports (a one-key dict for
    torchvision's segmenters, a dict of several tensors for a staged core's outputs; see
    ``output_structure`` in the program)."""
    if structure is None:
        return encode_array(output)
    keys = structure["dict"]
    if isinstance(keys, str):
        return {"dict": {keys: encode_array(output)}, "ordered": structure["ordered"]}
    return {"dict": {k: encode_array(a) for k, a in zip(keys, output, strict=True)}, "ordered": structure["ordered"]}


def current_rss_bytes() -> int:
    """Resident set size now (Linux /proc)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    except (OSError, IndexError, ValueError):
        return 0


def peak_rss_bytes() -> int:
    """This process's peak RSS (VmHWM). Unlike ``ru_maxrss``, which keeps the high-water
    mark of the process it was forked from across exec, it counts this program only."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def session_options(ort: Any, threads: int = 1) -> Any:
    """onnxruntime settings of every segment (and of the dense baseline the benchmark runs).

    The CPU arena and memory patterns are off: a node runs dozens of small sessions, and
    each would keep its own arena of its largest activations (measured on ResNet-50 at
    224: 151 -> 128 MiB peak for a rank, no measurable time lost). Full graph
    optimisation stays on (its pre-packed weights cost ~22 MiB there, but speed convs)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    return options


def load_sessions(node: NodeProgram, threads: int = 1) -> list[Any]:
    """One onnxruntime session per segment; an op this onnxruntime lacks is a clear error."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise DiscoZooError("the onnx engine needs onnxruntime on every onnx rank: pip install 'disco-zoo[edge]'") from None

    options = session_options(ort, threads)
    sessions = []
    for i, seg in enumerate(node.program["segments"]):
        path = node.segment_path(i)
        try:
            sessions.append(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
        except Exception as err:  # onnxruntime raises its own types (NotImplemented, InvalidGraph, Fail)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DiscoZooError(f"onnxruntime {ort.__version__} cannot load {path} ({seg['file']} of node "
                                f"{node.node}): {first}; this onnxruntime lacks an op the segment uses: install "
                                "the onnxruntime version constraints.txt pins, or export with a lower opset") from None
    return sessions


def _output_names(program: dict[str, Any]) -> list[str]:
    """The program's output value names (one, or a staged core's several)."""
    names = program["output"]
    return [names] if isinstance(names, str) else list(names)


class NodeRunner:
    """A loaded node program, ready to run one inference at a time."""

    def __init__(self, node: NodeProgram, transport: Any, threads: int = 1) -> None:
        self.node, self.t = node, transport
        self.program = node.program
        self.sessions = load_sessions(node, threads)
        self._last_use = self._last_uses()
        self._feeds = [[arg.name for arg in session.get_inputs()] for session in self.sessions]

    def _last_uses(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for i, step in enumerate(self.program["steps"]):
            names = step["inputs"] if step["op"] == "segment" else [s["value"] for s in step["sends"]]
            for name in names:
                last[name] = i
        for name in _output_names(self.program):
            last[name] = len(self.program["steps"])
        return last

    def __call__(self, image: np.ndarray | None) -> np.ndarray | tuple[np.ndarray, ...]:
        values: dict[str, np.ndarray] = {}
        if self.program["image"] is not None:
            if image is None:
                raise DiscoZooError(f"node {self.node.node} takes the image but was given none")
            values[self.program["image"]["name"]] = image
        for i, step in enumerate(self.program["steps"]):
            if step["op"] == "segment":
                session = self.sessions[step["index"]]
                feeds = {name: values[name] for name in self._feeds[step["index"]]}
                for name, array in zip(step["outputs"], session.run(step["outputs"], feeds)):
                    values[name] = array
                names = step["inputs"]
            else:
                self._exchange(step, values)
                names = [s["value"] for s in step["sends"]]
            for name in names:
                if self._last_use.get(name) == i:
                    values.pop(name, None)
        names = self.program["output"]
        return values[names] if isinstance(names, str) else tuple(values[name] for name in names)

    def _exchange(self, step: dict[str, Any], values: dict[str, np.ndarray]) -> None:
        t = self.t
        recvs = [(r, t.irecv(r["shape"], _NP[r["dtype"]], r["peer"], r["tag"])) for r in step["recvs"]]
        sends = [t.isend(values[s["value"]], s["peer"], s["tag"]) for s in step["sends"]]
        for message, handle in recvs:
            array = handle.wait()
            if message["value"] is not None:
                values[message["value"]] = array
        for handle in sends:
            handle.wait()


def make_transport(spec: dict[str, Any], board: Any = None) -> Any:
    """The worker's hook (:func:`disco_zoo.runtime.worker.run`): a rank whose entry lives
    here talks through the numpy transport over MPI, so torch is never imported."""
    from disco_zoo.edge.transport import EdgeTransport, MPIArrayBackend
    from disco_zoo.timing.links import Link

    if spec["backend"] != "mpi":
        raise DiscoZooError(f"the onnx engine talks MPI only (gloo is torch.distributed's); got backend {spec['backend']!r}")
    link = spec.get("link")
    if isinstance(link, list):  # per ordered pair: [[src, dst, profile], ...]
        links = {(src, dst): Link(**profile) for src, dst, profile in link}
    else:
        links = Link(**link) if link else None
    transport = EdgeTransport(MPIArrayBackend(), wire_dtype=spec.get("wire_dtype", "fp32"), links=links,
                              timeout_s=spec["timeout_s"], board=board)
    transport.threads = int(spec.get("threads_per_rank", 1))
    return transport


def load_image(program: dict[str, Any], input_path: str | None, seed: int) -> np.ndarray | None:
    """Rank 0's image: the .npy a user gave (exactly the program's shape), else seeded
    standard normal values (numpy's generator: pass the torch engine's input as a .npy
    to compare the engines)."""
    if program["image"] is None:
        return None
    shape = program["image"]["shape"]  # a staged model's program takes its pre-processed image
    if not input_path:
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    try:
        x = np.load(input_path).astype(np.float32)
    except (OSError, ValueError) as err:
        raise DiscoZooError(f"cannot read input {input_path}: {err}; give a .npy array of shape {shape}") from None
    if list(x.shape) != list(shape):
        raise DiscoZooError(f"{input_path} holds shape {list(x.shape)}, but the program was exported for {shape}: "
                            "export again with that input size")
    return np.ascontiguousarray(x)


def run_program(t: Any, program: str, input_shape: list[int] | None = None, input_path: str | None = None,
                seed: int = 0, warmup: int = 0, repeats: int = 1, threads: int | None = None, **_torch_args: Any) -> dict[str, Any]:
    """Launch entry of an onnx rank: one (or ``repeats`` timed) inference(s); the same
    per-rank report as :func:`disco_zoo.runtime.disco_executor.run_disco` (the torch
    engine's arguments, e.g. its shard ``folder``, are ignored). RSS is sampled with the
    libraries imported (``rss_start_bytes``) and with every session loaded."""
    try:
        import onnxruntime  # noqa: F401  (imported before the first sample: libraries, not weights)
    except ImportError:
        pass  # load_sessions says what to install
    rss_before = current_rss_bytes()
    t0 = time.perf_counter()
    node = load_program(program, t.rank, t.world_size)
    if input_shape is not None and list(input_shape) != node.program["input_shape"]:
        raise DiscoZooError(f"{node.folder} was exported for input {node.program['input_shape']}, not {list(input_shape)}: "
                            "export again with --input-size")
    runner = NodeRunner(node, t, threads or getattr(t, "threads", 1))
    load_s, rss_loaded = time.perf_counter() - t0, current_rss_bytes()
    x = load_image(node.program, input_path, seed)
    times, out = [], None
    for i in range(warmup + repeats):
        t.barrier()
        t.counter.reset()
        start = time.perf_counter()
        out = runner(x)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    t.barrier()
    segments = node.program["segments"]
    report: dict[str, Any] = {
        "rank": t.rank, "output_rank": node.program["output_rank"], "engine": "onnx", "load_s": load_s,
        "rss_load_growth_bytes": rss_loaded - rss_before, "rss_start_bytes": rss_before, "rss_loaded_bytes": rss_loaded,
        "params": sum(s["params"] for s in segments),
        "weight_bytes": sum(s["weight_bytes"] for s in segments), "times_s": times,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "peak_rss_bytes": peak_rss_bytes(),
        "pid": os.getpid(),
        "torch_imported": "torch" in sys.modules,  # the lean engine's promise, checked by the tests
        "bytes": t.counter.to_dict(),
    }
    if t.rank == node.program["output_rank"]:
        report[OUTPUT_KEY] = encode_output(out, node.program.get("output_structure"))
    return report
