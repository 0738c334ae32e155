"""``shopsync engagement import FILE``: land an engagement feed file."""

from __future__ import annotations

from pathlib import Path

import click


@click.group(name="engagement")
def command() -> None:
    """Engagement feed (email and SMS events from the messaging side)."""


@command.command(name="import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--landing",
    "landing_root",
    type=click.Path(path_type=Path),
    default=Path("data/landing"),
    show_default=True,
    help="Landing zone root.",
)
def import_(file: Path, landing_root: Path) -> None:
    """Validate FILE (.jsonl or .csv) and land its events; malformed lines are quarantined.

    Dropping the file into <landing>/_engagement/ does the same without this command.
    """
    from pipelines.engagement import FeedFormatError, import_file

    try:
        result = import_file(file, landing_root)
    except (FileNotFoundError, FeedFormatError) as exc:
        raise click.ClickException(str(exc)) from None
    batch = result.batch.batch_id if result.batch else "none"
    click.echo(f"{result.accepted} events landed (batch {batch}); {result.quarantined} lines quarantined")
    if result.batch is not None:
        click.echo("The engagement_feed sensor loads the batch and recomputes consent within seconds.")
    if result.quarantine_path is not None:
        click.echo(f"quarantined lines and their reasons: {result.quarantine_path}")
