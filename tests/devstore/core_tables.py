"""A tiny hand-built world for the devstore core tests (exact numbers, no generator noise)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from devstore import model

SHOP = "tiny.myshopify.com"
BASE = datetime(2026, 1, 1, tzinfo=UTC)
CUSTOMERS = 30


def _frame(table: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = model.TABLES[table]
    filled = [{c: r.get(c) for c in schema} for r in rows]
    return model.conform(table, pl.DataFrame(filled, schema=schema))


def tiny_tables(now: datetime | None = None) -> dict[str, pl.DataFrame]:
    """One shop "tiny": 30 customers (ids 1001..1030, updated an hour apart in reverse id order),
    addresses, 4 orders (one processed 90 days before ``now``), products, a collection,
    a checkout and metafields."""
    now = now or datetime.now(UTC)
    shops = [
        {
            "shop": SHOP,
            "handle": "tiny",
            "name": "Tiny Shop",
            "email": "owner@tiny.example",
            "currency_code": "EUR",
            "country_code": "DE",
            "plan": "standard",
            "primary_domain": "www.tiny.example",
            "timezone": "Europe/Berlin",
            "created_at": BASE - timedelta(days=400),
        }
    ]
    customers = []
    addresses = []
    for i in range(CUSTOMERS):
        cid = 1001 + i
        customers.append(
            {
                "shop": SHOP,
                "id": cid,
                "first_name": f"First{i}",
                "last_name": f"Last{i}",
                "email": f"c{i}@example.com" if i % 5 else None,
                "phone": f"+4915100000{i:03d}" if i % 2 == 0 else None,
                "tags": ["vip"] if i % 3 == 0 else [],
                "state": "ENABLED",
                "verified_email": True,
                "tax_exempt": False,
                "locale": "de",
                "default_address_id": 5000 + i if i < 10 else None,
                "email_consent_state": "SUBSCRIBED" if i % 5 else None,
                "email_consent_opt_in_level": "SINGLE_OPT_IN" if i % 5 else None,
                "email_consent_updated_at": BASE if i % 5 else None,
                "sms_consent_state": "NOT_SUBSCRIBED" if i % 2 == 0 else None,
                "sms_consent_opt_in_level": "SINGLE_OPT_IN" if i % 2 == 0 else None,
                "sms_consent_updated_at": BASE if i % 2 == 0 else None,
                "sms_consent_collected_from": "SHOPIFY" if i % 2 == 0 else None,
                "created_at": BASE + timedelta(days=i),
                # later ids were updated earlier, so UPDATED_AT order differs from ID order
                "updated_at": BASE + timedelta(days=60, hours=CUSTOMERS - i),
            }
        )
        if i < 10:
            addresses.append(
                {
                    "shop": SHOP,
                    "id": 5000 + i,
                    "customer_id": cid,
                    "first_name": f"First{i}",
                    "last_name": f"Last{i}",
                    "address1": f"{i} Hauptstrasse",
                    "city": "Berlin",
                    "zip": "10115",
                    "country": "Germany",
                    "country_code": "DE",
                }
            )
    recent = now - timedelta(days=5)
    old = now - timedelta(days=90)
    orders = []
    line_items = []
    for n, (cid, processed) in enumerate([(1001, recent), (1001, old), (1002, recent), (None, recent)]):
        oid = 7001 + n
        orders.append(
            {
                "shop": SHOP,
                "id": oid,
                "name": f"#{1001 + n}",
                "customer_id": cid,
                "email": "c1@example.com",
                "test": False,
                "currency_code": "EUR",
                "presentment_currency_code": "USD",
                "subtotal_price": "90.00",
                "subtotal_price_presentment": "99.00",
                "total_price": "100.00",
                "total_price_presentment": "110.00",
                "total_tax": "10.00",
                "total_tax_presentment": "11.00",
                "total_discounts": "0.00",
                "total_discounts_presentment": "0.00",
                "total_shipping_price": "0.00",
                "total_shipping_price_presentment": "0.00",
                "total_refunded": "20.00" if n == 0 else "0.00",
                "total_refunded_presentment": "22.00" if n == 0 else "0.00",
                "financial_status": "PARTIALLY_REFUNDED" if n == 0 else "PAID",
                "fulfillment_status": "FULFILLED",
                "processed_at": processed,
                "created_at": processed,
                "updated_at": processed + timedelta(hours=1),
                "tags": ["web"],
                "source_name": "web",
                "billing_first_name": "Ada",
                "billing_country_code": "DE",
            }
        )
        for k in range(3):
            line_items.append(
                {
                    "shop": SHOP,
                    "id": 80000 + n * 10 + k,
                    "order_id": oid,
                    "product_id": 9001,
                    "variant_id": 9101,
                    "title": "Mug",
                    "sku": "MUG-1",
                    "quantity": k + 1,
                    "original_unit_price": "30.00",
                    "original_unit_price_presentment": "33.00",
                    "discounted_total": "30.00",
                    "discounted_total_presentment": "33.00",
                }
            )
    refunds = [
        {
            "shop": SHOP,
            "id": 6001,
            "order_id": 7001,
            "created_at": recent,
            "note": "broken",
            "total_refunded": "20.00",
            "total_refunded_presentment": "22.00",
        }
    ]
    products = [
        {
            "shop": SHOP,
            "id": 9001 + k,
            "title": f"Product {k}",
            "handle": f"product-{k}",
            "product_type": "Mug",
            "vendor": "Tiny",
            "status": "ACTIVE",
            "tags": [],
            "created_at": BASE,
            "updated_at": BASE + timedelta(days=k),
        }
        for k in range(3)
    ]
    variants = [
        {
            "shop": SHOP,
            "id": 9101 + k,
            "product_id": 9001 + k // 2,
            "title": f"V{k}",
            "sku": f"SKU-{k}",
            "price": "30.00",
            "inventory_quantity": 5,
            "created_at": BASE,
            "updated_at": BASE,
        }
        for k in range(5)
    ]
    collections = [
        {
            "shop": SHOP,
            "id": 300,
            "title": "Mugs",
            "handle": "mugs",
            "sort_order": "MANUAL",
            "updated_at": BASE,
        }
    ]
    collection_products = [
        {"shop": SHOP, "collection_id": 300, "product_id": 9003, "position": 1},
        {"shop": SHOP, "collection_id": 300, "product_id": 9001, "position": 2},
    ]
    checkouts = [
        {
            "shop": SHOP,
            "id": 400,
            "customer_id": 1003,
            "email": "c3@example.com",
            "currency_code": "EUR",
            "total_price": "45.50",
            "abandoned_checkout_url": "https://tiny.example/checkouts/400",
            "created_at": BASE,
            "updated_at": BASE,
            "billing_first_name": "Cy",
            "billing_country_code": "DE",
        }
    ]
    checkout_items = [
        {
            "shop": SHOP,
            "id": 401,
            "checkout_id": 400,
            "product_id": 9001,
            "variant_id": 9102,
            "title": "Mug",
            "quantity": 2,
            "original_unit_price": "22.75",
        }
    ]
    metafields = [
        {
            "shop": SHOP,
            "id": 500 + k,
            "owner_type": "Customer",
            "owner_id": 1001,
            "namespace": "shopsync" if k < 2 else "other",
            "key": f"key{k}",
            "type": "single_line_text_field",
            "value": f"value{k}",
            "created_at": BASE,
            "updated_at": BASE,
        }
        for k in range(3)
    ]
    tables = {
        "shops": _frame("shops", shops),
        "customers": _frame("customers", customers),
        "customer_addresses": _frame("customer_addresses", addresses),
        "orders": _frame("orders", orders),
        "order_line_items": _frame("order_line_items", line_items),
        "refunds": _frame("refunds", refunds),
        "products": _frame("products", products),
        "variants": _frame("variants", variants),
        "collections": _frame("collections", collections),
        "collection_products": _frame("collection_products", collection_products),
        "abandoned_checkouts": _frame("abandoned_checkouts", checkouts),
        "checkout_line_items": _frame("checkout_line_items", checkout_items),
        "metafields": _frame("metafields", metafields),
    }
    return tables
