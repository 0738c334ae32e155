"""The webhook apply sensor, and the privacy requests job with its sensor.

The receiver (``shopsync webhooks serve``) seals deliveries into ``landing/<shop>/webhooks/``.
Every 10 seconds the apply sensor applies them for each syncing store (re-reads changed
records, lands deletes) as ``incremental`` entity batches; the landing sensor then launches
their load runs, so a change in Shopify reaches the warehouse within a minute. Applying
happens in the sensor because it only calls Shopify and writes landing files: it never
opens the warehouse, which stays with the one loader.

Privacy requests (``landing/_privacy/requests/``) change the warehouse, so they run as a
job, ``privacy_requests``, in the ``warehouse`` pool; its sensor requests a run when
requests wait, keyed by their batches so each is requested once.
"""

import hashlib

import dagster as dg

from orchestration.control import StoreStatus
from orchestration.control.privacy import handle_privacy_requests, pending_privacy_batches
from orchestration.control.status import mark_reconnect_required, mark_sync_failed
from orchestration.defs.instance import WAREHOUSE_OP_TAGS, WAREHOUSE_POOL
from orchestration.defs.logs import with_run_logging
from orchestration.defs.shopify.partitions import STORES_PARTITION
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
                redacted=registry.redacted_customers(store.domain),
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


@dg.op(
    pool=WAREHOUSE_POOL,
    tags=WAREHOUSE_OP_TAGS,
    description="Acts on Shopify's privacy webhooks: data requests exported, customers redacted, "
    "shop/redact deleting the store; each action audited.",
)
def privacy_requests_op(context: dg.OpExecutionContext, stores: ShopifyStores) -> None:
    """Answer every pending customers/data_request, customers/redact and shop/redact of this project."""
    registry = stores.registry()
    instance = context.instance

    def remove_partition(domain: str) -> bool:
        if not instance.has_dynamic_partition(STORES_PARTITION, domain):
            return False
        instance.delete_dynamic_partition(STORES_PARTITION, domain)
        return True

    projects = [registry.project] if registry.project else None
    for action in handle_privacy_requests(registry, projects=projects, remove_partition=remove_partition):
        # ids and outcomes only: the audit table holds what was touched
        context.log.info(f"{action.topic} for {action.shop} (event {action.event_id}): {action.outcome}")


@dg.job(
    name="privacy_requests",
    description="Privacy webhooks (data request, customer redact, shop redact) acted on, in the warehouse pool.",
    config=with_run_logging(),
)
def privacy_job() -> None:
    """The privacy requests job."""
    privacy_requests_op()


@dg.sensor(
    job=privacy_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a privacy_requests run when Shopify's privacy webhooks wait to be acted on.",
)
def privacy_requests_sensor(context: dg.SensorEvaluationContext, stores: ShopifyStores) -> dg.SensorResult:
    """One run per new set of pending privacy batches (run key derived from their ids)."""
    registry = stores.registry()
    names = [registry.project] if registry.project else list(registry.projects())
    batches = sorted(b for name in names for b, _ in pending_privacy_batches(registry.project_paths(name)))
    if not batches:
        return dg.SensorResult(skip_reason=dg.SkipReason("no privacy requests waiting"))
    key = hashlib.sha256(",".join(batches).encode()).hexdigest()[:16]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"privacy:{key}",
                tags={"shopsync/trigger": "privacy", "shopsync/batches": str(len(batches))},
            )
        ]
    )


def build_webhook_defs() -> dg.Definitions:
    """The webhook and privacy sensors and the privacy job (using the Shopify definitions' resources)."""
    return dg.Definitions(sensors=[webhook_apply_sensor, privacy_requests_sensor], jobs=[privacy_job])
