"""``shopsync projects``: the projects sharing the control plane, each with its own warehouse."""

from __future__ import annotations

import json
from pathlib import Path

import click

from orchestration.control import ControlSettings, RegistryError, StoreRegistry


@click.group(name="projects")
def command() -> None:
    """Projects: each owns a warehouse; a store belongs to one project."""


@command.command("list")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Data folder (control database); default $SHOPSYNC_DATA_DIR or ./data.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_projects(data_dir: Path | None, as_json: bool) -> None:
    """List projects with their warehouse and stores (a Dagster code location serves one: SHOPSYNC_PROJECT)."""
    try:
        registry = StoreRegistry(
            ControlSettings(data_dir=data_dir) if data_dir is not None else ControlSettings()
        )
        projects = registry.projects()
        stores = {name: [s.domain for s in registry.list_stores(name)] for name in projects}
    except RegistryError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None
    if as_json:
        rows = [{"project": n, "warehouse": projects[n], "stores": stores[n]} for n in projects]
        click.echo(json.dumps(rows, indent=1))
        return
    if not projects:
        click.echo("No projects yet: connecting a store creates its project (--project, default 'default').")
        return
    for name, warehouse in projects.items():
        click.echo(f"{name:<20} {len(stores[name])} store(s)  warehouse {warehouse}")
        for domain in stores[name]:
            click.echo(f"    {domain}")
