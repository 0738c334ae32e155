"""Asset checks on the raw Shopify tables: one row per (shop, id), ids present.

The queries are plain functions over a DuckDB connection so they can be tested alone;
the checks run in the ``warehouse`` pool because they open the warehouse.
"""

from pathlib import Path

import dagster as dg
import duckdb

from orchestration.defs.instance import IN_WAREHOUSE
from orchestration.defs.shopify.jobs import table_key
from orchestration.defs.shopify.partitions import SHOPIFY_ENTITIES
from orchestration.defs.shopify.resources import SyncPaths
from pipelines.loader_specs import SPECS


def duplicate_ids(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """How many rows of ``shopify.<table>`` repeat a (shop, id) (0 when merged correctly)."""
    # ``table`` comes from the loader specs, never from input.
    row = con.execute(f"SELECT count(*) - count(DISTINCT (shop, id)) FROM shopify.{table}").fetchone()
    return int(row[0]) if row else 0


def null_ids(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """Rows of ``shopify.<table>`` without a shop or an id (a landing row the loader misread)."""
    row = con.execute(f"SELECT count(*) FROM shopify.{table} WHERE shop IS NULL OR id IS NULL").fetchone()
    return int(row[0]) if row else 0


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether ``shopify.<table>`` exists yet."""
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'shopify' AND table_name = ?",
        [table],
    ).fetchone()
    return bool(row and row[0])


def live_rows_by_shop(warehouse: Path, tables: list[str] | None = None) -> dict[str, dict[str, int]]:
    """Live rows (``_deleted_at`` null) per ``shopify.<table>`` and store: ``{table: {shop: n}}``."""
    if not warehouse.exists():
        return {}
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        present = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'shopify' ORDER BY 1"
            ).fetchall()
        ]
        out: dict[str, dict[str, int]] = {}
        for table in present:
            if tables is not None and table not in tables:
                continue
            columns = {r[0] for r in con.execute(f"DESCRIBE shopify.{table}").fetchall()}
            if "shop" not in columns or table.startswith("_dlt"):
                continue
            live = "WHERE _deleted_at IS NULL" if "_deleted_at" in columns else ""
            rows = con.execute(f"SELECT shop, count(*) FROM shopify.{table} {live} GROUP BY shop").fetchall()
            out[table] = {shop: int(n) for shop, n in rows}
        return out
    finally:
        con.close()


def check_unique_ids(warehouse: Path, table: str) -> dg.AssetCheckResult:
    """The result of the uniqueness check of one table (all stores: a bad merge anywhere fails it)."""
    if not warehouse.exists():
        return dg.AssetCheckResult(passed=True, metadata={"note": "warehouse not created yet"})
    con = duckdb.connect(str(warehouse))
    try:
        if not table_exists(con, table):
            return dg.AssetCheckResult(passed=True, metadata={"note": f"shopify.{table} not created yet"})
        dupes = duplicate_ids(con, table)
        missing = null_ids(con, table)
    finally:
        con.close()
    return dg.AssetCheckResult(
        passed=dupes == 0 and missing == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"duplicate_ids": dupes, "null_ids": missing},
    )


def build_unique_check(entity: str) -> dg.AssetChecksDefinition:
    """A check that the entity's parent table holds one row per Shopify id for the store."""
    table = SPECS[entity].table

    @dg.asset_check(
        asset=table_key(entity),
        name="one_row_per_shopify_id",
        **IN_WAREHOUSE,
        description=f"shopify.{table} has exactly one row per (shop, id): re-syncs merge, never duplicate.",
    )
    def _check(paths: SyncPaths) -> dg.AssetCheckResult:
        return check_unique_ids(paths.warehouse_path, table)

    return _check


table_checks: list[dg.AssetChecksDefinition] = [build_unique_check(e) for e in SHOPIFY_ENTITIES]
