"""Reverse sync in three steps, each with its own resource needs (no Dagster here; the assets and the CLI call it).

1. ``plan_store``: warehouse READ (shopify.customers, core.consent, engagement, metrics,
   sync.pushed_state) + the store's outbound toggles → plan.
2. ``push_store``: network only; the warehouse is not held. Missing ``write_customers`` with a
   toggle on → store status "Reconnect required", nothing sent.
3. ``record_store``: warehouse WRITE of the outcomes (push log, pushed state, retries, dead letters).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from orchestration.control.models import StoreStatus
from orchestration.control.registry import StoreRegistry
from pipelines import sync_log
from pipelines import warehouse_io as wio
from pipelines.shopify.client import ShopifyClient
from pipelines.shopify.push import PushReport, PushScopeMissing, push_shop
from transforms import reverse_sync as rs

log = logging.getLogger("shopsync.reverse_sync")


@dataclass
class StorePlan:
    """A store's plan and skips."""

    shop: str
    toggles: set[str]
    plan: pl.DataFrame
    skips: pl.DataFrame

    def counts(self) -> dict[str, int]:
        """Plan rows per kind."""
        return rs.plan_counts(self.plan)


def _customers(con: object) -> pl.DataFrame:
    customers = wio.shopify_table(con, "customers")  # type: ignore[arg-type]
    return customers.select(
        "shop",
        pl.col("id").alias("customer_id"),
        "email",
        "phone",
        "first_name",
        "last_name",
        pl.col("default_address_id").is_not_null().alias("has_address"),
    )


def _segments(con: object) -> pl.DataFrame | None:
    if not (
        wio.table_exists(con, "core.contact_metrics") and wio.table_exists(con, "core.contact_identities")
    ):  # type: ignore[arg-type]
        return None
    metrics = wio.read_table(con, "core.contact_metrics")  # type: ignore[arg-type]
    ids = wio.read_table(con, "core.contact_identities")  # type: ignore[arg-type]
    if "segment" not in metrics.columns or "record_type" not in ids.columns:
        return None
    customers = ids.filter(pl.col("record_type") == "customer").select(
        "shop", pl.col("record_id").cast(pl.Int64, strict=False).alias("customer_id"), "contact_id"
    )
    return customers.join(metrics.select("contact_id", "segment"), on="contact_id").select(
        "shop", "customer_id", "segment"
    )


def plan_store(
    warehouse: Path, registry: StoreRegistry, domain: str, *, as_of: datetime, kinds: set[str] | None = None
) -> StorePlan:
    """Plan one store's push from the warehouse (read only). ``kinds`` narrows the toggles (a job pushes only its kind)."""
    toggles = registry.outbound_toggles(domain)
    if kinds is not None:
        toggles &= kinds
    if not Path(warehouse).exists() or not toggles:
        empty = pl.DataFrame(schema=rs.PLAN_SCHEMA)
        return StorePlan(domain, toggles, empty, pl.DataFrame(schema=rs.SKIP_SCHEMA))
    con = wio.connect(Path(warehouse), read_only=True)
    try:
        customers = _customers(con).filter(pl.col("shop") == domain)
        consent = (
            wio.read_table(con, "core.consent").filter(pl.col("shop") == domain)
            if wio.table_exists(con, "core.consent")
            else None
        )
        engagement = None
        if "engagement" in toggles:
            engagement = rs.engagement_from_events(
                wio.engagement_events(con).filter(pl.col("shop") == domain), customers, _segments(con)
            )
        profile = None
        if "profile" in toggles and wio.table_exists(con, "core.contacts"):
            profile = _profile_candidates(con, domain)
        state = sync_log.read_pushed_state(con, domain)
        dead = sync_log.read_dead_letters(con, domain)
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
    )
    return StorePlan(domain, toggles, plan, skips)


def _profile_candidates(con: object, domain: str) -> pl.DataFrame | None:
    """Best known contact fields per Shopify customer, from ``core.contacts`` via the identities."""
    contacts = wio.read_table(con, "core.contacts")  # type: ignore[arg-type]
    ids = wio.read_table(con, "core.contact_identities")  # type: ignore[arg-type]
    if "contact_id" not in contacts.columns or "record_type" not in ids.columns:
        return None
    wanted = {
        c: c
        for c in ("first_name", "last_name", "address1", "city", "zip", "country_code")
        if c in contacts.columns
    }
    if "phone_e164" in contacts.columns:
        wanted["phone"] = "phone_e164"
    customers = ids.filter(pl.col("record_type") == "customer", pl.col("shop") == domain).select(
        "shop", pl.col("record_id").cast(pl.Int64, strict=False).alias("customer_id"), "contact_id"
    )
    return customers.join(
        contacts.select("contact_id", *[pl.col(src).alias(dst) for dst, src in wanted.items()]),
        on="contact_id",
    ).drop("contact_id")


def client_for(registry: StoreRegistry, domain: str) -> ShopifyClient:
    """The shared Shopify client for a registered store (credentials from the control plane)."""
    store = registry.get_store(domain)
    creds = registry.credentials(domain)
    return ShopifyClient(
        domain,
        access_token=creds.get("access_token"),
        client_id=creds.get("client_id"),
        client_secret=creds.get("client_secret"),
        base_url=store.api_base_url,
    )


def push_store(
    registry: StoreRegistry,
    plan: StorePlan,
    *,
    run_id: str,
    now: datetime,
    client: ShopifyClient | None = None,
) -> PushReport | None:
    """Send a plan (network only). None when the store lacks ``write_customers``: it is then marked
    "Reconnect required" and nothing was sent."""
    own = client is None
    client = client or client_for(registry, plan.shop)
    try:
        return push_shop(client, plan.plan, run_id=run_id, now=now)
    except PushScopeMissing as exc:
        registry.set_store_status(plan.shop, StoreStatus.RECONNECT_REQUIRED, str(exc))
        log.error("reverse sync %s: %s", plan.shop, exc)
        return None
    finally:
        if own:
            client.close()


def record_store(warehouse: Path, report: PushReport, *, run_id: str, at: datetime) -> sync_log.RecordSummary:
    """Record a push's outcomes in the warehouse (the write step)."""
    con = wio.connect(Path(warehouse))
    try:
        return sync_log.record(con, report.outcomes, run_id=run_id, at=at)
    finally:
        con.close()


def retry_dead(warehouse: Path, domain: str, *, at: datetime) -> int:
    """Queue a store's dead letters for the next push."""
    con = wio.connect(Path(warehouse))
    try:
        return sync_log.replay_dead_letters(con, domain, at=at)
    finally:
        con.close()
