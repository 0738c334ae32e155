"""Reverse sync in three steps, each with its own resource needs (no Dagster here; the assets and the CLI call it).

1. ``plan_store``: warehouse READ (shopify.customers, core.consent, core.contacts,
   engagement.events, metrics, sync.pushed_state) + the store's outbound toggles and status →
   plan, skips and the inbound versions that only echo our own writes.
2. ``push_store``: network only; the warehouse is not held. Every write goes through the
   store's push journal first (exactly once across a killed process). Missing
   ``write_customers`` with a toggle on → store status "Reconnect required", nothing sent.
3. ``record_store``: warehouse WRITE of the outcomes (push log with skips, pushed state,
   retries, dead letters, echoes), then the journal marks them recorded.

A Disconnected or Reconnect-required store plans and sends nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from orchestration.control.models import StoreStatus
from orchestration.control.registry import StoreRegistry
from orchestration.control.status import mark_reconnect_required
from pipelines import sync_log
from pipelines import warehouse_io as wio
from pipelines.push_journal import PushJournal, journal_path
from pipelines.shopify.client import ShopifyClient
from pipelines.shopify.push import PushReport, PushScopeMissing, push_shop
from transforms import reverse_sync as rs
from transforms.identity.normalise import normalise_emails, normalise_phones
from transforms.warehouse_inputs import engagement_frame, store_regions

log = logging.getLogger("shopsync.reverse_sync")

DEFAULT_REGION = "US"
PAUSED = (StoreStatus.DISCONNECTED, StoreStatus.RECONNECT_REQUIRED)
REDACTED_TABLE = "privacy.redacted_customers"
REDACTED_REASON = "customer redacted on the store's request (customers/redact)"


@dataclass
class StorePlan:
    """A store's plan, skips and echoes; ``blocked`` says why nothing may be pushed at all."""

    shop: str
    toggles: set[str]
    plan: pl.DataFrame
    skips: pl.DataFrame
    echoes: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=rs.INBOUND_SCHEMA))
    blocked: str | None = None

    def counts(self) -> dict[str, int]:
        """Plan rows per kind."""
        return rs.plan_counts(self.plan)


def journal_dir(state_dir: Path) -> Path:
    """Where the per-store push journals live (under the fetchers' state folder)."""
    return Path(state_dir) / "push_journal"


def default_state_dir(warehouse: Path) -> Path:
    """The state folder beside a warehouse, as ``SyncPaths.under`` lays a data folder out."""
    return Path(warehouse).parent / "state"


def _empty(domain: str, toggles: set[str], blocked: str | None = None) -> StorePlan:
    return StorePlan(
        domain,
        toggles,
        pl.DataFrame(schema=rs.PLAN_SCHEMA),
        pl.DataFrame(schema=rs.SKIP_SCHEMA),
        blocked=blocked,
    )


def blocked_reason(registry: StoreRegistry, domain: str) -> str | None:
    """Why a store may not be pushed to (Disconnected, Reconnect required), or None."""
    store = registry.get_store(domain)
    if store.status is StoreStatus.DISCONNECTED:
        return f"{domain} is Disconnected: nothing is pushed until it is reconnected (shopsync stores reconnect)."
    if store.status is StoreStatus.RECONNECT_REQUIRED:
        detail = f" ({store.status_detail})" if store.status_detail else ""
        return (
            f"{domain} needs reconnecting{detail}: nothing is pushed until it is reconnected "
            f"with a token that holds write_customers (shopsync stores reconnect {domain} ...)."
        )
    return None


def _phones(raw: pl.Series, regions: pl.Series) -> pl.Series:
    """E.164 where the number parses, else the raw text (so it still counts as present)."""
    e164 = normalise_phones(raw, regions)
    return pl.select(pl.coalesce(e164, raw.str.strip_chars())).to_series()


def _customers(con: duckdb.DuckDBPyConnection, domain: str, region: str) -> pl.DataFrame:
    """The store's live customers as the planner sees them (emails folded, phones in E.164)."""
    profiles = wio.customer_profiles(con).filter(pl.col("shop") == domain)
    regions = profiles.select(pl.coalesce(pl.col("country"), pl.lit(region)))
    return pl.DataFrame(
        {
            "shop": profiles["shop"],
            "customer_id": profiles["id"],
            "email": normalise_emails(profiles["email"])["email_norm"],
            "phone": _phones(profiles["phone"], regions.to_series()),
            "first_name": profiles["first_name"],
            "last_name": profiles["last_name"],
            "has_address": profiles["default_address_id"].is_not_null(),
        }
    ).cast(rs.CUSTOMERS_SCHEMA)  # type: ignore[arg-type]


def _segments(con: duckdb.DuckDBPyConnection) -> pl.DataFrame | None:
    if not (
        wio.table_exists(con, "core.contact_metrics") and wio.table_exists(con, "core.contact_identities")
    ):
        return None
    metrics = wio.read_table(con, "core.contact_metrics")
    ids = wio.read_table(con, "core.contact_identities")
    if "segment" not in metrics.columns or "record_type" not in ids.columns:
        return None
    customers = ids.filter(pl.col("record_type") == "customer").select(
        "shop", pl.col("record_id").cast(pl.Int64, strict=False).alias("customer_id"), "contact_id"
    )
    return customers.join(metrics.select("contact_id", "segment"), on="contact_id").select(
        "shop", "customer_id", "segment"
    )


def _engagement(con: duckdb.DuckDBPyConnection, customers: pl.DataFrame, region: str) -> pl.DataFrame:
    """Engagement per customer of the store from every event addressed to it or to no store."""
    events = engagement_frame(wio.engagement_events(con), region)
    keys = customers.select(
        "shop", "customer_id", pl.col("email").alias("email_norm"), pl.col("phone").alias("phone_e164")
    )
    return rs.engagement_from_events(events, keys, _segments(con))


def _profile_candidates(con: duckdb.DuckDBPyConnection, domain: str, region: str) -> pl.DataFrame | None:
    """Best known contact fields per Shopify customer, from ``core.contacts`` via the identities.

    ``core.contacts`` names them as ``transforms/data/field_ownership.csv`` does (``phone``,
    ``country``); the phone is sent in E.164 with the contact's country as its region.
    """
    if not (wio.table_exists(con, "core.contacts") and wio.table_exists(con, "core.contact_identities")):
        return None
    contacts = wio.read_table(con, "core.contacts")
    ids = wio.read_table(con, "core.contact_identities")
    if "contact_id" not in contacts.columns or "record_type" not in ids.columns:
        return None
    wanted = {c: c for c in ("first_name", "last_name", "address1", "city", "zip") if c in contacts.columns}
    if "country" in contacts.columns:
        wanted["country_code"] = "country"
    if "phone" in contacts.columns:
        wanted["phone"] = "phone"
    customers = ids.filter(pl.col("record_type") == "customer", pl.col("shop") == domain).select(
        "shop", pl.col("record_id").cast(pl.Int64, strict=False).alias("customer_id"), "contact_id"
    )
    joined = customers.join(
        contacts.select("contact_id", *[pl.col(src).alias(dst) for dst, src in wanted.items()]),
        on="contact_id",
    ).drop("contact_id")
    if "phone" in joined.columns and joined.height:
        regions = joined.select(
            pl.coalesce(pl.col("country_code") if "country_code" in joined.columns else None, pl.lit(region))
        ).to_series()
        # a number that does not parse is not sent: Shopify would refuse it
        joined = joined.with_columns(normalise_phones(joined["phone"], regions).alias("phone"))
    return joined


def _redacted(con: duckdb.DuckDBPyConnection, domain: str) -> pl.DataFrame | None:
    """Customers the store asked to redact (``privacy.redacted_customers``, when it exists)."""
    present = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'privacy' "
        "AND table_name = 'redacted_customers'"
    ).fetchall()
    if not present or not present[0][0]:
        return None
    rows = con.execute(
        f"SELECT DISTINCT shop, customer_id FROM {REDACTED_TABLE} WHERE shop = ?", [domain]
    ).fetchall()
    return pl.DataFrame(
        [(s, int(c), REDACTED_REASON) for s, c in rows], schema=rs.EXCLUDED_SCHEMA, orient="row"
    )


def _inbound(con: duckdb.DuckDBPyConnection, domain: str) -> pl.DataFrame:
    """Each live customer's current version: its ``updated_at`` and the origin write id it carries."""
    customers = wio.shopify_table(con, "customers").filter(pl.col("shop") == domain)
    metafields = wio.shopify_table(con, "customer_metafields").filter(
        pl.col("shop") == domain, pl.col("namespace") == rs.NAMESPACE, pl.col("key") == rs.ORIGIN_KEY
    )
    origins = metafields.select(
        pl.col("customer_id"),
        pl.col("value").str.json_path_match("$.write_id").alias("origin_write_id"),
    ).unique("customer_id", keep="last")
    return customers.select("shop", pl.col("id").alias("customer_id"), "updated_at").join(
        origins, on="customer_id", how="left"
    )


def plan_store(
    warehouse: Path,
    registry: StoreRegistry,
    domain: str,
    *,
    as_of: datetime,
    kinds: set[str] | None = None,
    region: str | None = None,
) -> StorePlan:
    """Plan one store's push from the warehouse (read only). ``kinds`` narrows the toggles (a job pushes only its kind).

    ``region`` is the default country of phones typed without a country code; unset, it is the
    store's own (the commonest country of its customers' addresses, else US), as identity uses.
    """
    toggles = registry.outbound_toggles(domain)
    if kinds is not None:
        toggles &= kinds
    blocked = blocked_reason(registry, domain)
    if blocked is not None or not toggles:
        return _empty(domain, toggles, blocked)
    if not Path(warehouse).exists():
        return _empty(domain, toggles)
    con = wio.connect(Path(warehouse), read_only=True)
    try:
        if region is None:
            profiles = wio.customer_profiles(con).filter(pl.col("shop") == domain)
            region = store_regions(profiles.select("shop", "country")).get(domain, DEFAULT_REGION)
        customers = _customers(con, domain, region)
        consent = (
            wio.read_table(con, "core.consent").filter(pl.col("shop") == domain)
            if (wio.table_exists(con, "core.consent"))
            else None
        )
        engagement = _engagement(con, customers, region) if "engagement" in toggles else None
        profile = _profile_candidates(con, domain, region) if "profile" in toggles else None
        excluded = _redacted(con, domain)
        state = sync_log.read_pushed_state(con, domain)
        dead = sync_log.read_dead_letters(con, domain)
        _fresh, echoes = rs.split_echoes(_inbound(con, domain), state)
        echoes = sync_log.unseen_echoes(con, echoes)
    finally:
        con.close()
    plan, skips = rs.plan_push(
        toggles={domain: toggles},
        as_of=as_of,
        pushed_state=state,
        dead_letters=dead,
        consent=consent,
        customers=customers,
        engagement=engagement,
        profile=profile,
        excluded=excluded,
    )
    return StorePlan(domain, toggles, plan, skips, echoes=echoes)


def client_for(registry: StoreRegistry, domain: str) -> ShopifyClient:
    """The Shopify client for a registered store: its credentials, and the shop's shared bucket."""
    return ShopifyClient(domain, **registry.client_options(domain))


def skip_outcomes(plan: StorePlan) -> pl.DataFrame:
    """The plan's skips as ``skipped`` outcome rows (the reason in ``error``) for the push log."""
    skips = plan.skips
    if skips.is_empty():
        return pl.DataFrame(schema=sync_log.OUTCOME_SCHEMA)
    return skips.select(
        "shop",
        "customer_id",
        "kind",
        "key",
        pl.lit("none").alias("operation"),
        pl.lit("skipped").alias("outcome"),
        pl.col("reason").alias("error"),
        "payload",
        "payload_hash",
    ).pipe(
        lambda f: f.with_columns(
            *[
                pl.lit(None, dtype=t).alias(c)
                for c, t in sync_log.OUTCOME_SCHEMA.items()
                if c not in f.columns
            ]
        ).select(list(sync_log.OUTCOME_SCHEMA))
    )


def push_store(
    registry: StoreRegistry,
    plan: StorePlan,
    *,
    run_id: str,
    now: datetime,
    client: ShopifyClient | None = None,
    journal_folder: Path | None = None,
) -> PushReport | None:
    """Send a plan (network only) and return what happened, skips included.

    None when the store lacks ``write_customers``: it is then marked "Reconnect required" and
    nothing was sent. A blocked store (Disconnected, Reconnect required) or one with every
    toggle off sends nothing and is not asked anything.
    """
    empty = PushReport(shop=plan.shop, outcomes=pl.DataFrame(schema=sync_log.OUTCOME_SCHEMA))
    if plan.blocked is not None or not plan.toggles:
        return empty
    own = client is None
    client = client or client_for(registry, plan.shop)
    journal = PushJournal(journal_path(journal_folder, plan.shop)) if journal_folder is not None else None
    try:
        report = push_shop(client, plan.plan, run_id=run_id, now=now, journal=journal)
    except PushScopeMissing as exc:
        mark_reconnect_required(registry, plan.shop, str(exc))
        log.error("reverse sync %s: %s", plan.shop, exc)
        return None
    finally:
        if journal is not None:
            journal.close()
        if own:
            client.close()
    skipped = skip_outcomes(plan)
    if skipped.height:
        report.outcomes = pl.concat([report.outcomes, skipped])
    report.echoes = plan.echoes
    return report


def record_store(
    warehouse: Path,
    report: PushReport | None,
    *,
    shop: str,
    run_id: str,
    at: datetime,
    journal_folder: Path | None = None,
) -> sync_log.RecordSummary:
    """Record a push's outcomes and echoes in the warehouse (the write step), then settle the journal.

    Always reports the store's due retries (``summary.next_retry``), even when nothing was pushed.
    """
    con = wio.connect(Path(warehouse))
    try:
        if report is not None:
            summary = sync_log.record(con, report.outcomes, run_id=run_id, at=at)
            if report.echoes is not None:
                summary.echoes = sync_log.record_echoes(con, report.echoes, at=at)
        else:
            sync_log.ensure_schema(con)
            summary = sync_log.RecordSummary()
        summary.next_retry = sync_log.due_retries(con, shop)
    finally:
        con.close()
    if report is not None and journal_folder is not None and report.outcomes.height:
        with PushJournal(journal_path(journal_folder, shop)) as journal:
            journal.mark_recorded(report.outcomes["intent_id"].drop_nulls().to_list())
    return summary


def retry_dead(warehouse: Path, domain: str, *, at: datetime) -> int:
    """Queue a store's dead letters for the next push."""
    con = wio.connect(Path(warehouse))
    try:
        return sync_log.replay_dead_letters(con, domain, at=at)
    finally:
        con.close()


def describe(summary: sync_log.RecordSummary) -> dict[str, Any]:
    """A record summary as JSON-ready metadata."""
    return {
        "logged": summary.logged,
        "by_outcome": summary.by_outcome,
        "dead_lettered": summary.dead,
        "echoes": summary.echoes,
        "next_retry": {k: v.isoformat() for k, v in summary.next_retry.items()},
    }
