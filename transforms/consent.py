"""Marketing consent: one resolved state per customer record and per contact, email and SMS.

Consent reaches shopsync from two sides: Shopify's own consent fields on customers, and the
engagement side (an email unsubscribe link, an SMS reply such as ``STOP``). The resolution is
a one-way ratchet against accidental re-subscription (DESIGN.md decision 12):

* the observation with the latest ``updated_at`` wins;
* on a tie, the more restrictive state wins (``UNSUBSCRIBED`` over ``NOT_SUBSCRIBED`` over
  ``PENDING`` over ``SUBSCRIBED``);
* an observation without a timestamp is older than any timestamped one, so an unsubscribe is
  never overwritten by a subscribed state that carries no date;
* only ``SUBSCRIBED`` is consent. Shopify's ``NOT_SUBSCRIBED`` (and ``INVALID``,
  ``REDACTED``) never is.

Engagement events are keyed by email or phone, not by customer. They are matched to
customer records on every run, so a ``STOP`` from a phone no customer has yet is kept and
takes effect as soon as a customer with that phone appears.

Every function here is pure: frames in, frames out, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

TS = pl.Datetime("us", "UTC")

# Most restrictive first; the rank breaks timestamp ties.
STATE_RESTRICTIVENESS: dict[str, int] = {
    "UNSUBSCRIBED": 0,
    "REDACTED": 0,
    "INVALID": 1,
    "NOT_SUBSCRIBED": 2,
    "PENDING": 3,
    "SUBSCRIBED": 4,
}
CONSENTING_STATES: frozenset[str] = frozenset({"SUBSCRIBED"})
CHANNELS: tuple[str, ...] = ("email", "sms")

# Carrier keywords: replies that opt a number out of, or back into, SMS marketing.
SMS_OPT_OUT_KEYWORDS: frozenset[str] = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPT OUT", "OPTOUT"}
)
SMS_OPT_IN_KEYWORDS: frozenset[str] = frozenset({"START", "UNSTOP"})

OBSERVATIONS_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "channel": pl.String,  # "email" | "sms"
    "state": pl.String,
    "opt_in_level": pl.String,
    "updated_at": TS,
    "source": pl.String,  # "shopify" | "engagement" | "crm"
    "source_ref": pl.String,  # event id, batch id … what a person can trace it back to
}

ENGAGEMENT_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String,
    "occurred_at": TS,
    "type": pl.String,
    "shop": pl.String,
    "email_norm": pl.String,
    "phone_e164": pl.String,
    "body": pl.String,
}

CUSTOMER_KEYS_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "email_norm": pl.String,
    "phone_e164": pl.String,
}

RESOLVED_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "channel": pl.String,
    "state": pl.String,
    "opt_in_level": pl.String,
    "updated_at": TS,
    "source": pl.String,
    "source_ref": pl.String,
    "consented": pl.Boolean,
}

AUDIT_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "channel": pl.String,
    "previous_state": pl.String,
    "state": pl.String,
    "updated_at": TS,
    "source": pl.String,
    "source_ref": pl.String,
    "recorded_at": TS,
}


def sms_keyword_action(body: pl.Expr) -> pl.Expr:
    """``"opt_out"``, ``"opt_in"`` or null for an inbound SMS body.

    Case and surrounding or repeated whitespace do not matter (" stop ", "Opt  Out");
    anything else, ``HELP`` included, changes nothing.
    """
    keyword = body.str.strip_chars().str.to_uppercase().str.replace_all(r"\s+", " ")
    return (
        pl.when(keyword.is_in(list(SMS_OPT_OUT_KEYWORDS)))
        .then(pl.lit("opt_out"))
        .when(keyword.is_in(list(SMS_OPT_IN_KEYWORDS)))
        .then(pl.lit("opt_in"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )


def shopify_observations(customers: pl.DataFrame) -> pl.DataFrame:
    """Consent observations from Shopify customer rows.

    ``customers`` has ``shop, customer_id`` and per channel ``<channel>_consent_state``,
    ``<channel>_consent_opt_in_level``, ``<channel>_consent_updated_at``. A null state
    (no email, no phone) yields no observation.
    """
    parts = []
    for channel in CHANNELS:
        parts.append(
            customers.select(
                pl.col("shop"),
                pl.col("customer_id").cast(pl.Int64),
                pl.lit(channel).alias("channel"),
                pl.col(f"{channel}_consent_state").alias("state"),
                pl.col(f"{channel}_consent_opt_in_level").alias("opt_in_level"),
                pl.col(f"{channel}_consent_updated_at").cast(TS).alias("updated_at"),
                pl.lit("shopify").alias("source"),
                pl.lit(None, dtype=pl.String).alias("source_ref"),
            ).filter(pl.col("state").is_not_null())
        )
    return pl.concat(parts).cast(OBSERVATIONS_SCHEMA)  # type: ignore[arg-type]


def engagement_observations(events: pl.DataFrame, customer_keys: pl.DataFrame) -> pl.DataFrame:
    """Consent observations from engagement events, matched to customer records.

    ``events`` follows ``ENGAGEMENT_SCHEMA`` (email and phone already normalised by the
    identity normaliser). ``email_unsubscribe`` unsubscribes the email; an ``sms_inbound``
    opt-out keyword unsubscribes the phone and ``START``/``UNSTOP`` re-subscribes it. An
    event naming a shop applies to that shop's customers only; one without a shop applies
    to every store's customers with that email or phone. Events that match nobody yet are
    simply absent from the result; they are matched again on the next run.
    """
    events = events.cast(ENGAGEMENT_SCHEMA)  # type: ignore[arg-type]
    keys = customer_keys.cast(CUSTOMER_KEYS_SCHEMA)  # type: ignore[arg-type]
    email = events.filter(
        (pl.col("type") == "email_unsubscribe") & pl.col("email_norm").is_not_null()
    ).select(
        "event_id",
        "occurred_at",
        pl.col("shop").alias("event_shop"),
        pl.col("email_norm"),
        pl.lit("email").alias("channel"),
        pl.lit("UNSUBSCRIBED").alias("state"),
    )
    sms = (
        events.filter((pl.col("type") == "sms_inbound") & pl.col("phone_e164").is_not_null())
        .with_columns(sms_keyword_action(pl.col("body")).alias("action"))
        .filter(pl.col("action").is_not_null())
        .select(
            "event_id",
            "occurred_at",
            pl.col("shop").alias("event_shop"),
            pl.col("phone_e164"),
            pl.lit("sms").alias("channel"),
            pl.when(pl.col("action") == "opt_out")
            .then(pl.lit("UNSUBSCRIBED"))
            .otherwise(pl.lit("SUBSCRIBED"))
            .alias("state"),
        )
    )
    matched = [
        email.join(keys.filter(pl.col("email_norm").is_not_null()), on="email_norm", how="inner"),
        sms.join(keys.filter(pl.col("phone_e164").is_not_null()), on="phone_e164", how="inner"),
    ]
    out = []
    for frame in matched:
        out.append(
            frame.filter(pl.col("event_shop").is_null() | (pl.col("event_shop") == pl.col("shop"))).select(
                "shop",
                "customer_id",
                "channel",
                "state",
                # A keyword reply is a single opt-in at best; an unsubscribe has no level.
                pl.when(pl.col("state") == "SUBSCRIBED")
                .then(pl.lit("SINGLE_OPT_IN"))
                .otherwise(pl.lit(None, dtype=pl.String))
                .alias("opt_in_level"),
                pl.col("occurred_at").alias("updated_at"),
                pl.lit("engagement").alias("source"),
                pl.col("event_id").alias("source_ref"),
            )
        )
    return pl.concat(out).cast(OBSERVATIONS_SCHEMA)  # type: ignore[arg-type]


def resolve_consent(observations: pl.DataFrame) -> pl.DataFrame:
    """One state per ``(shop, customer_id, channel)`` under the ratchet rules above."""
    obs = observations.cast(OBSERVATIONS_SCHEMA)  # type: ignore[arg-type]
    ranked = obs.with_columns(
        pl.col("state").replace_strict(STATE_RESTRICTIVENESS, default=2, return_dtype=pl.Int8).alias("_rank"),
        # null timestamps sort as the oldest possible observation
        pl.col("updated_at").is_not_null().alias("_dated"),
    )
    winners = ranked.sort(
        ["shop", "customer_id", "channel", "_dated", "updated_at", "_rank", "source", "source_ref"],
        descending=[False, False, False, True, True, False, False, False],
        nulls_last=True,
    ).unique(subset=["shop", "customer_id", "channel"], keep="first", maintain_order=True)
    return winners.select(
        *[c for c in OBSERVATIONS_SCHEMA],
        pl.col("state").is_in(list(CONSENTING_STATES)).alias("consented"),
    ).cast(RESOLVED_SCHEMA)  # type: ignore[arg-type]


def contact_consent(resolved: pl.DataFrame, identities: pl.DataFrame) -> pl.DataFrame:
    """Consent per contact and channel: the same ratchet over the contact's records.

    ``identities`` maps ``shop, customer_id`` to ``contact_id``. A contact is consenting on a
    channel only if the winning observation across all its records is ``SUBSCRIBED``.
    """
    joined = resolved.join(
        identities.select("shop", pl.col("customer_id").cast(pl.Int64), "contact_id"),
        on=["shop", "customer_id"],
        how="inner",
    )
    ranked = joined.with_columns(
        pl.col("state").replace_strict(STATE_RESTRICTIVENESS, default=2, return_dtype=pl.Int8).alias("_rank"),
        pl.col("updated_at").is_not_null().alias("_dated"),
    )
    return (
        ranked.sort(
            ["contact_id", "channel", "_dated", "updated_at", "_rank", "shop", "customer_id"],
            descending=[False, False, True, True, False, False, False],
            nulls_last=True,
        )
        .unique(subset=["contact_id", "channel"], keep="first", maintain_order=True)
        .select("contact_id", "channel", "state", "opt_in_level", "updated_at", "source", "consented")
    )


def consent_changes(
    previous: pl.DataFrame | None, current: pl.DataFrame, *, recorded_at: object
) -> pl.DataFrame:
    """Audit rows for every ``(shop, customer, channel)`` whose resolved state changed.

    ``previous`` is the last run's resolved consent (or None on the first run);
    ``recorded_at`` is the run's ``as_of``.
    """
    current = current.cast(RESOLVED_SCHEMA)  # type: ignore[arg-type]
    if previous is None or previous.is_empty():
        prev = pl.DataFrame(
            schema={
                "shop": pl.String,
                "customer_id": pl.Int64,
                "channel": pl.String,
                "previous_state": pl.String,
                "_prev_at": TS,
            }
        )
    else:
        prev = previous.cast(RESOLVED_SCHEMA).select(  # type: ignore[arg-type]
            "shop",
            "customer_id",
            "channel",
            pl.col("state").alias("previous_state"),
            pl.col("updated_at").alias("_prev_at"),
        )
    merged = current.join(prev, on=["shop", "customer_id", "channel"], how="left")
    changed = merged.filter(
        pl.col("previous_state").is_null()
        | (pl.col("previous_state") != pl.col("state"))
        | (pl.col("_prev_at").is_null() != pl.col("updated_at").is_null())
        | (pl.col("_prev_at") != pl.col("updated_at"))
    )
    return changed.select(
        "shop",
        "customer_id",
        "channel",
        "previous_state",
        "state",
        "updated_at",
        "source",
        "source_ref",
        pl.lit(recorded_at, dtype=TS).alias("recorded_at"),
    ).cast(AUDIT_SCHEMA)  # type: ignore[arg-type]


def pushable_shops(changes: pl.DataFrame) -> list[str]:
    """Stores with audit rows decided outside Shopify (what a consent push may send back)."""
    outside = changes.filter(pl.col("source") != "shopify")
    return sorted(str(s) for s in outside["shop"].unique().to_list() if s is not None)


@dataclass(frozen=True)
class RatchetViolation:
    """A resolved subscribed state that an unsubscribe at least as recent should have beaten."""

    shop: str
    customer_id: int
    channel: str


def ratchet_violations(observations: pl.DataFrame, resolved: pl.DataFrame) -> list[RatchetViolation]:
    """Records whose resolved state is SUBSCRIBED although an unsubscribe is as new or newer.

    The asset check behind "consent ratchet holds": it recomputes the invariant from the
    raw observations, independently of ``resolve_consent``'s sort.
    """
    unsub = (
        observations.filter(pl.col("state") == "UNSUBSCRIBED")
        .group_by("shop", "customer_id", "channel")
        .agg(pl.col("updated_at").max().alias("_unsub_at"), pl.len().alias("_n"))
    )
    bad = (
        resolved.filter(pl.col("state") == "SUBSCRIBED")
        .join(unsub, on=["shop", "customer_id", "channel"])
        .filter(pl.col("updated_at").is_null() | (pl.col("_unsub_at") >= pl.col("updated_at")))
    )
    return [RatchetViolation(r["shop"], r["customer_id"], r["channel"]) for r in bad.iter_rows(named=True)]
