"""Sync health: the figures an operator watches, each judged against its service level.

A pure function of frames read elsewhere (``pipelines.observability``, the push ledger,
the identity outcomes) and an ``as_of``. One row per figure; ``status`` is ``breach`` when
the figure is outside its objective, ``ok`` when inside, ``info`` when it has none; the
``message`` of a breach says what to do.

Figures:

- ``sync_lag_p50_s`` / ``sync_lag_p95_s`` per store, entity and event type (create, update,
  delete): seconds from Shopify's change to the warehouse commit, over the window; p95 is
  judged against the entity's service level.
- ``identity_<outcome>_rate``: the share of records each identity rule linked in the latest
  run (email, phone, probabilistic, unmatched) and the ambiguous pairs sent to review.
- ``blocked_overwrites``: values refused by field ownership in the latest contacts build.
- ``consent_push_errors`` per store: consent pushes that failed within the window (any is a
  breach: an unsubscribe that does not reach Shopify is a compliance problem).
- ``dead_letters`` per store: operations that ran out of retries; a breach when the depth
  grew since the previous evaluation.
- ``api_points_used`` / ``api_points_available`` / ``api_utilisation`` per store: points
  spent in the window against what the store's restore rate allows in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

TS = pl.Datetime("us", "UTC")

LAG_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "entity": pl.String,
    "event_type": pl.String,  # create | update | delete
    "source": pl.String,  # webhook | poll
    "id": pl.Int64,
    "changed_at": TS,
    "loaded_at": TS,
    "lag_s": pl.Float64,
    "batch_id": pl.String,
}

HEALTH_SCHEMA: dict[str, pl.DataType] = {
    "evaluated_at": TS,
    "shop": pl.String,  # "" for figures that span every store
    "entity": pl.String,  # "" where it does not apply
    "event_type": pl.String,  # "" where it does not apply
    "metric": pl.String,
    "value": pl.Float64,
    "objective": pl.Float64,  # the service level or limit; null when there is none
    "status": pl.String,  # ok | breach | info
    "message": pl.String,
}

CONSENT_FAILURE_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "kind": pl.String,
    "error": pl.String,
    "logged_at": TS,
}
DEAD_LETTER_SCHEMA: dict[str, pl.DataType] = {"shop": pl.String, "depth": pl.Int64}
API_USAGE_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "points_used": pl.Float64,
    "restore_rate": pl.Float64,  # points per second the store's plan restores
}
IDENTITY_RULES = ("email_match", "phone_match", "probabilistic_match", "unmatched")


@dataclass(frozen=True)
class HealthSettings:
    """Service levels. ``lag_objective_s`` overrides the default p95 lag per entity."""

    default_lag_objective_s: float = 1800.0  # two incremental periods of 15 minutes
    lag_objective_s: Mapping[str, float] = field(default_factory=dict)
    window: timedelta = timedelta(hours=24)

    def objective(self, entity: str) -> float:
        """The p95 lag service level of ``entity`` in seconds."""
        return float(self.lag_objective_s.get(entity, self.default_lag_objective_s))


def _row(
    as_of: datetime,
    metric: str,
    value: float,
    *,
    shop: str = "",
    entity: str = "",
    event_type: str = "",
    objective: float | None = None,
    status: str = "info",
    message: str = "",
) -> dict[str, object]:
    return {
        "evaluated_at": as_of,
        "shop": shop,
        "entity": entity,
        "event_type": event_type,
        "metric": metric,
        "value": float(value),
        "objective": objective,
        "status": status,
        "message": message,
    }


def _lag_rows(lag: pl.DataFrame, settings: HealthSettings, as_of: datetime) -> list[dict[str, object]]:
    since = as_of - settings.window
    recent = lag.filter((pl.col("loaded_at") >= since) & (pl.col("loaded_at") <= as_of))
    if recent.is_empty():
        return []
    stats = (
        recent.group_by("shop", "entity", "event_type")
        .agg(
            pl.col("lag_s").quantile(0.5, "linear").alias("p50"),
            pl.col("lag_s").quantile(0.95, "linear").alias("p95"),
            pl.len().alias("n"),
        )
        .sort("shop", "entity", "event_type")
    )
    rows: list[dict[str, object]] = []
    hours = settings.window.total_seconds() / 3600
    for r in stats.iter_rows(named=True):
        shop, entity, event = r["shop"], r["entity"], r["event_type"]
        objective = settings.objective(entity)
        where = {"shop": shop, "entity": entity, "event_type": event}
        rows.append(_row(as_of, "sync_lag_p50_s", r["p50"], **where))
        if r["p95"] > objective:
            message = (
                f"{entity} {event}s of {shop} reached the warehouse in {r['p95']:.0f} s at p95 over the last "
                f"{hours:.0f} h ({r['n']} changes), above the {objective:.0f} s service level. Check "
                f"`shopsync stores health {shop}` and `shopsync status`, and that the Dagster daemon is running "
                "the incremental schedule and the landing and webhook sensors."
            )
            status = "breach"
        else:
            message = f"p95 {r['p95']:.0f} s over {r['n']} changes, within {objective:.0f} s"
            status = "ok"
        rows.append(
            _row(
                as_of,
                "sync_lag_p95_s",
                r["p95"],
                objective=objective,
                status=status,
                message=message,
                **where,
            )
        )
    return rows


def _identity_rows(identity: pl.DataFrame, blocked: pl.DataFrame, as_of: datetime) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    if identity.height:
        latest = identity.row(-1, named=True)
        records = max(1, int(latest.get("records") or 0))
        for rule in IDENTITY_RULES:
            count = int(latest.get(rule) or 0)
            rows.append(
                _row(
                    as_of,
                    f"identity_{rule}_rate",
                    count / records,
                    message=f"{count} of {records} records in the latest identity run",
                )
            )
        ambiguous = int(latest.get("ambiguous") or 0)
        rows.append(
            _row(
                as_of,
                "identity_ambiguous",
                ambiguous,
                message="pairs waiting in core.identity_review (marts.identity_review) for a person to decide",
            )
        )
    if "blocked" in blocked.columns:
        total = int(blocked["blocked"].sum() or 0)
        rows.append(
            _row(
                as_of,
                "blocked_overwrites",
                total,
                message="values refused by field ownership in the latest contacts build "
                "(core.contact_blocked_overwrites has them per field and source)",
            )
        )
    return rows


def _consent_rows(
    failures: pl.DataFrame, shops: list[str], settings: HealthSettings, as_of: datetime
) -> list[dict[str, object]]:
    since = as_of - settings.window
    recent = failures.filter((pl.col("logged_at") >= since) & (pl.col("logged_at") <= as_of))
    rows: list[dict[str, object]] = []
    for shop in shops:
        mine = recent.filter(pl.col("shop") == shop).sort("logged_at")
        if mine.is_empty():
            rows.append(_row(as_of, "consent_push_errors", 0, shop=shop, objective=0, status="ok"))
            continue
        customers = mine["customer_id"].unique().sort().to_list()
        shown = ", ".join(str(c) for c in customers[:10]) + (" …" if len(customers) > 10 else "")
        message = (
            f"{mine.height} consent pushes to {shop} failed in the last {settings.window.total_seconds() / 3600:.0f} h "
            f"(customers {shown}); last error: {mine['error'][-1]}. Fix the cause (`shopsync stores health "
            f"{shop}`); failed pushes are retried by the next consent push, and after the last attempt they "
            f"wait in `shopsync push retry-dead {shop}`."
        )
        rows.append(
            _row(
                as_of,
                "consent_push_errors",
                mine.height,
                shop=shop,
                objective=0,
                status="breach",
                message=message,
            )
        )
    return rows


def _dead_letter_rows(
    dead: pl.DataFrame, previous: pl.DataFrame, shops: list[str], as_of: datetime
) -> list[dict[str, object]]:
    before = {
        r["shop"]: r["value"]
        for r in previous.filter(pl.col("metric") == "dead_letters").iter_rows(named=True)
        if r["value"] is not None
    }
    depth = {r["shop"]: int(r["depth"]) for r in dead.iter_rows(named=True)}
    rows: list[dict[str, object]] = []
    for shop in shops:
        now_depth = depth.get(shop, 0)
        prior = before.get(shop)
        if prior is not None and now_depth > prior:
            message = (
                f"Dead letters of {shop} grew from {prior:.0f} to {now_depth}: pushes ran out of retries. Fix the "
                "cause in sync.dead_letters.last_error (often a missing write_customers scope: reconnect the "
                f"store), then replay them with `shopsync push retry-dead {shop}`."
            )
            status = "breach"
        else:
            message = (
                ""
                if now_depth == 0
                else f"{now_depth} waiting; replay with `shopsync push retry-dead {shop}`"
            )
            status = "ok"
        rows.append(
            _row(as_of, "dead_letters", now_depth, shop=shop, objective=prior, status=status, message=message)
        )
    return rows


def _api_rows(usage: pl.DataFrame, settings: HealthSettings, as_of: datetime) -> list[dict[str, object]]:
    seconds = settings.window.total_seconds()
    rows: list[dict[str, object]] = []
    for r in usage.sort("shop").iter_rows(named=True):
        used = float(r["points_used"] or 0.0)
        available = float(r["restore_rate"] or 0.0) * seconds
        rows.append(_row(as_of, "api_points_used", used, shop=r["shop"]))
        rows.append(_row(as_of, "api_points_available", available, shop=r["shop"]))
        if available > 0:
            rows.append(
                _row(
                    as_of,
                    "api_utilisation",
                    used / available,
                    shop=r["shop"],
                    message=f"{used:.0f} of {available:.0f} points the plan restores in "
                    f"{seconds / 3600:.0f} h",
                )
            )
    return rows


def sync_health(
    *,
    as_of: datetime,
    shops: list[str],
    lag: pl.DataFrame,
    identity: pl.DataFrame,
    blocked: pl.DataFrame,
    consent_failures: pl.DataFrame,
    dead_letters: pl.DataFrame,
    api_usage: pl.DataFrame,
    previous: pl.DataFrame,
    settings: HealthSettings | None = None,
) -> pl.DataFrame:
    """Every health figure at ``as_of`` (``HEALTH_SCHEMA``), breaches carrying what to do."""
    settings = settings or HealthSettings()
    rows = [
        *_lag_rows(lag, settings, as_of),
        *_identity_rows(identity, blocked, as_of),
        *_consent_rows(consent_failures, shops, settings, as_of),
        *_dead_letter_rows(dead_letters, previous, shops, as_of),
        *_api_rows(api_usage, settings, as_of),
    ]
    return pl.DataFrame(rows, schema=HEALTH_SCHEMA) if rows else pl.DataFrame(schema=HEALTH_SCHEMA)
