"""Normalisation of the fields identity resolution compares: emails, phones, names, addresses.

Every function is a pure Polars transform. Raw values are kept next to their normalised
twins (``email`` and ``email_norm``) so a reviewer can see what the shopper typed.
Expensive per-value work (phone parsing) runs once per distinct value, never per row.
"""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
import polars as pl

from transforms.identity.settings import (
    COUNTRY_ALIASES,
    DOMAIN_ALIASES,
    DOT_INSENSITIVE_DOMAINS,
    NICKNAMES,
    PLUS_TAG_DOMAINS,
    STREET_ABBREVIATIONS,
)

INPUT_COLUMNS: tuple[str, ...] = (
    "record_id",
    "shop",
    "record_type",
    "first_name",
    "last_name",
    "email",
    "phone",
    "address1",
    "address2",
    "city",
    "province",
    "zip",
    "country",
    "source",
)

_E164 = r"^\+[1-9][0-9]{6,14}$"


def conform_records(records: pl.DataFrame) -> pl.DataFrame:
    """Give ``records`` every input column (missing ones as null strings), all as strings.

    ``record_id`` is required; ``shop`` defaults to ``""`` and ``record_type`` to
    ``"customer"`` so a bare list of customers from one store needs no extra columns.
    """
    if "record_id" not in records.columns:
        raise ValueError("records need a record_id column")
    missing_ids = records.get_column("record_id").null_count()
    if missing_ids:
        raise ValueError(f"{missing_ids} records have no record_id; every record needs one")
    exprs: list[pl.Expr] = []
    for name in INPUT_COLUMNS:
        if name in records.columns:
            exprs.append(pl.col(name).cast(pl.String))
        else:
            exprs.append(pl.lit(None, dtype=pl.String).alias(name))
    out = records.select(exprs)
    return out.with_columns(
        pl.col("shop").fill_null(""),
        pl.col("record_type").fill_null("customer"),
    )


def _blank_to_null(expr: pl.Expr) -> pl.Expr:
    """Empty strings mean "not given"; treating them as values would link strangers."""
    return pl.when(expr.str.len_chars() > 0).then(expr).otherwise(None)


def normalise_emails(emails: pl.Series) -> pl.DataFrame:
    """Normalised emails with their local part and its digits, one row per input value.

    Columns ``email_norm`` (trimmed, lowercased, provider rules applied: plus tags dropped
    for providers that deliver ``a+tag@`` to ``a@``, dots dropped where the provider ignores
    them, mistyped provider domains corrected), ``email_local`` and ``email_digits``.
    Values without exactly one ``@`` and a dotted domain count as missing. Done in stages
    on plain columns: nested regex expressions cost several times more on a million rows.
    """
    frame = pl.DataFrame({"raw": emails.cast(pl.String)}).with_columns(
        pl.col("raw").str.strip_chars().str.to_lowercase()
    )
    frame = frame.with_columns(
        valid=(pl.col("raw").str.count_matches("@", literal=True) == 1)
        & ~pl.col("raw").str.contains(" ", literal=True),
        parts=pl.col("raw").str.split_exact("@", 1),
    ).unnest("parts")
    frame = frame.with_columns(pl.col("field_1").replace(DOMAIN_ALIASES).alias("domain"))
    frame = frame.with_columns(
        local=pl.when(pl.col("domain").is_in(list(PLUS_TAG_DOMAINS)))
        .then(pl.col("field_0").str.splitn("+", 2).struct.field("field_0"))
        .otherwise(pl.col("field_0")),
        valid=pl.col("valid") & pl.col("domain").str.contains(".", literal=True),
    )
    frame = frame.with_columns(
        local=pl.when(pl.col("domain").is_in(list(DOT_INSENSITIVE_DOMAINS)))
        .then(pl.col("local").str.replace_all(".", "", literal=True))
        .otherwise(pl.col("local"))
    )
    ok = pl.col("valid") & (pl.col("local").str.len_chars() > 0)
    frame = frame.select(
        email_norm=pl.when(ok).then(pl.concat_str([pl.col("local"), pl.lit("@"), pl.col("domain")])),
        email_local=pl.when(ok).then(pl.col("local")),
    )
    return frame.with_columns(
        email_digits=_blank_to_null(pl.col("email_local").str.replace_all(r"[^0-9]+", ""))
    )


def country_expr(col: str = "country") -> pl.Expr:
    """ISO 3166-1 alpha-2 code from a code or a common English country name, else null."""
    cleaned = pl.col(col).str.strip_chars().str.to_lowercase().str.replace_all(r"[^a-z ]+", "")
    named = cleaned.replace_strict(COUNTRY_ALIASES, default=None, return_dtype=pl.String)
    code = pl.when(cleaned.str.contains(r"^[a-z]{2}$")).then(cleaned.str.to_uppercase())
    return pl.coalesce(named, code)


def _parse_phone(raw: str, region: str) -> str | None:
    """E.164 for one raw phone with ``region`` as default, or None when it is not a number."""
    try:
        parsed = phonenumbers.parse(raw, region or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalise_phones(raw: pl.Series, region: pl.Series) -> pl.Series:
    """E.164 phones for ``raw`` with ``region`` (ISO alpha-2) as each row's default region.

    Values already in international form (``+`` and digits after removing separators) are
    taken as they are; the rest are parsed with ``phonenumbers`` once per distinct
    (value, region) pair, which keeps a million rows of mostly E.164 input fast.
    """
    frame = pl.DataFrame({"raw": raw.cast(pl.String), "region": region.cast(pl.String)})
    frame = frame.with_columns(
        cleaned=pl.col("raw")
        .str.strip_chars()
        .str.replace_all(r"[\s\-\.\(\)/]+", "")
        .str.replace(r"^00", "+"),
    )
    digits = pl.col("cleaned").str.replace_all(r"[^0-9]+", "")
    n_digits = digits.str.len_chars()
    # the national formats shoppers type most, done without a parser call per value
    frame = frame.with_columns(
        fast=pl.when(pl.col("cleaned").str.contains(_E164))
        .then(pl.col("cleaned"))
        .when(
            pl.col("region").is_in(["US", "CA"])
            & (n_digits == 10)
            & digits.str.contains(r"^[2-9][0-9]{2}[2-9]")
        )
        .then(pl.concat_str([pl.lit("+1"), digits]))
        .when(
            pl.col("region").is_in(["US", "CA"])
            & (n_digits == 11)
            & digits.str.contains(r"^1[2-9][0-9]{2}[2-9]")
        )
        .then(pl.concat_str([pl.lit("+"), digits]))
        .when((pl.col("region") == "GB") & (n_digits == 11) & digits.str.contains(r"^0[1-9]"))
        .then(pl.concat_str([pl.lit("+44"), digits.str.slice(1)])),
    )
    slow = (
        frame.filter(pl.col("fast").is_null() & pl.col("cleaned").str.contains(r"[0-9]{4}"))
        .select("raw", "region")
        .unique()
    )
    if slow.height:
        parsed = [_parse_phone(r, g or "") for r, g in zip(slow["raw"], slow["region"], strict=True)]
        slow = slow.with_columns(parsed=pl.Series(parsed, dtype=pl.String))
        frame = frame.join(slow, on=["raw", "region"], how="left", nulls_equal=True)
    else:
        frame = frame.with_columns(parsed=pl.lit(None, dtype=pl.String))
    return frame.select(pl.coalesce("fast", "parsed").alias("phone_e164")).to_series()


def name_expr(col: str) -> pl.Expr:
    """A name reduced to lowercase ASCII letters and single spaces (accents folded)."""
    folded = (
        pl.col(col)
        .str.normalize("NFKD")
        .str.replace_all(r"\p{M}", "")
        .str.to_lowercase()
        .str.replace_all(r"['’`]", "")
        .str.replace_all(r"[^a-z ]+", " ")
        .str.replace_all(r"  +", " ")
        .str.strip_chars()
    )
    return _blank_to_null(folded)


def _resolve_formal(name: str) -> str:
    """Follow the nickname table to a formal name ("cat" -> "catherine" -> "katherine")."""
    seen = {name}
    while name in NICKNAMES and NICKNAMES[name][0] not in seen:
        name = NICKNAMES[name][0]
        seen.add(name)
    return name


@lru_cache(maxsize=1)
def nickname_tables() -> tuple[dict[str, str], dict[str, list[str]]]:
    """(nickname -> canonical formal name, name -> every formal name it may stand for, itself included)."""
    canonical = {nick: _resolve_formal(nick) for nick in NICKNAMES}
    keys: dict[str, list[str]] = {}
    for nick, formals in NICKNAMES.items():
        found = {nick}
        for formal in formals:
            found.add(formal)
            found.add(_resolve_formal(formal))
        keys[nick] = sorted(found)
    for formal in set(canonical.values()) | {f for fs in NICKNAMES.values() for f in fs}:
        if formal not in keys:
            keys[formal] = sorted({formal, _resolve_formal(formal)})
    return canonical, keys


def first_name_canonical_expr(col: str = "first_name_norm") -> pl.Expr:
    """The first token of a normalised first name with common nicknames mapped to the formal name."""
    canonical, _ = nickname_tables()
    return pl.col(col).str.extract(r"^([a-z]+)", 1).replace(canonical)


def first_name_keys_expr(col: str = "first_name_norm") -> pl.Expr:
    """Every formal name the first token may stand for, itself included ("pat" -> patricia, patrick)."""
    _, keys = nickname_tables()
    token = pl.col(col).str.extract(r"^([a-z]+)", 1)
    mapped = token.replace_strict(keys, default=None, return_dtype=pl.List(pl.String))
    return pl.when(token.is_not_null()).then(pl.coalesce(mapped, pl.concat_list([token])))


def address_expr(col: str = "address1") -> pl.Expr:
    """A street line in lowercase ASCII with street-type and direction words abbreviated."""
    folded = (
        pl.col(col)
        .str.normalize("NFKD")
        .str.replace_all(r"\p{M}", "")
        .str.to_lowercase()
        .str.replace_all(r"[^a-z0-9 ]+", " ")
        .str.replace_all(r"  +", " ")
        .str.strip_chars()
    )
    # every token gets its own pair of spaces so " street " and " north " never share one;
    # then a single Aho–Corasick pass replaces whole words
    padded = pl.concat_str([pl.lit("  "), folded.str.replace_all(" ", "  ", literal=True), pl.lit("  ")])
    words = list(STREET_ABBREVIATIONS)
    replaced = padded.str.replace_many(
        [f" {w} " for w in words], [f" {STREET_ABBREVIATIONS[w]} " for w in words]
    )
    return _blank_to_null(replaced.str.replace_all(r"  +", " ").str.strip_chars())


def postcode_expr(zip_col: str = "zip", country_col: str = "country_code") -> pl.Expr:
    """Postcode in one canonical form: US zip5, UK/CA ``OUT IN`` spacing, others upper without spaces."""
    compact = pl.col(zip_col).str.to_uppercase().str.replace_all(r"[^A-Z0-9]+", "")
    country = pl.col(country_col)
    us = compact.str.extract(r"^([0-9]{5})", 1)
    gb = pl.concat_str(
        [compact.str.slice(0, compact.str.len_chars() - 3), pl.lit(" "), compact.str.slice(-3)]
    )
    ca = pl.concat_str([compact.str.slice(0, 3), pl.lit(" "), compact.str.slice(3)])
    # A UK-shaped or US-shaped code is recognised even when the country is missing.
    looks_gb = compact.str.contains(r"^[A-Z]{1,2}[0-9][A-Z0-9]?[0-9][A-Z]{2}$")
    looks_ca = compact.str.contains(r"^[A-Z][0-9][A-Z][0-9][A-Z][0-9]$")
    out = (
        pl.when((country == "US") | (country.is_null() & compact.str.contains(r"^[0-9]{5}([0-9]{4})?$")))
        .then(us)
        .when(looks_gb & ((country == "GB") | country.is_null()))
        .then(gb)
        .when(looks_ca & ((country == "CA") | country.is_null()))
        .then(ca)
        .otherwise(compact)
    )
    return _blank_to_null(out)


def _map_distinct(frame: pl.DataFrame, keys: list[str], **exprs: pl.Expr) -> pl.DataFrame:
    """Evaluate ``exprs`` on the distinct values of ``keys`` and join the results back."""
    distinct = frame.select(keys).unique().with_columns(**exprs)
    return frame.join(distinct, on=keys, how="left", nulls_equal=True, maintain_order="left")


def normalise(
    records: pl.DataFrame, *, default_region: str = "US", shop_regions: dict[str, str] | None = None
) -> pl.DataFrame:
    """Add the normalised columns identity resolution compares to conformed ``records``.

    Adds ``email_norm``, ``email_local``, ``phone_e164``, ``first_name_norm``,
    ``first_canon``, ``last_name_norm``, ``address_norm``, ``house_number``, ``city_norm``,
    ``country_code`` and ``postcode``. The default phone region is the address's country,
    else the store's country from ``shop_regions``, else ``default_region``.
    """
    # names, cities, countries and postcodes repeat a lot: normalise each distinct value once
    out = _map_distinct(records, ["first_name"], first_name_norm=name_expr("first_name"))
    out = _map_distinct(out, ["last_name"], last_name_norm=name_expr("last_name"))
    out = _map_distinct(out, ["city"], city_norm=name_expr("city"))
    out = _map_distinct(out, ["country"], country_code=country_expr("country"))
    out = _map_distinct(out, ["address1"], address_norm=address_expr("address1"))
    out = pl.concat([out, normalise_emails(out["email"])], how="horizontal")
    shop_region = pl.col("shop").replace_strict(shop_regions or {}, default=None, return_dtype=pl.String)
    region = pl.coalesce(pl.col("country_code"), shop_region, pl.lit(default_region))
    regions = out.select(region.alias("region")).to_series()
    out = out.with_columns(
        phone_e164=normalise_phones(out["phone"], regions),
        house_number=pl.col("address_norm").str.extract(r"^([0-9]+[a-z]?)\b", 1),
    )
    out = _map_distinct(
        out,
        ["first_name_norm"],
        first_token=pl.col("first_name_norm").str.extract(r"^([a-z]+)", 1),
        first_canon=first_name_canonical_expr("first_name_norm"),
        first_keys=first_name_keys_expr("first_name_norm"),
    )
    out = _map_distinct(out, ["zip", "country_code"], postcode=postcode_expr("zip", "country_code"))
    out = infer_first_names(out)
    return out.with_columns(
        address_key=pl.concat_str([pl.col("address_norm"), pl.col("postcode").fill_null("")], separator="|"),
    )


def infer_first_names(frame: pl.DataFrame) -> pl.DataFrame:
    """Fill a missing first name from the email's local part when it plainly holds one.

    ``laura.martinez01@…`` or ``lauramartinez01@…`` with last name Martinez gives
    "laura". Only names known from the nickname table or seen as a first name in the data
    count; ``jsmith`` gives the initial "j". Without this, a nameless record sharing a household
    phone could join any member of the household.
    """
    known_names = (
        frame.select(pl.col("first_token").drop_nulls().value_counts())
        .unnest("first_token")
        .filter(pl.col("count") >= 1)
        .get_column("first_token")
    )
    _, keys = nickname_tables()
    known = pl.concat([known_names, pl.Series(list(keys), dtype=pl.String)]).unique()
    rows = frame.with_row_index("_row").filter(
        pl.col("first_token").is_null() & pl.col("email_local").is_not_null()
    )
    if rows.height == 0:
        return frame
    last = pl.col("last_name_norm").str.replace_all(" ", "")
    letters = pl.col("email_local").str.replace_all(r"[^a-z]+", "")
    # what precedes the last name: "laura" in lauramartinez01, "j" in jsmith
    before = pl.when(letters.str.contains(last, literal=True)).then(letters.str.split(last).list.first())
    tokens = rows.select(
        "_row",
        cand=pl.concat_list(
            [
                pl.col("email_local").str.extract_all(r"[a-z]+"),
                pl.concat_list([letters.str.strip_suffix(last), before]),
            ]
        ),
        initial=pl.when(before.str.len_chars() == 1).then(before),
        last=last,
    )
    found = (
        tokens.explode("cand")
        .filter(
            (pl.col("cand").str.len_chars() >= 3)
            & (pl.col("cand") != pl.col("last").fill_null(""))
            & pl.col("cand").is_in(known.implode())
        )
        .group_by("_row", maintain_order=True)
        .agg(inferred=pl.col("cand").first())
    )
    # an initial before the last name ("jsmith") still tells Jane from Peter
    found = found.join(tokens.select("_row", "initial").drop_nulls(), on="_row", how="full", coalesce=True)
    found = found.select("_row", pl.coalesce("inferred", "initial").alias("inferred"))
    out = frame.with_row_index("_row").join(found, on="_row", how="left").drop("_row")
    return out.with_columns(
        first_token=pl.coalesce("first_token", "inferred"),
        first_canon=pl.coalesce("first_canon", pl.col("inferred").replace(nickname_tables()[0])),
        first_keys=pl.coalesce(
            "first_keys",
            pl.col("inferred").replace_strict(keys, default=None, return_dtype=pl.List(pl.String)),
            pl.when(pl.col("inferred").is_not_null()).then(pl.concat_list([pl.col("inferred")])),
        ),
    ).drop("inferred")
