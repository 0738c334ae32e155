"""The push journal: a write-ahead record of every reverse-sync write, outside the warehouse.

A push talks to Shopify for seconds or minutes and must not hold the warehouse meanwhile
(DESIGN.md decision 5), so its outcomes are recorded only after the network part. A process
killed in between would leave Shopify written and the warehouse unaware, and the next run
would send the same writes again. The journal closes that gap:

1. before a write is sent, its *intent* (an idempotency key, the intent id, plus what it
   writes) is committed to a small SQLite file per shop, synchronously to disk;
2. when Shopify answers, the intent gets the outcome row (``answered``);
3. once the warehouse has committed the outcome, the intent is ``recorded``.

The next push of the shop first settles what an earlier one left: an intent that never got an
answer is verified against Shopify (the consent state and its ``consentUpdatedAt``, the
metafield value, the origin metafield's write id, the profile fields) and becomes either
``answered`` (it landed) or ``void`` (it did not, so it may be planned and sent again); an
answered intent not yet recorded is handed to the recorder again. Either way no write is sent
twice, and the warehouse records each once (``sync.push_log`` skips intent ids it has).

One push per shop at a time: :meth:`PushJournal.exclusive` holds an OS file lock for the
network part. This module is I/O only (SQLite and a lock file); the pusher decides what to do.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PENDING = "pending"
ANSWERED = "answered"
VOID = "void"
RECORDED = "recorded"
# settled intents older than this are pruned when the journal is opened
KEEP_SETTLED_S = 7 * 24 * 3600

_DDL = """
CREATE TABLE IF NOT EXISTS intents (
    intent_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    shop TEXT NOT NULL,
    customer_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    payload_hash TEXT,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS intents_status ON intents (status);
CREATE INDEX IF NOT EXISTS intents_target ON intents (customer_id, kind, key);
"""


class PushBusy(Exception):
    """Another push to the same store is running and did not finish within the wait."""

    def __init__(self, shop: str, waited_s: float) -> None:
        super().__init__(
            f"Another push to {shop} has been running for more than {waited_s:.0f} s; this one sent nothing. "
            "It will be retried by the next run (or run `shopsync push run` again once the other finishes)."
        )
        self.shop = shop


@dataclass(frozen=True)
class Intent:
    """One write the pusher is about to send (or has sent)."""

    intent_id: str
    run_id: str
    shop: str
    customer_id: int
    kind: str
    key: str
    payload_hash: str | None
    request: dict[str, Any]  # what the write sets: enough to verify it and to resend it unchanged
    status: str = PENDING
    outcome: dict[str, Any] | None = None


def journal_path(folder: Path, shop: str) -> Path:
    """The journal file of one shop under ``folder``."""
    return Path(folder) / f"{shop}.sqlite"


class PushJournal:
    """The write-ahead intents of one shop (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(str(self.path), isolation_level=None, timeout=30)
        # WAL; intents are committed with synchronous=FULL (on disk before the write they announce
        # is sent), answers with NORMAL: an answer lost to a power cut leaves its intent pending,
        # and the next run verifies it against Shopify, so only intents need the fsync.
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=NORMAL")
        self._con.executescript(_DDL)
        self._con.execute(
            "DELETE FROM intents WHERE status IN (?, ?) AND updated_at < ?",
            [RECORDED, VOID, time.time() - KEEP_SETTLED_S],
        )

    def close(self) -> None:
        """Close the SQLite connection."""
        self._con.close()

    def __enter__(self) -> PushJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def exclusive(self, shop: str, *, wait_s: float = 600.0) -> Iterator[None]:
        """Hold the shop's push lock (waiting up to ``wait_s`` for another push to finish)."""
        lock_path = self.path.with_suffix(".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        started = time.monotonic()
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() - started > wait_s:
                        raise PushBusy(shop, wait_s) from None
                    time.sleep(0.2)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    # writing -------------------------------------------------------------------------
    def begin(self, intents: Iterable[Intent]) -> None:
        """Commit new intents (status pending) before their write is sent; known ids are left as they are."""
        now = time.time()
        rows = [
            (
                i.intent_id,
                i.run_id,
                i.shop,
                i.customer_id,
                i.kind,
                i.key,
                i.payload_hash,
                json.dumps(i.request, sort_keys=True),
                PENDING,
                None,
                now,
                now,
            )
            for i in intents
        ]
        if not rows:
            return
        self._con.execute("PRAGMA synchronous=FULL")
        try:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                self._con.executemany(
                    "INSERT OR IGNORE INTO intents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
                )
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
        finally:
            self._con.execute("PRAGMA synchronous=NORMAL")

    def answer(self, intent_id: str, outcome: dict[str, Any]) -> None:
        """Shopify answered (or verification settled it): keep the outcome row for the recorder."""
        self._con.execute(
            "UPDATE intents SET status = ?, outcome = ?, updated_at = ? WHERE intent_id = ?",
            [ANSWERED, json.dumps(outcome, default=str, sort_keys=True), time.time(), intent_id],
        )

    def void(self, intent_id: str) -> None:
        """The write never landed: nothing to record; the planner will plan it again."""
        self._con.execute(
            "UPDATE intents SET status = ?, updated_at = ? WHERE intent_id = ? AND status = ?",
            [VOID, time.time(), intent_id, PENDING],
        )

    def mark_recorded(self, intent_ids: Iterable[str]) -> int:
        """The warehouse committed these outcomes; returns how many intents changed."""
        ids = [i for i in intent_ids if i]
        if not ids:
            return 0
        now = time.time()
        self._con.execute("BEGIN IMMEDIATE")
        try:
            changed = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                changed += self._con.execute(
                    f"UPDATE intents SET status = ?, updated_at = ? WHERE status = ? AND intent_id IN ({marks})",
                    [RECORDED, now, ANSWERED, *chunk],
                ).rowcount
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        return changed

    # reading -------------------------------------------------------------------------
    def _select(self, where: str, params: list[Any]) -> list[Intent]:
        rows = self._con.execute(
            "SELECT intent_id, run_id, shop, customer_id, kind, key, payload_hash, request, status, outcome "
            f"FROM intents WHERE {where} ORDER BY rowid",
            params,
        ).fetchall()
        return [
            Intent(
                intent_id=r[0],
                run_id=r[1],
                shop=r[2],
                customer_id=int(r[3]),
                kind=r[4],
                key=r[5],
                payload_hash=r[6],
                request=json.loads(r[7]),
                status=r[8],
                outcome=json.loads(r[9]) if r[9] else None,
            )
            for r in rows
        ]

    def pending(self) -> list[Intent]:
        """Intents sent (or about to be) that never got an answer: verify them before anything else."""
        return self._select("status = ?", [PENDING])

    def unrecorded(self) -> list[Intent]:
        """Answered intents whose outcome the warehouse has not committed yet."""
        return self._select("status = ?", [ANSWERED])

    def latest(self, customer_id: int, kind: str, key: str) -> Intent | None:
        """The newest intent for one target, whatever its status."""
        found = self._select(
            "rowid = (SELECT max(rowid) FROM intents WHERE customer_id = ? AND kind = ? AND key = ?)",
            [customer_id, kind, key],
        )
        return found[0] if found else None

    def counts(self) -> dict[str, int]:
        """Intents per status (for diagnostics and tests)."""
        return {s: int(n) for s, n in self._con.execute("SELECT status, count(*) FROM intents GROUP BY 1")}
