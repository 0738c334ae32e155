"""``shopsync stores``: connect Shopify stores and operate them.

connect / reconnect (three ways: a static token, the client-credentials grant, or OAuth),
list, health, retry, resync, disconnect, delete and settings. Syncs run as Dagster runs on
the persistent local instance (``DAGSTER_HOME``, else ``.dagster_home``), so they appear in
the UI next to the scheduled ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from orchestration.control import (
    AuthKind,
    ControlSettings,
    EntityState,
    InvalidStoreDomain,
    RegistryError,
    SecretKeyError,
    StoreNotFound,
    StoreRegistry,
    StoreStatus,
    normalize_store_domain,
)
from orchestration.control.connect import ConnectError, Verified

# Exit codes: 1 = the operation failed, 2 = the input was invalid (click's usage code too).
EXIT_FAILED = 1
EXIT_INVALID = 2
# The product's order of the initial sync (Customers → Orders → Products → Collections → Checkouts).
ENTITY_LABELS: dict[str, str] = {
    "customers": "Customers",
    "orders": "Orders",
    "products": "Products",
    "collections": "Collections",
    "abandoned_checkouts": "Checkouts",
}
AUTH_LABELS: dict[AuthKind, str] = {
    AuthKind.ACCESS_TOKEN: "access token",
    AuthKind.CLIENT_CREDENTIALS: "client credentials",
    AuthKind.OAUTH: "OAuth",
}
AUTH_HELP = (
    "Give one of: --token TOKEN (a custom app's Admin API token); --client-id ID --client-secret SECRET "
    "(the client-credentials grant); --oauth --client-id ID --client-secret SECRET (approve in the browser)."
)


def _registry(data_dir: Path | None) -> StoreRegistry:
    settings = ControlSettings(data_dir=data_dir) if data_dir is not None else ControlSettings()
    return StoreRegistry(settings)


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(code)


_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Data folder (control database, landing zone, warehouse); default $SHOPSYNC_DATA_DIR or ./data.",
)


def _auth_options(fn: Any) -> Any:
    """The credential options shared by connect and reconnect."""
    for option in reversed(
        [
            click.option(
                "--token", default=None, help="Admin API access token of a custom app (never logged)."
            ),
            click.option(
                "--client-id", default=None, help="The app's client id (client credentials or OAuth)."
            ),
            click.option(
                "--client-secret",
                default=None,
                help="The app's client secret: the grant's secret, and the key of webhook signatures (never logged).",
            ),
            click.option(
                "--oauth", is_flag=True, help="Approve the app in the browser (authorization-code flow)."
            ),
            click.option(
                "--scopes",
                default=None,
                help="Comma-separated scopes to ask for with --oauth (default: what the sync toggles need).",
            ),
            click.option(
                "--callback-port",
                type=click.IntRange(0, 65535),
                default=8788,
                show_default=True,
                help=(
                    "Port of the local OAuth callback: add http://127.0.0.1:PORT/shopsync/oauth/callback "
                    "to the app's allowed redirection URLs (Shopify redirects only there)."
                ),
            ),
            click.option(
                "--oauth-timeout",
                type=click.FloatRange(1, 3600),
                default=300.0,
                show_default=True,
                help="Seconds to wait for the approval.",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def _verify(
    domain: str,
    base_url: str | None,
    *,
    token: str | None,
    client_id: str | None,
    client_secret: str | None,
    oauth: bool,
    scopes: list[str],
    callback_port: int,
    oauth_timeout: float,
) -> Verified:
    """Check the chosen credentials with Shopify (usage errors exit 2, refusals exit 1)."""
    from orchestration.control import connect

    if token and oauth:
        _fail("Give either --token or --oauth, not both. " + AUTH_HELP, EXIT_INVALID)
    try:
        if token:
            return connect.verify_token(
                domain, token, base_url, client_id=client_id, client_secret=client_secret
            )
        if not (client_id and client_secret):
            _fail(
                ("--oauth needs --client-id and --client-secret. " if oauth else "No credentials given. ")
                + AUTH_HELP,
                EXIT_INVALID,
            )
        if oauth:

            def show(url: str) -> None:
                click.echo("Open this URL in a browser logged in to the store's admin and approve the app:")
                click.echo(url)
                click.echo(f"Waiting up to {oauth_timeout:.0f} s for Shopify's redirect...")

            return connect.verify_oauth(
                domain,
                client_id,
                client_secret,
                base_url,
                scopes,
                show_url=show,
                port=callback_port,
                timeout=oauth_timeout,
            )
        return connect.verify_client_credentials(domain, client_id, client_secret, base_url)
    except ConnectError as exc:
        _fail(str(exc))


def _scope_list(raw: str | None, *, push: bool) -> list[str]:
    from orchestration.control.connect import requested_scopes

    if raw:
        return sorted({s.strip() for s in raw.split(",") if s.strip()})
    return requested_scopes(push=push)


def _subscribe_webhooks(registry: StoreRegistry, domain: str, url: str) -> None:
    from orchestration.commands.webhooks import register_subscriptions
    from pipelines.shopify.client import ShopifyClient, ShopifyError

    try:
        with ShopifyClient(domain, max_attempts=3, **registry.client_options(domain)) as client:
            created = register_subscriptions(client, url)
    except ShopifyError as exc:
        click.echo(
            f"Warning: webhooks not subscribed ({exc}); run: shopsync webhooks register {domain} --url {url}",
            err=True,
        )
        return
    click.echo(f"Subscribed {len(created)} webhook topic(s) at {url}.")


def _offer_initial_sync(registry: StoreRegistry, domain: str, sync: bool | None) -> None:
    """Run the initial sync when asked (``--sync``), or ask when a person is at the terminal."""
    order = " → ".join(ENTITY_LABELS[e] for e in registry.enabled_entities(domain))
    if sync is None:
        if not sys.stdin.isatty():
            click.echo(f"Run the initial sync ({order}) with: shopsync stores resync {domain}")
            return
        sync = click.confirm(f"Run the initial sync now ({order})?", default=True)
    if not sync:
        click.echo(f"Initial sync not started; run it later with: shopsync stores resync {domain}")
        return
    outcomes = launch_initial_sync(registry, domain)
    for entity, outcome in outcomes.items():
        state = registry.entity_status(domain, entity)
        shown = state.state.value if state is not None else ("Synced" if outcome["success"] else "Failed")
        click.echo(f"  {ENTITY_LABELS[entity]:<12} {shown:<8} run {outcome['run_id']}")
    if not all(o["success"] for o in outcomes.values()):
        click.echo(f"Some entities failed; see: shopsync stores health {domain}", err=True)
        raise SystemExit(EXIT_FAILED)


@click.group(name="stores")
def command() -> None:
    """Connect Shopify stores and operate them."""


@command.command("connect")
@click.argument("domain", required=False, default="")
@_auth_options
@click.option(
    "--base-url",
    default=None,
    help="API base URL override, e.g. a devstore's http://127.0.0.1:PORT/shops/NAME.",
)
@click.option(
    "--project", default="default", show_default=True, help="Project (warehouse) the store belongs to."
)
@_data_dir_option
@click.option("--no-dagster", is_flag=True, help="Do not add the store as a Dagster partition (no sync).")
@click.option(
    "--webhook-url",
    default=None,
    envvar="SHOPSYNC_WEBHOOK_URL",
    help="Receiver URL to subscribe the store's webhooks to (default: $SHOPSYNC_WEBHOOK_URL; unset: none).",
)
@click.option(
    "--sync/--no-sync",
    default=None,
    help="Run the initial sync right away, or not (default: ask when at a terminal, else not).",
)
def connect(
    domain: str,
    token: str | None,
    client_id: str | None,
    client_secret: str | None,
    oauth: bool,
    scopes: str | None,
    callback_port: int,
    oauth_timeout: float,
    base_url: str | None,
    project: str,
    data_dir: Path | None,
    no_dagster: bool,
    webhook_url: str | None,
    sync: bool | None,
) -> None:
    """Validate DOMAIN, verify the credentials with Shopify, store them encrypted, subscribe the
    webhooks, add the store's partition and offer the initial sync."""
    try:
        domain = normalize_store_domain(domain)
    except InvalidStoreDomain as exc:
        _fail(str(exc), EXIT_INVALID)
    if sync and no_dagster:
        _fail("--sync needs Dagster; drop --no-dagster.", EXIT_INVALID)
    from orchestration.control.projects import InvalidProjectName, validate_project_name

    try:
        validate_project_name(project)
    except InvalidProjectName as exc:
        _fail(str(exc), EXIT_INVALID)
    moved_from: str | None = None
    try:
        registry = _registry(data_dir)
        # Refuse before anyone approves anything: a store belongs to one project, and moves
        # to another only once disconnected there (as the product says).
        try:
            existing = registry.get_store(domain)
        except StoreNotFound:
            existing = None
        if existing is not None and existing.project != project:
            if existing.status is not StoreStatus.DISCONNECTED:
                _fail(
                    f"Already connected to another project: {domain} belongs to project {existing.project!r}. "
                    f"Disconnect it there first (shopsync stores disconnect {domain}), then connect it here."
                )
            moved_from = existing.project
    except (RegistryError, SecretKeyError) as exc:
        _fail(str(exc))
    verified = _verify(
        domain,
        base_url,
        token=token,
        client_id=client_id,
        client_secret=client_secret,
        oauth=oauth,
        scopes=_scope_list(scopes, push=False),
        callback_port=callback_port,
        oauth_timeout=oauth_timeout,
    )
    try:
        credentials = dict(verified.credentials)
        if verified.auth_kind is AuthKind.ACCESS_TOKEN and not client_secret:
            # A reconnect with a new token keeps the webhook secret given earlier.
            credentials = {**_kept_secrets(registry, domain), **credentials}
        store = registry.connect_store(
            domain,
            credentials=credentials,
            project=project,
            api_base_url=base_url,
            scopes=verified.scopes,
            auth_kind=verified.auth_kind,
        )
    except (RegistryError, SecretKeyError) as exc:
        _fail(str(exc))
    click.echo(
        f"Connected {store.domain} to project {store.project} with {AUTH_LABELS[store.auth_kind]} "
        f"(scopes: {', '.join(store.scopes) or 'none'})."
    )
    if moved_from is not None:
        click.echo(
            f"Moved from project {moved_from}: its data there stays in that project's warehouse; "
            f"project {project} starts with an initial sync."
        )
    if webhook_url:
        _subscribe_webhooks(registry, domain, webhook_url)
    if no_dagster:
        return
    from orchestration.defs.instance import local_instance
    from orchestration.defs.shopify.partitions import add_store_partition

    if add_store_partition(local_instance(), domain):
        click.echo(f"Added Dagster partition {domain}.")
    _offer_initial_sync(registry, domain, sync)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "never"


@command.command("list")
@_data_dir_option
@click.option("--project", default=None, help="Only the stores of this project.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_stores(data_dir: Path | None, project: str | None, as_json: bool) -> None:
    """List registered stores: status, project, and each entity's sync status and last bulk sync."""
    try:
        registry = _registry(data_dir)
        stores = registry.list_stores(project)
        entities = {s.domain: registry.entity_statuses(s.domain) for s in stores}
    except RegistryError as exc:
        _fail(str(exc))
    if as_json:
        rows = [
            {
                "domain": s.domain,
                "project": s.project,
                "status": s.status.value,
                "auth": s.auth_kind.value,
                "scopes": list(s.scopes),
                "api_base_url": s.api_base_url,
                "connected_at": s.connected_at.isoformat() if s.connected_at else None,
                "entities": {
                    e.entity: {
                        "state": e.state.value,
                        "last_bulk_sync_at": e.last_bulk_sync_at.isoformat() if e.last_bulk_sync_at else None,
                        "last_sync_at": e.last_sync_at.isoformat() if e.last_sync_at else None,
                        "last_error": e.last_error,
                    }
                    for e in entities[s.domain]
                },
            }
            for s in stores
        ]
        click.echo(json.dumps(rows, indent=1))
        return
    if not stores:
        click.echo("No stores connected. Connect one with: shopsync stores connect mystore --token ...")
        return
    for s in stores:
        click.echo(
            f"{s.domain:<40} {s.status.value:<20} project={s.project}  auth={AUTH_LABELS[s.auth_kind]}"
        )
        if not entities[s.domain]:
            click.echo("    never synced")
        for e in entities[s.domain]:
            click.echo(f"    {e.entity:<20} {e.state.value:<8} last bulk sync {_when(e.last_bulk_sync_at)}")


# operations (health, retry, resync, disconnect, reconnect, delete) ------------------------------
def _kept_secrets(registry: StoreRegistry, domain: str) -> dict[str, str]:
    """The webhook secret (and client id) a reconnect with a new token keeps from before."""
    try:
        old = registry.credentials(domain)
    except RegistryError:
        return {}
    return {k: v for k, v in old.items() if k in ("client_secret", "client_id") and v}


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
    """Run the sync of a store (some entities, or all; ``full`` = re-sync) as a Dagster run.

    The run executes in this process on the persistent instance (``DAGSTER_HOME``, else
    ``.dagster_home``), which records it with its events and materialisations, so it shows
    in the UI like a scheduled run. Paths are the store's project's.
    """
    from orchestration.defs.instance import in_process_tags, local_instance
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
    store = registry.get_store(domain)
    settings = registry.settings
    paths = registry.project_paths(store.project)
    instance = local_instance()
    add_store_partition(instance, domain)
    defs = build_shopify_defs(
        ShopifyStores(
            data_dir=str(settings.data_dir.resolve()),
            control_url=settings.control_url,
            project=store.project,
            bulk_poll_interval_s=0.2,
        ),
        SyncPaths(
            warehouse=str(paths.warehouse.resolve()),
            landing_root=str(paths.landing.resolve()),
            state_dir=str(paths.state.resolve()),
        ),
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
        tags={"shopsync/trigger": trigger, "shopsync/project": store.project, **in_process_tags()},
        raise_on_error=False,
    )
    from orchestration.control.status import mark_sync_succeeded

    states = {e.entity: e for e in registry.entity_statuses(domain)}
    if result.success and all(states[e].state is EntityState.SYNCED for e in chosen if e in states):
        mark_sync_succeeded(registry, domain)
    return {"run_id": result.run_id, "success": result.success}


def launch_initial_sync(registry: StoreRegistry, domain: str) -> dict[str, dict[str, object]]:
    """The initial sync: one run per enabled entity, in the product's order (Customers → Orders →
    Products → Collections → Checkouts); an entity failing does not stop the next."""
    outcomes: dict[str, dict[str, object]] = {}
    for entity in registry.enabled_entities(domain):
        outcomes[entity] = launch_sync(registry, domain, entities=[entity], trigger="initial_sync")
    return outcomes


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
        _fail(f"{domain} is {store.status.value}; reconnect it first: shopsync stores reconnect {domain}")


@command.command("disconnect")
@click.argument("domain")
@_data_dir_option
def disconnect(domain: str, data_dir: Path | None) -> None:
    """Pause DOMAIN: schedules, sensors and webhook processing skip it; its data stays."""
    from orchestration.control.status import disconnect as pause

    registry = _registry(data_dir)
    domain = _known_domain(registry, domain)
    pause(registry, domain)
    click.echo(f"Disconnected {domain}. Data is kept; resume with: shopsync stores reconnect {domain}")


@command.command("reconnect")
@click.argument("domain")
@_auth_options
@_data_dir_option
@click.option(
    "--webhook-url",
    default=None,
    envvar="SHOPSYNC_WEBHOOK_URL",
    help="Receiver URL to subscribe the store's webhooks to again (default: $SHOPSYNC_WEBHOOK_URL; unset: none).",
)
def reconnect(
    domain: str,
    token: str | None,
    client_id: str | None,
    client_secret: str | None,
    oauth: bool,
    scopes: str | None,
    callback_port: int,
    oauth_timeout: float,
    data_dir: Path | None,
    webhook_url: str | None,
) -> None:
    """Give DOMAIN fresh credentials; settings, customer list, history and data are kept.

    The same three ways as connect. Without options the store's own way is repeated with the
    stored app credentials (client credentials: a new grant; OAuth: approve again, asking
    for write_customers too when a "Sync data to Shopify" toggle is on); a store connected
    with a static token needs the new one (--token).
    """
    registry = _registry(data_dir)
    domain = _known_domain(registry, domain)
    store = registry.get_store(domain)
    stored = registry.credentials(domain)
    if not (token or oauth or (client_id and client_secret)):
        # No way given: repeat the store's own, with the app credentials kept from before.
        if store.auth_kind is AuthKind.ACCESS_TOKEN:
            _fail(
                f"{domain} was connected with a static access token: give the new one with --token. "
                + AUTH_HELP,
                EXIT_INVALID,
            )
        oauth = store.auth_kind is AuthKind.OAUTH
    if not token:
        client_id = client_id or stored.get("client_id")
        client_secret = client_secret or stored.get("client_secret")
    verified = _verify(
        domain,
        store.api_base_url,
        token=token,
        client_id=client_id,
        client_secret=client_secret,
        oauth=oauth,
        scopes=_scope_list(scopes, push=bool(registry.outbound_toggles(domain))),
        callback_port=callback_port,
        oauth_timeout=oauth_timeout,
    )
    credentials = dict(verified.credentials)
    if verified.auth_kind is AuthKind.ACCESS_TOKEN and not client_secret:
        credentials = {**_kept_secrets(registry, domain), **credentials}
    registry.connect_store(
        domain,
        credentials=credentials,
        project=store.project,
        api_base_url=store.api_base_url,
        scopes=verified.scopes,
        auth_kind=verified.auth_kind,
    )
    click.echo(
        f"Reconnected {domain} with {AUTH_LABELS[verified.auth_kind]} (scopes: {', '.join(verified.scopes) or 'none'}); "
        "settings, customer list, history and data kept."
    )
    if webhook_url:
        _subscribe_webhooks(registry, domain, webhook_url)


def _remove_partition(domain: str) -> bool:
    from orchestration.defs.instance import local_instance
    from orchestration.defs.shopify.partitions import STORES_PARTITION

    instance = local_instance()
    if not instance.has_dynamic_partition(STORES_PARTITION, domain):
        return False
    instance.delete_dynamic_partition(STORES_PARTITION, domain)
    return True


@command.command("delete")
@click.argument("domain")
@click.option("--yes", is_flag=True, help="Do not ask for the typed confirmation.")
@_data_dir_option
def delete(domain: str, yes: bool, data_dir: Path | None) -> None:
    """Delete DOMAIN irreversibly: uninstall the app (revoking its grant), remove the store's rows
    from every table, its landing files, journal entries, credentials and partition."""
    from orchestration.control.status import delete_store
    from pipelines.privacy import shop_rows

    registry = _registry(data_dir)
    domain = _known_domain(registry, domain)
    if not yes:
        store = registry.get_store(domain)
        rows = shop_rows(registry.project_paths(store.project).warehouse, domain)
        click.echo(
            f"This uninstalls the app from {domain} (revoking its access) and removes, from project "
            f"{store.project}: {sum(rows.values())} warehouse rows in {len(rows)} tables (and the store's "
            "contacts), its landing files and received webhooks, its credentials and its Dagster partition. "
            "It cannot be undone; disconnect instead to keep the data."
        )
        typed = click.prompt(f"Type the store domain ({domain}) to confirm", default="", show_default=False)
        if typed.strip().lower() != domain:
            _fail("Confirmation did not match; nothing was deleted.")
    report = delete_store(registry, domain, remove_partition=_remove_partition)
    click.echo(f"Deleted {domain} from project {report.project}:")
    for table, rows in sorted(report.warehouse_rows.items()):
        click.echo(f"  {rows:>8} rows from {table}")
    click.echo(f"  {report.landing_files:>8} landing files, {report.state_files} fetch state files")
    click.echo(
        f"  {report.journal_deliveries:>8} received webhooks, {report.quarantined} quarantined, "
        f"{report.privacy_exports} data-request exports"
    )
    click.echo(f"  analyst snapshot: {report.snapshot}")
    click.echo(f"  credentials removed: {'yes' if report.credentials else 'no'}")
    click.echo(f"  Dagster partition removed: {'yes' if report.partition else 'no'}")
    click.echo(f"  Shopify grant: {report.grant_revoked}")
    click.echo(
        "  Contacts shared with other stores lose this store now; their totals are recomputed by the next "
        "intelligence run. The app's webhook secret is kept, encrypted, only to verify Shopify's shop/redact."
    )


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
