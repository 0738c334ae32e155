"""RFM: tie-safe rank quintiles, recency reversed, the segment map covering all 11 segments + prospect."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import polars as pl
import pytest

from transforms.rfm import (
    PROSPECT,
    RFM_COLUMNS,
    SEGMENT_MAP_PATH,
    SEGMENTS,
    rfm_segments,
    segment_map,
    validate_segment_map,
)

# The grid documented in transforms/rfm.py and the CSV header: rows R 5..1, columns FM 1..5.
EXPECTED_GRID = {
    5: ["new customer", "potential loyalist", "potential loyalist", "champions", "champions"],
    4: ["promising", "potential loyalist", "potential loyalist", "loyal", "champions"],
    3: ["about to sleep", "need attention", "need attention", "loyal", "loyal"],
    2: ["hibernating", "hibernating", "at risk", "at risk", "can't lose"],
    1: ["lost", "lost", "at risk", "can't lose", "can't lose"],
}


def metrics_frame(days: list[int | None], orders: list[int], spend: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "contact_id": [f"c{i:03d}" for i in range(len(days))],
            "days_since_last_order": days,
            "order_count": orders,
            "total_spent": [Decimal(s) for s in spend],
        },
        schema_overrides={"order_count": pl.UInt32, "total_spent": pl.Decimal(38, 2)},
    )


def test_packaged_map_is_complete_and_matches_the_documented_grid() -> None:
    table = segment_map()
    assert table.height == 25
    assert set(table["segment"]) == set(SEGMENTS) and len(SEGMENTS) == 11
    for row in table.iter_rows(named=True):
        assert EXPECTED_GRID[row["r_score"]][row["fm_score"] - 1] == row["segment"]
    header = SEGMENT_MAP_PATH.read_text().splitlines()[0]
    assert header.startswith("#")  # documented in its header


def test_every_cell_of_the_grid_and_prospects() -> None:
    # 25 buyers, one per (R, FM) cell with F = M = FM: every score 1..5 is held by exactly five
    # buyers, so the quintiles are exactly the designed scores.
    days, orders, spend, expected = [], [], [], []
    for i, (r, fm) in enumerate((r, fm) for r in range(1, 6) for fm in range(1, 6)):
        # R: fewer days is better; five distinct values per score band
        days.append(1000 - (r - 1) * 100 - i)
        orders.append(fm * 100 + i)
        spend.append(f"{fm * 1000 + i}.00")
        expected.append((r, fm, EXPECTED_GRID[r][fm - 1]))
    days.append(None)
    orders.append(0)
    spend.append("0.00")
    result = rfm_segments(metrics_frame(days, orders, spend))
    assert result.columns == ["contact_id", *RFM_COLUMNS]
    for row, (r, fm, segment) in zip(result.head(25).iter_rows(named=True), expected, strict=True):
        assert (row["r_score"], row["f_score"], row["m_score"], row["fm_score"]) == (r, fm, fm, fm)
        assert row["segment"] == segment
        assert row["rfm_code"] == f"{r}{fm}{fm}"
    assert set(result["segment"]) == {*SEGMENTS, PROSPECT}
    prospect = result.row(25, named=True)
    assert prospect["segment"] == PROSPECT
    assert prospect["r_score"] is None and prospect["rfm_code"] is None


def test_recency_is_reversed() -> None:
    result = rfm_segments(metrics_frame([1, 10, 100, 1000, 5], [1, 1, 1, 1, 1], ["1", "2", "3", "4", "5"]))
    assert result["r_score"].to_list() == [5, 3, 2, 1, 4]
    assert result["m_score"].to_list() == [1, 2, 3, 4, 5]


def test_ties_share_a_score() -> None:
    # 60 % of buyers with one order: all get F=1; the rest spread above it
    result = rfm_segments(
        metrics_frame([5] * 10, [1, 1, 1, 1, 1, 1, 2, 2, 3, 9], ["10.00"] * 5 + ["20.00"] * 5)
    )
    assert result["f_score"].to_list() == [1, 1, 1, 1, 1, 1, 4, 4, 5, 5]
    assert result["m_score"].to_list() == [1] * 5 + [3] * 5
    assert result["r_score"].unique().to_list() == [1]


def test_tie_safety_and_monotonicity_on_random_data() -> None:
    rng = np.random.default_rng(7)
    n = 5_000
    metrics = metrics_frame(
        rng.integers(0, 40, n).tolist(),
        rng.geometric(0.5, n).tolist(),
        [f"{v:.2f}" for v in rng.choice([9.99, 19.99, 49.5, 120.0, 310.25], n)],
    )
    result = pl.concat([metrics, rfm_segments(metrics).drop("contact_id")], how="horizontal")
    for value, score, ascending in (
        ("days_since_last_order", "r_score", False),
        ("order_count", "f_score", True),
        ("total_spent", "m_score", True),
    ):
        per_value = result.group_by(value).agg(pl.col(score).n_unique().alias("n"), pl.col(score).first())
        assert (per_value["n"] == 1).all(), f"a tie in {value} straddles two {score}s"
        ordered = per_value.sort(value, descending=not ascending)[score].to_list()
        assert ordered == sorted(ordered), f"{score} is not monotonic in {value}"
        assert set(ordered) <= {1, 2, 3, 4, 5}
    assert result["segment"].is_not_null().all()


def test_scores_within_groups() -> None:
    metrics = pl.DataFrame(
        {
            "shop": ["a"] * 5 + ["b"] * 5,
            "customer_id": list(range(10)),
            "days_since_last_order": [1, 2, 3, 4, 5, 100, 200, 300, 400, 500],
            "order_count": [1] * 10,
            "total_spent_reporting": [Decimal(v) for v in range(10)],
        }
    )
    within = rfm_segments(
        metrics, keys=["shop", "customer_id"], within=["shop"], monetary="total_spent_reporting"
    )
    assert within["r_score"].to_list() == [5, 4, 3, 2, 1] * 2
    assert within["m_score"].to_list() == [1, 2, 3, 4, 5] * 2
    overall = rfm_segments(metrics, keys=["shop", "customer_id"], monetary="total_spent_reporting")
    assert overall["r_score"].to_list() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]


def test_bad_maps_and_inputs_are_refused() -> None:
    table = segment_map()
    with pytest.raises(ValueError, match="exactly once"):
        validate_segment_map(table.head(24))
    with pytest.raises(ValueError, match="Unknown RFM segment"):
        validate_segment_map(table.with_columns(segment=pl.lit("whales")))
    with pytest.raises(ValueError, match="needs the metrics column"):
        rfm_segments(pl.DataFrame({"contact_id": ["x"], "order_count": [1]}))
    custom = table.with_columns(segment=pl.lit("lost"))
    result = rfm_segments(metrics_frame([1, 2], [1, 2], ["1", "2"]), table=custom)
    assert result["segment"].to_list() == ["lost", "lost"]
