"""Reverse sync in Dagster: plan → push → record assets per store, their jobs, sensors and schedule.

* ``reverse_sync/plan`` reads the warehouse (pool ``warehouse``), ``reverse_sync/push`` talks to
  Shopify and holds no pool, ``reverse_sync/record`` writes the outcomes (pool ``warehouse``) and
  carries the consent check: a failed consent push fails it and names the customer ids.
* ``consent_push_sensor``: new rows in ``core.consent_audit`` from outside Shopify → a consent
  push within its 30 s interval; the run key is made of the audit rows that caused it.
* ``engagement_after_metrics``: the nightly intelligence run succeeded → engagement metafields.
* ``profile_fill_schedule``: profile fill every 15 minutes for stores with the toggle on.
"""

# no `from __future__ import annotations`: Dagster reads the config/resource annotations at runtime
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from orchestration.defs.instance import WAREHOUSE_POOL
from orchestration.defs.logs import with_run_logging
from orchestration.defs.reverse_sync import service
from orchestration.defs.shopify.partitions import stores_partitions
from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths
from pipelines.shopify.push import PushReport

GROUP = "reverse_sync"
CONSENT_KINDS = ["email_consent", "sms_consent"]


class ReverseSyncConfig(dg.Config):
    """Which kinds this run pushes (empty = every kind whose toggle is on)."""

    kinds: list[str] = Field(default_factory=list)


def _as_of(context: dg.AssetExecutionContext) -> datetime:
    return datetime.now(UTC)


@dg.asset(
    key=["reverse_sync", "plan"],
    group_name=GROUP,
    partitions_def=stores_partitions,
    pool=WAREHOUSE_POOL,
    kinds={"duckdb", "polars"},
    description="What to push to the store: desired state minus sync.pushed_state, filtered by its toggles.",
)
def reverse_sync_plan(
    context: dg.AssetExecutionContext, config: ReverseSyncConfig, paths: SyncPaths, stores: ShopifyStores
) -> dg.Output[service.StorePlan]:
    """Plan one store's push (warehouse read)."""
    domain = context.partition_key
    kinds = set(config.kinds) if config.kinds else None
    plan = service.plan_store(
        paths.warehouse_path, stores.registry(), domain, as_of=_as_of(context), kinds=kinds
    )
    return dg.Output(
        plan,
        metadata={
            "toggles": dg.MetadataValue.json(sorted(plan.toggles)),
            "planned": dg.MetadataValue.json(plan.counts()),
            "skipped": dg.MetadataValue.int(plan.skips.height),
        },
    )


@dg.asset(
    key=["reverse_sync", "push"],
    group_name=GROUP,
    partitions_def=stores_partitions,
    ins={"plan": dg.AssetIn(key=["reverse_sync", "plan"])},
    kinds={"shopify"},
    description="Send the plan to Shopify (network only; holds no warehouse pool).",
)
def reverse_sync_push(
    context: dg.AssetExecutionContext, plan: service.StorePlan, stores: ShopifyStores
) -> dg.Output[PushReport | None]:
    """Push one store's plan; a missing write_customers scope marks the store Reconnect required."""
    if plan.plan.is_empty():
        return dg.Output(None, metadata={"sent": dg.MetadataValue.int(0)})
    registry = stores.registry()
    client = service.client_for(registry, plan.shop)
    try:
        report = service.push_store(registry, plan, run_id=context.run_id, now=_as_of(context), client=client)
    finally:
        client.close()
    if report is None:
        raise dg.Failure(
            description=registry.get_store(plan.shop).status_detail or "Reconnect the store.",
            allow_retries=False,
        )
    for cid, error in report.consent_failures:
        context.log.error(f"consent push failed for customer {cid}: {error}")
    return dg.Output(
        report,
        metadata={
            "calls": dg.MetadataValue.json(report.calls),
            "points": dg.MetadataValue.float(report.points),
            "written": dg.MetadataValue.int(report.count("written")),
            "failed": dg.MetadataValue.int(report.count("failed")),
        },
    )


@dg.asset(
    key=["reverse_sync", "record"],
    group_name=GROUP,
    partitions_def=stores_partitions,
    ins={"report": dg.AssetIn(key=["reverse_sync", "push"])},
    pool=WAREHOUSE_POOL,
    kinds={"duckdb"},
    check_specs=[
        dg.AssetCheckSpec(
            "consent_pushed",
            asset=["reverse_sync", "record"],
            description="Every consent write was accepted.",
        )
    ],
    description="sync.push_log, sync.pushed_state (retries with backoff) and sync.dead_letters.",
)
def reverse_sync_record(
    context: dg.AssetExecutionContext, report: PushReport | None, paths: SyncPaths
) -> dg.MaterializeResult:
    """Record the push outcomes (warehouse write) and check the consent writes."""
    if report is None:
        return dg.MaterializeResult(
            metadata={"logged": 0},
            check_results=[dg.AssetCheckResult(check_name="consent_pushed", passed=True)],
        )
    summary = service.record_store(paths.warehouse_path, report, run_id=context.run_id, at=_as_of(context))
    failures = report.consent_failures
    return dg.MaterializeResult(
        metadata={
            "logged": dg.MetadataValue.int(summary.logged),
            "by_outcome": dg.MetadataValue.json(summary.by_outcome),
            "dead_lettered": dg.MetadataValue.int(summary.dead),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="consent_pushed",
                passed=not failures,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "failed_customer_ids": dg.MetadataValue.json([cid for cid, _ in failures]),
                    "errors": dg.MetadataValue.json(sorted({e for _, e in failures})),
                },
            )
        ],
    )


reverse_sync_assets = [reverse_sync_plan, reverse_sync_push, reverse_sync_record]
_SELECTION = dg.AssetSelection.groups(GROUP)


def _job(name: str, kinds: list[str], description: str) -> Any:
    return dg.define_asset_job(
        name,
        selection=_SELECTION,
        partitions_def=stores_partitions,
        config=with_run_logging({"ops": {"reverse_sync__plan": {"config": {"kinds": kinds}}}}),
        description=description,
    )


consent_push_job = _job("reverse_sync_consent", CONSENT_KINDS, "Push consent changes to Shopify.")
engagement_push_job = _job(
    "reverse_sync_engagement", ["engagement"], "Push engagement metafields to Shopify."
)
profile_push_job = _job("reverse_sync_profile", ["profile"], "Fill empty Shopify profile fields.")


def _stores_with(stores: ShopifyStores, kinds: set[str]) -> list[str]:
    registry = stores.registry()
    return [s.domain for s in registry.list_stores() if registry.outbound_toggles(s.domain) & kinds]


def consent_run_requests(
    warehouse: Path, domains: list[str], cursor: str | None
) -> tuple[list[dg.RunRequest], str | None]:
    """Run requests for consent changes recorded after ``cursor`` (an ISO time), and the new cursor.

    Changes that came from Shopify are not pushed back (they are already there).
    """
    from pipelines import warehouse_io as wio

    if not Path(warehouse).exists() or not domains:
        return [], cursor
    con = wio.connect(Path(warehouse), read_only=True)
    try:
        if not wio.table_exists(con, "core.consent_audit"):
            return [], cursor
        audit = wio.read_table(con, "core.consent_audit")
    finally:
        con.close()
    audit = audit.filter(pl.col("shop").is_in(domains), pl.col("source") != "shopify")
    if cursor:
        audit = audit.filter(pl.col("recorded_at") > datetime.fromisoformat(cursor))
    if audit.is_empty():
        return [], cursor
    requests = []
    for (shop,), rows in audit.group_by("shop", maintain_order=True):
        refs = sorted(
            f"{r['customer_id']}:{r['channel']}:{r['source_ref']}" for r in rows.iter_rows(named=True)
        )
        key = hashlib.sha256("\n".join(refs).encode()).hexdigest()[:16]
        requests.append(dg.RunRequest(run_key=f"consent-{shop}-{key}", partition_key=str(shop)))
    return requests, audit["recorded_at"].max().isoformat()  # type: ignore[union-attr]


@dg.sensor(job=consent_push_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def consent_push_sensor(
    context: dg.SensorEvaluationContext, paths: SyncPaths, stores: ShopifyStores
) -> dg.SensorResult | dg.SkipReason:
    """New consent decisions (engagement unsubscribes, STOP replies) → a consent push within a minute."""
    domains = _stores_with(stores, set(CONSENT_KINDS))
    try:
        requests, cursor = consent_run_requests(paths.warehouse_path, domains, context.cursor)
    except Exception as exc:  # the warehouse may be busy with a writer; try again next tick
        return dg.SkipReason(f"warehouse not readable right now: {type(exc).__name__}")
    if not requests:
        return dg.SkipReason("no new consent changes for stores with consent push on")
    return dg.SensorResult(run_requests=requests, cursor=cursor)


def _engagement_after_metrics() -> dg.RunStatusSensorDefinition:
    from orchestration.defs.intelligence.schedules import intelligence_job

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[intelligence_job],
        request_job=engagement_push_job,
        name="engagement_after_metrics",
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def engagement_after_metrics(
        context: dg.RunStatusSensorContext, stores: ShopifyStores
    ) -> list[dg.RunRequest]:
        """After the nightly metrics run: push engagement metafields of stores with the toggle on."""
        run_id = context.dagster_run.run_id
        return [
            dg.RunRequest(run_key=f"engagement-{domain}-{run_id}", partition_key=domain)
            for domain in _stores_with(stores, {"engagement"})
        ]

    return engagement_after_metrics


@dg.schedule(
    job=profile_push_job, cron_schedule="*/15 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING
)
def profile_fill_schedule(
    context: dg.ScheduleEvaluationContext, stores: ShopifyStores
) -> list[dg.RunRequest]:
    """Every 15 minutes: fill empty Shopify profile fields for stores with the toggle on."""
    tick = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "now"
    return [
        dg.RunRequest(run_key=f"profile-{domain}-{tick}", partition_key=domain)
        for domain in _stores_with(stores, {"profile"})
    ]


def build_reverse_sync_defs(paths: SyncPaths | None = None) -> dg.Definitions:
    """The reverse sync definitions (the ``stores`` resource comes from the Shopify definitions)."""
    return dg.Definitions(
        assets=reverse_sync_assets,
        jobs=[consent_push_job, engagement_push_job, profile_push_job],
        sensors=[consent_push_sensor, _engagement_after_metrics()],
        schedules=[profile_fill_schedule],
        resources={"paths": paths or SyncPaths()},
    )
