"""``shopsync push``: reverse sync by hand — see the plan, push now, replay dead letters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import click

from orchestration.control import ControlSettings, StoreRegistry
from orchestration.control.registry import RegistryError

EXIT_FAILED = 1

_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Control-plane data folder (default: data/).",
)
_warehouse_option = click.option(
    "--warehouse",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Warehouse file (default: the store's project warehouse).",
)


def _fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(EXIT_FAILED)


def _open(data_dir: Path | None, domain: str, warehouse: Path | None) -> tuple[StoreRegistry, Path]:
    registry = StoreRegistry(
        ControlSettings(data_dir=data_dir) if data_dir is not None else ControlSettings()
    )
    try:
        store = registry.get_store(domain)
    except RegistryError as exc:
        _fail(str(exc))
    path = warehouse or Path(registry.projects().get(store.project, "data/warehouse.duckdb"))
    return registry, path


@click.group(name="push")
def command() -> None:
    """Reverse sync: push consent, engagement metafields and profile fill to Shopify."""


@command.command("plan")
@click.argument("domain")
@_data_dir_option
@_warehouse_option
@click.option("--sample", default=5, show_default=True, help="Plan rows to show.")
def plan(domain: str, data_dir: Path | None, warehouse: Path | None, sample: int) -> None:
    """Show what a push to DOMAIN would send (counts per kind and a sample); sends nothing."""
    from orchestration.defs.reverse_sync.service import plan_store

    registry, path = _open(data_dir, domain, warehouse)
    result = plan_store(path, registry, domain, as_of=datetime.now(UTC))
    if result.blocked is not None:
        click.echo(result.blocked)
        return
    if not result.toggles:
        click.echo(f"All Sync-data-to-Shopify toggles are off for {domain}; nothing would be sent.")
        click.echo(f"Turn one on with: shopsync stores settings {domain} --push-email-consent on")
        return
    click.echo(f"Push plan for {domain} (toggles on: {', '.join(sorted(result.toggles))}):")
    counts = result.counts()
    for kind in sorted(result.toggles):
        click.echo(f"  {kind:<14} {counts.get(kind, 0):>7}")
    if result.skips.height:
        click.echo(f"  skipped        {result.skips.height:>7}  (e.g. {result.skips['reason'][0]})")
    for row in result.plan.head(sample).iter_rows(named=True):
        click.echo(f"  - customer {row['customer_id']} {row['kind']} {row['key'] or ''} {row['reason']}")


@command.command("run")
@click.argument("domain")
@_data_dir_option
@_warehouse_option
def run(domain: str, data_dir: Path | None, warehouse: Path | None) -> None:
    """Plan, push and record for DOMAIN now (what the Dagster push jobs do)."""
    from orchestration.defs.reverse_sync.service import (
        default_state_dir,
        journal_dir,
        plan_store,
        push_store,
        record_store,
    )
    from pipelines.push_journal import PushBusy

    registry, path = _open(data_dir, domain, warehouse)
    now = datetime.now(UTC)
    run_id = f"cli-{uuid.uuid4().hex[:12]}"
    journal = journal_dir(default_state_dir(path))
    result = plan_store(path, registry, domain, as_of=now)
    if result.blocked is not None:
        _fail(result.blocked)
    if not result.toggles:
        click.echo(f"All Sync-data-to-Shopify toggles are off for {domain}; nothing was sent.")
        return
    try:
        report = push_store(registry, result, run_id=run_id, now=now, journal_folder=journal)
    except PushBusy as exc:
        _fail(str(exc))
    if report is None:
        _fail(registry.get_store(domain).status_detail or "Reconnect the store.")
    summary = record_store(path, report, shop=domain, run_id=run_id, at=now, journal_folder=journal)
    if not summary.logged:
        click.echo(f"Nothing to push to {domain}.")
        return
    click.echo(f"Pushed to {domain}: {summary.by_outcome}; {summary.dead} dead-lettered.")
    if report.consent_failures:
        for cid, error in report.consent_failures:
            click.echo(f"  consent push failed for customer {cid}: {error}", err=True)
        raise SystemExit(EXIT_FAILED)


@command.command("retry-dead")
@click.argument("domain")
@_data_dir_option
@_warehouse_option
def retry_dead_command(domain: str, data_dir: Path | None, warehouse: Path | None) -> None:
    """Queue DOMAIN's dead-lettered writes for the next push."""
    from orchestration.defs.reverse_sync.service import retry_dead

    _registry, path = _open(data_dir, domain, warehouse)
    n = retry_dead(path, domain, at=datetime.now(UTC))
    click.echo(f"{n} dead-lettered write(s) of {domain} queued for the next push.")
