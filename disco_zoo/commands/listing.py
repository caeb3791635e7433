"""``disco-zoo list``: registered models (no torch import)."""
from __future__ import annotations

import typer


def list_command(
    pattern: str = typer.Argument("*", help="fnmatch pattern, e.g. 'resnet*' or '*disco*'."),
    pretrained: bool = typer.Option(False, "--pretrained", help="List arch.tag names with published weights."),
) -> None:
    """List registered models matching PATTERN."""
    from rich.console import Console
    from rich.table import Table

    from disco_zoo.hub import list_pretrained
    from disco_zoo.registry import get_entry, list_models

    published = list_pretrained()
    names = list_pretrained(pattern) if pretrained else list_models(pattern)
    table = Table(title=f"models matching {pattern!r}")
    table.add_column("name")
    table.add_column("family")
    table.add_column("task")
    table.add_column("source")
    table.add_column("tags")
    for name in names:
        entry = get_entry(name)
        tags = [n.partition(".")[2] for n in published if n.partition(".")[0] == entry.arch]
        table.add_row(name, entry.family, entry.task, entry.source, ", ".join(tags) or "-")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("list")(list_command)
