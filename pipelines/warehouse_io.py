"""Reading and writing warehouse tables as Polars frames: the one place ``core.*`` crosses DuckDB.

The transforms are pure (frames in, frames out); the intelligence assets read their inputs
here and write their outputs back here. Writes of one asset run happen in one transaction,
so a reader of the warehouse sees either the previous tables or the new ones, never half.
Frames cross through Arrow (no row-by-row copies); DuckDB infers the column types from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Literal

import duckdb
import polars as pl

_SCHEMAS = ("shopify", "core", "engagement", "crm")


def _qualified(table: str) -> tuple[str, str]:
    schema, _, name = table.partition(".")
    if not name or schema not in _SCHEMAS:
        raise ValueError(f"table must be '<schema>.<name>' with schema in {_SCHEMAS}, got {table!r}")
    return schema, name


def connect(warehouse: Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection to the warehouse file (created, with its folder, when writing)."""
    warehouse = Path(warehouse)
    if not read_only:
        warehouse.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(warehouse), read_only=read_only)


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether ``<schema>.<name>`` exists in the warehouse."""
    schema, name = _qualified(table)
    # fetchall: DuckDB 2 keeps a half-read result open and refuses the next con.sql()
    rows = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, name],
    ).fetchall()
    return bool(rows and rows[0][0])


def read_table(
    con: duckdb.DuckDBPyConnection,
    table: str,
    *,
    live: bool = True,
    schema: Mapping[str, pl.DataType] | None = None,
) -> pl.DataFrame:
    """The rows of ``table`` as a frame; an absent table reads as an empty frame of ``schema``.

    ``live`` drops rows marked deleted (``_deleted_at`` set) where the table has that column.
    With ``schema``, only those columns are selected (missing ones read as nulls) and cast.
    """
    if not table_exists(con, table):
        return pl.DataFrame(schema=dict(schema or {}))
    schema_name, name = _qualified(table)
    columns = [r[0] for r in con.execute(f'DESCRIBE "{schema_name}"."{name}"').fetchall()]
    where = " WHERE _deleted_at IS NULL" if live and "_deleted_at" in columns else ""
    frame = con.sql(f'SELECT * FROM "{schema_name}"."{name}"{where}').pl()
    if schema is None:
        return frame

    def conform(column: str, dtype: pl.DataType) -> pl.Expr:
        if column not in frame.columns:
            return pl.lit(None).cast(dtype).alias(column)
        if isinstance(dtype, pl.List) and frame.schema[column] == pl.String:
            # dlt stores list columns as JSON text
            return pl.col(column).str.json_decode(dtype).alias(column)
        return pl.col(column).cast(dtype).alias(column)

    return frame.select([conform(c, dtype) for c, dtype in schema.items()])


def write_tables(
    con: duckdb.DuckDBPyConnection,
    frames: Mapping[str, pl.DataFrame],
    *,
    mode: Literal["replace", "append"] = "replace",
) -> dict[str, int]:
    """Write every frame to its table in one transaction; returns rows written per table.

    ``replace`` swaps the table's content (schema follows the frame); ``append`` adds rows,
    creating the table on first use. Nothing is visible to readers until the commit.
    """
    written: dict[str, int] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for table, frame in frames.items():
            schema_name, name = _qualified(table)
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema_name}"')
            view = f"_incoming_{schema_name}_{name}"
            con.register(view, frame.to_arrow())
            try:
                target = f'"{schema_name}"."{name}"'
                if mode == "replace" or not table_exists(con, table):
                    con.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM {view}")
                else:
                    con.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {view}")
            finally:
                con.unregister(view)
            written[table] = frame.height
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return written


def table_counts(warehouse: Path, schema: str = "core") -> dict[str, int]:
    """Rows per table of one schema (``core`` by default); empty when the warehouse is absent."""
    warehouse = Path(warehouse)
    if not warehouse.exists():
        return {}
    con = connect(warehouse, read_only=True)
    try:
        names = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY 1", [schema]
            ).fetchall()
        ]
        return {
            f"{schema}.{n}": con.execute(f'SELECT count(*) FROM "{schema}"."{n}"').fetchone()[0]
            for n in names
        }
    finally:
        con.close()


# ---- the transforms' inputs, read from shopify.* in the shapes the transforms take ------------


def shopify_table(con: duckdb.DuckDBPyConnection, table: str) -> pl.DataFrame:
    """Live rows of ``shopify.<table>`` typed as ``pipelines.tables.WAREHOUSE`` declares (empty if absent)."""
    from pipelines.tables import WAREHOUSE

    return read_table(con, f"shopify.{table}", schema=WAREHOUSE[table])


def customer_profiles(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Live customers with their default address (``address1, city, zip, country``) joined in."""
    customers = shopify_table(con, "customers")
    addresses = shopify_table(con, "customer_addresses").select(
        pl.col("id").alias("default_address_id"),
        "address1",
        "city",
        "zip",
        pl.col("country_code").alias("country"),
        pl.col("phone").alias("address_phone"),
    )
    return customers.join(addresses, on="default_address_id", how="left")


def engagement_events(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """``engagement.events`` (empty frame with its columns when nothing was loaded yet)."""
    return read_table(
        con,
        "engagement.events",
        schema={
            "event_id": pl.String,
            "occurred_at": pl.Datetime("us", "UTC"),
            "type": pl.String,
            "email": pl.String,
            "phone": pl.String,
            "shop": pl.String,
            "body": pl.String,
        },
    )


# The control plane's per-store settings that the warehouse's own transforms honour, copied in
# by every load so intelligence never needs the control plane (and SQL users can see them).
STORE_SETTINGS_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String(),
    "customer_profiles": pl.Boolean(),
    "email_consent": pl.Boolean(),
    "sms_consent": pl.Boolean(),
    "orders": pl.Boolean(),
    "catalogue": pl.Boolean(),
    "customer_list": pl.String(),
    "updated_at": pl.Datetime("us", "UTC"),
}


def save_store_settings(
    warehouse: Path, shop: str, inbound: set[str], customer_list: str | None, *, at: datetime
) -> None:
    """Upsert one store's row of ``core.store_settings`` (inbound toggles, customer list)."""
    row = {
        key: key in inbound
        for key in STORE_SETTINGS_SCHEMA
        if key not in ("shop", "customer_list", "updated_at")
    }
    frame = pl.DataFrame(
        [{"shop": shop, **row, "customer_list": customer_list, "updated_at": at}],
        schema=STORE_SETTINGS_SCHEMA,
    )
    con = connect(warehouse)
    try:
        previous = read_table(con, "core.store_settings", schema=STORE_SETTINGS_SCHEMA)
        merged = pl.concat([previous.filter(pl.col("shop") != shop), frame]).sort("shop")
        write_tables(con, {"core.store_settings": merged})
    finally:
        con.close()


def store_settings(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """``core.store_settings`` (empty when no load has written it: every toggle then counts as on)."""
    return read_table(con, "core.store_settings", schema=STORE_SETTINGS_SCHEMA)
