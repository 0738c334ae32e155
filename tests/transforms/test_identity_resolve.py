"""Linking, clustering, review and stable contact ids of ``transforms.identity.resolve``."""

from __future__ import annotations

import polars as pl
import pytest

from transforms.identity import IdentityResult, LinkageSettings, resolve
from transforms.identity.stable_ids import new_contact_id

COLUMNS = ["record_id", "shop", "first_name", "last_name", "email", "phone", "address1", "zip", "country"]


def _records(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=dict.fromkeys(COLUMNS, pl.String), orient="row")


def _contact(result: IdentityResult) -> dict[str, str]:
    ids = result.contact_identities
    return dict(zip(ids["record_id"], ids["contact_id"], strict=True))


def _counts(result: IdentityResult) -> dict[str, int]:
    return dict(zip(result.outcomes["outcome"], result.outcomes["count"], strict=True))


def test_email_and_phone_link_deterministically_across_stores() -> None:
    records = _records(
        [
            ("1", "a", "Bob", "Smith", "bob.smith@gmail.com", None, None, None, "US"),
            ("2", "b", "Robert", "Smith", "BobSmith+shop@googlemail.com", None, "9 Elm St", "10001", "US"),
            ("3", "a", "Ann", "Lee", None, "+14155552671", None, None, "US"),
            ("4", "b", "Annie", "Lee", None, "(415) 555-2671", "3 Oak Ave", "94105", "US"),
            ("5", "a", "Zed", "Zulu", "zed@example.com", None, None, None, "US"),
        ]
    )
    result = resolve(records)
    ids = result.contact_identities
    contact = _contact(result)
    assert contact["1"] == contact["2"]
    assert contact["3"] == contact["4"]
    assert len({contact["1"], contact["3"], contact["5"]}) == 3
    rules = dict(zip(ids["record_id"], ids["rule"], strict=True))
    assert rules == {"1": "email", "2": "email", "3": "phone", "4": "phone", "5": "unique"}
    assert ids.filter(pl.col("rule") != "unique")["score"].to_list() == [1.0] * 4
    counts = _counts(result)
    assert (counts["email_match"], counts["phone_match"], counts["unmatched"], counts["contacts"]) == (
        2,
        2,
        1,
        3,
    )


def test_household_sharing_phone_and_address_is_not_merged() -> None:
    records = _records(
        [
            ("1", "a", "Jane", "Doe", "jane.doe@gmail.com", "+14155550000", "5 Elm Road", "94110", "US"),
            ("2", "a", "John", "Doe", "john.doe@yahoo.com", "(415) 555-0000", "5 Elm Rd", "94110", "US"),
            ("3", "b", "Jon", "Doe", None, "4155550000", "5 elm rd.", "94110", "US"),
        ]
    )
    contact = _contact(resolve(records))
    assert contact["1"] != contact["2"]
    assert contact["2"] == contact["3"]  # Jon is John's nickname: same person


def test_hub_phone_links_nobody() -> None:
    # A store's own phone typed on guest orders by many different shoppers.
    names = ["Amy", "Ben", "Cara", "Dan", "Eve", "Finn"]
    rows = [
        (str(i), "a", n, f"Last{i}", None, "+12125550100", f"{i} High St", "10001", "US")
        for i, n in enumerate(names)
    ]
    rows.append(("10", "a", "Amy", "Last0", "amy@example.com", None, None, None, "US"))
    result = resolve(_records(rows), settings=LinkageSettings(hub_max_names=3))
    contact = _contact(result)
    assert len({contact[str(i)] for i in range(6)}) == 6
    assert result.hubs["key"].to_list() == ["+12125550100"]
    assert _counts(result)["hub_keys"] == 1
    # Amy's own email record shares nothing but her name with the hub records: no link
    assert contact["10"] != contact["0"]


def test_office_inbox_with_one_name_is_capped_by_record_count() -> None:
    # An office inbox: guest orders from several people, all typed with the team's one name.
    # Under the name cap it would chain them all; the record cap stops it.
    rows = [
        (
            str(i),
            "a",
            "Accounts",
            f"Team{i % 5}",
            "orders@northwind.example",
            None,
            f"{i} Dock Rd",
            "10001",
            "US",
        )
        for i in range(8)
    ]
    capped = resolve(_records(rows), settings=LinkageSettings(hub_max_records=5))
    assert capped.contact_identities["contact_id"].n_unique() > 1
    assert capped.hubs.select("kind", "key", "n", "reason").row(0) == (
        "email",
        "orders@northwind.example",
        8,
        "more than 5 records",
    )
    assert _counts(capped)["hub_keys"] == 1
    # the same file under the default cap (25) is one shopper's eight orders: one contact
    default = resolve(_records(rows))
    assert default.contact_identities["contact_id"].n_unique() == 1
    assert default.hubs.height == 0


def test_names_and_addresses_only() -> None:
    records = pl.DataFrame(
        {
            "record_id": [1, 2, 3, 4],
            "first_name": ["Bob", "Robert", "Jane", "Robert"],
            "last_name": ["Smith", "SMITH", "Smith", "Smith"],
            "address1": ["1 Main Street", "1 Main St.", "1 Main St", "77 Other Road"],
            "zip": ["02110", "02110", "02110", "90210"],
        }
    )
    result = resolve(records)
    contact = _contact(result)
    assert contact["1"] == contact["2"]
    assert contact["3"] != contact["1"]
    assert contact["4"] != contact["1"]
    assert result.contact_identities.filter(pl.col("record_id") == "2")["rule"][0] == "probabilistic"


def test_ambiguous_records_go_to_review_not_merged() -> None:
    records = _records(
        [
            # a household: two people on one phone, and a nameless guest order using it
            ("1", "a", "Jane", "Doe", "jane@example.com", "+14155550000", None, None, "US"),
            ("2", "a", "John", "Doe", "john@example.com", "+14155550000", None, None, "US"),
            ("3", "a", None, "Doe", None, "+14155550000", None, None, "US"),
            # one email typed by two different first names
            ("4", "b", "Alice", "Wong", "wongs@example.com", None, None, None, "US"),
            ("5", "b", "Peter", "Wong", "wongs@example.com", None, None, None, "US"),
        ]
    )
    result = resolve(records)
    contact = _contact(result)
    assert len({contact["1"], contact["2"], contact["3"]}) == 3
    assert contact["4"] != contact["5"]
    review = result.identity_review
    pairs = {tuple(sorted(p)) for p in zip(review["record_id_l"], review["record_id_r"], strict=True)}
    assert {("1", "3"), ("2", "3"), ("4", "5")} <= pairs
    assert _counts(result)["ambiguous"] == review.height >= 3
    assert set(review.columns) >= {"reason", "contact_id_l", "contact_id_r", "weight"}


def test_grey_zone_pairs_go_to_review() -> None:
    # a pair whose weight clears review but not (a deliberately high) match threshold
    records = _records(
        [
            ("1", "a", "Xanthe", "Quirke", None, None, "1 Main St", "10001", "US"),
            ("2", "a", "Xanthe", "Quirke", None, None, "1 Main Street", "10001", "US"),
        ]
    )
    result = resolve(records, settings=LinkageSettings(match_margin=30.0, review_margin=0.0))
    contact = _contact(result)
    assert contact["1"] != contact["2"]
    assert result.identity_review["reason"].to_list() == ["match weight in the grey zone"]
    # every level is named and weighed, so a person can see why
    explanation = result.identity_review["explanation"][0]
    assert explanation.startswith("first_name=exact +")
    assert "location=same_address +" in explanation and "email=null 0.0" in explanation


def test_contact_ids_are_stable_and_merges_and_splits_are_events() -> None:
    base = [
        ("1", "a", "Ann", "Ames", "ann@example.com", None, None, None, "US"),
        ("2", "a", "Ann", "Ames", "ann@example.com", None, None, None, "US"),
        ("3", "b", "Ann", "Ames", None, "+14155551111", None, None, "US"),
        ("4", "c", "Bo", "Bell", "bo@example.com", None, None, None, "US"),
    ]
    first = resolve(_records(base))
    c1 = _contact(first)
    assert c1["1"] == c1["2"] == new_contact_id("a|customer|1")
    assert c1["3"] == new_contact_id("b|customer|3")
    assert first.identity_events.height == 0

    # same input again, shuffled: same ids, no events
    again = resolve(_records(base[::-1]), previous=first.mapping())
    assert _contact(again) == c1
    assert again.identity_events.height == 0
    assert _counts(again)["new_contacts"] == 0

    # a bridge record with Ann's email and phone merges the two Ann contacts
    bridged = resolve(
        _records([*base, ("5", "b", "Ann", "Ames", "ann@example.com", "+14155551111", None, None, "US")]),
        previous=first.mapping(),
    )
    c2 = _contact(bridged)
    assert c2["1"] == c2["3"] == c2["5"] == c1["1"]  # held by most members
    assert c2["4"] == c1["4"]
    merge = bridged.identity_events.row(0, named=True)
    assert merge["event_type"] == "merge"
    assert merge["contact_id"] == c1["1"]
    assert merge["related_contact_ids"] == sorted([c1["1"], c1["3"]])
    assert "b|customer|5" in merge["records"]

    # the bridge goes away: the contact splits again; the larger part keeps the id
    split = resolve(_records(base), previous=bridged.mapping())
    c3 = _contact(split)
    assert c3["1"] == c1["1"]
    assert c3["3"] != c1["1"]
    events = split.identity_events
    assert events["event_type"].to_list() == ["split"]
    assert events["contact_id"][0] == c1["1"]
    assert sorted(events["related_contact_ids"][0].to_list()) == sorted([c1["1"], c3["3"]])


def test_previous_mapping_accepts_customer_id_and_tie_goes_to_smallest_id() -> None:
    records = _records(
        [
            ("1", "a", "Ann", "Ames", "ann@example.com", None, None, None, "US"),
            ("2", "a", "Ann", "Ames", "ann@example.com", None, None, None, "US"),
        ]
    )
    previous = pl.DataFrame({"shop": ["a", "a"], "customer_id": ["1", "2"], "contact_id": ["ct_b", "ct_a"]})
    result = resolve(records, previous=previous)
    assert set(_contact(result).values()) == {"ct_a"}
    assert result.identity_events["event_type"].to_list() == ["merge"]


def test_missing_columns_and_empty_input() -> None:
    result = resolve(pl.DataFrame({"record_id": ["x", "y"]}))
    assert result.contact_identities.height == 2
    assert result.contact_identities["contact_id"].n_unique() == 2
    empty = resolve(pl.DataFrame({"record_id": []}, schema={"record_id": pl.String}))
    assert empty.contact_identities.height == 0


def test_a_repeated_record_key_is_refused_not_dropped() -> None:
    rows = [
        ("1", "a", "Ann", "Lee", None, None, None, None, "US"),
        ("1", "a", "Bob", "Ray", None, None, None, None, "US"),
        ("1", "b", "Cat", "Fox", None, None, None, None, "US"),  # another shop: another record
    ]
    with pytest.raises(ValueError, match=r"1 record key\(s\) .* more than once, e.g. a / customer / 1"):
        resolve(_records(rows))
    assert resolve(_records(rows[1:])).contact_identities.height == 2
