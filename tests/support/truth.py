"""Does the warehouse hold what the devstore holds? Every ``shopify.*`` table, every column.

``warehouse_mismatches(warehouse, devstore, shop)`` reads the shop's live rows (``_deleted_at``
null) of every warehouse table and compares them, key by key and column by column, with
what the devstore's records say Shopify would serve: the same ids, and the same value in
every business column of ``pipelines.tables.WAREHOUSE``. It returns a list of readable
mismatches; empty means equal.

The expected rows are derived from the devstore's own records the way Shopify's API exposes
them (the devstore's resolvers follow the same rules): a customer's email consent exists
only with an email and reads NOT_SUBSCRIBED when unset, ``displayName`` falls back to the
email, ``numberOfOrders``/``amountSpent`` are computed from the orders, amounts without a
presentment twin are in the shop currency, timestamps have whole seconds, and only
metafields in the ``shopsync`` namespace are read. Money is compared as ``Decimal``.

Usage in a test::

    from support.truth import warehouse_mismatches
    assert warehouse_mismatches(paths.warehouse_path, running_devstore, domain) == []
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from devstore.server import RunningDevstore
from devstore.state import ShopState, World
from pipelines.tables import MONEY, TS, WAREHOUSE

Row = dict[str, Any]
METAFIELD_NAMESPACE = "shopsync"  # the only namespace the fetchers read
# Figures Shopify derives from a customer's orders. An order created or deleted changes them
# without moving the customer's updatedAt (the devstore behaves so), so no incremental read
# or reconciliation re-reads the customer: the warehouse keeps the figures of the customer's
# last read (shopsync computes order metrics from shopify.orders itself). After a full
# export they must match; after order deletions compare with ``derived=False``.
DERIVED: dict[str, frozenset[str]] = {"customers": frozenset({"number_of_orders", "amount_spent"})}


# expected rows -----------------------------------------------------------------------------
def _presentment(record: Row, column: str) -> Any:
    return record.get(f"{column}_presentment", record.get(column))


def _customers(shop: ShopState) -> list[Row]:
    orders_by_customer: dict[int, list[Row]] = {}
    for order in shop.records["orders"].values():
        if order.get("customer_id") is not None:
            orders_by_customer.setdefault(order["customer_id"], []).append(order)
    rows = []
    for c in shop.records["customers"].values():
        email, phone = c.get("email"), c.get("phone")
        orders = orders_by_customer.get(c["id"], [])
        spent = sum(
            (
                Decimal(o.get("total_price") or "0") - Decimal(o.get("total_refunded") or "0")
                for o in orders
                if not o.get("test") and o.get("cancelled_at") is None
            ),
            Decimal("0"),
        )
        name = " ".join(p for p in (c.get("first_name"), c.get("last_name")) if p)
        rows.append(
            {
                "id": c["id"],
                "first_name": c.get("first_name"),
                "last_name": c.get("last_name"),
                "display_name": name or (email or "").strip() or (phone or ""),
                "email": email or None,
                "email_marketing_state": (c.get("email_consent_state") or "NOT_SUBSCRIBED")
                if email
                else None,
                "email_marketing_opt_in_level": c.get("email_consent_opt_in_level") if email else None,
                "email_consent_updated_at": c.get("email_consent_updated_at") if email else None,
                "phone": phone or None,
                "sms_marketing_state": (c.get("sms_consent_state") or "NOT_SUBSCRIBED") if phone else None,
                "sms_marketing_opt_in_level": c.get("sms_consent_opt_in_level") if phone else None,
                "sms_consent_updated_at": c.get("sms_consent_updated_at") if phone else None,
                "sms_consent_collected_from": c.get("sms_consent_collected_from") if phone else None,
                "tags": list(c.get("tags") or []),
                "note": c.get("note"),
                "state": c.get("state"),
                "verified_email": c.get("verified_email"),
                "tax_exempt": c.get("tax_exempt"),
                "locale": c.get("locale"),
                "number_of_orders": len(orders),
                "amount_spent": spent,
                "amount_spent_currency": shop.info.get("currency_code"),
                "default_address_id": c.get("default_address_id"),
                "created_at": c.get("created_at"),
                "updated_at": c.get("updated_at"),
            }
        )
    return rows


def _copy(columns: Iterable[str], renames: dict[str, str] | None = None) -> Callable[[Row], Row]:
    """A row builder taking ``columns`` from the record (``renames``: warehouse column → record key)."""
    renames = renames or {}

    def build(record: Row) -> Row:
        row: Row = {}
        for column in columns:
            if column.endswith("_presentment"):
                row[column] = _presentment(record, column.removesuffix("_presentment"))
            else:
                row[column] = record.get(renames.get(column, column))
        return row

    return build


def _business(table: str) -> list[str]:
    return [c for c in WAREHOUSE[table] if c != "shop"]


def _children(shop: ShopState, child: str, build: Callable[[Row], Row]) -> list[Row]:
    return [build(r) for rows in shop.children[child].values() for r in rows]


def _checkout(record: Row) -> Row:
    row = _copy(_business("abandoned_checkouts"))(record)
    # a checkout's total has no presentment twin: both sides are the checkout's currency
    row["presentment_currency_code"] = record.get("currency_code")
    return row


def expected_tables(shop: ShopState) -> dict[str, tuple[tuple[str, ...], list[Row]]]:
    """Per warehouse table: its key columns and the rows the devstore says it should hold."""
    with shop.lock:
        return {
            "customers": (("id",), _customers(shop)),
            "customer_addresses": (
                ("id",),
                _children(shop, "customer_addresses", _copy(_business("customer_addresses"))),
            ),
            "customer_metafields": (
                ("id",),
                [
                    _copy(_business("customer_metafields"), {"customer_id": "owner_id"})(r)
                    for rows in shop.children["metafields"].values()
                    for r in rows
                    if r.get("owner_type", "Customer") == "Customer"
                    and r.get("namespace") == METAFIELD_NAMESPACE
                ],
            ),
            "orders": (("id",), [_copy(_business("orders"))(r) for r in shop.records["orders"].values()]),
            "order_line_items": (
                ("id",),
                _children(shop, "order_line_items", _copy(_business("order_line_items"))),
            ),
            "order_refunds": (("id",), _children(shop, "refunds", _copy(_business("order_refunds")))),
            "products": (
                ("id",),
                [_copy(_business("products"))(r) for r in shop.records["products"].values()],
            ),
            "product_variants": (("id",), _children(shop, "variants", _copy(_business("product_variants")))),
            "collections": (
                ("id",),
                [_copy(_business("collections"))(r) for r in shop.records["collections"].values()],
            ),
            # a deleted product leaves its collections
            "collection_products": (
                ("collection_id", "product_id"),
                [
                    row
                    for row in _children(shop, "collection_products", _copy(_business("collection_products")))
                    if row["product_id"] in shop.records["products"]
                ],
            ),
            "abandoned_checkouts": (
                ("id",),
                [_checkout(r) for r in shop.records["abandoned_checkouts"].values()],
            ),
            "abandoned_checkout_line_items": (
                ("id",),
                _children(shop, "checkout_line_items", _copy(_business("abandoned_checkout_line_items"))),
            ),
        }


# comparing ---------------------------------------------------------------------------------
def _normal(value: Any, dtype: pl.DataType) -> Any:
    """One representation per value: Decimal money, whole-second UTC timestamps, lists as lists."""
    if value is None:
        return None
    if dtype == MONEY:
        return Decimal(str(value)).normalize()
    if dtype == TS:
        if isinstance(value, str):
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return value.astimezone(UTC).replace(microsecond=0)
    if isinstance(dtype, pl.List):
        return list(json.loads(value)) if isinstance(value, str) else list(value)
    if dtype == pl.Int64 and not isinstance(value, bool):
        return int(value)
    return value


def _warehouse_rows(con: duckdb.DuckDBPyConnection, table: str, shop: str) -> list[Row] | None:
    present = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'shopify' AND table_name = ?",
        [table],
    ).fetchall()[0][0]
    if not present:
        return None
    cursor = con.execute(f"SELECT * FROM shopify.{table} WHERE shop = ? AND _deleted_at IS NULL", [shop])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def warehouse_mismatches(
    warehouse: Path,
    devstore: RunningDevstore | World,
    shop: str,
    *,
    tables: Iterable[str] | None = None,
    derived: bool = True,
    limit: int = 10,
) -> list[str]:
    """What differs between the warehouse's live rows of ``shop`` and the devstore's truth.

    ``tables`` narrows the comparison (default: every ``shopify.*`` table); ``derived=False``
    leaves out the :data:`DERIVED` columns; ``limit`` caps the messages per table (a last
    line says how many more there were).
    """
    world = devstore.world if isinstance(devstore, RunningDevstore) else devstore
    state = world.shop(shop)
    if state is None:
        return [f"the devstore has no shop {shop}"]
    domain = state.domain
    expected = expected_tables(state)
    wanted = list(tables) if tables is not None else list(expected)
    problems: list[str] = []
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        for table in wanted:
            keys, truth_rows = expected[table]
            schema = WAREHOUSE[table]
            found = _warehouse_rows(con, table, domain)
            if found is None:
                if truth_rows:
                    problems.append(f"shopify.{table}: missing table ({len(truth_rows)} rows expected)")
                continue
            skipped = set() if derived else DERIVED.get(table, frozenset())
            columns = [c for c in schema if c != "shop" and c not in skipped]
            truth = {tuple(r[k] for k in keys): r for r in truth_rows}
            held = {tuple(r[k] for k in keys): r for r in found}
            messages: list[str] = []
            for key in sorted(truth.keys() - held.keys(), key=repr):
                messages.append(f"shopify.{table}: row {dict(zip(keys, key, strict=True))} missing")
            for key in sorted(held.keys() - truth.keys(), key=repr):
                messages.append(
                    f"shopify.{table}: row {dict(zip(keys, key, strict=True))} should not be live"
                )
            if len(found) != len(held):
                messages.append(f"shopify.{table}: {len(found) - len(held)} duplicate live rows")
            for key in sorted(truth.keys() & held.keys(), key=repr):
                for column in columns:
                    want = _normal(truth[key][column], schema[column])
                    got = _normal(held[key].get(column), schema[column])
                    if want != got:
                        messages.append(
                            f"shopify.{table}: row {dict(zip(keys, key, strict=True))} {column}: "
                            f"warehouse {got!r} != devstore {want!r}"
                        )
            problems.extend(messages[:limit])
            if len(messages) > limit:
                problems.append(f"shopify.{table}: … and {len(messages) - limit} more mismatches")
    finally:
        con.close()
    return problems
