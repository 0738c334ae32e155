"""Warehouse tables reshaped into the inputs the transforms read.

The warehouse names columns after Shopify's fields (``email_marketing_state``); the
transforms take their own frames (``consent.shopify_observations`` reads
``email_consent_state``; metrics read orders with a ``contact_id``). These pure functions
are the only place that bridges the two, so the Dagster assets only wire.
"""

from __future__ import annotations

import polars as pl

from transforms import consent as consent_tf
from transforms.identity.normalise import country_expr, normalise_emails, normalise_phones


def store_regions(records: pl.DataFrame, known: dict[str, str] | None = None) -> dict[str, str]:
    """Each store's country (ISO alpha-2): the default region of phones typed without a country code.

    ``known`` (a store's configured country, or Shopify's shop details) wins; otherwise the
    commonest country of the store's identity records' addresses (``shop``, ``country``),
    ties to the alphabetically first. Stores with no known country and no addresses are left
    out, so the caller's ``default_region`` applies to them.
    """
    counted = (
        records.select("shop", country_expr("country").alias("code"))
        .drop_nulls()
        .group_by("shop", "code")
        .len()
        .sort(["shop", "len", "code"], descending=[False, True, False])
        .unique("shop", keep="first", maintain_order=True)
    )
    regions = dict(zip(counted["shop"].to_list(), counted["code"].to_list(), strict=True))
    return regions | {shop: code.upper() for shop, code in (known or {}).items() if code}


def _regions(frame: pl.DataFrame, default_region: str, shop_regions: dict[str, str] | None) -> pl.Series:
    """Per row: the address country, else the store's country, else ``default_region``."""
    by_shop = pl.col("shop").replace_strict(shop_regions or {}, default=None, return_dtype=pl.String)
    own = pl.col("country") if "country" in frame.columns else pl.lit(None, dtype=pl.String)
    return frame.select(pl.coalesce(own, by_shop, pl.lit(default_region)).alias("region"))["region"]


def orders_with_contacts(orders: pl.DataFrame, identities: pl.DataFrame) -> pl.DataFrame:
    """Orders with the ``contact_id`` of their customer (or, for guest orders, of the order itself)."""
    ids = identities.select("shop", "record_type", "record_id", "contact_id")
    by_customer = ids.filter(pl.col("record_type") == "customer").select(
        "shop", pl.col("record_id").alias("_customer_key"), pl.col("contact_id").alias("_c1")
    )
    by_order = ids.filter(pl.col("record_type") == "order").select(
        "shop", pl.col("record_id").alias("_order_key"), pl.col("contact_id").alias("_c2")
    )
    return (
        orders.with_columns(
            _customer_key=pl.col("customer_id").cast(pl.String), _order_key=pl.col("id").cast(pl.String)
        )
        .join(by_customer, on=["shop", "_customer_key"], how="left")
        .join(by_order, on=["shop", "_order_key"], how="left")
        .with_columns(contact_id=pl.coalesce("_c1", "_c2"))
        .drop("_customer_key", "_order_key", "_c1", "_c2")
        # a stable row order, so the same warehouse gives the transforms the same input
        .sort("shop", "id")
    )


def customer_keys(
    customers: pl.DataFrame, default_region: str, shop_regions: dict[str, str] | None = None
) -> pl.DataFrame:
    """``shop, customer_id, email_norm, phone_e164`` for matching engagement events to customers.

    A phone without a country code is read in the customer's address country, else the
    store's (``shop_regions``), else ``default_region``.
    """
    phone = customers.select(pl.coalesce("phone", "address_phone").alias("p"))["p"]
    return pl.DataFrame(
        {
            "shop": customers["shop"],
            "customer_id": customers["id"],
            "email_norm": normalise_emails(customers["email"])["email_norm"],
            "phone_e164": normalise_phones(phone, _regions(customers, default_region, shop_regions)),
        }
    )


def engagement_frame(
    events: pl.DataFrame, default_region: str, shop_regions: dict[str, str] | None = None
) -> pl.DataFrame:
    """Engagement events with normalised email and phone (``consent.ENGAGEMENT_SCHEMA``).

    A phone without a country code is read in the event's store's country, else ``default_region``.
    """
    return pl.DataFrame(
        {
            "event_id": events["event_id"],
            "occurred_at": events["occurred_at"],
            "type": events["type"],
            "shop": events["shop"],
            "email_norm": normalise_emails(events["email"])["email_norm"],
            "phone_e164": normalise_phones(
                events["phone"], _regions(events.select("shop"), default_region, shop_regions)
            ),
            "body": events["body"],
        }
    ).cast(consent_tf.ENGAGEMENT_SCHEMA)  # type: ignore[arg-type]


def shopify_consent_columns(customers: pl.DataFrame) -> pl.DataFrame:
    """Warehouse customer columns renamed to what ``consent.shopify_observations`` reads."""
    return customers.select(
        "shop",
        pl.col("id").alias("customer_id"),
        pl.col("email_marketing_state").alias("email_consent_state"),
        pl.col("email_marketing_opt_in_level").alias("email_consent_opt_in_level"),
        pl.col("email_consent_updated_at"),
        pl.col("sms_marketing_state").alias("sms_consent_state"),
        pl.col("sms_marketing_opt_in_level").alias("sms_consent_opt_in_level"),
        pl.col("sms_consent_updated_at"),
    )


def drop_disabled_consent(consent_columns: pl.DataFrame, store_settings: pl.DataFrame) -> pl.DataFrame:
    """Null the Shopify consent of stores whose email or SMS consent toggle is off.

    ``consent_columns`` as :func:`shopify_consent_columns` returns; ``store_settings`` has
    ``shop, email_consent, sms_consent`` (a store without a row imports both). A nulled
    state yields no observation, so Shopify's state for that channel is not imported.
    """
    toggles = store_settings.select("shop", "email_consent", "sms_consent")
    joined = consent_columns.join(toggles, on="shop", how="left")
    columns = []
    for channel in ("email", "sms"):
        keep = pl.col(f"{channel}_consent").fill_null(True)
        for suffix in ("state", "opt_in_level", "updated_at"):
            name = f"{channel}_consent_{suffix}"
            columns.append(pl.when(keep).then(pl.col(name)).otherwise(None).alias(name))
    return joined.with_columns(columns).select(consent_columns.columns)


def with_customer_lists(contacts: pl.DataFrame, store_settings: pl.DataFrame) -> pl.DataFrame:
    """``contacts`` plus ``customer_lists``: the sorted lists of the stores each person is in."""
    lists = store_settings.filter(pl.col("customer_list").is_not_null()).select("shop", "customer_list")
    if contacts.height == 0:
        return contacts.with_columns(pl.lit(None, dtype=pl.List(pl.String)).alias("customer_lists"))
    per_contact = (
        contacts.select("contact_id", "shops")
        .explode("shops")
        .join(lists, left_on="shops", right_on="shop", how="inner")
        .group_by("contact_id")
        .agg(pl.col("customer_list").unique().sort().alias("customer_lists"))
    )
    return contacts.join(per_contact, on="contact_id", how="left").with_columns(
        pl.col("customer_lists").fill_null(pl.lit([], dtype=pl.List(pl.String)))
    )
