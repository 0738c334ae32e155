"""Reverse sync in Dagster: plan → push → record assets per store, their jobs, sensors and schedule.

* ``reverse_sync/plan`` reads the warehouse (pool ``warehouse``), ``reverse_sync/push`` talks to
  Shopify and holds no pool (writes go through the store's push journal under the state
  folder, so a killed run never duplicates a write), ``reverse_sync/record`` writes the
  outcomes (pool ``warehouse``) and carries the consent check: a failed consent push fails it
  and names the customer ids.
* ``consent_push_sensor`` (every 10 s): a materialisation of ``core/consent_audit`` whose changes
  came from outside Shopify (an unsubscribe link, a STOP reply) → a consent push for each store
  concerned. Its cursor is the event log's storage id (monotonic, whatever ``as_of`` the consent
  run used); the run key is the store and what caused the change (the engagement feed run's key,
  derived from its files and batches, or the consent run's id).
* ``push_retry_sensor`` (every 60 s): the latest record of a store says when its failed writes
  are due again → a push of that kind once they are, so retries never wait for a new change.
* ``engagement_after_metrics``: the nightly intelligence run succeeded → engagement metafields.
* ``profile_fill_schedule``: profile fill every 15 minutes for stores with the toggle on.
* The engagement feed (dropped files → ``engagement.events`` → consent) is in ``engagement.py``.

Sensors and schedules skip Disconnected and Reconnect-required stores; the plan asset refuses them.
"""

# no `from __future__ import annotations`: Dagster reads the config/resource annotations at runtime
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from orchestration.control.registry import StoreRegistry
from orchestration.defs.instance import IN_WAREHOUSE
from orchestration.defs.logs import with_run_logging
from orchestration.defs.reverse_sync import service
from orchestration.defs.reverse_sync.engagement import (
    engagement_assets,
    engagement_feed_job,
    engagement_feed_sensor,
)
from orchestration.defs.shopify.partitions import stores_partitions
from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths
from pipelines.push_journal import PushBusy
from pipelines.shopify.push import PushReport

GROUP = "reverse_sync"
CONSENT_KINDS = ["email_consent", "sms_consent"]
CONSENT_AUDIT_KEY = dg.AssetKey(["core", "consent_audit"])
RECORD_KEY = dg.AssetKey(["reverse_sync", "record"])
# metadata of core/consent_audit: stores whose consent changed from outside Shopify
PUSHABLE_SHOPS = "pushable_shops"


class ReverseSyncConfig(dg.Config):
    """Which kinds this run pushes (empty = every kind whose toggle is on)."""

    kinds: list[str] = Field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC)


@dg.asset(
    key=["reverse_sync", "plan"],
    group_name=GROUP,
    partitions_def=stores_partitions,
    **IN_WAREHOUSE,
    kinds={"duckdb", "polars"},
    description="What to push to the store: desired state minus sync.pushed_state, filtered by its toggles.",
)
def reverse_sync_plan(
    context: dg.AssetExecutionContext, config: ReverseSyncConfig, paths: SyncPaths, stores: ShopifyStores
) -> dg.Output[service.StorePlan]:
    """The writes the store still needs, per customer and kind (consent, engagement metafields, profile fill),
    with the reason for each; customers that cannot be written (no email, no phone of their own, redacted)
    are listed as skips. A Disconnected or Reconnect-required store is refused: nothing is planned or sent.
    """
    domain = context.partition_key
    kinds = set(config.kinds) if config.kinds else None
    plan = service.plan_store(paths.warehouse_path, stores.registry(), domain, as_of=_now(), kinds=kinds)
    if plan.blocked is not None:
        raise dg.Failure(description=plan.blocked, allow_retries=False)
    return dg.Output(
        plan,
        metadata={
            "toggles": dg.MetadataValue.json(sorted(plan.toggles)),
            "planned": dg.MetadataValue.json(plan.counts()),
            "skipped": dg.MetadataValue.int(plan.skips.height),
            "inbound_echoes": dg.MetadataValue.int(plan.echoes.height),
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
    context: dg.AssetExecutionContext, plan: service.StorePlan, paths: SyncPaths, stores: ShopifyStores
) -> dg.Output[PushReport]:
    """What Shopify accepted: one outcome per planned write (written, unchanged, failed) and per skip, sent in
    batches under the store's rate limit. Each write is journaled before it is sent, so a run killed mid-push
    and run again sends every write exactly once. A missing write_customers scope marks the store
    Reconnect required and sends nothing.
    """
    registry = stores.registry()
    try:
        report = service.push_store(
            registry,
            plan,
            run_id=context.run_id,
            now=_now(),
            journal_folder=service.journal_dir(paths.state_path),
        )
    except PushBusy as exc:
        raise dg.Failure(description=str(exc)) from None
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
            "skipped": dg.MetadataValue.int(report.count("skipped")),
            "recovered_from_earlier_runs": dg.MetadataValue.int(report.recovered),
        },
    )


@dg.asset(
    key=RECORD_KEY,
    group_name=GROUP,
    partitions_def=stores_partitions,
    ins={"report": dg.AssetIn(key=["reverse_sync", "push"])},
    **IN_WAREHOUSE,
    kinds={"duckdb"},
    check_specs=[
        dg.AssetCheckSpec(
            "consent_pushed",
            asset=RECORD_KEY,
            description="Every consent write was accepted.",
        )
    ],
)
def reverse_sync_record(
    context: dg.AssetExecutionContext, report: PushReport, paths: SyncPaths
) -> dg.MaterializeResult:
    """The reverse-sync ledger of the store: sync.push_log (every write and skip, with its outcome),
    sync.pushed_state (what Shopify holds from us, retries with backoff), sync.dead_letters and
    sync.inbound_echoes. Its ``next_retry`` metadata tells the retry sensor when failed writes are due.
    """
    summary = service.record_store(
        paths.warehouse_path,
        report,
        shop=context.partition_key,
        run_id=context.run_id,
        at=_now(),
        journal_folder=service.journal_dir(paths.state_path),
    )
    failures = report.consent_failures
    described = service.describe(summary)
    return dg.MaterializeResult(
        metadata={
            "logged": dg.MetadataValue.int(summary.logged),
            "by_outcome": dg.MetadataValue.json(summary.by_outcome),
            "dead_lettered": dg.MetadataValue.int(summary.dead),
            "inbound_echoes": dg.MetadataValue.int(summary.echoes),
            "next_retry": dg.MetadataValue.json(described["next_retry"]),
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


def pushable_stores(registry: StoreRegistry, kinds: set[str]) -> list[str]:
    """Stores with one of ``kinds`` on that may be pushed to (not Disconnected or Reconnect required)."""
    return [
        s.domain
        for s in registry.list_stores()
        if s.status not in service.PAUSED and registry.outbound_toggles(s.domain) & kinds
    ]


def _stores_with(stores: ShopifyStores, kinds: set[str]) -> list[str]:
    return pushable_stores(stores.registry(), kinds)


def _cause(instance: dg.DagsterInstance, run_id: str) -> str:
    """What produced a consent change: the run key of the run that computed it (for the engagement
    feed, derived from the files' hashes and batch ids), else that run's id."""
    run = instance.get_run_by_id(run_id) if run_id else None
    key = run.tags.get("dagster/run_key") if run is not None else None
    return key or run_id


def consent_run_requests(
    instance: dg.DagsterInstance, domains: list[str], cursor: str | None, *, limit: int = 100
) -> tuple[list[dg.RunRequest], str | None]:
    """Run requests for consent audit materialisations after ``cursor`` (an event storage id), and the new cursor.

    Only stores the materialisation names as changed from outside Shopify are pushed (changes
    that came from Shopify are already there); a materialisation without that metadata (an
    older release) asks every store in ``domains``. One request per store per tick, keyed by what
    caused the change: the engagement feed run's key (its files and batches), or the run's id.
    """
    after = int(cursor) if cursor and cursor.isdigit() else None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=CONSENT_AUDIT_KEY, after_storage_id=after),
        limit=limit,
        ascending=True,
    ).records
    if not records:
        return [], cursor
    if after is None:
        # a sensor turned on for the first time starts from the latest change, not from history
        records = records[-1:]
    wanted: dict[str, str] = {}
    for record in records:
        materialization = record.asset_materialization
        meta = materialization.metadata if materialization is not None else {}
        value = meta.get(PUSHABLE_SHOPS)
        shops = (
            list(value.value)
            if isinstance(value, dg.JsonMetadataValue) and value.value is not None
            else domains
        )
        cause = _cause(instance, record.run_id)
        for shop in shops:
            if shop in domains:
                wanted[str(shop)] = cause
    requests = [
        dg.RunRequest(
            run_key=f"consent:{shop}:{cause}", partition_key=shop, tags={"shopsync/trigger": "consent"}
        )
        for shop, cause in sorted(wanted.items())
    ]
    return requests, str(records[-1].storage_id)


@dg.sensor(job=consent_push_job, minimum_interval_seconds=10, default_status=dg.DefaultSensorStatus.RUNNING)
def consent_push_sensor(context: dg.SensorEvaluationContext, stores: ShopifyStores) -> dg.SensorResult:
    """New consent decisions (engagement unsubscribes, STOP replies) → a consent push within seconds.

    Reads only the Dagster event log and the control plane, never the warehouse (a read lock
    there could make a loader fail).
    """
    domains = _stores_with(stores, set(CONSENT_KINDS))
    requests, cursor = consent_run_requests(context.instance, domains, context.cursor)
    if not requests:
        return dg.SensorResult(
            skip_reason="no new consent changes for stores with consent push on", cursor=cursor
        )
    return dg.SensorResult(run_requests=requests, cursor=cursor)


RETRY_JOBS: dict[str, str] = {
    "email_consent": "reverse_sync_consent",
    "sms_consent": "reverse_sync_consent",
    "engagement": "reverse_sync_engagement",
    "profile": "reverse_sync_profile",
}


def retry_run_requests(
    instance: dg.DagsterInstance, domains: list[str], now: datetime
) -> list[dg.RunRequest]:
    """One run per store and job whose failed writes are due, from the store's latest record.

    The run key names that record, so each record asks for at most one retry per job; the retry
    run records again, with the next due time if it failed again.
    """
    requests: list[dg.RunRequest] = []
    for domain in domains:
        found = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RECORD_KEY, asset_partitions=[domain]), limit=1
        ).records
        if not found or found[0].asset_materialization is None:
            continue
        record = found[0]
        meta = record.asset_materialization.metadata.get("next_retry")  # type: ignore[union-attr]
        due = meta.value if isinstance(meta, dg.JsonMetadataValue) and isinstance(meta.value, dict) else {}
        jobs = sorted(
            {
                RETRY_JOBS[kind]
                for kind, at in due.items()
                if kind in RETRY_JOBS and datetime.fromisoformat(str(at)) <= now
            }
        )
        for job in jobs:
            requests.append(
                dg.RunRequest(
                    run_key=f"retry:{domain}:{job}:{record.storage_id}",
                    partition_key=domain,
                    job_name=job,
                    tags={"shopsync/trigger": "retry"},
                )
            )
    return requests


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
            dg.RunRequest(
                run_key=f"engagement-{domain}-{run_id}",
                partition_key=domain,
                tags={"shopsync/trigger": "after_metrics"},
            )
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
        dg.RunRequest(
            run_key=f"profile-{domain}-{tick}", partition_key=domain, tags={"shopsync/trigger": "schedule"}
        )
        for domain in _stores_with(stores, {"profile"})
    ]


@dg.sensor(
    jobs=[consent_push_job, engagement_push_job, profile_push_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-runs a store's push once its failed writes are due again (backoff from sync.pushed_state).",
)
def push_retry_sensor(context: dg.SensorEvaluationContext, stores: ShopifyStores) -> dg.SensorResult:
    """Failed writes whose backoff has passed → a push of their kind (the plan picks exactly those up)."""
    domains = _stores_with(stores, set(RETRY_JOBS))
    requests = retry_run_requests(context.instance, domains, _now())
    if not requests:
        return dg.SensorResult(skip_reason="no failed writes due for a retry")
    return dg.SensorResult(run_requests=requests)


def build_reverse_sync_defs(paths: SyncPaths | None = None) -> dg.Definitions:
    """The reverse sync and engagement feed definitions (``stores`` comes from the Shopify definitions;
    the engagement job also runs the consent assets when the intelligence definitions are merged in)."""
    return dg.Definitions(
        assets=[*reverse_sync_assets, *engagement_assets],
        jobs=[consent_push_job, engagement_push_job, profile_push_job, engagement_feed_job],
        sensors=[consent_push_sensor, push_retry_sensor, _engagement_after_metrics(), engagement_feed_sensor],
        schedules=[profile_fill_schedule],
        resources={"paths": paths or SyncPaths()},
    )
