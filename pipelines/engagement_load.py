"""Loading the non-Shopify feeds into the warehouse: engagement events and CRM field edits.

Both arrive as landing batches (``pipelines.landing`` writes them):

* ``<landing>/_engagement/*.jsonl`` → ``engagement.events`` through dlt, as the Shopify
  batches are loaded: each batch is read against a declared schema with Polars, handed to dlt
  as Arrow and merged with the ``insert-only`` strategy on ``event_id`` (one row per event; the
  first delivery wins, so re-sending an event is harmless), then marked loaded.
* ``<landing>/_crm/field_edits/*.jsonl`` → ``crm.field_edits`` with plain DuckDB: edits made in the CRM to
  contact fields the CRM owns, one JSON object per line::

      {"contact_id": "ct_…", "field": "lifecycle_stage", "value": "customer",
       "edited_at": "2026-11-02T09:30:00Z"}

  ``value`` may be null (the CRM cleared the field). The same edit delivered twice
  (same contact, field, value and time) is kept once.

Each load is committed, then its batches are marked loaded, so a crash between the two
re-loads them harmlessly (the merge and the inserts skip what is already there).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dlt
import duckdb
import polars as pl
import pyarrow as pa

from pipelines import landing
from pipelines.engagement import feed_batches

ENGAGEMENT_DATASET = "engagement"
ENGAGEMENT_PIPELINE = "shopsync_engagement"

CRM = "_crm"
CRM_ENTITY = "field_edits"

_EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS engagement.events (
    event_id VARCHAR PRIMARY KEY,
    occurred_at TIMESTAMPTZ NOT NULL,
    type VARCHAR NOT NULL,
    email VARCHAR,
    phone VARCHAR,
    shop VARCHAR,
    campaign VARCHAR,
    body VARCHAR,
    _batch_id VARCHAR,
    _loaded_at TIMESTAMPTZ
)
"""
_EDITS_DDL = """
CREATE TABLE IF NOT EXISTS crm.field_edits (
    contact_id VARCHAR NOT NULL,
    field VARCHAR NOT NULL,
    value VARCHAR,
    edited_at TIMESTAMPTZ NOT NULL,
    _batch_id VARCHAR,
    _loaded_at TIMESTAMPTZ
)
"""


@dataclass
class FeedLoadResult:
    """What one load of a feed did."""

    batches: list[str] = field(default_factory=list)
    inserted: int = 0
    duplicates: int = 0


def _read_json(path: Path, columns: dict[str, str]) -> str:
    """A ``read_json`` call with declared column types (keys a line lacks read as null)."""
    spec = ", ".join(f"'{name}': '{dtype}'" for name, dtype in columns.items())
    return f"read_json('{path.as_posix()}', format='newline_delimited', columns={{{spec}}})"


def _load(
    con: duckdb.DuckDBPyConnection,
    batches: list[tuple[landing.Manifest, Path]],
    table: str,
    insert_sql: Callable[[str], str],
    columns: dict[str, str],
) -> FeedLoadResult:
    result = FeedLoadResult()
    for manifest, path in batches:
        loaded_at = datetime.now(UTC)
        con.execute("BEGIN TRANSACTION")
        try:
            source = _read_json(path, columns)
            before = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            con.execute(insert_sql(source), [manifest.batch_id, loaded_at])
            after = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        landing.mark_loaded(path, {"batch_id": manifest.batch_id, "loaded_at": loaded_at.isoformat()})
        result.batches.append(manifest.batch_id)
        result.inserted += after - before
        result.duplicates += manifest.rows - (after - before)
    return result


_EDIT_COLUMNS = {"contact_id": "VARCHAR", "field": "VARCHAR", "value": "VARCHAR", "edited_at": "TIMESTAMPTZ"}


def _edits_sql(source: str) -> str:
    return f"""
        INSERT INTO crm.field_edits
        SELECT DISTINCT s.contact_id, s.field, s.value, s.edited_at, ?, ?
        FROM {source} AS s
        WHERE s.contact_id IS NOT NULL AND s.field IS NOT NULL AND s.edited_at IS NOT NULL
          AND NOT EXISTS (
            SELECT 1 FROM crm.field_edits e
            WHERE e.contact_id = s.contact_id AND e.field = s.field AND e.edited_at = s.edited_at
              AND e.value IS NOT DISTINCT FROM s.value)
    """


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``engagement.events`` and ``crm.field_edits`` if they do not exist yet."""
    con.execute("CREATE SCHEMA IF NOT EXISTS engagement")
    con.execute("CREATE SCHEMA IF NOT EXISTS crm")
    con.execute(_EVENTS_DDL)
    con.execute(_EDITS_DDL)


_EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String,
    "occurred_at": pl.String,
    "type": pl.String,
    "email": pl.String,
    "phone": pl.String,
    "shop": pl.String,
    "campaign": pl.String,
    "body": pl.String,
}


def _database_path(con: duckdb.DuckDBPyConnection) -> Path:
    row = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    return Path(row[0][0]) if row and row[0][0] else Path("data/warehouse.duckdb")


def _engagement_pipeline(con: duckdb.DuckDBPyConnection) -> dlt.Pipeline:
    """A dlt pipeline writing the ``engagement`` dataset through the caller's warehouse connection."""
    # as the Shopify loader: no usage reports to dlt's vendor unless the operator asks for them
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    warehouse = _database_path(con)
    return dlt.pipeline(
        pipeline_name=ENGAGEMENT_PIPELINE,
        destination=dlt.destinations.duckdb(con),
        dataset_name=ENGAGEMENT_DATASET,
        pipelines_dir=str(warehouse.parent / f".{warehouse.name}.dlt"),
    )


def read_event_batch(path: Path, batch_id: str, loaded_at: datetime) -> pl.DataFrame:
    """One engagement batch as ``engagement.events`` rows (the first line of a repeated event id wins)."""
    if path.stat().st_size == 0:
        frame = pl.DataFrame(schema=_EVENT_SCHEMA)
    else:
        frame = pl.read_ndjson(path, schema=_EVENT_SCHEMA)
    return (
        frame.filter(pl.col("event_id").is_not_null())
        .unique("event_id", keep="first", maintain_order=True)
        .with_columns(
            pl.col("occurred_at").str.to_datetime(
                time_unit="us", time_zone="UTC", format="%Y-%m-%dT%H:%M:%S%.f%#z"
            ),
            pl.lit(batch_id).alias("_batch_id"),
            pl.lit(loaded_at).cast(pl.Datetime("us", "UTC")).alias("_loaded_at"),
        )
    )


def load_engagement_events(
    con: duckdb.DuckDBPyConnection, landing_root: Path, *, batch_ids: Sequence[str] | None = None
) -> FeedLoadResult:
    """Load pending engagement-feed batches (or exactly ``batch_ids``) into ``engagement.events`` with dlt.

    Idempotent on ``event_id``: an event already loaded is skipped, so loading a batch twice,
    or a re-sent event, adds nothing (counted in ``duplicates``).
    """
    ensure_tables(con)
    pending = feed_batches(Path(landing_root))
    if batch_ids is not None:
        wanted = set(batch_ids)
        pending = [
            (m, p) for m, p in feed_batches(Path(landing_root), pending_only=False) if m.batch_id in wanted
        ]
    result = FeedLoadResult()
    if not pending:
        return result
    loaded_at = datetime.now(UTC)
    frames = [read_event_batch(path, m.batch_id, loaded_at) for m, path in pending]
    # across batches too, the oldest delivery of an event wins
    events = pl.concat(frames).unique("event_id", keep="first", maintain_order=True)
    before = con.execute("SELECT count(*) FROM engagement.events").fetchall()[0][0]
    if events.height:
        table = events.to_arrow()
        table = table.cast(pa.schema([f.with_nullable(f.name != "event_id") for f in table.schema]))
        resource = dlt.resource(
            [table],
            name="events",
            table_name="events",
            primary_key="event_id",
            write_disposition={"disposition": "merge", "strategy": "insert-only"},
        )
        pipeline = _engagement_pipeline(con)
        pipeline.extract([resource], loader_file_format="parquet")
        pipeline.normalize()
        pipeline.load()
    after = con.execute("SELECT count(*) FROM engagement.events").fetchall()[0][0]
    for manifest, path in pending:
        landing.mark_loaded(path, {"batch_id": manifest.batch_id, "loaded_at": loaded_at.isoformat()})
        result.batches.append(manifest.batch_id)
    result.inserted = int(after - before)
    result.duplicates = sum(m.rows for m, _ in pending) - result.inserted
    return result


def load_crm_edits(con: duckdb.DuckDBPyConnection, landing_root: Path) -> FeedLoadResult:
    """Load pending CRM field-edit batches into ``crm.field_edits`` (a repeated edit is kept once)."""
    ensure_tables(con)
    pending = landing.pending_batches(Path(landing_root), CRM, CRM_ENTITY)
    return _load(con, pending, "crm.field_edits", _edits_sql, _EDIT_COLUMNS)
