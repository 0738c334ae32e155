"""The devstore's data model: the tables a generated world consists of.

This is the contract between the generator (which produces these tables as Polars
DataFrames) and the devstore server (which serves them through the Admin GraphQL API).
Every table carries a ``shop`` column holding the shop's ``<handle>.myshopify.com``
domain. Ids are Shopify's numeric ids (``legacyResourceId``); the GraphQL layer turns
them into ``gid://shopify/<Type>/<id>``. Money is a decimal string with two places
("12.50") in the shop's currency, with a ``*_presentment`` twin in the order's
presentment currency. Timestamps are timezone-aware UTC.

Ground truth (which hidden person stands behind every customer, guest order and
checkout) lives in ``truth`` and is never served by the API.
"""

from __future__ import annotations

import polars as pl

TS = pl.Datetime("us", "UTC")
MONEY = pl.String

SHOPS: dict[str, pl.DataType] = {
    "shop": pl.String,  # "<handle>.myshopify.com"
    "handle": pl.String,
    "name": pl.String,
    "email": pl.String,
    "currency_code": pl.String,  # ISO 4217, e.g. "USD"
    "country_code": pl.String,  # ISO 3166-1 alpha-2, default region for phones
    "plan": pl.String,  # "standard" | "advanced" | "plus"
    "primary_domain": pl.String,  # custom domain, e.g. "www.example-shop.com"
    "timezone": pl.String,  # IANA, e.g. "America/New_York"
    "created_at": TS,
}

CUSTOMERS: dict[str, pl.DataType] = {
    "shop": pl.String,
    "id": pl.Int64,
    "first_name": pl.String,
    "last_name": pl.String,
    "email": pl.String,  # nullable; as typed by the shopper (case/whitespace kept)
    "phone": pl.String,  # nullable; E.164 as Shopify stores it
    "tags": pl.List(pl.String),
    "note": pl.String,
    "state": pl.String,  # CustomerState: ENABLED | DISABLED | INVITED | DECLINED
    "verified_email": pl.Boolean,
    "tax_exempt": pl.Boolean,
    "locale": pl.String,
    "default_address_id": pl.Int64,  # nullable
    "email_consent_state": pl.String,  # CustomerEmailMarketingState, null when no email
    "email_consent_opt_in_level": pl.String,  # CustomerMarketingOptInLevel
    "email_consent_updated_at": TS,
    "sms_consent_state": pl.String,  # CustomerSmsMarketingState, null when no phone
    "sms_consent_opt_in_level": pl.String,
    "sms_consent_updated_at": TS,
    "sms_consent_collected_from": pl.String,  # CustomerConsentCollectedFrom: SHOPIFY | OTHER
    "created_at": TS,
    "updated_at": TS,
}

CUSTOMER_ADDRESSES: dict[str, pl.DataType] = {
    "shop": pl.String,
    "id": pl.Int64,
    "customer_id": pl.Int64,
    "first_name": pl.String,
    "last_name": pl.String,
    "company": pl.String,
    "address1": pl.String,
    "address2": pl.String,
    "city": pl.String,
    "province": pl.String,
    "province_code": pl.String,
    "zip": pl.String,
    "country": pl.String,
    "country_code": pl.String,
    "phone": pl.String,
}

ORDERS: dict[str, pl.DataType] = {
    "shop": pl.String,
    "id": pl.Int64,
    "name": pl.String,  # "#1001"
    "customer_id": pl.Int64,  # null for a guest checkout
    "email": pl.String,
    "phone": pl.String,
    "test": pl.Boolean,
    "currency_code": pl.String,  # shop currency
    "presentment_currency_code": pl.String,
    "subtotal_price": MONEY,
    "subtotal_price_presentment": MONEY,
    "total_price": MONEY,
    "total_price_presentment": MONEY,
    "total_tax": MONEY,
    "total_tax_presentment": MONEY,
    "total_discounts": MONEY,
    "total_discounts_presentment": MONEY,
    "total_shipping_price": MONEY,
    "total_shipping_price_presentment": MONEY,
    "total_refunded": MONEY,
    "total_refunded_presentment": MONEY,
    "financial_status": pl.String,  # OrderDisplayFinancialStatus
    "fulfillment_status": pl.String,  # OrderDisplayFulfillmentStatus
    "cancelled_at": TS,
    "cancel_reason": pl.String,  # OrderCancelReason
    "closed_at": TS,
    "processed_at": TS,
    "created_at": TS,
    "updated_at": TS,
    "tags": pl.List(pl.String),
    "source_name": pl.String,
    "billing_first_name": pl.String,
    "billing_last_name": pl.String,
    "billing_address1": pl.String,
    "billing_address2": pl.String,
    "billing_city": pl.String,
    "billing_province": pl.String,
    "billing_zip": pl.String,
    "billing_country_code": pl.String,
    "billing_phone": pl.String,
}

ORDER_LINE_ITEMS: dict[str, pl.DataType] = {
    "shop": pl.String,
    "id": pl.Int64,
    "order_id": pl.Int64,
    "product_id": pl.Int64,
    "variant_id": pl.Int64,
    "title": pl.String,
    "sku": pl.String,
    "quantity": pl.Int64,
    "original_unit_price": MONEY,
    "original_unit_price_presentment": MONEY,
    "discounted_total": MONEY,
    "discounted_total_presentment": MONEY,
}

REFUNDS: dict[str, pl.DataType] = {
    "shop": pl.String,
    "id": pl.Int64,
    "order_id": pl.Int64,
    "created_at": TS,
    "note": pl.String,
    "total_refunded": MONEY,
    "total_refunded_presentment": MONEY,
}

PRODUCTS: dict[str, pl.DataType] = {
    "shop": pl.String,
    "id": pl.Int64,
    "title": pl.String,
    "handle": pl.String,
    "product_type": pl.String,
    "vendor": pl.String,
    "status": pl.String,  # ProductStatus: ACTIVE | DRAFT | ARCHIVED
    "tags": pl.List(pl.String),
    "created_at": TS,
    "updated_at": TS,
}

VARIANTS: dict[str, pl.DataType] = {
    "shop": pl.String,
    "id": pl.Int64,
    "product_id": pl.Int64,
    "title": pl.String,
    "sku": pl.String,
    "price": MONEY,
    "inventory_quantity": pl.Int64,
    "created_at": TS,
    "updated_at": TS,
}

COLLECTIONS: dict[str, pl.DataType] = {
    "shop": pl.String,
    "id": pl.Int64,
    "title": pl.String,
    "handle": pl.String,
    "sort_order": pl.String,  # CollectionSortOrder
    "updated_at": TS,
}

COLLECTION_PRODUCTS: dict[str, pl.DataType] = {
    "shop": pl.String,
    "collection_id": pl.Int64,
    "product_id": pl.Int64,
    "position": pl.Int64,
}

ABANDONED_CHECKOUTS: dict[str, pl.DataType] = {
    "shop": pl.String,
    "id": pl.Int64,
    "customer_id": pl.Int64,  # nullable
    "email": pl.String,
    "phone": pl.String,
    "currency_code": pl.String,
    "total_price": MONEY,
    "abandoned_checkout_url": pl.String,
    "completed_at": TS,
    "created_at": TS,
    "updated_at": TS,
    "billing_first_name": pl.String,
    "billing_last_name": pl.String,
    "billing_address1": pl.String,
    "billing_city": pl.String,
    "billing_zip": pl.String,
    "billing_country_code": pl.String,
}

CHECKOUT_LINE_ITEMS: dict[str, pl.DataType] = {
    "shop": pl.String,
    "id": pl.Int64,
    "checkout_id": pl.Int64,
    "product_id": pl.Int64,
    "variant_id": pl.Int64,
    "title": pl.String,
    "quantity": pl.Int64,
    "original_unit_price": MONEY,
}

METAFIELDS: dict[str, pl.DataType] = {
    "shop": pl.String,
    "id": pl.Int64,
    "owner_type": pl.String,  # "Customer" (the only owner shopsync writes to)
    "owner_id": pl.Int64,
    "namespace": pl.String,
    "key": pl.String,
    "type": pl.String,  # e.g. "date_time", "single_line_text_field", "number_integer"
    "value": pl.String,
    "created_at": TS,
    "updated_at": TS,
}

TRUTH: dict[str, pl.DataType] = {
    "record_type": pl.String,  # "customer" | "order" | "checkout"
    "shop": pl.String,
    "record_id": pl.Int64,
    "person_id": pl.Int64,
}

ENGAGEMENT_EVENTS: dict[str, pl.DataType] = {
    "event_id": pl.String,
    "occurred_at": TS,
    # email_sent | email_delivered | email_open | email_click | email_unsubscribe |
    # sms_sent | sms_click | sms_inbound
    "type": pl.String,
    "email": pl.String,
    "phone": pl.String,
    "shop": pl.String,
    "campaign": pl.String,
    "body": pl.String,  # sms_inbound only
}

TABLES: dict[str, dict[str, pl.DataType]] = {
    "shops": SHOPS,
    "customers": CUSTOMERS,
    "customer_addresses": CUSTOMER_ADDRESSES,
    "orders": ORDERS,
    "order_line_items": ORDER_LINE_ITEMS,
    "refunds": REFUNDS,
    "products": PRODUCTS,
    "variants": VARIANTS,
    "collections": COLLECTIONS,
    "collection_products": COLLECTION_PRODUCTS,
    "abandoned_checkouts": ABANDONED_CHECKOUTS,
    "checkout_line_items": CHECKOUT_LINE_ITEMS,
    "metafields": METAFIELDS,
    "truth": TRUTH,
    "engagement_events": ENGAGEMENT_EVENTS,
}


def empty(table: str) -> pl.DataFrame:
    """An empty frame with the declared schema of ``table``."""
    return pl.DataFrame(schema=TABLES[table])


def conform(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Select and cast ``frame`` to the declared schema of ``table``, in declared order.

    Raises ``KeyError`` naming the missing columns, so a generator bug surfaces at once.
    """
    schema = TABLES[table]
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise KeyError(f"table {table!r} lacks columns {missing}")
    return frame.select([pl.col(c).cast(t) for c, t in schema.items()])
