"""The warehouse tables ``shopify.*`` and the landing-row shapes they are read from, declared once.

Two kinds of schema live here:

- ``WAREHOUSE``: every ``shopify.*`` table as a Polars schema (snake_case, numeric ids from
  the gids, money as ``Decimal(18, 3)`` in shop and presentment currency, timestamps as UTC
  ``Datetime``). The loader conforms every frame it writes to these, so the DuckDB types
  follow from them (dlt maps Decimal → DECIMAL(18,3), tz-aware Datetime → TIMESTAMPTZ, and
  list columns → JSON).
- ``LANDING``: per entity, the Polars schema that reads a landing batch (Shopify bulk-JSONL,
  camelCase, nested objects inline). One schema per entity file covers the parent type and
  every child type that appears in that file as ``__parentId`` lines; keys a line lacks read
  as null. Scalars Shopify sends as strings (``UnsignedInt64``, ``Decimal``, ``Money``,
  ``DateTime``) are read as strings and converted by the loader.
"""

from __future__ import annotations

import polars as pl

# Three decimals: Shopify amounts in BHD, IQD, JOD, KWD, LYD, OMR and TND carry three, and a
# cast to fewer silently truncates them.
MONEY = pl.Decimal(18, 3)
TS = pl.Datetime("us", "UTC")
TAGS = pl.List(pl.String)

# Lineage columns carried by every warehouse table.
LINEAGE: dict[str, pl.DataType] = {
    "_batch_id": pl.String,
    "_loaded_at": TS,
    "_deleted_at": TS,
}
# Parent tables also carry a content hash (row plus its children) so the loader can tell an
# unchanged row from an edited one without comparing every column in SQL.
ROW_HASH = "_row_hash"


def _money_pair(name: str) -> dict[str, pl.DataType]:
    return {name: MONEY, f"{name}_presentment": MONEY}


WAREHOUSE: dict[str, dict[str, pl.DataType]] = {
    "customers": {
        "shop": pl.String,
        "id": pl.Int64,
        "first_name": pl.String,
        "last_name": pl.String,
        "display_name": pl.String,
        "email": pl.String,
        "email_marketing_state": pl.String,
        "email_marketing_opt_in_level": pl.String,
        "email_consent_updated_at": TS,
        "phone": pl.String,
        "sms_marketing_state": pl.String,
        "sms_marketing_opt_in_level": pl.String,
        "sms_consent_updated_at": TS,
        "sms_consent_collected_from": pl.String,
        "tags": TAGS,
        "note": pl.String,
        "state": pl.String,
        "verified_email": pl.Boolean,
        "tax_exempt": pl.Boolean,
        "locale": pl.String,
        "number_of_orders": pl.Int64,
        "amount_spent": MONEY,
        "amount_spent_currency": pl.String,
        "default_address_id": pl.Int64,
        "created_at": TS,
        "updated_at": TS,
    },
    "customer_addresses": {
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
    },
    "customer_metafields": {
        "shop": pl.String,
        "id": pl.Int64,
        "customer_id": pl.Int64,
        "namespace": pl.String,
        "key": pl.String,
        "type": pl.String,
        "value": pl.String,
        "created_at": TS,
        "updated_at": TS,
    },
    "orders": {
        "shop": pl.String,
        "id": pl.Int64,
        "name": pl.String,
        "email": pl.String,
        "phone": pl.String,
        "test": pl.Boolean,
        "customer_id": pl.Int64,
        "currency_code": pl.String,
        "presentment_currency_code": pl.String,
        **_money_pair("subtotal_price"),
        **_money_pair("total_price"),
        **_money_pair("total_tax"),
        **_money_pair("total_discounts"),
        **_money_pair("total_shipping_price"),
        **_money_pair("total_refunded"),
        "financial_status": pl.String,
        "fulfillment_status": pl.String,
        "cancelled_at": TS,
        "cancel_reason": pl.String,
        "closed_at": TS,
        "processed_at": TS,
        "created_at": TS,
        "updated_at": TS,
        "tags": TAGS,
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
    },
    "order_line_items": {
        "shop": pl.String,
        "id": pl.Int64,
        "order_id": pl.Int64,
        "title": pl.String,
        "sku": pl.String,
        "quantity": pl.Int64,
        "product_id": pl.Int64,
        "variant_id": pl.Int64,
        **_money_pair("original_unit_price"),
        **_money_pair("discounted_total"),
    },
    "order_refunds": {
        "shop": pl.String,
        "id": pl.Int64,
        "order_id": pl.Int64,
        "created_at": TS,
        "note": pl.String,
        **_money_pair("total_refunded"),
    },
    "products": {
        "shop": pl.String,
        "id": pl.Int64,
        "title": pl.String,
        "handle": pl.String,
        "product_type": pl.String,
        "vendor": pl.String,
        "status": pl.String,
        "tags": TAGS,
        "created_at": TS,
        "updated_at": TS,
    },
    "product_variants": {
        "shop": pl.String,
        "id": pl.Int64,
        "product_id": pl.Int64,
        "title": pl.String,
        "sku": pl.String,
        "price": MONEY,
        "inventory_quantity": pl.Int64,
        "created_at": TS,
        "updated_at": TS,
    },
    "collections": {
        "shop": pl.String,
        "id": pl.Int64,
        "title": pl.String,
        "handle": pl.String,
        "sort_order": pl.String,
        "updated_at": TS,
    },
    "collection_products": {
        "shop": pl.String,
        "collection_id": pl.Int64,
        "product_id": pl.Int64,
    },
    "abandoned_checkouts": {
        "shop": pl.String,
        "id": pl.Int64,
        "abandoned_checkout_url": pl.String,
        "customer_id": pl.Int64,
        "currency_code": pl.String,
        "presentment_currency_code": pl.String,
        **_money_pair("total_price"),
        "completed_at": TS,
        "created_at": TS,
        "updated_at": TS,
        "billing_first_name": pl.String,
        "billing_last_name": pl.String,
        "billing_address1": pl.String,
        "billing_city": pl.String,
        "billing_zip": pl.String,
        "billing_country_code": pl.String,
        "billing_phone": pl.String,
    },
    "abandoned_checkout_line_items": {
        "shop": pl.String,
        "id": pl.Int64,
        "checkout_id": pl.Int64,
        "title": pl.String,
        "quantity": pl.Int64,
        "product_id": pl.Int64,
        "variant_id": pl.Int64,
        **_money_pair("original_unit_price"),
    },
}


def warehouse_schema(table: str, *, parent: bool) -> dict[str, pl.DataType]:
    """The full column set written to ``shopify.<table>``: business columns, hash, lineage."""
    schema = dict(WAREHOUSE[table])
    if parent:
        schema[ROW_HASH] = pl.Int64
    schema.update(LINEAGE)
    return schema


# ---- landing-row shapes (Shopify bulk JSONL) ------------------------------------------------

_AMOUNT = pl.Struct({"amount": pl.String, "currencyCode": pl.String})
MONEY_BAG = pl.Struct({"shopMoney": _AMOUNT, "presentmentMoney": _AMOUNT})
REF = pl.Struct({"id": pl.String})

# Keys every landing line may carry whatever its type.
_COMMON: dict[str, pl.DataType] = {
    "id": pl.String,
    "__parentId": pl.String,
    "__deleted": pl.Boolean,
    # when Shopify reported a delete (webhook delete markers), for sync-lag figures
    "__triggered_at": pl.String,
}

_CUSTOMER_ADDRESS = pl.Struct(
    {
        "id": pl.String,
        "firstName": pl.String,
        "lastName": pl.String,
        "company": pl.String,
        "address1": pl.String,
        "address2": pl.String,
        "city": pl.String,
        "province": pl.String,
        "provinceCode": pl.String,
        "zip": pl.String,
        "country": pl.String,
        "countryCodeV2": pl.String,
        "phone": pl.String,
    }
)

LANDING: dict[str, dict[str, pl.DataType]] = {
    "customers": {
        **_COMMON,
        # Customer
        "firstName": pl.String,
        "lastName": pl.String,
        "displayName": pl.String,
        "defaultEmailAddress": pl.Struct(
            {
                "emailAddress": pl.String,
                "marketingState": pl.String,
                "marketingOptInLevel": pl.String,
                "marketingUpdatedAt": pl.String,
            }
        ),
        "defaultPhoneNumber": pl.Struct(
            {
                "phoneNumber": pl.String,
                "smsMarketingConsent": pl.Struct(
                    {
                        "state": pl.String,
                        "optInLevel": pl.String,
                        "updatedAt": pl.String,
                        "collectedFrom": pl.String,
                    }
                ),
            }
        ),
        "emailMarketingConsent": pl.Struct(
            {"marketingState": pl.String, "marketingOptInLevel": pl.String, "consentUpdatedAt": pl.String}
        ),
        "smsMarketingConsent": pl.Struct(
            {
                "marketingState": pl.String,
                "marketingOptInLevel": pl.String,
                "consentUpdatedAt": pl.String,
                "consentCollectedFrom": pl.String,
            }
        ),
        "tags": TAGS,
        "note": pl.String,
        "state": pl.String,
        "verifiedEmail": pl.Boolean,
        "taxExempt": pl.Boolean,
        "locale": pl.String,
        "numberOfOrders": pl.String,
        "amountSpent": _AMOUNT,
        "defaultAddress": REF,
        "addresses": pl.List(_CUSTOMER_ADDRESS),
        "createdAt": pl.String,
        "updatedAt": pl.String,
        # Metafield child lines
        "namespace": pl.String,
        "key": pl.String,
        "type": pl.String,
        "value": pl.String,
    },
    "orders": {
        **_COMMON,
        # Order
        "name": pl.String,
        "email": pl.String,
        "phone": pl.String,
        "test": pl.Boolean,
        "customer": REF,
        "currencyCode": pl.String,
        "presentmentCurrencyCode": pl.String,
        "subtotalPriceSet": MONEY_BAG,
        "totalPriceSet": MONEY_BAG,
        "totalTaxSet": MONEY_BAG,
        "totalDiscountsSet": MONEY_BAG,
        "totalShippingPriceSet": MONEY_BAG,
        "totalRefundedSet": MONEY_BAG,
        "displayFinancialStatus": pl.String,
        "displayFulfillmentStatus": pl.String,
        "cancelledAt": pl.String,
        "cancelReason": pl.String,
        "closedAt": pl.String,
        "processedAt": pl.String,
        "createdAt": pl.String,
        "updatedAt": pl.String,
        "tags": TAGS,
        "sourceName": pl.String,
        "billingAddress": pl.Struct(
            {
                "firstName": pl.String,
                "lastName": pl.String,
                "address1": pl.String,
                "address2": pl.String,
                "city": pl.String,
                "province": pl.String,
                "zip": pl.String,
                "countryCodeV2": pl.String,
                "phone": pl.String,
            }
        ),
        "refunds": pl.List(
            pl.Struct(
                {"id": pl.String, "createdAt": pl.String, "note": pl.String, "totalRefundedSet": MONEY_BAG}
            )
        ),
        # LineItem child lines
        "title": pl.String,
        "sku": pl.String,
        "quantity": pl.Int64,
        "product": REF,
        "variant": REF,
        "originalUnitPriceSet": MONEY_BAG,
        "discountedTotalSet": MONEY_BAG,
    },
    "products": {
        **_COMMON,
        # Product
        "title": pl.String,
        "handle": pl.String,
        "productType": pl.String,
        "vendor": pl.String,
        "status": pl.String,
        "tags": TAGS,
        "createdAt": pl.String,
        "updatedAt": pl.String,
        # ProductVariant child lines
        "sku": pl.String,
        "price": pl.String,
        "inventoryQuantity": pl.Int64,
    },
    "collections": {
        **_COMMON,
        "title": pl.String,
        "handle": pl.String,
        "sortOrder": pl.String,
        "updatedAt": pl.String,
    },
    "abandoned_checkouts": {
        **_COMMON,
        # AbandonedCheckout
        "abandonedCheckoutUrl": pl.String,
        "customer": REF,
        "completedAt": pl.String,
        "createdAt": pl.String,
        "updatedAt": pl.String,
        "totalPriceSet": MONEY_BAG,
        "billingAddress": pl.Struct(
            {
                "firstName": pl.String,
                "lastName": pl.String,
                "address1": pl.String,
                "city": pl.String,
                "zip": pl.String,
                "countryCodeV2": pl.String,
                "phone": pl.String,
            }
        ),
        # AbandonedCheckoutLineItem child lines
        "title": pl.String,
        "quantity": pl.Int64,
        "product": REF,
        "variant": REF,
        "originalUnitPriceSet": MONEY_BAG,
    },
}
