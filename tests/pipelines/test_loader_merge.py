"""The loader against real DuckDB files: merge, child replacement, ordering, deletes, money, errors."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipelines.landing import is_loaded, pending_batches, write_batch
from pipelines.loader import LoadError, load_pending, warehouse_counts

SHOP = "alpha-store"
OTHER = "beta-store"


def money(amount: str, presentment: str | None = None, cur: str = "USD", pcur: str = "EUR") -> dict[str, Any]:
    return {
        "shopMoney": {"amount": amount, "currencyCode": cur},
        "presentmentMoney": {"amount": presentment or amount, "currencyCode": pcur},
    }


def order(
    oid: int, updated: str = "2025-01-01T10:00:00Z", total: str = "10.00", **extra: Any
) -> dict[str, Any]:
    row = {
        "id": f"gid://shopify/Order/{oid}",
        "legacyResourceId": str(oid),
        "name": f"#{oid}",
        "email": f"buyer{oid}@example.com",
        "test": False,
        "customer": {"id": "gid://shopify/Customer/77"},
        "currencyCode": "USD",
        "presentmentCurrencyCode": "EUR",
        "subtotalPriceSet": money(total, "9.31"),
        "totalPriceSet": money(total, "9.31"),
        "totalTaxSet": money("0.00"),
        "totalDiscountsSet": money("0.00"),
        "totalShippingPriceSet": money("0.00"),
        "totalRefundedSet": money("0.00"),
        "displayFinancialStatus": "PAID",
        "displayFulfillmentStatus": "FULFILLED",
        "createdAt": "2025-01-01T09:00:00Z",
        "updatedAt": updated,
        "processedAt": "2025-01-01T09:00:00Z",
        "tags": ["vip", "web"],
        "billingAddress": {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "city": "London",
            "countryCodeV2": "GB",
        },
        "refunds": [],
    }
    row.update(extra)
    return row


def line_item(lid: int, oid: int, qty: int = 1, price: str = "5.00") -> dict[str, Any]:
    return {
        "id": f"gid://shopify/LineItem/{lid}",
        "title": f"Item {lid}",
        "sku": f"SKU-{lid}",
        "quantity": qty,
        "product": {"id": "gid://shopify/Product/5"},
        "variant": {"id": "gid://shopify/ProductVariant/6"},
        "originalUnitPriceSet": money(price),
        "discountedTotalSet": money(price),
        "__parentId": f"gid://shopify/Order/{oid}",
    }


def customer(cid: int, updated: str = "2025-01-01T10:00:00Z", **extra: Any) -> dict[str, Any]:
    row = {
        "id": f"gid://shopify/Customer/{cid}",
        "firstName": "Grace",
        "lastName": "Hopper",
        "defaultEmailAddress": {
            "emailAddress": f"c{cid}@example.com",
            "marketingState": "SUBSCRIBED",
            "marketingOptInLevel": "SINGLE_OPT_IN",
            "marketingUpdatedAt": "2024-12-01T00:00:00Z",
        },
        "defaultPhoneNumber": {"phoneNumber": "+14155550100"},
        "smsMarketingConsent": {"marketingState": "NOT_SUBSCRIBED", "consentUpdatedAt": None},
        "tags": ["a"],
        "numberOfOrders": "3",
        "amountSpent": {"amount": "123.45", "currencyCode": "USD"},
        "defaultAddress": {"id": f"gid://shopify/MailingAddress/{cid}1?model_name=CustomerAddress"},
        "addresses": [
            {"id": f"gid://shopify/MailingAddress/{cid}1?model_name=CustomerAddress", "city": "Paris"},
            {"id": f"gid://shopify/MailingAddress/{cid}2?model_name=CustomerAddress", "city": "Lyon"},
        ],
        "createdAt": "2024-01-01T00:00:00Z",
        "updatedAt": updated,
    }
    row.update(extra)
    return row


def land(
    root: Path, entity: str, rows: list[Any], *, shop: str = SHOP, mode: str = "bulk", complete: bool = False
):
    return write_batch(root, shop, entity, mode, rows, complete=complete)  # type: ignore[arg-type]


def snapshot(warehouse: Path, table: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(f"SELECT * FROM shopify.{table} ORDER BY ALL").fetchall()
    finally:
        con.close()


def query(warehouse: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "wh" / "warehouse.duckdb", tmp_path / "landing"


def test_loading_twice_leaves_identical_tables(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    m = land(root, "orders", [order(1), line_item(11, 1), line_item(12, 1), order(2), line_item(21, 2)])
    first = load_pending(warehouse, root)
    assert first.batches == [m.batch_id] and first.inserted == 2
    assert first.rows == {"orders": 2, "order_line_items": 3, "order_refunds": 0}
    assert pending_batches(root) == []
    before = {t: snapshot(warehouse, t) for t in ("orders", "order_line_items", "order_refunds")}

    again = load_pending(warehouse, root, batch_ids=[m.batch_id])
    assert again.unchanged == 2 and again.inserted == again.updated == 0 and again.rows == {}
    assert {t: snapshot(warehouse, t) for t in before} == before
    assert query(warehouse, "SELECT count(*), count(DISTINCT (shop, id)) FROM shopify.orders") == [(2, 2)]
    assert query(warehouse, "SELECT count(*), count(DISTINCT (shop, id)) FROM shopify.order_line_items") == [
        (3, 3)
    ]
    assert warehouse_counts(warehouse)["orders"] == 2
    # A store's first load appends: nothing was staged.
    assert query(
        warehouse, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'shopify_staging'"
    ) == [(0,)]


def test_edited_order_loses_removed_line_item_and_zero_children(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    land(root, "orders", [order(1), line_item(11, 1), line_item(12, 1), order(2), line_item(21, 2)])
    load_pending(warehouse, root)
    # Order 1 edited: item 12 removed, item 13 added; order 2 edited down to no items.
    land(
        root,
        "orders",
        [
            order(1, "2025-01-02T00:00:00Z"),
            line_item(11, 1, qty=2),
            line_item(13, 1),
            order(2, "2025-01-02T00:00:00Z"),
        ],
        mode="incremental",
    )
    result = load_pending(warehouse, root)
    assert result.updated == 2
    items = query(warehouse, "SELECT order_id, id, quantity FROM shopify.order_line_items ORDER BY ALL")
    assert items == [(1, 11, 2), (1, 13, 1)]
    # dlt's staging copy is emptied after each merge.
    assert query(warehouse, "SELECT count(*) FROM shopify_staging.order_line_items") == [(0,)]


def test_partial_bulk_data_adds_children_and_never_removes_them(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    land(root, "orders", [order(1), line_item(11, 1), line_item(12, 1)], complete=True)
    load_pending(warehouse, root)
    # A failed job's partial file: order 1 updated, its line lines cut after one item (and
    # its refund, inline in the order's own line, is whole).
    refund = {"id": "gid://shopify/Refund/900", "createdAt": "2025-01-03T00:00:00Z", "note": "late"}
    write_batch(
        root,
        SHOP,
        "orders",
        "bulk",
        [order(1, "2025-01-02T00:00:00Z", refunds=[refund]), line_item(12, 1, qty=3)],
        partial=True,
    )
    result = load_pending(warehouse, root)
    assert result.updated == 1
    assert query(warehouse, "SELECT id, quantity FROM shopify.order_line_items ORDER BY id") == [
        (11, 1),
        (12, 3),
    ]
    assert query(warehouse, "SELECT id FROM shopify.order_refunds") == [(900,)]
    # The next complete export is the truth again: item 11 really was removed.
    land(
        root,
        "orders",
        [order(1, "2025-01-02T00:00:00Z", refunds=[refund]), line_item(12, 1, qty=3)],
        complete=True,
    )
    assert load_pending(warehouse, root).updated == 1
    assert query(warehouse, "SELECT id, quantity FROM shopify.order_line_items") == [(12, 3)]


def test_refunds_and_addresses_follow_their_parent(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    refund = {
        "id": "gid://shopify/Refund/900",
        "createdAt": "2025-01-03T00:00:00Z",
        "note": "damaged",
        "totalRefundedSet": money("4.99", "4.65"),
    }
    land(root, "orders", [order(1, refunds=[refund])])
    land(root, "customers", [customer(5)])
    load_pending(warehouse, root)
    assert query(
        warehouse,
        "SELECT id, order_id, total_refunded, total_refunded_presentment FROM shopify.order_refunds",
    ) == [(900, 1, Decimal("4.99"), Decimal("4.65"))]
    assert query(warehouse, "SELECT id, customer_id, city FROM shopify.customer_addresses ORDER BY id") == [
        (51, 5, "Paris"),
        (52, 5, "Lyon"),
    ]
    land(root, "orders", [order(1, "2025-01-04T00:00:00Z", refunds=[])], mode="webhook")
    land(root, "customers", [customer(5, "2025-01-04T00:00:00Z", addresses=[])], mode="webhook")
    load_pending(warehouse, root)
    assert query(warehouse, "SELECT count(*) FROM shopify.order_refunds") == [(0,)]
    assert query(warehouse, "SELECT count(*) FROM shopify.customer_addresses") == [(0,)]


def test_older_row_does_not_overwrite_newer(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    land(root, "orders", [order(1, "2025-02-01T00:00:00Z", total="20.00"), line_item(11, 1)])
    load_pending(warehouse, root)
    # A late webhook carrying an older version with different items.
    land(root, "orders", [order(1, "2025-01-01T00:00:00Z", total="10.00"), line_item(99, 1)], mode="webhook")
    result = load_pending(warehouse, root)
    assert result.stale == 1 and result.rows == {}
    assert query(warehouse, "SELECT total_price FROM shopify.orders") == [(Decimal("20.00"),)]
    assert query(warehouse, "SELECT id FROM shopify.order_line_items") == [(11,)]


def test_latest_version_within_one_batch_wins(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    land(
        root,
        "orders",
        [order(1, "2025-01-05T00:00:00Z", total="50.00"), order(1, "2025-01-01T00:00:00Z", total="10.00")],
        mode="webhook",
    )
    load_pending(warehouse, root)
    assert query(warehouse, "SELECT count(*), max(total_price) FROM shopify.orders") == [
        (1, Decimal("50.00"))
    ]


def test_reconcile_marks_deletes_and_reappearing_row_clears_them(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    land(root, "orders", [order(1), line_item(11, 1), order(2), line_item(21, 2), order(3)])
    load_pending(warehouse, root)
    ids = [{"id": "gid://shopify/Order/1"}, {"id": "gid://shopify/Order/3"}]
    land(root, "orders", ids, mode="reconcile", complete=True)
    result = load_pending(warehouse, root)
    assert result.deleted == 1
    assert query(warehouse, "SELECT id FROM shopify.orders WHERE _deleted_at IS NOT NULL") == [(2,)]
    assert query(warehouse, "SELECT id FROM shopify.order_line_items WHERE _deleted_at IS NOT NULL") == [
        (21,)
    ]
    assert warehouse_counts(warehouse)["orders"] == 2
    assert warehouse_counts(warehouse)["order_line_items"] == 1
    stamped = query(warehouse, "SELECT _deleted_at FROM shopify.orders WHERE id = 2")

    # Re-loading the reconciliation keeps the first stamp.
    land(root, "orders", ids, mode="reconcile", complete=True)
    assert load_pending(warehouse, root).deleted == 0
    assert query(warehouse, "SELECT _deleted_at FROM shopify.orders WHERE id = 2") == stamped

    land(root, "orders", [*ids, {"id": "gid://shopify/Order/2"}], mode="reconcile", complete=True)
    assert load_pending(warehouse, root).undeleted == 1
    assert query(warehouse, "SELECT count(*) FROM shopify.orders WHERE _deleted_at IS NOT NULL") == [(0,)]
    assert query(
        warehouse, "SELECT count(*) FROM shopify.order_line_items WHERE _deleted_at IS NOT NULL"
    ) == [(0,)]


def test_incomplete_reconcile_batch_marks_no_deletes(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    land(root, "orders", [order(1), line_item(11, 1), order(2), line_item(21, 2)])
    load_pending(warehouse, root)
    # A reconciliation cut short (complete=False) lists only some ids: absence proves nothing.
    land(root, "orders", [{"id": "gid://shopify/Order/1"}], mode="reconcile", complete=False)
    result = load_pending(warehouse, root)
    assert (result.deleted, result.undeleted) == (0, 0)
    assert [warehouse_counts(warehouse)[t] for t in ("orders", "order_line_items")] == [2, 2]
    # The same list, declared complete, does stamp the absent order and its line items.
    land(root, "orders", [{"id": "gid://shopify/Order/1"}], mode="reconcile", complete=True)
    assert load_pending(warehouse, root).deleted == 1
    assert [warehouse_counts(warehouse)[t] for t in ("orders", "order_line_items")] == [1, 1]


def test_listing_marks_nothing_that_changed_after_it_started(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    land(root, "customers", [customer(1), customer(2), customer(4)], complete=True)
    load_pending(warehouse, root)
    listing_started = datetime.now(UTC).isoformat()
    # Customer 4 was deleted before a reconciliation listing started, customer 2 while it
    # ran (its webhook marker loads first); customer 3 was created while it ran.
    land(root, "customers", [{"id": "gid://shopify/Customer/2", "__deleted": True}], mode="webhook")
    land(root, "customers", [customer(3, "2025-06-01T12:05:00Z")], mode="incremental")
    ids = [{"id": f"gid://shopify/Customer/{n}"} for n in (1, 2)]
    write_batch(root, SHOP, "customers", "reconcile", ids, complete=True, window_to=listing_started)
    result = load_pending(warehouse, root)
    assert result.deleted == 2 and result.undeleted == 0
    assert query(warehouse, "SELECT id, _deleted_at IS NOT NULL FROM shopify.customers ORDER BY id") == [
        (1, False),
        (2, True),
        (3, False),
        (4, True),
    ]


def test_complete_bulk_export_marks_absent_rows_and_webhook_delete_marker(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    land(root, "customers", [customer(1), customer(2), customer(3)])
    load_pending(warehouse, root)
    land(root, "customers", [customer(1), customer(2)], complete=True)
    assert load_pending(warehouse, root).deleted == 1
    land(root, "customers", [{"id": "gid://shopify/Customer/1", "__deleted": True}], mode="webhook")
    assert load_pending(warehouse, root).deleted == 1
    assert query(warehouse, "SELECT id FROM shopify.customers WHERE _deleted_at IS NULL") == [(2,)]
    # Customer 3 comes back in a later export: the rewrite clears its stamp.
    land(root, "customers", [customer(3, "2025-03-01T00:00:00Z")], mode="incremental")
    load_pending(warehouse, root)
    assert query(warehouse, "SELECT id FROM shopify.customers WHERE _deleted_at IS NULL ORDER BY id") == [
        (2,),
        (3,),
    ]


def test_money_is_decimal_and_exact(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    rows = [order(i, total="0.10") for i in range(1, 11)] + [order(11, total="99999999.99")]
    land(root, "orders", rows)
    load_pending(warehouse, root)
    types = dict(
        query(
            warehouse,
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'orders'",
        )
    )
    assert types["total_price"] == "DECIMAL(18,3)" and types["total_price_presentment"] == "DECIMAL(18,3)"
    assert types["updated_at"] == "TIMESTAMP WITH TIME ZONE"
    assert query(warehouse, "SELECT sum(total_price) FROM shopify.orders WHERE id <= 10") == [
        (Decimal("1.00"),)
    ]
    assert query(
        warehouse, "SELECT total_price, total_price_presentment FROM shopify.orders WHERE id = 11"
    ) == [(Decimal("99999999.99"), Decimal("9.31"))]
    # Line-item money is decimal too, summed exactly.
    land(root, "orders", [order(20), *[line_item(200 + i, 20, price="0.01") for i in range(7)]])
    load_pending(warehouse, root)
    assert query(warehouse, "SELECT sum(original_unit_price) FROM shopify.order_line_items") == [
        (Decimal("0.07"),)
    ]
    # Three-decimal currencies (KWD, BHD, ...) keep their third decimal.
    land(root, "orders", [order(30, total="12.345")])
    load_pending(warehouse, root)
    assert query(warehouse, "SELECT total_price FROM shopify.orders WHERE id = 30") == [(Decimal("12.345"),)]


def test_two_shops_do_not_interfere(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    land(root, "orders", [order(1), line_item(11, 1), order(2)], shop=SHOP)
    land(root, "orders", [order(1, total="77.00"), line_item(12, 1)], shop=OTHER)
    load_pending(warehouse, root)
    # A complete export of the other shop must not delete the first shop's rows.
    land(root, "orders", [{"id": "gid://shopify/Order/1"}], shop=OTHER, mode="reconcile", complete=True)
    load_pending(warehouse, root, shop=OTHER)
    assert query(
        warehouse, "SELECT shop, id, total_price FROM shopify.orders WHERE _deleted_at IS NULL ORDER BY ALL"
    ) == [
        (SHOP, 1, Decimal("10.00")),
        (SHOP, 2, Decimal("10.00")),
        (OTHER, 1, Decimal("77.00")),
    ]
    assert query(warehouse, "SELECT shop, id FROM shopify.order_line_items ORDER BY ALL") == [
        (SHOP, 11),
        (OTHER, 12),
    ]


def test_malformed_line_names_batch_and_line_and_stops_later_batches(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    good = land(root, "orders", [order(1)])
    bad = land(
        root, "orders", [order(2), line_item(21, 2), '{"id": "gid://shopify/LineItem/22", "quantity": ']
    )
    later = land(root, "orders", [order(3)])
    with pytest.raises(LoadError) as caught:
        load_pending(warehouse, root)
    err = caught.value
    assert err.batch_id == bad.batch_id and err.line == 3
    assert bad.batch_id in str(err) and "line 3" in str(err) and "Traceback" not in str(err)
    assert err.loaded.batches == [good.batch_id]
    assert query(warehouse, "SELECT id FROM shopify.orders") == [(1,)]
    assert [m.batch_id for m, _ in pending_batches(root)] == [bad.batch_id, later.batch_id]


def test_wrongly_typed_value_is_reported_with_its_line(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    bad = land(root, "orders", [order(1), line_item(11, 1), {**line_item(12, 1), "quantity": "two"}])
    with pytest.raises(LoadError, match=r"line 3: 'quantity' should be int") as caught:
        load_pending(warehouse, root)
    assert caught.value.batch_id == bad.batch_id
    assert not warehouse.exists() or query(
        warehouse, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'orders'"
    ) == [(0,)]
    assert not is_loaded(root / SHOP / "orders" / bad.data_path_name)


def test_products_collections_checkouts_and_metafields(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    land(
        root,
        "products",
        [
            {
                "id": "gid://shopify/Product/5",
                "title": "Mug",
                "status": "ACTIVE",
                "tags": [],
                "updatedAt": "2025-01-01T00:00:00Z",
            },
            {
                "id": "gid://shopify/ProductVariant/6",
                "price": "12.50",
                "inventoryQuantity": 4,
                "__parentId": "gid://shopify/Product/5",
            },
        ],
    )
    land(
        root,
        "collections",
        [
            {"id": "gid://shopify/Collection/8", "title": "Kitchen", "updatedAt": "2025-01-01T00:00:00Z"},
            {"id": "gid://shopify/Product/5", "__parentId": "gid://shopify/Collection/8"},
        ],
    )
    land(
        root,
        "abandoned_checkouts",
        [
            {
                "id": "gid://shopify/AbandonedCheckout/3",
                "customer": None,
                "totalPriceSet": money("12.50", "11.64"),
                "updatedAt": "2025-01-01T00:00:00Z",
            },
            {
                "id": "gid://shopify/AbandonedCheckoutLineItem/4",
                "quantity": 1,
                "originalUnitPriceSet": money("12.50"),
                "__parentId": "gid://shopify/AbandonedCheckout/3",
            },
        ],
    )
    land(
        root,
        "customers",
        [
            customer(1),
            {
                "id": "gid://shopify/Metafield/70",
                "namespace": "custom",
                "key": "tier",
                "type": "single_line_text_field",
                "value": "gold",
                "__parentId": "gid://shopify/Customer/1",
            },
        ],
    )
    result = load_pending(warehouse, root)
    assert result.inserted == 4
    counts = warehouse_counts(warehouse)
    assert counts["product_variants"] == 1 and counts["collection_products"] == 1
    assert counts["abandoned_checkout_line_items"] == 1 and counts["customer_metafields"] == 1
    assert query(warehouse, "SELECT price FROM shopify.product_variants") == [(Decimal("12.50"),)]
    assert query(warehouse, "SELECT collection_id, product_id FROM shopify.collection_products") == [(8, 5)]
    assert query(
        warehouse, "SELECT currency_code, total_price_presentment FROM shopify.abandoned_checkouts"
    ) == [("USD", Decimal("11.64"))]
    row = query(
        warehouse,
        "SELECT email, phone, email_marketing_state, number_of_orders, amount_spent, default_address_id,"
        " tags FROM shopify.customers",
    )
    assert row == [("c1@example.com", "+14155550100", "SUBSCRIBED", 3, Decimal("123.45"), 11, '["a"]')]
    # Membership emptied: the collection keeps no stale product.
    land(
        root,
        "collections",
        [{"id": "gid://shopify/Collection/8", "title": "Kitchen", "updatedAt": "2025-01-01T00:00:00Z"}],
    )
    load_pending(warehouse, root)
    assert warehouse_counts(warehouse)["collection_products"] == 0


def test_webhook_delete_marker_stamps_children_and_later_version_revives(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    land(root, "orders", [order(1), line_item(11, 1), order(2), line_item(21, 2)])
    load_pending(warehouse, root)
    # One webhook batch: order 1 deleted; order 2 deleted then re-created later in the same batch.
    land(
        root,
        "orders",
        [
            {"id": "gid://shopify/Order/1", "__deleted": True},
            {"id": "gid://shopify/Order/2", "__deleted": True},
            order(2, "2025-02-01T00:00:00Z"),
            line_item(22, 2),
        ],
        mode="webhook",
    )
    result = load_pending(warehouse, root)
    assert (result.deleted, result.updated) == (1, 1)
    live = "SELECT id FROM shopify.{} WHERE _deleted_at IS NULL ORDER BY id"
    assert query(warehouse, live.format("orders")) == [(2,)]
    assert query(warehouse, live.format("order_line_items")) == [(22,)]
    assert query(warehouse, "SELECT id FROM shopify.order_line_items WHERE _deleted_at IS NOT NULL") == [
        (11,)
    ]


def test_filters_and_engagement_batches_are_left_pending(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    land(root, "orders", [order(1)])
    customers = land(root, "customers", [customer(1)])
    feed = write_batch(root, "_engagement", "events", "feed", [{"id": "x"}])
    result = load_pending(warehouse, root, entity="orders")
    assert result.inserted == 1 and warehouse_counts(warehouse) == {
        "orders": 1,
        "order_line_items": 0,
        "order_refunds": 0,
    }
    result = load_pending(warehouse, root)
    assert result.batches == [customers.batch_id] and result.skipped == [feed.batch_id]
    assert [m.batch_id for m, _ in pending_batches(root)] == [feed.batch_id]
    with pytest.raises(LoadError, match="not found"):
        load_pending(warehouse, root, batch_ids=["20990101T000000000000-bulk-ffffffff"])


def test_foreign_row_type_in_batch_is_rejected(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    bad = land(root, "orders", [order(1), customer(2)])
    with pytest.raises(
        LoadError, match=r"line 2: row type 'Customer' is not part of orders batches"
    ) as caught:
        load_pending(warehouse, root)
    assert caught.value.line == 2 and caught.value.batch_id == bad.batch_id
    assert warehouse_counts(warehouse) == {}


def test_batch_spanning_many_blocks(paths: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import pipelines.loader as loader

    warehouse, root = paths
    # Tiny blocks: every order and its items are split across block boundaries.
    monkeypatch.setattr(loader, "_BLOCK_ROWS", 7)
    rows: list[Any] = []
    for oid in range(1, 21):
        rows += [order(oid), line_item(oid * 10 + 1, oid), line_item(oid * 10 + 2, oid)]
    # A later, newer version of order 3 (without items) further down the file wins.
    rows.append(order(3, "2025-06-01T00:00:00Z", total="33.00"))
    land(root, "orders", rows)
    result = load_pending(warehouse, root)
    assert result.inserted == 20 and result.rows["order_line_items"] == 38
    assert query(warehouse, "SELECT total_price FROM shopify.orders WHERE id = 3") == [(Decimal("33.00"),)]
    assert query(warehouse, "SELECT count(*) FROM shopify.order_line_items WHERE order_id = 3") == [(0,)]

    bad = land(root, "orders", [*rows[:40], {**order(99), "totalPriceSet": "12.00"}, *rows[40:]])
    with pytest.raises(LoadError, match=r"line 41: 'totalPriceSet' should be an object") as caught:
        load_pending(warehouse, root)
    assert caught.value.batch_id == bad.batch_id


def test_warehouse_held_by_another_process_is_a_clear_error(paths: tuple[Path, Path]) -> None:
    import subprocess
    import sys

    warehouse, root = paths
    warehouse.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,time; c=duckdb.connect({str(warehouse)!r}); print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        batch = land(root, "orders", [order(1)])
        with pytest.raises(LoadError, match=r"failed: .*Could not set lock.*run the load again") as caught:
            load_pending(warehouse, root)
        assert caught.value.batch_id == batch.batch_id
        assert [m.batch_id for m, _ in pending_batches(root)] == [batch.batch_id]
    finally:
        holder.kill()
        holder.wait()
    assert load_pending(warehouse, root).inserted == 1


def test_fresh_changes_are_sampled_for_sync_lag_once(paths: tuple[Path, Path]) -> None:
    warehouse, root = paths
    # A backfill carries history, not fresh changes: no samples.
    land(root, "customers", [customer(1), customer(2)], complete=True)
    load_pending(warehouse, root)
    assert query(warehouse, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ops'") == [
        (0,)
    ]
    changed = datetime.now(UTC).replace(microsecond=0)
    stamp = changed.isoformat().replace("+00:00", "Z")
    land(root, "customers", [customer(1, stamp), customer(3, stamp)], mode="incremental")
    webhook = write_batch(
        root,
        SHOP,
        "customers",
        "incremental",
        [{"id": "gid://shopify/Customer/2", "__deleted": True, "__triggered_at": stamp}],
        extra={"source": "webhooks"},
    )
    load_pending(warehouse, root)
    rows = query(
        warehouse,
        "SELECT id, event_type, source, lag_s >= 0 AND lag_s < 120, changed_at = ?::TIMESTAMPTZ "
        "FROM ops.sync_lag ORDER BY id".replace("?", f"'{stamp}'"),
    )
    assert rows == [
        (1, "update", "poll", True, True),
        (2, "delete", "webhook", True, True),
        (3, "create", "poll", True, True),
    ]
    # Loading the same batches again writes nothing, so samples nothing.
    load_pending(warehouse, root, batch_ids=[webhook.batch_id])
    assert query(warehouse, "SELECT count(*) FROM ops.sync_lag") == [(3,)]
