"""The eval harness's results as typed records, and their JSON form.

Why: the CLI's table, the model cards and the tests read a result by attribute
(``report.at_input.disco_bytes``), and the recorded files under ``eval/results/`` are
this JSON. Every field's name is its JSON key; a field that is ``None`` is left out
(the paper-size figures of a model whose input size is fixed, the measured bytes of an
accounting-only size). The document carries :data:`SCHEMA_VERSION`; documents from
before the version was written load as version 1. Version 2 added, per latency size, the
programs the model of time replays (so any bandwidth can be predicted after the run) and
the break-even bandwidth against one dense device; a version-1 document has neither. Version 3
added, per emulated link, that link launch's own programs (:class:`LinkPrograms`): each link
is timed in a launch of its own, minutes after the localhost launch on a machine whose speed
drifts, so its prediction is checked against the compute measured beside it. A missing or
unknown key is a clear error naming the record, so the schema cannot drift silently.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

from disco_zoo.errors import DiscoZooError

__all__ = [
    "SCHEMA_VERSION",
    "ReportError",
    "Pairs",
    "AccuracyResult",
    "TrafficFigures",
    "LocalRounds",
    "LinkRounds",
    "LinkRoundCounts",
    "LinkPrograms",
    "LinkLatency",
    "CostModelPrograms",
    "BreakEven",
    "LatencyResult",
    "Environment",
    "EvalReport",
]

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # every version adds optional keys only, so older documents still load
Pairs = dict[tuple[int, int], int]  # (sender, receiver) -> bytes; JSON keys "j->k"
R = TypeVar("R", bound="Record")


class ReportError(DiscoZooError):
    """An eval result document that does not have this schema's keys."""


# -- JSON conversion, driven by the dataclass fields ------------------------------------------


def _pair_key(pair: tuple[int, int]) -> str:
    return f"{pair[0]}->{pair[1]}"


def _parse_pair(key: str, where: str) -> tuple[int, int]:
    src, sep, dst = key.partition("->")
    if not sep or not src.isdigit() or not dst.isdigit():
        raise ReportError(f"{where}: pair key {key!r} is not 'j->k'")
    return int(src), int(dst)


def _is_pairs(kind: Any) -> bool:
    return typing.get_origin(kind) is dict and typing.get_args(kind)[0] == tuple[int, int]


def _optional(kind: Any) -> Any:
    """``X | None`` -> X (else ``kind`` itself)."""
    if typing.get_origin(kind) in (Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return kind


def _to_json(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, dict):
        return {(_pair_key(k) if isinstance(k, tuple) else k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def _from_json(kind: Any, value: Any, where: str) -> Any:
    kind = _optional(kind)
    if isinstance(kind, type) and issubclass(kind, Record):
        return kind.from_dict(value, where)
    if _is_pairs(kind):
        return {_parse_pair(k, where): int(v) for k, v in value.items()}
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        return [_from_json(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(kind)
        return {k: _from_json(item, v, f"{where}.{k}") for k, v in value.items()}
    if kind is float:
        return float(value)
    return value


class Record:
    """A result record: a dataclass whose field names are its JSON keys."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = _to_json(value)
        return out

    @classmethod
    def from_dict(cls: type[R], data: Any, where: str = "") -> R:
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise ReportError(f"{where} must be a JSON object, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ReportError(f"{where} has keys this schema does not know: {unknown}")
        values = {}
        for name, f in fields.items():
            if name in data:
                values[name] = _from_json(hints[name], data[name], f"{where}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ReportError(f"{where} lacks the key {name!r}")
        return cls(**values)


# -- the records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccuracyResult(Record):
    """The task's metrics on the eval split: DISCO distributed over N processes, the dense
    model, and the DISCO model in one process. JSON keys are ``<run>_<metric>``
    (``disco_top1``, ``dense_top1``, ``disco_single_process_top1``) plus ``images``;
    the same names read as attributes (``result.disco_top1``)."""

    RUNS: ClassVar[tuple[str, ...]] = ("disco_single_process", "disco", "dense", "floor")  # longest prefix first

    disco: dict[str, float]
    dense: dict[str, float]
    disco_single_process: dict[str, float]
    images: int
    floor: dict[str, float] = field(default_factory=dict)  # the task's trivial answer (bicubic, all background)

    def __getattr__(self, key: str) -> float:
        for run in self.RUNS:
            prefix = run + "_"
            if key.startswith(prefix) and key[len(prefix):] in self.__dict__.get(run, {}):
                return self.__dict__[run][key[len(prefix):]]
        raise AttributeError(f"{type(self).__name__} has no {key!r} (metrics: {sorted(self.__dict__.get('disco', {}))})")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"{run}_{name}": value for run in self.RUNS for name, value in getattr(self, run).items()}
        out["images"] = self.images
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> "AccuracyResult":
        where = where or cls.__name__
        if not isinstance(data, dict) or "images" not in data:
            raise ReportError(f"{where} must be a JSON object with 'images' and <run>_<metric> keys")
        runs: dict[str, dict[str, float]] = {run: {} for run in cls.RUNS}
        for key, value in data.items():
            if key == "images":
                continue
            run = next((r for r in cls.RUNS if key.startswith(r + "_")), None)
            if run is None:
                raise ReportError(f"{where}: key {key!r} is not <run>_<metric> for a run in {list(cls.RUNS)}")
            runs[run][key[len(run) + 1:]] = float(value)
        if runs["floor"] and set(runs["floor"]) != set(runs["disco"]):
            raise ReportError(f"{where}: the floor must report the runs' metrics {sorted(runs['disco'])}, got {sorted(runs['floor'])}")
        if not (set(runs["disco"]) == set(runs["dense"]) == set(runs["disco_single_process"])):
            raise ReportError(f"{where}: every run must report the same metrics, got {({r: sorted(m) for r, m in runs.items()})}")
        return cls(images=int(data["images"]), **runs)


@dataclass(frozen=True)
class TrafficFigures(Record):
    """The accounting of one inference at one input size and, where the runtime ran at
    that size, the bytes its counters saw (the image scatter reported apart)."""

    input_size: int
    disco_bytes: int
    dense_tp_bytes: int
    traffic_ratio: float
    bytes_per_pair: Pairs
    flops_dense: int
    flops_total: int
    flops_per_node: list[int]
    params_per_node: list[int]
    params_dense: int
    params_bytes_per_node: list[int]
    act_peak_per_node: list[int]
    measured_bytes_per_pair: Pairs | None = None  # counted on the wire, the image scatter taken out
    input_scatter_bytes: int | None = None  # counted under the tag "input"
    input_scatter_bytes_expected: int | None = None  # the accounting's image scatter

    @property
    def measured(self) -> bool:
        return self.measured_bytes_per_pair is not None


@dataclass(frozen=True)
class LocalRounds(Record):
    """Per measured round on localhost (ms): the figures every ratio is a median of."""

    dense_ms: list[float]
    disco_ms: list[float]
    compute_alone_ms: list[float]
    compute_concurrent_ms: list[float]


@dataclass(frozen=True)
class LinkRounds(Record):
    """Per measured round through one emulated link (ms), measured and predicted."""

    disco_ms: list[float]
    disco_predicted_ms: list[float]
    dense_tp_ms: list[float]
    dense_tp_predicted_ms: list[float]


@dataclass(frozen=True)
class LinkRoundCounts(Record):
    disco: int
    dense_tp: int


@dataclass(frozen=True)
class LinkPrograms(Record):
    """The programs of one link's own launch, as compute gaps (seconds): per rank, the gap
    before each event of the section's programs (:attr:`LatencyResult.programs`: the same
    events, peers, tags and bytes), then the tail, from the link's median round (the round
    whose prediction is the median of its rounds', the lower one of an even count). Why:
    the link's prediction (``disco_predicted_ms``) was made from compute measured in its
    own launch, not in the localhost launch minutes earlier; these gaps replay it after the
    run (:func:`disco_zoo.harness.break_even.link_profile`), exactly for an odd count."""

    source: str
    disco: list[list[float]]
    dense_tp: list[list[float]]


@dataclass(frozen=True)
class LinkLatency(Record):
    """DISCO and dense within-layer parallelism through one emulated link, and the model of time's prediction."""

    bandwidth: str
    bandwidth_bps: float
    rounds: LinkRoundCounts
    disco_ms: float
    dense_tp_ms: float
    disco_predicted_ms: float
    dense_tp_predicted_ms: float
    disco_measured_over_predicted: float
    dense_tp_measured_over_predicted: float
    speedup_vs_dense_single: float
    speedup_vs_dense_tp: float
    per_round: LinkRounds
    programs: LinkPrograms | None = None  # schema 3: this link launch's own compute gaps


@dataclass(frozen=True)
class CostModelPrograms(Record):
    """Each rank's program (:meth:`disco_zoo.timing.RankProgram.to_dict`) for DISCO and for
    dense TP at this input size: what the model of time replays to predict any link.
    ``source`` says where the compute gaps came from (measured in the run, or rebuilt)."""

    source: str
    disco: list[dict[str, Any]]
    dense_tp: list[dict[str, Any]]


@dataclass(frozen=True)
class BreakEven(Record):
    """The bandwidth at which DISCO's predicted latency equals one dense device's measured
    one (:func:`disco_zoo.harness.break_even.break_even_bandwidth`); left out (None) when
    DISCO is slower than one dense device even over an unlimited link."""

    dense_single_ms: float
    disco_unlimited_predicted_ms: float  # the model of time with an unlimited link
    bandwidth_bps: float | None = None


@dataclass(frozen=True)
class LatencyResult(Record):
    """Batch-1 latency at one input size: localhost, every link, memory and message cost."""

    input_size: int
    rounds: int
    dense_single_ms: float
    disco_localhost_ms: float
    dense_tp_localhost_ms: float
    per_rank_ms: list[float]
    compute_alone_ms: list[float]
    compute_concurrent_ms: list[float]
    message_overhead_ms: float
    message_ms_per_mib: float
    message_send_ms: float
    message_send_ms_per_mib: float
    rank_peak_rss_kb: list[int]
    rank_rss_load_growth_bytes: list[int]
    rank_weight_bytes: list[int]
    dense_weight_bytes: int
    speedup_localhost_vs_dense: float
    localhost_over_compute_alone: float
    localhost_over_compute_concurrent: float
    speedup_ceiling_compute_alone: float
    concurrency_penalty: float
    per_round: LocalRounds
    links: list[LinkLatency] = field(default_factory=list)
    dense_rss_load_growth_bytes: int | None = None  # the dense model loaded in the harness's own process
    programs: CostModelPrograms | None = None  # schema 2
    break_even: BreakEven | None = None  # schema 2


@dataclass(frozen=True)
class Environment(Record):
    """Versions and machine facts recorded with every result."""

    python: str
    torch: str
    timm: str
    mpi4py: str
    platform: str
    cpu: str
    threads_per_rank: int
    backend: str
    cores: int | None = None  # os.cpu_count(), which may not know


@dataclass(frozen=True)
class EvalReport(Record):
    """Everything ``disco-zoo eval`` measures for one pretrained DISCO model."""

    model: str
    dense_model: str
    nodes: int
    dataset: str
    accuracy: AccuracyResult
    at_input: TrafficFigures
    environment: Environment
    at_paper_size: TrafficFigures | None = None
    latency: LatencyResult | None = None
    latency_paper_size: LatencyResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **super().to_dict()}

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> "EvalReport":
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise ReportError(f"{where} must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version", 1)  # recorded before versioning: version 1
        if version not in READABLE_VERSIONS:
            raise ReportError(f"{where} has schema_version {version!r}; this disco-zoo reads "
                              f"{', '.join(map(str, READABLE_VERSIONS))}. "
                              "Re-record it with `disco-zoo eval MODEL --json ...`.")
        return super().from_dict({k: v for k, v in data.items() if k != "schema_version"}, where)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    @classmethod
    def read(cls, path: Path) -> "EvalReport":
        """A recorded result file; a broken one is a clear error naming it."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ReportError(f"{path} is not a readable eval result ({err})") from None
        return cls.from_dict(data, str(path))

    def write(self, path: Path) -> Path:
        """Write atomically (a half-written result never replaces a recorded one)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path
