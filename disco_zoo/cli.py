"""The ``disco-zoo`` command line (typer + rich).

Each sub-command lives in ``disco_zoo/commands/<name>.py`` and exposes ``register(app)``;
heavy imports (torch, timm) happen inside the command bodies so that ``--help`` and
``list`` stay fast.
"""
from __future__ import annotations

import importlib
import sys

import typer

from disco_zoo.errors import DiscoZooError

app = typer.Typer(
    name="disco-zoo",
    help="Vision models distributed across small devices (DISCO, EdgeFlow, model zoo, eval).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = ("listing", "info", "train", "sparsify", "run", "eval", "plan", "profile", "hubcmd")

for _module in COMMAND_MODULES:
    importlib.import_module(f"disco_zoo.commands.{_module}").register(app)


def main() -> None:
    """Console entry point: bad input becomes one red line and exit status 2."""
    try:
        app(standalone_mode=True)
    except DiscoZooError as err:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
