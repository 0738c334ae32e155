"""Linking: which pairs of records are the same person.

Two stages. Deterministic: records sharing a normalised email or an E.164 phone link,
unless the key is a hub (seen with many different first names) or the first names on it
conflict (a household sharing a phone is several people), or the key is on more records than
one shopper leaves (an office inbox). Probabilistic: candidate pairs
from blocking rules are scored Fellegi–Sunter style (sum of log2(m/u) over named comparison
levels, settings in ``settings.py``); pairs above the match weight link, pairs in the grey
zone go to review.

Records are addressed by ``_rid`` (their row number, UInt32). String similarity
(Jaro–Winkler) runs in an in-memory DuckDB over Arrow, which is vectorised and uses all
cores; nothing touches disk.
"""

from __future__ import annotations

import math

import duckdb
import polars as pl

from transforms.identity.settings import Comparison, LinkageSettings

EDGE_SCHEMA: dict[str, pl.DataType] = {
    "l": pl.UInt32,
    "r": pl.UInt32,
    "rule": pl.String,
    "weight": pl.Float64,
}
REVIEW_SCHEMA: dict[str, pl.DataType] = {
    "l": pl.UInt32,
    "r": pl.UInt32,
    "reason": pl.String,
    "weight": pl.Float64,
    "explanation": pl.String,
}
DETERMINISTIC_KEYS: dict[str, str] = {"email_norm": "email", "phone_e164": "phone"}

# level codes as DuckDB CASE expressions over a pair joined as a (left) and b (right);
# the first true branch wins, so levels go from most to least specific.
_LEVEL_SQL: dict[str, str] = {
    "first_name": """CASE
        WHEN a.first_token IS NULL OR b.first_token IS NULL THEN 'null'
        WHEN a.first_token = b.first_token THEN 'exact'
        WHEN list_has_any(a.first_keys, b.first_keys) THEN 'nickname'
        WHEN length(a.first_token) >= 4
             AND damerau_levenshtein(a.first_token, b.first_token) <= {first_name_max_edits} THEN 'fuzzy'
        WHEN (length(a.first_token) = 1 OR length(b.first_token) = 1)
             AND a.first_token[1] = b.first_token[1] THEN 'initial'
        ELSE 'different' END""",
    "last_name": """CASE
        WHEN a.last_name_norm IS NULL OR b.last_name_norm IS NULL THEN 'null'
        WHEN a.last_name_norm = b.last_name_norm THEN 'exact'
        WHEN jaro_winkler_similarity(a.last_name_norm, b.last_name_norm) >= {last_name_fuzzy_threshold}
             OR damerau_levenshtein(a.last_name_norm, b.last_name_norm) <= 1
            THEN 'fuzzy'
        ELSE 'different' END""",
    "email": """CASE
        WHEN a.email_norm IS NULL OR b.email_norm IS NULL THEN 'null'
        WHEN a.email_norm = b.email_norm THEN 'exact'
        WHEN a.email_local = b.email_local THEN 'same_local_part'
        WHEN a.email_digits = b.email_digits AND length(a.email_local) >= 6
             AND damerau_levenshtein(a.email_local, b.email_local) <= {email_max_edits}
            THEN 'fuzzy_local_part'
        WHEN a.email_digits = b.email_digits AND length(a.email_digits) >= 3 THEN 'same_number'
        ELSE 'different' END""",
    "phone": """CASE
        WHEN a.phone_e164 IS NULL OR b.phone_e164 IS NULL THEN 'null'
        WHEN a.phone_e164 = b.phone_e164 THEN 'exact'
        WHEN right(a.phone_e164, 7) = right(b.phone_e164, 7) THEN 'same_last_7'
        ELSE 'different' END""",
    "location": """CASE
        WHEN (a.address_norm IS NULL OR b.address_norm IS NULL) AND (a.postcode IS NULL OR b.postcode IS NULL)
             AND (a.city_norm IS NULL OR b.city_norm IS NULL) THEN 'null'
        WHEN a.address_norm = b.address_norm AND (a.postcode = b.postcode OR a.postcode IS NULL OR b.postcode IS NULL)
            THEN 'same_address'
        WHEN a.postcode = b.postcode AND (a.house_number = b.house_number
             OR jaro_winkler_similarity(a.address_norm, b.address_norm) >= {street_fuzzy_threshold})
            THEN 'similar_address'
        WHEN a.postcode = b.postcode THEN 'same_postcode'
        WHEN a.city_norm = b.city_norm THEN 'same_city'
        ELSE 'different' END""",
}

COMPARE_COLUMNS: tuple[str, ...] = (
    "_rid",
    "first_token",
    "first_keys",
    "last_name_norm",
    "email_norm",
    "email_local",
    "phone_e164",
    "address_norm",
    "house_number",
    "postcode",
    "city_norm",
    "address_key",
    "email_digits",
)


def _duckdb() -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB connection (no file, no shared state between calls)."""
    return duckdb.connect(":memory:")


def edit_distance(left: pl.Series, right: pl.Series) -> pl.Series:
    """Damerau–Levenshtein distance of two equally long string series (null where either is null)."""
    frame = pl.DataFrame({"a": left.cast(pl.String), "b": right.cast(pl.String)})
    con = _duckdb()
    try:
        con.register("frame", frame.to_arrow())
        out = con.sql("SELECT damerau_levenshtein(a, b) AS d FROM frame").pl()
    finally:
        con.close()
    return out["d"].cast(pl.Int64)


def first_names_compatible(frame: pl.DataFrame, settings: LinkageSettings, suffix: str = "_r") -> pl.Series:
    """Whether each row's two first names may belong to one person (same, nickname, typo or initial).

    Expects ``first_token``/``first_keys`` and their ``suffix`` twins. Null on either side
    counts as compatible: a missing name is no evidence of a different person.
    """
    a, b = pl.col("first_token"), pl.col(f"first_token{suffix}")
    dist = edit_distance(frame["first_token"], frame[f"first_token{suffix}"])
    checks = frame.with_columns(_dist=dist).select(
        a.is_null()
        | b.is_null()
        | (a == b)
        | (pl.col("first_keys").list.set_intersection(pl.col(f"first_keys{suffix}")).list.len() > 0)
        | ((pl.col("_dist") <= settings.first_name_max_edits) & (a.str.len_chars() >= 4))
        | (((a.str.len_chars() == 1) | (b.str.len_chars() == 1)) & (a.str.slice(0, 1) == b.str.slice(0, 1)))
    )
    return checks.to_series().fill_null(True)


def deterministic_links(
    records: pl.DataFrame, settings: LinkageSettings
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Links from shared normalised email and E.164 phone, plus the pairs they leave for review.

    Returns ``(edges, review, hubs)``. A key seen with more than ``hub_max_names`` distinct
    first names, or on more than ``hub_max_records`` records, is a hub and links nothing
    (``hubs`` says which cap it hit in ``reason``); its records may still link on other
    evidence in the probabilistic stage. Within a key, records are grouped by canonical
    first name; groups whose names are compatible link, conflicting groups do not (an email
    conflict goes to review, a phone conflict is a household and is simply not linked).
    Records without a first name join the key's names only when those do not conflict.
    """
    edges: list[pl.DataFrame] = []
    reviews: list[pl.DataFrame] = []
    hubs: list[pl.DataFrame] = []
    for key, rule in DETERMINISTIC_KEYS.items():
        keyed = records.filter(pl.col(key).is_not_null()).select(
            "_rid", pl.col(key).alias("key"), "first_canon", "first_token", "first_keys"
        )
        stats = keyed.group_by("key").agg(n=pl.len(), n_names=pl.col("first_canon").drop_nulls().n_unique())
        hub = stats.filter(
            (pl.col("n_names") > settings.hub_max_names) | (pl.col("n") > settings.hub_max_records)
        ).with_columns(
            reason=pl.when(pl.col("n_names") > settings.hub_max_names)
            .then(pl.lit(f"more than {settings.hub_max_names} first names"))
            .otherwise(pl.lit(f"more than {settings.hub_max_records} records"))
        )
        hubs.append(hub.select(pl.lit(rule).alias("kind"), "key", "n", "n_names", "reason"))
        keyed = keyed.join(hub.select("key"), on="key", how="anti")
        # keys on one record link nothing; dropping them early keeps the joins small
        keyed = keyed.join(stats.filter(pl.col("n") > 1).select("key"), on="key", how="semi")
        variants = keyed.group_by("key", "first_canon").agg(
            rep=pl.col("_rid").min(),
            first_token=pl.col("first_token").first(),
            first_keys=pl.col("first_keys").first(),
        )
        star = keyed.join(
            variants.select("key", "first_canon", "rep"), on=["key", "first_canon"], nulls_equal=True
        )
        edges.append(
            star.filter(pl.col("rep") != pl.col("_rid")).select(
                pl.col("rep").alias("l"),
                pl.col("_rid").alias("r"),
                pl.lit(rule).alias("rule"),
                pl.lit(None, pl.Float64).alias("weight"),
            )
        )
        named = variants.filter(pl.col("first_canon").is_not_null())
        pairs = named.join(named, on="key", suffix="_r").filter(
            pl.col("first_canon") < pl.col("first_canon_r")
        )
        if pairs.height:
            pairs = pairs.with_columns(ok=first_names_compatible(pairs, settings))
        else:
            pairs = pairs.with_columns(ok=pl.lit(True))
        # where a key carries conflicting names, an initial could be either person: no link
        conflicted = pairs.filter(~pl.col("ok")).select("key").unique()
        initials = (pl.col("first_token").str.len_chars() == 1) | (
            pl.col("first_token_r").str.len_chars() == 1
        )
        pairs = pairs.with_columns(
            ok=pl.col("ok") & ~(initials & pl.col("key").is_in(conflicted["key"].implode()))
        )
        edges.append(
            pairs.filter("ok").select(
                pl.col("rep").alias("l"),
                pl.col("rep_r").alias("r"),
                pl.lit(rule).alias("rule"),
                pl.lit(None, pl.Float64).alias("weight"),
            )
        )
        conflicts = pairs.filter(~pl.col("ok"))
        if rule == "email":
            reviews.append(
                conflicts.select(
                    pl.col("rep").alias("l"),
                    pl.col("rep_r").alias("r"),
                    pl.lit("same email, different first names").alias("reason"),
                    pl.lit(None, pl.Float64).alias("weight"),
                    pl.lit(None, pl.String).alias("explanation"),
                )
            )
        conflicted_keys = conflicts.select("key").unique()
        unnamed = variants.filter(pl.col("first_canon").is_null()).select(
            "key", pl.col("rep").alias("null_rep")
        )
        first_named = named.group_by("key").agg(rep=pl.col("rep").min())
        clear = unnamed.join(conflicted_keys, on="key", how="anti").join(first_named, on="key")
        edges.append(
            clear.select(
                pl.col("rep").alias("l"),
                pl.col("null_rep").alias("r"),
                pl.lit(rule).alias("rule"),
                pl.lit(None, pl.Float64).alias("weight"),
            )
        )
        unclear = unnamed.join(conflicted_keys, on="key", how="semi").join(
            named.select("key", "rep"), on="key"
        )
        reviews.append(
            unclear.select(
                pl.col("null_rep").alias("l"),
                pl.col("rep").alias("r"),
                pl.lit(f"unnamed record shares {rule} with different people").alias("reason"),
                pl.lit(None, pl.Float64).alias("weight"),
                pl.lit(None, pl.String).alias("explanation"),
            )
        )
    edge_frame = pl.concat([e.cast(EDGE_SCHEMA) for e in edges])
    review_frame = pl.concat([r.cast(REVIEW_SCHEMA) for r in reviews])
    return edge_frame, review_frame, pl.concat(hubs)


def candidate_pairs(
    records: pl.DataFrame, settings: LinkageSettings, components: pl.Series | None = None
) -> pl.DataFrame:
    """Unique ``(l, r)`` pairs (l < r) sharing at least one blocking key; oversized blocks skipped.

    With ``components`` (a label per record), pairs inside one component are left out:
    they are linked already. Output columns ``l``, ``r`` and, with components, ``cl``/``cr``.
    """
    labels = components if components is not None else pl.Series("_c", [0] * records.height, dtype=pl.UInt32)
    base = records.select("_rid").with_columns(_c=labels.cast(pl.UInt32))
    parts: list[pl.DataFrame] = []
    for cols in settings.blocking_rules:
        if any(c not in records.columns for c in cols):
            continue
        sub = (
            records.select("_rid", *cols)
            .with_columns(_c=base["_c"])
            .drop_nulls(list(cols))
            .filter(pl.len().over(list(cols)).is_between(2, settings.max_block_size))
        )
        if sub.height == 0:
            continue
        joined = sub.join(sub, on=list(cols), suffix="_r").filter(pl.col("_rid") < pl.col("_rid_r"))
        if components is not None:
            joined = joined.filter(pl.col("_c") != pl.col("_c_r"))
        # one UInt64 per pair makes the union's de-duplication a single-column hash
        parts.append(joined.select((pl.col("_rid").cast(pl.UInt64) * 2**32 + pl.col("_rid_r")).alias("pair")))
    if not parts:
        pairs = pl.DataFrame(schema={"l": pl.UInt32, "r": pl.UInt32})
    else:
        unique = pl.concat(parts).unique()
        pairs = unique.select(
            (pl.col("pair") // 2**32).cast(pl.UInt32).alias("l"),
            (pl.col("pair") % 2**32).cast(pl.UInt32).alias("r"),
        )
    if components is None:
        return pairs
    lookup = base["_c"]
    return pairs.with_columns(cl=lookup.gather(pairs["l"]), cr=lookup.gather(pairs["r"]))


def _level_case(comp: Comparison, settings: LinkageSettings) -> str:
    """The comparison's CASE with level names replaced by their index (-1 for null)."""
    sql = _LEVEL_SQL[comp.name].format(**settings.__dict__)
    sql = sql.replace("'null'", "-1")
    for i, lvl in enumerate(comp.levels):
        sql = sql.replace(f"'{lvl.name}'", str(i))
    return sql


def _weight_case(comp: Comparison, n: int, use_tf: bool) -> str:
    """SQL turning the comparison's level index into log2(m/u), term-frequency aware."""
    branches = []
    for i, lvl in enumerate(comp.levels):
        if lvl.tf and use_tf:
            value = f"log2({lvl.m} / coalesce(s_{lvl.tf}, {1.0 / n}))"
        else:
            u = lvl.u / n if lvl.per_record else lvl.u
            value = repr(math.log2(lvl.m / u))
        branches.append(f"WHEN {i} THEN {value}")
    return f"CASE {comp.name} {' '.join(branches)} ELSE 0.0 END"


def level_names(comp: Comparison) -> dict[int, str]:
    """Level index -> level name for a comparison's code column (-1 is ``null``)."""
    return {-1: "null"} | {i: lvl.name for i, lvl in enumerate(comp.levels)}


def score_pairs(records: pl.DataFrame, pairs: pl.DataFrame, settings: LinkageSettings) -> pl.DataFrame:
    """Compare and score each pair: a level code per comparison, ``w_<comparison>`` and ``weight``.

    Level codes index the comparison's levels in the settings (``level_names`` decodes
    them; -1 is null and weighs 0). ``weight`` is the sum of log2(m/u). Levels with
    ``tf`` take u from the share of records holding the left record's value;
    ``per_record`` levels divide u by the number of records.
    """
    use_tf = records.height >= settings.tf_min_records
    n = effective_records(records.height, settings)
    tf_cols = sorted({lvl.tf for c in settings.comparisons for lvl in c.levels if lvl.tf})
    rec = records.select(
        *COMPARE_COLUMNS,
        *[(pl.len().over(col) / n).alias(f"s_{col}") for col in tf_cols],
    )
    codes = ", ".join(f"({_level_case(c, settings)})::TINYINT AS {c.name}" for c in settings.comparisons)
    shares = ", ".join(f"a.s_{col} AS s_{col}" for col in tf_cols)
    weights = ", ".join(f"{_weight_case(c, n, use_tf)} AS w_{c.name}" for c in settings.comparisons)
    total = " + ".join(f"w_{c.name}" for c in settings.comparisons)
    sql = f"""
        WITH coded AS (
            SELECT p.l, p.r, {codes}, {shares}
            FROM pairs p JOIN rec a ON a._rid = p.l JOIN rec b ON b._rid = p.r
        ), weighted AS (
            SELECT l, r, {", ".join(c.name for c in settings.comparisons)}, {weights} FROM coded
        )
        SELECT *, {total} AS weight FROM weighted
    """
    con = _duckdb()
    try:
        con.register("pairs", pairs.select("l", "r").to_arrow())
        con.register("rec", rec.to_arrow())
        out = con.sql(sql).pl()
    finally:
        con.close()
    return out.with_columns(pl.col("l", "r").cast(pl.UInt32))


def explanation(settings: LinkageSettings) -> pl.Expr:
    """A scored pair's levels and their weights as text a reviewer can read.

    e.g. ``first_name=nickname +4.9, last_name=exact +8.8, email=null 0.0, ...``
    """
    parts: list[pl.Expr] = []
    for comp in settings.comparisons:
        name = pl.col(comp.name).replace_strict(level_names(comp), return_dtype=pl.String)
        tenths = (pl.col(f"w_{comp.name}") * 10).round().cast(pl.Int64)
        sign = pl.when(tenths > 0).then(pl.lit("+")).when(tenths < 0).then(pl.lit("-")).otherwise(pl.lit(""))
        number = pl.concat_str(
            [(tenths.abs() // 10).cast(pl.String), pl.lit("."), (tenths.abs() % 10).cast(pl.String)]
        )
        parts.append(pl.concat_str([pl.lit(f"{comp.name}="), name, pl.lit(" "), sign, number]))
    return pl.concat_str(parts, separator=", ").alias("explanation")


def effective_records(n: int, settings: LinkageSettings) -> int:
    """The population the weights are calibrated for: the records themselves once there are
    enough for term frequencies, else the population the fixed u values describe."""
    return n if n >= settings.tf_min_records else settings.fixed_u_population


def thresholds(n: int, settings: LinkageSettings) -> tuple[float, float]:
    """(match weight, review weight) for a run over ``n`` records: log2(n) plus the margins."""
    base = math.log2(effective_records(n, settings))
    return base + settings.match_margin, base + settings.review_margin


def probabilistic_links(
    records: pl.DataFrame, components: pl.Series, settings: LinkageSettings
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Scored links between records of different deterministic components.

    Returns ``(edges, review, scored)``. A pair links when its weight reaches
    ``match_weight`` and its first names do not conflict; a pair in the grey zone goes to
    review. When one component links to several components that do not link each other
    (two different people it could be), none of those links is made; they go to review.
    """
    pairs = candidate_pairs(records, settings, components)
    scored = score_pairs(records, pairs, settings)
    scored = scored.join(pairs, on=["l", "r"])
    match_weight, review_weight = thresholds(records.height, settings)
    different = settings.comparison("first_name").levels.index(
        settings.comparison("first_name").level("different")
    )
    conflict = pl.col("first_name") == different
    accept = (pl.col("weight") >= match_weight) & ~conflict
    grey = (pl.col("weight") >= review_weight) & ~conflict & ~accept
    accepted = scored.filter(accept)
    review_parts = [
        scored.filter(grey).select(
            "l", "r", pl.lit("match weight in the grey zone").alias("reason"), "weight", explanation(settings)
        )
    ]

    # component-level view: which components each component would join
    cpairs = accepted.group_by("cl", "cr").agg(pl.col("weight").max())
    both = pl.concat(
        [
            cpairs.select(pl.col("cl").alias("c"), pl.col("cr").alias("d")),
            cpairs.select(pl.col("cr").alias("c"), pl.col("cl").alias("d")),
        ]
    ).unique()
    multi = both.join(both.group_by("c").agg(n=pl.len()).filter(pl.col("n") >= 2).select("c"), on="c")
    ambiguous_c = pl.Series("c", [], dtype=components.dtype)
    if multi.height:
        options = multi.join(multi, on="c", suffix="_2").filter(pl.col("d") < pl.col("d_2"))
        # two candidates that could be one person (their own best pair reaches review)
        # are no reason for doubt; strangers or conflicting first names are
        compatible = scored.filter((pl.col("weight") >= review_weight) & ~conflict).select("cl", "cr")
        compatible = pl.concat(
            [compatible, compatible.select(pl.col("cr").alias("cl"), pl.col("cl").alias("cr"))]
        ).unique()
        unlinked = options.join(compatible, left_on=["d", "d_2"], right_on=["cl", "cr"], how="anti")
        ambiguous_c = unlinked["c"].unique()
    if ambiguous_c.len():
        is_amb = pl.col("cl").is_in(ambiguous_c.implode()) | pl.col("cr").is_in(ambiguous_c.implode())
        review_parts.append(
            accepted.filter(is_amb).select(
                "l",
                "r",
                pl.lit("several candidate contacts").alias("reason"),
                "weight",
                explanation(settings),
            )
        )
        accepted = accepted.filter(~is_amb)
    edges = accepted.select("l", "r", pl.lit("probabilistic").alias("rule"), "weight").cast(EDGE_SCHEMA)
    review = pl.concat([r.cast(REVIEW_SCHEMA) for r in review_parts])
    return edges, review, scored
