"""Customer value metrics: which orders count, money, currencies, thresholds, contacts without orders."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from transforms import clv
from transforms.metrics import (
    CONTACT_METRICS_SCHEMA,
    CUSTOMER_METRICS_SCHEMA,
    MONEY,
    MetricsInputError,
    contact_metrics,
    contact_value,
    currencies_without_rate,
    customer_metrics,
    order_transactions,
)
from transforms.settings import ValueSettings

AS_OF = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def order(
    id: int,
    *,
    shop: str = "alpha.myshopify.com",
    customer_id: int | None = 1,
    contact_id: str | None = "c1",
    days_ago: float = 10,
    currency: str = "USD",
    total: str = "100.00",
    refunded: str | None = "0.00",
    cancelled: bool = False,
    test: bool = False,
) -> dict[str, Any]:
    """One order row as the warehouse holds it (money as decimal strings, like the devstore)."""
    processed = AS_OF - timedelta(days=days_ago)
    return {
        "shop": shop,
        "id": id,
        "customer_id": customer_id,
        "contact_id": contact_id,
        "processed_at": processed,
        "currency_code": currency,
        "total_price": total,
        "total_refunded": refunded,
        "cancelled_at": processed + timedelta(hours=1) if cancelled else None,
        "test": test,
    }


def frame(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(
        list(rows),
        schema_overrides={
            "processed_at": pl.Datetime("us", "UTC"),
            "cancelled_at": pl.Datetime("us", "UTC"),
            "customer_id": pl.Int64,
            "contact_id": pl.String,
            "total_refunded": pl.String,
        },
    )


def only(df: pl.DataFrame, **match: Any) -> dict[str, Any]:
    rows = df.filter(*[pl.col(k) == v for k, v in match.items()]).to_dicts()
    assert len(rows) == 1, rows
    return rows[0]


def test_refunds_cancelled_and_test_orders() -> None:
    orders = frame(
        order(1, total="120.00", refunded="20.00", days_ago=30),
        order(2, total="80.00", refunded=None, days_ago=5),
        order(3, total="999.00", cancelled=True, days_ago=3),
        order(4, total="500.00", test=True, days_ago=2),
        order(5, total="40.00", refunded="40.00", days_ago=20),  # fully refunded: counts, worth 0
    )
    row = only(customer_metrics(orders, AS_OF), customer_id=1)
    assert row["order_count"] == 3
    assert row["total_spent"] == Decimal("180.00")
    assert row["average_order_value"] == Decimal("60.00")
    assert row["last_order_at"] == AS_OF - timedelta(days=5)
    assert row["first_order_at"] == AS_OF - timedelta(days=30)
    assert row["days_since_last_order"] == 5
    # 3 orders over 30 days since the first: 3 per 30 days
    assert row["purchase_frequency"] == pytest.approx(3.0)
    contact = only(contact_metrics(orders, AS_OF), contact_id="c1")
    assert contact["order_count"] == 3 and contact["total_spent"] == Decimal("180.00")


def test_money_stays_decimal_and_rounds_aov_half_even() -> None:
    orders = frame(order(1, total="10.00"), order(2, total="10.01"), order(3, total="10.00"))
    metrics = customer_metrics(orders, AS_OF)
    assert metrics.schema == pl.Schema(CUSTOMER_METRICS_SCHEMA)
    assert metrics.schema["total_spent"] == MONEY == pl.Decimal(38, 3)
    row = metrics.row(0, named=True)
    assert row["total_spent"] == Decimal("30.01")
    assert row["average_order_value"] == Decimal("10.003")  # 10.00333… → 10.003
    orders = frame(order(1, total="0.005"), order(2, total="0.000"))
    assert customer_metrics(orders, AS_OF)["average_order_value"][0] == Decimal("0.002")  # 0.0025 → 0.002


def test_three_decimal_currencies_keep_their_thousandths() -> None:
    # Kuwaiti dinars have three decimals: nothing may be rounded to cents on the way
    orders = frame(
        order(1, shop="kw", currency="KWD", total="12.345", refunded="0.001"),
        order(2, shop="kw", currency="KWD", total="0.007"),
        order(3, shop="us", currency="USD", total="1.00"),
    )
    fx = pl.DataFrame({"currency_code": ["KWD"], "rate_to_reporting": ["3.2573"]})
    kw = only(customer_metrics(orders, AS_OF, fx=fx), shop="kw")
    assert kw["total_spent"] == Decimal("12.351") and kw["average_order_value"] == Decimal("6.176")
    # 12.351 x 3.2573 = 40.2309123 → 40.231
    assert kw["total_spent_reporting"] == Decimal("40.231")
    contact = only(contact_metrics(orders, AS_OF, fx=fx), contact_id="c1")
    assert contact["total_spent"] == Decimal("41.231")
    assert contact["spend_by_currency"] == [
        {"currency_code": "KWD", "total_spent": Decimal("12.351")},
        {"currency_code": "USD", "total_spent": Decimal("1.000")},
    ]
    assert order_transactions(orders, AS_OF, fx=fx).sort("amount")["amount"].to_list() == pytest.approx(
        [0.007 * 3.2573, 1.0, 12.344 * 3.2573]
    )


def test_guest_orders_count_for_the_contact_only() -> None:
    orders = frame(
        order(1, customer_id=1, contact_id="c1", total="10.00"),
        order(2, customer_id=None, contact_id="c1", total="15.00"),  # guest checkout, same person
        order(3, customer_id=None, contact_id=None, total="99.00"),  # unresolved guest
    )
    customers = customer_metrics(orders, AS_OF)
    assert customers.height == 1
    assert customers["total_spent"][0] == Decimal("10.00")
    contacts = contact_metrics(orders, AS_OF)
    assert contacts["contact_id"].to_list() == ["c1"]
    assert contacts["order_count"][0] == 2 and contacts["total_spent"][0] == Decimal("25.00")


def test_per_shop_customer_and_cross_store_contact_with_fx() -> None:
    orders = frame(
        order(1, shop="us.myshopify.com", customer_id=7, currency="USD", total="100.00"),
        order(2, shop="eu.myshopify.com", customer_id=7, currency="EUR", total="50.00", refunded="10.00"),
        order(3, shop="eu.myshopify.com", customer_id=7, currency="EUR", total="33.33"),
    )
    fx = pl.DataFrame({"currency_code": ["EUR"], "rate_to_reporting": ["1.0850"]})
    customers = customer_metrics(orders, AS_OF, fx=fx)
    eu = only(customers, shop="eu.myshopify.com")
    assert eu["currency_code"] == "EUR"
    assert eu["total_spent"] == Decimal("73.33")
    # the shop subtotal converted and rounded once: 73.33 × 1.085 = 79.56305 → 79.563
    assert eu["total_spent_reporting"] == Decimal("79.563")
    us = only(customers, shop="us.myshopify.com")
    assert us["total_spent_reporting"] == us["total_spent"] == Decimal("100.00")
    contact = only(contact_metrics(orders, AS_OF, fx=fx), contact_id="c1")
    assert contact["currency_code"] == "USD"
    assert contact["total_spent"] == Decimal("179.563")
    assert contact["shop_count"] == 2
    assert contact["average_order_value"] == Decimal("59.854")  # 179.563 / 3 = 59.85433…
    assert [s["currency_code"] for s in contact["spend_by_currency"]] == ["EUR", "USD"]


def test_reporting_currency_is_configurable() -> None:
    orders = frame(
        order(1, currency="EUR", total="10.00"), order(2, currency="GBP", shop="uk", total="10.00")
    )
    fx = pl.DataFrame({"currency_code": ["gbp"], "rate_to_reporting": [Decimal("1.17")]})
    contact = contact_metrics(orders, AS_OF, ValueSettings(reporting_currency="EUR"), fx=fx)
    assert contact["currency_code"][0] == "EUR"
    assert contact["total_spent"][0] == Decimal("21.70")


def test_a_currency_without_rate_keeps_its_own_totals_and_nulls_the_converted_values() -> None:
    orders = frame(
        order(1, shop="us", currency="USD", customer_id=1, contact_id="c1", total="10.00"),
        order(2, shop="jp", currency="JPY", customer_id=2, contact_id="c1", total="5000"),
        order(3, shop="eu", currency="EUR", customer_id=3, contact_id="c2", total="20.00", days_ago=40),
        order(4, shop="us", currency="USD", customer_id=4, contact_id="c3", total="30.00", days_ago=20),
        order(5, shop="us", currency="USD", customer_id=4, contact_id="c3", total="30.00", days_ago=5),
    )
    fx = pl.DataFrame({"currency_code": ["EUR"], "rate_to_reporting": ["1.1"]})
    assert currencies_without_rate(orders, fx) == ["JPY"]
    assert currencies_without_rate(orders, None) == ["EUR", "JPY"]
    customers = customer_metrics(orders, AS_OF, fx=fx)
    jp = only(customers, shop="jp")
    assert jp["total_spent"] == Decimal("5000") and jp["currency_code"] == "JPY"
    assert jp["total_spent_reporting"] is None and jp["clv_tier"] is None
    assert only(customers, shop="eu")["total_spent_reporting"] == Decimal("22.000")
    contacts = contact_metrics(orders, AS_OF, fx=fx)
    c1 = only(contacts, contact_id="c1")
    assert c1["order_count"] == 2 and c1["days_since_last_order"] == 10
    assert c1["total_spent"] is None and c1["average_order_value"] is None and c1["clv_tier"] is None
    assert c1["spend_by_currency"] == [
        {"currency_code": "JPY", "total_spent": Decimal("5000")},
        {"currency_code": "USD", "total_spent": Decimal("10")},
    ]
    assert only(contacts, contact_id="c2")["total_spent"] == Decimal("22.000")
    # the CLV fit leaves out the buyer it cannot value, and still runs for the others
    assert set(order_transactions(orders, AS_OF, fx=fx)["customer_id"].to_list()) == {"c2", "c3"}
    value = contact_value(orders, AS_OF, fx=fx)
    assert only(value, contact_id="c1")["segment"] is not None


@pytest.mark.parametrize(
    ("fx", "message"),
    [
        (
            {"currency_code": ["EUR", "EUR"], "rate_to_reporting": ["1.1", "1.2"]},
            "more than one rate for EUR",
        ),
        ({"currency_code": ["EUR"], "rate_to_reporting": ["0"]}, "EUR must be a positive number"),
        (
            {"currency_code": ["EUR", "USD"], "rate_to_reporting": ["1.1", "1.2"]},
            "reporting currency USD must be 1",
        ),
        ({"currency": ["EUR"], "rate_to_reporting": ["1.1"]}, "missing the column"),
    ],
)
def test_bad_fx_tables(fx: dict[str, list[str]], message: str) -> None:
    orders = frame(order(1, currency="EUR"))
    with pytest.raises(MetricsInputError, match=message):
        contact_metrics(orders, AS_OF, fx=pl.DataFrame(fx))


def test_a_shop_with_mixed_currencies_is_refused() -> None:
    orders = frame(order(1, currency="USD"), order(2, currency="EUR"))
    fx = pl.DataFrame({"currency_code": ["EUR"], "rate_to_reporting": ["1.1"]})
    with pytest.raises(
        MetricsInputError, match=r"alpha\.myshopify\.com are in several currencies \(EUR, USD\)"
    ):
        customer_metrics(orders, AS_OF, fx=fx)


@pytest.mark.parametrize(
    ("days_ago", "risk"),
    [(0, "low"), (45, "low"), (46, "medium"), (90, "medium"), (91, "high"), (400, "high")],
)
def test_churn_risk_thresholds(days_ago: int, risk: str) -> None:
    row = customer_metrics(frame(order(1, days_ago=days_ago)), AS_OF).row(0, named=True)
    assert row["days_since_last_order"] == days_ago
    assert row["churn_risk"] == risk


@pytest.mark.parametrize(
    ("total", "tier"),
    [("0.00", "low"), ("300.00", "low"), ("300.01", "medium"), ("1000.00", "medium"), ("1000.01", "high")],
)
def test_clv_tier_thresholds(total: str, tier: str) -> None:
    assert customer_metrics(frame(order(1, total=total)), AS_OF)["clv_tier"][0] == tier


def test_thresholds_come_from_settings() -> None:
    settings = ValueSettings(
        churn_medium_days=5, churn_high_days=10, clv_medium=Decimal(50), clv_high=Decimal(90)
    )
    orders = frame(
        order(1, days_ago=7, total="60.00"), order(2, customer_id=2, contact_id="c2", days_ago=11, total="95")
    )
    rows = {r["customer_id"]: r for r in customer_metrics(orders, AS_OF, settings).to_dicts()}
    assert (rows[1]["churn_risk"], rows[1]["clv_tier"]) == ("medium", "medium")
    assert (rows[2]["churn_risk"], rows[2]["clv_tier"]) == ("high", "high")
    with pytest.raises(ValueError, match="churn_medium_days must be smaller"):
        ValueSettings(churn_medium_days=90, churn_high_days=90)


def test_clv_tier_uses_the_reporting_currency() -> None:
    # 100,000 JPY is ~640 USD: medium, although the number is far above 1000
    orders = frame(order(1, currency="JPY", total="100000.00"))
    fx = pl.DataFrame({"currency_code": ["JPY"], "rate_to_reporting": ["0.0064"]})
    row = customer_metrics(orders, AS_OF, fx=fx).row(0, named=True)
    assert row["total_spent"] == Decimal("100000.00") and row["total_spent_reporting"] == Decimal("640.00")
    assert row["clv_tier"] == "medium"


def test_orders_after_as_of_are_ignored_and_as_of_may_be_naive() -> None:
    orders = frame(order(1, days_ago=10), order(2, days_ago=-3, total="500.00"))
    naive = AS_OF.replace(tzinfo=None)
    row = customer_metrics(orders, naive).row(0, named=True)
    assert row["order_count"] == 1 and row["total_spent"] == Decimal("100.00")


def test_contacts_without_orders_and_empty_input() -> None:
    orders = frame(order(1, contact_id="c1"), order(2, contact_id="c2", test=True))
    contacts = pl.DataFrame({"contact_id": ["c1", "c2", "c3", "c3"]})
    result = contact_metrics(orders, AS_OF, contacts=contacts)
    assert result.schema == pl.Schema(CONTACT_METRICS_SCHEMA)
    assert result["contact_id"].to_list() == ["c1", "c2", "c3"]
    for contact in ("c2", "c3"):
        row = only(result, contact_id=contact)
        assert row["order_count"] == 0 and row["total_spent"] == Decimal("0.00")
        assert row["average_order_value"] is None and row["days_since_last_order"] is None
        assert row["churn_risk"] is None and row["clv_tier"] == "low"
    empty = frame(order(1)).clear()
    assert customer_metrics(empty, AS_OF).height == 0
    assert contact_metrics(empty, AS_OF, contacts=contacts)["order_count"].to_list() == [0, 0, 0]


def test_missing_order_columns_are_reported() -> None:
    with pytest.raises(MetricsInputError, match="missing the column\\(s\\) processed_at, total_price"):
        customer_metrics(frame(order(1)).drop("processed_at", "total_price"), AS_OF)
    # contact_id, refunds, cancellation and test flag are optional
    minimal = frame(order(1)).drop("contact_id", "total_refunded", "cancelled_at", "test")
    assert customer_metrics(minimal, AS_OF)["total_spent"][0] == Decimal("100.00")


def test_order_transactions_for_clv() -> None:
    orders = frame(
        order(1, days_ago=3, total="10.00"),
        order(2, days_ago=3, total="5.00", refunded="5.00"),  # nothing left: not a purchase
        order(3, days_ago=1, customer_id=None, contact_id="c1", total="7.50"),
        order(4, days_ago=1, customer_id=9, contact_id=None, total="1.00"),
        order(5, days_ago=2, total="0.00"),  # a free order is still a purchase
    )
    by_contact = order_transactions(orders, AS_OF)
    assert by_contact.sort("amount")["amount"].to_list() == [0.0, 7.5, 10.0]
    by_customer = order_transactions(orders, AS_OF, level="customer")
    assert sorted(set(by_customer["customer_id"].to_list())) == [
        "alpha.myshopify.com/1",
        "alpha.myshopify.com/9",
    ]


CDNOW = Path(__file__).parents[1] / "data" / "cdnow_sample.csv"


def test_contact_value_combines_metrics_rfm_and_clv() -> None:
    # The CDNOW purchases as orders of one store: the CLV models fitted through the orders
    # path must match the models fitted on the transaction log directly.
    cdnow = pl.read_csv(CDNOW, schema_overrides={"customer_id": pl.String, "date": pl.Date})
    orders = cdnow.select(
        shop=pl.lit("cdnow.myshopify.com"),
        id=pl.int_range(1, pl.len() + 1, dtype=pl.Int64),
        customer_id=pl.col("customer_id").cast(pl.Int64),
        contact_id="customer_id",
        processed_at=pl.col("date").cast(pl.Datetime("us", "UTC")),
        currency_code=pl.lit("USD"),
        total_price=pl.col("amount").cast(pl.Decimal(38, 2)),
        total_refunded=pl.lit(Decimal(0)),
        cancelled_at=pl.lit(None, dtype=pl.Datetime("us", "UTC")),
        test=pl.lit(False),
    )
    as_of = datetime(1997, 9, 30, 23, 59, tzinfo=UTC)
    contacts = pl.DataFrame({"contact_id": [*cdnow["customer_id"].unique().to_list(), "prospect-1"]})
    value = contact_value(orders, as_of, contacts=contacts)
    assert value.height == 2358
    assert {"segment", "r_score", "clv_12m", "p_alive", "expected_purchases_12m"} <= set(value.columns)
    prospect = only(value, contact_id="prospect-1")
    assert prospect["segment"] == "prospect" and prospect["clv_12m"] is None

    direct = clv.fit_and_predict_clv(cdnow, date(1997, 9, 30), time_unit_days=7).predictions
    joined = value.join(direct, left_on="contact_id", right_on="customer_id", suffix="_direct")
    assert joined.height == 2357
    for column in ("clv_12m", "p_alive", "expected_purchases_12m", "predicted_average_value"):
        # same data and models; only float rounding of the amounts (cents / 100 vs CSV) differs
        relative = (joined[column] - joined[f"{column}_direct"]).abs() / joined[f"{column}_direct"].abs()
        assert relative.max() < 1e-6, column
    customer_1 = only(value, contact_id="1")
    assert customer_1["order_count"] == 3 and customer_1["total_spent"] == Decimal("74.02")
    # no repeat buyers at all: metrics and segments still come back, CLV is null
    once = contact_value(frame(order(1), order(2, contact_id="c2", customer_id=2)), AS_OF)
    assert once["clv_12m"].is_null().all() and once["segment"].is_not_null().all()
