"""Deployment settings of the intelligence assets: value thresholds, FX, phone regions, hub caps."""

from __future__ import annotations

from decimal import Decimal

import dagster as dg
import polars as pl
import pytest

from orchestration.defs.intelligence.resources import IntelligenceSettings
from transforms.identity import resolve
from transforms.warehouse_inputs import customer_keys, engagement_frame, store_regions

UK = "north-coffee.myshopify.com"
US = "acme-outdoors.myshopify.com"


def test_value_thresholds_come_from_resource_config() -> None:
    settings = IntelligenceSettings(
        reporting_currency="gbp",
        churn_high_days=120,
        churn_medium_days=60,
        clv_high="2500.5",
        clv_medium="500",
        frequency_window_days=7,
        clv_time_unit="day",
        clv_monthly_discount_rate=0.02,
    ).value_settings()
    assert settings.reporting_currency == "GBP"
    assert (settings.churn_high_days, settings.churn_medium_days) == (120, 60)
    assert (settings.clv_high, settings.clv_medium) == (Decimal("2500.5"), Decimal("500"))
    assert settings.frequency_window_days == 7 and settings.time_unit_days == 1
    assert settings.clv_monthly_discount_rate == 0.02
    # the defaults are the product's (45/90 days, 300/1000)
    default = IntelligenceSettings().value_settings()
    assert (default.churn_medium_days, default.churn_high_days) == (45, 90)
    assert (default.clv_medium, default.clv_high) == (Decimal("300"), Decimal("1000"))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"churn_high_days": 30, "churn_medium_days": 45},
            "churn_medium_days must be smaller than churn_high_days",
        ),
        ({"clv_high": "lots"}, "clv_high and clv_medium must be numbers"),
        ({"clv_time_unit": "fortnight"}, "clv_time_unit"),
        ({"reporting_currency": "dollars"}, "reporting_currency"),
    ],
)
def test_bad_value_settings_fail_the_run_with_what_to_change(config: dict, message: str) -> None:
    with pytest.raises(dg.Failure, match=message):
        IntelligenceSettings(**config).value_settings()


def test_fx_rates_from_config_and_bad_rates() -> None:
    fx = IntelligenceSettings(fx_rates={"usd": "1", "KWD": "3.2573"}).fx()
    assert fx.rows() == [("USD", Decimal("1")), ("KWD", Decimal("3.2573"))]
    with pytest.raises(dg.Failure, match=r"fx_rates for JPY must be numbers"):
        IntelligenceSettings(fx_rates={"JPY": "0,0067"}).fx()


def test_store_regions_from_addresses_with_configured_override() -> None:
    records = pl.DataFrame(
        {
            "shop": [UK, UK, UK, US, US, "empty.myshopify.com"],
            "country": ["GB", "United Kingdom", "US", "US", None, None],
        }
    )
    assert store_regions(records) == {UK: "GB", US: "US"}
    settings = IntelligenceSettings(shop_regions={US: "ca"}, hub_max_records=9).linkage_settings(
        store_regions(records)
    )
    assert settings.shop_regions == {UK: "GB", US: "CA"}
    assert settings.hub_max_records == 9 and settings.default_region == "US"


def test_a_uk_stores_national_phone_links_as_plus_44() -> None:
    # the same shopper: an account with an international number, and a guest order at the
    # UK store typed the way locals type it, with no address to say which country it is
    records = pl.DataFrame(
        {
            "record_id": ["c1", "o1", "c2"],
            "shop": [US, UK, UK],
            "record_type": ["customer", "order", "customer"],
            "first_name": ["Olivia", "Olivia", "Harry"],
            "last_name": ["Hughes", "Hughes", "Patel"],
            "phone": ["+44 7700 900123", "07700 900123", None],
            "country": [None, None, "GB"],
        }
    )
    regions = IntelligenceSettings().linkage_settings(store_regions(records))
    assert regions.shop_regions == {UK: "GB"}
    ids = resolve(records, settings=regions).contact_identities
    contact = dict(zip(ids["record_id"], ids["contact_id"], strict=True))
    assert contact["c1"] == contact["o1"]
    assert ids.filter(pl.col("record_id") == "o1")["rule"][0] == "phone"
    # with only the US default the same number is no UK mobile and nothing links
    us_only = resolve(records, settings=IntelligenceSettings().linkage_settings()).contact_identities
    assert us_only["contact_id"].n_unique() == 3


def test_engagement_phones_read_in_the_stores_country() -> None:
    events = pl.DataFrame(
        {
            "event_id": ["e1", "e2"],
            "occurred_at": [None, None],
            "type": ["sms_stop", "sms_stop"],
            "shop": [UK, US],
            "email": [None, None],
            "phone": ["07700 900123", "(212) 555-0100"],
            "body": ["STOP", "STOP"],
        },
        schema_overrides={"occurred_at": pl.Datetime("us", "UTC"), "email": pl.String},
    )
    frame = engagement_frame(events, "US", {UK: "GB"})
    assert frame["phone_e164"].to_list() == ["+447700900123", "+12125550100"]
    customers = pl.DataFrame(
        {
            "shop": [UK],
            "id": [1],
            "email": [None],
            "phone": ["07700 900123"],
            "address_phone": [None],
            "country": [None],
        },
        schema_overrides={"email": pl.String, "address_phone": pl.String, "country": pl.String},
    )
    assert customer_keys(customers, "US", {UK: "GB"})["phone_e164"].to_list() == ["+447700900123"]
