"""Read and check a node folder exported by ``disco-zoo export --format onnx`` (torch-free).

Everything is checked before the first message or the first multiply: every file
against ``SHA256SUMS``, every segment against the program's own record, the program
against the shard it says it was cut from (the folder config's record of
``node{k}.safetensors`` and its partition), and the node against the rank that runs it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from disco_zoo.errors import DiscoZooError
from disco_zoo.store import CONFIG_NAME, IntegrityError, read_config, sha256_file

__all__ = ["NodeProgram", "load_program", "program_folder", "PROGRAM_NAME", "SUMS_NAME", "PROGRAM_FORMAT", "partition_digest"]

PROGRAM_NAME = "program.json"  # the names disco_zoo.export.onnx_node writes (it imports torch; this may not)
SUMS_NAME = "SHA256SUMS"
PROGRAM_FORMAT = "disco-zoo-onnx-program/1"


@dataclass
class NodeProgram:
    """A checked node program: the parsed program.json and the folder it lives in."""

    folder: Path
    program: dict[str, Any]

    @property
    def node(self) -> int:
        return int(self.program["node"])

    def segment_path(self, index: int) -> Path:
        return self.folder / self.program["segments"][index]["file"]


def program_folder(source: Path | str, rank: int) -> Path:
    """The node folder rank ``rank`` runs: ``source`` itself when it holds a program, else
    ``source/node{rank}`` (the export's root)."""
    source = Path(source)
    if (source / PROGRAM_NAME).is_file():
        return source
    if (source / f"node{rank}" / PROGRAM_NAME).is_file():
        return source / f"node{rank}"
    raise DiscoZooError(f"{source} holds no {PROGRAM_NAME} (nor node{rank}/{PROGRAM_NAME}): give the folder that "
                        "`disco-zoo export MODEL --format onnx --out DIR` wrote")


def _check_sums(folder: Path) -> None:
    sums = folder / SUMS_NAME
    if not sums.is_file():
        raise IntegrityError(f"{sums} is missing: the node folder is incomplete; export it again")
    listed = {}
    for line in sums.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if not name or "/" in name:
            raise IntegrityError(f"{sums}: malformed line {line[:60]!r}; export the folder again")
        listed[name] = digest
    for name in (PROGRAM_NAME, CONFIG_NAME):
        if name not in listed:
            raise IntegrityError(f"{sums} does not list {name}; export the folder again")
    for name, digest in listed.items():
        path = folder / name
        if not path.is_file():
            raise IntegrityError(f"{path} is missing; export the folder again")
        actual = sha256_file(path)
        if actual != digest:
            raise IntegrityError(f"{path} sha256 {actual[:16]}... differs from {SUMS_NAME}'s {digest[:16]}...: the file "
                                 "is corrupt or was tampered with; nothing was run")


def partition_digest(partition: dict[str, Any]) -> str:
    """sha256 of a partition's canonical JSON: a program names the split it was cut for."""
    return hashlib.sha256(json.dumps(partition, sort_keys=True).encode()).hexdigest()


def load_program(source: Path | str, rank: int, world_size: int) -> NodeProgram:
    """Rank ``rank``'s checked program from ``source`` (a node folder or the export root)."""
    folder = program_folder(source, rank)
    _check_sums(folder)
    try:
        program = json.loads((folder / PROGRAM_NAME).read_text())
    except ValueError as err:
        raise DiscoZooError(f"{folder / PROGRAM_NAME} is not JSON ({err}); export the folder again") from None
    if not isinstance(program, dict) or program.get("format") != PROGRAM_FORMAT:
        raise DiscoZooError(f"{folder / PROGRAM_NAME} is not a {PROGRAM_FORMAT} program; export the folder again")
    node, nodes = program["node"], program["nodes"]
    if node != rank:
        raise DiscoZooError(f"{folder} is node {node}'s program, given to rank {rank}: give rank {rank} the folder "
                            f"node{rank} of the same export (or the export's root, which picks it)")
    if nodes != world_size:
        raise DiscoZooError(f"{folder} is a program for {nodes} nodes; run it with {nodes} ranks, not {world_size}")
    config = read_config(folder)
    shard = next((f for f in config.get("source_files", []) if f.get("name") == program["shard"]["name"]), None)
    if shard is None or shard.get("sha256") != program["shard"]["sha256"]:
        have = shard["sha256"][:16] + "..." if shard else "no record"
        raise DiscoZooError(f"{folder / PROGRAM_NAME} was exported from shard {program['shard']['name']} sha256 "
                            f"{program['shard']['sha256'][:16]}..., but {CONFIG_NAME} records {have}: the program "
                            "does not match this model's shard; export the model again")
    if partition_digest(config.get("partition") or {}) != program.get("partition_sha256"):
        raise DiscoZooError(f"{folder / PROGRAM_NAME} was cut for another partition than {CONFIG_NAME}'s: the program "
                            "does not match this model's shard; export the model again")
    for seg in program["segments"]:
        actual = sha256_file(folder / seg["file"])
        if actual != seg["sha256"]:
            raise IntegrityError(f"{folder / seg['file']} sha256 {actual[:16]}... differs from {PROGRAM_NAME}'s "
                                 f"{seg['sha256'][:16]}...: the segment does not belong to this program; export again")
    return NodeProgram(folder, program)
