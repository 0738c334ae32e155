"""Personal data in the warehouse and the landing zone: export one customer, erase one, remove a store.

Three operations, the privacy requests Shopify sends (and the user's delete) need:

- ``export_customer``: every warehouse row about one customer of one store — the Shopify
  tables, the core tables (identities, contact, metrics, consent and its audit), the
  engagement events on their email or phone, the push ledger — as one JSON document.
- ``redact_customer``: the same rows lose their personal fields (names, emails, phones,
  addresses, notes, metafield values, pushed payloads); ids, money, dates and states stay,
  so counts and revenue still add up. The customer is listed in
  ``privacy.redacted_customers`` (the reverse-sync planner skips whoever is listed there),
  and every landing line about them is scrubbed the same way.
- ``delete_shop_rows``: every row of one store from every table, and the store's people
  from the contact tables: contacts made only of its records go, contacts shared with other
  stores lose its identities (their aggregates are recomputed by the next identity run).

Tables are found in the warehouse itself, not from a list, so a table added later is
covered by the same rules: a ``shop`` column scopes it to a store; ``customer_id``,
``order_id`` and ``contact_id`` tie a row to a person.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from pipelines import landing

REDACTED_TABLE = "privacy.redacted_customers"
# Columns that hold personal data wherever they appear (warehouse names).
PERSONAL_COLUMNS = frozenset(
    {
        "first_name",
        "last_name",
        "display_name",
        "email",
        "phone",
        "note",
        "notes",
        "company",
        "address1",
        "address2",
        "city",
        "province",
        "province_code",
        "zip",
        "billing_first_name",
        "billing_last_name",
        "billing_address1",
        "billing_address2",
        "billing_city",
        "billing_province",
        "billing_zip",
        "billing_phone",
        "abandoned_checkout_url",
        "body",  # an inbound SMS
        "payload",  # what a push sent (profile fill carries names and phones)
        "last_error",  # Shopify's error text may quote the value it refused
        "error",
    }
)
# Columns whose content is personal only in the tables about a person's profile.
_PROFILE_VALUE_TABLES = frozenset({"shopify.customer_metafields", "crm.field_edits"})
# Keys holding personal data in landing lines (Shopify's camelCase and the REST payloads' snake_case).
PERSONAL_KEYS = frozenset(
    {
        "firstName",
        "lastName",
        "displayName",
        "email",
        "emailAddress",
        "phone",
        "phoneNumber",
        "note",
        "company",
        "address1",
        "address2",
        "city",
        "province",
        "provinceCode",
        "zip",
        "abandonedCheckoutUrl",
        "first_name",
        "last_name",
        "display_name",
        "province_code",
        "abandoned_checkout_url",
        "default_address",
        "addresses",
        "billing_address",
        "shipping_address",
        "billingAddress",
        "shippingAddress",
        "value",  # metafield child lines
        "name",  # only inside address objects (see scrub)
    }
)
_ADDRESS_HINTS = frozenset({"address1", "zip", "city", "countryCodeV2", "country_code"})


@dataclass
class Subject:
    """The person a privacy request is about: a customer of a store, and their orders."""

    shop: str
    customer_id: int
    order_ids: set[int] = field(default_factory=set)
    # filled from the warehouse: emails and phones the customer is known by, their contacts
    emails: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)
    contact_ids: set[str] = field(default_factory=set)


def _tables(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    """Every base table of the warehouse (dlt's own and staging left out): name -> {column: type}."""
    rows = con.execute(
        "SELECT c.table_schema, c.table_name, c.column_name, c.data_type "
        "FROM information_schema.columns c JOIN information_schema.tables t "
        "  ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
        "WHERE t.table_type = 'BASE TABLE' AND c.table_schema NOT LIKE '%\\_staging' ESCAPE '\\' "
        "AND c.table_name NOT LIKE '\\_dlt%' ESCAPE '\\' ORDER BY 1, 2, c.ordinal_position"
    ).fetchall()
    tables: dict[str, dict[str, str]] = {}
    for schema, table, column, kind in rows:
        tables.setdefault(f"{schema}.{table}", {})[column] = str(kind)
    return tables


def _q(table: str) -> str:
    schema, name = table.split(".", 1)
    return f'"{schema}"."{name}"'


def _in(values: Iterable[Any]) -> tuple[str, list[Any]]:
    items = list(values)
    if not items:
        return "(NULL)", []
    return "(" + ", ".join("?" for _ in items) + ")", items


def _is_text(kind: str) -> bool:
    return kind.upper() in ("VARCHAR", "TEXT", "STRING")


def _resolve_subject(
    con: duckdb.DuckDBPyConnection, tables: dict[str, dict[str, str]], subject: Subject
) -> None:
    """Fill in the subject's orders, emails, phones and contact ids from what the warehouse holds."""
    shop, cid = subject.shop, subject.customer_id
    if "shopify.orders" in tables:
        subject.order_ids |= {
            int(r[0])
            for r in con.execute(
                "SELECT id FROM shopify.orders WHERE shop = ? AND customer_id = ?", [shop, cid]
            ).fetchall()
        }
    queries = [
        (
            "shopify.customers",
            "SELECT email, phone FROM shopify.customers WHERE shop = ? AND id = ?",
            [shop, cid],
        ),
        (
            "shopify.customer_addresses",
            "SELECT NULL, phone FROM shopify.customer_addresses WHERE shop = ? AND customer_id = ?",
            [shop, cid],
        ),
    ]
    if subject.order_ids:
        marks, ids = _in(subject.order_ids)
        queries.append(
            (
                "shopify.orders",
                f"SELECT email, phone FROM shopify.orders WHERE shop = ? AND id IN {marks}",
                [shop, *ids],
            )
        )
    for table, sql, params in queries:
        if table not in tables:
            continue
        for email, phone in con.execute(sql, params).fetchall():
            if email:
                subject.emails.add(str(email))
            if phone:
                subject.phones.add(str(phone))
    if "core.contact_identities" in tables:
        keys = [("customer", str(cid))] + [("order", str(o)) for o in subject.order_ids]
        for record_type, record_id in keys:
            subject.contact_ids |= {
                str(r[0])
                for r in con.execute(
                    "SELECT contact_id FROM core.contact_identities "
                    "WHERE shop = ? AND record_type = ? AND record_id = ?",
                    [shop, record_type, record_id],
                ).fetchall()
                if r[0]
            }


def _subject_predicates(table: str, columns: dict[str, str], subject: Subject) -> list[tuple[str, list[Any]]]:
    """SQL conditions selecting the rows of ``table`` about the subject (empty: none are)."""
    shop, cid = subject.shop, subject.customer_id
    preds: list[tuple[str, list[Any]]] = []
    has_shop = "shop" in columns and _is_text(columns["shop"])
    if table == "shopify.customers":
        preds.append(("shop = ? AND id = ?", [shop, cid]))
    if has_shop and "customer_id" in columns:
        preds.append(("shop = ? AND customer_id = ?", [shop, cid]))
    if table == "shopify.orders" and subject.order_ids:
        marks, ids = _in(subject.order_ids)
        preds.append((f"shop = ? AND id IN {marks}", [shop, *ids]))
    if has_shop and "order_id" in columns and subject.order_ids:
        marks, ids = _in(subject.order_ids)
        preds.append((f"shop = ? AND order_id IN {marks}", [shop, *ids]))
    if table == "core.contact_identities":
        keys = [str(cid)]
        marks, ids = _in(keys)
        preds.append((f"shop = ? AND record_type = 'customer' AND record_id IN {marks}", [shop, *ids]))
        if subject.order_ids:
            marks, ids = _in(str(o) for o in subject.order_ids)
            preds.append((f"shop = ? AND record_type = 'order' AND record_id IN {marks}", [shop, *ids]))
    if "contact_id" in columns and not has_shop and subject.contact_ids:
        marks, ids = _in(subject.contact_ids)
        preds.append((f"contact_id IN {marks}", ids))
    # rows carrying the customer's email or phone: guest orders and checkouts of the same person,
    # engagement events (which know people by address only)
    for column, values in (
        ("email", subject.emails),
        ("phone", subject.phones),
        ("billing_phone", subject.phones),
    ):
        if column not in columns or not values:
            continue
        marks, ids = _in(values)
        if has_shop and not table.startswith("engagement."):
            preds.append((f"shop = ? AND {column} IN {marks}", [shop, *ids]))
        elif table.startswith("engagement."):
            preds.append((f"{column} IN {marks}", ids))
    for side in ("l", "r"):
        if f"shop_{side}" in columns and f"record_id_{side}" in columns:
            marks, ids = _in([str(cid), *map(str, subject.order_ids)])
            preds.append((f"shop_{side} = ? AND record_id_{side} IN {marks}", [shop, *ids]))
    return preds


def _where(preds: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    sql = " OR ".join(f"({p})" for p, _ in preds)
    params = [v for _, values in preds for v in values]
    return sql, params


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


# export ---------------------------------------------------------------------------------------
def export_customer(warehouse: Path, subject: Subject) -> dict[str, list[dict[str, Any]]]:
    """Every warehouse row about the subject, by table (tables with no such row left out)."""
    if not Path(warehouse).exists():
        return {}
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        tables = _tables(con)
        _resolve_subject(con, tables, subject)
        found: dict[str, list[dict[str, Any]]] = {}
        for table, columns in tables.items():
            preds = _subject_predicates(table, columns, subject)
            if not preds:
                continue
            where, params = _where(preds)
            cursor = con.execute(f"SELECT * FROM {_q(table)} WHERE {where}", params)
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, map(_jsonable, row), strict=True)) for row in cursor.fetchall()]
            if rows:
                found[table] = rows
        return found
    finally:
        con.close()


def write_export(folder: Path, name: str, document: dict[str, Any]) -> Path:
    """Write an export for the store owner (owner-only file, written atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = folder / f".tmp-{name}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(document, fh, indent=1, default=str, ensure_ascii=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


# redact ---------------------------------------------------------------------------------------
def redact_customer(warehouse: Path, subject: Subject, *, at: datetime) -> dict[str, int]:
    """Erase the subject's personal fields in every table; rows touched per table.

    Also records the customer in ``privacy.redacted_customers``. The subject comes back
    with its emails, phones, orders and contacts resolved (for the landing scrub).
    """
    if not Path(warehouse).exists():
        return {}
    con = duckdb.connect(str(warehouse))
    touched: dict[str, int] = {}
    try:
        tables = _tables(con)
        _resolve_subject(con, tables, subject)
        con.execute("BEGIN")
        for table, columns in tables.items():
            if table == REDACTED_TABLE:
                continue
            preds = _subject_predicates(table, columns, subject)
            if not preds:
                continue
            where, params = _where(preds)
            if table == "core.identity_review":
                # the review explains a pair by quoting both records: the pair goes
                count = con.execute(f"SELECT count(*) FROM {_q(table)} WHERE {where}", params).fetchone()
                con.execute(f"DELETE FROM {_q(table)} WHERE {where}", params)
                if count and count[0]:
                    touched[table] = int(count[0])
                continue
            personal = [c for c in columns if c in PERSONAL_COLUMNS]
            if table in _PROFILE_VALUE_TABLES and "value" in columns:
                personal.append("value")
            if not personal:
                continue
            sets = ", ".join(f'"{c}" = NULL' for c in personal)
            count = con.execute(f"SELECT count(*) FROM {_q(table)} WHERE {where}", params).fetchone()
            if count and count[0]:
                con.execute(f"UPDATE {_q(table)} SET {sets} WHERE {where}", params)
                touched[table] = int(count[0])
        con.execute("CREATE SCHEMA IF NOT EXISTS privacy")
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {REDACTED_TABLE} "
            "(shop VARCHAR, customer_id BIGINT, redacted_at TIMESTAMPTZ)"
        )
        con.execute(
            f"DELETE FROM {REDACTED_TABLE} WHERE shop = ? AND customer_id = ?",
            [subject.shop, subject.customer_id],
        )
        con.execute(f"INSERT INTO {REDACTED_TABLE} VALUES (?, ?, ?)", [subject.shop, subject.customer_id, at])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()
    return touched


def reapply_redactions(warehouse: Path, shops: Iterable[str]) -> list[tuple[str, int]]:
    """Erase again the personal fields of redacted customers that a later load brought back.

    A customer redacted here may still be served by Shopify for a while (Shopify erases on
    its own schedule), so a re-sync or an incremental read can load their profile again.
    After each load, every redacted customer of the loaded stores whose rows carry personal
    data again is redacted again (their original redaction time kept). Returns who was.
    """
    shops = sorted(set(shops))
    if not shops or not Path(warehouse).exists():
        return []
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        tables = _tables(con)
        if REDACTED_TABLE not in tables:
            return []
        listed, params = _in(shops)
        redacted = con.execute(
            f"SELECT shop, customer_id, min(redacted_at) FROM {REDACTED_TABLE} WHERE shop IN {listed} "
            "GROUP BY ALL ORDER BY ALL",
            params,
        ).fetchall()
        back = [(shop, cid, at) for shop, cid, at in redacted if _has_personal_data(con, tables, shop, cid)]
    finally:
        con.close()
    for shop, cid, at in back:
        redact_customer(warehouse, Subject(shop, int(cid)), at=at)
    return [(shop, int(cid)) for shop, cid, _ in back]


def _has_personal_data(
    con: duckdb.DuckDBPyConnection, tables: dict[str, dict[str, str]], shop: str, customer_id: int
) -> bool:
    """Whether the Shopify rows of one customer (profile, addresses, orders) hold personal data."""
    for table, key in (
        ("shopify.customers", "id"),
        ("shopify.customer_addresses", "customer_id"),
        ("shopify.orders", "customer_id"),
        ("shopify.abandoned_checkouts", "customer_id"),
    ):
        columns = tables.get(table)
        if not columns or key not in columns:
            continue
        personal = [c for c in columns if c in PERSONAL_COLUMNS]
        if not personal:
            continue
        held = " OR ".join(f'"{c}" IS NOT NULL' for c in personal)
        found = con.execute(
            f"SELECT count(*) FROM {_q(table)} WHERE shop = ? AND {key} = ? AND ({held})", [shop, customer_id]
        ).fetchone()
        if found and found[0]:
            return True
    return False


def scrub(value: Any) -> Any:
    """A copy of a landing line (or REST payload) with every personal field set to null."""
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if not isinstance(value, dict):
        return value
    address_like = bool(_ADDRESS_HINTS & set(value))
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in PERSONAL_KEYS and (key != "name" or address_like):
            out[key] = None
        else:
            out[key] = scrub(item)
    return out


def _gid_tail(value: Any) -> str:
    return str(value).rsplit("/", 1)[-1] if value is not None else ""


def _mentions(value: Any, needles: set[str]) -> bool:
    if isinstance(value, str):
        return value in needles
    if isinstance(value, dict):
        return any(_mentions(v, needles) for v in value.values())
    if isinstance(value, list):
        return any(_mentions(v, needles) for v in value)
    return False


def line_is_about(line: dict[str, Any], subject: Subject, order_gids: set[str], customer_gid: str) -> bool:
    """Whether a landing line (a Shopify line, or a webhook row) concerns the subject."""
    if (subject.emails or subject.phones) and _mentions(line, subject.emails | subject.phones):
        return True
    if line.get("id") == customer_gid or line.get("__parentId") == customer_gid:
        return True
    if line.get("id") in order_gids or line.get("__parentId") in order_gids:
        return True
    customer = line.get("customer")
    if isinstance(customer, dict) and _gid_tail(customer.get("id")) == str(subject.customer_id):
        return True
    payload = line.get("payload")
    if isinstance(payload, dict):
        topic = str(line.get("topic") or "")
        ids = {
            _gid_tail(payload.get("admin_graphql_api_id")),
            _gid_tail(payload.get("id")),
        }
        if topic.startswith("customers") and str(subject.customer_id) in ids:
            return True
        if _gid_tail(payload.get("customer_id")) == str(subject.customer_id):
            return True
        inner = payload.get("customer")
        if isinstance(inner, dict) and _gid_tail(inner.get("id")) == str(subject.customer_id):
            return True
        if topic.startswith("orders") and ids & {str(o) for o in subject.order_ids}:
            return True
    return False


def scrub_landing(landing_root: Path, subject: Subject) -> int:
    """Rewrite the store's landing batches with the subject's personal fields nulled; lines changed."""
    folder = Path(landing_root) / subject.shop
    if not folder.exists():
        return 0
    customer_gid = f"gid://shopify/Customer/{subject.customer_id}"
    order_gids = {f"gid://shopify/Order/{o}" for o in subject.order_ids}
    changed_total = 0
    for manifest, path in landing.iter_batches(Path(landing_root), subject.shop):
        del manifest
        lines = [json.loads(text) for text in path.read_text(encoding="utf-8").splitlines() if text.strip()]
        changed = 0
        out: list[dict[str, Any]] = []
        for line in lines:
            if isinstance(line, dict) and line_is_about(line, subject, order_gids, customer_gid):
                scrubbed = scrub(line)
                if scrubbed != line:
                    changed += 1
                out.append(scrubbed)
            else:
                out.append(line)
        if changed:
            landing.rewrite_batch(path, out)
            changed_total += changed
    return changed_total


def scrub_quarantine(landing_root: Path, shop: str, needles: Iterable[str] = ()) -> int:
    """Remove quarantined webhook bodies of ``shop`` (all of them, or those mentioning a needle)."""
    folder = Path(landing_root) / "_quarantine" / "webhooks"
    if not folder.exists():
        return 0
    wanted = [n for n in needles if n]
    removed = 0
    for path in folder.glob("*.json"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if record.get("shop") != shop:
            continue
        if wanted and not any(n in str(record.get("body", "")) for n in wanted):
            continue
        path.unlink()
        removed += 1
    return removed


# delete a store -------------------------------------------------------------------------------
def delete_shop_rows(warehouse: Path, shop: str, *, customer_list: str | None = None) -> dict[str, int]:
    """Remove every row of ``shop`` from every table, and its people from the contact tables.

    Contacts made only of the store's records are removed with their metrics, consent,
    CRM edits and identity events; contacts shared with other stores lose the store from
    ``shops`` (and its list from ``customer_lists``) now, and their aggregates are
    recomputed by the next identity run. Returns rows removed (or changed) per table.
    """
    if not Path(warehouse).exists():
        return {}
    con = duckdb.connect(str(warehouse))
    removed: dict[str, int] = {}

    def count(sql: str, params: list[Any]) -> int:
        row = con.execute(sql, params).fetchone()
        return int(row[0]) if row else 0

    try:
        tables = _tables(con)
        touched_contacts: set[str] = set()
        if "core.contact_identities" in tables:
            touched_contacts = {
                str(r[0])
                for r in con.execute(
                    "SELECT DISTINCT contact_id FROM core.contact_identities WHERE shop = ? AND contact_id IS NOT NULL",
                    [shop],
                ).fetchall()
            }
        con.execute("BEGIN")
        for table, columns in tables.items():
            conditions = [
                f'"{c}" = ?' for c in ("shop", "shop_l", "shop_r") if c in columns and _is_text(columns[c])
            ]
            if not conditions:
                continue
            where = " OR ".join(conditions)
            params = [shop] * len(conditions)
            n = count(f"SELECT count(*) FROM {_q(table)} WHERE {where}", params)
            if n:
                con.execute(f"DELETE FROM {_q(table)} WHERE {where}", params)
                removed[table] = n
        orphans: set[str] = set()
        if touched_contacts:
            marks, ids = _in(touched_contacts)
            still = {
                str(r[0])
                for r in con.execute(
                    f"SELECT DISTINCT contact_id FROM core.contact_identities WHERE contact_id IN {marks}",
                    ids,
                ).fetchall()
            }
            orphans = touched_contacts - still
            shared = touched_contacts & still
            for table, columns in tables.items():
                if "contact_id" not in columns or "shop" in columns or table == "core.contact_identities":
                    continue
                if orphans:
                    marks, ids = _in(orphans)
                    n = count(f"SELECT count(*) FROM {_q(table)} WHERE contact_id IN {marks}", ids)
                    if n:
                        con.execute(f"DELETE FROM {_q(table)} WHERE contact_id IN {marks}", ids)
                        removed[table] = removed.get(table, 0) + n
            if shared and "core.contacts" in tables:
                marks, ids = _in(shared)
                sets = []
                params: list[Any] = []
                if "shops" in tables["core.contacts"]:
                    sets.append("shops = list_filter(shops, lambda x: x <> ?)")
                    params.append(shop)
                if "customer_lists" in tables["core.contacts"] and customer_list:
                    sets.append("customer_lists = list_filter(customer_lists, lambda x: x <> ?)")
                    params.append(customer_list)
                if sets:
                    n = count(f"SELECT count(*) FROM core.contacts WHERE contact_id IN {marks}", ids)
                    con.execute(
                        f"UPDATE core.contacts SET {', '.join(sets)} WHERE contact_id IN {marks}",
                        [*params, *ids],
                    )
                    if n:
                        removed["core.contacts (shared, store removed)"] = n
            if "core.identity_events" in tables and "records" in tables["core.identity_events"]:
                # surviving events no longer list the store's records
                n = count(
                    "SELECT count(*) FROM core.identity_events WHERE len(list_filter(records, lambda r: starts_with(r, ?))) > 0",
                    [shop + "|"],
                )
                if n:
                    con.execute(
                        "UPDATE core.identity_events SET records = list_filter(records, lambda r: NOT starts_with(r, ?))",
                        [shop + "|"],
                    )
                    removed["core.identity_events (store's records)"] = n
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()
    return removed


def shop_rows(warehouse: Path, shop: str) -> dict[str, int]:
    """Rows of ``shop`` per table (``shop``/``shop_l``/``shop_r`` columns) — what a delete would remove."""
    if not Path(warehouse).exists():
        return {}
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        found: dict[str, int] = {}
        for table, columns in _tables(con).items():
            conditions = [
                f'"{c}" = ?' for c in ("shop", "shop_l", "shop_r") if c in columns and _is_text(columns[c])
            ]
            if conditions:
                row = con.execute(
                    f"SELECT count(*) FROM {_q(table)} WHERE {' OR '.join(conditions)}",
                    [shop] * len(conditions),
                ).fetchone()
                if row and row[0]:
                    found[table] = int(row[0])
        return found
    finally:
        con.close()
