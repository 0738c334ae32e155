"""Everything Dagster knows about Shopify: assets, checks, jobs, schedules, the sensor, resources."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.shopify.assets import fetch_assets, table_assets
from orchestration.defs.shopify.checks import table_checks
from orchestration.defs.shopify.health import (
    daily_store_health_schedule,
    store_health,
    store_health_job,
)
from orchestration.defs.shopify.jobs import load_job, resync_job, sync_job
from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths
from orchestration.defs.shopify.schedules import incremental_sync_schedule, nightly_reconciliation_schedule
from orchestration.defs.shopify.sensors import landing_batches_sensor


def build_shopify_defs(stores: ShopifyStores | None = None, paths: SyncPaths | None = None) -> dg.Definitions:
    """The Shopify definitions bound to a store registry and data paths (defaults: ./data)."""
    return dg.Definitions(
        assets=[*fetch_assets, *table_assets, store_health],
        asset_checks=table_checks,
        jobs=[sync_job, resync_job, load_job, store_health_job],
        schedules=[incremental_sync_schedule, nightly_reconciliation_schedule, daily_store_health_schedule],
        sensors=[landing_batches_sensor],
        resources={"stores": stores or ShopifyStores(), "paths": paths or SyncPaths()},
    )
