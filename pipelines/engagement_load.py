"""Loading the non-Shopify feeds into the warehouse: engagement events and CRM field edits.

Both arrive as landing batches (``pipelines.landing`` writes them) and are small, so they
are loaded with plain DuckDB rather than the dlt merge the Shopify tables use:

* ``<landing>/_engagement/engagement/*.jsonl`` → ``engagement.events`` (one row per
  ``event_id``; re-sending an event is harmless: an id already loaded is skipped).
* ``<landing>/_crm/field_edits/*.jsonl`` → ``crm.field_edits``: edits made in the CRM to
  contact fields the CRM owns, one JSON object per line::

      {"contact_id": "ct_…", "field": "lifecycle_stage", "value": "customer",
       "edited_at": "2026-11-02T09:30:00Z"}

  ``value`` may be null (the CRM cleared the field). The same edit delivered twice
  (same contact, field, value and time) is kept once.

Each batch is inserted and committed, then marked loaded, so a crash between the two
re-loads the batch harmlessly (the inserts skip what is already there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from pipelines import landing
from pipelines.engagement import ENTITY as ENGAGEMENT_ENTITY

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


_EVENT_COLUMNS = {
    "event_id": "VARCHAR",
    "occurred_at": "TIMESTAMPTZ",
    "type": "VARCHAR",
    "email": "VARCHAR",
    "phone": "VARCHAR",
    "shop": "VARCHAR",
    "campaign": "VARCHAR",
    "body": "VARCHAR",
}
_EDIT_COLUMNS = {"contact_id": "VARCHAR", "field": "VARCHAR", "value": "VARCHAR", "edited_at": "TIMESTAMPTZ"}


def _events_sql(source: str) -> str:
    # the first line wins when a batch repeats an event id; ids already loaded are skipped
    return f"""
        INSERT INTO engagement.events
        SELECT event_id, occurred_at, type, email, phone, shop, campaign, body, ?, ?
        FROM (SELECT *, row_number() OVER (PARTITION BY event_id) AS _n FROM {source})
        WHERE _n = 1 AND event_id NOT IN (SELECT event_id FROM engagement.events)
    """


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


def load_engagement_events(con: duckdb.DuckDBPyConnection, landing_root: Path) -> FeedLoadResult:
    """Load pending engagement-feed batches into ``engagement.events`` (idempotent on event_id)."""
    ensure_tables(con)
    pending = landing.pending_batches(Path(landing_root), landing.ENGAGEMENT, ENGAGEMENT_ENTITY)
    return _load(con, pending, "engagement.events", _events_sql, _EVENT_COLUMNS)


def load_crm_edits(con: duckdb.DuckDBPyConnection, landing_root: Path) -> FeedLoadResult:
    """Load pending CRM field-edit batches into ``crm.field_edits`` (a repeated edit is kept once)."""
    ensure_tables(con)
    pending = landing.pending_batches(Path(landing_root), CRM, CRM_ENTITY)
    return _load(con, pending, "crm.field_edits", _edits_sql, _EDIT_COLUMNS)
