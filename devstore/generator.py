"""Generate realistic Shopify worlds with known ground truth.

``generate_world`` builds every table of ``devstore.model`` for several shops whose
customers overlap. Behind every customer record, guest order and abandoned checkout stands
a hidden person (``truth``); the same person shows up with other emails, typos,
nicknames, case and whitespace noise, Gmail dots and plus tags, phone formats, moved
addresses and abbreviations, while distinct persons share households (phone, address,
last name) and common names. Identity resolution is measured against ``truth``.

Everything is vectorised over NumPy/Polars (no per-row Python loop): a million customers
and five million orders with line items take ~25 CPU-seconds and ~7 GB. Everything is
drawn from one seeded generator, so the same arguments yield identical frames.

The realism knobs below (``*_SHARE``) say how often each kind of noise or hard negative
occurs; ``tests/devstore/test_generator_world.py`` checks that each one is present.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from devstore import gen_names as names
from devstore import gen_phones as phones
from devstore import model

DEFAULT_NOW = datetime(2026, 11, 1, tzinfo=UTC)
HISTORY_DAYS = 3 * 365
PLANS: tuple[str, ...] = ("standard", "advanced", "plus")

_US_PER_DAY = 86_400_000_000
_US_PER_HOUR = 3_600_000_000

# Id bases per table: Shopify-like widths (customers and orders 13 digits, line items 14).
_ID_BASE: dict[str, int] = {
    "customers": 7_100_000_000_000,
    "customer_addresses": 9_200_000_000_000,
    "orders": 5_600_000_000_000,
    "order_line_items": 14_300_000_000_000,
    "refunds": 960_000_000_000,
    "products": 8_400_000_000_000,
    "variants": 45_100_000_000_000,
    "collections": 480_000_000_000,
    "abandoned_checkouts": 31_000_000_000_000,
    "checkout_line_items": 62_000_000_000_000,
    "metafields": 27_000_000_000_000,
}

# Shares of the realism knobs (per customer record unless stated otherwise).
OVERLAP_SHARE = 0.25  # persons who also shop at a second store
THIRD_STORE_SHARE = 0.2  # of those, also at a third
DUPLICATE_ACCOUNT_SHARE = 0.04  # a second account in the same store (other email)
HOUSEHOLD_SHARE = 0.08  # persons living with another person (same last name, address)
GUEST_ORDER_SHARE = 0.12
NO_EMAIL_SHARE = 0.08
PHONE_SHARE = 0.6
CHECKOUTS_PER_CUSTOMER = 0.3
METAFIELD_SHARE = 0.03
GUEST_ONLY_SHARE = 0.08  # persons with guest orders/checkouts but no customer record
TEST_ORDER_SHARE = 0.005
ORDER_SLICE = 500_000  # orders built per slice (bounds memory; part of the output contract)


# ---------------------------------------------------------------------------------------
# small vectorised helpers


def _ts(us: np.ndarray) -> pl.Series:
    """Microseconds since the epoch → tz-aware UTC datetimes."""
    return pl.Series(us.astype(np.int64)).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def _money(col: str | pl.Expr) -> pl.Expr:
    """Non-negative integer cents → "12.50"."""
    c = pl.col(col) if isinstance(col, str) else col
    return pl.concat_str([(c // 100).cast(pl.String), pl.lit("."), (c % 100).cast(pl.String).str.zfill(2)])


_CENTS = pl.Series([f".{i:02d}" for i in range(100)])
_MONEY_TABLE: list[pl.Series] = []
_MONEY_TABLE_LIMIT = 20_000_000  # 200,000.00; larger amounts are formatted directly


def _money_table(size: int) -> pl.Series:
    """Money strings for 0..size-1 cents, built once per process and reused.

    Gathering short strings from a table copies 16-byte views, which is far cheaper than
    formatting millions of amounts, most of which repeat.
    """
    if not _MONEY_TABLE or _MONEY_TABLE[0].len() < size:
        size = max(size, 1_000_000)
        c = pl.int_range(0, size, eager=True)
        _MONEY_TABLE[:] = [((c // 100).cast(pl.String) + _CENTS.gather(c % 100)).rechunk()]
    return _MONEY_TABLE[0]


def _money_series(cents: np.ndarray) -> pl.Series:
    """Non-negative integer cents (NumPy) → money strings ("12.50")."""
    cents = np.asarray(cents, dtype=np.int64)
    top = int(cents.max()) if len(cents) else 0
    if top < _MONEY_TABLE_LIMIT:
        return _money_table(top + 1).gather(pl.Series(cents))
    return pl.DataFrame({"c": cents}).select(_money("c"))["c"]


def _pick(values: Sequence[object], idx: np.ndarray, dtype: pl.DataType | None = None) -> pl.Series:
    """Gather ``values[idx]`` as a Series without a Python loop over rows."""
    return pl.Series(values=list(values), dtype=dtype).gather(pl.Series(idx.astype(np.int64)))


def _zipf_weights(n: int, exponent: float) -> np.ndarray:
    """Weights of a rank-frequency (Zipf-like) distribution over ``n`` items."""
    w = 1.0 / np.arange(1, n + 1) ** exponent
    return w / w.sum()


def _ids(rng: np.random.Generator, table: str, n: int, after: int | None = None) -> np.ndarray:
    """Increasing, unique, Shopify-width ids for ``n`` rows of ``table`` (callers sort by time).

    ``after`` continues a sequence (ids start above it) when a table is built in slices.
    """
    gaps = rng.integers(1, 40, size=n, dtype=np.int64)
    return (_ID_BASE[table] if after is None else after) + np.cumsum(gaps)


def _swap_typo(col: pl.Expr, u: pl.Expr) -> pl.Expr:
    """Swap two adjacent characters at a position drawn from ``u`` ∈ [0, 1)."""
    n = col.str.len_chars()
    k = (u * (n - 1).clip(lower_bound=1)).cast(pl.Int64).clip(upper_bound=(n - 2).clip(lower_bound=0))
    return pl.concat_str(
        [col.str.slice(0, k), col.str.slice(k + 1, 1), col.str.slice(k, 1), col.str.slice(k + 2)]
    )


def _national_for(region: str, nsn: pl.Expr) -> pl.Expr:
    """A national significant number typed the way locals write it ("(201) 555-0123")."""
    if region in ("US", "CA"):
        pieces = [
            pl.lit("("),
            nsn.str.slice(0, 3),
            pl.lit(") "),
            nsn.str.slice(3, 3),
            pl.lit("-"),
            nsn.str.slice(6),
        ]
    elif region == "GB":
        pieces = [pl.lit("0"), nsn.str.slice(0, 4), pl.lit(" "), nsn.str.slice(4)]
    elif region == "AU":
        pieces = [
            pl.lit("0"),
            nsn.str.slice(0, 3),
            pl.lit(" "),
            nsn.str.slice(3, 3),
            pl.lit(" "),
            nsn.str.slice(6),
        ]
    else:
        pieces = [pl.lit("0"), nsn.str.slice(0, 3), pl.lit(" "), nsn.str.slice(3)]
    return pl.concat_str(pieces)


def _zip_for(region: str, prefix: pl.Expr, n: pl.Expr) -> pl.Expr:
    """A postcode in the country's shape, derived from a city prefix and a number."""
    letters = pl.lit(pl.Series([list("ABDEFGHJLNPQRSTUWXYZ")]))
    if region in ("US", "DE", "AU"):
        return pl.concat_str([prefix, (n % 100).cast(pl.String).str.zfill(2)])
    if region == "CA":
        return pl.concat_str(
            [
                prefix,
                pl.lit(" "),
                (n % 10).cast(pl.String),
                letters.list.get(n % 20),
                ((n // 10) % 10).cast(pl.String),
            ]
        )
    return pl.concat_str(
        [
            prefix,
            pl.lit(" "),
            (n % 10).cast(pl.String),
            letters.list.get(n % 20),
            letters.list.get((n // 7) % 20),
        ]
    )


def _by_kind(frame: pl.DataFrame, kind: np.ndarray, branches: Sequence[pl.Expr | None]) -> pl.Series:
    """Evaluate ``branches[k]`` only on the rows whose ``kind`` is ``k`` (None → null).

    ``pl.when`` evaluates every branch on every row; noisy variants are rare, so computing
    each only where it applies keeps string work proportional to the row count.
    """
    n = frame.height
    lazy = frame.lazy()
    rows: list[np.ndarray] = []
    parts: list[pl.Series] = []
    for k, expr in enumerate(branches):
        sel = np.flatnonzero(kind == k)
        if not len(sel):
            continue
        rows.append(sel)
        if expr is None:
            parts.append(pl.Series("v", [None] * len(sel), dtype=pl.String))
        else:
            mask = np.zeros(n, dtype=bool)
            mask[sel] = True
            parts.append(
                lazy.filter(pl.lit(pl.Series(mask))).select(expr.cast(pl.String).alias("v")).collect()["v"]
            )
    if not parts:
        return pl.Series("v", [], dtype=pl.String)
    order = np.concatenate(rows)
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    return pl.concat(parts).gather(pl.Series(inverse))


# ---------------------------------------------------------------------------------------
# shops


def _shops(stores: int, plans: Sequence[str] | None, now: datetime) -> pl.DataFrame:
    """One row per shop; profiles cycle (with a numeric suffix) past the five built in."""
    rows = []
    for i in range(stores):
        handle, name, country, currency, tz = names.STORE_PROFILES[i % len(names.STORE_PROFILES)]
        if i >= len(names.STORE_PROFILES):
            round_no = i // len(names.STORE_PROFILES) + 1
            handle, name = f"{handle}-{round_no}", f"{name} {round_no}"
        plan = plans[i % len(plans)] if plans else PLANS[i % len(PLANS)]
        rows.append(
            {
                "shop": f"{handle}.myshopify.com",
                "handle": handle,
                "name": name,
                "email": f"owner@{handle}.example.com",
                "currency_code": currency,
                "country_code": country,
                "plan": plan,
                "primary_domain": f"www.{handle}.example.com",
                "timezone": tz,
                "created_at": now - timedelta(days=HISTORY_DAYS + 30 + 17 * i),
            }
        )
    return pl.DataFrame(rows, schema=model.SHOPS)


# ---------------------------------------------------------------------------------------
# persons (hidden)


def _persons(rng: np.random.Generator, shops: pl.DataFrame, per_store: np.ndarray) -> pl.DataFrame:
    """The hidden persons: one row each, with their canonical identity attributes.

    Persons are generated in blocks by home store, so a household (consecutive persons in
    a block) always lives in one country. Strings every record reuses (clean email, phone
    in both formats, both homes with long and short street suffix) are built here once.
    """
    n = int(per_store.sum())
    home = np.repeat(np.arange(len(per_store)), per_store)
    country = shops["country_code"].to_numpy()[home]
    first_names = list(names.FIRST_NAMES)
    first = rng.choice(len(first_names), size=n, p=_zipf_weights(len(first_names), 0.8))
    last = rng.choice(len(names.LAST_NAMES), size=n, p=_zipf_weights(len(names.LAST_NAMES), 0.9))
    # Common-name hard negatives: a slice of persons are literally "John Smith".
    john = rng.random(n) < 0.01
    first[john] = 0
    last[john] = 0

    # Households: person i joins person i-1 (same block) sharing last name and address.
    block_start = np.r_[0, np.cumsum(per_store)[:-1]]
    is_start = np.zeros(n, dtype=bool)
    is_start[block_start[per_store > 0]] = True
    member = (rng.random(n) < HOUSEHOLD_SHARE) & ~is_start
    # Chains (a member following a member) collapse onto the first person of the run.
    head = np.where(member, np.arange(n) - 1, np.arange(n))
    while member[head].any():
        head = np.where(member[head], head - 1, head)
    last = last[head]
    # Household members have first names distinct from their head (different persons).
    clash = member & (first == first[head])
    first[clash] = (first[clash] + 1 + rng.integers(0, 20, clash.sum())) % len(first_names)
    share_phone = member & (rng.random(n) < 0.6)

    # Addresses: a home (shared by household) and a previous home for movers.
    street_no = rng.integers(1, 2500, size=n)[head]
    street = rng.integers(0, len(names.STREET_NAMES), size=n)[head]
    suffix = rng.integers(0, len(names.STREET_SUFFIXES), size=n)[head]
    city_u = rng.random(n)[head]
    zip_u = rng.integers(0, 1000, size=n)[head]
    old_street_no = rng.integers(1, 2500, size=n)
    old_street = rng.integers(0, len(names.STREET_NAMES), size=n)
    old_city_u = rng.random(n)
    apt = np.where(rng.random(n) < 0.25, rng.integers(1, 60, size=n), 0)[head]

    # Phones: unique national numbers per country, except household members who share one.
    phone_code = np.zeros(n, dtype=np.int64)
    for region in np.unique(country):
        sel = np.flatnonzero(country == region)
        cap = phones.capacity(str(region))
        if len(sel) > cap:
            raise ValueError(f"too many persons for the {region} phone pool ({len(sel)} > {cap})")
        phone_code[sel] = rng.choice(cap, size=len(sel), replace=False)
    phone_code = np.where(share_phone, phone_code[head], phone_code)

    domain_u = rng.random(n)
    pattern = rng.integers(0, 5, size=n)
    work = rng.integers(0, len(names.WORK_DOMAINS), size=n)
    birth_year = rng.integers(1950, 2006, size=n)
    guest_only = rng.random(n) < GUEST_ONLY_SHARE
    suffix_long = _pick(list(names.STREET_SUFFIXES), suffix)
    suffix_short = _pick(list(names.STREET_SUFFIXES.values()), suffix)

    frame = pl.DataFrame(
        {
            "row": np.arange(n),
            "person_id": np.arange(1, n + 1, dtype=np.int64) * 7 + 1000,
            "home": home,
            "country": country,
            "first": _pick(first_names, first),
            "last": _pick(names.LAST_NAMES, last),
            "nick": _pick([nk[0] if nk else None for nk in names.FIRST_NAMES.values()], first),
            "street_no": street_no,
            "street": _pick(names.STREET_NAMES, street),
            "suffix_long": suffix_long,
            "suffix_short": suffix_short,
            "apt": apt,
            "city_u": city_u,
            "zip_u": zip_u,
            "old_street_no": old_street_no,
            "old_street": _pick(names.STREET_NAMES, old_street),
            "old_city_u": old_city_u,
            "phone_code": phone_code,
            "domain_u": domain_u,
            "pattern": pattern,
            "work_domain": _pick(names.WORK_DOMAINS, work),
            "birth_year": birth_year,
            # Persons who only ever check out as guests (no customer record anywhere).
            "guest_only": guest_only,
        }
    )
    # Phone numbers, mailbox domains, cities and postcodes depend on country.
    parts = []
    for region in sorted(set(country.tolist())):
        part = frame.filter(pl.col("country") == region)
        domains = names.EMAIL_DOMAINS[region]
        cities = names.CITIES[region]
        dom_idx = np.minimum(
            np.searchsorted(np.cumsum(_zipf_weights(len(domains), 1.1)), part["domain_u"].to_numpy()),
            len(domains) - 1,
        )
        city_idx = (part["city_u"].to_numpy() * len(cities)).astype(np.int64)
        old_city_idx = (part["old_city_u"].to_numpy() * len(cities)).astype(np.int64)
        codes = part["phone_code"].to_numpy()
        _cc, pool = phones.prefix_pool(region)
        tail_space = 10**phones.TAIL_DIGITS
        part = part.with_columns(
            nsn=pl.concat_str(
                [
                    _pick(pool, (codes // tail_space) % len(pool)),
                    pl.Series(codes % tail_space).cast(pl.String).str.zfill(phones.TAIL_DIGITS),
                ]
            ),
            domain=_pick(domains, dom_idx),
            city=_pick([c[0] for c in cities], city_idx),
            province=_pick([c[1] for c in cities], city_idx),
            province_code=_pick([c[2] for c in cities], city_idx),
            zip_prefix=_pick([c[3] for c in cities], city_idx),
            old_city=_pick([c[0] for c in cities], old_city_idx),
            old_province=_pick([c[1] for c in cities], old_city_idx),
            old_province_code=_pick([c[2] for c in cities], old_city_idx),
            old_zip_prefix=_pick([c[3] for c in cities], old_city_idx),
        )
        parts.append(
            part.with_columns(
                e164=pl.concat_str([pl.lit(f"+{phones.calling_code(region)}"), pl.col("nsn")]),
                national=_national_for(region, pl.col("nsn")),
                zip=_zip_for(region, pl.col("zip_prefix"), pl.col("zip_u")),
                old_zip=_zip_for(region, pl.col("old_zip_prefix"), pl.col("zip_u") + 3),
            )
        )
    frame = pl.concat(parts).sort("row")
    first_l = pl.col("first").str.to_lowercase().str.replace_all(r"[^a-z]", "")
    last_l = pl.col("last").str.to_lowercase().str.replace_all(r"[^a-z]", "")
    # The person number keeps every mailbox unique (no two persons share an address).
    num = (pl.col("person_id") // 7).cast(pl.String)
    local = (
        pl.when(pl.col("pattern") == 0)
        .then(pl.concat_str([first_l, pl.lit("."), last_l, num]))
        .when(pl.col("pattern") == 1)
        .then(pl.concat_str([first_l.str.slice(0, 1), last_l, num]))
        .when(pl.col("pattern") == 2)
        .then(
            pl.concat_str(
                [first_l, last_l, pl.col("birth_year").cast(pl.String).str.slice(2), pl.lit("x"), num]
            )
        )
        .when(pl.col("pattern") == 3)
        .then(pl.concat_str([last_l, pl.lit("."), first_l, num]))
        .otherwise(pl.concat_str([first_l, pl.lit("_"), num]))
    )

    def street_line(no: str, street: str, suffix: str) -> pl.Expr:
        return pl.concat_str(
            [pl.col(no).cast(pl.String), pl.lit(" "), pl.col(street), pl.lit(" "), pl.col(suffix)]
        )

    apt = pl.col("apt").cast(pl.String)
    frame = frame.with_columns(
        local=local,
        work_email=pl.concat_str([first_l, pl.lit("."), last_l, num, pl.lit("@"), pl.col("work_domain")]),
        is_gmail=pl.col("domain") == "gmail.com",
        has_nick=pl.col("nick").is_not_null(),
        addr_long=street_line("street_no", "street", "suffix_long"),
        addr_short=street_line("street_no", "street", "suffix_short"),
        old_addr_long=street_line("old_street_no", "old_street", "suffix_long"),
        old_addr_short=street_line("old_street_no", "old_street", "suffix_short"),
        addr2_long=pl.when(pl.col("apt") > 0).then(pl.concat_str([pl.lit("Apartment "), apt])),
        addr2_short=pl.when(pl.col("apt") > 0).then(pl.concat_str([pl.lit("Apt "), apt])),
    ).with_columns(email=pl.concat_str([pl.col("local"), pl.lit("@"), pl.col("domain")]))
    return frame.select(
        "person_id", "home", "country", "guest_only", "first", "last", "nick", "has_nick", "local", "domain",
        "email", "is_gmail", "work_email", "e164", "national", "addr_long", "addr_short", "old_addr_long",
        "old_addr_short", "addr2_long", "addr2_short", "city", "province", "province_code", "zip", "old_city",
        "old_province", "old_province_code", "old_zip",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# record variants: how one person's details look on one record

# email kinds
_E_NULL, _E_CLEAN, _E_CAPITAL, _E_UPPER, _E_SPACE, _E_DOTTED, _E_PLUS, _E_TYPO, _E_WORK = range(9)


def _email_kinds(
    rng: np.random.Generator, is_gmail: np.ndarray, dup: np.ndarray, allow_null: bool
) -> np.ndarray:
    """Which variant of the person's mailbox each record carries."""
    n = len(is_gmail)
    u = rng.random(n)
    cuts = np.array([NO_EMAIL_SHARE if allow_null else 0.0, 0.58, 0.62, 0.64, 0.68, 0.73, 0.78, 0.83, 0.91])
    kinds = np.array(
        [_E_NULL, _E_CLEAN, _E_CAPITAL, _E_UPPER, _E_SPACE, _E_DOTTED, _E_PLUS, _E_TYPO, _E_WORK, _E_CLEAN]
    )
    kind = kinds[np.searchsorted(cuts, u, side="right")]
    # Gmail-only tricks fall back to the clean address for other providers.
    kind = np.where(((kind == _E_DOTTED) | (kind == _E_PLUS)) & ~is_gmail, _E_CLEAN, kind)
    # A second account in the same shop needs another address: work, alias or typo.
    dup_kind = np.where(rng.random(n) < 0.7, _E_WORK, np.where(is_gmail, _E_PLUS, _E_TYPO))
    return np.where(dup, dup_kind, kind)


def _email_branches(u: pl.Expr) -> list[pl.Expr | None]:
    """Expressions for each email kind over person columns (``local``, ``domain``...)."""
    local, domain, clean = pl.col("local"), pl.col("domain"), pl.col("email")
    nodots = local.str.replace_all(".", "", literal=True)
    k = (u * (nodots.str.len_chars() - 1)).cast(pl.Int64) + 1
    typo_domain = domain.replace_strict(names.DOMAIN_TYPOS, default=None, return_dtype=pl.String)
    return [
        None,
        clean,
        pl.concat_str([local.str.slice(0, 1).str.to_uppercase(), local.str.slice(1), pl.lit("@"), domain]),
        clean.str.to_uppercase(),
        pl.concat_str([pl.lit(" "), clean, pl.lit("  ")]),
        pl.concat_str([nodots.str.slice(0, k), pl.lit("."), nodots.str.slice(k), pl.lit("@gmail.com")]),
        pl.concat_str(
            [local, pl.lit("+"), pl.col("shop_handle").str.split("-").list.first(), pl.lit("@gmail.com")]
        ),
        pl.when((u < 0.4) & typo_domain.is_not_null())
        .then(pl.concat_str([local, pl.lit("@"), typo_domain]))
        .otherwise(pl.concat_str([_swap_typo(local, u), pl.lit("@"), domain])),
        pl.col("work_email"),
    ]


def _with_contact_variants(
    rng: np.random.Generator, frame: pl.DataFrame, dup: np.ndarray, allow_null_email: bool
) -> pl.DataFrame:
    """Add ``email``, ``first_name``, ``last_name`` as this record carries them."""
    n = frame.height
    u = pl.lit(pl.Series(rng.random(n)))
    frame = frame.with_columns(_u=u)
    email_kind = _email_kinds(rng, frame["is_gmail"].to_numpy(), dup, allow_null_email)
    email = _by_kind(frame, email_kind, _email_branches(pl.col("_u")))
    # first: 0 as is, 1 nickname, 2 missing, 3 lower, 4 upper, 5 trailing space
    fu = rng.random(n)
    first_kind = np.searchsorted(np.array([0.10, 0.12, 0.15, 0.17, 0.20]), fu, side="right")
    first_kind = np.where(first_kind == 5, 0, first_kind + 1)
    first_kind = np.where((first_kind == 1) & ~frame["has_nick"].to_numpy(), 0, first_kind)
    first = pl.col("first")
    first_name = _by_kind(
        frame,
        first_kind,
        [first, pl.col("nick"), None, first.str.to_lowercase(), first.str.to_uppercase(), first + " "],
    )
    # last: 0 as is, 1 typo, 2 lower, 3 upper, 4 leading space
    lu = rng.random(n)
    last_kind = np.searchsorted(np.array([0.03, 0.05, 0.07, 0.09]), lu, side="right")
    last_kind = np.where(last_kind == 4, 0, last_kind + 1)
    last = pl.col("last")
    last_name = _by_kind(
        frame,
        last_kind,
        [last, _swap_typo(last, pl.col("_u")), last.str.to_lowercase(), last.str.to_uppercase(), " " + last],
    )
    return frame.drop("_u").with_columns(email=email, first_name=first_name, last_name=last_name)


def _address_columns(moved: pl.Expr, short: pl.Expr) -> dict[str, pl.Expr]:
    """Address columns: current or previous home, street suffix long or abbreviated."""
    return {
        "address1": pl.when(moved)
        .then(pl.when(short).then(pl.col("old_addr_short")).otherwise(pl.col("old_addr_long")))
        .otherwise(pl.when(short).then(pl.col("addr_short")).otherwise(pl.col("addr_long"))),
        "address2": pl.when(moved)
        .then(pl.lit(None, dtype=pl.String))
        .otherwise(pl.when(short).then(pl.col("addr2_short")).otherwise(pl.col("addr2_long"))),
        "city": pl.when(moved).then(pl.col("old_city")).otherwise(pl.col("city")),
        "province": pl.when(moved).then(pl.col("old_province")).otherwise(pl.col("province")),
        "province_code": pl.when(moved).then(pl.col("old_province_code")).otherwise(pl.col("province_code")),
        "zip": pl.when(moved).then(pl.col("old_zip")).otherwise(pl.col("zip")),
    }


# ---------------------------------------------------------------------------------------
# customer records


def _memberships(rng: np.random.Generator, persons: pl.DataFrame, stores: int) -> pl.DataFrame:
    """(person, store) pairs: the home store, overlap stores, and duplicate accounts."""
    n = persons.height
    home = persons["home"].to_numpy()
    registered = ~persons["guest_only"].to_numpy()
    pidx = [np.flatnonzero(registered)]
    store = [home[registered]]
    if stores > 1:
        second = (rng.random(n) < OVERLAP_SHARE) & registered
        off1 = 1 + rng.integers(0, stores - 1, size=n)
        pidx.append(np.flatnonzero(second))
        store.append(((home + off1) % stores)[second])
        if stores > 2:
            third = second & (rng.random(n) < THIRD_STORE_SHARE)
            off2 = 1 + (off1 - 1 + 1 + rng.integers(0, stores - 2, size=n)) % (stores - 1)
            pidx.append(np.flatnonzero(third))
            store.append(((home + off2) % stores)[third])
    p = np.concatenate(pidx)
    s = np.concatenate(store)
    dup = rng.random(len(p)) < DUPLICATE_ACCOUNT_SHARE
    p = np.concatenate([p, p[dup]])
    s = np.concatenate([s, s[dup]])
    is_dup = np.r_[np.zeros(len(dup), dtype=bool), np.ones(int(dup.sum()), dtype=bool)]
    return pl.DataFrame({"pidx": p, "store": s, "dup": is_dup})


_CUSTOMER_TAG_SETS: list[list[str]] = [
    [], [], [], ["newsletter"], ["vip"], ["returning"], ["wholesale"], ["vip", "returning"],
    ["newsletter", "returning"], ["staff"],
]  # fmt: skip
_LOCALES: dict[str, str] = {"US": "en", "GB": "en-GB", "CA": "en-CA", "DE": "de", "AU": "en-AU"}
_EMAIL_STATES = ["SUBSCRIBED", "NOT_SUBSCRIBED", "UNSUBSCRIBED", "PENDING", None]
_OPT_IN_LEVELS = ["SINGLE_OPT_IN", "CONFIRMED_OPT_IN", "UNKNOWN", None]
_COLLECTED_FROM = ["SHOPIFY", "OTHER", None]
_CUSTOMER_STATES = ["ENABLED", "DISABLED", "INVITED", "DECLINED"]
_PERSON_COLUMNS = [
    "person_id", "country", "first", "last", "nick", "has_nick", "local", "domain", "email", "is_gmail",
    "work_email", "e164", "national", "addr_long", "addr_short", "old_addr_long", "old_addr_short",
    "addr2_long", "addr2_short", "city", "province", "province_code", "zip", "old_city", "old_province",
    "old_province_code", "old_zip",
]  # fmt: skip


def _masked_ts(us: np.ndarray, null: np.ndarray) -> pl.Series:
    """Timestamps with nulls where ``null`` is set."""
    return _ts(us).set(pl.Series(null), None)


def _customers(
    rng: np.random.Generator, persons: pl.DataFrame, shops: pl.DataFrame, members: pl.DataFrame, now_us: int
) -> pl.DataFrame:
    """Customer records (in creation order) with their hidden person and helper columns."""
    n = members.height
    start_us = now_us - HISTORY_DAYS * _US_PER_DAY
    created = start_us + (rng.random(n) ** 0.8 * (HISTORY_DAYS * _US_PER_DAY - _US_PER_DAY)).astype(np.int64)
    order = np.argsort(created, kind="stable")
    created = created[order]
    pidx = members["pidx"].to_numpy()[order]
    store = members["store"].to_numpy()[order]
    dup = members["dup"].to_numpy()[order]
    rec = persons.select(_PERSON_COLUMNS)[pidx].with_columns(
        store=pl.Series(store),
        shop=_pick(shops["shop"].to_list(), store),
        shop_handle=_pick(shops["handle"].to_list(), store),
        created_us=pl.Series(created),
    )
    rec = _with_contact_variants(rng, rec, dup, allow_null_email=True)
    moved = rng.random(n) < 0.10
    short = rng.random(n) < 0.5
    rec = rec.with_columns(
        phone=pl.when(pl.lit(pl.Series(rng.random(n) < PHONE_SHARE))).then(pl.col("e164")),
        moved=pl.Series(moved),
        short=pl.Series(short),
        has_address=pl.Series(rng.random(n) < 0.85),
        **_address_columns(pl.lit(pl.Series(moved)), pl.lit(pl.Series(short))),
    )
    # Shopify keeps email and phone unique within a shop: later duplicates lose them.
    email_key = pl.col("email").str.strip_chars().str.to_lowercase()
    rec = rec.with_columns(
        email=pl.when(email_key.is_null() | email_key.is_first_distinct().over("store")).then(
            pl.col("email")
        ),
        phone=pl.when(pl.col("phone").is_null() | pl.col("phone").is_first_distinct().over("store")).then(
            pl.col("phone")
        ),
        id=pl.Series(_ids(rng, "customers", n)),
    )

    # Consent: email states only where there is an email, SMS only where there is a phone.
    has_email = rec["email"].is_not_null().to_numpy()
    has_phone = rec["phone"].is_not_null().to_numpy()
    span = np.maximum(now_us - created, _US_PER_HOUR)
    e_state = rng.choice(4, size=n, p=[0.38, 0.45, 0.12, 0.05])
    e_level = np.where(e_state == 3, 1, rng.choice(3, size=n, p=[0.6, 0.3, 0.1]))
    e_at = created + (rng.random(n) * span).astype(np.int64)
    e_at_null = ~has_email | ((e_state == 1) & (rng.random(n) < 0.5))
    s_state = rng.choice(4, size=n, p=[0.2, 0.65, 0.1, 0.05])
    s_level = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
    s_at = created + (rng.random(n) * span).astype(np.int64)
    s_from = rng.choice(2, size=n, p=[0.8, 0.2])
    state = rng.choice(4, size=n, p=[0.55, 0.40, 0.04, 0.01])
    updated = np.maximum(np.where(e_at_null, created, e_at), np.where(has_phone, s_at, created))
    updated = np.minimum(updated + rng.integers(0, _US_PER_HOUR, size=n), now_us)
    note_idx = np.where(rng.random(n) < 0.05, rng.integers(0, 3, size=n), 3)
    return rec.with_columns(
        email_consent_state=_pick(_EMAIL_STATES, np.where(has_email, e_state, 4)),
        email_consent_opt_in_level=_pick(_OPT_IN_LEVELS, np.where(has_email, e_level, 3)),
        email_consent_updated_at=_masked_ts(e_at, e_at_null),
        sms_consent_state=_pick(_EMAIL_STATES, np.where(has_phone, s_state, 4)),
        sms_consent_opt_in_level=_pick(_OPT_IN_LEVELS, np.where(has_phone, s_level, 3)),
        sms_consent_updated_at=_masked_ts(s_at, ~has_phone),
        sms_consent_collected_from=_pick(_COLLECTED_FROM, np.where(has_phone, s_from, 2)),
        state=_pick(_CUSTOMER_STATES, state),
        verified_email=pl.Series(has_email & ((state == 0) | (rng.random(n) < 0.3))),
        tax_exempt=pl.Series(rng.random(n) < 0.01),
        locale=pl.col("country").replace_strict(_LOCALES, default="en"),
        tags=_pick(_CUSTOMER_TAG_SETS, rng.integers(0, len(_CUSTOMER_TAG_SETS), size=n), pl.List(pl.String)),
        note=_pick(["Prefers email", "Gift buyer", "Wholesale enquiry", None], note_idx),
        created_at=_ts(created),
        updated_at=_ts(updated),
    )


def _addresses(rng: np.random.Generator, rec: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
    """Customer addresses (movers keep the previous one too) and each customer's default."""
    keep = ["shop", "id", "first_name", "last_name", "country", "phone", "moved", "short", "has_address",
            "address1", "address2", "city", "province", "province_code", "zip", "addr_long", "addr_short",
            "old_addr_long", "old_addr_short", "addr2_long", "addr2_short", "old_city", "old_province",
            "old_province_code", "old_zip"]  # fmt: skip
    with_addr = rec.select(keep).filter(pl.col("has_address"))
    cols = ["shop", "customer_id", "first_name", "last_name", "country", "phone", "order"]
    addr = ["address1", "address2", "city", "province", "province_code", "zip"]
    current = with_addr.with_columns(customer_id=pl.col("id"), order=pl.lit(0)).select(*cols, *addr)
    # Half the movers also keep their new home in the address book (the default shows the old).
    movers = with_addr.filter(pl.col("moved") & (pl.col("id") % 2 == 0))
    new_home = movers.with_columns(customer_id=pl.col("id"), order=pl.lit(1)).select(
        *cols, **_address_columns(pl.lit(False), pl.col("short"))
    )
    book = pl.concat([current, new_home]).sort(["customer_id", "order"])
    book = book.with_columns(
        id=pl.Series(_ids(rng, "customer_addresses", book.height)),
        company=pl.when(pl.lit(pl.Series(rng.random(book.height) < 0.03))).then(pl.lit("Northwind Traders")),
        country_code=pl.col("country"),
        country=pl.col("country").replace_strict(names.COUNTRY_NAMES),
    )
    default = book.filter(pl.col("order") == 0).select("customer_id", "id")
    default_id = rec.select("id").join(
        default, left_on="id", right_on="customer_id", how="left", maintain_order="left"
    )["id_right"]
    return book, default_id


# ---------------------------------------------------------------------------------------
# catalogue

_OPTIONS_BY_TYPE: dict[str, int] = {
    "Apparel": 1,
    "Footwear": 1,
    "Gear": 2,
    "Coffee": 3,
    "Kitchen": 0,
    "Accessories": 4,
}
_PRODUCT_TAG_SETS: list[list[str]] = [[], ["new"], ["bestseller"], ["sale"], ["gift"], ["new", "gift"]]


def _catalogue(
    rng: np.random.Generator, shops: pl.DataFrame, customers_per_store: int, now_us: int
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Products, variants, collections and collection membership for every shop."""
    n_shops = shops.height
    per_shop = int(np.clip(customers_per_store // 40, 24, 300))
    n = per_shop * n_shops
    shop_idx = np.repeat(np.arange(n_shops), per_shop)
    kind = rng.integers(0, len(names.PRODUCT_KINDS), size=n)
    noun_u = rng.random(n)
    adj = rng.integers(0, len(names.ADJECTIVES), size=n)
    kinds = names.PRODUCT_KINDS
    noun = np.array(
        [kinds[k][1][int(u * len(kinds[k][1]))] for k, u in zip(kind, noun_u, strict=True)], dtype=object
    )
    lo = np.array([kinds[k][2][0] for k in kind])
    hi = np.array([kinds[k][2][1] for k in kind])
    rate = np.array([names.USD_RATES[c] for c in shops["currency_code"].to_list()])[shop_idx]
    # Prices end in .00 or .99 in the shop's own currency, as merchants set them.
    base = np.round((lo + rng.random(n) * (hi - lo)) * rate / 100).astype(np.int64) * 100
    base = np.where(rng.random(n) < 0.6, base - 1, base).clip(min=99)
    created = now_us - ((HISTORY_DAYS + 20) * rng.random(n) * _US_PER_DAY).astype(np.int64)
    order = np.lexsort((created, shop_idx))
    kind, adj, noun, base, created, shop_idx = (
        kind[order],
        adj[order],
        noun[order],
        base[order],
        created[order],
        shop_idx[order],
    )
    ids = _ids(rng, "products", n)
    title = pl.Series(np.array(names.ADJECTIVES, dtype=object)[adj] + " " + noun, dtype=pl.String)
    ptype = _pick([k[0] for k in kinds], kind)
    products = pl.DataFrame(
        {
            "shop": pl.Series(shops["shop"].to_numpy()[shop_idx]),
            "id": ids,
            "title": title,
            "product_type": ptype,
            "vendor": pl.Series(shops["name"].to_numpy()[shop_idx]),
            "status": pl.Series(rng.choice(["ACTIVE", "DRAFT", "ARCHIVED"], size=n, p=[0.9, 0.04, 0.06])),
            "tags": _pick(
                _PRODUCT_TAG_SETS, rng.integers(0, len(_PRODUCT_TAG_SETS), size=n), pl.List(pl.String)
            ),
            "created_at": _ts(created),
            "updated_at": _ts(
                np.minimum(created + (rng.random(n) * 200 * _US_PER_DAY).astype(np.int64), now_us)
            ),
            "base": base,
            "kind": kind,
        }
    ).with_columns(
        handle=pl.concat_str(
            [
                pl.col("title").str.to_lowercase().str.replace_all(r"[^a-z0-9]+", "-"),
                pl.lit("-"),
                (pl.int_range(pl.len()) + 1).over("shop").cast(pl.String),
            ]
        )
    )
    # Variants: one per option value of the product's option set.
    opt_set = np.array([_OPTIONS_BY_TYPE[kinds[k][0]] for k in kind])
    n_var = np.array([len(names.VARIANT_OPTIONS[o]) for o in opt_set])
    vp = np.repeat(np.arange(n), n_var)
    vpos = np.arange(len(vp)) - np.repeat(np.cumsum(n_var) - n_var, n_var)
    opt_titles = np.array(
        [names.VARIANT_OPTIONS[o][i] for o, i in zip(opt_set[vp], vpos, strict=True)], dtype=object
    )
    v_price = base[vp] + vpos * np.where(opt_set[vp] == 3, 500, 0)  # bigger bags cost more
    variants = pl.DataFrame(
        {
            "shop": products["shop"].gather(pl.Series(vp)),
            "id": _ids(rng, "variants", len(vp)),
            "product_id": ids[vp],
            "title": pl.Series(opt_titles, dtype=pl.String),
            "product_title": products["title"].gather(pl.Series(vp)),
            "inventory_quantity": rng.integers(-3, 400, size=len(vp)),
            "price_cents": v_price,
            "created_at": products["created_at"].gather(pl.Series(vp)),
            "updated_at": products["updated_at"].gather(pl.Series(vp)),
            "status": products["status"].gather(pl.Series(vp)),
            "store": shop_idx[vp],
        }
    ).with_columns(
        price=_money("price_cents"),
        sku=pl.concat_str(
            [
                pl.col("shop").str.slice(0, 3).str.to_uppercase(),
                pl.lit("-"),
                (pl.col("product_id") % 100_000).cast(pl.String).str.zfill(5),
                pl.lit("-"),
                pl.col("title").str.replace_all(r"[^A-Za-z0-9]", "").str.slice(0, 3).str.to_uppercase(),
            ]
        ),
    )
    # Collections: one per product type, plus curated ones with random membership.
    coll_rows = []
    members = []
    for s, shop in enumerate(shops["shop"].to_list()):
        sel = np.flatnonzero(shop_idx == s)
        titles = [k[0] for k in kinds] + ["New Arrivals", "Best Sellers", "Sale", "Gifts Under 50"]
        for t, title in enumerate(titles):
            if t < len(kinds):
                prod = sel[kind[sel] == t]
                sort_order = "BEST_SELLING"
            else:
                prod = np.sort(rng.choice(sel, size=min(len(sel), 8 + t), replace=False))
                sort_order = ["CREATED_DESC", "BEST_SELLING", "PRICE_ASC", "MANUAL"][t - len(kinds)]
            coll_rows.append({"shop": shop, "title": title, "sort_order": sort_order, "n": len(prod)})
            members.append(prod)
    collections = pl.DataFrame(coll_rows).with_columns(
        id=pl.Series(_ids(rng, "collections", len(coll_rows))),
        handle=pl.col("title").str.to_lowercase().str.replace_all(r"[^a-z0-9]+", "-"),
        updated_at=_ts(now_us - (rng.random(len(coll_rows)) * 300 * _US_PER_DAY).astype(np.int64)),
    )
    coll_of = np.repeat(collections["id"].to_numpy(), [len(m) for m in members])
    prod_all = np.concatenate(members) if members else np.zeros(0, dtype=np.int64)
    position = np.concatenate([np.arange(1, len(m) + 1) for m in members]) if members else prod_all
    collection_products = pl.DataFrame(
        {
            "shop": pl.Series(shops["shop"].to_numpy()[shop_idx[prod_all]]),
            "collection_id": coll_of,
            "product_id": ids[prod_all],
            "position": position,
        }
    )
    return products, variants, collections, collection_products


# ---------------------------------------------------------------------------------------
# orders

_SOURCE_COLUMNS = [
    "shop_handle", "person_id", "country", "e164", "national", "first_name", "last_name", "address1",
    "address2", "city", "province", "zip", "email", "phone", "customer_id",
]  # fmt: skip
_FINANCIAL = ["PAID", "PENDING", "AUTHORIZED", "PARTIALLY_REFUNDED", "REFUNDED", "VOIDED"]
_FULFILMENT = ["FULFILLED", "PARTIALLY_FULFILLED", "UNFULFILLED"]
_CANCEL_REASONS = ["CUSTOMER", "FRAUD", "INVENTORY", "DECLINED", "OTHER", "STAFF", None]
_ORDER_TAG_SETS: list[list[str]] = [[], ["test"], ["gift"], ["wholesale"], ["subscription"]]
_SOURCES = ["web", "pos", "shopify_draft_order", "iphone", "android"]
_REFUND_NOTES = ["Damaged item", "Wrong size", "Changed mind", None, "Order cancelled"]


def _guests(
    rng: np.random.Generator,
    persons: pl.DataFrame,
    shops: pl.DataFrame,
    pidx: np.ndarray,
    store: np.ndarray,
) -> pl.DataFrame:
    """Contact details as guests type them at checkout (columns of ``_SOURCE_COLUMNS``)."""
    n = len(pidx)
    frame = persons.select(_PERSON_COLUMNS)[pidx].with_columns(
        shop_handle=_pick(shops["handle"].to_list(), store),
        shop_country=_pick(shops["country_code"].to_list(), store),
        customer_id=pl.lit(None, dtype=pl.Int64),
    )
    frame = _with_contact_variants(rng, frame, np.zeros(n, dtype=bool), allow_null_email=True)
    u = pl.lit(pl.Series(rng.random(n)))
    return frame.with_columns(
        # Locals type national format; foreigners (and some locals) the international one.
        phone=pl.when(u < 0.35)
        .then(
            pl.when(pl.col("country") == pl.col("shop_country"))
            .then(pl.col("national"))
            .otherwise(pl.col("e164"))
        )
        .when(u < 0.5)
        .then(pl.col("e164")),
        **_address_columns(pl.lit(False), pl.lit(pl.Series(rng.random(n) < 0.5))),
    ).with_columns(
        # A guest always leaves an email or a phone; default to the clean mailbox.
        email=pl.when(pl.col("email").is_null() & pl.col("phone").is_null())
        .then(pl.col("local") + "@" + pl.col("domain"))
        .otherwise(pl.col("email"))
    )


def _rank_within(group: np.ndarray, n_groups: int) -> np.ndarray:
    """0-based position of each row among the earlier rows of its group."""
    order = np.argsort(group, kind="stable")
    counts = np.bincount(group, minlength=n_groups)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rank = np.empty(len(group), dtype=np.int64)
    rank[order] = np.arange(len(group)) - np.repeat(starts, counts)
    return rank


def _pick_variants(
    rng: np.random.Generator, variants: pl.DataFrame, store: np.ndarray, n_stores: int, skew: float
) -> np.ndarray:
    """A variant row of each line's shop; ``skew`` > 1 favours the first (best-selling) ones."""
    v_store = variants["store"].to_numpy()
    count = np.bincount(v_store, minlength=n_stores)
    start = np.r_[0, np.cumsum(count)[:-1]]
    return start[store] + (rng.random(len(store)) ** skew * count[store]).astype(np.int64)


def _orders(
    rng: np.random.Generator,
    persons: pl.DataFrame,
    customers: pl.DataFrame,
    shops: pl.DataFrame,
    variants: pl.DataFrame,
    orders_per_customer: float,
    now_us: int,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Orders (customer and guest), their line items and refunds, money adding up."""
    n_stores = shops.height
    n_cust = customers.height
    # Customer orders: heavy-tailed counts (many one-off buyers, a few loyal regulars).
    mean = max(orders_per_customer, 0.0) * (1 - GUEST_ORDER_SHARE)
    lam = rng.gamma(0.8, mean / 0.8, size=n_cust) if mean > 0 else np.zeros(n_cust)
    c_idx = np.repeat(np.arange(n_cust), rng.poisson(lam))
    c_created = customers["created_us"].to_numpy()[c_idx]
    first_of = np.r_[True, c_idx[1:] != c_idx[:-1]] if len(c_idx) else np.zeros(0, dtype=bool)
    c_time = np.where(
        first_of,
        c_created + rng.integers(60_000_000, _US_PER_HOUR, size=len(c_idx)),
        c_created + (rng.random(len(c_idx)) * (now_us - c_created)).astype(np.int64),
    )
    # Guest orders: persons of the shop's home market, registered or not.
    n_guest = round(len(c_idx) * GUEST_ORDER_SHARE / (1 - GUEST_ORDER_SHARE))
    home = persons["home"].to_numpy()
    by_home = np.argsort(home, kind="stable")
    home_count = np.bincount(home, minlength=n_stores)
    home_start = np.r_[0, np.cumsum(home_count)[:-1]]
    g_store = rng.integers(0, n_stores, size=n_guest)
    g_pidx = by_home[home_start[g_store] + (rng.random(n_guest) * home_count[g_store]).astype(np.int64)]
    start_us = now_us - HISTORY_DAYS * _US_PER_DAY
    g_time = start_us + (rng.random(n_guest) ** 0.8 * (now_us - start_us - _US_PER_HOUR)).astype(np.int64)
    guests = _guests(rng, persons, shops, g_pidx, g_store)

    # One gather puts every order's contact details in time order.
    source = pl.concat(
        [
            customers.with_columns(customer_id=pl.col("id")).select(_SOURCE_COLUMNS),
            guests.select(_SOURCE_COLUMNS),
        ],
        how="vertical_relaxed",
    )
    t_all = np.r_[c_time, g_time]
    perm = np.argsort(t_all, kind="stable")
    t = t_all[perm]
    src = np.r_[c_idx, n_cust + np.arange(n_guest)][perm]
    store = np.r_[customers["store"].to_numpy()[c_idx], g_store][perm]
    n = len(t)
    order_ids = _ids(rng, "orders", n)
    number = _rank_within(store, n_stores) + 1001
    del t_all, perm, c_time, g_time, c_idx
    # Build in fixed-size slices so the per-row NumPy working set stays bounded (the
    # slice size is constant, so output does not depend on the machine).
    parts: list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]] = []
    li_after, r_after = _ID_BASE["order_line_items"], _ID_BASE["refunds"]
    for start in range(0, max(n, 1), ORDER_SLICE):
        stop = min(n, start + ORDER_SLICE)
        part = _order_slice(
            rng, source, src[start:stop], t[start:stop], store[start:stop], order_ids[start:stop],
            number[start:stop], shops, variants, now_us, li_after, r_after,
        )  # fmt: skip
        parts.append(part)
        if part[1].height:
            li_after = int(part[1]["id"][-1])
        if part[2].height:
            r_after = int(part[2]["id"][-1])
    return tuple(pl.concat([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def _order_slice(
    rng: np.random.Generator,
    source: pl.DataFrame,
    src: np.ndarray,
    t: np.ndarray,
    store: np.ndarray,
    order_ids: np.ndarray,
    number: np.ndarray,
    shops: pl.DataFrame,
    variants: pl.DataFrame,
    now_us: int,
    li_after: int,
    r_after: int,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Orders ``order_ids`` (contact details from ``source`` rows ``src``) with lines and refunds."""
    n_stores = shops.height
    n = len(t)
    orders = source[src]

    # Line items: 1–5 per order, variants of the order's shop, popular ones more often.
    n_lines = rng.choice(np.arange(1, 6), size=n, p=[0.45, 0.25, 0.15, 0.10, 0.05])
    li_order = np.repeat(np.arange(n), n_lines)
    v_pick = _pick_variants(rng, variants, store[li_order], n_stores, skew=2.0)
    qty = rng.choice([1, 2, 3, 4], size=len(li_order), p=[0.75, 0.17, 0.06, 0.02])
    unit = variants["price_cents"].to_numpy()[v_pick]
    pct = rng.choice([0, 0, 0, 0, 10, 15, 20], size=n)
    line_total = unit * qty
    line_disc = np.rint(line_total * pct[li_order] / 100).astype(np.int64)
    bounds = np.r_[0, np.cumsum(n_lines)[:-1]]
    subtotal = np.add.reduceat(line_total, bounds) if n else np.zeros(0, np.int64)
    discounts = np.add.reduceat(line_disc, bounds) if n else np.zeros(0, np.int64)
    tax_rate = np.array([names.TAX_RATES[c] for c in shops["country_code"].to_list()])[store]
    tax = np.rint((subtotal - discounts) * tax_rate).astype(np.int64)
    ship = np.where(subtotal - discounts >= 7500, 0, rng.choice([499, 799, 999], size=n))
    total = subtotal + tax + ship - discounts

    # Presentment: most pay in the shop currency; some in their own.
    currencies = list(names.USD_RATES)
    usd = np.array([names.USD_RATES[c] for c in currencies])
    shop_cur = np.array([currencies.index(c) for c in shops["currency_code"].to_list()])[store]
    pres_cur = np.where(rng.random(n) < 0.15, rng.integers(0, len(currencies), size=n), shop_cur)
    rate = usd[pres_cur] / usd[shop_cur]
    unit_p = np.rint(unit * rate[li_order]).astype(np.int64)
    line_total_p = unit_p * qty
    line_disc_p = np.rint(line_total_p * pct[li_order] / 100).astype(np.int64)
    subtotal_p = np.add.reduceat(line_total_p, bounds) if n else np.zeros(0, np.int64)
    discounts_p = np.add.reduceat(line_disc_p, bounds) if n else np.zeros(0, np.int64)
    tax_p = np.rint(tax * rate).astype(np.int64)
    ship_p = np.rint(ship * rate).astype(np.int64)
    total_p = subtotal_p + tax_p + ship_p - discounts_p

    # Lifecycle: test orders, cancellations, refunds, fulfilment, closing.
    age_days = (now_us - t) / _US_PER_DAY
    test = rng.random(n) < TEST_ORDER_SHARE
    u = rng.random(n)
    cancelled = ~test & (u < 0.03)
    cancel_refunded = cancelled & (rng.random(n) < 0.6)
    full_refund = ~test & ~cancelled & (u >= 0.03) & (u < 0.08) & (age_days > 2)
    partial = ~test & ~cancelled & (u >= 0.08) & (u < 0.13) & (age_days > 2) & (total >= 2)
    pending = ~cancelled & ~full_refund & ~partial & (age_days < 3) & (rng.random(n) < 0.3)
    refunded = np.where(cancel_refunded | full_refund, total, 0)
    part = np.clip(np.rint(total * (0.2 + 0.6 * rng.random(n))).astype(np.int64), 1, np.maximum(total - 1, 1))
    refunded = np.where(partial, part, refunded)
    refunded_p = np.where(
        refunded == total, total_p, np.minimum(np.rint(refunded * rate).astype(np.int64), total_p)
    )
    financial = np.zeros(n, dtype=np.int64)  # PAID
    financial[pending] = np.where(rng.random(int(pending.sum())) < 0.5, 1, 2)
    financial[partial] = 3
    financial[full_refund | cancel_refunded] = 4
    financial[cancelled & ~cancel_refunded] = 5
    fulfil = np.where(age_days > 7, np.where(rng.random(n) < 0.97, 0, 1), 2)
    fulfil = np.where((age_days <= 7) & (age_days > 2) & (rng.random(n) < 0.6), 0, fulfil)
    fulfil[cancelled] = 2
    cancelled_at = np.minimum(t + rng.integers(_US_PER_HOUR, 3 * _US_PER_DAY, size=n), now_us)
    refund_at = np.where(cancelled, cancelled_at, t + rng.integers(2, 40, size=n) * _US_PER_DAY)
    refund_at = np.maximum(np.minimum(refund_at, now_us - 1), t)
    closed_at = t + rng.integers(3, 25, size=n) * _US_PER_DAY
    closed = ((fulfil == 0) & (closed_at < now_us) & ~pending) | cancelled
    closed_at = np.where(cancelled, cancelled_at, closed_at)
    has_refund = refunded > 0
    updated = np.maximum.reduce(
        [
            t,
            np.where(closed, closed_at, t),
            np.where(has_refund, refund_at, t),
            np.where(cancelled, cancelled_at, t),
        ]
    )
    updated = np.minimum(updated + rng.integers(0, 600_000_000, size=n), now_us)
    reasons = rng.choice(6, size=n, p=[0.55, 0.1, 0.15, 0.1, 0.05, 0.05])
    tag_idx = np.where(test, 1, rng.choice([0, 0, 0, 2, 3, 4], size=n))
    source_name = rng.choice(len(_SOURCES), size=n, p=[0.82, 0.08, 0.04, 0.04, 0.02])
    shop_list = shops["shop"].to_list()
    shop_country = _pick(shops["country_code"].to_list(), store)

    money = {
        "subtotal_price": (subtotal, subtotal_p),
        "total_price": (total, total_p),
        "total_tax": (tax, tax_p),
        "total_discounts": (discounts, discounts_p),
        "total_shipping_price": (ship, ship_p),
        "total_refunded": (refunded, refunded_p),
    }
    orders = orders.with_columns(
        shop=_pick(shop_list, store),
        store=pl.Series(store),
        id=pl.Series(order_ids),
        name=pl.Series(number).cast(pl.String),
        test=pl.Series(test),
        currency_code=_pick(currencies, shop_cur),
        presentment_currency_code=_pick(currencies, pres_cur),
        financial_status=_pick(_FINANCIAL, financial),
        fulfillment_status=_pick(_FULFILMENT, fulfil),
        cancelled_at=_masked_ts(cancelled_at, ~cancelled),
        cancel_reason=_pick(_CANCEL_REASONS, np.where(cancelled, reasons, 6)),
        closed_at=_masked_ts(closed_at, ~closed),
        processed_at=_ts(t),
        created_at=_ts(t),
        updated_at=_ts(updated),
        tags=_pick(_ORDER_TAG_SETS, tag_idx, pl.List(pl.String)),
        source_name=_pick(_SOURCES, source_name),
        billing_first_name=pl.col("first_name"),
        billing_last_name=pl.col("last_name"),
        billing_address1=pl.col("address1"),
        billing_address2=pl.col("address2"),
        billing_city=pl.col("city"),
        billing_province=pl.col("province"),
        billing_zip=pl.col("zip"),
        billing_country_code=pl.col("country"),
        billing_phone=pl.when(pl.lit(pl.Series(rng.random(n) < 0.4))).then(
            pl.when(pl.col("country") == shop_country).then(pl.col("national")).otherwise(pl.col("e164"))
        ),
        **{name: _money_series(shop_amount) for name, (shop_amount, _) in money.items()},
        **{f"{name}_presentment": _money_series(pres) for name, (_, pres) in money.items()},
    ).with_columns(name="#" + pl.col("name"))
    # Keep only what the tables need (and the hidden person for the truth table).
    orders = orders.select(*model.ORDERS, "person_id")

    line_items = pl.DataFrame(
        {
            "shop": _pick(shop_list, store[li_order]),
            "id": _ids(rng, "order_line_items", len(li_order), after=li_after),
            "order_id": order_ids[li_order],
            "product_id": variants["product_id"].to_numpy()[v_pick],
            "variant_id": variants["id"].to_numpy()[v_pick],
            "title": variants["product_title"].gather(pl.Series(v_pick)),
            "sku": variants["sku"].gather(pl.Series(v_pick)),
            "quantity": qty,
            "original_unit_price": _money_series(unit),
            "original_unit_price_presentment": _money_series(unit_p),
            "discounted_total": _money_series(line_total - line_disc),
            "discounted_total_presentment": _money_series(line_total_p - line_disc_p),
        }
    )
    # Refunds: one per refunded order; a third of partial refunds arrive in two parts.
    r_idx = np.flatnonzero(has_refund)
    two = partial[r_idx] & (rng.random(len(r_idx)) < 0.33) & (refunded[r_idx] >= 2) & (refunded_p[r_idx] >= 2)
    first_amt = np.where(two, refunded[r_idx] // 2, refunded[r_idx])
    first_amt_p = np.where(two, refunded_p[r_idx] // 2, refunded_p[r_idx])
    rr = np.r_[r_idx, r_idx[two]]
    amt = np.r_[first_amt, refunded[r_idx][two] - first_amt[two]]
    amt_p = np.r_[first_amt_p, refunded_p[r_idx][two] - first_amt_p[two]]
    r_at = np.r_[refund_at[r_idx], np.minimum(refund_at[r_idx][two] + 5 * _US_PER_DAY, now_us)]
    sort = np.lexsort((r_at, rr))
    rr, amt, amt_p, r_at = rr[sort], amt[sort], amt_p[sort], r_at[sort]
    note = np.where(cancelled[rr], 4, rng.integers(0, 4, size=len(rr)))
    refunds = pl.DataFrame(
        {
            "shop": _pick(shop_list, store[rr]),
            "id": _ids(rng, "refunds", len(rr), after=r_after),
            "order_id": order_ids[rr],
            "created_at": _ts(r_at),
            "note": _pick(_REFUND_NOTES, note),
            "total_refunded": _money_series(amt),
            "total_refunded_presentment": _money_series(amt_p),
        }
    )
    return orders, line_items, refunds


# ---------------------------------------------------------------------------------------
# abandoned checkouts


def _checkouts(
    rng: np.random.Generator,
    persons: pl.DataFrame,
    customers: pl.DataFrame,
    shops: pl.DataFrame,
    variants: pl.DataFrame,
    now_us: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Abandoned checkouts (known customers and guests; some later completed) with lines."""
    n_stores = shops.height
    n_known = round(customers.height * CHECKOUTS_PER_CUSTOMER * 0.45)
    n_guest = round(customers.height * CHECKOUTS_PER_CUSTOMER * 0.55)
    k_idx = rng.integers(0, customers.height, size=n_known)
    home = persons["home"].to_numpy()
    g_pidx = rng.integers(0, persons.height, size=n_guest)
    g_store = home[g_pidx]
    guests = _guests(rng, persons, shops, g_pidx, g_store)
    source = pl.concat(
        [
            customers.with_columns(customer_id=pl.col("id")).select(_SOURCE_COLUMNS),
            guests.select(_SOURCE_COLUMNS),
        ],
        how="vertical_relaxed",
    )
    lo = np.r_[
        customers["created_us"].to_numpy()[k_idx], np.full(n_guest, now_us - HISTORY_DAYS * _US_PER_DAY)
    ]
    t_all = lo + (rng.random(len(lo)) ** 0.7 * np.maximum(now_us - lo - _US_PER_HOUR, 1)).astype(np.int64)
    perm = np.argsort(t_all, kind="stable")
    t = t_all[perm]
    store = np.r_[customers["store"].to_numpy()[k_idx], g_store][perm]
    checkouts = source[np.r_[k_idx, customers.height + np.arange(n_guest)][perm]]
    n = checkouts.height

    n_lines = rng.choice([1, 2, 3], size=n, p=[0.6, 0.3, 0.1])
    li = np.repeat(np.arange(n), n_lines)
    v_pick = _pick_variants(rng, variants, store[li], n_stores, skew=1.0)
    qty = rng.choice([1, 2, 3], size=len(li), p=[0.8, 0.15, 0.05])
    unit = variants["price_cents"].to_numpy()[v_pick]
    total = np.add.reduceat(unit * qty, np.r_[0, np.cumsum(n_lines)[:-1]]) if n else np.zeros(0, np.int64)
    ids = _ids(rng, "abandoned_checkouts", n)
    completed = rng.random(n) < 0.15
    completed_at = np.minimum(t + rng.integers(600_000_000, 48 * _US_PER_HOUR, size=n), now_us)
    updated = np.minimum(np.where(completed, completed_at, t + rng.integers(0, _US_PER_HOUR, size=n)), now_us)
    shop_list = shops["shop"].to_list()
    checkouts = checkouts.with_columns(
        shop=_pick(shop_list, store),
        id=pl.Series(ids),
        currency_code=_pick(shops["currency_code"].to_list(), store),
        total_price=_money_series(total),
        completed_at=_masked_ts(completed_at, ~completed),
        created_at=_ts(t),
        updated_at=_ts(updated),
        key=pl.Series(rng.integers(10**15, 10**16, size=n)),
    ).with_columns(
        abandoned_checkout_url=pl.concat_str(
            [
                pl.lit("https://"),
                pl.col("shop"),
                pl.lit("/checkouts/ac/"),
                pl.col("id").cast(pl.String),
                pl.lit("/recover?key="),
                pl.col("key").cast(pl.String),
            ]
        ),
        billing_first_name=pl.col("first_name"),
        billing_last_name=pl.col("last_name"),
        billing_address1=pl.col("address1"),
        billing_city=pl.col("city"),
        billing_zip=pl.col("zip"),
        billing_country_code=pl.col("country"),
    )
    lines = pl.DataFrame(
        {
            "shop": _pick(shop_list, store[li]),
            "id": _ids(rng, "checkout_line_items", len(li)),
            "checkout_id": ids[li],
            "product_id": variants["product_id"].to_numpy()[v_pick],
            "variant_id": variants["id"].to_numpy()[v_pick],
            "title": variants["product_title"].gather(pl.Series(v_pick)),
            "quantity": qty,
            "original_unit_price": _money_series(unit),
        }
    )
    return checkouts, lines


# ---------------------------------------------------------------------------------------
# metafields and engagement


def _metafields(rng: np.random.Generator, customers: pl.DataFrame, now_us: int) -> pl.DataFrame:
    """A few customers already carry merchant metafields in namespace ``custom``."""
    sel = np.flatnonzero(rng.random(customers.height) < METAFIELD_SHARE)
    keys = [
        ("birthday", "date"),
        ("loyalty_tier", "single_line_text_field"),
        ("shoe_size", "number_integer"),
        ("vip_since", "date_time"),
    ]
    per = rng.integers(1, 3, size=len(sel))
    owner = np.repeat(sel, per)
    # Keep (owner, key) unique: consecutive picks per owner step through the key list.
    k = (
        np.repeat(rng.integers(0, len(keys), size=len(sel)), per)
        + (np.arange(len(owner)) - np.repeat(np.cumsum(per) - per, per))
    ) % len(keys)
    created = customers["created_us"].to_numpy()[owner]
    made = created + (rng.random(len(owner)) * (now_us - created)).astype(np.int64)
    birth = rng.integers(1950, 2006, size=len(owner))
    vip = _ts(made).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame = pl.DataFrame(
        {
            "shop": customers["shop"].gather(pl.Series(owner)),
            "owner_id": customers["id"].to_numpy()[owner],
            "k": k,
            "birth": birth,
            "month": rng.integers(1, 13, size=len(owner)),
            "day": rng.integers(1, 29, size=len(owner)),
            "tier": _pick(["bronze", "silver", "gold", "platinum"], rng.integers(0, 4, size=len(owner))),
            "size": rng.integers(36, 47, size=len(owner)),
            "vip": vip,
            "created_at": _ts(made),
        }
    ).sort("owner_id", "k")
    return frame.with_columns(
        id=pl.Series(_ids(rng, "metafields", frame.height)),
        owner_type=pl.lit("Customer"),
        namespace=pl.lit("custom"),
        key=_pick([x[0] for x in keys], frame["k"].to_numpy()),
        type=_pick([x[1] for x in keys], frame["k"].to_numpy()),
        value=pl.when(pl.col("k") == 0)
        .then(
            pl.concat_str(
                [
                    pl.col("birth").cast(pl.String),
                    pl.lit("-"),
                    pl.col("month").cast(pl.String).str.zfill(2),
                    pl.lit("-"),
                    pl.col("day").cast(pl.String).str.zfill(2),
                ]
            )
        )
        .when(pl.col("k") == 1)
        .then(pl.col("tier"))
        .when(pl.col("k") == 2)
        .then(pl.col("size").cast(pl.String))
        .otherwise(pl.col("vip")),
        updated_at=pl.col("created_at"),
    )


def _engagement(rng: np.random.Generator, customers: pl.DataFrame, now_us: int) -> pl.DataFrame:
    """ESP/SMS events keyed by the email or phone of real customers, plus a few strangers."""
    n_c = customers.height
    # Email: a slice of customers with an email receive campaigns.
    mail = customers.filter(pl.col("email").is_not_null()).sample(
        fraction=0.3, seed=int(rng.integers(0, 2**31))
    )
    m = mail.height
    sends = rng.integers(1, 4, size=m)
    idx = np.repeat(np.arange(m), sends)
    sent_at = now_us - (rng.random(len(idx)) * 120 * _US_PER_DAY).astype(np.int64)
    campaign = _pick([f"campaign-{i:03d}" for i in range(40)], rng.integers(0, 40, size=len(idx)))
    delivered = rng.random(len(idx)) < 0.95
    opened = delivered & (rng.random(len(idx)) < 0.4)
    clicked = opened & (rng.random(len(idx)) < 0.25)
    unsub = delivered & (rng.random(len(idx)) < 0.02)
    parts = []
    # ESPs hand us the address in their own normalisation (lower-cased, trimmed).
    email = mail["email"].str.strip_chars().str.to_lowercase().gather(pl.Series(idx))
    shop = mail["shop"].gather(pl.Series(idx))
    for kind, mask, lag in [
        ("email_sent", np.ones(len(idx), bool), 0),
        ("email_delivered", delivered, 60),
        ("email_open", opened, 3600),
        ("email_click", clicked, 3700),
        ("email_unsubscribe", unsub, 4000),
    ]:
        sel = pl.Series(np.flatnonzero(mask))
        parts.append(
            pl.DataFrame(
                {
                    "occurred_at": _ts(sent_at[mask] + lag * 1_000_000),
                    "email": email.gather(sel),
                    "shop": shop.gather(sel),
                    "campaign": campaign.gather(sel),
                }
            ).with_columns(type=pl.lit(kind), phone=pl.lit(None, pl.String), body=pl.lit(None, pl.String))
        )
    # SMS: customers with a phone; inbound replies carry keywords (STOP, START, HELP, …).
    sms = customers.filter(pl.col("phone").is_not_null()).sample(
        fraction=0.2, seed=int(rng.integers(0, 2**31))
    )
    s = sms.height
    s_at = now_us - (rng.random(s) * 90 * _US_PER_DAY).astype(np.int64)
    s_campaign = _pick([f"sms-{i:02d}" for i in range(10)], rng.integers(0, 10, size=s))
    click = rng.random(s) < 0.15
    inbound = rng.random(s) < 0.25
    bodies = _pick(names.SMS_BODIES, rng.integers(0, len(names.SMS_BODIES), size=s))
    for kind, mask, lag in [
        ("sms_sent", np.ones(s, bool), 0),
        ("sms_click", click, 900),
        ("sms_inbound", inbound, 1200),
    ]:
        sel = pl.Series(np.flatnonzero(mask))
        parts.append(
            pl.DataFrame(
                {
                    "occurred_at": _ts(s_at[mask] + lag * 1_000_000),
                    "email": pl.Series([None] * int(mask.sum()), dtype=pl.String),
                    "phone": sms["phone"].gather(sel),
                    "shop": sms["shop"].gather(sel),
                    "campaign": s_campaign.gather(sel)
                    if kind != "sms_inbound"
                    else pl.Series([None] * int(mask.sum()), dtype=pl.String),
                    "body": bodies.gather(sel)
                    if kind == "sms_inbound"
                    else pl.Series([None] * int(mask.sum()), dtype=pl.String),
                }
            ).with_columns(type=pl.lit(kind))
        )
    # Strangers: addresses and numbers no shop knows.
    k = max(3, n_c // 200)
    parts.append(
        pl.DataFrame(
            {
                "occurred_at": _ts(now_us - (rng.random(k) * 30 * _US_PER_DAY).astype(np.int64)),
                "email": pl.Series([f"unknown{i}@example.net" for i in range(k)], dtype=pl.String),
                "phone": pl.Series([None] * k, dtype=pl.String),
                "shop": pl.Series([None] * k, dtype=pl.String),
                "campaign": pl.Series(["campaign-000"] * k, dtype=pl.String),
                "body": pl.Series([None] * k, dtype=pl.String),
            }
        ).with_columns(type=pl.lit("email_open"))
    )
    parts.append(
        pl.DataFrame(
            {
                "occurred_at": _ts(now_us - (rng.random(k) * 30 * _US_PER_DAY).astype(np.int64)),
                "email": pl.Series([None] * k, dtype=pl.String),
                "phone": pl.Series([f"+1202555{i % 10000:04d}" for i in range(k)], dtype=pl.String),
                "shop": pl.Series([None] * k, dtype=pl.String),
                "campaign": pl.Series([None] * k, dtype=pl.String),
                "body": _pick(names.SMS_BODIES, rng.integers(0, len(names.SMS_BODIES), size=k)),
            }
        ).with_columns(type=pl.lit("sms_inbound"))
    )
    cols = list(model.ENGAGEMENT_EVENTS)[1:]
    # Stable sort: ties keep their (deterministic) construction order.
    events = pl.concat([p.select(cols) for p in parts]).sort("occurred_at", maintain_order=True)
    return events.with_columns(
        event_id=pl.concat_str([pl.lit("evt_"), (pl.int_range(pl.len()) + 1).cast(pl.String).str.zfill(9)])
    )


# ---------------------------------------------------------------------------------------
# public API


def generate_world(
    *,
    stores: int = 2,
    customers: int = 1000,
    seed: int = 0,
    orders_per_customer: float = 2.0,
    now: datetime | None = None,
    plans: Sequence[str] | None = None,
) -> dict[str, pl.DataFrame]:
    """Generate a world of ``stores`` shops with ~``customers`` customer records each.

    Returns every table of ``devstore.model`` (conformed to its declared schema), keyed by
    table name, including the hidden ``truth`` and ``engagement_events``. The same
    arguments always give identical frames. ``now`` defaults to ``DEFAULT_NOW`` (fixed, so
    worlds are reproducible); history spans ~3 years before it.
    """
    if stores < 1:
        raise ValueError("stores must be at least 1")
    if customers < 1:
        raise ValueError("customers must be at least 1")
    now = now or DEFAULT_NOW
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now_us = int(now.timestamp() * 1_000_000)
    rng = np.random.default_rng(seed)
    shops = _shops(stores, plans, now)

    # Each person's records: the home store, a second store (overlap) and, only where a
    # third store exists, a third; counting the third for two stores came out 4 % short.
    third = THIRD_STORE_SHARE if stores > 2 else 0.0
    extra = OVERLAP_SHARE * (1 + third) if stores > 1 else 0.0
    records_per_person = (1 - GUEST_ONLY_SHARE) * (1 + extra) * (1 + DUPLICATE_ACCOUNT_SHARE)
    per_store = np.full(stores, max(1, round(customers / records_per_person)), dtype=np.int64)
    persons = _persons(rng, shops, per_store)
    members = _memberships(rng, persons, stores)
    recs = _customers(rng, persons, shops, members, now_us)
    addresses, default_id = _addresses(rng, recs)
    # Downstream steps need the customer columns plus a few helpers; drop the rest.
    recs = recs.with_columns(default_address_id=default_id).select(
        *model.CUSTOMERS,
        *(c for c in _SOURCE_COLUMNS if c not in model.CUSTOMERS and c != "customer_id"),
        "store",
        "created_us",
    )
    products, variants, collections, collection_products = _catalogue(rng, shops, customers, now_us)
    orders, line_items, refunds = _orders(rng, persons, recs, shops, variants, orders_per_customer, now_us)
    checkouts, checkout_lines = _checkouts(rng, persons, recs, shops, variants, now_us)
    del persons, members  # the largest intermediates; free them before the last tables
    metafields = _metafields(rng, recs, now_us)
    events = _engagement(rng, recs, now_us)
    truth = pl.concat(
        [
            recs.select(record_type=pl.lit("customer"), shop="shop", record_id="id", person_id="person_id"),
            orders.select(record_type=pl.lit("order"), shop="shop", record_id="id", person_id="person_id"),
            checkouts.select(
                record_type=pl.lit("checkout"), shop="shop", record_id="id", person_id="person_id"
            ),
        ]
    )
    tables = {
        "shops": shops,
        "customers": recs.sort("id"),
        "customer_addresses": addresses,
        "orders": orders,
        "order_line_items": line_items,
        "refunds": refunds,
        "products": products,
        "variants": variants,
        "collections": collections,
        "collection_products": collection_products,
        "abandoned_checkouts": checkouts,
        "checkout_line_items": checkout_lines,
        "metafields": metafields,
        "truth": truth,
        "engagement_events": events,
    }
    return {name: model.conform(name, frame) for name, frame in tables.items()}


def write_truth(tables: dict[str, pl.DataFrame], path: str | Path) -> Path:
    """Write the ground truth (record_type, shop, record_id, person_id) as CSV or Parquet.

    The format follows the extension: ``.parquet`` → Parquet, anything else → CSV.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    truth = model.conform("truth", tables["truth"])
    if path.suffix == ".parquet":
        truth.write_parquet(path)
    else:
        truth.write_csv(path)
    return path


def write_engagement(tables: dict[str, pl.DataFrame], path: str | Path) -> Path:
    """Write engagement events as JSONL (``ENGAGEMENT_EVENTS`` columns, ISO 8601 UTC times)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    events = model.conform("engagement_events", tables["engagement_events"]).with_columns(
        occurred_at=pl.col("occurred_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
    )
    events.write_ndjson(path)
    return path


def person_summary(tables: dict[str, pl.DataFrame]) -> dict[str, int]:
    """Counts that describe a world's identity difficulty (for benches and debugging)."""
    truth = tables["truth"]
    cust = truth.filter(pl.col("record_type") == "customer")
    return {
        "persons": truth["person_id"].n_unique(),
        "customer_records": cust.height,
        "persons_with_customer_records": cust["person_id"].n_unique(),
        "persons_in_several_shops": cust.group_by("person_id")
        .agg(pl.col("shop").n_unique())
        .filter(pl.col("shop") > 1)
        .height,
    }


__all__ = ["DEFAULT_NOW", "generate_world", "person_summary", "write_engagement", "write_truth"]
