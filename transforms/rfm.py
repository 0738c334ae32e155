"""RFM scores (1–5) and named segments from customer value metrics.

Scores
    R from ``days_since_last_order`` (reversed: the most recent buyers score 5), F from
    ``order_count``, M from the spend column (reporting currency for contacts). Each is a
    rank-based quintile over the customers with orders (optionally within groups such as
    ``shop``): ``score = floor((rank_min - 1) * 5 / n) + 1``, where ``rank_min`` is the
    ascending "min" rank of the value (for R, of minus the days). Equal values get the same
    rank and therefore the same score, so a tie never straddles two scores; with many ties
    (most customers have one order) a score may stay unused.

Segments
    ``fm_score = (f_score + m_score + 1) // 2`` (the mean of F and M, rounded half up; F
    alone when the spend is unknown, for a buyer in a currency without an FX rate, whose
    ``rfm_code`` then reads e.g. ``"54-"``); the
    pair (``r_score``, ``fm_score``) is looked up in ``transforms/data/rfm_segments.csv``,
    which assigns each of the 25 cells one of 11 segments:

    ======  ===============  ==================  ==================  ==========  ==========
    R \\ FM  1                2                   3                   4           5
    ======  ===============  ==================  ==================  ==========  ==========
    5       new customer     potential loyalist  potential loyalist  champions   champions
    4       promising        potential loyalist  potential loyalist  loyal       champions
    3       about to sleep   need attention      need attention      loyal       loyal
    2       hibernating      hibernating         at risk             at risk     can't lose
    1       lost             lost                at risk             can't lose  can't lose
    ======  ===============  ==================  ==================  ==========  ==========

    Customers without orders get no scores and the segment ``prospect``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import polars as pl

SEGMENTS: tuple[str, ...] = (
    "champions",
    "loyal",
    "potential loyalist",
    "new customer",
    "promising",
    "need attention",
    "about to sleep",
    "can't lose",
    "at risk",
    "hibernating",
    "lost",
)
PROSPECT = "prospect"
SCORE_BINS = 5

SEGMENT_MAP_PATH = Path(__file__).parent / "data" / "rfm_segments.csv"
SEGMENT_MAP_SCHEMA: dict[str, pl.DataType] = {
    "r_score": pl.Int8,
    "fm_score": pl.Int8,
    "segment": pl.String,
}

RFM_COLUMNS: dict[str, pl.DataType] = {
    "r_score": pl.Int8,
    "f_score": pl.Int8,
    "m_score": pl.Int8,
    "fm_score": pl.Int8,
    "rfm_code": pl.String,  # e.g. "545"; null for prospects
    "segment": pl.String,
}


@functools.cache
def segment_map() -> pl.DataFrame:
    """The packaged (r_score, fm_score) → segment table, validated to cover all 25 cells once.

    It is static data shipped with the code (like a constant), read once per process.
    """
    table = pl.read_csv(SEGMENT_MAP_PATH, comment_prefix="#", schema=SEGMENT_MAP_SCHEMA)  # static-data
    validate_segment_map(table)
    return table


def validate_segment_map(table: pl.DataFrame) -> None:
    """Raise ``ValueError`` unless ``table`` maps every (R, FM) cell 1..5 × 1..5 exactly once to a known segment."""
    cells = {(r, fm) for r in range(1, SCORE_BINS + 1) for fm in range(1, SCORE_BINS + 1)}
    seen = list(zip(table["r_score"].to_list(), table["fm_score"].to_list(), strict=True))
    if len(seen) != len(set(seen)) or set(seen) != cells:
        raise ValueError("The RFM segment map must list every (r_score, fm_score) pair 1..5 exactly once.")
    unknown = set(table["segment"].to_list()) - set(SEGMENTS)
    if unknown:
        raise ValueError(f"Unknown RFM segment(s) in the map: {', '.join(sorted(unknown))}.")


def quintile_score(value: pl.Expr, within: Sequence[str] = ()) -> pl.Expr:
    """Tie-safe 1..5 score of ``value`` (higher value, higher score) among non-null rows.

    Rows with a null value get a null score.
    """
    rank = value.rank("min")
    n = value.count()
    if within:
        rank = rank.over(within)
        n = n.over(within)
    return ((rank.cast(pl.Int64) - 1) * SCORE_BINS // n.cast(pl.Int64) + 1).cast(pl.Int8)


def rfm_segments(
    metrics: pl.DataFrame,
    keys: Sequence[str] = ("contact_id",),
    within: Sequence[str] = (),
    monetary: str = "total_spent",
    table: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """RFM scores and segment for every row of a metrics frame.

    ``metrics`` needs ``keys``, ``days_since_last_order``, ``order_count`` and the
    ``monetary`` column (``total_spent`` for contact metrics; use
    ``total_spent_reporting`` for per-(shop, customer) metrics). ``within`` ranks inside
    groups (e.g. ``["shop"]``); by default all rows form one population. ``table`` overrides
    the packaged segment map. Returns ``keys`` + ``RFM_COLUMNS``, one row per input row, in
    input order. Rows with no orders are ``prospect`` with null scores.
    """
    keys = list(keys)
    within = list(within)
    if table is None:
        table = segment_map()
    else:
        validate_segment_map(table)
    required = [*keys, *within, "days_since_last_order", "order_count", monetary]
    missing = [c for c in dict.fromkeys(required) if c not in metrics.columns]
    if missing:
        raise ValueError(f"RFM needs the metrics column(s) {', '.join(missing)}.")

    has_orders = pl.col("order_count").fill_null(0) > 0
    scored = (
        metrics.lazy()
        .select(*dict.fromkeys([*keys, *within]), "days_since_last_order", "order_count", monetary)
        .with_row_index("_row")
        .with_columns(
            # Nulling the non-buyers keeps them out of every rank and count.
            _recency=pl.when(has_orders).then(-pl.col("days_since_last_order")),
            _frequency=pl.when(has_orders).then(pl.col("order_count")),
            _monetary=pl.when(has_orders).then(pl.col(monetary).cast(pl.Float64)),
        )
        .with_columns(
            r_score=quintile_score(pl.col("_recency"), within),
            f_score=quintile_score(pl.col("_frequency"), within),
            m_score=quintile_score(pl.col("_monetary"), within),
        )
        # a buyer whose spend is unknown (a currency without an FX rate) is placed by F alone
        .with_columns(
            fm_score=pl.coalesce((pl.col("f_score") + pl.col("m_score") + 1) // 2, pl.col("f_score")).cast(
                pl.Int8
            )
        )
        .join(table.lazy().cast(SEGMENT_MAP_SCHEMA), on=["r_score", "fm_score"], how="left")
        .with_columns(
            rfm_code=pl.concat_str(
                pl.col("r_score").cast(pl.String),
                pl.col("f_score").cast(pl.String),
                pl.col("m_score").cast(pl.String).fill_null("-"),
            ),
            segment=pl.when(has_orders).then(pl.col("segment")).otherwise(pl.lit(PROSPECT)),
        )
        .sort("_row")
    )
    return scored.select(*keys, *[pl.col(name).cast(dtype) for name, dtype in RFM_COLUMNS.items()]).collect()
