"""Customer value metrics per contact and per (shop, customer): spend, orders, recency, churn, tier.

Which orders count
    An order counts when it is not a test order, not cancelled (``cancelled_at`` set at any
    time), and was processed at or before ``as_of``. Its value is ``total_price -
    total_refunded`` (net of refunds); a fully refunded order still counts as an order, with
    value 0. Guest orders (no ``customer_id``) count for the contact the identity stage
    attached them to (``contact_id``), and for no (shop, customer).

Money and currencies
    Money stays exact: sums are taken in whole cents and returned as Decimal with two places
    (rounding half-to-even). Per (shop, customer), money is in the shop's currency
    (``currency_code``; a shop's orders must share one). Per contact, who may have bought
    from stores in several currencies, money is in the reporting currency
    (``ValueSettings.reporting_currency``, USD by default): the contact's subtotal in each
    currency is converted with the FX table's ``rate_to_reporting`` (reporting amount =
    amount × rate), rounded to cents once, and the subtotals are added. The reporting
    currency's own rate is 1 and need not be in the table; any other currency without a
    rate raises ``MissingExchangeRateError``. CLV tiers compare the reporting-currency spend
    with the thresholds at both levels.

Derived columns
    ``days_since_last_order`` = whole days from the last order to ``as_of``;
    ``purchase_frequency`` = orders per ``frequency_window_days`` (30) since the first order
    (at least one day); ``churn_risk`` = high when no order for more than 90 days, medium
    for more than 45, else low; ``clv_tier`` = high above 1000, medium above 300, else low.
    Contacts without orders (when a ``contacts`` frame is given) get zero orders and spend,
    a ``low`` tier and no churn risk.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

import polars as pl

from transforms import clv as clv_model
from transforms import rfm as rfm_model
from transforms.settings import ValueSettings

MONEY = pl.Decimal(38, 2)
RATE = pl.Decimal(38, 10)
TIMESTAMP = pl.Datetime("us", "UTC")

# The orders the metrics read (one row per Shopify order, as loaded into the warehouse).
ORDERS_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "id": pl.Int64,
    "customer_id": pl.Int64,  # null: guest checkout
    "contact_id": pl.String,  # null until the identity stage attaches the order to a contact
    "processed_at": TIMESTAMP,
    "currency_code": pl.String,  # shop currency, ISO 4217
    "total_price": MONEY,
    "total_refunded": MONEY,
    "cancelled_at": TIMESTAMP,
    "test": pl.Boolean,
}
# Optional columns: filled with nulls when absent (``contact_id`` before identity runs).
_OPTIONAL_ORDER_COLUMNS = frozenset({"contact_id", "cancelled_at", "total_refunded", "test"})

# Exchange rates into the reporting currency: reporting amount = amount × rate_to_reporting.
FX_SCHEMA: dict[str, pl.DataType] = {"currency_code": pl.String, "rate_to_reporting": RATE}

# The contacts to report on, including those without orders (prospects).
CONTACTS_SCHEMA: dict[str, pl.DataType] = {"contact_id": pl.String}

_COMMON_METRICS: dict[str, pl.DataType] = {
    "order_count": pl.UInt32,
    "total_spent": MONEY,
    "average_order_value": MONEY,
    "first_order_at": TIMESTAMP,
    "last_order_at": TIMESTAMP,
    "days_since_last_order": pl.Int64,
    "purchase_frequency": pl.Float64,
    "churn_risk": pl.String,  # "high" | "medium" | "low"; null without orders
    "clv_tier": pl.String,  # "high" | "medium" | "low"
}

CUSTOMER_METRICS_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "currency_code": pl.String,  # the shop's currency; total_spent and AOV are in it
    **_COMMON_METRICS,
    "total_spent_reporting": MONEY,  # in the reporting currency; the CLV tier is based on it
}

CONTACT_METRICS_SCHEMA: dict[str, pl.DataType] = {
    "contact_id": pl.String,
    "currency_code": pl.String,  # the reporting currency
    **_COMMON_METRICS,
    "shop_count": pl.UInt32,
}


class MetricsInputError(ValueError):
    """The orders or FX table cannot be used as given (a user-facing message)."""


class MissingExchangeRateError(MetricsInputError):
    """Orders are in a currency the FX table has no rate for."""

    def __init__(self, currencies: list[str], reporting_currency: str) -> None:
        self.currencies = currencies
        super().__init__(
            f"No exchange rate to {reporting_currency} for {', '.join(currencies)}. "
            f"Add a rate_to_reporting row for each to the FX table."
        )


# --- inputs ---------------------------------------------------------------------------------


def conform_orders(orders: pl.DataFrame) -> pl.DataFrame:
    """Select and cast ``orders`` to ``ORDERS_SCHEMA``; money given as strings becomes Decimal.

    Optional columns (``contact_id``, ``cancelled_at``, ``total_refunded``, ``test``) are
    filled with nulls when absent; any other missing column raises ``MetricsInputError``.
    """
    missing = [c for c in ORDERS_SCHEMA if c not in orders.columns and c not in _OPTIONAL_ORDER_COLUMNS]
    if missing:
        raise MetricsInputError(f"Orders are missing the column(s) {', '.join(missing)}.")
    columns = []
    for name, dtype in ORDERS_SCHEMA.items():
        if name in orders.columns:
            column = pl.col(name)
            if dtype == TIMESTAMP and orders.schema[name] == pl.Datetime("us"):
                column = column.dt.replace_time_zone("UTC")  # naive timestamps are UTC
            columns.append(column.cast(dtype).alias(name))
        else:
            columns.append(pl.lit(None, dtype=dtype).alias(name))
    return orders.select(columns)


def _as_of_utc(as_of: datetime) -> datetime:
    return as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)


def counted_orders(orders: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """The orders that count (see module docstring), with their net value in integer cents.

    Returns ``shop, customer_id, contact_id, processed_at, currency_code, net_cents,
    refunded`` (whether any refund was made).
    Summing whole cents as Int64 is exact (like Decimal) and much faster to aggregate.
    """
    cutoff = pl.lit(_as_of_utc(as_of), dtype=TIMESTAMP)
    zero = pl.lit(Decimal(0), dtype=MONEY)
    return (
        conform_orders(orders)
        .lazy()
        .filter(
            ~pl.col("test").fill_null(False),
            pl.col("cancelled_at").is_null(),
            pl.col("processed_at").is_not_null(),
            pl.col("processed_at") <= cutoff,
        )
        .select(
            "shop",
            "customer_id",
            "contact_id",
            "processed_at",
            "currency_code",
            net_cents=(
                (pl.col("total_price").fill_null(zero) - pl.col("total_refunded").fill_null(zero)) * 100
            ).cast(pl.Int64),
            refunded=pl.col("total_refunded").fill_null(zero) > zero,
        )
        .collect()
    )


def exchange_rates(
    currencies: list[str], fx: pl.DataFrame | None, settings: ValueSettings
) -> dict[str, Decimal]:
    """The rate to the reporting currency for each of ``currencies``.

    The reporting currency's rate is 1. Raises ``MissingExchangeRateError`` for a currency
    without a rate and ``MetricsInputError`` for a malformed FX table.
    """
    reporting = settings.reporting_currency
    if any(c is None for c in currencies):
        raise MetricsInputError("Some orders have no currency_code; every order needs its shop currency.")
    if fx is None:
        fx = pl.DataFrame(schema=FX_SCHEMA)
    missing_fx = [c for c in FX_SCHEMA if c not in fx.columns]
    if missing_fx:
        raise MetricsInputError(f"The FX table is missing the column(s) {', '.join(missing_fx)}.")
    table = fx.select(
        pl.col("currency_code").cast(pl.String).str.to_uppercase(),
        pl.col("rate_to_reporting").cast(RATE),
    )
    duplicated = table.filter(pl.col("currency_code").is_duplicated())["currency_code"].unique().sort()
    if duplicated.len():
        raise MetricsInputError(f"The FX table has more than one rate for {', '.join(duplicated.to_list())}.")
    bad = table.filter(pl.col("rate_to_reporting").is_null() | (pl.col("rate_to_reporting") <= 0))
    if bad.height:
        raise MetricsInputError(
            f"The FX rate for {', '.join(bad['currency_code'].sort().to_list())} must be a positive number."
        )
    rates: dict[str, Decimal] = dict(table.iter_rows())
    if rates.get(reporting, Decimal(1)) != Decimal(1):
        raise MetricsInputError(f"The FX rate for the reporting currency {reporting} must be 1.")
    rates[reporting] = Decimal(1)
    missing = sorted(set(currencies) - set(rates))
    if missing:
        raise MissingExchangeRateError(missing, reporting)
    return {c: rates[c] for c in currencies}


def _converted_cents(cents: pl.Expr, rate: Decimal) -> pl.Expr:
    """Integer cents × rate, rounded half-to-even to whole cents."""
    if rate == 1:
        return cents
    return (cents.cast(pl.Decimal(38, 0)) * pl.lit(rate, dtype=RATE)).round(0).cast(pl.Int64)


def _money(cents: pl.Expr) -> pl.Expr:
    return (cents.cast(pl.Decimal(38, 0)) * pl.lit(Decimal("0.01"), dtype=MONEY)).cast(MONEY)


# --- metrics --------------------------------------------------------------------------------


def _derived(as_of: datetime, settings: ValueSettings) -> list[pl.Expr]:
    """Columns computed from the aggregates (``total_cents``, ``tier_cents`` in reporting currency)."""
    cutoff = pl.lit(_as_of_utc(as_of), dtype=TIMESTAMP)
    days_since_last = (cutoff - pl.col("last_order_at")).dt.total_days()
    days_since_first = (cutoff - pl.col("first_order_at")).dt.total_days().clip(lower_bound=1)
    return [
        _money(pl.col("total_cents")).alias("total_spent"),
        (_money(pl.col("total_cents")).cast(pl.Decimal(38, 8)) / pl.col("order_count"))
        .round(2)
        .cast(MONEY)
        .alias("average_order_value"),
        days_since_last.alias("days_since_last_order"),
        (pl.col("order_count") / days_since_first * settings.frequency_window_days).alias(
            "purchase_frequency"
        ),
        pl.when(days_since_last > settings.churn_high_days)
        .then(pl.lit("high"))
        .when(days_since_last > settings.churn_medium_days)
        .then(pl.lit("medium"))
        .otherwise(pl.lit("low"))
        .alias("churn_risk"),
        _tier(pl.col("tier_cents"), settings).alias("clv_tier"),
    ]


def _tier(cents: pl.Expr, settings: ValueSettings) -> pl.Expr:
    # Thresholds in cents of the reporting currency; "above" is strict.
    high = int(settings.clv_high * 100)
    medium = int(settings.clv_medium * 100)
    return (
        pl.when(cents > high)
        .then(pl.lit("high"))
        .when(cents > medium)
        .then(pl.lit("medium"))
        .otherwise(pl.lit("low"))
    )


def _order_aggregates() -> list[pl.Expr]:
    return [
        pl.len().alias("order_count"),
        pl.col("processed_at").min().alias("first_order_at"),
        pl.col("processed_at").max().alias("last_order_at"),
    ]


def customer_metrics(
    orders: pl.DataFrame,
    as_of: datetime,
    settings: ValueSettings | None = None,
    fx: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Value metrics per (shop, customer_id) as of ``as_of``, in ``CUSTOMER_METRICS_SCHEMA``.

    Money is in the shop's currency; ``total_spent_reporting`` (and the CLV tier) in the
    reporting currency, for which ``fx`` must have a rate unless every shop already uses it.
    Row order is unspecified (sort if you need one).
    """
    settings = settings or ValueSettings()
    counted = counted_orders(orders, as_of)
    shop_currencies = counted.select("shop", "currency_code").unique()
    mixed = shop_currencies.filter(pl.col("shop").is_duplicated()).sort("shop", "currency_code")
    if mixed.height:
        shop = mixed["shop"][0]
        currencies = mixed.filter(pl.col("shop") == shop)["currency_code"].drop_nulls().to_list()
        raise MetricsInputError(
            f"Orders of {shop} are in several currencies ({', '.join(currencies)}); "
            "total_price must be in the shop's currency (shopMoney)."
        )
    rates = exchange_rates(shop_currencies["currency_code"].unique().to_list(), fx, settings)
    aggregated = (
        counted.lazy()
        .filter(pl.col("customer_id").is_not_null())
        .group_by("shop", "customer_id")
        .agg(*_order_aggregates(), pl.col("net_cents").sum().alias("total_cents"))
        .join(shop_currencies.lazy(), on="shop", how="left")
    )
    # One currency per shop, so each customer's total is converted once.
    reporting_cents = pl.lit(None, dtype=pl.Int64)
    for currency, rate in rates.items():
        reporting_cents = (
            pl.when(pl.col("currency_code") == currency)
            .then(_converted_cents(pl.col("total_cents"), rate))
            .otherwise(reporting_cents)
        )
    return (
        aggregated.with_columns(tier_cents=reporting_cents)
        .with_columns(*_derived(as_of, settings), total_spent_reporting=_money(pl.col("tier_cents")))
        .select([pl.col(name).cast(dtype) for name, dtype in CUSTOMER_METRICS_SCHEMA.items()])
        .collect()
    )


def _contact_metrics(
    counted: pl.DataFrame,
    as_of: datetime,
    settings: ValueSettings,
    rates: dict[str, Decimal],
    contacts: pl.DataFrame | None,
) -> pl.DataFrame:
    # A contact may have bought in several currencies: each currency's subtotal is
    # converted and rounded once, then the subtotals are added. The subtotals are plain
    # columns summed per contact (a filtered sum inside the aggregation is much slower).
    subtotals = [f"_cents_{i}" for i in range(len(rates))]
    converted = [
        _converted_cents(pl.col(name), rate) for name, rate in zip(subtotals, rates.values(), strict=True)
    ]
    metrics = (
        counted.lazy()
        .filter(pl.col("contact_id").is_not_null())
        .with_columns(
            pl.when(pl.col("currency_code") == currency).then(pl.col("net_cents")).otherwise(0).alias(name)
            for name, currency in zip(subtotals, rates, strict=True)
        )
        .group_by("contact_id")
        .agg(*_order_aggregates(), pl.col(subtotals).sum(), pl.col("shop").n_unique().alias("shop_count"))
        .with_columns(total_cents=pl.sum_horizontal(converted) if converted else pl.lit(0, dtype=pl.Int64))
        .with_columns(tier_cents=pl.col("total_cents"))
        .with_columns(_derived(as_of, settings))
    )
    if contacts is not None:
        if "contact_id" not in contacts.columns:
            raise MetricsInputError("The contacts frame needs a contact_id column.")
        prospects = (
            contacts.lazy()
            .select(pl.col("contact_id").cast(pl.String))
            .unique()
            .join(metrics.select("contact_id"), on="contact_id", how="anti")
            .with_columns(
                order_count=pl.lit(0, dtype=pl.UInt32),
                total_spent=pl.lit(Decimal(0), dtype=MONEY),
                purchase_frequency=pl.lit(0.0),
                clv_tier=_tier(pl.lit(0, dtype=pl.Int64), settings),
                shop_count=pl.lit(0, dtype=pl.UInt32),
            )
        )
        metrics = pl.concat([metrics, prospects], how="diagonal_relaxed")
    return (
        metrics.with_columns(currency_code=pl.lit(settings.reporting_currency))
        .select([pl.col(name).cast(dtype) for name, dtype in CONTACT_METRICS_SCHEMA.items()])
        .collect()
    )


def _currencies(counted: pl.DataFrame) -> list[str]:
    return counted["currency_code"].unique().to_list()


def contact_metrics(
    orders: pl.DataFrame,
    as_of: datetime,
    settings: ValueSettings | None = None,
    fx: pl.DataFrame | None = None,
    contacts: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Value metrics per contact across all stores, in ``CONTACT_METRICS_SCHEMA``.

    Money is in the reporting currency. Orders without a ``contact_id`` are left out. When
    ``contacts`` (``contact_id``) is given, contacts without counted orders are included
    with zero orders. Row order is unspecified (sort if you need one).
    """
    settings = settings or ValueSettings()
    counted = counted_orders(orders, as_of)
    rates = exchange_rates(_currencies(counted), fx, settings)
    return _contact_metrics(counted, as_of, settings, rates, contacts)


# --- CLV inputs and the combined contact value table -----------------------------------------


def _transactions(
    counted: pl.DataFrame, rates: dict[str, Decimal], level: Literal["contact", "customer"]
) -> pl.DataFrame:
    if level == "contact":
        key = pl.col("contact_id")
    else:
        key = pl.when(pl.col("customer_id").is_not_null()).then(
            pl.concat_str(pl.col("shop"), pl.lit("/"), pl.col("customer_id").cast(pl.String))
        )
    rate = pl.col("currency_code").replace_strict(
        {c: float(r) for c, r in rates.items()}, return_dtype=pl.Float64
    )
    return (
        counted.lazy()
        # Refunded down to nothing is no purchase; a free order (nothing to refund) is one.
        .filter((pl.col("net_cents") > 0) | ((pl.col("net_cents") == 0) & ~pl.col("refunded")))
        .select(
            key.alias("customer_id"),
            pl.col("processed_at").dt.date().alias("date"),
            (pl.col("net_cents") * rate / 100).alias("amount"),
        )
        .filter(pl.col("customer_id").is_not_null())
        .collect()
    )


def order_transactions(
    orders: pl.DataFrame,
    as_of: datetime,
    settings: ValueSettings | None = None,
    fx: pl.DataFrame | None = None,
    level: Literal["contact", "customer"] = "contact",
) -> pl.DataFrame:
    """Counted orders as a CLV transaction log (``clv.TRANSACTIONS_SCHEMA``).

    ``customer_id`` is the contact id (``level="contact"``) or ``"<shop>/<customer id>"``
    (``level="customer"``); ``date`` is the UTC date of ``processed_at``; ``amount`` is the
    net value in the reporting currency (a float: it feeds a statistical model). Orders
    refunded down to nothing are not purchases and are left out; free orders (total 0, no
    refund) are purchases of value 0.
    """
    settings = settings or ValueSettings()
    counted = counted_orders(orders, as_of)
    rates = exchange_rates(_currencies(counted), fx, settings)
    return _transactions(counted, rates, level)


def contact_value(
    orders: pl.DataFrame,
    as_of: datetime,
    settings: ValueSettings | None = None,
    fx: pl.DataFrame | None = None,
    contacts: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Metrics, RFM segment and predicted CLV per contact: the ``core`` value table.

    ``CONTACT_METRICS_SCHEMA`` columns, then the RFM columns of ``rfm.rfm_segments`` and the
    CLV predictions ``expected_purchases_12m, p_alive, predicted_average_value, clv_12m``
    (floats, reporting currency; the horizon follows ``settings.clv_horizon_months``),
    fitted on all contacts' orders up to ``as_of``. When the CLV models cannot be fitted
    (for example no repeat buyers yet), the CLV columns are null and the rest is returned.
    """
    settings = settings or ValueSettings()
    counted = counted_orders(orders, as_of)
    rates = exchange_rates(_currencies(counted), fx, settings)
    metrics = _contact_metrics(counted, as_of, settings, rates, contacts)
    segments = rfm_model.rfm_segments(metrics, keys=["contact_id"])
    horizon = settings.clv_horizon_months
    clv_columns = {
        f"expected_purchases_{horizon}m": pl.Float64,
        "p_alive": pl.Float64,
        "predicted_average_value": pl.Float64,
        f"clv_{horizon}m": pl.Float64,
    }
    try:
        result = clv_model.fit_and_predict_clv(
            _transactions(counted, rates, "contact"),
            _as_of_utc(as_of).date(),
            settings.time_unit_days,
            horizon,
            settings.clv_monthly_discount_rate,
        )
        predictions = result.predictions.select(pl.col("customer_id").alias("contact_id"), *clv_columns)
    except clv_model.ClvFitError:
        predictions = pl.DataFrame(schema={"contact_id": pl.String, **clv_columns})
    return metrics.join(segments, on="contact_id", how="left", maintain_order="left").join(
        predictions, on="contact_id", how="left", maintain_order="left"
    )
