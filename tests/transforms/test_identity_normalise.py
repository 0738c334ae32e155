"""Normalisation of emails, phones, names and addresses for identity resolution."""

from __future__ import annotations

import polars as pl
import pytest

from transforms.identity.normalise import conform_records, normalise


def _norm(**columns: list[str | None]) -> pl.DataFrame:
    n = len(next(iter(columns.values())))
    frame = pl.DataFrame({"record_id": [str(i) for i in range(n)], **columns})
    return normalise(conform_records(frame), shop_regions={"uk-shop": "GB"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" J.Doe+promo@GoogleMail.com ", "jdoe@gmail.com"),
        ("j.o.h.n.doe@gmail.com", "johndoe@gmail.com"),
        ("Jane.Doe+news@outlook.com", "jane.doe@outlook.com"),
        ("jane.doe@example.com", "jane.doe@example.com"),  # dots matter outside Gmail
        ("jane+x@example.com", "jane+x@example.com"),  # unknown providers keep plus tags
        ("not-an-email", None),
        ("", None),
    ],
)
def test_email_provider_rules_keep_raw(raw: str, expected: str | None) -> None:
    out = _norm(email=[raw])
    assert out["email_norm"][0] == expected
    assert out["email"][0] == raw  # the raw value is kept next to the normalised one


@pytest.mark.parametrize(
    ("phone", "country", "shop", "expected"),
    [
        ("(415) 555-2671", "US", None, "+14155552671"),
        ("415.555.2671", "United States", None, "+14155552671"),
        ("020 7946 0958", "GB", None, "+442079460958"),
        ("07911 123456", None, "uk-shop", "+447911123456"),  # store country as default region
        ("+1 415 555 2671", "GB", None, "+14155552671"),  # international form wins over region
        ("0049 30 123456", "DE", None, "+4930123456"),
        ("12", "US", None, None),
        (None, "US", None, None),
    ],
)
def test_phone_to_e164_by_region(
    phone: str | None, country: str | None, shop: str | None, expected: str | None
) -> None:
    out = _norm(phone=[phone], country=[country], shop=[shop])
    assert out["phone_e164"][0] == expected


def test_names_fold_case_accents_and_nicknames() -> None:
    out = _norm(
        first_name=["BOB", "José", "Pat", " liz ", None, "Laura", None],
        last_name=["O'Neil", "García-López", "Smith", "Smith", "Martinez", "Smith", "Smith"],
        email=[None, None, None, None, "laura.martinez01x257@hotmail.com", None, "jsmith@aol.com"],
    )
    assert out["first_canon"].to_list()[:4] == ["robert", "jose", "patricia", "elizabeth"]
    assert set(out["first_keys"][2].to_list()) == {"pat", "patricia", "patrick"}
    assert out["last_name_norm"].to_list()[:2] == ["oneil", "garcia lopez"]
    # a missing first name is read from an email that plainly holds it
    assert out["first_token"][4] == "laura"
    assert out["first_token"][6] == "j"  # jsmith: only the initial


def test_addresses_and_postcodes() -> None:
    out = _norm(
        address1=["12 North Main Street", "12 N. Main St", "Flat 2, 7 Station Road", "1 Avenue Rd."],
        zip=["94105-1234", "94105", "sw1a1aa", "K1A0B1"],
        country=["US", "US", "United Kingdom", "CA"],
    )
    assert out["address_norm"][0] == out["address_norm"][1] == "12 n main st"
    assert out["address_norm"][2] == "flat 2 7 station rd"
    assert out["postcode"].to_list() == ["94105", "94105", "SW1A 1AA", "K1A 0B1"]
    assert out["house_number"][0] == "12"


def test_conform_requires_record_id_and_fills_missing_columns() -> None:
    with pytest.raises(ValueError, match="record_id"):
        conform_records(pl.DataFrame({"email": ["a@b.com"]}))
    with pytest.raises(ValueError, match="1 records have no record_id"):
        conform_records(pl.DataFrame({"record_id": [1, None]}))
    out = conform_records(pl.DataFrame({"record_id": [1, 2]}))
    assert out["record_id"].to_list() == ["1", "2"]
    assert out["record_type"].to_list() == ["customer", "customer"]
    assert out["email"].null_count() == 2
