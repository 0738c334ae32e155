"""Customer value metrics per contact and per (shop, customer): spend, orders, recency, churn, tier.

Which orders count
    An order counts when it is not a test order, not cancelled (``cancelled_at`` set at any
    time), and was processed at or before ``as_of``. Its value is ``total_price -
    total_refunded`` (net of refunds); a fully refunded order still counts as an order, with
    value 0. Guest orders (no ``customer_id``) count for the contact the identity stage
    attached them to (``contact_id``), and for no (shop, customer).

Money and currencies
    Money stays exact and keeps three decimals end to end (Kuwaiti dinars and the other
    three-decimal currencies lose nothing): sums are taken in whole thousandths of the
    currency unit and returned as ``Decimal(38, 3)``. Per (shop, customer), money is in
    the shop's currency (``currency_code``; a shop's orders must share one). Per contact,
    who may have bought from stores in several currencies, ``spend_by_currency`` always
    lists the net spend in each currency as it was paid, and ``total_spent`` is in the
    reporting currency (``ValueSettings.reporting_currency``, USD by default): each
    currency's subtotal is converted with the FX table's ``rate_to_reporting`` (reporting
    amount = amount × rate), rounded half-to-even to the thousandth once, and the subtotals
    are added. The reporting currency's own rate is 1 and need not be in the table. A
    currency without a rate does not stop the run: its values in the reporting currency
    (``total_spent_reporting`` per customer; ``total_spent``, AOV and CLV per contact
    who bought in it) are null, and ``currencies_without_rate`` names it so the caller
    can warn. CLV tiers compare the reporting-currency spend with the thresholds at both
    levels (null when it is unknown).

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

MONEY = pl.Decimal(38, 3)
RATE = pl.Decimal(38, 10)
# money is summed in thousandths of the unit: exact for every ISO 4217 currency (none has more than three decimals)
SCALE = 1000
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

SPEND_BY_CURRENCY = pl.List(pl.Struct({"currency_code": pl.String, "total_spent": MONEY}))

CONTACT_METRICS_SCHEMA: dict[str, pl.DataType] = {
    "contact_id": pl.String,
    "currency_code": pl.String,  # the reporting currency
    **_COMMON_METRICS,
    "shop_count": pl.UInt32,
    "spend_by_currency": SPEND_BY_CURRENCY,  # net spend per currency paid in, sorted by currency
}


class MetricsInputError(ValueError):
    """The orders or FX table cannot be used as given (a user-facing message)."""


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
    """The orders that count (see module docstring), with their net value in integer thousandths.

    Returns ``shop, customer_id, contact_id, processed_at, currency_code, net_mills``
    (net value in thousandths of the currency unit) and ``refunded`` (whether any refund
    was made). Summing whole thousandths as Int64 is exact (like Decimal) and much faster
    to aggregate.
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
            net_mills=(
                (pl.col("total_price").fill_null(zero) - pl.col("total_refunded").fill_null(zero)) * SCALE
            ).cast(pl.Int64),
            refunded=pl.col("total_refunded").fill_null(zero) > zero,
        )
        .collect()
    )


def exchange_rates(
    currencies: list[str], fx: pl.DataFrame | None, settings: ValueSettings
) -> dict[str, Decimal]:
    """The rate to the reporting currency of each of ``currencies`` that has one.

    The reporting currency's rate is 1; currencies without a rate are left out (see
    ``currencies_without_rate``). Raises ``MetricsInputError`` for a malformed FX table.
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
    return {c: rates[c] for c in currencies if c in rates}


def currencies_without_rate(
    orders: pl.DataFrame, fx: pl.DataFrame | None, settings: ValueSettings | None = None
) -> list[str]:
    """Currencies of ``orders`` the FX table cannot convert to the reporting currency, sorted.

    Their totals stay in their own currency; their reporting-currency values are null.
    """
    settings = settings or ValueSettings()
    if "currency_code" not in orders.columns:
        return []
    currencies = orders["currency_code"].drop_nulls().unique().to_list()
    return sorted(set(currencies) - set(exchange_rates(currencies, fx, settings)))


def _converted(mills: pl.Expr, rate: Decimal) -> pl.Expr:
    """Integer thousandths × rate, rounded half-to-even to whole thousandths."""
    if rate == 1:
        return mills
    return (mills.cast(pl.Decimal(38, 0)) * pl.lit(rate, dtype=RATE)).round(0).cast(pl.Int64)


def _money(mills: pl.Expr) -> pl.Expr:
    return (mills.cast(pl.Decimal(38, 0)) * pl.lit(Decimal("0.001"), dtype=MONEY)).cast(MONEY)


# --- metrics --------------------------------------------------------------------------------


def _derived(as_of: datetime, settings: ValueSettings) -> list[pl.Expr]:
    """Columns computed from the aggregates (``total_mills``; ``tier_mills`` in the reporting currency)."""
    cutoff = pl.lit(_as_of_utc(as_of), dtype=TIMESTAMP)
    days_since_last = (cutoff - pl.col("last_order_at")).dt.total_days()
    days_since_first = (cutoff - pl.col("first_order_at")).dt.total_days().clip(lower_bound=1)
    return [
        _money(pl.col("total_mills")).alias("total_spent"),
        (_money(pl.col("total_mills")).cast(pl.Decimal(38, 9)) / pl.col("order_count"))
        .round(3)
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
        _tier(pl.col("tier_mills"), settings).alias("clv_tier"),
    ]


def _tier(mills: pl.Expr, settings: ValueSettings) -> pl.Expr:
    # Thresholds in thousandths of the reporting currency; "above" is strict; unknown stays null.
    high = int(settings.clv_high * SCALE)
    medium = int(settings.clv_medium * SCALE)
    return (
        pl.when(mills.is_null())
        .then(pl.lit(None, dtype=pl.String))
        .when(mills > high)
        .then(pl.lit("high"))
        .when(mills > medium)
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
    reporting currency, null for a shop whose currency ``fx`` has no rate for.
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
        .agg(*_order_aggregates(), pl.col("net_mills").sum().alias("total_mills"))
        .join(shop_currencies.lazy(), on="shop", how="left")
    )
    # One currency per shop, so each customer's total is converted once.
    reporting_mills = pl.lit(None, dtype=pl.Int64)
    for currency, rate in rates.items():
        reporting_mills = (
            pl.when(pl.col("currency_code") == currency)
            .then(_converted(pl.col("total_mills"), rate))
            .otherwise(reporting_mills)
        )
    return (
        aggregated.with_columns(tier_mills=reporting_mills)
        .with_columns(*_derived(as_of, settings), total_spent_reporting=_money(pl.col("tier_mills")))
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
    # converted and rounded once, then the subtotals are added. The subtotals (and order
    # counts) are plain columns summed per contact: a filtered sum inside the aggregation
    # is much slower.
    currencies = sorted(counted["currency_code"].drop_nulls().unique().to_list())
    mills = {c: f"_mills_{i}" for i, c in enumerate(currencies)}
    counts = {c: f"_n_{i}" for i, c in enumerate(currencies)}
    converted = [_converted(pl.col(mills[c]), rates[c]) for c in currencies if c in rates]
    total = pl.sum_horizontal(converted) if converted else pl.lit(0, dtype=pl.Int64)
    unrated = [pl.col(counts[c]) > 0 for c in currencies if c not in rates]
    # the reporting total is unknown once any order is in a currency without a rate
    total = pl.when(pl.any_horizontal(unrated)).then(None).otherwise(total) if unrated else total
    # net spend per currency paid in, as a sorted list per contact (built long, then
    # gathered: a list of conditional structs per row is several times slower)
    spend = (
        counted.lazy()
        .filter(pl.col("contact_id").is_not_null())
        .group_by("contact_id", "currency_code")
        .agg(pl.col("net_mills").sum())
        .sort("currency_code")
        .group_by("contact_id")
        .agg(
            pl.struct(currency_code="currency_code", total_spent=_money(pl.col("net_mills"))).alias(
                "spend_by_currency"
            )
        )
    )
    metrics = (
        counted.lazy()
        .filter(pl.col("contact_id").is_not_null())
        .with_columns(
            *[
                pl.when(pl.col("currency_code") == c).then(pl.col("net_mills")).otherwise(0).alias(mills[c])
                for c in currencies
            ],
            *[(pl.col("currency_code") == c).cast(pl.UInt32).alias(counts[c]) for c in currencies],
        )
        .group_by("contact_id")
        .agg(
            *_order_aggregates(),
            pl.col([*mills.values(), *counts.values()]).sum(),
            pl.col("shop").n_unique().alias("shop_count"),
        )
        .with_columns(total_mills=total)
        .join(spend, on="contact_id", how="left")
        .with_columns(tier_mills=pl.col("total_mills"))
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
                spend_by_currency=pl.lit([], dtype=SPEND_BY_CURRENCY),
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

    Money is in the reporting currency (null for a contact who bought in a currency ``fx``
    has no rate for; ``spend_by_currency`` keeps every currency's own total). Orders
    without a ``contact_id`` are left out. When ``contacts`` (``contact_id``) is given,
    contacts without counted orders are included with zero orders. Row order is
    unspecified (sort if you need one).
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
        {c: float(r) for c, r in rates.items()}, default=None, return_dtype=pl.Float64
    )
    log = (
        counted.lazy()
        # Refunded down to nothing is no purchase; a free order (nothing to refund) is one.
        .filter((pl.col("net_mills") > 0) | ((pl.col("net_mills") == 0) & ~pl.col("refunded")))
        .select(
            key.alias("customer_id"),
            pl.col("processed_at").dt.date().alias("date"),
            (pl.col("net_mills") * rate / SCALE).alias("amount"),
        )
        .filter(pl.col("customer_id").is_not_null())
    )
    if set(_currencies(counted)) - set(rates):
        # a buyer with purchases in a currency without a rate has no value in the reporting
        # currency: left out of the fit (their CLV is null) rather than fitted on part of it
        log = log.filter(pl.col("amount").is_not_null().all().over("customer_id"))
    return log.collect()


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
    refund) are purchases of value 0. Buyers with any purchase in a currency without a
    rate are left out.
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
