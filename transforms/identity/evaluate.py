"""Pairwise accuracy of a resolution against ground truth."""

from __future__ import annotations

import polars as pl

from transforms.identity.normalise import conform_records, normalise


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


def address_ceiling(records: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    """The best resolution names and addresses alone allow: an oracle, for judging a real one.

    Records of one person (by ``truth``) that share a normalised street line and postcode
    are one contact; every other record stands alone. Without email or phone, a record with
    no address or at another address than the person's others has nothing but a name to
    link on, which a real method cannot use without merging strangers; so this oracle's
    recall is what a names-and-addresses resolution can reach.
    """
    keys = ["shop", "record_type", "record_id"]
    norm = normalise(conform_records(records))
    joined = norm.join(truth.select(*[pl.col(k).cast(pl.String) for k in keys], "person_id"), on=keys)
    return joined.select(
        *keys,
        contact_id=pl.when(pl.col("address_norm").is_not_null())
        .then(pl.concat_str([pl.col("person_id").cast(pl.String), pl.col("address_key")], separator="#"))
        .otherwise(pl.concat_str(keys, separator="|")),
    )
