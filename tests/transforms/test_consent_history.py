"""Consent across runs: recorded unsubscribes hold, contact-level changes are audited."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from transforms import consent
from transforms import consent_history as history

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 2, 1, tzinfo=UTC)
T2 = datetime(2026, 3, 1, tzinfo=UTC)
NOW = datetime(2026, 4, 1, tzinfo=UTC)
SHOP = "a.myshopify.com"


def observations(*rows: tuple[int, str, datetime | None, str]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "shop": SHOP,
                "customer_id": customer,
                "channel": "email",
                "state": state,
                "opt_in_level": None,
                "updated_at": at,
                "source": source,
                "source_ref": None,
            }
            for customer, state, at, source in rows
        ],
        schema=consent.OBSERVATIONS_SCHEMA,
    )


def members(mapping: dict[int, str]) -> pl.DataFrame:
    return pl.DataFrame(
        {"shop": [SHOP] * len(mapping), "customer_id": list(mapping), "contact_id": list(mapping.values())},
        schema={"shop": pl.String, "customer_id": pl.Int64, "contact_id": pl.String},
    )


def run(
    obs: pl.DataFrame, mapping: dict[int, str], previous: tuple[pl.DataFrame, pl.DataFrame] | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """One consent run as the asset does it: (resolved, contact states, by record, contact audit)."""
    prev_resolved, prev_records = previous if previous else (None, None)
    resolved = consent.resolve_consent(pl.concat([obs, history.carried_observations(prev_resolved)]))
    contacts = members(mapping)
    per_contact = history.ratcheted_contact_consent(
        consent.contact_consent(resolved, contacts), prev_records, contacts
    )
    by_record = history.contact_states_by_record(per_contact, contacts)
    audit = history.contact_consent_changes(prev_records, per_contact, contacts, recorded_at=NOW)
    return resolved, per_contact, by_record, audit


def states(frame: pl.DataFrame, key: str) -> dict[object, str]:
    return dict(zip(frame[key], frame["state"], strict=True))


def test_a_recorded_unsubscribe_is_not_undone_by_an_older_subscribe() -> None:
    first = run(observations((1, "UNSUBSCRIBED", T1, "engagement")), {1: "ct_a"})
    assert states(first[0], "customer_id") == {1: "UNSUBSCRIBED"}
    # the engagement event is gone from this run's input and Shopify shows a stale subscribe
    stale = run(observations((1, "SUBSCRIBED", T0, "shopify")), {1: "ct_a"}, (first[0], first[2]))
    assert states(stale[0], "customer_id") == {1: "UNSUBSCRIBED"}
    assert stale[0]["source"].to_list() == ["engagement"]
    assert history.regressions(first[0], stale[0]).height == 0
    # a genuinely newer subscribe (the shopper opted in again) wins
    fresh = run(observations((1, "SUBSCRIBED", T2, "shopify")), {1: "ct_a"}, (first[0], first[2]))
    assert states(fresh[0], "customer_id") == {1: "SUBSCRIBED"}
    assert history.regressions(first[0], fresh[0]).height == 0


def test_regressions_find_an_older_resubscription() -> None:
    before = consent.resolve_consent(
        observations((1, "UNSUBSCRIBED", T1, "engagement"), (2, "UNSUBSCRIBED", T1, "crm"))
    )
    after = consent.resolve_consent(
        observations((1, "SUBSCRIBED", T0, "shopify"), (2, "SUBSCRIBED", T2, "shopify"))
    )
    found = history.regressions(before, after)
    assert found.select("customer_id", "previous_state", "state").rows() == [
        (1, "UNSUBSCRIBED", "SUBSCRIBED")
    ]


def test_a_split_keeps_the_contacts_unsubscribe_and_is_audited() -> None:
    # one person with two records: record 1 unsubscribed at T1, record 2 subscribed earlier
    obs = observations((1, "UNSUBSCRIBED", T1, "engagement"), (2, "SUBSCRIBED", T0, "shopify"))
    first = run(obs, {1: "ct_a", 2: "ct_a"})
    assert states(first[1], "contact_id") == {"ct_a": "UNSUBSCRIBED"}
    assert first[3].select("contact_id", "reason").rows() == [("ct_a", "new contact")]
    # identity splits record 2 off into its own contact: it must not come back subscribed
    # on the strength of its older subscribe
    second = run(obs, {1: "ct_a", 2: "ct_b"}, (first[0], first[2]))
    assert states(second[1], "contact_id") == {"ct_a": "UNSUBSCRIBED", "ct_b": "UNSUBSCRIBED"}
    assert history.regressions(first[2], second[2]).height == 0
    audit = {r["contact_id"]: r for r in second[3].iter_rows(named=True)}
    assert set(audit) == {"ct_b"}  # ct_a kept its state; ct_b is a split-off with a new id
    assert audit["ct_b"]["reason"] == "split" and audit["ct_b"]["previous_contact_ids"] == ["ct_a"]
    # without the recorded state the split-off would be subscribed: the check would see it
    naive = consent.contact_consent(second[0], members({1: "ct_a", 2: "ct_b"}))
    naive_records = history.contact_states_by_record(naive, members({1: "ct_a", 2: "ct_b"}))
    assert history.regressions(first[2], naive_records)["customer_id"].to_list() == [2]


def test_a_merge_is_audited_with_the_contacts_it_absorbed() -> None:
    obs = observations((1, "UNSUBSCRIBED", T2, "engagement"), (2, "SUBSCRIBED", T0, "shopify"))
    first = run(obs, {1: "ct_a", 2: "ct_b"})
    assert states(first[1], "contact_id") == {"ct_a": "UNSUBSCRIBED", "ct_b": "SUBSCRIBED"}
    second = run(obs, {1: "ct_a", 2: "ct_a"}, (first[0], first[2]))
    assert states(second[1], "contact_id") == {"ct_a": "UNSUBSCRIBED"}
    row = second[3].row(0, named=True)
    assert second[3].height == 1
    assert (row["contact_id"], row["reason"], row["previous_state"], row["state"]) == (
        "ct_a",
        "merged",
        "UNSUBSCRIBED",
        "UNSUBSCRIBED",
    )
    assert row["previous_contact_ids"] == ["ct_a", "ct_b"]
    assert row["recorded_at"] == NOW
    # nothing changes on a third run: nothing to audit
    third = run(obs, {1: "ct_a", 2: "ct_a"}, (second[0], second[2]))
    assert third[3].height == 0


def test_a_plain_change_is_audited_as_such() -> None:
    first = run(observations((1, "SUBSCRIBED", T0, "shopify")), {1: "ct_a"})
    second = run(observations((1, "UNSUBSCRIBED", T1, "shopify")), {1: "ct_a"}, (first[0], first[2]))
    assert second[3].select("reason", "previous_state", "state").rows() == [
        ("state changed", "SUBSCRIBED", "UNSUBSCRIBED")
    ]
