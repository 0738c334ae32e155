"""``shopsync webhooks``: run the receiver, apply received webhooks, subscribe a store.

``serve`` answers Shopify (verify, journal, seal into ``landing/<shop>/webhooks/``) with
each store's client secret from the registry; a store that is Disconnected or Reconnect
required is acknowledged and dropped. ``apply`` turns the sealed deliveries into entity
batches and loads them (the Dagster sensor does the same every 15 s).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from orchestration.control import ControlSettings, RegistryError, StoreNotFound, StoreRegistry, StoreStatus

DEFAULT_TOPICS: tuple[str, ...] = (
    "CUSTOMERS_CREATE",
    "CUSTOMERS_UPDATE",
    "CUSTOMERS_DELETE",
    "CUSTOMERS_EMAIL_MARKETING_CONSENT_UPDATE",
    "CUSTOMERS_MARKETING_CONSENT_UPDATE",
    "ORDERS_CREATE",
    "ORDERS_UPDATED",
    "ORDERS_DELETE",
    "PRODUCTS_CREATE",
    "PRODUCTS_UPDATE",
    "PRODUCTS_DELETE",
    "COLLECTIONS_CREATE",
    "COLLECTIONS_UPDATE",
    "COLLECTIONS_DELETE",
    "CHECKOUTS_CREATE",
    "CHECKOUTS_UPDATE",
    "APP_UNINSTALLED",
)
# Badges under which deliveries are acknowledged but not processed (the product stops
# webhook processing for a paused or unauthorised store).
PAUSED = (StoreStatus.DISCONNECTED, StoreStatus.RECONNECT_REQUIRED)


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(code)


def _registry(data_dir: Path | None) -> StoreRegistry:
    return StoreRegistry(ControlSettings(data_dir=data_dir) if data_dir is not None else ControlSettings())


def registry_lookup(registry: StoreRegistry, ttl_s: float = 5.0) -> Callable[[str], Any]:
    """The receiver's secret lookup backed by the registry (cached ``ttl_s`` seconds per shop).

    A registered store gets its app secret(s), whether it syncs, and its project's landing
    zone. A deleted store whose tombstone still keeps its signing secret is privacy-only
    (its ``shop/redact`` is still to come); any other shop is unknown (401).
    """
    from pipelines.webhooks.receiver import ShopWebhookConfig

    cache: dict[str, tuple[float, ShopWebhookConfig | None]] = {}
    lock = threading.Lock()

    def lookup(shop: str) -> ShopWebhookConfig | None:
        with lock:
            hit = cache.get(shop)
        if hit is not None and time.monotonic() - hit[0] < ttl_s:
            return hit[1]
        config: ShopWebhookConfig | None = None
        try:
            store = registry.get_store(shop)
        except StoreNotFound:
            secrets = registry.deleted_store_secrets(shop)
            if secrets:
                config = ShopWebhookConfig(
                    secrets=secrets,
                    active=False,
                    privacy_only=True,
                    landing_root=registry.store_paths(shop).landing,
                )
        else:
            secrets = registry.webhook_secrets(shop)
            if secrets:
                config = ShopWebhookConfig(
                    secrets=secrets,
                    active=store.status not in PAUSED,
                    landing_root=registry.project_paths(store.project).landing,
                )
        with lock:
            cache[shop] = (time.monotonic(), config)
        return config

    return lookup


def register_subscriptions(client: Any, uri: str, topics: tuple[str, ...] = DEFAULT_TOPICS) -> list[str]:
    """Subscribe the app to ``topics`` at ``uri``; return the topics newly subscribed.

    An "already taken" answer means the subscription exists, which is what we want.
    """
    from pipelines.shopify import documents

    created = []
    document = documents.load("webhook_subscription_create")
    for topic in topics:
        data = client.execute(document, {"topic": topic, "uri": uri}, expected_cost=10)
        payload = data.get("webhookSubscriptionCreate") or {}
        errors = [e.get("message", "") for e in payload.get("userErrors") or []]
        if payload.get("webhookSubscription"):
            created.append(topic)
        elif errors and not all("already been taken" in e for e in errors):
            # A topic the app lacks the scope for is skipped, not fatal: the others still flow.
            click.echo(f"Warning: could not subscribe to {topic}: {'; '.join(errors)}", err=True)
    return created


def apply_and_load(
    registry: StoreRegistry, data_dir: Path, shop: str | None = None
) -> dict[str, dict[str, Any]]:
    """Apply pending webhook batches of every syncing store (or one), load what landed, and
    act on pending privacy requests (those run for paused and deleted stores too)."""
    from orchestration.control.privacy import handle_privacy_requests
    from orchestration.control.status import mark_reconnect_required, mark_sync_failed
    from pipelines.loader import load_pending
    from pipelines.shopify.client import ShopifyAuthError, ShopifyClient, ShopifyError
    from pipelines.webhooks.apply import apply_pending

    del data_dir  # every store's paths are its project's (the registry knows them)
    outcome: dict[str, dict[str, Any]] = {}
    domains = [shop] if shop else [s.domain for s in registry.list_stores()]
    for domain in domains:
        store = registry.get_store(domain)
        if store.status in PAUSED:
            continue
        paths = registry.project_paths(store.project)
        try:
            result = apply_pending(
                paths.landing,
                domain,
                lambda d=domain: ShopifyClient(d, **registry.client_options(d)),
                entities=registry.enabled_entities(domain),
                redacted=registry.redacted_customers(domain),
            )
        except ShopifyAuthError as exc:
            mark_reconnect_required(registry, domain, str(exc))
            outcome[domain] = {"error": str(exc)}
            continue
        except ShopifyError as exc:
            mark_sync_failed(registry, domain, f"Applying webhooks failed: {exc}")
            outcome[domain] = {"error": str(exc)}
            continue
        if result.uninstalled:
            mark_reconnect_required(
                registry, domain, "The app was uninstalled from the store (app/uninstalled)."
            )
        loaded = None
        if result.landed:
            loaded = load_pending(
                paths.warehouse,
                paths.landing,
                shop=domain,
                batch_ids=[m.batch_id for m in result.landed],
            )
        outcome[domain] = {
            "deliveries": result.deliveries,
            "refetched": result.refetched,
            "deleted": result.deleted,
            "ignored": result.ignored,
            "uninstalled": result.uninstalled,
            "lag_s": result.max_lag_s,
            "rows": None if loaded is None else {"new": loaded.inserted, "updated": loaded.updated},
        }
    for action in handle_privacy_requests(registry, shop=shop):
        outcome.setdefault(action.shop, {}).setdefault("privacy", []).append(
            {"topic": action.topic, "outcome": action.outcome, "event_id": action.event_id}
        )
    return outcome


@click.group(name="webhooks")
def command() -> None:
    """Receive Shopify webhooks and apply them to the warehouse."""


_data_dir = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Data folder (control database, landing zone, warehouse); default $SHOPSYNC_DATA_DIR or ./data.",
)


@command.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8787, show_default=True, type=int)
@_data_dir
def serve(host: str, port: int, data_dir: Path | None) -> None:
    """Run the webhook receiver (POST /webhooks) with secrets from the store registry."""
    import uvicorn

    from pipelines.logs import uvicorn_log_config
    from pipelines.webhooks.journal import Journal
    from pipelines.webhooks.receiver import create_receiver

    try:
        registry = _registry(data_dir)
    except RegistryError as exc:
        _fail(str(exc))
    root = registry.settings.data_dir
    journal = Journal(registry.settings.journal_path)
    app = create_receiver(journal, registry_lookup(registry), landing_root=root / "landing")
    click.echo(f"Receiving webhooks at http://{host}:{port}/webhooks (landing zone {root / 'landing'})")
    try:
        # JSON lines on stderr; no per-request access log (the receiver logs what it rejects)
        level = os.environ.get("SHOPSYNC_LOG_LEVEL", "INFO").upper()
        uvicorn.run(app, host=host, port=port, log_config=uvicorn_log_config(level), access_log=False)
    finally:
        journal.close()


@command.command("apply")
@click.argument("domain", required=False)
@_data_dir
def apply(domain: str | None, data_dir: Path | None) -> None:
    """Apply received webhooks (re-read changed records, land deletes) and load them now."""
    try:
        registry = _registry(data_dir)
        outcome = apply_and_load(registry, registry.settings.data_dir, domain)
    except RegistryError as exc:
        _fail(str(exc))
    if not outcome:
        click.echo("No webhooks waiting.")
    for shop, info in outcome.items():
        click.echo(f"{shop}: {info}")


@command.command("register")
@click.argument("domain")
@click.option(
    "--url", required=True, help="Public URL of the receiver, e.g. https://hooks.example.com/webhooks."
)
@_data_dir
def register(domain: str, url: str, data_dir: Path | None) -> None:
    """Subscribe a connected store's app to the webhook topics shopsync processes."""
    from orchestration.defs.shopify.resources import ShopifyStores
    from pipelines.shopify.client import ShopifyError

    try:
        registry = _registry(data_dir)
        stores = ShopifyStores(data_dir=str(registry.settings.data_dir))
        stores._registry = registry
        with stores.client_for(domain) as client:
            created = register_subscriptions(client, url)
    except (RegistryError, ShopifyError) as exc:
        _fail(str(exc))
    click.echo(f"Subscribed {domain} to {len(created)} topic(s) at {url}.")
