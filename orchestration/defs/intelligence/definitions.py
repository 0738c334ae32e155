"""Everything Dagster knows about customer intelligence: assets, checks, the job and its schedule."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.intelligence.assets import INTELLIGENCE_GROUPS, intelligence_assets
from orchestration.defs.intelligence.checks import intelligence_checks
from orchestration.defs.intelligence.resources import IntelligenceSettings
from orchestration.defs.intelligence.schedules import intelligence_job, nightly_intelligence_schedule
from orchestration.defs.shopify.resources import SyncPaths

# The intelligence assets are eager: a load of any store's customers or orders brings identity,
# metrics, consent, contacts and the snapshot up to date. This sensor evaluates those
# conditions; it runs by default so "updated after loads" holds without a click in the UI.
intelligence_automation = dg.AutomationConditionSensorDefinition(
    "intelligence_after_loads",
    target=dg.AssetSelection.groups(*INTELLIGENCE_GROUPS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Refreshes the intelligence assets after new loads (their eager automation conditions).",
)


def build_intelligence_defs(
    paths: SyncPaths | None = None, settings: IntelligenceSettings | None = None
) -> dg.Definitions:
    """The intelligence definitions bound to data paths (pass the Shopify defs' own ``paths`` to merge)."""
    return dg.Definitions(
        assets=intelligence_assets,
        asset_checks=intelligence_checks,
        jobs=[intelligence_job],
        schedules=[nightly_intelligence_schedule],
        sensors=[intelligence_automation],
        resources={"paths": paths or SyncPaths(), "intelligence": settings or IntelligenceSettings()},
    )
