"""The webhook apply sensor and the per-store health check.

The receiver (``shopsync webhooks serve``) seals deliveries into ``landing/<shop>/webhooks/``.
Every 10 seconds this sensor applies them for each syncing store (re-reads changed records,
lands deletes) as ``incremental`` entity batches; the landing sensor then launches their
load runs, so a change in Shopify reaches the warehouse within a minute. Applying happens
in the sensor because it only calls Shopify and writes landing files: it never opens the
warehouse, which stays with the one loader.
"""

from __future__ import annotations

import dagster as dg

from orchestration.control import StoreStatus
from orchestration.control.status import mark_reconnect_required, mark_sync_failed
from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths
from pipelines.shopify.client import ShopifyAuthError, ShopifyError
from pipelines.webhooks.apply import apply_pending, pending_webhook_batches

PAUSED = (StoreStatus.DISCONNECTED, StoreStatus.RECONNECT_REQUIRED)


@dg.sensor(
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Applies received Shopify webhooks (re-read changed records, land deletes) for syncing stores; "
    "the landing sensor then loads what landed.",
)
def webhook_apply_sensor(
    context: dg.SensorEvaluationContext, stores: ShopifyStores, paths: SyncPaths
) -> dg.SkipReason:
    """Apply pending webhook batches of every connected store."""
    registry = stores.registry()
    applied: list[str] = []
    for store in registry.list_stores():
        if not pending_webhook_batches(paths.landing_path, store.domain):
            continue
        if store.status in PAUSED:
            # Paused stores keep their batches for when they are reconnected.
            continue
        try:
            result = apply_pending(
                paths.landing_path,
                store.domain,
                lambda d=store.domain: stores.client_for(d),
                entities=registry.enabled_entities(store.domain),
            )
        except ShopifyAuthError as exc:
            mark_reconnect_required(registry, store.domain, str(exc))
            context.log.warning(f"{store.domain}: {exc}")
            continue
        except ShopifyError as exc:
            mark_sync_failed(registry, store.domain, f"Applying webhooks failed: {exc}")
            context.log.warning(f"{store.domain}: applying webhooks failed: {exc}")
            continue
        if result.uninstalled:
            mark_reconnect_required(
                registry, store.domain, "The app was uninstalled from the store (app/uninstalled)."
            )
        applied.append(
            f"{store.domain}: {result.deliveries} deliveries, {result.refetched} re-read, {result.deleted} deleted"
        )
    return dg.SkipReason("; ".join(applied) or "no webhooks waiting")


def build_webhook_defs() -> dg.Definitions:
    """The webhook sensor (uses the ``stores`` and ``paths`` resources of the Shopify definitions)."""
    return dg.Definitions(sensors=[webhook_apply_sensor])
