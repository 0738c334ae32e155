"""In-memory state of the devstore: shops, their records, apps, tokens and logs.

Records are plain dicts in the internal shape declared by ``devstore.model`` (snake_case
columns; ids numeric). The GraphQL layer maps them to Shopify's types; mutations, the
control API and the bulk runner change them through ``ShopState`` methods so that
``updated_at`` moves, the write log records the change and webhooks are emitted in one
place.

Thread safety: one ``threading.RLock`` per shop (``ShopState.lock``); every reader and
writer of a shop's records holds it.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

# Entities the devstore serves, keyed by the table name in ``devstore.model``.
ENTITY_TABLES: tuple[str, ...] = (
    "customers",
    "orders",
    "products",
    "collections",
    "abandoned_checkouts",
)
# child table -> (parent table, foreign-key column)
CHILD_TABLES: dict[str, tuple[str, str]] = {
    "customer_addresses": ("customers", "customer_id"),
    "order_line_items": ("orders", "order_id"),
    "refunds": ("orders", "order_id"),
    "variants": ("products", "product_id"),
    "collection_products": ("collections", "collection_id"),
    "checkout_line_items": ("abandoned_checkouts", "checkout_id"),
    "metafields": ("customers", "owner_id"),
}

# Scopes a fully-granted app has.
ALL_SCOPES: tuple[str, ...] = (
    "read_customers",
    "write_customers",
    "read_orders",
    "read_all_orders",
    "read_products",
    "read_content",
)

# table -> Admin API type name used in gids
GID_TYPES: dict[str, str] = {
    "customers": "Customer",
    "orders": "Order",
    "products": "Product",
    "collections": "Collection",
    "abandoned_checkouts": "AbandonedCheckout",
    "customer_addresses": "MailingAddress",
    "metafields": "Metafield",
    "variants": "ProductVariant",
    "order_line_items": "LineItem",
}

Record = dict[str, Any]
WebhookListener = Callable[["ShopState", str, dict[str, Any]], None]


class Clock:
    """The devstore's notion of now; tests may shift it forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        """Current devstore time (UTC, microseconds)."""
        return datetime.now(UTC) + self.offset


@dataclass
class AppCredentials:
    """One installed app on one shop: its client credentials, tokens and grant."""

    client_id: str
    client_secret: str
    scopes: set[str]
    # access token -> expiry (None = never expires, i.e. a static/offline token)
    tokens: dict[str, datetime | None] = field(default_factory=dict)
    installed: bool = True
    token_ttl: timedelta = timedelta(hours=24)
    # the app's allowed redirection URLs: the only redirect_uri values OAuth authorize accepts
    redirect_urls: list[str] = field(default_factory=list)
    # expiring offline tokens: refresh token -> its expiry, and the refresh token each one
    # replaced (kept valid until its replacement is first used, as Shopify does since 2026-08)
    refresh_tokens: dict[str, datetime] = field(default_factory=dict)
    replaced_by: dict[str, str] = field(default_factory=dict)
    # non-expiring tokens moved to expiring ones by token exchange -> (when, the answer given)
    migrated: dict[str, tuple[datetime, dict[str, Any]]] = field(default_factory=dict)

    def issue_token(self, now: datetime, ttl: timedelta | None) -> str:
        """Create a new access token valid for ``ttl`` (None = no expiry)."""
        token = "shpat_" + secrets.token_hex(16)
        self.tokens[token] = None if ttl is None else now + ttl
        return token

    def issue_refresh_token(self, now: datetime, ttl: timedelta, replacing: str | None = None) -> str:
        """Create a refresh token valid for ``ttl``; ``replacing`` stays valid until this one is used."""
        token = "shprt_" + secrets.token_hex(16)
        self.refresh_tokens[token] = now + ttl
        if replacing is not None:
            self.replaced_by[replacing] = token
        return token

    def use_refresh_token(self, token: str, now: datetime) -> bool:
        """Spend a refresh token; False if it is unknown or expired. The token it replaced stops
        working now, and it itself keeps working until its own replacement is first used."""
        expires = self.refresh_tokens.get(token)
        if expires is None or expires <= now:
            return False
        for old, new in list(self.replaced_by.items()):
            if new == token:
                self.refresh_tokens.pop(old, None)
                del self.replaced_by[old]
        return True


@dataclass
class WriteLogEntry:
    """One write the devstore received, for test assertions."""

    at: datetime
    shop: str
    operation: str  # mutation name or control-API action
    target: str  # gid or entity
    payload: dict[str, Any]
    outcome: str  # "ok" or the user error code


class ShopState:
    """Everything one shop holds."""

    def __init__(self, shop: Record, clock: Clock) -> None:
        self.info: Record = dict(shop)
        self.domain: str = shop["shop"]
        self.handle: str = shop["handle"]
        self.clock = clock
        self.lock = threading.RLock()
        # table -> id -> record; child tables -> parent id -> list of records
        self.records: dict[str, dict[int, Record]] = {t: {} for t in ENTITY_TABLES}
        self.children: dict[str, dict[int, list[Record]]] = {t: {} for t in CHILD_TABLES}
        self.apps: dict[str, AppCredentials] = {}  # client_id -> credentials
        self.write_log: list[WriteLogEntry] = []
        self.webhook_subscriptions: dict[int, Record] = {}
        self.bulk_operations: dict[int, Record] = {}
        self.listeners: list[WebhookListener] = []
        self._ids = itertools.count(10_000_000_000 + int(time.time()))
        # Moves on every record create, update, delete and load: indexes derived from the
        # records (orders per customer) are kept while it stands still.
        self.revision = 0
        self._derived: dict[str, tuple[int, Any]] = {}

    def derived(self, name: str, build: Callable[[], Any]) -> Any:
        """``build()``'s result, rebuilt only after a record changed (``revision`` moved)."""
        with self.lock:
            cached = self._derived.get(name)
            if cached is not None and cached[0] == self.revision:
                return cached[1]
            value = build()
            self._derived[name] = (self.revision, value)
            return value

    def uninstall_app(self, app: AppCredentials, operation: str) -> None:
        """Uninstall ``app`` as Shopify does: log it, emit app/uninstalled while its webhook
        subscriptions still exist, then drop its tokens and subscriptions."""
        with self.lock:
            self.log_write(operation, self.domain, {"client_id": app.client_id})
        self.emit("app/uninstalled", {})
        with self.lock:
            app.installed = False
            app.tokens.clear()
            app.refresh_tokens.clear()
            app.replaced_by.clear()
            for sub_id in [
                k for k, s in self.webhook_subscriptions.items() if s.get("client_id") in (app.client_id, "")
            ]:
                del self.webhook_subscriptions[sub_id]

    # ids -------------------------------------------------------------------------------
    def next_id(self) -> int:
        """A fresh numeric id, unique within the devstore process."""
        return next(self._ids)

    def bump_ids_past(self, max_id: int) -> None:
        """Ensure new ids are above any id loaded from a generated world."""
        current = next(self._ids)
        self._ids = itertools.count(max(current, max_id + 1))

    # loading -----------------------------------------------------------------------------
    def load_tables(self, tables: dict[str, pl.DataFrame]) -> None:
        """Replace this shop's records with the rows of ``tables`` that belong to it."""
        max_id = 0
        with self.lock:
            self.revision += 1
            for table in ENTITY_TABLES:
                frame = tables.get(table)
                rows = [] if frame is None else frame.filter(pl.col("shop") == self.domain).to_dicts()
                self.records[table] = {r["id"]: r for r in rows}
                if rows:
                    max_id = max(max_id, max(r["id"] for r in rows))
            for table, (_parent, fk) in CHILD_TABLES.items():
                frame = tables.get(table)
                grouped: dict[int, list[Record]] = {}
                if frame is not None:
                    for r in frame.filter(pl.col("shop") == self.domain).to_dicts():
                        grouped.setdefault(r[fk], []).append(r)
                        if "id" in r and r["id"] is not None:
                            max_id = max(max_id, r["id"])
                self.children[table] = grouped
        self.bump_ids_past(max_id)

    # writes ------------------------------------------------------------------------------
    def log_write(self, operation: str, target: str, payload: dict[str, Any], outcome: str = "ok") -> None:
        """Append to the write log (read back through the control API)."""
        self.write_log.append(
            WriteLogEntry(self.clock.now(), self.domain, operation, target, payload, outcome)
        )

    def emit(self, topic: str, payload: dict[str, Any]) -> None:
        """Tell every listener (the webhook dispatcher) that ``topic`` happened."""
        for listener in list(self.listeners):
            listener(self, topic, payload)

    # record changes (mutations and the control API go through these) --------------------
    def gid(self, table: str, record_id: int) -> str:
        """The Admin API global id of a record of ``table``."""
        return f"gid://shopify/{GID_TYPES.get(table, table)}/{record_id}"

    def _defaults(self, table: str, now: datetime) -> Record:
        """Values Shopify itself fills on create, so a sparse control-API record stays servable.

        Every column of the table's model schema is present afterwards (null where Shopify
        allows null); fields the Admin API declares non-null get Shopify's defaults.
        """
        from devstore import model

        row: Record = dict.fromkeys(model.TABLES[table])
        currency = self.info.get("currency_code") or "USD"
        money = "0.00"
        if table == "customers":
            row.update(tags=[], state="ENABLED", verified_email=False, tax_exempt=False, locale="en")
        elif table == "orders":
            row.update(
                test=False,
                tags=[],
                currency_code=currency,
                presentment_currency_code=currency,
                financial_status="PAID",
                fulfillment_status="UNFULFILLED",
                processed_at=now,
                source_name="web",
            )
            for column in model.ORDERS:
                if column.startswith(("subtotal_", "total_")):
                    row[column] = money
        elif table == "products":
            row.update(tags=[], status="ACTIVE", product_type="", vendor=self.info.get("name") or "")
        elif table == "abandoned_checkouts":
            row.update(currency_code=currency, total_price=money)
        return row

    def create_record(
        self,
        table: str,
        record: Record,
        *,
        operation: str,
        topic: str | None = None,
        at: datetime | None = None,
    ) -> Record:
        """Insert a top-level record (id assigned if missing), log it and emit ``topic``."""
        now = at or self.clock.now()
        with self.lock:
            row = dict(record)
            for column, default in self._defaults(table, now).items():
                if row.get(column) is None:  # absent or explicitly null: Shopify fills it
                    row[column] = default
            if row.get("id") is None:
                row["id"] = self.next_id()
            row["shop"] = self.domain
            if table == "orders" and not row.get("name"):
                row["name"] = f"#{1000 + len(self.records['orders']) + 1}"
            if table in {"products", "collections"} and not row.get("handle"):
                row["handle"] = str(row.get("title") or row["id"]).lower().replace(" ", "-")
            if row.get("created_at") is None and table != "collections":  # collections have no created_at
                row["created_at"] = now
            row["updated_at"] = now
            self.records[table][row["id"]] = row
            self.revision += 1
            self.log_write(operation, self.gid(table, row["id"]), dict(record))
            snapshot = dict(row)
        if topic:
            self.emit(topic, snapshot)
        return row

    def update_record(
        self,
        table: str,
        record_id: int,
        changes: dict[str, Any],
        *,
        operation: str,
        topics: tuple[str, ...] = (),
        at: datetime | None = None,
        log_payload: dict[str, Any] | None = None,
    ) -> Record | None:
        """Apply ``changes`` to a record, move its ``updated_at``, log and emit; None if absent.

        ``log_payload`` replaces ``changes`` in the write log when the change lives elsewhere
        (metafields, addresses).
        """
        with self.lock:
            row = self.records[table].get(record_id)
            if row is None:
                return None
            row.update(changes)
            row["updated_at"] = at or self.clock.now()
            self.revision += 1
            self.log_write(
                operation, self.gid(table, record_id), dict(changes) if log_payload is None else log_payload
            )
            snapshot = dict(row)
        for topic in topics:
            self.emit(topic, snapshot)
        return row

    def delete_record(
        self, table: str, record_id: int, *, operation: str, topic: str | None = None
    ) -> Record | None:
        """Remove a record and its children, log and emit ``topic``; None if absent."""
        with self.lock:
            row = self.records[table].pop(record_id, None)
            if row is None:
                return None
            self.revision += 1
            for child, (parent, _fk) in CHILD_TABLES.items():
                if parent == table:
                    self.children[child].pop(record_id, None)
            self.log_write(operation, self.gid(table, record_id), {})
            snapshot = dict(row)
        if topic:
            self.emit(topic, snapshot)
        return row


class World:
    """All shops the devstore serves, by handle and by domain."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.shops: dict[str, ShopState] = {}  # handle -> state
        self.lock = threading.RLock()

    def add_shop(self, shop: Record) -> ShopState:
        """Register a shop (a row of the ``shops`` table)."""
        state = ShopState(shop, self.clock)
        with self.lock:
            self.shops[state.handle] = state
        return state

    def shop(self, handle_or_domain: str) -> ShopState | None:
        """Look a shop up by handle (``acme``) or domain (``acme.myshopify.com``)."""
        handle = handle_or_domain.removesuffix(".myshopify.com")
        return self.shops.get(handle)

    @classmethod
    def from_tables(cls, tables: dict[str, pl.DataFrame], clock: Clock | None = None) -> World:
        """Build a world from generator output (``devstore.model`` tables)."""
        world = cls(clock)
        for shop in tables["shops"].to_dicts():
            world.add_shop(shop).load_tables(tables)
        return world
