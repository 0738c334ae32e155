"""The store health check in Dagster: ``shopify/store_health``, one partition (and check) per store.

The same checklist as ``shopsync stores health``, moving the store's status the same way;
each materialisation records the five items and the shop's details, and its asset check
fails with the fix. It calls Shopify, so it never holds the warehouse; a daily schedule runs
it for every store the user has not disconnected, and anyone can materialise one store's
partition from the UI.
"""

import dagster as dg

from orchestration.control import StoreNotFound, StoreStatus
from orchestration.control.health import check_health
from orchestration.defs.logs import with_run_logging
from orchestration.defs.shopify.jobs import STORE_HEALTH_CHECK_KEY
from orchestration.defs.shopify.partitions import STORES_PARTITION, stores_partitions
from orchestration.defs.shopify.resources import ShopifyStores
from orchestration.defs.shopify.schedules import store_run_requests

STORE_HEALTH_KEY = STORE_HEALTH_CHECK_KEY.asset_key


@dg.asset(
    key=STORE_HEALTH_KEY,
    partitions_def=stores_partitions,
    group_name="shopify",
    kinds={"shopify"},
    check_specs=[dg.AssetCheckSpec(STORE_HEALTH_CHECK_KEY.name, asset=STORE_HEALTH_KEY)],
    description=(
        "The store's readiness: OAuth connected, token not expired, all scopes granted, API responding, "
        "initial sync complete, and the shop's details as Shopify reports them. Its check fails with the "
        "fix to apply; the store's status badge follows the result."
    ),
    tags={"shopsync/stage": "health"},
)
def store_health(context: dg.AssetExecutionContext, stores: ShopifyStores) -> dg.MaterializeResult:
    """Run the checklist for the partition's store and record it."""
    shop = context.partition_key
    try:
        report = check_health(stores.registry(), shop)
    except StoreNotFound:
        return dg.MaterializeResult(
            metadata={"status": "not registered"},
            check_results=[
                dg.AssetCheckResult(
                    check_name=STORE_HEALTH_CHECK_KEY.name,
                    passed=False,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=f"{shop} is not registered. Connect it with: shopsync stores connect {shop} ...",
                )
            ],
        )
    failed = [i for i in report.items if not i.passed]
    items: dict[str, dg.RawMetadataValue] = {
        i.name: ("pass" if i.passed else "FAIL") + (f" — {i.detail}" if i.detail else "")
        for i in report.items
    }
    summary = "; ".join(f"{i.name}: {i.fix}" for i in failed) if failed else "All five readiness checks pass."
    return dg.MaterializeResult(
        metadata={**items, "status": report.status.value, "details": dg.MetadataValue.json(report.details)},
        check_results=[
            dg.AssetCheckResult(
                check_name=STORE_HEALTH_CHECK_KEY.name,
                passed=not failed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=summary,
                metadata={**items, "status": report.status.value},
            )
        ],
    )


store_health_job = dg.define_asset_job(
    "store_health",
    selection=dg.AssetSelection.assets(store_health),
    partitions_def=stores_partitions,
    config=with_run_logging(),
    description="The five readiness checks of one store (its partition).",
)


@dg.schedule(
    job=store_health_job,
    cron_schedule="15 5 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily health check of every store the user has not disconnected.",
)
def daily_store_health_schedule(
    context: dg.ScheduleEvaluationContext, stores: ShopifyStores
) -> list[dg.RunRequest]:
    """One health-check run per registered store that is not Disconnected."""
    status = {s.domain: s.status for s in stores.registry().list_stores()}
    shops = [
        p
        for p in context.instance.get_dynamic_partitions(STORES_PARTITION)
        if p in status and status[p] is not StoreStatus.DISCONNECTED
    ]
    return store_run_requests("health", shops, context.scheduled_execution_time)
