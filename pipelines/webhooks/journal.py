"""The receiver's journal: every accepted delivery made durable before Shopify gets its 200.

A small SQLite database beside the landing zone (WAL mode, ``synchronous=FULL``: a
delivery is on disk when ``record`` returns). It dedupes on ``X-Shopify-Event-Id`` (Shopify
delivers at least once and retries), remembers the newest ``updated_at`` seen per resource
so an out-of-date delivery is recognised, and hands unsealed deliveries to ``seal``, which
turns them into immutable landing batches (one per shop) for the loader's side.

Privacy topics (``customers/data_request``, ``customers/redact``, ``shop/redact``) are sealed
apart, into ``<landing>/_privacy/requests/``, with the personal fields Shopify puts in them
(the customer's email and phone) left out: the request needs only the ids.
"""

from __future__ import annotations

import contextlib
import json
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pipelines import landing

ENTITY = "webhooks"
Outcome = Literal["accepted", "duplicate", "stale", "dropped"]
# Shopify's mandatory compliance topics: accepted whatever the store's status.
PRIVACY_TOPICS = frozenset({"customers/data_request", "customers/redact", "shop/redact"})
# Where sealed privacy requests land: ``<landing>/_privacy/requests/`` (every store of the project).
PRIVACY_FOLDER = "_privacy"
PRIVACY_ENTITY = "requests"
LandingRoot = Path | Callable[[str], Path]


def privacy_request(payload: dict[str, Any]) -> dict[str, Any]:
    """The ids of a compliance payload, without the personal fields (email, phone) it carries."""
    customer = payload.get("customer") if isinstance(payload.get("customer"), dict) else None
    kept: dict[str, Any] = {
        k: payload[k]
        for k in ("shop_id", "shop_domain", "orders_requested", "orders_to_redact", "data_request")
        if k in payload
    }
    if customer is not None:
        kept["customer"] = {"id": customer.get("id")}
    return kept


_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    event_id     TEXT PRIMARY KEY,
    shop         TEXT NOT NULL,
    topic        TEXT NOT NULL,
    webhook_id   TEXT,
    triggered_at TEXT,
    received_at  TEXT NOT NULL,
    resource     TEXT,
    updated_at   TEXT,
    outcome      TEXT NOT NULL,
    body         BLOB NOT NULL,
    batch_id     TEXT,              -- the landing batch claimed for it; '-' = never sealed
    sealed       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deliveries_unsealed ON deliveries (sealed, shop);
CREATE TABLE IF NOT EXISTS resource_versions (
    shop       TEXT NOT NULL,
    resource   TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (shop, resource)
);
"""


@dataclass(frozen=True)
class Delivery:
    """One verified delivery, as the receiver saw it."""

    event_id: str
    shop: str
    topic: str
    webhook_id: str | None
    triggered_at: str | None
    body: bytes
    payload: dict[str, Any]


def _resource_of(payload: dict[str, Any]) -> tuple[str | None, str | None]:
    """The resource a payload is about (its GraphQL id) and its ``updated_at``, if it says."""
    resource = payload.get("admin_graphql_api_id")
    if resource is None and isinstance(payload.get("customer"), dict):
        resource = payload["customer"].get("admin_graphql_api_id")
    updated = payload.get("updated_at")
    return (str(resource) if resource else None, str(updated) if updated else None)


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


class Journal:
    """Thread-safe durable journal of webhook deliveries."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._queue: queue.Queue[tuple[Delivery, bool, Future[Outcome]] | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="webhook-journal", daemon=True)
        self._writer.start()

    def close(self) -> None:
        """Finish pending writes and close the database."""
        self._queue.put(None)
        self._writer.join()
        with self._lock:
            self._db.close()

    def record(self, delivery: Delivery, *, dropped: bool = False) -> Outcome:
        """Make ``delivery`` durable (or recognise it) and say what became of it.

        ``duplicate``: this event id was journalled before. ``stale``: the payload's
        ``updated_at`` is older than one already received for the same resource; it is kept
        for the record but never sealed. ``dropped``: acknowledged for a store that is not
        syncing (disconnected); kept for the record only.

        Concurrent callers are group-committed: one writer thread commits every delivery
        waiting at that moment in a single transaction, so one fsync serves many requests.
        Returns only after the commit.
        """
        future: Future[Outcome] = Future()
        self._queue.put((delivery, dropped, future))
        return future.result()

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            pending = [first]
            while len(pending) < 512:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this group
                    break
                pending.append(item)
            with self._lock:
                cur = self._db.cursor()
                try:
                    cur.execute("BEGIN IMMEDIATE")
                    outcomes = [self._apply(cur, delivery, dropped) for delivery, dropped, _ in pending]
                    cur.execute("COMMIT")
                except BaseException as exc:
                    with contextlib.suppress(sqlite3.Error):
                        cur.execute("ROLLBACK")
                    for _, _, future in pending:
                        future.set_exception(exc)
                    continue
            for (_, _, future), outcome in zip(pending, outcomes, strict=True):
                future.set_result(outcome)

    def _apply(self, cur: sqlite3.Cursor, delivery: Delivery, dropped: bool) -> Outcome:
        resource, updated_at = _resource_of(delivery.payload)
        if cur.execute("SELECT 1 FROM deliveries WHERE event_id = ?", (delivery.event_id,)).fetchone():
            return "duplicate"
        outcome: Outcome = "dropped" if dropped else "accepted"
        if outcome == "accepted" and resource and updated_at:
            row = cur.execute(
                "SELECT updated_at FROM resource_versions WHERE shop = ? AND resource = ?",
                (delivery.shop, resource),
            ).fetchone()
            if row and _instant(row[0]) > _instant(updated_at):
                outcome = "stale"
            else:
                cur.execute(
                    "INSERT INTO resource_versions VALUES (?, ?, ?) ON CONFLICT (shop, resource) "
                    "DO UPDATE SET updated_at = excluded.updated_at",
                    (delivery.shop, resource, updated_at),
                )
        cur.execute(
            "INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                delivery.event_id,
                delivery.shop,
                delivery.topic,
                delivery.webhook_id,
                delivery.triggered_at,
                datetime.now(UTC).isoformat(),
                resource,
                updated_at,
                outcome,
                delivery.body,
                # stale and dropped deliveries are never sealed into batches
                None if outcome == "accepted" else "-",
                0 if outcome == "accepted" else 1,
            ),
        )
        return outcome

    def counts(self) -> dict[str, int]:
        """Deliveries journalled per outcome."""
        with self._lock:
            rows = self._db.execute("SELECT outcome, count(*) FROM deliveries GROUP BY outcome").fetchall()
        return {outcome: n for outcome, n in rows}

    def seal(self, landing_root: LandingRoot) -> list[landing.Manifest]:
        """Move unsealed deliveries into landing batches, one per shop, oldest event first.

        ``landing_root`` is a folder, or a function giving each shop's (each project has
        its own landing zone). Each row is ``{"event_id", "topic", "triggered_at",
        "received_at", "payload"}`` in ``<root>/<shop>/webhooks/``; privacy requests go to
        ``<root>/_privacy/requests/`` with the shop added and the payload reduced to ids.
        Two steps make it exactly-once across crashes: rows are first claimed for a batch
        id (committed), then the batch is written and the rows marked sealed. A crash in
        between leaves claimed, unsealed rows, which the next call writes under the same
        batch id (``write_batch`` is idempotent per id).
        """
        root_for = landing_root if callable(landing_root) else (lambda _shop: landing_root)
        privacy = ", ".join(f"'{t}'" for t in sorted(PRIVACY_TOPICS))
        manifests: list[landing.Manifest] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for (shop,) in self._db.execute(
                "SELECT DISTINCT shop FROM deliveries WHERE sealed = 0 AND batch_id IS NULL"
            ).fetchall():
                for kind, condition in (
                    ("webhook", f"topic NOT IN ({privacy})"),
                    ("privacy", f"topic IN ({privacy})"),
                ):
                    self._db.execute(
                        f"UPDATE deliveries SET batch_id = ? WHERE shop = ? AND sealed = 0 AND batch_id IS NULL "
                        f"AND {condition}",
                        (landing.new_batch_id(kind), shop),
                    )
            self._db.execute("COMMIT")
            claimed = self._db.execute(
                "SELECT DISTINCT shop, batch_id FROM deliveries WHERE sealed = 0 ORDER BY batch_id"
            ).fetchall()
            for shop, batch_id in claimed:
                rows = self._db.execute(
                    "SELECT event_id, topic, triggered_at, received_at, body FROM deliveries "
                    "WHERE batch_id = ? ORDER BY coalesce(triggered_at, received_at), event_id",
                    (batch_id,),
                ).fetchall()
                is_privacy = bool(rows) and rows[0][1] in PRIVACY_TOPICS
                lines = [
                    {
                        "event_id": event_id,
                        "topic": topic,
                        "triggered_at": triggered_at,
                        "received_at": received_at,
                        **(
                            {"shop": shop, "payload": privacy_request(json.loads(body))}
                            if is_privacy
                            else {"payload": json.loads(body)}
                        ),
                    }
                    for event_id, topic, triggered_at, received_at, body in rows
                ]
                manifests.append(
                    landing.write_batch(
                        root_for(shop),
                        PRIVACY_FOLDER if is_privacy else shop,
                        PRIVACY_ENTITY if is_privacy else ENTITY,
                        "webhook",
                        lines,
                        batch_id=batch_id,
                        extra={"deliveries": len(lines)},
                    )
                )
                self._db.execute("UPDATE deliveries SET sealed = 1 WHERE batch_id = ?", (batch_id,))
        return manifests


def _connect(path: Path) -> sqlite3.Connection:
    # Another process (the receiver) may hold the journal: wait for its writer, don't fail.
    return sqlite3.connect(path, timeout=30, isolation_level=None)


def forget_shop(path: Path, shop: str) -> int:
    """Remove every delivery (and version mark) of a deleted store from the journal; deliveries removed."""
    if not Path(path).exists():
        return 0
    db = _connect(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        removed = db.execute("DELETE FROM deliveries WHERE shop = ?", (shop,)).rowcount
        db.execute("DELETE FROM resource_versions WHERE shop = ?", (shop,))
        db.execute("COMMIT")
        return int(removed)
    finally:
        db.close()


def redact_deliveries(
    path: Path,
    shop: str,
    is_about: Callable[[dict[str, Any]], bool],
    scrub: Callable[[Any], Any],
) -> int:
    """Rewrite the bodies of a shop's deliveries about one person with their personal fields removed.

    ``is_about`` gets ``{"topic", "payload"}``; matching bodies are replaced by
    ``scrub(payload)``. The rows stay, so a redelivery is still recognised as a duplicate.
    """
    if not Path(path).exists():
        return 0
    db = _connect(path)
    changed = 0
    try:
        db.execute("BEGIN IMMEDIATE")
        for event_id, topic, body in db.execute(
            "SELECT event_id, topic, body FROM deliveries WHERE shop = ?", (shop,)
        ).fetchall():
            try:
                payload = json.loads(body)
            except ValueError:
                continue
            if is_about({"topic": topic, "payload": payload}):
                scrubbed = json.dumps(scrub(payload)).encode()
                if scrubbed != bytes(body):
                    db.execute("UPDATE deliveries SET body = ? WHERE event_id = ?", (scrubbed, event_id))
                    changed += 1
        db.execute("COMMIT")
    finally:
        db.close()
    return changed
