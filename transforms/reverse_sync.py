"""Reverse sync planner: desired Shopify state minus what was last pushed → a push plan.

Pure Polars (DESIGN.md decision 11): frames in, a plan frame out, no I/O, no clock
(``as_of`` is passed in). The pusher (``pipelines/shopify/push.py``) sends the plan.

Kinds (one outbound toggle each, all off by default):

* ``email_consent`` / ``sms_consent``: the resolved consent state (``transforms/consent.py``)
  when it did not come from Shopify itself, in a settable state (SUBSCRIBED, UNSUBSCRIBED,
  PENDING), with its ORIGINAL ``updated_at`` as ``consentUpdatedAt`` and its opt-in level.
  A customer without an email is skipped for email consent, one without a phone of its own
  (missing, or shared with another customer of the shop) for SMS; both are recorded as
  skips, not errors.
* ``engagement``: customer metafields in namespace ``shopsync``, one plan row per key:

  ===========================  ========================  =====================================
  key                          type                      meaning
  ===========================  ========================  =====================================
  ``last_email_open_at``       ``date_time``             last email open
  ``last_email_click_at``      ``date_time``             last email click
  ``last_sms_click_at``        ``date_time``             last SMS link click
  ``rfm_segment``              ``single_line_text_field`` RFM segment name
  ``messages_sent_total``      ``number_integer``        total messages sent to the customer
  ``origin``                   ``json``                  written by every push: write id, time
  ===========================  ========================  =====================================

* ``profile``: fill Shopify fields that are empty (first/last name, phone, default address)
  with values shopsync has; the pusher re-reads the customer and writes only still-empty fields.

Only changed rows are planned: a row whose payload hash equals the last successfully pushed
hash in ``sync.pushed_state`` is dropped, as is one waiting for its retry time or dead-lettered.
Customers given in ``excluded`` (redacted on Shopify's request, say) are never planned; they
appear among the skips with the reason given.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import polars as pl

TS = pl.Datetime("us", "UTC")

NAMESPACE = "shopsync"
ORIGIN_KEY = "origin"
KINDS: tuple[str, ...] = ("email_consent", "sms_consent", "engagement", "profile")
SETTABLE_STATES: frozenset[str] = frozenset({"SUBSCRIBED", "UNSUBSCRIBED", "PENDING"})

# key -> (metafield type, column of the engagement frame)
ENGAGEMENT_METAFIELDS: dict[str, tuple[str, str]] = {
    "last_email_open_at": ("date_time", "last_email_open_at"),
    "last_email_click_at": ("date_time", "last_email_click_at"),
    "last_sms_click_at": ("date_time", "last_sms_click_at"),
    "rfm_segment": ("single_line_text_field", "rfm_segment"),
    "messages_sent_total": ("number_integer", "messages_sent"),
}
PROFILE_FIELDS: tuple[str, ...] = ("first_name", "last_name", "phone", "address")
ADDRESS_COLUMNS: tuple[str, ...] = ("address1", "city", "zip", "country_code")

CONSENT_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "channel": pl.String,
    "state": pl.String,
    "opt_in_level": pl.String,
    "updated_at": TS,
    "source": pl.String,
}
CUSTOMERS_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "email": pl.String,
    "phone": pl.String,
    "first_name": pl.String,
    "last_name": pl.String,
    "has_address": pl.Boolean,
}
ENGAGEMENT_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "last_email_open_at": TS,
    "last_email_click_at": TS,
    "last_sms_click_at": TS,
    "rfm_segment": pl.String,
    "messages_sent": pl.Int64,
}
PROFILE_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "first_name": pl.String,
    "last_name": pl.String,
    "phone": pl.String,
    "address1": pl.String,
    "city": pl.String,
    "zip": pl.String,
    "country_code": pl.String,
}
PUSHED_STATE_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "kind": pl.String,
    "key": pl.String,
    "payload_hash": pl.String,  # last successfully pushed; null if never
    "digest": pl.String,  # compareDigest of the metafield as last written
    "write_id": pl.String,
    "shopify_updated_at": TS,
    "attempts": pl.Int64,  # failed attempts since the last success
    "next_attempt_at": TS,
    "last_error": pl.String,
}
DEAD_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "kind": pl.String,
    "key": pl.String,
    "payload_hash": pl.String,
}
PLAN_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "customer_gid": pl.String,
    "kind": pl.String,
    "key": pl.String,
    "payload": pl.String,  # JSON
    "payload_hash": pl.String,
    "digest": pl.String,  # expected compareDigest (metafields), from pushed_state
    "reason": pl.String,
}
SKIP_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "kind": pl.String,
    "key": pl.String,
    "reason": pl.String,
    "payload": pl.String,  # what would have been sent (null when nothing was built)
    "payload_hash": pl.String,
}
EXCLUDED_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "reason": pl.String,
}
INBOUND_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "updated_at": TS,
    "origin_write_id": pl.String,
}
# normalised matching keys (transforms.consent's shapes: identity normalisation applied)
EVENT_KEYS_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "occurred_at": TS,
    "type": pl.String,
    "email_norm": pl.String,
    "phone_e164": pl.String,
}
CUSTOMER_KEYS_SCHEMA: dict[str, pl.DataType] = {
    "shop": pl.String,
    "customer_id": pl.Int64,
    "email_norm": pl.String,
    "phone_e164": pl.String,
}


def payload_hash(payload: str) -> str:
    """A short stable hash of a canonical JSON payload."""
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def customer_gid(customer_id: int) -> str:
    """``123`` -> ``gid://shopify/Customer/123``."""
    return f"gid://shopify/Customer/{customer_id}"


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S") + "Z"


def _canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def _conform(frame: pl.DataFrame | None, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    if frame is None:
        return _empty(schema)
    missing = [c for c in schema if c not in frame.columns]
    frame = frame.with_columns(*[pl.lit(None, dtype=schema[c]).alias(c) for c in missing])
    return frame.select([pl.col(c).cast(schema[c]) for c in schema])


def _payload_rows(
    frame: pl.DataFrame, kind: str, key: str | pl.Expr, payload: pl.Expr, reason: str
) -> pl.DataFrame:
    return frame.select(
        "shop",
        "customer_id",
        pl.lit(kind).alias("kind"),
        (pl.lit(key) if isinstance(key, str) else key).alias("key"),
        payload.alias("payload"),
        pl.lit(reason).alias("reason"),
    )


def _json_struct(expr: pl.Expr) -> pl.Expr:
    return expr.struct.json_encode()


def desired_consent(consent: pl.DataFrame, customers: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Consent push rows and skips. Consent decided on Shopify is already there: not pushed.

    A skip carries the payload it would have sent, so it is logged once per change.
    """
    consent = _conform(consent, CONSENT_SCHEMA).filter(pl.col("source") != "shopify")
    customers = _conform(customers, CUSTOMERS_SCHEMA)
    # a phone shared by two customers of a shop cannot identify whose SMS consent it is
    phones = customers.with_columns(
        (pl.col("phone").is_not_null() & (pl.len().over("shop", "phone") == 1)).alias("phone_unique")
    ).select(
        "shop",
        "customer_id",
        (pl.col("email").is_not_null() & (pl.col("email") != "")).alias("has_email"),
        "phone_unique",
    )
    joined = consent.join(phones, on=["shop", "customer_id"], how="left").with_columns(
        pl.col("has_email").fill_null(False), pl.col("phone_unique").fill_null(False)
    )
    skip_reason = (
        pl.when(~pl.col("state").is_in(list(SETTABLE_STATES)))
        .then(pl.format("state {} is not settable on Shopify", pl.col("state")))
        .when((pl.col("channel") == "email") & ~pl.col("has_email"))
        .then(pl.lit("no email address"))
        .when((pl.col("channel") == "sms") & ~pl.col("phone_unique"))
        .then(pl.lit("no phone number of its own"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    payload = _json_struct(
        pl.struct(
            pl.col("opt_in_level").fill_null("SINGLE_OPT_IN").alias("opt_in_level"),
            pl.col("state"),
            pl.col("updated_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("updated_at"),
        )
    )
    joined = joined.with_columns(skip_reason.alias("_skip"), payload.alias("payload"))
    skips = joined.filter(pl.col("_skip").is_not_null()).select(
        "shop",
        "customer_id",
        (pl.col("channel") + "_consent").alias("kind"),
        pl.lit("").alias("key"),
        pl.col("_skip").alias("reason"),
        "payload",
        pl.col("payload").map_elements(payload_hash, return_dtype=pl.String).alias("payload_hash"),
    )
    rows = joined.filter(pl.col("_skip").is_null()).select(
        "shop",
        "customer_id",
        (pl.col("channel") + "_consent").alias("kind"),
        pl.lit("").alias("key"),
        "payload",
        pl.format("{} from {}", pl.col("state"), pl.col("source")).alias("reason"),
    )
    return rows, skips.cast(SKIP_SCHEMA)  # type: ignore[arg-type]


def desired_engagement(engagement: pl.DataFrame) -> pl.DataFrame:
    """One row per (customer, metafield key) with a non-null value."""
    engagement = _conform(engagement, ENGAGEMENT_SCHEMA)
    parts: list[pl.DataFrame] = []
    for key, (mf_type, column) in ENGAGEMENT_METAFIELDS.items():
        col = pl.col(column)
        value = (
            col.dt.strftime("%Y-%m-%dT%H:%M:%SZ") if ENGAGEMENT_SCHEMA[column] == TS else col.cast(pl.String)
        )
        frame = engagement.filter(col.is_not_null())
        payload = _json_struct(pl.struct(pl.lit(mf_type).alias("type"), value.alias("value")))
        parts.append(_payload_rows(frame, "engagement", key, payload, f"{key} changed"))
    return pl.concat(parts) if parts else _empty(PLAN_SCHEMA)


def desired_profile(profile: pl.DataFrame, customers: pl.DataFrame) -> pl.DataFrame:
    """Profile fill rows: fields empty on Shopify (as last synced) that shopsync can fill.

    One row per customer, ``payload`` = the fields to fill (``address`` as an object).
    """
    profile = _conform(profile, PROFILE_SCHEMA)
    customers = _conform(customers, CUSTOMERS_SCHEMA)
    joined = profile.join(customers, on=["shop", "customer_id"], how="inner", suffix="_shopify")

    def blank(c: str) -> pl.Expr:
        return pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "")

    fills: list[pl.Expr] = []
    for f in ("first_name", "last_name", "phone"):
        fills.append(pl.when(blank(f"{f}_shopify") & ~blank(f)).then(pl.col(f)).alias(f))
    address_ok = ~pl.col("has_address").fill_null(False) & ~blank("address1") & ~blank("country_code")
    fills.append(pl.when(address_ok).then(pl.struct(*[pl.col(c) for c in ADDRESS_COLUMNS])).alias("address"))
    filled = joined.select("shop", "customer_id", *fills).filter(
        pl.any_horizontal(*[pl.col(f).is_not_null() for f in PROFILE_FIELDS])
    )
    # drop null fields from the JSON so the payload names exactly what to fill
    records = filled.select(pl.struct(*PROFILE_FIELDS).alias("s")).to_series().to_list()
    payloads = [_canonical({k: v for k, v in r.items() if v is not None}) for r in records]
    return filled.select(
        "shop",
        "customer_id",
        pl.lit("profile").alias("kind"),
        pl.lit("").alias("key"),
        pl.Series("payload", payloads, dtype=pl.String),
        pl.lit("empty Shopify fields").alias("reason"),
    )


def plan_push(
    *,
    toggles: dict[str, set[str]],
    as_of: datetime,
    pushed_state: pl.DataFrame | None = None,
    dead_letters: pl.DataFrame | None = None,
    consent: pl.DataFrame | None = None,
    customers: pl.DataFrame | None = None,
    engagement: pl.DataFrame | None = None,
    profile: pl.DataFrame | None = None,
    excluded: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The push plan and the skips.

    ``toggles`` maps shop → enabled kinds (missing shop = everything off). Returns
    ``(plan, skips)`` with ``PLAN_SCHEMA`` and ``SKIP_SCHEMA``: only rows whose payload differs
    from the last pushed one, not waiting for a retry (``next_attempt_at > as_of``) and not
    dead-lettered with the same payload. ``excluded`` (``EXCLUDED_SCHEMA``) customers are
    skipped with their reason whatever they would have been sent.
    """
    customers = _conform(customers, CUSTOMERS_SCHEMA)
    parts: list[pl.DataFrame] = []
    consent_rows, skips = desired_consent(_conform(consent, CONSENT_SCHEMA), customers)
    parts.append(consent_rows)
    parts.append(desired_engagement(_conform(engagement, ENGAGEMENT_SCHEMA)))
    parts.append(desired_profile(_conform(profile, PROFILE_SCHEMA), customers))
    desired = pl.concat([p.select("shop", "customer_id", "kind", "key", "payload", "reason") for p in parts])
    enabled = pl.DataFrame(
        [(shop, kind) for shop, kinds in toggles.items() for kind in kinds],
        schema={"shop": pl.String, "kind": pl.String},
        orient="row",
    )
    desired = desired.join(enabled, on=["shop", "kind"], how="semi")
    skips = skips.join(enabled, on=["shop", "kind"], how="semi")
    excluded_keys = _conform(excluded, EXCLUDED_SCHEMA).unique(["shop", "customer_id"])
    if excluded_keys.height:
        gone = desired.join(excluded_keys, on=["shop", "customer_id"], how="inner", suffix="_excluded")
        desired = desired.join(excluded_keys, on=["shop", "customer_id"], how="anti")
        skips = pl.concat(
            [
                skips.join(excluded_keys, on=["shop", "customer_id"], how="anti"),
                gone.select(
                    "shop",
                    "customer_id",
                    "kind",
                    "key",
                    pl.col("reason_excluded").alias("reason"),
                    pl.lit(None, dtype=pl.String).alias("payload"),
                    pl.lit(None, dtype=pl.String).alias("payload_hash"),
                ).cast(SKIP_SCHEMA),  # type: ignore[arg-type]
            ]
        ).unique(["shop", "customer_id", "kind", "key"], keep="last", maintain_order=True)
    desired = desired.with_columns(
        pl.col("payload").map_elements(payload_hash, return_dtype=pl.String).alias("payload_hash")
    )
    state = _conform(pushed_state, PUSHED_STATE_SCHEMA)
    dead = _conform(dead_letters, DEAD_SCHEMA)
    keys = ["shop", "customer_id", "kind", "key"]
    joined = desired.join(
        state.select(
            *keys,
            pl.col("payload_hash").alias("_pushed_hash"),
            "digest",
            "next_attempt_at",
            "attempts",
        ),
        on=keys,
        how="left",
    )
    as_of_lit = pl.lit(as_of).cast(TS)
    changed = joined.filter(
        pl.col("_pushed_hash").is_null() | (pl.col("_pushed_hash") != pl.col("payload_hash")),
        pl.col("next_attempt_at").is_null() | (pl.col("next_attempt_at") <= as_of_lit),
    ).join(dead.select(*keys, "payload_hash"), on=[*keys, "payload_hash"], how="anti")
    plan = changed.with_columns(
        pl.col("customer_id").map_elements(customer_gid, return_dtype=pl.String).alias("customer_gid"),
        pl.when(pl.col("attempts").fill_null(0) > 0)
        .then(pl.format("retry {}: {}", pl.col("attempts") + 1, pl.col("reason")))
        .otherwise(pl.col("reason"))
        .alias("reason"),
    )
    plan = plan.select(list(PLAN_SCHEMA)).cast(PLAN_SCHEMA).sort(["shop", "kind", "customer_id", "key"])  # type: ignore[arg-type]
    return plan, skips.cast(SKIP_SCHEMA).sort(["shop", "kind", "customer_id", "key"])  # type: ignore[arg-type]


def plan_counts(plan: pl.DataFrame) -> dict[str, int]:
    """Plan rows per kind (metafield rows count one per key)."""
    counts = plan.group_by("kind").len()
    return {str(k): int(n) for k, n in counts.iter_rows()}


def split_echoes(inbound: pl.DataFrame, pushed_state: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Separate inbound customer versions that only echo our own writes.

    A version is an echo when its ``shopsync.origin`` write id is the write id we last pushed
    to that customer AND its ``updated_at`` is no later than the one Shopify answered our write
    with (a later change by anybody else moves ``updated_at`` past it). Returns
    ``(fresh, echoes)``, both in ``INBOUND_SCHEMA``.
    """
    inbound = _conform(inbound, INBOUND_SCHEMA)
    state = _conform(pushed_state, PUSHED_STATE_SCHEMA)
    ours = (
        state.filter(pl.col("write_id").is_not_null())
        .sort("shopify_updated_at", nulls_last=False)
        .group_by("shop", "customer_id")
        .agg(pl.col("write_id").last(), pl.col("shopify_updated_at").max())
    )
    joined = inbound.join(ours, on=["shop", "customer_id"], how="left")
    is_echo = (
        pl.col("origin_write_id").is_not_null()
        & (pl.col("origin_write_id") == pl.col("write_id"))
        & (pl.col("updated_at") <= pl.col("shopify_updated_at"))
    ).fill_null(False)
    echoes = joined.filter(is_echo).select(list(INBOUND_SCHEMA))
    fresh = joined.filter(~is_echo).select(list(INBOUND_SCHEMA))
    return fresh, echoes


def engagement_from_events(
    events: pl.DataFrame, customers: pl.DataFrame, metrics: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Engagement per customer (``ENGAGEMENT_SCHEMA``) from engagement events matched by email or phone.

    ``events``: ``EVENT_KEYS_SCHEMA`` and ``customers``: ``CUSTOMER_KEYS_SCHEMA``, both with the
    identity normalisation applied (emails folded, phones in E.164), so ``+1 (555) 010-0000``
    and ``15550100000`` meet. An event naming a shop counts for that shop's customers; one
    without a shop counts for every store's customers with that email or phone. An event with
    an email is matched by its email, otherwise by its phone. ``metrics`` (optional):
    ``shop, customer_id, segment`` (the RFM segment).
    """
    keys = _conform(customers, CUSTOMER_KEYS_SCHEMA)
    ev = _conform(events, EVENT_KEYS_SCHEMA).rename({"shop": "event_shop"})

    def matched(column: str, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.join(keys.filter(pl.col(column).is_not_null()), on=column).filter(
            pl.col("event_shop").is_null() | (pl.col("event_shop") == pl.col("shop"))
        )

    by_email = matched("email_norm", ev.filter(pl.col("email_norm").is_not_null()))
    by_phone = matched(
        "phone_e164", ev.filter(pl.col("email_norm").is_null() & pl.col("phone_e164").is_not_null())
    )
    both = pl.concat(
        [
            by_email.select("shop", "customer_id", "occurred_at", "type"),
            by_phone.select("shop", "customer_id", "occurred_at", "type"),
        ]
    )

    def last(kind: str) -> pl.Expr:
        return pl.col("occurred_at").filter(pl.col("type") == kind).max()

    agg = both.group_by("shop", "customer_id").agg(
        last("email_open").alias("last_email_open_at"),
        last("email_click").alias("last_email_click_at"),
        last("sms_click").alias("last_sms_click_at"),
        pl.col("type").is_in(["email_sent", "sms_sent"]).sum().cast(pl.Int64).alias("messages_sent"),
    )
    if metrics is not None and "segment" in metrics.columns:
        seg = metrics.select(
            pl.col("shop").cast(pl.String),
            pl.col("customer_id").cast(pl.Int64),
            pl.col("segment").cast(pl.String).alias("rfm_segment"),
        )
        agg = agg.join(seg, on=["shop", "customer_id"], how="full", coalesce=True)
    return _conform(agg, ENGAGEMENT_SCHEMA)
