"""Clustering: connected components over the accepted links."""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

RULE_PRIORITY: dict[str, int] = {"email": 0, "phone": 1, "probabilistic": 2}


def cluster_records(n: int, edges: pl.DataFrame) -> pl.Series:
    """Component of each of ``n`` records (by ``_rid``) over undirected ``edges`` (``l``, ``r``).

    A component is labelled by its smallest ``_rid``, so labels do not depend on edge order.
    """
    if n == 0:
        return pl.Series("cluster", [], dtype=pl.UInt32)
    left = edges["l"].to_numpy().astype(np.int64, copy=False)
    right = edges["r"].to_numpy().astype(np.int64, copy=False)
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # the smallest member of each component: labels are arbitrary, this is canonical
    smallest = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(smallest, labels, np.arange(n))
    return pl.Series("cluster", smallest[labels], dtype=pl.UInt32)


def record_rules(n: int, edges: pl.DataFrame) -> pl.DataFrame:
    """Per record (``_rid``): the strongest rule that linked it and its best probabilistic weight.

    Email beats phone beats probabilistic; records without any link get rule ``unique``.
    """
    ends = pl.concat(
        [
            edges.select(pl.col("l").alias("_rid"), "rule", "weight"),
            edges.select(pl.col("r").alias("_rid"), "rule", "weight"),
        ]
    ).with_columns(priority=pl.col("rule").replace_strict(RULE_PRIORITY, return_dtype=pl.Int8))
    best = ends.group_by("_rid").agg(
        rule=pl.col("rule").sort_by("priority").first(),
        weight=pl.col("weight").max(),
    )
    base = pl.DataFrame({"_rid": pl.arange(0, n, eager=True, dtype=pl.UInt32)})
    return (
        base.join(best, on="_rid", how="left").with_columns(pl.col("rule").fill_null("unique")).sort("_rid")
    )
