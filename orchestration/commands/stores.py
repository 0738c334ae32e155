"""``shopsync stores``: connect a Shopify store and list the registered ones.

Full connect flows (OAuth install, reconnect, disconnect, delete, health checks) extend
this group later; they share ``_registry`` and the registry's status setters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import click

from orchestration.control import (
    ControlSettings,
    InvalidStoreDomain,
    RegistryError,
    SecretKeyError,
    StoreRegistry,
    normalize_store_domain,
)

# Exit codes: 1 = the operation failed, 2 = the input was invalid (click's usage code too).
EXIT_FAILED = 1
EXIT_INVALID = 2


def _registry(data_dir: Path | None) -> StoreRegistry:
    settings = ControlSettings(data_dir=data_dir) if data_dir is not None else ControlSettings()
    return StoreRegistry(settings)


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(code)


def verify_store_access(domain: str, token: str, base_url: str | None) -> list[str]:
    """Check the token with one API call; return the access scopes it was granted."""
    from pipelines.shopify.client import ShopifyClient
    from pipelines.shopify.preflight import preflight

    with ShopifyClient(domain, access_token=token, base_url=base_url, max_attempts=3) as client:
        result = preflight(client)
    return sorted(result.scopes)


@click.group(name="stores")
def command() -> None:
    """Connect Shopify stores and list them."""


@command.command("connect")
@click.argument("domain", required=False, default="")
@click.option("--token", required=True, help="Admin API access token of the store's app (never logged).")
@click.option(
    "--base-url",
    default=None,
    help="API base URL override, e.g. a devstore's http://127.0.0.1:PORT/shops/NAME.",
)
@click.option(
    "--project", default="default", show_default=True, help="Project (warehouse) the store belongs to."
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder of the control database and key (default: $SHOPSYNC_DATA_DIR or ./data).",
)
@click.option("--no-dagster", is_flag=True, help="Do not add the store as a Dagster partition.")
def connect(
    domain: str, token: str, base_url: str | None, project: str, data_dir: Path | None, no_dagster: bool
) -> None:
    """Validate DOMAIN, check the token with Shopify, store it encrypted and add the store partition."""
    try:
        domain = normalize_store_domain(domain)
    except InvalidStoreDomain as exc:
        _fail(str(exc), EXIT_INVALID)
    from pipelines.shopify.client import ShopifyError

    try:
        scopes = verify_store_access(domain, token, base_url)
    except ShopifyError as exc:
        _fail(f"Could not connect {domain}: {exc}")
    try:
        registry = _registry(data_dir)
        store = registry.connect_store(
            domain, access_token=token, project=project, api_base_url=base_url, scopes=scopes
        )
    except (RegistryError, SecretKeyError) as exc:
        _fail(str(exc))
    added = False
    if not no_dagster:
        from orchestration.defs.instance import local_instance
        from orchestration.defs.shopify.partitions import add_store_partition

        added = add_store_partition(local_instance(), domain)
    click.echo(
        f"Connected {store.domain} to project {store.project} (scopes: {', '.join(store.scopes) or 'none'})."
    )
    if added:
        click.echo(f"Added Dagster partition {domain}; materialize the shopify assets for it to sync.")


@command.command("list")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_stores(data_dir: Path | None, as_json: bool) -> None:
    """List registered stores with their status and per-entity sync status."""
    try:
        registry = _registry(data_dir)
        stores = registry.list_stores()
        entities = {s.domain: registry.entity_statuses(s.domain) for s in stores}
    except RegistryError as exc:
        _fail(str(exc))
    if as_json:
        rows = [
            {
                "domain": s.domain,
                "project": s.project,
                "status": s.status.value,
                "scopes": list(s.scopes),
                "api_base_url": s.api_base_url,
                "connected_at": s.connected_at.isoformat() if s.connected_at else None,
                "entities": {e.entity: e.state.value for e in entities[s.domain]},
            }
            for s in stores
        ]
        click.echo(json.dumps(rows, indent=1))
        return
    if not stores:
        click.echo("No stores connected. Connect one with: shopsync stores connect mystore --token ...")
        return
    for s in stores:
        synced = ", ".join(f"{e.entity}: {e.state.value}" for e in entities[s.domain]) or "never synced"
        click.echo(f"{s.domain:<40} {s.status.value:<20} project={s.project}  {synced}")
