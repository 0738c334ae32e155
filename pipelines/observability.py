"""The sync-health ledger in the warehouse: ``ops.sync_lag`` samples and the ``ops.sync_health`` figures.

``ops.sync_lag`` gets one row per change the loader wrote from an incremental read or a
webhook: when Shopify says it changed (``updated_at``, or a delete's trigger time) and when
it was committed to the warehouse. Bulk exports and reconciliations are not sampled: they
carry history, not fresh changes, and would drown the figure in backfill ages.

``ops.sync_health`` keeps every health evaluation (one row per figure and evaluation), so
a check can tell whether dead letters grew since the last one; the ``sync_health`` mart
shows the latest.

Callers open the DuckDB connection (they hold the warehouse) and pass it in.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import duckdb
import polars as pl

from transforms.sync_health import (
    CONSENT_FAILURE_SCHEMA,
    DEAD_LETTER_SCHEMA,
    HEALTH_SCHEMA,
    LAG_SCHEMA,
    TS,
)

# Lag samples older than this are dropped when new ones are written.
LAG_RETENTION = timedelta(days=30)

_DDL = """
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.sync_lag (
    shop VARCHAR, entity VARCHAR, event_type VARCHAR, source VARCHAR, id BIGINT,
    changed_at TIMESTAMPTZ, loaded_at TIMESTAMPTZ, lag_s DOUBLE, batch_id VARCHAR
);
CREATE TABLE IF NOT EXISTS ops.sync_health (
    evaluated_at TIMESTAMPTZ, shop VARCHAR, entity VARCHAR, event_type VARCHAR, metric VARCHAR,
    value DOUBLE, objective DOUBLE, status VARCHAR, message VARCHAR
);
"""


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the ``ops`` tables if they are missing."""
    con.execute(_DDL)


def record_lag(con: duckdb.DuckDBPyConnection, samples: pl.DataFrame, *, now: datetime) -> int:
    """Append lag samples (``LAG_SCHEMA``) and drop those past retention; returns rows appended."""
    if samples.is_empty():
        return 0
    ensure_schema(con)
    frame = samples.select([pl.col(c).cast(t) for c, t in LAG_SCHEMA.items()])
    con.register("lag_samples", frame.to_arrow())
    try:
        con.execute("BEGIN TRANSACTION")
        con.execute(f"INSERT INTO ops.sync_lag SELECT {', '.join(LAG_SCHEMA)} FROM lag_samples")
        con.execute("DELETE FROM ops.sync_lag WHERE loaded_at < ?", [now - LAG_RETENTION])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("lag_samples")
    return frame.height


def _frame(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any], schema: dict[str, Any]
) -> pl.DataFrame:
    frame = pl.from_arrow(con.sql(sql, params=params or None).to_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    if frame.is_empty():
        return pl.DataFrame(schema=schema)
    return frame.with_columns(
        [pl.col(c).dt.convert_time_zone("UTC") for c, t in schema.items() if t == TS and c in frame.columns]
    )


def _exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    rows = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, table],
    ).fetchall()
    return bool(rows[0][0])


def read_lag(con: duckdb.DuckDBPyConnection, *, since: datetime) -> pl.DataFrame:
    """Lag samples loaded at or after ``since``."""
    if not _exists(con, "ops", "sync_lag"):
        return pl.DataFrame(schema=LAG_SCHEMA)
    return _frame(
        con, f"SELECT {', '.join(LAG_SCHEMA)} FROM ops.sync_lag WHERE loaded_at >= ?", [since], LAG_SCHEMA
    )


def read_previous_health(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The latest evaluation's figures (empty before the first)."""
    if not _exists(con, "ops", "sync_health"):
        return pl.DataFrame(schema=HEALTH_SCHEMA)
    return _frame(
        con,
        f"SELECT {', '.join(HEALTH_SCHEMA)} FROM ops.sync_health "
        "WHERE evaluated_at = (SELECT max(evaluated_at) FROM ops.sync_health)",
        [],
        HEALTH_SCHEMA,
    )


def write_health(con: duckdb.DuckDBPyConnection, figures: pl.DataFrame) -> int:
    """Append one evaluation's figures (``HEALTH_SCHEMA``); returns rows written."""
    ensure_schema(con)
    frame = figures.select([pl.col(c).cast(t) for c, t in HEALTH_SCHEMA.items()])
    con.register("health_figures", frame.to_arrow())
    try:
        con.execute(f"INSERT INTO ops.sync_health SELECT {', '.join(HEALTH_SCHEMA)} FROM health_figures")
    finally:
        con.unregister("health_figures")
    return frame.height


def read_consent_failures(con: duckdb.DuckDBPyConnection, *, since: datetime) -> pl.DataFrame:
    """Consent pushes that failed at or after ``since`` (``CONSENT_FAILURE_SCHEMA``)."""
    if not _exists(con, "sync", "push_log"):
        return pl.DataFrame(schema=CONSENT_FAILURE_SCHEMA)
    return _frame(
        con,
        "SELECT shop, customer_id, kind, error, logged_at FROM sync.push_log "
        "WHERE outcome = 'failed' AND kind IN ('email_consent', 'sms_consent') AND logged_at >= ?",
        [since],
        CONSENT_FAILURE_SCHEMA,
    )


def read_dead_letter_depth(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Operations waiting in ``sync.dead_letters`` (not replayed) per store."""
    if not _exists(con, "sync", "dead_letters"):
        return pl.DataFrame(schema=DEAD_LETTER_SCHEMA)
    return _frame(
        con,
        "SELECT shop, count(*)::BIGINT AS depth FROM sync.dead_letters WHERE replayed_at IS NULL GROUP BY shop",
        [],
        DEAD_LETTER_SCHEMA,
    )


def read_identity_outcomes(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """``core.identity_outcomes`` in run order (empty before the first identity run)."""
    if not _exists(con, "core", "identity_outcomes"):
        return pl.DataFrame()
    return _frame(con, "SELECT * FROM core.identity_outcomes ORDER BY run_number", [], {})


def read_blocked_overwrites(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """``core.contact_blocked_overwrites`` of the latest contacts build."""
    if not _exists(con, "core", "contact_blocked_overwrites"):
        return pl.DataFrame()
    return _frame(con, "SELECT * FROM core.contact_blocked_overwrites", [], {})
