"""Bulk-export JSONL written from generated tables: shape, parents, values, escaping."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import graphql
import polars as pl
import pytest

from devstore.bulk_jsonl import read_jsonl, write_customers_jsonl, write_orders_jsonl
from devstore.generator import generate_world

QUERIES = Path(__file__).resolve().parents[2] / "pipelines" / "shopify" / "queries"
Tables = dict[str, pl.DataFrame]


@pytest.fixture(scope="module")
def world() -> Tables:
    return generate_world(stores=2, customers=600, seed=11)


@pytest.fixture(scope="module")
def shop(world: Tables) -> str:
    return world["shops"]["shop"][1]


def _fragments(name: str) -> dict[str, dict[str, Any]]:
    """Fragment name → key tree (field → subtree, or None for leaves) from a .graphql file."""
    doc = graphql.parse((QUERIES / name).read_text())

    def tree(selection_set: graphql.SelectionSetNode | None) -> dict[str, Any] | None:
        if selection_set is None:
            return None
        return {
            (sel.alias or sel.name).value: tree(sel.selection_set)
            for sel in selection_set.selections
            if isinstance(sel, graphql.FieldNode)
        }

    return {
        d.name.value: tree(d.selection_set)
        for d in doc.definitions
        if isinstance(d, graphql.FragmentDefinitionNode)
    }


def _assert_shape(value: Any, expected: dict[str, Any] | None, where: str) -> None:
    if expected is None or value is None:
        return
    if isinstance(value, list):
        for item in value:
            _assert_shape(item, expected, where)
        return
    assert isinstance(value, dict), where
    assert set(value) == set(expected), f"{where}: {sorted(set(value) ^ set(expected))}"
    for key, sub in expected.items():
        _assert_shape(value[key], sub, f"{where}.{key}")


def test_customer_lines_have_the_fragment_shape(world: Tables, shop: str, tmp_path: Path) -> None:
    path = tmp_path / "customers.jsonl"
    count = write_customers_jsonl(world, path, shop)
    rows = read_jsonl(path)
    customers = world["customers"].filter(pl.col("shop") == shop)
    assert count == len(rows) == customers.height
    expected = _fragments("customers.fields.graphql")["CustomerFields"]
    for row in rows:
        _assert_shape(row, expected, "Customer")
        assert row["id"] == f"gid://shopify/Customer/{row['legacyResourceId']}"
    by_id = {int(r["legacyResourceId"]): r for r in rows}
    for record in customers.head(200).to_dicts():
        row = by_id[record["id"]]
        assert row["firstName"] == record["first_name"] and row["lastName"] == record["last_name"]
        if record["email"] is None:
            assert row["defaultEmailAddress"] is None
        else:
            assert row["defaultEmailAddress"]["emailAddress"] == record["email"]
            assert row["defaultEmailAddress"]["marketingState"] == record["email_consent_state"]
            assert "emailMarketingConsent" not in row  # deprecated in 2026-10
        if record["phone"] is None:
            assert row["defaultPhoneNumber"] is None
        else:
            assert row["defaultPhoneNumber"]["phoneNumber"] == record["phone"]
            sms = row["defaultPhoneNumber"]["smsMarketingConsent"]
            # CustomerMarketingConsentState names the older NOT_SUBSCRIBED NEVER_SUBSCRIBED
            old = record["sms_consent_state"] or "NOT_SUBSCRIBED"
            assert sms["state"] == ("NEVER_SUBSCRIBED" if old == "NOT_SUBSCRIBED" else old)
            assert "smsMarketingConsent" not in row  # deprecated in 2026-10
        assert row["tags"] == record["tags"]
        assert row["createdAt"] == record["created_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
    with_book = [r for r in rows if r["addresses"]]
    assert with_book and all(
        r["defaultAddress"] is None or r["defaultAddress"]["id"] in {a["id"] for a in r["addresses"]}
        for r in with_book
    )
    orders = world["orders"].filter(
        (pl.col("shop") == shop) & pl.col("customer_id").is_not_null() & ~pl.col("test")
    )
    counts = orders.group_by("customer_id").len()
    for customer_id, n in counts.head(50).iter_rows():
        assert by_id[customer_id]["numberOfOrders"] == str(n)


def test_order_lines_interleave_line_items_after_their_parent(
    world: Tables, shop: str, tmp_path: Path
) -> None:
    path = tmp_path / "orders.jsonl"
    # A small chunk size exercises the chunk boundaries.
    count = write_orders_jsonl(world, path, shop, chunk_rows=97)
    rows = read_jsonl(path)
    orders = world["orders"].filter(pl.col("shop") == shop)
    items = world["order_line_items"].filter(pl.col("shop") == shop)
    assert count == len(rows) == orders.height + items.height
    fragments = _fragments("orders.fields.graphql")
    current: str | None = None
    seen_orders: list[int] = []
    seen_items: dict[int, list[int]] = {}
    for row in rows:
        if "__parentId" in row:
            _assert_shape(
                {k: v for k, v in row.items() if k != "__parentId"}, fragments["LineItemFields"], "LineItem"
            )
            assert row["__parentId"] == current, "a line item must directly follow its order"
            seen_items.setdefault(int(current.rsplit("/", 1)[1]), []).append(int(row["id"].rsplit("/", 1)[1]))
        else:
            _assert_shape(row, fragments["OrderFields"], "Order")
            current = row["id"]
            seen_orders.append(int(row["legacyResourceId"]))
    assert seen_orders == orders["id"].to_list()
    expected_items = items.group_by("order_id", maintain_order=True).agg("id")
    assert {o: ids for o, ids in expected_items.iter_rows()} == seen_items


def test_order_values_match_the_tables(world: Tables, shop: str) -> None:
    buffer = io.BytesIO()
    write_orders_jsonl(world, buffer, shop)
    rows = [json.loads(line) for line in buffer.getvalue().decode().splitlines()]
    orders = {r["legacyResourceId"]: r for r in rows if "__parentId" not in r}
    table = world["orders"].filter(pl.col("shop") == shop)
    refunds = world["refunds"].filter(pl.col("shop") == shop).group_by("order_id").len()
    refund_count = dict(refunds.iter_rows())
    for record in table.to_dicts():
        row = orders[str(record["id"])]
        assert row["totalPriceSet"]["shopMoney"] == {
            "amount": record["total_price"],
            "currencyCode": record["currency_code"],
        }
        assert row["totalPriceSet"]["presentmentMoney"] == {
            "amount": record["total_price_presentment"],
            "currencyCode": record["presentment_currency_code"],
        }
        assert row["displayFinancialStatus"] == record["financial_status"]
        assert (row["customer"] is None) == (record["customer_id"] is None)
        assert len(row["refunds"]) == refund_count.get(record["id"], 0)
        assert row["email"] == record["email"] and row["phone"] == record["phone"]
    items = [r for r in rows if "__parentId" in r]
    foreign = [
        r
        for r in items
        if r["originalUnitPriceSet"]["presentmentMoney"]["currencyCode"]
        != r["originalUnitPriceSet"]["shopMoney"]["currencyCode"]
    ]
    assert foreign  # presentment currency reaches the line items


def test_strings_are_escaped(world: Tables, tmp_path: Path) -> None:
    tricky = 'Ann "Nancy" O\\Brien\n\t\x01é'
    first = pl.int_range(pl.len()) == 0
    customers = world["customers"].with_columns(
        first_name=pl.when(first).then(pl.lit(tricky)).otherwise(pl.col("first_name")),
        tags=pl.when(first).then(pl.lit(['say "hi"'])).otherwise(pl.col("tags")),
    )
    path = tmp_path / "tricky.jsonl"
    write_customers_jsonl({**world, "customers": customers}, path, customers["shop"][0])
    rows = read_jsonl(path)
    assert rows[0]["firstName"] == tricky
    assert rows[0]["tags"] == ['say "hi"']
    # Lines stay one per document even with raw newlines in values.
    assert len(path.read_text().splitlines()) == len(rows)
