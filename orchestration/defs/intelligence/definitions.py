"""Everything Dagster knows about customer intelligence: assets, checks, the job and its schedule."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.intelligence.assets import intelligence_assets
from orchestration.defs.intelligence.checks import intelligence_checks
from orchestration.defs.intelligence.resources import IntelligenceSettings
from orchestration.defs.intelligence.schedules import intelligence_job, nightly_intelligence_schedule
from orchestration.defs.shopify.resources import SyncPaths


def build_intelligence_defs(
    paths: SyncPaths | None = None, settings: IntelligenceSettings | None = None
) -> dg.Definitions:
    """The intelligence definitions bound to data paths (pass the Shopify defs' own ``paths`` to merge)."""
    return dg.Definitions(
        assets=intelligence_assets,
        asset_checks=intelligence_checks,
        jobs=[intelligence_job],
        schedules=[nightly_intelligence_schedule],
        resources={"paths": paths or SyncPaths(), "intelligence": settings or IntelligenceSettings()},
    )
