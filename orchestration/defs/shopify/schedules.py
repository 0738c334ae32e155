"""Schedules: incremental sync every 15 minutes, reconciliation of deletions nightly.

Both request one run per store partition whose store is syncing (Disconnected and
Reconnect required stores are paused); run keys come from the tick, so a re-evaluated
tick never launches twice.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import dagster as dg

from orchestration.control import StoreStatus
from orchestration.defs.logs import with_run_logging
from orchestration.defs.shopify.jobs import fetch_run_config, sync_job
from orchestration.defs.shopify.partitions import STORES_PARTITION
from orchestration.defs.shopify.resources import ShopifyStores

PAUSED = {StoreStatus.DISCONNECTED, StoreStatus.RECONNECT_REQUIRED}


def syncing_stores(partitions: Sequence[str], stores: ShopifyStores) -> list[str]:
    """The store partitions that should sync now (registered and not paused)."""
    status = {s.domain: s.status for s in stores.registry().list_stores()}
    return [p for p in partitions if p in status and status[p] not in PAUSED]


def store_run_requests(
    kind: str, partitions: Sequence[str], tick: datetime, run_config: dict[str, Any] | None = None
) -> list[dg.RunRequest]:
    """One run request per store for a schedule tick."""
    stamp = tick.isoformat()
    return [
        dg.RunRequest(
            run_key=f"{kind}:{shop}:{stamp}",
            partition_key=shop,
            run_config=with_run_logging(run_config),
            tags={"shopsync/trigger": kind},
        )
        for shop in partitions
    ]


@dg.schedule(
    job=sync_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Incremental sync of every connected store (bulk for entities never synced).",
)
def incremental_sync_schedule(
    context: dg.ScheduleEvaluationContext, stores: ShopifyStores
) -> list[dg.RunRequest]:
    """Every 15 minutes: one incremental sync run per connected store."""
    shops = syncing_stores(context.instance.get_dynamic_partitions(STORES_PARTITION), stores)
    return store_run_requests("incremental", shops, context.scheduled_execution_time)


@dg.schedule(
    job=sync_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly ids-only export per store and entity; ids missing from Shopify get _deleted_at.",
)
def nightly_reconciliation_schedule(
    context: dg.ScheduleEvaluationContext, stores: ShopifyStores
) -> list[dg.RunRequest]:
    """Nightly: one reconciliation run per connected store."""
    shops = syncing_stores(context.instance.get_dynamic_partitions(STORES_PARTITION), stores)
    return store_run_requests(
        "reconcile", shops, context.scheduled_execution_time, fetch_run_config(reconcile=True)
    )
