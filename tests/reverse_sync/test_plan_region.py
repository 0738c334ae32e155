"""Phones in the engagement feed typed without a country code are read in the store's country."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

from orchestration.control import ControlSettings, StoreRegistry
from orchestration.defs.reverse_sync.service import plan_store

SHOP = "tea-rooms.myshopify.com"


def _warehouse(path: Path) -> None:
    """A British store: its customers' addresses are in GB, one texted a link from a UK mobile."""
    customers = pl.DataFrame(
        {
            "shop": [SHOP, SHOP],
            "id": [1, 2],
            "email": ["ann@example.co.uk", "bo@example.co.uk"],
            "phone": ["+447700900123", None],
            "default_address_id": [11, 12],
            "updated_at": [datetime(2026, 11, 1, tzinfo=UTC)] * 2,
        }
    )
    addresses = pl.DataFrame(
        {"shop": [SHOP, SHOP], "id": [11, 12], "customer_id": [1, 2], "country_code": ["GB", "GB"]}
    )
    events = pl.DataFrame(
        {
            "event_id": ["c1"],
            "occurred_at": [datetime(2026, 11, 3, 9, tzinfo=UTC)],
            "type": ["sms_click"],
            "email": [None],
            "phone": ["07700 900123"],  # national format, as the SMS provider reported it
            "shop": [None],
            "body": [None],
        },
        schema_overrides={"email": pl.String, "shop": pl.String, "body": pl.String},
    )
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE SCHEMA shopify; CREATE SCHEMA engagement")
        for name, frame in (
            ("shopify.customers", customers),
            ("shopify.customer_addresses", addresses),
            ("engagement.events", events),
        ):
            con.register("_f", frame.to_arrow())
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM _f")
            con.unregister("_f")
    finally:
        con.close()


def test_a_national_phone_in_the_feed_matches_in_the_stores_country(tmp_path: Path) -> None:
    _warehouse(tmp_path / "warehouse.duckdb")
    registry = StoreRegistry(ControlSettings(data_dir=tmp_path))
    try:
        registry.connect_store(SHOP, access_token="shpat_0123456789abcdef0123456789abcdef")
        registry.set_outbound_toggles(SHOP, {"engagement": True})
        as_of = datetime(2026, 11, 4, tzinfo=UTC)
        plan = plan_store(tmp_path / "warehouse.duckdb", registry, SHOP, as_of=as_of).plan
        # read as a US number (the fallback region) the click would belong to nobody
        assumed_us = plan_store(tmp_path / "warehouse.duckdb", registry, SHOP, as_of=as_of, region="US").plan
    finally:
        registry.close()
    clicks = plan.filter(pl.col("key") == "last_sms_click_at")
    assert clicks["customer_id"].to_list() == [1]
    assert assumed_us.filter(pl.col("key") == "last_sms_click_at").is_empty()
