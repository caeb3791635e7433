"""Put a failed run into words: one summary line, the cause first, and a full log.

The cause is the rank that failed by itself, died or hung first; then what the other
ranks were waiting for from it (the message's peer and tag, read from their wait boards,
so no survivor has to time out to say so). Ranks that were only waiting on a rank that
had already failed are consequences, not causes, even if they died too. Everything
else (tracebacks, each rank's output, bystanders) goes to the log, not the summary.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disco_zoo.runtime.rank_status import Wait, read_wait

__all__ = ["RunState", "Report", "describe_failure"]

OUTPUT_TAIL_CHARS = 20_000  # of each captured output file, in the log


@dataclass
class RunState:
    """What the launcher saw when it stopped the run."""

    out_dir: Path
    world_size: int
    reason: str  # "failed" or "wall"
    dead: list[int]  # no result and no process
    errors: dict[int, dict[str, Any]]  # rank -> the failure it recorded
    running: list[int]  # no result, still running when the run was stopped
    exit_status: dict[int, int | None] = field(default_factory=dict)  # known for directly started ranks
    stopped: set[int] = field(default_factory=set)  # running but stopped (SIGSTOP, a debugger)
    timeout_s: float = 0.0
    wall_timeout_s: float | None = None
    outputs: list[Path] = field(default_factory=list)  # captured stdout/stderr files


@dataclass
class Report:
    summary: str
    rank: int | None
    tag: str | None
    log_text: str


def _how_it_died(status: int | None) -> str:
    if status is None:
        return ""
    if status < 0:
        try:
            return f" (killed by {signal.Signals(-status).name})"
        except ValueError:
            return f" (killed by signal {-status})"
    return f" (exit status {status})"


def _ranks(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}"


def _own_words(rank: int, error: str) -> str:
    """A rank's own error without its leading ``rank k: `` and gloo's generic advice."""
    error = " ".join(error.split(". This is typically")[0].splitlines())  # the summary stays one line
    prefix = f"rank {rank}: "
    return error[len(prefix):] if error.startswith(prefix) else error


def describe_failure(state: RunState) -> Report:
    waits: dict[int, Wait | None] = {r: read_wait(state.out_dir / f"rank{r}.wait") for r in range(state.world_size)}
    own = {r: res for r, res in state.errors.items() if res.get("type") != "PeerError"}
    waiting_errors = {r: res for r, res in state.errors.items() if res.get("type") == "PeerError"}
    failed = set(own) | set(state.dead)

    def consequence(rank: int) -> bool:
        wait = waits.get(rank)
        return wait is not None and wait.peer in failed and wait.peer != rank

    first_dead = [r for r in state.dead if not consequence(r)] or list(state.dead)
    blamed = {res.get("peer") for res in waiting_errors.values()} - {None}
    hung = [r for r in state.running if r in blamed] if state.reason == "failed" else []
    culprits = sorted(own) + [r for r in first_dead if r not in own] + hung

    clauses: list[str] = []
    own_words: dict[str, list[int]] = {}  # ranks failing with the same words are named once
    for rank in sorted(own):
        own_words.setdefault(_own_words(rank, own[rank]["error"]), []).append(rank)
    for words, ranks in own_words.items():
        clauses.append(f"{_ranks(ranks)} failed: {words}")
    for rank in first_dead:
        clauses.append(f"rank {rank} died{_how_it_died(state.exit_status.get(rank))} before returning a result")
    for rank in hung:
        what = "is stopped (SIGSTOP or a debugger)" if rank in state.stopped else "hung (still running)"
        clause = f"rank {rank} {what} and answered no peer within {state.timeout_s:g} s"
        if waits.get(rank) is not None:
            clause += f"; it was itself waiting to {waits[rank].describe()}"
        clauses.append(clause + " (killed)")
    if state.reason == "wall":
        for rank in state.running:
            clauses.append(f"rank {rank} still running after {state.wall_timeout_s:g} s (the wall-clock limit); killed")

    tag = None
    waiters: dict[tuple[bool, str], list[int]] = {}  # (timed out, what they waited for) -> ranks
    for rank in range(state.world_size):
        if rank in culprits:
            continue
        wait, error = waits.get(rank), waiting_errors.get(rank)
        if wait is not None and (wait.peer in culprits or wait.peer is None):
            timed_out = error is not None and "timed out" in error.get("error", "")
            waiters.setdefault((timed_out, wait.describe()), []).append(rank)
            tag = tag or wait.tag
        elif wait is None and error is not None:
            clauses.append(f"rank {rank}: {_own_words(rank, error['error'])}")
            tag = tag or error.get("tag")
    for (timed_out, what), ranks in waiters.items():
        who = _ranks(ranks)
        verb = f"timed out after {state.timeout_s:g} s" if timed_out else ("was" if len(ranks) == 1 else "were")
        clauses.append(f"{who} {verb} waiting to {what}")
    if tag is None:
        tag = next((res.get("tag") for res in [*own.values(), *waiting_errors.values()] if res.get("tag")), None)
    if not culprits:
        culprits = sorted(blamed) or sorted(state.errors)
    if not clauses:
        clauses = [f"ranks {', '.join(map(str, sorted(state.errors) or state.dead))} stopped without a reason"]
    summary = "distributed run failed: " + "; ".join(clauses)
    return Report(summary, culprits[0] if culprits else None, tag, _log_text(state, summary, waits))


def _log_text(state: RunState, summary: str, waits: dict[int, Wait | None]) -> str:
    lines = [summary, "", f"run directory: {state.out_dir}", ""]
    for rank in range(state.world_size):
        if rank in state.errors:
            status = "failed"
        elif rank in state.dead:
            status = "died" + _how_it_died(state.exit_status.get(rank))
        elif rank in state.running:
            status = "stopped (SIGSTOP)" if rank in state.stopped else "still running when the run was stopped"
        else:
            status = "returned a result"
        lines.append(f"== rank {rank}: {status}")
        if waits.get(rank) is not None:
            lines.append(f"   waiting to {waits[rank].describe()}")
        error = state.errors.get(rank)
        if error is not None:
            lines += [f"   {error.get('error', '')}", error.get("traceback", "").rstrip(), ""]
    for path in state.outputs:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        lines += [f"== output of {path.name}", text[-OUTPUT_TAIL_CHARS:].rstrip(), ""]
    return "\n".join(lines) + "\n"
