"""``disco-zoo hub push`` and ``disco-zoo cards``: publish a folder, regenerate model cards."""
from __future__ import annotations

from typing import Optional

import typer

hub_app = typer.Typer(help="The pretrained store (Hugging Face Hub layout).", no_args_is_help=True)


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
    from disco_zoo.hub import hf_repo_id, read_config, resolve_folder, verify_folder
    from disco_zoo.model_cards import render_folder_card

    folder = resolve_folder(model, local_files_only=True)
    config = read_config(folder)
    verify_folder(folder, config)
    card = folder / "README.md"
    if not card.is_file() or card.read_text() != render_folder_card(config):
        raise DiscoZooError(f"{card} is missing or stale: run `disco-zoo cards` first.")
    target = repo_id or hf_repo_id(model)
    try:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(target, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=target, repo_type="model")
    except Exception as err:  # network, auth, offline mode: one clear line
        raise DiscoZooError(
            f"upload of {folder} to {target} failed ({type(err).__name__}: {err}). "
            "It needs network access and a token (--token or HF_TOKEN), and HF_HUB_OFFLINE unset."
        ) from err
    Console().print(f"pushed {folder} -> {info}")


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


def register(app: typer.Typer) -> None:
    app.add_typer(hub_app, name="hub")
    app.command("cards")(cards_command)
