"""Consent across runs: the ratchet held against the state the warehouse already recorded.

``transforms.consent`` resolves one run's observations. This module carries the previous
run's restrictive states into the next one, so an unsubscribe the warehouse has recorded is
never undone by an observation that is not newer (a stale Shopify row, a re-sync from an old
export, or a contact that merged with a subscribed one), and it audits consent per contact:
a merge or a split changes which records a contact's state comes from, and that change is a
compliance event of its own.

The contact state of each customer record (``CONTACT_RECORDS_SCHEMA``: the state of the
contact a record belongs to) is what a run persists for the next: keyed by record, it
follows people through merges and splits without a mapping of old to new contact ids.

Every function is pure: frames in, frames out, ``recorded_at`` passed in.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from transforms.consent import (
    CONSENTING_STATES,
    OBSERVATIONS_SCHEMA,
    RESOLVED_SCHEMA,
    STATE_RESTRICTIVENESS,
    TS,
)

# States a later run may only replace with a strictly newer observation (the ratchet's teeth).
RATCHETED_STATES: tuple[str, ...] = tuple(s for s, rank in STATE_RESTRICTIVENESS.items() if rank == 0)

CONTACT_CONSENT_SCHEMA: dict[str, pl.DataType] = {
    "contact_id": pl.String,
    "channel": pl.String,
    "state": pl.String,
    "opt_in_level": pl.String,
    "updated_at": TS,
    "source": pl.String,
    "consented": pl.Boolean,
}
CONTACT_RECORDS_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "contact_id": pl.String,
    "channel": pl.String,
    "state": pl.String,
    "updated_at": TS,
    "source": pl.String,
}
CONTACT_AUDIT_SCHEMA: dict[str, pl.DataType] = {
    "contact_id": pl.String,
    "channel": pl.String,
    "previous_state": pl.String,  # the contact's own previous state; null for a new contact id
    "state": pl.String,
    "updated_at": TS,
    "source": pl.String,
    "reason": pl.String,  # new contact | merged | split | state changed
    "previous_contact_ids": pl.List(pl.String),  # contacts its records belonged to before
    "recorded_at": TS,
}
REGRESSION_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "channel": pl.String,
    "previous_state": pl.String,
    "previous_updated_at": TS,
    "state": pl.String,
    "updated_at": TS,
}

_RECORD = ["shop", "customer_id", "channel"]


def _ranked(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.col("state").replace_strict(STATE_RESTRICTIVENESS, default=2, return_dtype=pl.Int8).alias("_rank"),
        pl.col("updated_at").is_not_null().alias("_dated"),
    )


def carried_observations(previous: pl.DataFrame | None) -> pl.DataFrame:
    """The previous run's ratcheted record states (``core.consent``) as observations for this run.

    They keep their timestamp, source and reference, so resolving them together with the
    fresh observations lets only a strictly newer observation replace an unsubscribe.
    """
    if previous is None or previous.is_empty():
        return pl.DataFrame(schema=OBSERVATIONS_SCHEMA)
    return (
        previous.cast(RESOLVED_SCHEMA)  # type: ignore[arg-type]
        .filter(pl.col("state").is_in(list(RATCHETED_STATES)))
        .select(list(OBSERVATIONS_SCHEMA))
    )


def _carried_contact_states(previous: pl.DataFrame | None, customer_contacts: pl.DataFrame) -> pl.DataFrame:
    """Previous ratcheted contact states, moved onto the contacts their records belong to now."""
    if previous is None or previous.is_empty():
        return pl.DataFrame(schema=CONTACT_CONSENT_SCHEMA)
    return (
        previous.cast(CONTACT_RECORDS_SCHEMA)  # type: ignore[arg-type]
        .filter(pl.col("state").is_in(list(RATCHETED_STATES)))
        .drop("contact_id")
        .join(
            customer_contacts.select("shop", pl.col("customer_id").cast(pl.Int64), "contact_id"),
            on=["shop", "customer_id"],
        )
        .select(
            "contact_id",
            "channel",
            "state",
            pl.lit(None, dtype=pl.String).alias("opt_in_level"),
            "updated_at",
            "source",
            pl.lit(False).alias("consented"),
        )
        .unique()
    )


def ratcheted_contact_consent(
    contact_states: pl.DataFrame, previous_records: pl.DataFrame | None, customer_contacts: pl.DataFrame
) -> pl.DataFrame:
    """Contact consent (``consent.contact_consent``) with the previous run's unsubscribes held.

    ``previous_records`` is the last run's contact state per record
    (``CONTACT_RECORDS_SCHEMA``); each ratcheted state moves to the contact its record
    belongs to now and competes under the same rule (latest dated wins, ties go to the more
    restrictive state). A contact that merged with an unsubscribed one, or split from it,
    stays unsubscribed until a newer subscribe arrives.
    """
    current = contact_states.select(list(CONTACT_CONSENT_SCHEMA)).cast(CONTACT_CONSENT_SCHEMA)  # type: ignore[arg-type]
    candidates = pl.concat([current, _carried_contact_states(previous_records, customer_contacts)])
    winners = (
        _ranked(candidates)
        .sort(
            ["contact_id", "channel", "_dated", "updated_at", "_rank", "source"],
            descending=[False, False, True, True, False, False],
            nulls_last=True,
        )
        .unique(subset=["contact_id", "channel"], keep="first", maintain_order=True)
    )
    return winners.select(
        *[c for c in CONTACT_CONSENT_SCHEMA if c != "consented"],
        pl.col("state").is_in(list(CONSENTING_STATES)).alias("consented"),
    ).cast(CONTACT_CONSENT_SCHEMA)  # type: ignore[arg-type]


def contact_states_by_record(contact_states: pl.DataFrame, customer_contacts: pl.DataFrame) -> pl.DataFrame:
    """Each customer record with the consent state of the contact it belongs to (``CONTACT_RECORDS_SCHEMA``)."""
    return (
        customer_contacts.select("shop", pl.col("customer_id").cast(pl.Int64), "contact_id")
        .join(
            contact_states.select("contact_id", "channel", "state", "updated_at", "source"), on="contact_id"
        )
        .select(list(CONTACT_RECORDS_SCHEMA))
        .cast(CONTACT_RECORDS_SCHEMA)  # type: ignore[arg-type]
        .sort(_RECORD)
    )


def contact_consent_changes(
    previous_records: pl.DataFrame | None,
    contact_states: pl.DataFrame,
    customer_contacts: pl.DataFrame,
    *,
    recorded_at: datetime,
) -> pl.DataFrame:
    """Audit rows (``CONTACT_AUDIT_SCHEMA``) for contacts whose consent changed since the last run.

    A row is written when a contact id is new (a new person, or one split off another), or
    when any contact its records belonged to before had another state or timestamp: a
    plain change, a merge (records arrived from other contacts) or a split. ``reason``
    says which; ``previous_state`` is the contact's own previous state (null for a new
    contact id).
    """
    now = contact_states.select("contact_id", "channel", "state", "updated_at", "source")
    members = customer_contacts.select("shop", pl.col("customer_id").cast(pl.Int64), "contact_id")
    prev = (
        previous_records.cast(CONTACT_RECORDS_SCHEMA)  # type: ignore[arg-type]
        if previous_records is not None
        else pl.DataFrame(schema=CONTACT_RECORDS_SCHEMA)
    )
    before = prev.rename(
        {"contact_id": "prev_contact_id", "state": "prev_state", "updated_at": "prev_at"}
    ).drop("source")
    # where each current contact's records were before, channel by channel
    moved = (
        members.join(before, on=["shop", "customer_id"])
        .group_by("contact_id", "channel")
        .agg(
            pl.col("prev_contact_id").unique().sort().alias("previous_contact_ids"),
            pl.struct("prev_state", "prev_at").unique().alias("_prev_states"),
        )
    )
    own = before.select(
        pl.col("prev_contact_id").alias("contact_id"), "channel", "prev_state", "prev_at"
    ).unique(["contact_id", "channel"])
    # a split: a previous contact whose records now belong to several contacts
    spread = (
        before.join(members, on=["shop", "customer_id"])
        .group_by("prev_contact_id", "channel")
        .agg(pl.col("contact_id").n_unique().alias("_n"))
        .filter(pl.col("_n") > 1)
    )
    split = (
        members.join(before, on=["shop", "customer_id"])
        .join(spread, on=["prev_contact_id", "channel"], how="semi")
        .select("contact_id", "channel")
        .unique()
        .with_columns(_split=pl.lit(True))
    )
    joined = (
        now.join(moved, on=["contact_id", "channel"], how="left")
        .join(own, on=["contact_id", "channel"], how="left")
        .join(split, on=["contact_id", "channel"], how="left")
    )
    # did any previous state of the contact's records differ from the one it has now?
    exploded = (
        joined.with_row_index("_row")
        .explode("_prev_states")
        .with_columns(
            _changed=(pl.col("_prev_states").struct.field("prev_state") != pl.col("state")).fill_null(True)
            | (pl.col("_prev_states").struct.field("prev_at").is_null() != pl.col("updated_at").is_null())
            | (pl.col("_prev_states").struct.field("prev_at") != pl.col("updated_at")).fill_null(False)
        )
        .group_by("_row")
        .agg(pl.col("_changed").any())
    )
    flagged = joined.with_row_index("_row").join(exploded, on="_row", how="left")
    is_new = pl.col("previous_contact_ids").is_null() | (pl.col("previous_contact_ids").list.len() == 0)
    merged = ~is_new & (pl.col("previous_contact_ids") != pl.concat_list([pl.col("contact_id")]))
    reason = (
        pl.when(is_new)
        .then(pl.lit("new contact"))
        .when(pl.col("_split").fill_null(False))
        .then(pl.lit("split"))
        .when(merged)
        .then(pl.lit("merged"))
        .otherwise(pl.lit("state changed"))
    )
    return (
        flagged.filter(is_new | pl.col("prev_state").is_null() | pl.col("_changed").fill_null(False))
        .select(
            "contact_id",
            "channel",
            pl.col("prev_state").alias("previous_state"),
            "state",
            "updated_at",
            "source",
            reason.alias("reason"),
            pl.col("previous_contact_ids").fill_null(pl.lit([], dtype=pl.List(pl.String))),
            pl.lit(recorded_at, dtype=TS).alias("recorded_at"),
        )
        .cast(CONTACT_AUDIT_SCHEMA)  # type: ignore[arg-type]
        .sort("contact_id", "channel")
    )


def regressions(previous: pl.DataFrame, current: pl.DataFrame) -> pl.DataFrame:
    """Records subscribed now although they were unsubscribed before by a state at least as new.

    Both frames are per ``(shop, customer_id, channel)`` with ``state`` and ``updated_at``:
    the record's own resolved consent (``core.consent``) or its contact's
    (``CONTACT_RECORDS_SCHEMA``). A subscribe replaces a recorded unsubscribe only when it
    is strictly newer; anything else here is a ratchet violation (``REGRESSION_SCHEMA``).
    """
    before = previous.filter(pl.col("state").is_in(list(RATCHETED_STATES))).select(
        *_RECORD, pl.col("state").alias("previous_state"), pl.col("updated_at").alias("previous_updated_at")
    )
    after = current.filter(pl.col("state").is_in(list(CONSENTING_STATES))).select(
        *_RECORD, "state", "updated_at"
    )
    older = pl.col("updated_at").is_null() | (
        pl.col("previous_updated_at").is_not_null() & (pl.col("updated_at") <= pl.col("previous_updated_at"))
    )
    return (
        after.join(before, on=_RECORD)
        .filter(older)
        .select(list(REGRESSION_SCHEMA))
        .cast(REGRESSION_SCHEMA)  # type: ignore[arg-type]
        .sort(_RECORD)
    )
