"""Fetcher pieces that need no server: row shape, slices, cursors, preflight verdicts, pacing maths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipelines.shopify import documents
from pipelines.shopify.bulk import Slice, halve, make_slices, slice_filter
from pipelines.shopify.client import Bucket
from pipelines.shopify.cursors import IncrementalCursor, Window
from pipelines.shopify.fetch import flatten_node
from pipelines.shopify.preflight import evaluate


def test_flatten_matches_the_bulk_jsonl_shape() -> None:
    node = {
        "id": "gid://shopify/Order/1",
        "name": "#1001",
        "billingAddress": {"city": "Lyon"},
        "refunds": [{"id": "gid://shopify/Refund/9"}],
        "lineItems": {
            "pageInfo": {"hasNextPage": False, "endCursor": "x"},
            "edges": [
                {"node": {"id": "gid://shopify/LineItem/2", "product": {"id": "gid://shopify/Product/3"}}}
            ],
        },
    }
    rows = flatten_node(node)
    assert rows == [
        {
            "id": "gid://shopify/Order/1",
            "name": "#1001",
            "billingAddress": {"city": "Lyon"},
            "refunds": [{"id": "gid://shopify/Refund/9"}],
        },
        {
            "id": "gid://shopify/LineItem/2",
            "product": {"id": "gid://shopify/Product/3"},
            "__parentId": "gid://shopify/Order/1",
        },
    ]


def test_flatten_accepts_nodes_form_and_empty_connections() -> None:
    rows = flatten_node(
        {"id": "c1", "products": {"nodes": [{"id": "p1"}, {"id": "p2"}]}, "empty": {"edges": []}}
    )
    assert rows == [{"id": "c1"}, {"id": "p1", "__parentId": "c1"}, {"id": "p2", "__parentId": "c1"}]


def test_slices_cover_the_range_and_the_last_is_open_ended() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    slices = make_slices(start, start + timedelta(days=4), 4)
    assert [s.start for s in slices] == [
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
        "2026-01-03T00:00:00Z",
        "2026-01-04T00:00:00Z",
    ]
    assert [s.end for s in slices] == [
        "2026-01-02T00:00:00Z",
        "2026-01-03T00:00:00Z",
        "2026-01-04T00:00:00Z",
        None,
    ]
    assert (
        slice_filter(slices[0], "")
        == "updated_at:>='2026-01-01T00:00:00Z' AND updated_at:<'2026-01-02T00:00:00Z'"
    )
    assert (
        slice_filter(slices[-1], "created_at:>='x'")
        == "created_at:>='x' AND updated_at:>='2026-01-04T00:00:00Z'"
    )


def test_halving_splits_at_the_midpoint_and_keeps_order() -> None:
    piece = Slice(
        key="001", start="2026-01-01T00:00:00Z", end=None, nominal_end="2026-01-03T00:00:00Z", attempts=1
    )
    first, second = halve(piece, 2.0) or []
    assert (first.start, first.end) == ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")
    assert (second.start, second.end) == ("2026-01-02T00:00:00Z", None)
    assert first.key < second.key < "002" and first.attempts == 1
    assert halve(Slice(key="0", start=None, end=None), 2.0) is None
    tiny = Slice(key="0", start="2026-01-01T00:00:00Z", end="2026-01-01T00:00:02Z")
    assert halve(tiny, 2.0) is None


def test_incremental_cursor_round_trips_and_only_moves_forward(tmp_path: Path) -> None:
    cursor = IncrementalCursor(
        window=Window("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", after="abc", rows=3)
    )
    cursor.advance("2026-01-01T10:00:00Z", "gid://shopify/Customer/5")
    cursor.advance("2026-01-01T09:00:00Z", "gid://shopify/Customer/9")  # older: ignored
    cursor.advance("2026-01-01T10:00:00Z", "gid://shopify/Customer/7")  # same time, larger id
    cursor.save(tmp_path, "a.myshopify.com", "customers")
    again = IncrementalCursor.load(tmp_path, "a.myshopify.com", "customers")
    assert again == cursor
    assert (again.updated_at, again.id) == ("2026-01-01T10:00:00Z", "gid://shopify/Customer/7")
    assert IncrementalCursor.load(tmp_path, "a.myshopify.com", "orders") == IncrementalCursor()


def test_preflight_names_missing_scopes_and_the_orders_window() -> None:
    verdict = evaluate("a.myshopify.com", {"read_customers", "read_orders"})
    assert set(verdict.skipped) == {"products", "collections"}
    assert "`read_products`" in verdict.skipped["products"]
    assert verdict.orders_window == timedelta(days=60)
    assert any("read_all_orders" in m for m in verdict.messages)
    assert not verdict.all_scopes_granted
    full = evaluate("a.myshopify.com", {"write_customers", "read_orders", "read_all_orders", "read_products"})
    assert full.skipped == {} and full.orders_window is None and full.all_scopes_granted


def test_bucket_refills_at_the_restore_rate_up_to_its_size() -> None:
    bucket = Bucket(maximum=2000, available=100, restore_rate=100, at=10.0)
    assert bucket.available_at(10.0) == 100
    assert bucket.available_at(15.0) == 600
    assert bucket.available_at(100.0) == 2000


def test_bulk_query_inlines_strings_safely() -> None:
    query = documents.inline_bulk_query(documents.load("customers.ids"), {"query": "tag:'a\"b'"})
    assert 'customers(query: "tag:\'a\\"b\'")' in query
    unfiltered = documents.inline_bulk_query(documents.load("customers.ids"), {"query": None})
    assert "customers {" in unfiltered and "query" not in unfiltered
