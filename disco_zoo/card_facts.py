"""What a model card states, as numbers and short sentences, computed from the data.

Why apart from the rendering (:mod:`disco_zoo.model_cards`): every figure a card prints
is derived here from the folder config, the data code and the recorded
:class:`~disco_zoo.harness.report.EvalReport`, in small functions a test can compare with
the records: the test split's size, the interval on an accuracy, the licence, each
speed-up with its baseline named, and whether the measured links agree with the
break-even the model of time gives.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from disco_zoo.harness.break_even import link_profile, predicted_ms, recorded_profile
from disco_zoo.harness.intervals import correct_count, wilson_interval
from disco_zoo.harness.report import Environment, EvalReport, LatencyResult, LinkLatency
from disco_zoo.store import FolderConfig
from disco_zoo.tasks import task_of

__all__ = ["DatasetFacts", "dataset_facts", "Accuracy", "accuracy", "package_license", "license_of",
           "SpeedRow", "speed_rows", "BreakEvenCheck", "break_even_check", "shared_cores", "bandwidth_text", "link_compute_ratios",
           "link_programs_text"]

DISTRIBUTION = "disco-zoo"


@dataclass(frozen=True)
class DatasetFacts:
    """The data a model was trained and tested on, as a card describes it."""

    name: str  # the config's ``dataset``
    title: str
    description: str
    test_images: int | None
    limits: str  # what the data means a user must not use the model for

    @property
    def point_per_image(self) -> float | None:
        """Accuracy points one test image is worth."""
        return 100.0 / self.test_images if self.test_images else None


def dataset_facts(config: FolderConfig, result: EvalReport | None = None) -> DatasetFacts:
    """The data behind ``config``'s numbers; the test size from the result, else the data code."""
    task = task_of(config)
    side = config.input_size[-1]
    if config.dataset == task.embedded_dataset:
        facts = task.embedded_facts(side, result.accuracy.images if result is not None else None)
        return DatasetFacts(name=config.dataset, title=facts.title, description=facts.description,
                            test_images=facts.test_images, limits=facts.limits)
    test = result.accuracy.images if result is not None else None
    return DatasetFacts(
        name=config.dataset, title=config.dataset,
        description=f"the data set `{config.dataset}`" + (f", {test} evaluation images" if test else ""),
        test_images=test,
        limits=f"images unlike `{config.dataset}`, the only data it was trained on.")


@dataclass(frozen=True)
class Accuracy:
    """An accuracy over ``n`` test images and its 95% Wilson interval."""

    value: float
    n: int
    low: float
    high: float

    def text(self) -> str:
        return f"{self.value:.2%} [{self.low:.1%}, {self.high:.1%}]"


def accuracy(value: float, n: int) -> Accuracy:
    low, high = wilson_interval(correct_count(value, n), n)
    return Accuracy(value, n, low, high)


def package_license() -> str:
    """The licence disco-zoo is distributed under (its metadata, from pyproject and LICENSE),
    as the lower-case SPDX id the Hugging Face Hub expects ("apache-2.0")."""
    expression = metadata.metadata(DISTRIBUTION).get("License-Expression") or ""
    return expression.lower() or "other"


def license_of(config: FolderConfig) -> str:
    """A folder's own ``license`` field, else the package's licence."""
    return (config.license or package_license()).lower()


def bandwidth_text(bps: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.3g} {unit}"
    return f"{bps:.3g} bit/s"


@dataclass(frozen=True)
class SpeedRow:
    """One way of running the model, with its speed-up over each baseline."""

    where: str  # "localhost" or a link's name
    disco_ms: float
    dense_tp_ms: float
    vs_dense_tp: float
    vs_one_device: float


def speed_rows(latency: LatencyResult) -> list[SpeedRow]:
    """Every emulated link, slowest first, then localhost: the recorded medians and ratios
    (localhost's ratio to dense TP is not recorded: it is the ratio of the two medians)."""
    rows = [SpeedRow(link.bandwidth, link.disco_ms, link.dense_tp_ms, link.speedup_vs_dense_tp,
                     link.speedup_vs_dense_single)
            for link in sorted(latency.links, key=lambda link: link.bandwidth_bps)]
    return rows + [SpeedRow("localhost", latency.disco_localhost_ms, latency.dense_tp_localhost_ms,
                            latency.dense_tp_localhost_ms / latency.disco_localhost_ms,
                            latency.speedup_localhost_vs_dense)]


@dataclass(frozen=True)
class BreakEvenCheck:
    """The break-even of one latency section against its measured links."""

    bandwidth_bps: float | None  # None: DISCO never beats one dense device
    dense_single_ms: float
    disco_unlimited_predicted_ms: float
    below: list[LinkLatency]  # measured links below the break-even
    above: list[LinkLatency]
    disagreeing: list[LinkLatency]  # measured faster where predicted slower, or the reverse
    close: list[LinkLatency]  # predicted within CALL_MARGIN of the device: not counted either way
    shared_cores: tuple[int, int] | None = None  # (ranks, cores) when the ranks had fewer cores than they needed

    @property
    def consistent(self) -> bool:
        return not self.disagreeing

    def text(self) -> str:
        def point(link: LinkLatency) -> str:
            return f"{link.speedup_vs_dense_single:.2f}x at {link.bandwidth}"

        measured = ", ".join(point(link) for link in [*self.below, *self.above])
        verdict = ("consistent" if self.consistent else
                   "disagrees at " + ", ".join(link.bandwidth for link in self.disagreeing))
        if self.shared_cores:
            ranks, cores = self.shared_cores
            verdict = (f"not checkable on this machine: its {ranks} ranks shared {cores} cores, so no measured link "
                       f"can show a speed-up that needs a device per rank")
        if self.close:
            verdict += (f"; too close to call at {', '.join(link.bandwidth for link in self.close)} "
                        f"(predicted within {CALL_MARGIN:.0%} of the device)")
        if self.bandwidth_bps is None:
            return (f"DISCO does not beat one dense device at any bandwidth: even over an unlimited link the cost "
                    f"model predicts {self.disco_unlimited_predicted_ms:.1f} ms against the device's measured "
                    f"{self.dense_single_ms:.1f} ms (measured vs one device: {measured}; {verdict})")
        return (f"DISCO beats one dense device above **{bandwidth_text(self.bandwidth_bps)}** (cost model: DISCO's "
                f"predicted latency equals the device's measured {self.dense_single_ms:.1f} ms there; "
                f"measured vs one device: {measured}; {verdict})")


CALL_MARGIN = 0.15  # the cost model's accuracy: programs reproduce a run's predictions within it


def _too_close_to_call(latency: LatencyResult, link: LinkLatency) -> bool:
    """A link where the break-even's own prediction (the replay of the programs it was
    computed from; a schema-1 result: the in-run prediction) is within the model's
    accuracy of one dense device's time cannot confirm or refute the break-even's side
    there (noise decides it)."""
    predicted = (predicted_ms(latency, "disco", link.bandwidth_bps) if latency.programs is not None
                 else link.disco_predicted_ms)
    return abs(predicted / latency.dense_single_ms - 1) < CALL_MARGIN


def shared_cores(nodes: int, environment: Environment) -> tuple[int, int] | None:
    """(ranks, cores) when a run's ranks needed more cores than its machine had (a 4-node
    model on 2 cores): its ranks took turns, while the cost model predicts a device each."""
    needed = nodes * environment.threads_per_rank
    return (nodes, environment.cores) if environment.cores is not None and needed > environment.cores else None


def break_even_check(latency: LatencyResult, shared: tuple[int, int] | None = None) -> BreakEvenCheck | None:
    """None when the result records no break-even (schema 1). ``shared`` (:func:`shared_cores`):
    the run's ranks shared too few cores, so its measured links cannot confirm or refute a
    prediction for one device per rank; none of them counts against the break-even."""
    if latency.break_even is None:
        return None
    be = latency.break_even
    links = sorted(latency.links, key=lambda link: link.bandwidth_bps)
    threshold = be.bandwidth_bps if be.bandwidth_bps is not None else float("inf")
    below = [link for link in links if link.bandwidth_bps < threshold]
    above = [link for link in links if link.bandwidth_bps >= threshold]
    close = [link for link in links if _too_close_to_call(latency, link)]
    disagreeing = ([link for link in below if link.disco_ms < latency.dense_single_ms and link not in close]
                   + [link for link in above if link.disco_ms >= latency.dense_single_ms and link not in close])
    return BreakEvenCheck(be.bandwidth_bps, be.dense_single_ms, be.disco_unlimited_predicted_ms, below, above,
                          [] if shared else disagreeing, close, shared)


def link_compute_ratios(latency: LatencyResult, run: str = "disco") -> list[tuple[LinkLatency, float]]:
    """Per link that records its own launch's programs (schema 3), slowest link first: the
    slowest rank's compute in that launch over the slowest rank's in the localhost launch,
    i.e. how much the machine's speed moved between the launches (each link is predicted
    from its own launch's compute, the break-even from the localhost launch's)."""
    if latency.programs is None:
        return []
    local = max(recorded_profile(latency, run).compute_s)
    return [(link, max(link_profile(latency, link, run).compute_s) / local)
            for link in sorted(latency.links, key=lambda link: link.bandwidth_bps) if link.programs is not None]


def link_programs_text(latency: LatencyResult) -> str | None:
    """A card's sentence on the links' own programs; None for a result without them."""
    ratios = link_compute_ratios(latency)
    if not ratios:
        return None
    spread = ", ".join(f"{ratio:.2f}x at {link.bandwidth}" for link, ratio in ratios)
    return (f"each link's prediction replays the programs measured in that link's own launch; against the "
            f"localhost launch, DISCO's slowest rank computed {spread} as long there (the machine's speed "
            f"between launches)")
