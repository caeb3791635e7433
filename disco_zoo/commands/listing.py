"""``disco-zoo list``: registered models (no torch import)."""
from __future__ import annotations

import json
from typing import Any

import typer


def list_report(pattern: str, pretrained: bool) -> list[dict[str, Any]]:
    """One row per matching name: what the table shows and ``--json`` prints."""
    from disco_zoo.hub import list_pretrained
    from disco_zoo.registry import get_entry, list_models

    published = list_pretrained()
    names = list_pretrained(pattern) if pretrained else list_models(pattern)
    rows = []
    for name in names:
        entry = get_entry(name)
        tags = [n.partition(".")[2] for n in published if n.partition(".")[0] == entry.arch]
        rows.append({"name": name, "family": entry.family, "task": entry.task, "source": entry.source, "tags": tags})
    return rows


def list_command(
    pattern: str = typer.Argument("*", help="fnmatch pattern, e.g. 'resnet*' or '*disco*'."),
    pretrained: bool = typer.Option(False, "--pretrained", help="List arch.tag names with published weights."),
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON on stdout instead of the table."),
) -> None:
    """List registered models matching PATTERN."""
    rows = list_report(pattern, pretrained)
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"models matching {pattern!r}")
    for column in ("name", "family", "task", "source", "tags"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["family"], row["task"], row["source"], ", ".join(row["tags"]) or "-")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
