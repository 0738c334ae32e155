"""Contact ids that survive re-runs, and the merge/split events between runs.

A cluster keeps the previous contact id held by most of its members (ties: the smallest
id). Each previous id goes to at most one cluster: when a contact splits, the part holding
most of its members keeps the id (ties: the part whose smallest member key is smallest).
Clusters left without an id get ``ct_<hex>``, a hash of their smallest member key, so a
re-run on the same input yields the same ids.
"""

from __future__ import annotations

import hashlib

import duckdb
import polars as pl

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event_type": pl.String,  # merge | split
    "contact_id": pl.String,  # merge: the surviving id; split: the id that split
    "related_contact_ids": pl.List(pl.String),  # merge: ids merged in; split: the resulting ids
    "records": pl.List(pl.String),  # member keys "<shop>|<record_type>|<record_id>"
}


def new_contact_id(member_key: str, salt: int = 0) -> str:
    """The id a new cluster gets from its smallest member key."""
    text = member_key if salt == 0 else f"{member_key}#{salt}"
    return "ct_" + hashlib.sha1(text.encode()).hexdigest()[:16]


def _hash_ids(keys: pl.Series) -> list[str]:
    """``new_contact_id`` for many keys at once (SHA-1 in DuckDB, vectorised)."""
    if keys.len() == 0:
        return []
    con = duckdb.connect(":memory:")
    try:
        con.register("keys", pl.DataFrame({"k": keys}).to_arrow())
        out = con.sql("SELECT 'ct_' || left(sha1(k), 16) AS id FROM keys").pl()
    finally:
        con.close()
    return out["id"].to_list()


def _claim_previous(held: pl.DataFrame) -> pl.DataFrame:
    """Greedy rounds giving each cluster at most one previous id and each id at most one cluster."""
    assigned: list[pl.DataFrame] = []
    remaining = held
    while remaining.height:
        best = (
            remaining.sort(["cluster", "n", "contact_id"], descending=[False, True, False])
            .group_by("cluster", maintain_order=True)
            .first()
        )
        winners = (
            best.sort(["contact_id", "n", "min_key"], descending=[False, True, False])
            .group_by("contact_id", maintain_order=True)
            .first()
        )
        assigned.append(winners.select("cluster", "contact_id"))
        remaining = remaining.join(winners.select("cluster"), on="cluster", how="anti").join(
            winners.select("contact_id"), on="contact_id", how="anti"
        )
    if not assigned:
        return pl.DataFrame(schema={"cluster": pl.UInt32, "contact_id": pl.String})
    return pl.concat(assigned)


def assign_contact_ids(
    members: pl.DataFrame, previous: pl.DataFrame | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Contact id per cluster and the merge/split events relative to ``previous``.

    ``members`` has ``key`` (member key) and ``cluster``; ``previous`` has ``key`` and
    ``contact_id`` (or is None on the first run). Returns ``(ids, events)`` where ``ids``
    has ``cluster``, ``contact_id`` and ``is_new``.
    """
    clusters = members.group_by("cluster").agg(min_key=pl.col("key").min())
    if previous is not None and previous.height:
        prev = members.join(previous.select("key", "contact_id").unique("key"), on="key")
        held = prev.group_by("cluster", "contact_id").agg(n=pl.len()).join(clusters, on="cluster")
        kept = _claim_previous(held)
        used_ids = set(previous["contact_id"].unique().to_list())
    else:
        prev = members.select("key", "cluster").with_columns(contact_id=pl.lit(None, pl.String)).clear()
        kept = pl.DataFrame(schema={"cluster": pl.UInt32, "contact_id": pl.String})
        used_ids = set()
    fresh = clusters.join(kept, on="cluster", how="anti").sort("min_key")
    fresh_ids = _hash_ids(fresh["min_key"])
    # an old id derived from a key may live on in another cluster; never reuse it
    clashes = [i for i, cid in enumerate(fresh_ids) if cid in used_ids]
    for i in clashes:
        key, salt = fresh["min_key"][i], 1
        cid = new_contact_id(key, salt)
        while cid in used_ids:
            salt += 1
            cid = new_contact_id(key, salt)
        used_ids.add(cid)
        fresh_ids[i] = cid
    ids = pl.concat(
        [
            kept.with_columns(is_new=pl.lit(False)),
            fresh.select("cluster", contact_id=pl.Series(fresh_ids, dtype=pl.String), is_new=pl.lit(True)),
        ]
    )
    events = _events(members, prev, ids)
    return ids, events


def _events(members: pl.DataFrame, prev: pl.DataFrame, ids: pl.DataFrame) -> pl.DataFrame:
    """Merge events (a cluster holding several previous ids) and split events (an id spread over clusters)."""
    if prev.height == 0:
        return pl.DataFrame(schema=EVENT_SCHEMA)
    now = prev.join(ids.select("cluster", pl.col("contact_id").alias("new_id")), on="cluster")
    merges = (
        now.group_by("new_id")
        .agg(related_contact_ids=pl.col("contact_id").unique().sort(), n=pl.col("contact_id").n_unique())
        .filter(pl.col("n") > 1)
        .join(
            members.join(ids, on="cluster").group_by("contact_id").agg(records=pl.col("key").sort()),
            left_on="new_id",
            right_on="contact_id",
        )
        .select(
            pl.lit("merge").alias("event_type"),
            pl.col("new_id").alias("contact_id"),
            "related_contact_ids",
            "records",
        )
    )
    splits = (
        now.group_by("contact_id")
        .agg(
            related_contact_ids=pl.col("new_id").unique().sort(),
            n=pl.col("new_id").n_unique(),
            records=pl.col("key").sort(),
        )
        .filter(pl.col("n") > 1)
        .select(pl.lit("split").alias("event_type"), "contact_id", "related_contact_ids", "records")
    )
    return pl.concat([merges.cast(EVENT_SCHEMA), splits.cast(EVENT_SCHEMA)]).sort("event_type", "contact_id")
