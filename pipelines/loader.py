"""The loader: landing batches → DuckDB ``shopify.*`` through a dlt pipeline. The single warehouse writer.

For each pending batch, oldest first:

1. **Read** the JSONL in blocks against the entity's declared landing schema
   (:data:`pipelines.tables.LANDING`; decoded by DuckDB's JSON reader into Polars, see
   :func:`iter_decoded_blocks`), split lines by the gid's type segment and flatten them with
   Polars expressions (:mod:`pipelines.loader_specs`) into the warehouse tables. No Python
   touches a row; a malformed line fails the batch before the warehouse is written, and the
   error names the batch and the line.
2. **Plan** against the warehouse: a parent row is new, updated, unchanged (same content
   hash over the row and its children) or stale (the warehouse already holds a later
   ``updated_at``: a late webhook or an overlapping window). Only new and updated parents are
   written, so loading a batch again writes nothing and the tables stay byte-identical.
3. **Merge** with dlt (Arrow tables, ``delete-insert`` merge): parents on ``(shop, id)``;
   each child table is replaced under its written parents (see :func:`_child_resource`), so
   an order edited to drop a line item loses it and a parent with no children ends with none.
   The exception is a ``partial`` batch (a failed bulk job's data), whose child lines may be
   cut short: they are upserted and nothing is removed.
   dlt's extract writes the Arrow tables to parquet load files and the in-memory copies are
   dropped before its load step merges them (peak memory of million-row backfills).
4. **Deletes** in DuckDB SQL after the merge: a ``complete`` batch (reconciliation id list or
   full export) stamps ``_deleted_at`` on the shop's rows it does not contain and clears it on
   rows it does; ``{"id": gid, "__deleted": true}`` lines stamp their rows.
5. ``mark_loaded`` once the warehouse has committed.

Every step is idempotent, so a crash anywhere is repaired by loading the batch again (it
stays pending until step 5); dlt itself finishes a load package interrupted mid-way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import dlt
import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
from dlt.common.exceptions import DltException
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

from pipelines import privacy
from pipelines.landing import ENGAGEMENT, Manifest, iter_batches, mark_loaded, pending_batches
from pipelines.loader_specs import GID_TYPE, SPECS, ChildSpec, EntitySpec, gid_number
from pipelines.observability import record_lag
from pipelines.tables import LANDING, LINEAGE, ROW_HASH, WAREHOUSE, warehouse_schema

log = logging.getLogger("shopsync.loader")

DATASET = "shopify"
PIPELINE_NAME = "shopsync_loader"
# Polars' hash is stable for a given Polars version; after an upgrade every row looks
# changed once and is rewritten with the same content, which is harmless.
_HASH_SEED = 0x5EED
TS_UTC = pl.Datetime("us", "UTC")


class LoadError(Exception):
    """A batch could not be loaded; nothing from it was committed and later batches wait.

    ``loaded`` holds what was committed before the failing batch.
    """

    def __init__(self, message: str, *, batch_id: str, line: int | None, loaded: LoadResult) -> None:
        super().__init__(message)
        self.batch_id = batch_id
        self.line = line
        self.loaded = loaded


@dataclass
class LoadResult:
    """What a call to :func:`load_pending` did.

    Counts are of parent rows (customers, orders, products, collections, checkouts):
    ``inserted`` new, ``updated`` changed, ``unchanged`` identical to the warehouse, ``stale``
    older than the warehouse row (kept), ``deleted`` newly stamped ``_deleted_at``,
    ``undeleted`` reappeared. ``rows`` counts rows written per table, children included.
    """

    batches: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    deleted: int = 0
    undeleted: int = 0
    skipped: list[str] = field(default_factory=list)  # batches this loader has no handler for
    duration_s: float = 0.0

    def add(self, other: LoadResult) -> None:
        """Fold the result of one batch into this one."""
        self.batches.extend(other.batches)
        for table, n in other.rows.items():
            self.rows[table] = self.rows.get(table, 0) + n
        for name in ("inserted", "updated", "unchanged", "stale", "deleted", "undeleted"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


# ---- reading a batch -----------------------------------------------------------------------


@dataclass
class ParsedBatch:
    """A batch flattened into warehouse-shaped frames (not yet compared with the warehouse).

    The frames hold the business columns; ``row_hash`` is the parents' content hash, kept
    apart so the million-row parent frame is never re-laid out to take one more column. The
    columns that are the same on every row of a batch (``shop`` and the lineage) are added
    when the rows become Arrow tables for dlt (:func:`_load_table`), as dictionary arrays of
    one value.
    """

    parents: pl.DataFrame  # one row per parent id (latest version in the batch)
    children: dict[str, pl.DataFrame]  # child table → rows of the parents above
    deleted_ids: pl.Series  # parent ids whose last line in the batch is a delete marker
    present_ids: pl.Series  # every parent id in the batch (for complete batches)
    deleted_triggered: pl.DataFrame = field(  # id, triggered_at: when Shopify reported each delete
        default_factory=lambda: pl.DataFrame(schema={"id": pl.Int64, "triggered_at": pl.String})
    )
    row_hash: pl.Series = field(  # aligned with ``parents``: the row and its children
        default_factory=lambda: pl.Series(ROW_HASH, [], pl.Int64)
    )


class MalformedBatch(ValueError):
    """A landing batch has a line the loader cannot read; ``line`` is 1-based when known."""

    def __init__(self, manifest: Manifest, path: Path, line: int | None, problem: str) -> None:
        where = f"line {line}" if line is not None else "an unknown line"
        super().__init__(
            f"Landing batch {manifest.batch_id} ({path}) is malformed at {where}: {problem}. "
            "Nothing from this batch was loaded and later batches were left pending; "
            "fix or move the batch aside, then run the load again."
        )
        self.line = line


def _type_problem(value: Any, dtype: pl.DataType, key: str) -> str | None:
    """Why ``value`` cannot be read as ``dtype`` (None if it can)."""
    if value is None:
        return None
    if isinstance(dtype, pl.Struct):
        if not isinstance(value, dict):
            return f"{key!r} should be an object"
        for fld in dtype.fields:
            if problem := _type_problem(value.get(fld.name), fld.dtype, f"{key}.{fld.name}"):
                return problem
        return None
    if isinstance(dtype, pl.List):
        if not isinstance(value, list):
            return f"{key!r} should be a list"
        for item in value:
            if problem := _type_problem(item, dtype.inner, f"{key}[]"):
                return problem
        return None
    expected = {pl.String: str, pl.Boolean: bool, pl.Int64: int}.get(dtype.base_type())
    if expected is int and isinstance(value, bool):
        return f"{key!r} should be an integer"
    if expected is not None and not isinstance(value, expected):
        return f"{key!r} should be {expected.__name__}, got {type(value).__name__}"
    return None


_GID_RE = re.compile(GID_TYPE)


def locate_bad_line(path: Path, spec: EntitySpec, reconcile: bool) -> tuple[int, str] | None:
    """Find the first line of a batch the fast path cannot load, and say why.

    Runs only after the vectorised read has failed, so a slow Python scan is fine here.
    """
    schema = LANDING[spec.entity]
    allowed = {spec.row_type} if reconcile else spec.row_types
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except ValueError as exc:
                return number, f"not valid JSON ({exc})"
            if not isinstance(row, dict):
                return number, "not a JSON object"
            gid = row.get("id")
            match = _GID_RE.match(gid) if isinstance(gid, str) else None
            if match is None:
                return number, f"'id' is not a Shopify gid: {gid!r}"
            if match.group(1) not in allowed:
                return number, f"row type {match.group(1)!r} is not part of {spec.entity} batches"
            if match.group(1) != spec.row_type:
                parent = row.get("__parentId")
                if not isinstance(parent, str) or not _GID_RE.match(parent):
                    return number, f"child row {gid} has no valid '__parentId'"
            for key, dtype in schema.items():
                if problem := _type_problem(row.get(key), dtype, key):
                    return number, problem
            for key in ("createdAt", "updatedAt"):
                value = row.get(key)
                if isinstance(value, str):
                    try:
                        datetime.fromisoformat(value)
                    except ValueError:
                        return number, f"{key!r} is not an ISO-8601 timestamp: {value!r}"
    return None


# Lines decoded at a time: bounds memory to the flattened tables, not the file (a block
# of bulk order lines, ~750 bytes each, decodes to ~15 MB). Between 2,000 and 100,000 lines
# made no measurable difference in time or memory on bulk order exports.
_BLOCK_ROWS = 20_000


def duckdb_type(dtype: pl.DataType) -> str:
    """The DuckDB type a declared Polars landing type is decoded into."""
    if isinstance(dtype, pl.Struct):
        return "STRUCT(" + ", ".join(f'"{f.name}" {duckdb_type(f.dtype)}' for f in dtype.fields) + ")"
    if isinstance(dtype, pl.List):
        return f"{duckdb_type(dtype.inner)}[]"
    return {pl.String: "VARCHAR", pl.Int64: "BIGINT", pl.Boolean: "BOOLEAN"}[dtype.base_type()]


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def iter_decoded_blocks(path: Path, schema: dict[str, pl.DataType]) -> Iterator[pl.DataFrame]:
    """Decode a JSONL batch block by block against its declared schema, as Polars frames.

    ``_line`` numbers the rows across blocks (0-based; equals the line index unless the
    file has blank lines, which are skipped). Decoding is DuckDB's JSON reader with the
    declared columns (keys outside them are ignored), streamed out as Arrow record batches
    in file order: measured on bulk-export order files it takes about 0.4x the CPU of
    Arrow's own JSON reader and streams, so a 3 GB export never sits in memory; everything
    after it is Polars expressions. A value that does not fit its column fails the read
    (the caller then finds and names the line); the reader is lenient only where nothing
    is lost: a number or an object where text is declared is kept as its JSON text, and a
    numeric string where an integer is declared is read as that integer.
    """
    if path.stat().st_size == 0:
        return
    columns = "{" + ", ".join(f"{_sql_text(k)}: {_sql_text(duckdb_type(v))}" for k, v in schema.items()) + "}"
    # In memory and apart from the warehouse: decoding never takes the warehouse lock.
    con = duckdb.connect(config={"preserve_insertion_order": True, "memory_limit": "1GB"})
    try:
        reader = con.sql(
            f"SELECT * FROM read_json({_sql_text(str(path))}, columns = {columns},"
            " format = 'newline_delimited')"
        ).to_arrow_reader(_BLOCK_ROWS)
        offset = 0
        for imported in reader:
            # A batch imported from DuckDB is one allocation: a zero-copy column Polars keeps
            # (strings are zero-copy) would keep the whole decoded block alive until the end
            # of the batch. Copied column by column, only what the flattening keeps stays
            # (measured: 0.6x the resident memory for ~10% more decoding CPU).
            batch = pa.RecordBatch.from_arrays(
                [pa.concat_arrays([column]) for column in imported.columns], schema=imported.schema
            )
            del imported
            frame = cast(pl.DataFrame, pl.from_arrow(batch))
            del batch
            yield frame.with_row_index("_line", offset=offset)
            offset += frame.height
    finally:
        con.close()


# Columns with one value per batch: added on the Arrow side, never materialised per row.
_CONSTANT = ("shop", *LINEAGE)


def _frame_schema(table: str, *, parent: bool) -> dict[str, pl.DataType]:
    """The columns a parsed frame of ``table`` carries: the warehouse's, minus the per-batch
    constants and the row hash (kept apart, see :class:`ParsedBatch`)."""
    return {
        k: v
        for k, v in warehouse_schema(table, parent=parent).items()
        if k not in _CONSTANT and k != ROW_HASH
    }


def _load_table(
    frame: pl.DataFrame,
    shop: str,
    batch_id: str,
    loaded_at: datetime,
    *,
    keys: Sequence[str] = (),
    extra: Sequence[pl.Series] = (),
) -> pa.Table:
    """``frame`` as the Arrow table dlt writes: plus ``shop`` and lineage, ``keys`` declared NOT NULL.

    The per-batch constants are dictionary arrays of one value (a byte per row): as plain
    columns they cost tens of bytes per row, hundreds of MB on a million-order backfill.
    dlt and DuckDB read them as the plain type. A parent's ``shop`` and ``id`` are declared
    NOT NULL, as dlt declares merge keys.
    """
    table = frame.to_arrow()
    n = table.num_rows
    indices = pa.array(np.zeros(n, dtype=np.int8))

    def constant(value: Any, dtype: pa.DataType) -> pa.Array:
        return pa.DictionaryArray.from_arrays(indices, pa.array([value], dtype))

    columns = {
        "shop": constant(shop, pa.string()),
        "_batch_id": constant(batch_id, pa.string()),
        "_loaded_at": constant(loaded_at, pa.timestamp("us", "UTC")),
        "_deleted_at": pa.nulls(n, pa.timestamp("us", "UTC")),
    }
    for series in extra:
        table = table.append_column(series.name, series.to_arrow())
    for name, array in columns.items():
        table = table.append_column(pa.field(name, array.type), array)
    if not keys:
        return table
    return table.cast(pa.schema([f.with_nullable(False) if f.name in keys else f for f in table.schema]))


def _conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return frame.select(
        [pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c) for c, t in schema.items()]
    )


def _business_hash(columns: Sequence[str]) -> pl.Expr:
    return pl.struct(list(columns)).hash(_HASH_SEED)


def _parent_business(spec: EntitySpec) -> list[str]:
    """The parent columns its content hash covers (all but the keys)."""
    return [c for c in WAREHOUSE[spec.table] if c not in ("shop", "id")]


def _child_business(child: ChildSpec) -> list[str]:
    """The child columns their parent's content hash covers."""
    return [c for c in WAREHOUSE[child.table] if c != "shop"]


@dataclass
class _Pieces:
    """The flattened rows of one block of lines, before the batch-wide resolution."""

    parents: pl.DataFrame
    deletes: pl.DataFrame
    present: pl.Series
    children: dict[str, pl.DataFrame]


def _flatten_block(spec: EntitySpec, raw: pl.DataFrame, reconcile: bool) -> _Pieces:
    raw = raw.with_columns(
        _type=pl.col("id").str.extract(GID_TYPE, 1),
        _num=gid_number(pl.col("id")),
        _parent=gid_number(pl.col("__parentId")),
    )
    # Lazy from here: each query filters only the columns it selects, instead of copying
    # every decoded column (nested MoneyBags included) once per row type.
    block = raw.lazy()
    allowed = [spec.row_type] if reconcile else sorted(spec.row_types)
    bad = (
        block.filter(
            pl.col("_type").is_null()
            | ~pl.col("_type").is_in(allowed)
            | ((pl.col("_type") != spec.row_type) & pl.col("_parent").is_null())
        )
        .select("_line")
        .head(1)
        .collect()
    )
    if bad.height:
        raise ValueError(f"bad row type or gid at line {bad['_line'][0] + 1}")
    is_parent = pl.col("_type") == spec.row_type
    present = block.filter(is_parent).select("_num").collect().to_series()
    if reconcile:
        return _Pieces(pl.DataFrame(), pl.DataFrame(), present, {})
    is_delete = pl.col("__deleted").fill_null(False)
    deletes = block.filter(is_parent & is_delete).select("_num", "_line", "__triggered_at").collect()
    upserts = block.filter(is_parent & ~is_delete)
    inline = [c.inline for c in spec.children if c.inline]
    # Row hashes are computed block by block (a row's hash is its own): over a whole batch the
    # struct of every column would be one more copy of it.
    parents = (
        upserts.select(
            pl.col("_line"),
            pl.col("_num").alias("id"),
            *[expr.alias(name) for name, expr in spec.columns.items()],
            # Inline children enter the row hash through the hash of their raw list.
            *[pl.col(name).hash(_HASH_SEED).alias(f"_ih_{name}") for name in inline],
        )
        .with_columns(_business_hash([*_parent_business(spec), *(f"_ih_{n}" for n in inline)]).alias("_h"))
        .drop([f"_ih_{n}" for n in inline])
        .collect()
    )
    children: dict[str, pl.DataFrame] = {}
    for child in spec.children:
        if child.inline:
            source = (
                upserts.select(
                    pl.col("_num").alias("_pid"), pl.col("_line").alias("_pline"), pl.col(child.inline)
                )
                .explode(child.inline)
                .filter(pl.col(child.inline).is_not_null())
                .unnest(child.inline)
            )
            children[child.table] = (
                source.select(
                    pl.col("_pid").alias(child.parent_key),
                    pl.col("_pline"),
                    *[e.alias(n) for n, e in child.columns.items()],
                )
                .with_columns(_business_hash(_child_business(child)).alias("_hc"))
                .collect()
            )
        else:
            children[child.table] = (
                block.filter(pl.col("_type") == child.row_type)
                .select(
                    pl.col("_parent").alias(child.parent_key),
                    pl.col("_line").alias("_pline"),
                    *[e.alias(n) for n, e in child.columns.items()],
                )
                .with_columns(_business_hash(_child_business(child)).alias("_hc"))
                .collect()
            )
    return _Pieces(parents, deletes, present, children)


def _all_within(values: pl.Series, ids: pl.Series) -> bool:
    """Whether every value occurs in ``ids`` (cheaper than a semi-join when it is true)."""
    return bool(values.is_in(ids).all())


def _attribute_to_versions(children: pl.DataFrame, versions: pl.DataFrame, parent_key: str) -> pl.DataFrame:
    """Replace each child line's ``_pline`` by the line of the parent version it belongs to.

    A ``__parentId`` names the parent, not the version; bulk JSONL writes children after
    their parent's line, so a child belongs to the nearest version above it (or, if a writer
    put it first, the nearest below).
    """
    right = versions.rename({"id": parent_key, "_line": "_version"}).sort("_version")
    left = children.sort("_pline")
    before = left.join_asof(
        right,
        left_on="_pline",
        right_on="_version",
        by=parent_key,
        strategy="backward",
        check_sortedness=False,
    )
    after = left.join_asof(
        right,
        left_on="_pline",
        right_on="_version",
        by=parent_key,
        strategy="forward",
        check_sortedness=False,
    )
    return before.with_columns(pl.coalesce("_version", after["_version"]).alias("_pline")).drop("_version")


def parse_batch(manifest: Manifest, path: Path, *, loaded_at: datetime) -> ParsedBatch:
    """Read one landing batch into warehouse-shaped frames; raises ``ValueError`` naming the bad line."""
    spec = SPECS[manifest.entity]
    reconcile = manifest.mode == "reconcile"
    pieces: list[_Pieces] = []
    try:
        for block in iter_decoded_blocks(path, LANDING[spec.entity]):
            pieces.append(_flatten_block(spec, block, reconcile))
        return _resolve(spec, pieces, manifest.shop, manifest.batch_id, loaded_at, reconcile)
    except (
        pl.exceptions.PolarsError,
        pa.ArrowException,
        ValueError,
        # what DuckDB's reader says of unreadable JSON or a value that does not fit its column
        duckdb.InvalidInputException,
        duckdb.ConversionException,
        duckdb.OutOfRangeException,
    ) as exc:
        found = locate_bad_line(path, spec, reconcile)
        line, problem = found if found else (None, str(exc).splitlines()[0])
        raise MalformedBatch(manifest, path, line, problem) from None


def _resolve(
    spec: EntitySpec, pieces: list[_Pieces], shop: str, batch_id: str, loaded_at: datetime, reconcile: bool
) -> ParsedBatch:
    """Batch-wide: pick each parent's surviving version, its children, deletes and hashes."""
    parent_schema = _frame_schema(spec.table, parent=True)
    present_ids = (
        pl.concat([p.present for p in pieces], rechunk=False) if pieces else pl.Series("id", [], pl.Int64)
    )
    empty_children = {
        c.table: pl.DataFrame(schema=_frame_schema(c.table, parent=False)) for c in spec.children
    }
    if reconcile or not pieces:
        return ParsedBatch(
            pl.DataFrame(schema=parent_schema), empty_children, pl.Series("id", [], pl.Int64), present_ids
        )
    parents = pl.concat([p.parents for p in pieces], rechunk=False)
    # Every version's line, for attributing __parentId children when a parent repeats.
    versions = parents.select("id", "_line") if parents["id"].n_unique() < parents.height else None
    last_delete = (
        pl.concat([p.deletes for p in pieces])
        .group_by("_num")
        .agg(pl.col("_line").max().alias("_del_line"), pl.col("__triggered_at").max().alias("_triggered"))
    )
    # (The common bulk case, each id once and no delete markers, skips the sorts and joins:
    # they copy every row, which counts at millions.)
    if versions is not None:
        # Within a batch the latest version of a row wins: latest updated_at, then the later line.
        parents = parents.sort(["updated_at", "_line"], nulls_last=False).unique("id", keep="last")
    deleted_ids = pl.Series("id", [], pl.Int64)
    deleted_triggered = pl.DataFrame(schema={"id": pl.Int64, "triggered_at": pl.String})
    if last_delete.height:
        # A delete marker after the row's last version deletes it; a version after it revives it.
        parents = parents.join(last_delete, left_on="id", right_on="_num", how="left")
        deleted_ids = last_delete.join(
            parents.select("id", "_line"), left_on="_num", right_on="id", how="left"
        ).filter(pl.col("_line").is_null() | (pl.col("_del_line") > pl.col("_line")))["_num"]
        deleted_triggered = last_delete.filter(pl.col("_num").is_in(deleted_ids.implode())).select(
            pl.col("_num").alias("id"), pl.col("_triggered").alias("triggered_at")
        )
        parents = parents.filter(pl.col("_del_line").is_null() | (pl.col("_del_line") < pl.col("_line")))
    # The hashes stay Series of their own: adding one to the chunked parent frame would copy
    # every parent column into one chunk (hundreds of MB on a backfill).
    hashes: list[pl.Series] = [parents["_h"]]
    children: dict[str, pl.DataFrame] = {}
    for child in spec.children:
        frame = pl.concat([p.children[child.table] for p in pieces], rechunk=False)
        survivors = parents.select(pl.col("id").alias(child.parent_key), pl.col("_line").alias("_pline"))
        if child.inline:
            # Children of the surviving version of their parent only.
            frame = frame.join(survivors, on=[child.parent_key, "_pline"], how="semi")
        elif versions is not None:
            frame = _attribute_to_versions(frame, versions, child.parent_key)
            frame = frame.join(survivors, on=[child.parent_key, "_pline"], how="semi")
        elif last_delete.height or not _all_within(frame[child.parent_key], parents["id"]):
            # Only children of parents written by this batch (not of deleted or absent ones).
            frame = frame.join(survivors.drop("_pline"), on=child.parent_key, how="semi")
        keys = [child.parent_key, *child.key]
        if child.key != ("id",) or frame["id"].n_unique() < frame.height:
            frame = frame.unique(keys, keep="last", maintain_order=True)
        frame = frame.drop("_pline")
        # (two columns first: grouping the whole frame would lay every column out in one chunk)
        sums = (
            frame.select(child.parent_key, "_hc")
            .group_by(child.parent_key)
            .agg(pl.col("_hc").sum().alias(f"_h_{child.table}"))
        )
        # Joined onto the id column alone: joining the whole frame would copy every parent
        # column once per child table.
        child_hash = (
            parents.select("id")
            .join(sums, left_on="id", right_on=child.parent_key, how="left", maintain_order="left")
            .get_column(f"_h_{child.table}")
            .fill_null(0)
        )
        hashes.append(child_hash)
        children[child.table] = _conform(frame, _frame_schema(child.table, parent=False))
    row_hash = (
        pl.DataFrame(hashes)
        .select(pl.struct(pl.all()).hash(_HASH_SEED).reinterpret(signed=True).alias(ROW_HASH))
        .to_series()
    )
    return ParsedBatch(
        parents=_conform(parents, parent_schema),
        children=children,
        deleted_ids=deleted_ids,
        present_ids=present_ids,
        deleted_triggered=deleted_triggered,
        row_hash=row_hash,
    )


# ---- the warehouse side --------------------------------------------------------------------


def _pipeline(warehouse: Path) -> dlt.Pipeline:
    """The dlt pipeline writing ``warehouse``; its working folder sits beside the warehouse file."""
    # dlt reports anonymous usage to its vendor unless told not to; a store's sync should
    # not phone home. An explicit setting by the operator still wins.
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    # The staging copy of a load is only needed by its merge; emptying it afterwards keeps a
    # million-row backfill from doubling the warehouse file.
    dlt.config["load.truncate_staging_dataset"] = True
    return dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        destination=dlt.destinations.duckdb(
            DuckDbCredentials(
                str(warehouse),
                # Merges are INSERT ... SELECT of whole loads: without insertion order and
                # with a cap DuckDB streams them instead of buffering (backfill peak RSS).
                global_config={"memory_limit": "2GB", "preserve_insertion_order": False},
            )
        ),
        dataset_name=DATASET,
        pipelines_dir=str(warehouse.parent / f".{warehouse.name}.dlt"),
    )


def _existing_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [DATASET]
    ).fetchall()
    return {r[0] for r in rows}


def _classify(
    con: duckdb.DuckDBPyConnection, spec: EntitySpec, parents: pl.DataFrame, shop: str
) -> pl.DataFrame:
    """Tag each incoming parent row new / updated / unchanged / stale against the warehouse."""
    if spec.table in _existing_tables(con) and parents.height:
        con.register("incoming", parents.select("id").to_arrow())
        existing = con.sql(
            f"""SELECT w.id, w.updated_at AS _w_updated, w.{ROW_HASH} AS _w_hash,
                       w._deleted_at AS _w_deleted
                FROM {DATASET}.{spec.table} w JOIN incoming i ON w.id = i.id
                WHERE w.shop = $shop""",
            params={"shop": shop},
        ).to_arrow_table()
        existing = pl.from_arrow(existing)
        con.unregister("incoming")
        # DuckDB hands timestamps back in its session zone; compare in UTC.
        existing = existing.with_columns(pl.col("_w_updated").dt.convert_time_zone("UTC"))
    else:
        existing = pl.DataFrame(
            schema={
                "id": pl.Int64,
                "_w_updated": pl.Datetime("us", "UTC"),
                "_w_hash": pl.Int64,
                "_w_deleted": pl.Datetime("us", "UTC"),
            }
        )
    joined = parents.join(existing.with_columns(pl.lit(True).alias("_found")), on="id", how="left")
    found = pl.col("_found").fill_null(False)
    stale = found & (pl.col("_w_updated") > pl.col("updated_at")).fill_null(False)
    unchanged = (
        found & (pl.col("_w_hash") == pl.col(ROW_HASH)).fill_null(False) & pl.col("_w_deleted").is_null()
    )
    return joined.with_columns(
        pl.when(~found)
        .then(pl.lit("inserted"))
        .when(stale)
        .then(pl.lit("stale"))
        .when(unchanged)
        .then(pl.lit("unchanged"))
        .otherwise(pl.lit("updated"))
        .alias("_action")
    )


def _shop_has_rows(con: duckdb.DuckDBPyConnection, tables: Sequence[str], shop: str) -> bool:
    """Whether any of ``shopify.<tables>`` holds a row of ``shop`` (deleted rows count)."""
    existing = _existing_tables(con)
    for table in tables:
        if (
            table in existing
            and con.execute(f"SELECT 1 FROM {DATASET}.{table} WHERE shop = ? LIMIT 1", [shop]).fetchall()
        ):
            return True
    return False


def _parent_resource(table: str, data: pa.Table, *, append: bool = False) -> Any:
    """Parents merged on ``(shop, id)``; appended when the store has no rows in the tables yet."""
    if append:
        disposition: dict[str, Any] = {"disposition": "append"}
    else:
        # Parents are de-duplicated in Polars, so dlt may skip its own dedup window.
        disposition = {"disposition": "merge", "strategy": "delete-insert", "deduplicated": True}
    return dlt.resource(
        [data], name=table, table_name=table, primary_key=("shop", "id"), write_disposition=disposition
    )


def _child_resource(
    child: ChildSpec, data: list[pa.Table], *, replace: bool = True, append: bool = False
) -> Any:
    """A child table replaced under the parents written in the same load (or, not ``replace``, upserted).

    dlt's ``merge_key`` would delete only the parents that still have children in the batch,
    so a parent edited down to zero children would keep its old ones. Instead every written
    parent contributes one key-only "scope" row (child key null): ``destination_scope``
    deletes all warehouse children of the parents in the staged table, and ``source_filter``
    keeps the scope rows out of the insert. Both read only this table's own staging copy, so
    the result does not depend on the order dlt runs the tables' merge jobs in.

    Without ``replace`` (the child lines of a partial bulk file, which may be cut short) the
    scope narrows to the child rows themselves: they are written, none are removed. With
    ``append`` (the store has no rows in these tables yet, so there is nothing to replace)
    the rows are appended and ``data`` carries no scope rows.
    """
    if append:
        return dlt.resource(data, name=child.table, table_name=child.table, write_disposition="append")
    key = child.key[0]
    scope = ", ".join(["shop", child.parent_key, *child.key] if not replace else ["shop", child.parent_key])
    return dlt.resource(
        data,
        name=child.table,
        table_name=child.table,
        write_disposition={
            "disposition": "merge",
            "strategy": "delete-insert",
            "destination_scope": f"({scope}) IN (SELECT {scope} FROM {{staging_table}})",
            "source_filter": f"{key} IS NOT NULL",
        },
    )


def _apply_deletes(
    con: duckdb.DuckDBPyConnection,
    spec: EntitySpec,
    shop: str,
    loaded_at: datetime,
    deleted_ids: pl.Series,
    present_ids: pl.Series | None,
    listed_at: datetime | None = None,
) -> tuple[int, int, list[int]]:
    """Stamp / clear ``_deleted_at`` (parents, then their children).

    Returns (deleted, undeleted, the ids newly stamped by delete markers).

    Done in DuckDB SQL because dlt's merge can only replace or hard-delete rows, not stamp
    rows that are absent from the load; it runs in one transaction after the dlt merge and
    is idempotent, so a crash in between is repaired by loading the batch again.

    ``listed_at`` is when a complete listing started. Webhooks and incremental reads land
    while an export runs, so a row created after it started is rightly absent from it, and a
    row deleted after it started is still listed: only rows last loaded before the start are
    stamped, and only deletions stamped before it are cleared. Both sides of each comparison
    are this machine's clock (``_loaded_at``, ``_deleted_at``, the export's start), never
    Shopify's ``updated_at``.
    """
    tables = _existing_tables(con)
    if spec.table not in tables:
        return 0, 0, []
    parent = f"{DATASET}.{spec.table}"
    deleted = undeleted = 0
    marked_now: list[int] = []
    con.register("marked", pl.DataFrame({"id": deleted_ids.cast(pl.Int64)}).to_arrow())
    if present_ids is not None:
        con.register("present", pl.DataFrame({"id": present_ids.cast(pl.Int64)}).to_arrow())
    con.execute("BEGIN TRANSACTION")
    try:
        if len(deleted_ids):
            marked_now = [
                row[0]
                for row in con.execute(
                    f"UPDATE {parent} SET _deleted_at = ? WHERE shop = ? AND _deleted_at IS NULL"
                    " AND id IN (SELECT id FROM marked) RETURNING id",
                    [loaded_at, shop],
                ).fetchall()
            ]
            deleted += len(marked_now)
        if present_ids is not None:
            changed_before = listed_before = ""
            stamp_args: list[Any] = [loaded_at, shop]
            clear_args: list[Any] = [shop]
            if listed_at is not None:
                changed_before = " AND _loaded_at < ?"
                stamp_args.append(listed_at)
                listed_before = " AND _deleted_at < ?"
                clear_args.append(listed_at)
            deleted += con.execute(
                f"UPDATE {parent} SET _deleted_at = ? WHERE shop = ? AND _deleted_at IS NULL"
                f" AND id NOT IN (SELECT id FROM present){changed_before}",
                stamp_args,
            ).fetchone()[0]
            undeleted += con.execute(
                f"UPDATE {parent} SET _deleted_at = NULL WHERE shop = ? AND _deleted_at IS NOT NULL"
                f" AND id IN (SELECT id FROM present){listed_before}",
                clear_args,
            ).fetchone()[0]
        if deleted or undeleted:
            # Children follow their parent: stamped with it, cleared when it reappears.
            for child in spec.children:
                if child.table not in tables:
                    continue
                table = f"{DATASET}.{child.table}"
                con.execute(
                    f"UPDATE {table} c SET _deleted_at = p._deleted_at FROM {parent} p"
                    f" WHERE c.shop = ? AND p.shop = c.shop AND p.id = c.{child.parent_key}"
                    " AND c._deleted_at IS DISTINCT FROM p._deleted_at",
                    [shop],
                )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("marked")
        if present_ids is not None:
            con.unregister("present")
    return deleted, undeleted, marked_now


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _load_batch(pipeline: dlt.Pipeline, manifest: Manifest, path: Path) -> LoadResult:
    spec = SPECS[manifest.entity]
    loaded_at = datetime.now(UTC)
    parsed = parse_batch(manifest, path, loaded_at=loaded_at)
    result = LoadResult(batches=[manifest.batch_id])

    with pipeline.sql_client() as client:
        con = client.native_connection
        plan = _classify(
            con, spec, parsed.parents.select("id", "updated_at").with_columns(parsed.row_hash), manifest.shop
        )
        counts = dict(plan.group_by("_action").len().iter_rows())
        # A first load of the store's entity writes every row into tables holding none of the
        # store's: appending gives what the merge would, without staging every row first.
        append = counts.get("inserted", 0) == parsed.parents.height and not _shop_has_rows(
            con, [spec.table, *(c.table for c in spec.children)], manifest.shop
        )
    for action in ("inserted", "updated", "unchanged", "stale"):
        setattr(result, action, counts.get(action, 0))

    n_written = result.inserted + result.updated
    if n_written:
        # A first load writes every row: skip the filtering copies (they matter at millions).
        everything = n_written == parsed.parents.height
        parents, row_hash = parsed.parents, parsed.row_hash
        if not everything:
            written_ids = plan.filter(pl.col("_action").is_in(["inserted", "updated"]))["id"]
            keep = parents["id"].is_in(written_ids.implode())
            parents, row_hash = parents.filter(keep), row_hash.filter(keep)
        if manifest.partial and any(c.inline is None for c in spec.children):
            # The hash covers the children, and a partial file's may be cut short: store none,
            # so the next complete version never reads as "unchanged" and replaces them.
            row_hash = pl.repeat(None, parents.height, dtype=pl.Int64, eager=True).alias(ROW_HASH)
        lineage = (manifest.shop, manifest.batch_id, loaded_at)
        written = parents.select(pl.col("id"))
        result.rows[spec.table] = parents.height
        parent_table = _load_table(parents, *lineage, keys=("shop", "id"), extra=[row_hash])
        resources = [_parent_resource(spec.table, parent_table, append=append)]
        # from here the Arrow tables hold the rows: each frame is dropped once converted
        del parents, row_hash, parent_table
        parsed.parents = parsed.parents.clear()
        for child in spec.children:
            rows = parsed.children.pop(child.table)
            if not everything:
                rows = rows.join(written.rename({"id": child.parent_key}), on=child.parent_key, how="semi")
            result.rows[child.table] = rows.height
            # Inline children sit inside their parent's line, which is always whole; child
            # lines of a partial file may be cut short, so they must not replace any.
            replace = not (manifest.partial and child.inline is None)
            tables = [_load_table(rows, *lineage)]
            del rows
            if replace and not append:
                scope = _conform(
                    written.rename({"id": child.parent_key}), _frame_schema(child.table, parent=False)
                )
                tables.append(_load_table(scope, *lineage))
                del scope
            resources.append(_child_resource(child, tables, replace=replace, append=append))
            del tables
        # extract writes the Arrow tables to load files; the Python copies are then dropped
        # before DuckDB merges them, so its working memory never stacks on top of them.
        pipeline.extract(resources, loader_file_format="parquet")
        del resources, written
        pipeline.normalize()
        pipeline.load()

    # Only a batch its writer declared complete proves absence; a reconcile id list cut short
    # (a failed or partial listing) must not stamp the ids it happens to miss.
    complete = manifest.complete
    marked_now: list[int] = []
    if len(parsed.deleted_ids) or complete:
        with pipeline.sql_client() as client:
            result.deleted, result.undeleted, marked_now = _apply_deletes(
                client.native_connection,
                spec,
                manifest.shop,
                loaded_at,
                parsed.deleted_ids,
                parsed.present_ids if complete else None,
                _parse_time(manifest.window_to) if complete else None,
            )
    source = lag_source(manifest)
    if source is not None:
        samples = lag_samples(
            manifest, plan, parsed.deleted_triggered, marked_now, loaded_at=loaded_at, source=source
        )
        if samples.height:
            with pipeline.sql_client() as client:
                record_lag(client.native_connection, samples, now=loaded_at)
    return result


def lag_source(manifest: Manifest) -> str | None:
    """``webhook`` or ``poll`` for batches of fresh changes; None for bulk exports and listings."""
    if manifest.mode == "webhook" or manifest.extra.get("source") == "webhooks":
        return "webhook"
    if manifest.mode == "incremental":
        return "poll"
    return None


def lag_samples(
    manifest: Manifest,
    plan: pl.DataFrame,
    deleted_triggered: pl.DataFrame,
    marked_now: Sequence[int],
    *,
    loaded_at: datetime,
    source: str,
) -> pl.DataFrame:
    """One ``ops.sync_lag`` row per change this batch wrote: new and edited rows, and new deletes.

    Unchanged and stale rows are no change, so a batch loaded twice samples nothing twice.
    A delete's change time is when Shopify reported it; a marker without one is not sampled.
    """
    loaded = pl.lit(loaded_at).cast(TS_UTC)
    written = plan.filter(
        pl.col("_action").is_in(["inserted", "updated"]) & pl.col("updated_at").is_not_null()
    )
    changes = written.select(
        pl.col("id"),
        pl.when(pl.col("_action") == "inserted")
        .then(pl.lit("create"))
        .otherwise(pl.lit("update"))
        .alias("event_type"),
        pl.col("updated_at").cast(TS_UTC).alias("changed_at"),
    )
    deletes = deleted_triggered.filter(
        pl.col("id").is_in(list(marked_now)) & pl.col("triggered_at").is_not_null()
    ).select(
        pl.col("id"),
        pl.lit("delete").alias("event_type"),
        pl.col("triggered_at")
        .str.to_datetime(time_zone="UTC", strict=False)
        .cast(TS_UTC)
        .alias("changed_at"),
    )
    frame = pl.concat([changes, deletes]).filter(pl.col("changed_at").is_not_null())
    return frame.select(
        pl.lit(manifest.shop).alias("shop"),
        pl.lit(manifest.entity).alias("entity"),
        pl.col("event_type"),
        pl.lit(source).alias("source"),
        pl.col("id"),
        pl.col("changed_at"),
        loaded.alias("loaded_at"),
        # A clock a little behind Shopify's would give small negative lags; they read as 0.
        ((loaded - pl.col("changed_at")).dt.total_microseconds() / 1e6).clip(lower_bound=0).alias("lag_s"),
        pl.lit(manifest.batch_id).alias("batch_id"),
    )


def _select_batches(
    landing_root: Path, shop: str | None, entity: str | None, batch_ids: Sequence[str] | None
) -> list[tuple[Manifest, Path]]:
    if batch_ids is None:
        return pending_batches(landing_root, shop, entity)
    # Named batches are loaded even if already loaded: that is how a batch is re-loaded.
    wanted = set(batch_ids)
    chosen = [(m, p) for m, p in iter_batches(landing_root, shop, entity) if m.batch_id in wanted]
    missing = wanted - {m.batch_id for m, _ in chosen}
    if missing:
        raise LoadError(
            f"Landing batch(es) {', '.join(sorted(missing))} not found under {landing_root}"
            + (f" for store {shop}" if shop else "")
            + (f" and entity {entity}" if entity else "")
            + "; check the batch ids (pending batches are listed by the landing sensor).",
            batch_id=sorted(missing)[0],
            line=None,
            loaded=LoadResult(),
        )
    return chosen


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = " ".join(str(exc).split()) or type(exc).__name__
    # dlt wraps DuckDB's own words in a generic credentials hint; keep DuckDB's.
    return text.split("The actual reason given is: ", 1)[-1]


def _warehouse_failure(
    exc: BaseException, manifest: Manifest, warehouse: Path, loaded: LoadResult, started: float
) -> LoadError:
    """The error for a batch the warehouse refused (e.g. its file held by another process)."""
    loaded.duration_s = time.perf_counter() - started
    return LoadError(
        f"Loading landing batch {manifest.batch_id} into {warehouse} failed: {_root_cause(exc)}. "
        "The batch stays pending and later batches were not loaded; fix the cause "
        "(close other programs writing the warehouse) and run the load again.",
        batch_id=manifest.batch_id,
        line=None,
        loaded=loaded,
    )


def load_pending(
    warehouse: Path,
    landing_root: Path,
    *,
    shop: str | None = None,
    entity: str | None = None,
    batch_ids: Sequence[str] | None = None,
) -> LoadResult:
    """Load pending landing batches (or exactly ``batch_ids``) into ``shopify.*``, oldest first.

    Each batch is merged and committed, then marked loaded. On a bad batch this raises
    :class:`LoadError` (the message names the batch and line); batches before it stay
    loaded, it and every later batch stay pending. Engagement-feed batches are left for
    their own loader and reported in ``skipped``.
    """
    started = time.perf_counter()
    warehouse = Path(warehouse)
    total = LoadResult()
    batches = _select_batches(Path(landing_root), shop, entity, batch_ids)
    todo: list[tuple[Manifest, Path]] = []
    for manifest, path in batches:
        # Extension point: engagement feed batches (shop "_engagement") get their own
        # loader in another issue; unknown entities likewise wait for theirs.
        if manifest.shop == ENGAGEMENT or manifest.entity not in SPECS:
            total.skipped.append(manifest.batch_id)
        else:
            todo.append((manifest, path))
    if not todo:
        total.duration_s = time.perf_counter() - started
        return total

    warehouse.parent.mkdir(parents=True, exist_ok=True)
    pipeline = _pipeline(warehouse)
    if pipeline.has_pending_data:
        # A previous run died mid-load: finish its package first so it cannot land later
        # on top of newer data.
        pipeline.normalize()
        pipeline.load()
    # One warehouse connection held open across the batches: every step of a load borrows
    # it instead of opening the file again (a third of a small incremental load's time).
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(pipeline.sql_client())
        except (DltException, duckdb.Error, OSError) as exc:
            raise _warehouse_failure(exc, todo[0][0], warehouse, total, started) from exc
        for manifest, path in todo:
            batch_started = time.perf_counter()
            try:
                result = _load_batch(pipeline, manifest, path)
            except MalformedBatch as exc:
                total.duration_s = time.perf_counter() - started
                raise LoadError(str(exc), batch_id=manifest.batch_id, line=exc.line, loaded=total) from None
            except (DltException, duckdb.Error, OSError) as exc:
                raise _warehouse_failure(exc, manifest, warehouse, total, started) from exc
            result.duration_s = time.perf_counter() - batch_started
            info = asdict(result)
            info["loaded_at"] = datetime.now(UTC).isoformat()
            mark_loaded(path, info)
            log.info(
                "loaded batch %s (%s/%s): %d new, %d updated, %d unchanged, %d stale, %d deleted",
                manifest.batch_id,
                manifest.shop,
                manifest.entity,
                result.inserted,
                result.updated,
                result.unchanged,
                result.stale,
                result.deleted,
            )
            total.add(result)
    # Customers a store asked to erase stay erased, whatever the batches just loaded said.
    again = privacy.reapply_redactions(warehouse, {m.shop for m, _ in todo})
    if again:
        log.info("erased again the personal data of %d redacted customer(s) a load brought back", len(again))
    total.duration_s = time.perf_counter() - started
    return total


def warehouse_counts(warehouse: Path) -> dict[str, int]:
    """Live rows (``_deleted_at`` is null) per ``shopify.*`` table; empty if nothing was loaded yet."""
    warehouse = Path(warehouse)
    if not warehouse.exists():
        return {}
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        present = _existing_tables(con)
        return {
            table: con.execute(
                f"SELECT count(*) FROM {DATASET}.{table} WHERE _deleted_at IS NULL"
            ).fetchone()[0]
            for table in WAREHOUSE
            if table in present
        }
    finally:
        con.close()
