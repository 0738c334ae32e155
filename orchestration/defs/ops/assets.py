"""The ``ops/sync_health`` asset: every health figure, written to ``ops.sync_health``, with its checks.

It reads the warehouse (lag samples, push ledger, identity outcomes) and the Dagster
instance (API points spent by the fetch and push assets of each store partition), calls the
pure :func:`transforms.sync_health.sync_health` and appends the evaluation. It holds the
warehouse (pool ``warehouse``) for the few milliseconds that takes, never while calling
Shopify (it does not).
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import polars as pl

from orchestration.defs.instance import IN_WAREHOUSE
from orchestration.defs.logs import with_run_logging
from orchestration.defs.ops.checks import CHECK_METRICS, check_specs, evaluate
from orchestration.defs.ops.resources import SyncHealthSettings
from orchestration.defs.shopify.jobs import fetch_key, table_key
from orchestration.defs.shopify.partitions import SHOPIFY_ENTITIES
from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths
from pipelines import observability as obs
from pipelines import warehouse_io as wio
from transforms.sync_health import API_USAGE_SCHEMA, sync_health

SYNC_HEALTH_KEY = dg.AssetKey(["ops", "sync_health"])
PUSH_KEY = dg.AssetKey(["reverse_sync", "push"])
GROUP = "ops"


def _metadata_value(metadata: dict[str, Any], name: str) -> Any:
    value = metadata.get(name)
    return getattr(value, "value", value)


def api_usage(instance: dg.DagsterInstance, shops: list[str], since: datetime) -> pl.DataFrame:
    """Points each store's fetch and push runs spent since ``since``, and its restore rate.

    Read from the materialisations' metadata, so nothing but the assets themselves records it.
    """
    rows: list[dict[str, Any]] = []
    keys = [fetch_key(e) for e in SHOPIFY_ENTITIES]
    for shop in shops:
        used = 0.0
        rate: float | None = None
        latest = 0.0
        for key in [*keys, PUSH_KEY]:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=key, asset_partitions=[shop], after_timestamp=since.timestamp()
                ),
                limit=10_000,
            ).records
            for record in records:
                materialization = record.asset_materialization
                if materialization is None:
                    continue
                metadata = dict(materialization.metadata)
                points = _metadata_value(metadata, "api_points_spent")
                if points is None:
                    points = _metadata_value(metadata, "points")
                used += float(points or 0.0)
                restore = _metadata_value(metadata, "api_restore_rate")
                if restore and record.timestamp >= latest:
                    rate, latest = float(restore), record.timestamp
        rows.append({"shop": shop, "points_used": used, "restore_rate": rate})
    return pl.DataFrame(rows, schema=API_USAGE_SCHEMA)


def _run_started(context: dg.AssetExecutionContext) -> datetime:
    record = context.instance.get_run_record_by_id(context.run_id)
    if record is not None and record.create_timestamp is not None:
        return record.create_timestamp.astimezone(UTC)
    return datetime.now(UTC)


@dg.asset(
    key=SYNC_HEALTH_KEY,
    group_name=GROUP,
    **IN_WAREHOUSE,
    kinds={"duckdb", "polars"},
    deps=[table_key(e) for e in SHOPIFY_ENTITIES],
    check_specs=check_specs(SYNC_HEALTH_KEY),
    description=(
        "Is the sync healthy? Per store: how long Shopify changes take to reach the warehouse (p50/p95 per "
        "entity and event type, against each entity's service level), consent push errors, dead letters "
        "and API points used against what the plan allows; identity outcome rates and blocked field "
        "overwrites. Appended to ops.sync_health every evaluation; marts.sync_health shows the latest."
    ),
)
def sync_health_asset(
    context: dg.AssetExecutionContext, stores: ShopifyStores, paths: SyncPaths, health: SyncHealthSettings
) -> Iterator[dg.MaterializeResult]:
    """Evaluate every health figure now and fail the checks whose figures breach."""
    settings = health.health_settings()
    as_of = _run_started(context)
    since = as_of - settings.window
    shops = sorted(s.domain for s in stores.registry().list_stores())
    usage = api_usage(context.instance, shops, since)
    con = wio.connect(paths.warehouse_path)
    try:
        figures = sync_health(
            as_of=as_of,
            shops=shops,
            lag=obs.read_lag(con, since=since),
            identity=obs.read_identity_outcomes(con),
            blocked=obs.read_blocked_overwrites(con),
            consent_failures=obs.read_consent_failures(con, since=since),
            dead_letters=obs.read_dead_letter_depth(con),
            api_usage=usage,
            previous=obs.read_previous_health(con),
            settings=settings,
        )
        obs.write_health(con, figures)
    finally:
        con.close()
    breaches = figures.filter(pl.col("status") == "breach")
    for message in breaches["message"].to_list():
        context.log.warning(message)
    yield dg.MaterializeResult(
        metadata={
            "evaluated_at": as_of.isoformat(),
            "figures": dg.MetadataValue.int(figures.height),
            "breaches": dg.MetadataValue.int(breaches.height),
            **{name: dg.MetadataValue.json(figure_map(figures, metric)) for name, metric in METADATA_FIGURES},
            "identity_rates": dg.MetadataValue.json(identity_rates(figures)),
        },
        check_results=[evaluate(check, figures) for check in CHECK_METRICS],
    )


# Metadata entry -> the figure it shows (keyed by store/entity/event type where it has them).
METADATA_FIGURES: tuple[tuple[str, str], ...] = (
    ("lag_p50_s", "sync_lag_p50_s"),
    ("lag_p95_s", "sync_lag_p95_s"),
    ("api_points_used", "api_points_used"),
    ("api_points_available", "api_points_available"),
    ("api_utilisation", "api_utilisation"),
    ("consent_push_errors", "consent_push_errors"),
    ("dead_letters", "dead_letters"),
    ("blocked_overwrites", "blocked_overwrites"),
    ("identity_ambiguous", "identity_ambiguous"),
)


def figure_map(figures: pl.DataFrame, metric: str) -> dict[str, float]:
    """One figure per store/entity/event type (``all`` where a figure spans the stores)."""
    out: dict[str, float] = {}
    for r in figures.filter(pl.col("metric") == metric).iter_rows(named=True):
        where = "/".join(str(r[k]) for k in ("shop", "entity", "event_type") if r.get(k)) or "all"
        out[where] = round(float(r["value"]), 3)
    return out


def identity_rates(figures: pl.DataFrame) -> dict[str, float]:
    """The latest identity run's outcome rates (email, phone, probabilistic, new)."""
    rates = figures.filter(
        pl.col("metric").str.starts_with("identity_") & pl.col("metric").str.ends_with("_rate")
    )
    return {
        r["metric"].removeprefix("identity_").removesuffix("_rate"): round(float(r["value"]), 4)
        for r in rates.iter_rows(named=True)
    }


sync_health_job = dg.define_asset_job(
    "sync_health",
    selection=dg.AssetSelection.assets(SYNC_HEALTH_KEY),
    config=with_run_logging(),
    description="Evaluate the sync-health figures and their checks.",
)


@dg.schedule(
    job=sync_health_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Sync health every 15 minutes, so a breach turns its check red within a quarter hour.",
)
def sync_health_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """One evaluation per tick (run key from the tick, so a re-evaluation never runs twice)."""
    return dg.RunRequest(run_key=f"sync_health:{context.scheduled_execution_time.isoformat()}")


def build_ops_defs(
    paths: SyncPaths | None = None, settings: SyncHealthSettings | None = None
) -> dg.Definitions:
    """The sync-health definitions (``stores`` and ``paths`` come from the Shopify definitions)."""
    resources: dict[str, Any] = {"health": settings or SyncHealthSettings()}
    if paths is not None:
        resources["paths"] = paths
    return dg.Definitions(
        assets=[sync_health_asset],
        jobs=[sync_health_job],
        schedules=[sync_health_schedule],
        resources=resources,
    )
