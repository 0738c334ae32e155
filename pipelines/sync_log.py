"""The reverse-sync ledger in the warehouse: ``sync.push_log``, ``sync.pushed_state``, ``sync.dead_letters``.

The one place that reads and writes these tables (and ``sync.inbound_echoes``: customer versions
loaded from Shopify that only carried our own writes back, counted once each). ``sync.pushed_state`` holds, per
``(shop, customer_id, kind, key)``, the hash of the last payload Shopify accepted (the
planner diffs against it), the metafield ``compareDigest`` and the origin write id of that
write, plus the retry bookkeeping of failures since (attempts, next attempt time, last error).
After ``max_attempts`` failures a row goes to ``sync.dead_letters`` and waits for
``shopsync push retry-dead``.

Callers open the DuckDB connection (the warehouse writer holds the ``warehouse`` pool) and pass it in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import duckdb
import polars as pl

from transforms.reverse_sync import DEAD_SCHEMA, PUSHED_STATE_SCHEMA

TS = pl.Datetime("us", "UTC")
MAX_ATTEMPTS = 5
BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_CAP = timedelta(hours=6)

_DDL = """
CREATE SCHEMA IF NOT EXISTS sync;
CREATE TABLE IF NOT EXISTS sync.push_log (
    run_id VARCHAR, logged_at TIMESTAMPTZ, shop VARCHAR, customer_id BIGINT, kind VARCHAR, key VARCHAR,
    operation VARCHAR, outcome VARCHAR, error VARCHAR, payload_hash VARCHAR, write_id VARCHAR
);
CREATE TABLE IF NOT EXISTS sync.pushed_state (
    shop VARCHAR, customer_id BIGINT, kind VARCHAR, key VARCHAR,
    payload_hash VARCHAR, payload VARCHAR, digest VARCHAR, write_id VARCHAR,
    shopify_updated_at TIMESTAMPTZ, pushed_at TIMESTAMPTZ,
    attempts BIGINT DEFAULT 0, next_attempt_at TIMESTAMPTZ, last_error VARCHAR,
    PRIMARY KEY (shop, customer_id, kind, key)
);
CREATE TABLE IF NOT EXISTS sync.dead_letters (
    shop VARCHAR, customer_id BIGINT, kind VARCHAR, key VARCHAR, payload_hash VARCHAR,
    payload VARCHAR, attempts BIGINT, last_error VARCHAR, dead_at TIMESTAMPTZ, replayed_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS sync.inbound_echoes (
    shop VARCHAR, customer_id BIGINT, updated_at TIMESTAMPTZ, write_id VARCHAR, seen_at TIMESTAMPTZ,
    PRIMARY KEY (shop, customer_id, updated_at)
);
"""

OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "kind": pl.String,
    "key": pl.String,
    "operation": pl.String,
    "outcome": pl.String,  # written | unchanged | failed | skipped
    "error": pl.String,
    "payload": pl.String,
    "payload_hash": pl.String,
    "digest": pl.String,
    "write_id": pl.String,
    "shopify_updated_at": TS,
    "intent_id": pl.String,  # the push journal's idempotency key (null for rows that wrote nothing)
}
SUCCESS_OUTCOMES = ("written", "unchanged")


@dataclass
class RecordSummary:
    """What ``record`` did."""

    logged: int = 0
    succeeded: int = 0
    failed: int = 0
    dead: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)
    echoes: int = 0
    # earliest next attempt per kind of the store's writes waiting to be retried
    next_retry: dict[str, datetime] = field(default_factory=dict)


def _frame(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> pl.DataFrame:
    # duckdb 2.0's connection has no .pl(); go through Arrow
    result = pl.from_arrow(con.sql(sql, params=params or None).to_arrow_table())
    assert isinstance(result, pl.DataFrame)
    return result


_MIGRATIONS = (
    # columns added after the first release; ADD COLUMN IF NOT EXISTS keeps old warehouses working
    "ALTER TABLE sync.push_log ADD COLUMN IF NOT EXISTS intent_id VARCHAR",
)


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ``sync`` tables if they do not exist (and add columns newer releases need)."""
    con.execute(_DDL)
    for statement in _MIGRATIONS:
        con.execute(statement)


def has_tables(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the ``sync`` tables exist (a read-only connection cannot create them)."""
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'sync' AND table_name = 'dead_letters'"
    ).fetchall()
    return bool(row and row[0][0])


def _ensure_readable(con: duckdb.DuckDBPyConnection) -> bool:
    if has_tables(con):
        return True
    try:
        ensure_schema(con)
    except duckdb.Error:  # read-only: nothing recorded yet
        return False
    return True


def read_pushed_state(con: duckdb.DuckDBPyConnection, shop: str | None = None) -> pl.DataFrame:
    """``sync.pushed_state`` (optionally one shop) in the planner's ``PUSHED_STATE_SCHEMA``."""
    if not _ensure_readable(con):
        return pl.DataFrame(schema=PUSHED_STATE_SCHEMA)
    cols = ", ".join(PUSHED_STATE_SCHEMA)
    where = "WHERE shop = ?" if shop else ""
    frame = _frame(con, f"SELECT {cols} FROM sync.pushed_state {where}", [shop] if shop else [])
    return frame.cast(PUSHED_STATE_SCHEMA)  # type: ignore[arg-type]


def read_dead_letters(
    con: duckdb.DuckDBPyConnection, shop: str | None = None, *, include_replayed: bool = False
) -> pl.DataFrame:
    """Dead letters not yet replayed (``DEAD_SCHEMA`` plus attempts, last_error, dead_at)."""
    if not _ensure_readable(con):
        return pl.DataFrame(schema=DEAD_SCHEMA)
    clauses = [] if include_replayed else ["replayed_at IS NULL"]
    params: list[Any] = []
    if shop:
        clauses.append("shop = ?")
        params.append(shop)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    frame = _frame(
        con,
        f"SELECT {', '.join(DEAD_SCHEMA)}, payload, attempts, last_error, dead_at FROM sync.dead_letters {where}"
        " ORDER BY dead_at",
        params,
    )
    return frame.cast(DEAD_SCHEMA)  # type: ignore[arg-type]


def backoff(attempts: int) -> timedelta:
    """Wait before the next attempt after ``attempts`` failures (doubling, capped)."""
    return min(BACKOFF_CAP, BACKOFF_BASE * (2 ** max(0, attempts - 1)))


def record(
    con: duckdb.DuckDBPyConnection,
    outcomes: pl.DataFrame,
    *,
    run_id: str,
    at: datetime,
    max_attempts: int = MAX_ATTEMPTS,
) -> RecordSummary:
    """Log every op, advance ``pushed_state`` on success, count failures, dead-letter after ``max_attempts``."""
    ensure_schema(con)
    summary = RecordSummary()
    if outcomes.is_empty():
        return summary
    frame = outcomes.select(
        [
            pl.col(c).cast(t) if c in outcomes.columns else pl.lit(None, t).alias(c)
            for c, t in OUTCOME_SCHEMA.items()
        ]
    )
    frame = _new_only(con, frame)
    summary.logged = frame.height
    if frame.is_empty():
        return summary
    summary.by_outcome = {str(k): int(n) for k, n in frame.group_by("outcome").len().iter_rows()}
    con.execute("BEGIN")
    try:
        log = frame.select(
            pl.lit(run_id).alias("run_id"),
            pl.lit(at).cast(TS).alias("logged_at"),
            "shop",
            "customer_id",
            "kind",
            "key",
            "operation",
            "outcome",
            "error",
            "payload_hash",
            "write_id",
            "intent_id",
        )
        con.register("_push_log_in", log.to_arrow())
        con.execute("INSERT INTO sync.push_log BY NAME SELECT * FROM _push_log_in")
        con.unregister("_push_log_in")

        ok = frame.filter(pl.col("outcome").is_in(SUCCESS_OUTCOMES))
        summary.succeeded = ok.height
        if ok.height:
            con.register("_ok_in", ok.with_columns(pl.lit(at).cast(TS).alias("pushed_at")).to_arrow())
            con.execute(
                """
                INSERT INTO sync.pushed_state
                  (shop, customer_id, kind, key, payload_hash, payload, digest, write_id,
                   shopify_updated_at, pushed_at, attempts, next_attempt_at, last_error)
                SELECT shop, customer_id, kind, key, payload_hash, payload, digest, write_id,
                       shopify_updated_at, pushed_at, 0, NULL, NULL FROM _ok_in
                ON CONFLICT (shop, customer_id, kind, key) DO UPDATE SET
                  payload_hash = excluded.payload_hash, payload = excluded.payload,
                  digest = coalesce(excluded.digest, sync.pushed_state.digest),
                  write_id = coalesce(excluded.write_id, sync.pushed_state.write_id),
                  shopify_updated_at = coalesce(excluded.shopify_updated_at, sync.pushed_state.shopify_updated_at),
                  pushed_at = excluded.pushed_at, attempts = 0, next_attempt_at = NULL, last_error = NULL
                """
            )
            con.unregister("_ok_in")

        failed = frame.filter(pl.col("outcome") == "failed")
        summary.failed = failed.height
        for row in failed.iter_rows(named=True):
            key = [row["shop"], row["customer_id"], row["kind"], row["key"]]
            prior = con.execute(
                "SELECT attempts FROM sync.pushed_state WHERE shop=? AND customer_id=? AND kind=? AND key=?",
                key,
            ).fetchall()
            attempts = (int(prior[0][0] or 0) if prior else 0) + 1
            if attempts >= max_attempts:
                summary.dead += 1
                con.execute(
                    "INSERT INTO sync.dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                    [*key, row["payload_hash"], row["payload"], attempts, row["error"], at],
                )
                next_at = None
            else:
                next_at = at + backoff(attempts)
            con.execute(
                """
                INSERT INTO sync.pushed_state (shop, customer_id, kind, key, attempts, next_attempt_at, last_error)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (shop, customer_id, kind, key) DO UPDATE SET
                  attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,
                  last_error = excluded.last_error
                """,
                [*key, attempts, next_at, row["error"]],
            )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return summary


def _new_only(con: duckdb.DuckDBPyConnection, frame: pl.DataFrame) -> pl.DataFrame:
    """Drop outcomes the log already has.

    * an outcome of a journal intent already logged with the same outcome (a recovered run
      hands the recorder what a killed or concurrent run may have recorded already);
    * a skip whose target's latest log row is the same skip of the same payload (a customer
      without an email is logged once per change, not on every run).
    """
    keys = ["shop", "customer_id", "kind", "key"]
    logged = _frame(
        con,
        "SELECT intent_id, outcome FROM sync.push_log WHERE intent_id IS NOT NULL AND intent_id IN "
        "(SELECT unnest(?::VARCHAR[]))",
        [[i for i in frame["intent_id"].drop_nulls().to_list()]],
    )
    if logged.height:
        seen = logged.select(
            pl.col("intent_id").cast(pl.String), pl.col("outcome").cast(pl.String), _seen=True
        )
        frame = (
            frame.join(seen, on=["intent_id", "outcome"], how="left", nulls_equal=False)
            .filter(pl.col("_seen").is_null())
            .drop("_seen")
        )
    skips = frame.filter(pl.col("outcome") == "skipped")
    if skips.height:
        latest = _frame(
            con,
            "SELECT shop, customer_id, kind, key, outcome AS _outcome, payload_hash AS _hash, error AS _error "
            "FROM sync.push_log WHERE shop IN (SELECT unnest(?::VARCHAR[])) "
            "QUALIFY row_number() OVER (PARTITION BY shop, customer_id, kind, key ORDER BY logged_at DESC) = 1",
            [skips["shop"].unique().to_list()],
        )
        if latest.height:
            latest = latest.cast(
                {"customer_id": pl.Int64, "shop": pl.String, "kind": pl.String, "key": pl.String}
            )
            repeated = (
                skips.join(latest, on=keys, how="inner")
                .filter(
                    (pl.col("_outcome") == "skipped")
                    & (pl.col("_hash").eq_missing(pl.col("payload_hash")))
                    & (pl.col("_error").eq_missing(pl.col("error")))
                )
                .select(keys)
                .with_columns(_repeat=pl.lit(True))
            )
            frame = (
                frame.join(repeated, on=keys, how="left")
                .filter(~(pl.col("_repeat").fill_null(False) & (pl.col("outcome") == "skipped")))
                .drop("_repeat")
            )
    return frame


def unseen_echoes(con: duckdb.DuckDBPyConnection, echoes: pl.DataFrame) -> pl.DataFrame:
    """The echoes not counted yet (read-only: works on the planner's read-only connection)."""
    if echoes.is_empty() or not _ensure_readable(con):
        return echoes
    seen = _frame(con, "SELECT shop, customer_id, updated_at FROM sync.inbound_echoes", [])
    if seen.is_empty():
        return echoes
    seen = seen.with_columns(pl.col("updated_at").cast(TS), pl.col("customer_id").cast(pl.Int64))
    return echoes.join(seen, on=["shop", "customer_id", "updated_at"], how="anti")


def record_echoes(con: duckdb.DuckDBPyConnection, echoes: pl.DataFrame, *, at: datetime) -> int:
    """Count inbound echoes of our writes once each in ``sync.inbound_echoes``; returns the new ones."""
    ensure_schema(con)
    if echoes.is_empty():
        return 0
    frame = echoes.select(
        "shop",
        "customer_id",
        pl.col("updated_at").cast(TS),
        pl.col("origin_write_id").alias("write_id"),
        pl.lit(at).cast(TS).alias("seen_at"),
    )
    con.register("_echoes_in", frame.to_arrow())
    try:
        before = con.execute("SELECT count(*) FROM sync.inbound_echoes").fetchall()[0][0]
        con.execute("INSERT OR IGNORE INTO sync.inbound_echoes BY NAME SELECT * FROM _echoes_in")
        after = con.execute("SELECT count(*) FROM sync.inbound_echoes").fetchall()[0][0]
    finally:
        con.unregister("_echoes_in")
    return int(after - before)


def due_retries(con: duckdb.DuckDBPyConnection, shop: str) -> dict[str, datetime]:
    """Earliest next attempt per kind among the store's failed writes not dead-lettered."""
    ensure_schema(con)
    rows = con.execute(
        "SELECT kind, min(next_attempt_at) FROM sync.pushed_state "
        "WHERE shop = ? AND attempts > 0 AND next_attempt_at IS NOT NULL GROUP BY kind ORDER BY kind",
        [shop],
    ).fetchall()
    return {str(kind): at for kind, at in rows}


def replay_dead_letters(con: duckdb.DuckDBPyConnection, shop: str, *, at: datetime) -> int:
    """Mark a shop's dead letters replayed and reset their attempts, so the next plan sends them again."""
    ensure_schema(con)
    rows = con.execute(
        "SELECT customer_id, kind, key FROM sync.dead_letters WHERE shop = ? AND replayed_at IS NULL", [shop]
    ).fetchall()
    con.execute("BEGIN")
    try:
        for customer_id, kind, key in rows:
            con.execute(
                "UPDATE sync.pushed_state SET attempts = 0, next_attempt_at = NULL "
                "WHERE shop = ? AND customer_id = ? AND kind = ? AND key = ?",
                [shop, customer_id, kind, key],
            )
        con.execute(
            "UPDATE sync.dead_letters SET replayed_at = ? WHERE shop = ? AND replayed_at IS NULL", [at, shop]
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return len(rows)


def push_log(con: duckdb.DuckDBPyConnection, shop: str | None = None) -> pl.DataFrame:
    """The push log (optionally one shop), oldest first."""
    ensure_schema(con)
    where = "WHERE shop = ?" if shop else ""
    return _frame(con, f"SELECT * FROM sync.push_log {where} ORDER BY logged_at", [shop] if shop else [])
