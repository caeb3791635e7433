"""``disco-zoo hub push``, ``disco-zoo cards`` and ``disco-zoo plots``: publish a folder, regenerate
the model cards and their figures."""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any, Optional

import typer

CARD_NAME = "README.md"

hub_app = typer.Typer(help="The pretrained store (Hugging Face Hub layout).", no_args_is_help=True)


def upload_names(folder: Path, config: dict[str, Any]) -> list[str]:
    """The exact files ``hub push`` uploads: those config.json lists, config.json and the card.

    Anything else in the folder (a stray ``.env``, a notebook, a sub-folder) is refused
    rather than skipped, so a user never publishes what they did not mean to, and never
    believes a file went up that did not.
    """
    from disco_zoo.errors import DiscoZooError
    from disco_zoo.store import CONFIG_NAME

    listed = [str(item["name"]) for item in config.get("files", [])]
    root = folder.resolve()
    for name in listed:
        inside = (folder / name).resolve()
        if Path(name).is_absolute() or ".." in Path(name).parts or root not in inside.parents:
            raise DiscoZooError(f"{folder / CONFIG_NAME} lists {name!r}, which is not a file inside {folder}; "
                                "list files by their names relative to the folder.")
    wanted = {*(Path(name).as_posix() for name in listed), CONFIG_NAME, CARD_NAME}
    present: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*filenames, *(d for d in dirnames if os.path.islink(os.path.join(dirpath, d)))]:
            present.append(os.path.relpath(os.path.join(dirpath, name), folder))
    extra = sorted(set(present) - wanted)
    if extra:
        raise DiscoZooError(
            f"{folder} holds files config.json does not list: {', '.join(extra)}. `hub push` uploads only "
            f"the listed files, {CONFIG_NAME} and {CARD_NAME}: move the others out of the folder first."
        )
    return sorted(wanted)


@hub_app.command("push")
def push_command(
    model: str = typer.Argument(..., help="Pretrained name, e.g. resnet50-disco-2node.digits."),
    repo_id: Optional[str] = typer.Option(None, "--repo-id", help="Target repo (default disco-zoo/<arch>.<tag>)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="HF_TOKEN", help="Hugging Face token."),
    private: bool = typer.Option(False, "--private"),
) -> None:
    """Verify a local hub folder and upload it as a Hugging Face model repository."""
    from rich.console import Console

    from disco_zoo.errors import DiscoZooError
    from disco_zoo.hub import hf_repo_id, resolve_folder
    from disco_zoo.model_cards import render_folder_card
    from disco_zoo.store import read_config, verify_folder

    folder = resolve_folder(model, local_files_only=True)
    config = read_config(folder)
    names = upload_names(folder, config)  # before hashing: a name outside the folder is never read
    verify_folder(folder, config)
    card = folder / "README.md"
    if not card.is_file() or card.read_text() != render_folder_card(config):
        raise DiscoZooError(f"{card} is missing or stale: run `disco-zoo cards` first.")
    target = repo_id or hf_repo_id(model)
    try:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(target, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder), repo_id=target, repo_type="model",
            allow_patterns=[glob.escape(name) for name in names],  # exact names, never a wildcard
        )
    except Exception as err:  # network, auth, offline mode: one clear line
        raise DiscoZooError(
            f"upload of {folder} to {target} failed ({type(err).__name__}: {err}). "
            "It needs network access and a token (--token or HF_TOKEN), and HF_HUB_OFFLINE unset."
        ) from err
    Console().print(f"pushed {folder} -> {info}")


@hub_app.command("index")
def index_command(
    check: bool = typer.Option(False, "--check", help="Exit 1 if the shipped index is stale instead of writing it."),
) -> None:
    """Regenerate disco_zoo/published.json (what a pip install knows is published) from hub/."""
    from disco_zoo.errors import DiscoZooError
    from disco_zoo.hub import REPO_HUB
    from disco_zoo.published import INDEX_PATH, render_index, write_index

    if not REPO_HUB.is_dir():
        raise DiscoZooError(f"{REPO_HUB} does not exist: `hub index` runs in a clone, where hub/ is.")
    if check:
        stale = not INDEX_PATH.is_file() or INDEX_PATH.read_text() != render_index(REPO_HUB)
        typer.echo(f"{'stale' if stale else 'up to date'}: {INDEX_PATH}")
        if stale:
            raise typer.Exit(1)
        return
    typer.echo(f"{'wrote' if write_index(REPO_HUB) else 'up to date'}: {INDEX_PATH}")


def cards_command(
    check: bool = typer.Option(False, "--check", help="Exit 1 if a card is stale instead of writing it."),
) -> None:
    """Regenerate MODEL_CARDS.md and every hub folder's README.md from configs and eval results."""
    from rich.console import Console

    from disco_zoo.model_cards import write_cards

    stale = write_cards(check=check)
    console = Console()
    for path in stale:
        console.print(f"{'stale' if check else 'wrote'}: {path}")
    if check and stale:
        raise typer.Exit(1)


def plots_command() -> None:
    """Redraw the cards' figures under eval/plots/ from eval/results/*.json and eval/frontier/*.json."""
    from disco_zoo.model_cards import load_results
    from disco_zoo.plots import write_plots

    for path in write_plots(load_results(), say=typer.echo):
        typer.echo(f"wrote: {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(hub_app, name="hub")
    app.command("cards")(cards_command)
    app.command("plots")(plots_command)
