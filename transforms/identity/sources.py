"""Identity records built from Shopify tables: customers, guest orders and guest checkouts.

Column names follow ``devstore.model`` (which mirrors the warehouse's ``shopify.*``
tables), so the same function serves the pipeline and the benchmark.
"""

from __future__ import annotations

import polars as pl

RECORD_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "record_type": pl.String,
    "record_id": pl.String,
    "first_name": pl.String,
    "last_name": pl.String,
    "email": pl.String,
    "phone": pl.String,
    "address1": pl.String,
    "address2": pl.String,
    "city": pl.String,
    "province": pl.String,
    "zip": pl.String,
    "country": pl.String,
    "source": pl.String,
}


def records_from_shopify(
    customers: pl.DataFrame,
    customer_addresses: pl.DataFrame | None = None,
    orders: pl.DataFrame | None = None,
    abandoned_checkouts: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One identity record per customer (with its default address) and per guest order/checkout.

    Orders and checkouts that belong to a customer account add nothing the customer record
    lacks, so only guest ones (``customer_id`` null) become records; they carry the
    order's email and phone (billing phone as fallback) and the billing name and address.
    """
    cust = customers
    if customer_addresses is not None and "default_address_id" in customers.columns:
        addr = customer_addresses.select(
            pl.col("id").alias("default_address_id"),
            pl.col("address1"),
            pl.col("address2"),
            pl.col("city"),
            pl.col("province"),
            pl.col("zip"),
            pl.col("country_code").alias("country"),
            pl.col("phone").alias("address_phone"),
        )
        cust = cust.join(addr, on="default_address_id", how="left")
    parts = [
        cust.select(
            "shop",
            pl.lit("customer").alias("record_type"),
            pl.col("id").cast(pl.String).alias("record_id"),
            "first_name",
            "last_name",
            "email",
            pl.coalesce("phone", "address_phone").alias("phone")
            if "address_phone" in cust.columns
            else "phone",
            *[
                pl.col(c) if c in cust.columns else pl.lit(None, pl.String).alias(c)
                for c in ("address1", "address2", "city", "province", "zip", "country")
            ],
            pl.lit("customers").alias("source"),
        )
    ]
    for frame, kind in ((orders, "order"), (abandoned_checkouts, "checkout")):
        if frame is None:
            continue
        guests = frame.filter(pl.col("customer_id").is_null())

        def col(name: str, frame_cols: list[str] = guests.columns) -> pl.Expr:
            return pl.col(name) if name in frame_cols else pl.lit(None, pl.String)

        parts.append(
            guests.select(
                "shop",
                pl.lit(kind).alias("record_type"),
                pl.col("id").cast(pl.String).alias("record_id"),
                col("billing_first_name").alias("first_name"),
                col("billing_last_name").alias("last_name"),
                col("email").alias("email"),
                pl.coalesce(col("phone"), col("billing_phone")).alias("phone"),
                col("billing_address1").alias("address1"),
                col("billing_address2").alias("address2"),
                col("billing_city").alias("city"),
                col("billing_province").alias("province"),
                col("billing_zip").alias("zip"),
                col("billing_country_code").alias("country"),
                pl.lit(f"{kind}s").alias("source"),
            )
        )
    return pl.concat([p.cast(RECORD_SCHEMA) for p in parts])
