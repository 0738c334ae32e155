"""The analyst snapshot: the warehouse's tables and marts as Parquet behind a small DuckDB file of views.

Layout::

    <snapshot>/<version>/<schema>.<table>.parquet     one file per table or mart
    <snapshot>/analyst.duckdb                          VIEWs over the newest version's files

Analysts open ``analyst.duckdb`` (read-only: ``shopsync query``), never the warehouse, so
they never hold DuckDB's single-writer lock on it. A publish writes a new version folder,
builds a new view file next to the old one and swaps it in with ``os.replace``: a reader
sees the old snapshot or the new one, never a mix, and a reader holding the old file open
keeps reading the old version's Parquet files (versions are kept for at least an hour,
and the newest few always).

Marts are the ``sql/**/*.sql`` SELECTs, computed against the warehouse at publish time and
exposed as ``marts.<file name>``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
DATABASE_NAME = "analyst.duckdb"
EXPORTED_SCHEMAS: tuple[str, ...] = ("shopify", "core", "engagement", "crm", "ops")
MARTS_SCHEMA = "marts"
KEEP_VERSIONS = 3
# A version is removed only when it is both outside the newest few and this old, so an
# analyst session opened on it keeps working for at least this long.
MIN_AGE_S = 3600.0


@dataclass(frozen=True)
class SnapshotResult:
    """One published snapshot."""

    version: str
    database: Path
    folder: Path
    views: list[str] = field(default_factory=list)


class SnapshotError(RuntimeError):
    """The snapshot cannot be published (a user-facing message)."""


def mart_files(sql_dir: Path = SQL_DIR) -> dict[str, Path]:
    """``{mart name: file}`` for every ``.sql`` file under ``sql_dir`` (subfolders group them; name = stem)."""
    files: dict[str, Path] = {}
    for path in sorted(sql_dir.rglob("*.sql")):
        if path.stem in files:
            raise SnapshotError(
                f"Two marts are named {path.stem!r}: {files[path.stem]} and {path}; rename one."
            )
        files[path.stem] = path
    return files


def mart_queries(sql_dir: Path = SQL_DIR) -> dict[str, str]:
    """``{mart name: SELECT}`` for every mart file (see :func:`mart_files`)."""
    return {
        name: path.read_text(encoding="utf-8").strip().rstrip(";")
        for name, path in mart_files(sql_dir).items()
    }


def _tables(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    rows = con.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' AND table_name NOT LIKE '\\_dlt%' ESCAPE '\\' ORDER BY 1, 2"
    ).fetchall()
    return [(s, t) for s, t in rows if s in EXPORTED_SCHEMAS]


def _quote_path(path: Path) -> str:
    return "'" + path.as_posix().replace("'", "''") + "'"


def new_version() -> str:
    """A version name that sorts by time and is unique across processes."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f") + "-" + secrets.token_hex(3)


def publish_snapshot(
    warehouse: Path,
    snapshot_dir: Path,
    *,
    sql_dir: Path = SQL_DIR,
    keep: int = KEEP_VERSIONS,
    min_age_s: float = MIN_AGE_S,
) -> SnapshotResult:
    """Export the warehouse to a new snapshot version and switch ``analyst.duckdb`` to it atomically.

    Marts whose SELECT fails (say, a table not loaded yet) are left out of this version and
    named in the error only if every one fails; tables are always exported.
    """
    warehouse = Path(warehouse)
    if not warehouse.exists():
        raise SnapshotError(
            f"No warehouse at {warehouse}; load some data first (shopsync demo, or a sync run)."
        )
    snapshot_dir = Path(snapshot_dir).resolve()
    version = new_version()
    folder = snapshot_dir / version
    folder.mkdir(parents=True)
    views: dict[str, Path] = {}
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        for schema, table in _tables(con):
            target = folder / f"{schema}.{table}.parquet"
            con.execute(
                f'COPY (SELECT * FROM "{schema}"."{table}") TO {_quote_path(target)} (FORMAT parquet)'
            )
            views[f"{schema}.{table}"] = target
        for name, query in mart_queries(sql_dir).items():
            target = folder / f"{MARTS_SCHEMA}.{name}.parquet"
            try:
                con.execute(f"COPY ({query}) TO {_quote_path(target)} (FORMAT parquet)")
            except duckdb.Error:
                # A mart over a table that does not exist yet is absent from this version.
                continue
            views[f"{MARTS_SCHEMA}.{name}"] = target
    finally:
        con.close()

    database = snapshot_dir / DATABASE_NAME
    tmp = snapshot_dir / f".{DATABASE_NAME}.{version}.tmp"
    out = duckdb.connect(str(tmp))
    try:
        for schema in sorted({v.split(".")[0] for v in views}):
            out.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        for view, path in views.items():
            schema, name = view.split(".", 1)
            out.execute(f'CREATE VIEW "{schema}"."{name}" AS SELECT * FROM read_parquet({_quote_path(path)})')
        out.execute("CHECKPOINT")
    finally:
        out.close()
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, database)
    prune_versions(snapshot_dir, keep, min_age_s)
    return SnapshotResult(version=version, database=database, folder=folder, views=sorted(views))


def prune_versions(snapshot_dir: Path, keep: int = KEEP_VERSIONS, min_age_s: float = MIN_AGE_S) -> list[str]:
    """Remove versions outside the newest ``keep`` that are older than ``min_age_s``; returns their names."""
    versions = sorted(p for p in snapshot_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    now = time.time()
    removed = []
    for old in versions[:-keep] if keep > 0 else versions:
        if now - old.stat().st_mtime >= min_age_s:
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old.name)
    return removed


def list_views(database: Path) -> list[str]:
    """``schema.view`` names in an analyst snapshot file."""
    con = duckdb.connect(str(database), read_only=True)
    try:
        rows = con.execute(
            "SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1, 2"
        ).fetchall()
    finally:
        con.close()
    return [f"{s}.{v}" for s, v in rows]
