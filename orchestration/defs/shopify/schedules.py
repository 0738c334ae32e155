"""Schedules: incremental sync every 15 minutes, reconciliation of deletions nightly.

Both request one run per store partition that should sync: not Disconnected (the user
paused it) and not holding a token Shopify refuses (401, app uninstalled). A store in
Reconnect required because a scope is missing keeps syncing the entities its scopes allow:
each fetch skips only the entity that lacks its scope. Run keys come from the tick, so a
re-evaluated tick never launches twice.
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
from pipelines.shopify.client import token_rejection


def syncing_stores(partitions: Sequence[str], stores: ShopifyStores) -> list[str]:
    """The store partitions that should sync now: registered, not paused, token not refused.

    A Reconnect-required store is skipped only when Shopify last refused its token (the
    clients record that in the shared state folder); for a missing scope its other
    entities go on syncing. One whose token was refused elsewhere (an uninstall webhook)
    is tried once more, and that run's 401 pauses it.
    """
    status = {s.domain: s.status for s in stores.registry().list_stores()}
    shared = stores.shared_state_dir()
    return [
        p
        for p in partitions
        if p in status
        and status[p] is not StoreStatus.DISCONNECTED
        and not (status[p] is StoreStatus.RECONNECT_REQUIRED and token_rejection(shared, p))
    ]


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
