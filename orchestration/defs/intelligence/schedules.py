"""The intelligence refresh job and its nightly schedule (``as_of`` = the tick's date)."""

from datetime import datetime
from typing import Any

import dagster as dg

from orchestration.defs.intelligence.assets import INTELLIGENCE_GROUPS, intelligence_assets
from orchestration.defs.logs import with_run_logging

intelligence_job = dg.define_asset_job(
    "intelligence_refresh",
    selection=dg.AssetSelection.groups(*INTELLIGENCE_GROUPS),
    config=with_run_logging(),
    description="Identity, value metrics, consent, golden contacts, then the analyst snapshot.",
)

# The ops that take ``IntelligenceConfig`` (the multi-assets and nothing else).
CONFIGURED_OPS: tuple[str, ...] = ("core__identity", "core__metrics", "core__consent")


def as_of_run_config(as_of: str) -> dict[str, Any]:
    """Run config giving every intelligence op the same ``as_of`` (ISO date or datetime)."""
    return with_run_logging({"ops": {op: {"config": {"as_of": as_of}} for op in CONFIGURED_OPS}})


def nightly_request(tick: datetime) -> dg.RunRequest:
    """The run request of one nightly tick; its run key comes from the tick, so a re-evaluation never runs twice."""
    day = tick.date().isoformat()
    return dg.RunRequest(
        run_key=f"intelligence:{day}", run_config=as_of_run_config(day), tags={"shopsync/trigger": "nightly"}
    )


@dg.schedule(
    job=intelligence_job,
    cron_schedule="0 4 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly recompute of contacts, metrics and consent as of the tick's date (after reconciliation).",
)
def nightly_intelligence_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Nightly: one full intelligence refresh with ``as_of`` = the tick's date."""
    return nightly_request(context.scheduled_execution_time)


__all__ = ["as_of_run_config", "intelligence_assets", "intelligence_job", "nightly_intelligence_schedule"]
