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
from disco_zoo.runtime.errors import Interrupted
from disco_zoo.runtime.lifetime import interrupt_on_signals

app = typer.Typer(
    name="disco-zoo",
    help="Vision models distributed across small devices (DISCO, EdgeFlow, model zoo, eval).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = ("listing", "info", "train", "sparsify", "store", "run", "eval", "plan", "profile", "hubcmd",
                   "export", "node")

for _module in COMMAND_MODULES:
    importlib.import_module(f"disco_zoo.commands.{_module}").register(app)


def print_error(message: str) -> None:
    """``error: MESSAGE`` on stderr, the message verbatim: never parsed as rich markup
    (gloo's errors hold ``[/path/pair.cc:561]``), never wrapped into several lines."""
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True, highlight=False, soft_wrap=True).print(Text.assemble(("error:", "bold red"), " ", message))


def main() -> None:
    """Console entry point: bad input becomes one red line and exit status 2; SIGTERM and
    SIGHUP stop a command as Ctrl-C does (its runs cleaned up), exit status 128 + signal."""
    with interrupt_on_signals():
        try:
            app(standalone_mode=True)
        except DiscoZooError as err:
            print_error(str(err))
            sys.exit(2)
        except Interrupted as err:
            print_error(str(err))
            sys.exit(128 + err.signum)
        except OSError as err:  # the machine said no (disk full, permissions): one line, not a traceback
            where = f" ({err.filename})" if getattr(err, "filename", None) else ""
            print_error(f"{err.strerror or err}{where}")
            sys.exit(1)


if __name__ == "__main__":
    main()
