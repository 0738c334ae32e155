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
    EntityState,
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
@click.option(
    "--client-secret", default=None, help="The app's client secret: verifies webhooks (never logged)."
)
@click.option(
    "--webhook-url",
    default=None,
    envvar="SHOPSYNC_WEBHOOK_URL",
    help="Receiver URL to subscribe the store's webhooks to (default: $SHOPSYNC_WEBHOOK_URL; unset: none).",
)
def connect(
    domain: str,
    token: str,
    base_url: str | None,
    project: str,
    data_dir: Path | None,
    no_dagster: bool,
    client_secret: str | None = None,
    webhook_url: str | None = None,
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
            domain,
            access_token=token,
            project=project,
            api_base_url=base_url,
            scopes=scopes,
            extra_credentials=_kept_secrets(registry, domain, client_secret),
        )
    except (RegistryError, SecretKeyError) as exc:
        _fail(str(exc))
    if webhook_url:
        _subscribe_webhooks(domain, token, base_url, webhook_url)
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


# operations (health, retry, resync, disconnect, reconnect, delete) ------------------------------
_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Data folder (control database, landing zone, warehouse); default $SHOPSYNC_DATA_DIR or ./data.",
)


def _kept_secrets(registry: StoreRegistry, domain: str, client_secret: str | None) -> dict[str, str]:
    """Extra credentials to store: the given client secret, else the one a reconnect keeps."""
    if client_secret:
        return {"client_secret": client_secret}
    try:
        old = registry.credentials(domain)
    except RegistryError:
        return {}
    return {k: v for k, v in old.items() if k == "client_secret" and v}


def _subscribe_webhooks(domain: str, token: str, base_url: str | None, url: str) -> None:
    from orchestration.commands.webhooks import register_subscriptions
    from pipelines.shopify.client import ShopifyClient, ShopifyError

    try:
        with ShopifyClient(domain, access_token=token, base_url=base_url, max_attempts=3) as client:
            created = register_subscriptions(client, url)
    except ShopifyError as exc:
        click.echo(
            f"Warning: webhooks not subscribed ({exc}); run: shopsync webhooks register {domain}", err=True
        )
        return
    click.echo(f"Subscribed {len(created)} webhook topic(s) at {url}.")


def _known_domain(registry: StoreRegistry, domain: str) -> str:
    try:
        domain = normalize_store_domain(domain)
        registry.get_store(domain)
    except InvalidStoreDomain as exc:
        _fail(str(exc), EXIT_INVALID)
    except RegistryError as exc:
        _fail(str(exc))
    return domain


def launch_sync(
    registry: StoreRegistry,
    domain: str,
    *,
    entities: list[str] | None = None,
    full: bool = False,
    trigger: str = "cli",
) -> dict[str, object]:
    """Run the sync of a store (some entities, or all; ``full`` = re-sync) on the local Dagster instance.

    The run executes in this process and is recorded on the instance, so it shows in the UI.
    """
    from orchestration.defs.instance import local_instance
    from orchestration.defs.shopify.definitions import build_shopify_defs
    from orchestration.defs.shopify.jobs import fetch_key, fetch_run_config, table_key
    from orchestration.defs.shopify.partitions import SHOPIFY_ENTITIES, add_store_partition
    from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths

    enabled = registry.enabled_entities(domain)
    chosen = [e for e in (entities or SHOPIFY_ENTITIES) if e in enabled]
    if not chosen:
        raise click.ClickException(
            f"Nothing to sync: the inbound toggles of {domain} turn off "
            f"{', '.join(entities or SHOPIFY_ENTITIES)}. See: shopsync stores settings {domain}"
        )
    settings = registry.settings
    data_dir = settings.data_dir.resolve()
    instance = local_instance()
    add_store_partition(instance, domain)
    defs = build_shopify_defs(
        ShopifyStores(data_dir=str(data_dir), control_url=settings.control_url, bulk_poll_interval_s=0.2),
        SyncPaths.under(data_dir),
    )
    job = defs.resolve_job_def("shopify_sync")
    for entity in chosen:
        # Pending until the run reaches it: the product shows queued entities as Pending.
        registry.mark_entity(domain, entity, EntityState.PENDING)
    result = job.execute_in_process(
        instance=instance,
        partition_key=domain,
        run_config={
            **fetch_run_config(full=full, entities=chosen),
            # Progress goes to the instance (the UI); the terminal gets warnings only.
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        },
        asset_selection=[k for e in chosen for k in (fetch_key(e), table_key(e))],
        tags={"shopsync/trigger": trigger},
        raise_on_error=False,
    )
    from orchestration.control.status import mark_sync_succeeded

    states = {e.entity: e for e in registry.entity_statuses(domain)}
    if result.success and all(states[e].state is EntityState.SYNCED for e in chosen if e in states):
        mark_sync_succeeded(registry, domain)
    return {"run_id": result.run_id, "success": result.success}


def _entity_lines(registry: StoreRegistry, domain: str) -> list[str]:
    return [
        f"  {e.entity:<20} {e.state.value}" + (f" — {e.last_error}" if e.last_error else "")
        for e in registry.entity_statuses(domain)
    ]


@command.command("health")
@click.argument("domain")
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def health(domain: str, data_dir: Path | None, as_json: bool) -> None:
    """Run the readiness checklist of DOMAIN and refresh its store details (exit 1 if a check fails)."""
    from orchestration.control.health import check_health

    registry = _registry(data_dir)
    domain = _known_domain(registry, domain)
    report = check_health(registry, domain)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "domain": domain,
                    "status": report.status.value,
                    "healthy": report.healthy,
                    "items": [i.__dict__ for i in report.items],
                    "details": report.details,
                },
                indent=1,
            )
        )
    else:
        click.echo(f"Health of {domain}: {report.status.value}")
        for item in report.items:
            click.echo(f"  {'PASS' if item.passed else 'FAIL'}  {item.name}: {item.detail}")
            if not item.passed:
                click.echo(f"        fix: {item.fix}")
        if report.details:
            d = report.details
            click.echo(
                f"  Store: {d.get('domain')}  email {d.get('email')}  custom domain {d.get('custom_domain')}  "
                f"plan {d.get('plan')}  currency {d.get('currency')}  country {d.get('country')}"
            )
        store = registry.get_store(domain)
        if store.connected_at:
            click.echo(f"  Connected at {store.connected_at.isoformat()}")
    if not report.healthy:
        raise SystemExit(EXIT_FAILED)


@command.command("retry")
@click.argument("domain")
@click.argument("entity")
@_data_dir_option
def retry(domain: str, entity: str, data_dir: Path | None) -> None:
    """Retry one entity of DOMAIN (fetch what changed, then load) as a run on the Dagster instance."""
    from orchestration.defs.shopify.partitions import SHOPIFY_ENTITIES

    if entity not in SHOPIFY_ENTITIES:
        _fail(f"Unknown entity {entity!r}; choose one of {', '.join(SHOPIFY_ENTITIES)}.", EXIT_INVALID)
    registry = _registry(data_dir)
    domain = _known_domain(registry, domain)
    _refuse_paused(registry, domain)
    outcome = launch_sync(registry, domain, entities=[entity], trigger="retry")
    click.echo(
        f"Retry of {entity} for {domain}: run {outcome['run_id']} {'succeeded' if outcome['success'] else 'failed'}."
    )
    for line in _entity_lines(registry, domain):
        click.echo(line)
    if not outcome["success"]:
        click.echo(f"If it fails again, run: shopsync stores health {domain}", err=True)
        raise SystemExit(EXIT_FAILED)


@command.command("resync")
@click.argument("domain")
@_data_dir_option
def resync(domain: str, data_dir: Path | None) -> None:
    """Re-sync DOMAIN: bulk export of every entity plus deletion reconciliation (safe to repeat)."""
    registry = _registry(data_dir)
    domain = _known_domain(registry, domain)
    _refuse_paused(registry, domain)
    outcome = launch_sync(registry, domain, full=True, trigger="resync")
    click.echo(
        f"Re-sync of {domain}: run {outcome['run_id']} {'succeeded' if outcome['success'] else 'failed'}."
    )
    for line in _entity_lines(registry, domain):
        click.echo(line)
    if not outcome["success"]:
        raise SystemExit(EXIT_FAILED)


def _refuse_paused(registry: StoreRegistry, domain: str) -> None:
    from orchestration.control import StoreStatus

    store = registry.get_store(domain)
    if store.status in (StoreStatus.DISCONNECTED, StoreStatus.RECONNECT_REQUIRED):
        _fail(
            f"{domain} is {store.status.value}; reconnect it first: shopsync stores reconnect {domain} --token ..."
        )


@command.command("disconnect")
@click.argument("domain")
@_data_dir_option
def disconnect(domain: str, data_dir: Path | None) -> None:
    """Pause DOMAIN: schedules, sensors and webhook processing skip it; its data stays."""
    from orchestration.control.status import disconnect as pause

    registry = _registry(data_dir)
    domain = _known_domain(registry, domain)
    pause(registry, domain)
    click.echo(
        f"Disconnected {domain}. Data is kept; resume with: shopsync stores reconnect {domain} --token ..."
    )


@command.command("reconnect")
@click.argument("domain")
@click.option("--token", required=True, help="The new Admin API access token (never logged).")
@click.option("--client-secret", default=None, help="The app's client secret (default: keep the stored one).")
@_data_dir_option
def reconnect(domain: str, token: str, client_secret: str | None, data_dir: Path | None) -> None:
    """Give DOMAIN new credentials; settings, history and data are kept; status becomes Connected."""
    from pipelines.shopify.client import ShopifyError

    registry = _registry(data_dir)
    domain = _known_domain(registry, domain)
    store = registry.get_store(domain)
    try:
        scopes = verify_store_access(domain, token, store.api_base_url)
    except ShopifyError as exc:
        _fail(f"Could not reconnect {domain}: {exc}")
    registry.connect_store(
        domain,
        access_token=token,
        project=store.project,
        api_base_url=store.api_base_url,
        scopes=scopes,
        auth_kind=store.auth_kind,
        extra_credentials=_kept_secrets(registry, domain, client_secret),
    )
    click.echo(f"Reconnected {domain} (scopes: {', '.join(scopes) or 'none'}); data and history kept.")


def _revoke_grant(registry: StoreRegistry, domain: str) -> str:
    """Revoke the access token on the shop where that is possible (the devstore's control API)."""
    import httpx

    store = registry.get_store(domain)
    base = store.api_base_url or ""
    if "/shops/" not in base:
        # Shopify revokes an app's grant when the merchant uninstalls it; the Admin API has no call for it.
        return "not supported by Shopify's Admin API: uninstall the app in the Shopify admin"
    root, handle = base.split("/shops/", 1)
    token = registry.credentials(domain).get("access_token")
    try:
        response = httpx.post(
            f"{root}/_devstore/shops/{handle.strip('/')}/tokens/revoke", json={"token": token}, timeout=10
        )
    except httpx.HTTPError as exc:
        return f"failed ({type(exc).__name__})"
    return "revoked" if response.status_code == 200 else f"not revoked (HTTP {response.status_code})"


@command.command("delete")
@click.argument("domain")
@click.option("--yes", is_flag=True, help="Do not ask for the typed confirmation.")
@_data_dir_option
def delete(domain: str, yes: bool, data_dir: Path | None) -> None:
    """Delete DOMAIN irreversibly: its warehouse rows, landing files, credentials and partition."""
    from orchestration.control.status import delete_store_data

    registry = _registry(data_dir)
    domain = _known_domain(registry, domain)
    if not yes:
        click.echo(
            f"This removes every row of {domain} from the warehouse, its landing files, its credentials and "
            "its Dagster partition. It cannot be undone (disconnect instead to keep the data)."
        )
        typed = click.prompt(f"Type the store domain ({domain}) to confirm", default="", show_default=False)
        if typed.strip().lower() != domain:
            _fail("Confirmation did not match; nothing was deleted.")
    revoked = _revoke_grant(registry, domain)
    root = registry.settings.data_dir
    report = delete_store_data(
        registry,
        domain,
        warehouse=root / "warehouse.duckdb",
        landing_root=root / "landing",
        state_dir=root / "state",
    )
    report.grant_revoked = revoked
    from orchestration.defs.instance import local_instance
    from orchestration.defs.shopify.partitions import STORES_PARTITION

    instance = local_instance()
    if instance.has_dynamic_partition(STORES_PARTITION, domain):
        instance.delete_dynamic_partition(STORES_PARTITION, domain)
        report.partition = True
    click.echo(f"Deleted {domain}:")
    for table, rows in sorted(report.warehouse_rows.items()):
        click.echo(f"  {rows:>8} rows from {table}")
    click.echo(f"  {report.landing_files:>8} landing files, {report.state_files} fetch state files")
    click.echo(f"  credentials removed: {'yes' if report.credentials else 'no'}")
    click.echo(f"  Dagster partition removed: {'yes' if report.partition else 'no'}")
    click.echo(f"  Shopify grant: {report.grant_revoked}")


_ON_OFF = click.Choice(["on", "off"], case_sensitive=False)


@command.command("settings")
@click.argument("domain")
@_data_dir_option
@click.option(
    "--sync-customer-profiles", type=_ON_OFF, default=None, help="Import customer profiles from Shopify."
)
@click.option("--sync-email-consent", type=_ON_OFF, default=None, help="Import email consent from Shopify.")
@click.option("--sync-sms-consent", type=_ON_OFF, default=None, help="Import SMS consent from Shopify.")
@click.option(
    "--sync-orders", type=_ON_OFF, default=None, help="Import orders, checkouts and carts from Shopify."
)
@click.option(
    "--sync-catalogue", type=_ON_OFF, default=None, help="Import products and collections from Shopify."
)
@click.option(
    "--customer-list", default=None, help="Assign this customer list to the store (created if new)."
)
@click.option("--no-customer-list", is_flag=True, help="Unassign the store's customer list.")
@click.option("--push-email-consent", type=_ON_OFF, default=None, help="Sync email subscription to Shopify.")
@click.option("--push-sms-consent", type=_ON_OFF, default=None, help="Sync SMS subscription to Shopify.")
@click.option(
    "--push-profile", type=_ON_OFF, default=None, help="Sync profile data (fill empty fields) to Shopify."
)
@click.option("--push-engagement", type=_ON_OFF, default=None, help="Sync engagement to customer metafields.")
def settings(
    domain: str,
    data_dir: Path | None,
    sync_customer_profiles: str | None,
    sync_email_consent: str | None,
    sync_sms_consent: str | None,
    sync_orders: str | None,
    sync_catalogue: str | None,
    customer_list: str | None,
    no_customer_list: bool,
    push_email_consent: str | None,
    push_sms_consent: str | None,
    push_profile: str | None,
    push_engagement: str | None,
) -> None:
    """Show or change DOMAIN's sync settings.

    "Sync data from Shopify": five toggles, all on by default, and the customer list the
    store's customers land in. "Sync data to Shopify": four toggles, all off by default.
    Changes to the inbound toggles apply from the next sync; data already held stays.
    """
    from orchestration.control.registry import INBOUND_TOGGLES

    if customer_list is not None and no_customer_list:
        raise click.UsageError("Give either --customer-list NAME or --no-customer-list, not both.")
    registry = _registry(data_dir)
    domain = _known_domain(registry, domain)
    inbound_changes = {
        kind: value.lower() == "on"
        for kind, value in (
            ("customer_profiles", sync_customer_profiles),
            ("email_consent", sync_email_consent),
            ("sms_consent", sync_sms_consent),
            ("orders", sync_orders),
            ("catalogue", sync_catalogue),
        )
        if value is not None
    }
    changes = {
        kind: value.lower() == "on"
        for kind, value in (
            ("email_consent", push_email_consent),
            ("sms_consent", push_sms_consent),
            ("profile", push_profile),
            ("engagement", push_engagement),
        )
        if value is not None
    }
    try:
        inbound = (
            registry.set_inbound_toggles(domain, inbound_changes)
            if inbound_changes
            else registry.inbound_toggles(domain)
        )
        if customer_list is not None or no_customer_list:
            registry.assign_customer_list(domain, None if no_customer_list else customer_list)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    enabled = registry.set_outbound_toggles(domain, changes) if changes else registry.outbound_toggles(domain)
    click.echo(f"Sync data from Shopify for {domain}:")
    for kind, label in INBOUND_TOGGLES.items():
        click.echo(f"  {'on ' if kind in inbound else 'off'}  {label}")
    assigned = registry.customer_list(domain)
    click.echo(f"  customer list: {assigned or 'none assigned'}")
    labels = {
        "profile": "Sync profile data to Shopify",
        "email_consent": "Sync email subscription to Shopify",
        "sms_consent": "Sync SMS subscription to Shopify",
        "engagement": "Sync engagement to metafields",
    }
    click.echo(f"Sync data to Shopify for {domain}:")
    for kind, label in labels.items():
        click.echo(f"  {'on ' if kind in enabled else 'off'}  {label}")
    if changes and enabled:
        click.echo(
            "Pushing needs the write_customers permission; if it is missing the store shows Reconnect required."
        )
