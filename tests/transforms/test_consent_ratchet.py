"""Consent resolution: latest wins, ties restrictive, never re-subscribed by older state."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from transforms import consent

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 2, 1, tzinfo=UTC)
T2 = datetime(2026, 3, 1, tzinfo=UTC)
SHOP = "acme-outdoors.myshopify.com"


def obs(rows: list[tuple[int, str, str, datetime | None, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "shop": SHOP,
                "customer_id": cid,
                "channel": ch,
                "state": st,
                "opt_in_level": None,
                "updated_at": at,
                "source": src,
                "source_ref": None,
            }
            for cid, ch, st, at, src in rows
        ],
        schema=consent.OBSERVATIONS_SCHEMA,
    )


def state_of(resolved: pl.DataFrame, cid: int, channel: str = "email") -> str:
    row = resolved.filter((pl.col("customer_id") == cid) & (pl.col("channel") == channel))
    assert row.height == 1
    return str(row["state"][0])


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # latest wins, either direction
        (
            [(1, "email", "SUBSCRIBED", T0, "shopify"), (1, "email", "UNSUBSCRIBED", T1, "engagement")],
            "UNSUBSCRIBED",
        ),
        (
            [(1, "email", "UNSUBSCRIBED", T0, "engagement"), (1, "email", "SUBSCRIBED", T1, "shopify")],
            "SUBSCRIBED",
        ),
        # an unsubscribe here, then an OLDER subscribed state from Shopify: stays unsubscribed
        (
            [(1, "email", "UNSUBSCRIBED", T2, "engagement"), (1, "email", "SUBSCRIBED", T1, "shopify")],
            "UNSUBSCRIBED",
        ),
        # ties go to the more restrictive state
        (
            [(1, "email", "SUBSCRIBED", T1, "shopify"), (1, "email", "UNSUBSCRIBED", T1, "engagement")],
            "UNSUBSCRIBED",
        ),
        ([(1, "email", "PENDING", T1, "shopify"), (1, "email", "SUBSCRIBED", T1, "crm")], "PENDING"),
        # an undated subscribed state never beats a dated unsubscribe
        (
            [(1, "email", "UNSUBSCRIBED", T0, "engagement"), (1, "email", "SUBSCRIBED", None, "shopify")],
            "UNSUBSCRIBED",
        ),
        # both undated: the restrictive one
        (
            [(1, "email", "SUBSCRIBED", None, "shopify"), (1, "email", "NOT_SUBSCRIBED", None, "shopify")],
            "NOT_SUBSCRIBED",
        ),
    ],
)
def test_ratchet_rules(rows: list[tuple[int, str, str, datetime | None, str]], expected: str) -> None:
    observations = obs(rows)
    resolved = consent.resolve_consent(observations)
    assert state_of(resolved, 1) == expected
    assert consent.ratchet_violations(observations, resolved) == []


def test_not_subscribed_is_never_consent() -> None:
    resolved = consent.resolve_consent(
        obs(
            [
                (1, "email", "NOT_SUBSCRIBED", T2, "shopify"),
                (2, "sms", "INVALID", T2, "shopify"),
                (3, "email", "SUBSCRIBED", T1, "shopify"),
            ]
        )
    )
    consented = dict(zip(resolved["customer_id"], resolved["consented"], strict=True))
    assert consented == {1: False, 2: False, 3: True}


def test_violation_check_catches_a_broken_resolution() -> None:
    observations = obs(
        [(1, "email", "SUBSCRIBED", T1, "shopify"), (1, "email", "UNSUBSCRIBED", T2, "engagement")]
    )
    wrong = consent.resolve_consent(observations).with_columns(
        pl.lit("SUBSCRIBED").alias("state"), pl.lit(T1).alias("updated_at")
    )
    assert consent.ratchet_violations(observations, wrong) == [consent.RatchetViolation(SHOP, 1, "email")]


@pytest.mark.parametrize(
    ("body", "action"),
    [
        ("STOP", "opt_out"),
        (" stop ", "opt_out"),
        ("StopAll", "opt_out"),
        ("unsubscribe", "opt_out"),
        ("CANCEL", "opt_out"),
        ("end", "opt_out"),
        ("Quit", "opt_out"),
        ("REVOKE", "opt_out"),
        ("opt  out", "opt_out"),
        ("START", "opt_in"),
        ("unstop", "opt_in"),
        ("HELP", None),
        ("stop sending me these please", None),
        ("", None),
        (None, None),
    ],
)
def test_sms_keywords(body: str | None, action: str | None) -> None:
    out = pl.DataFrame({"body": [body]}, schema={"body": pl.String}).select(
        consent.sms_keyword_action(pl.col("body"))
    )
    assert out.item() == action


def events(rows: list[dict[str, object]]) -> pl.DataFrame:
    base = {
        "event_id": None,
        "occurred_at": None,
        "type": None,
        "shop": None,
        "email_norm": None,
        "phone_e164": None,
        "body": None,
    }
    return pl.DataFrame([{**base, **r} for r in rows], schema=consent.ENGAGEMENT_SCHEMA)


def keys(rows: list[tuple[str, int, str | None, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=consent.CUSTOMER_KEYS_SCHEMA, orient="row")


def test_engagement_events_match_customers_by_email_and_phone() -> None:
    ev = events(
        [
            {
                "event_id": "e1",
                "occurred_at": T1,
                "type": "email_unsubscribe",
                "email_norm": "ann@example.com",
            },
            {
                "event_id": "e2",
                "occurred_at": T1,
                "type": "sms_inbound",
                "phone_e164": "+14155550101",
                "body": " Stop ",
            },
            {
                "event_id": "e3",
                "occurred_at": T2,
                "type": "sms_inbound",
                "phone_e164": "+14155550101",
                "body": "HELP",
            },
            {"event_id": "e4", "occurred_at": T2, "type": "email_open", "email_norm": "ann@example.com"},
            # scoped to another store: must not touch acme's customer
            {
                "event_id": "e5",
                "occurred_at": T2,
                "type": "email_unsubscribe",
                "email_norm": "bob@example.com",
                "shop": "north-coffee.myshopify.com",
            },
        ]
    )
    k = keys([(SHOP, 1, "ann@example.com", "+14155550101"), (SHOP, 2, "bob@example.com", None)])
    out = consent.engagement_observations(ev, k).sort("channel")
    assert out.select("customer_id", "channel", "state", "source_ref").rows() == [
        (1, "email", "UNSUBSCRIBED", "e1"),
        (1, "sms", "UNSUBSCRIBED", "e2"),
    ]


def test_stop_from_unknown_phone_applies_once_the_phone_appears() -> None:
    ev = events(
        [
            {
                "event_id": "e9",
                "occurred_at": T1,
                "type": "sms_inbound",
                "phone_e164": "+447700900123",
                "body": "STOP",
            }
        ]
    )
    before = consent.engagement_observations(ev, keys([(SHOP, 1, "ann@example.com", None)]))
    assert before.is_empty()
    after_keys = keys([(SHOP, 1, "ann@example.com", None), (SHOP, 7, None, "+447700900123")])
    shopify = obs([(7, "sms", "SUBSCRIBED", T0, "shopify")])
    resolved = consent.resolve_consent(pl.concat([shopify, consent.engagement_observations(ev, after_keys)]))
    assert state_of(resolved, 7, "sms") == "UNSUBSCRIBED"


def test_contact_consent_spans_records_and_audit_records_changes() -> None:
    resolved = consent.resolve_consent(
        obs(
            [
                (1, "email", "SUBSCRIBED", T2, "shopify"),
                (2, "email", "UNSUBSCRIBED", T2, "engagement"),
                (3, "email", "SUBSCRIBED", T1, "shopify"),
            ]
        )
    )
    identities = pl.DataFrame(
        {"shop": [SHOP] * 3, "customer_id": [1, 2, 3], "contact_id": ["ct_a", "ct_a", "ct_b"]}
    )
    per_contact = consent.contact_consent(resolved, identities).sort("contact_id")
    assert per_contact.select("contact_id", "state").rows() == [
        ("ct_a", "UNSUBSCRIBED"),
        ("ct_b", "SUBSCRIBED"),
    ]

    first = consent.consent_changes(None, resolved, recorded_at=T2)
    assert first.height == 3 and first["previous_state"].null_count() == 3
    assert consent.consent_changes(resolved, resolved, recorded_at=T2).is_empty()
    moved = resolved.with_columns(
        pl.when(pl.col("customer_id") == 3)
        .then(pl.lit("UNSUBSCRIBED"))
        .otherwise(pl.col("state"))
        .alias("state"),
        pl.when(pl.col("customer_id") == 3)
        .then(pl.lit(T2))
        .otherwise(pl.col("updated_at"))
        .alias("updated_at"),
    )
    change = consent.consent_changes(resolved, moved, recorded_at=T2)
    assert change.select("customer_id", "previous_state", "state").rows() == [
        (3, "SUBSCRIBED", "UNSUBSCRIBED")
    ]


def test_shopify_observations_skip_channels_without_state() -> None:
    customers = pl.DataFrame(
        {
            "shop": [SHOP, SHOP],
            "customer_id": [1, 2],
            "email_consent_state": ["SUBSCRIBED", None],
            "email_consent_opt_in_level": ["SINGLE_OPT_IN", None],
            "email_consent_updated_at": [T1, None],
            "sms_consent_state": [None, "NOT_SUBSCRIBED"],
            "sms_consent_opt_in_level": [None, "UNKNOWN"],
            "sms_consent_updated_at": [None, None],
        }
    )
    out = consent.shopify_observations(customers).sort("customer_id")
    assert out.select("customer_id", "channel", "state").rows() == [
        (1, "email", "SUBSCRIBED"),
        (2, "sms", "NOT_SUBSCRIBED"),
    ]
