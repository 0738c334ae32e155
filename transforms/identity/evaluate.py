"""Pairwise accuracy of a resolution against ground truth."""

from __future__ import annotations

import polars as pl


def _pairs(counts: pl.Expr) -> pl.Expr:
    return (counts * (counts - 1) // 2).sum()


def pairwise_metrics(identities: pl.DataFrame, truth: pl.DataFrame) -> dict[str, float]:
    """Pairwise precision, recall and F1 of ``identities`` against ``truth``.

    Both frames are keyed by ``shop``, ``record_type``, ``record_id`` (compared as
    strings); ``identities`` has ``contact_id`` and ``truth`` has ``person_id``. Only
    records present in both count. A pair is predicted when two records share a contact,
    and true when they share a person.
    """
    keys = ["shop", "record_type", "record_id"]
    joined = identities.select(*[pl.col(k).cast(pl.String) for k in keys], "contact_id").join(
        truth.select(*[pl.col(k).cast(pl.String) for k in keys], "person_id"), on=keys
    )
    predicted = joined.group_by("contact_id").len().select(_pairs(pl.col("len").cast(pl.Int64))).item()
    actual = joined.group_by("person_id").len().select(_pairs(pl.col("len").cast(pl.Int64))).item()
    hits = (
        joined.group_by("contact_id", "person_id").len().select(_pairs(pl.col("len").cast(pl.Int64))).item()
    )
    precision = hits / predicted if predicted else 1.0
    recall = hits / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "records": float(joined.height),
        "predicted_pairs": float(predicted),
        "true_pairs": float(actual),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }
