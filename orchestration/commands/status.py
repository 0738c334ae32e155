"""``shopsync status``: every store as a card — status, entities, last sync, health, dead letters, webhook lag."""

from __future__ import annotations

import json
from pathlib import Path

import click

from orchestration.control import ControlSettings, RegistryError, StoreRegistry


@click.command(name="status")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Data folder (control database, landing zone, warehouse); default $SHOPSYNC_DATA_DIR or ./data.",
)
@click.option("--project", default=None, help="Only the stores of this project.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of cards.")
def command(data_dir: Path | None, project: str | None, as_json: bool) -> None:
    """Show every store as a status card (figures from each store's project warehouse)."""
    from orchestration.control.status import render_card, store_cards

    try:
        registry = StoreRegistry(
            ControlSettings(data_dir=data_dir) if data_dir is not None else ControlSettings()
        )
        cards = store_cards(registry, project=project)
    except RegistryError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None
    if as_json:
        click.echo(json.dumps([c.as_dict() for c in cards], indent=1))
        return
    if not cards:
        click.echo("No stores connected. Connect one with: shopsync stores connect mystore --token ...")
        return
    click.echo("\n".join(render_card(c) for c in cards))
