"""Sparse records created through the control API are served like Shopify would serve them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ops_support import Store, start_store


@pytest.fixture
def store() -> Iterator[Store]:
    s = start_store(customers=5)
    yield s
    s.stop()


def test_sparse_customer_order_and_product_read_back_without_errors(store: Store) -> None:
    handle = store.shop.handle
    customer = store.control(
        "POST", f"/shops/{handle}/records/customers", {"first_name": "Ann", "email": "ann@x.io"}
    )
    assert customer.status_code in (200, 201), customer.text
    order = store.control("POST", f"/shops/{handle}/records/orders", {"email": "ann@x.io"})
    assert order.status_code in (200, 201), order.text
    product = store.control("POST", f"/shops/{handle}/records/products", {"title": "Trail Mug"})
    assert product.status_code in (200, 201), product.text

    body = store.gql(
        "{ customers(first: 250, sortKey: UPDATED_AT, reverse: true) { nodes { firstName locale state tags } }"
        "  orders(first: 1, sortKey: CREATED_AT, reverse: true) { nodes { name processedAt test"
        "    totalPriceSet { shopMoney { amount currencyCode } } } }"
        "  products(first: 1, sortKey: CREATED_AT, reverse: true) { nodes { title handle status } } }"
    )
    assert "errors" not in body, body["errors"]
    ann = [c for c in body["data"]["customers"]["nodes"] if c["firstName"] == "Ann"]
    assert ann == [{"firstName": "Ann", "locale": "en", "state": "ENABLED", "tags": []}]
    order_node = body["data"]["orders"]["nodes"][0]
    assert order_node["name"].startswith("#") and order_node["processedAt"] and order_node["test"] is False
    assert order_node["totalPriceSet"]["shopMoney"]["amount"] in ("0.0", "0.00")
    assert body["data"]["products"]["nodes"][0] == {
        "title": "Trail Mug",
        "handle": "trail-mug",
        "status": "ACTIVE",
    }


def test_sparse_children_get_their_timestamps_and_read_back(store: Store) -> None:
    handle = store.shop.handle
    product = store.control(
        "POST",
        f"/shops/{handle}/records/products",
        {"title": "Camp Stool", "variants": [{"title": "Green", "price": "19.00", "sku": "CS-G"}]},
    )
    assert product.status_code in (200, 201), product.text
    order = store.control(
        "POST",
        f"/shops/{handle}/records/orders",
        {"email": "cs@x.io", "refunds": [{"total_refunded": "5.00", "note": "scratched"}]},
    )
    assert order.status_code in (200, 201), order.text
    body = store.gql(
        "{ products(first: 1, sortKey: CREATED_AT, reverse: true) { nodes { title"
        "    variants(first: 5) { nodes { title sku createdAt updatedAt } } } }"
        "  orders(first: 1, sortKey: CREATED_AT, reverse: true) { nodes { refunds { createdAt note } } } }"
    )
    assert "errors" not in body, body["errors"]
    (variant,) = body["data"]["products"]["nodes"][0]["variants"]["nodes"]
    assert variant["title"] == "Green" and variant["createdAt"] and variant["updatedAt"]
    (refund,) = body["data"]["orders"]["nodes"][0]["refunds"]
    assert refund["note"] == "scratched" and refund["createdAt"]
