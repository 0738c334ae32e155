"""The golden contact record (``core.contacts``) under declarative field ownership.

Every contact field has one owner, listed in ``transforms/data/field_ownership.csv``
(DESIGN.md decision 10), and values from any other side are refused and counted:

* ``integration``: commerce metrics, RFM, CLV and consent, computed by shopsync. A CRM
  edit of such a field is a blocked overwrite (source ``crm``).
* ``crm``: ``lifecycle_stage``, ``lead_status``, ``owner``, ``notes``, ``custom_segments``.
  The value is the latest CRM edit, else what the contact already had. Shopify's own values
  for the same ideas (the customer note → ``notes``, customer tags → ``custom_segments``)
  are never written; each one that differs is a blocked overwrite (source ``shopify``).
* ``shopify_on_create``: name, email, phone and address come from the contact's Shopify
  profile (its most recently updated customer record) when the contact is first created,
  or while the field is still empty. Afterwards a different Shopify value is a blocked
  overwrite (source ``shopify``); a CRM edit corrects the field.

CRM edits arrive as ``contact_id, field, value, edited_at`` rows (``crm.field_edits``,
loaded from ``landing/_crm/field_edits/*.jsonl``; see ``pipelines/engagement_load.py``).
Pure Polars: no I/O beyond the packaged ownership table, no clock.
"""

from __future__ import annotations

import functools
from pathlib import Path

import polars as pl

OWNERS: tuple[str, ...] = ("integration", "crm", "shopify_on_create")
OWNERSHIP_PATH = Path(__file__).parent / "data" / "field_ownership.csv"
OWNERSHIP_SCHEMA: dict[str, pl.DataType] = {"field": pl.String, "owner": pl.String, "description": pl.String}

# Where each integration-owned field comes from: (frame, column).
INTEGRATION_SOURCES: dict[str, tuple[str, str]] = {
    "order_count": ("metrics", "order_count"),
    "total_spent": ("metrics", "total_spent"),
    "average_order_value": ("metrics", "average_order_value"),
    "last_order_at": ("metrics", "last_order_at"),
    "churn_risk": ("metrics", "churn_risk"),
    "clv_tier": ("metrics", "clv_tier"),
    "rfm_segment": ("metrics", "segment"),
    "clv_12m": ("metrics", "clv_12m"),
    "email_consent": ("consent", "email"),
    "sms_consent": ("consent", "sms"),
}
# What Shopify proposes for a field: a column of the contact's Shopify profile.
SHOPIFY_PROPOSALS: dict[str, str] = {
    "first_name": "first_name",
    "last_name": "last_name",
    "email": "email",
    "phone": "phone",
    "address1": "address1",
    "city": "city",
    "zip": "zip",
    "country": "country",
    "notes": "note",
    "custom_segments": "tags",
}
# Proposals that describe one postal address and are taken together.
ADDRESS_PROPOSALS: tuple[str, ...] = ("address1", "city", "zip", "country")
CRM_EDITS_SCHEMA: dict[str, pl.DataType] = {
    "contact_id": pl.String,
    "field": pl.String,
    "value": pl.String,
    "edited_at": pl.Datetime("us", "UTC"),
}
BLOCKED_SCHEMA: dict[str, pl.DataType] = {
    "field": pl.String,
    "owner": pl.String,
    "source": pl.String,  # the side whose value was refused: shopify | crm
    "blocked": pl.UInt32,
}


@functools.cache
def field_ownership() -> pl.DataFrame:
    """The packaged ownership table (``field, owner, description``), validated."""
    table = pl.read_csv(OWNERSHIP_PATH, comment_prefix="#", schema=OWNERSHIP_SCHEMA)  # static-data
    validate_ownership(table)
    return table


def validate_ownership(table: pl.DataFrame) -> None:
    """Raise ``ValueError`` unless every field is listed once with a known owner we can fill."""
    dupes = table.filter(pl.col("field").is_duplicated())["field"].unique().to_list()
    if dupes:
        raise ValueError(f"Field(s) listed twice in the ownership table: {', '.join(sorted(dupes))}.")
    unknown = table.filter(~pl.col("owner").is_in(list(OWNERS)))
    if unknown.height:
        raise ValueError(
            f"Unknown owner {unknown['owner'][0]!r} for field {unknown['field'][0]!r}; "
            f"use one of {', '.join(OWNERS)}."
        )
    no_source = table.filter(
        (pl.col("owner") == "integration") & ~pl.col("field").is_in(list(INTEGRATION_SOURCES))
    )
    if no_source.height:
        raise ValueError(f"Integration-owned field {no_source['field'][0]!r} has no source column.")


def _shopify_profiles(identities: pl.DataFrame, customers: pl.DataFrame) -> pl.DataFrame:
    """Per contact, what its Shopify customer records propose for each field (newest wins)."""
    members = identities.filter(pl.col("record_type") == "customer").select(
        "contact_id", "shop", pl.col("record_id").cast(pl.String)
    )
    cols = customers.columns
    profile = customers.select(
        pl.col("shop"),
        pl.col("id").cast(pl.String).alias("record_id"),
        pl.col("updated_at")
        if "updated_at" in cols
        else pl.lit(None, pl.Datetime("us", "UTC")).alias("updated_at"),
        *[
            (
                pl.col(src).cast(pl.List(pl.String)).list.sort().list.join(", ")
                if src == "tags" and src in cols and isinstance(customers.schema[src], pl.List)
                else (pl.col(src).cast(pl.String) if src in cols else pl.lit(None, pl.String))
            ).alias(f"_shopify_{field}")
            for field, src in SHOPIFY_PROPOSALS.items()
        ],
    )
    # An empty tag list or note proposes nothing.
    profile = profile.with_columns(
        pl.when(pl.col(c).str.len_chars() > 0).then(pl.col(c)).alias(c)
        for c in profile.columns
        if c.startswith("_shopify_")
    )
    newest_first = members.join(profile, on=["shop", "record_id"], how="inner").sort(
        ["contact_id", "updated_at", "shop", "record_id"],
        descending=[False, True, False, False],
        nulls_last=True,
    )
    # Each field from the newest record that has it: a guest-like account with no email must
    # not blank the email another of the person's accounts holds. The address fields travel
    # together, from the newest record with a street, so a contact never gets one address's
    # street with another's city.
    address = [f"_shopify_{f}" for f in ADDRESS_PROPOSALS]
    singles = [c for c in newest_first.columns if c.startswith("_shopify_") and c not in address]
    per_field = newest_first.group_by("contact_id", maintain_order=True).agg(
        pl.col(c).drop_nulls().first() for c in singles
    )
    addresses = (
        newest_first.filter(pl.col("_shopify_address1").is_not_null())
        .unique("contact_id", keep="first", maintain_order=True)
        .select("contact_id", *address)
    )
    return per_field.join(addresses, on="contact_id", how="left").select(
        "contact_id", *[f"_shopify_{f}" for f in SHOPIFY_PROPOSALS]
    )


def _integration_values(metrics: pl.DataFrame, consent: pl.DataFrame) -> pl.DataFrame:
    """Per contact, the integration-owned values (metrics columns and consent state per channel)."""
    metric_cols = {
        f: c for f, (frame, c) in INTEGRATION_SOURCES.items() if frame == "metrics" and c in metrics.columns
    }
    values = metrics.select("contact_id", *[pl.col(c).alias(f) for f, c in metric_cols.items()])
    states = consent.select("contact_id", "channel", "state")
    for field, (frame, channel) in INTEGRATION_SOURCES.items():
        if frame != "consent":
            continue
        per_channel = states.filter(pl.col("channel") == channel).select(
            "contact_id", pl.col("state").alias(field)
        )
        values = values.join(per_channel, on="contact_id", how="full", coalesce=True)
    return values


def build_contacts(
    identities: pl.DataFrame,
    customers: pl.DataFrame,
    metrics: pl.DataFrame,
    consent: pl.DataFrame,
    crm_edits: pl.DataFrame | None,
    ownership: pl.DataFrame,
    previous_contacts: pl.DataFrame | None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The golden contact records and the blocked overwrites of this run.

    ``identities``: ``shop, record_type, record_id, contact_id`` (core.contact_identities).
    ``customers``: Shopify customers with ``shop, id, updated_at`` and any of ``first_name,
    last_name, email, phone, address1, city, zip, country, note, tags``.
    ``metrics``: per contact value (``transforms.metrics.contact_value``).
    ``consent``: ``contact_id, channel, state`` (``transforms.consent.contact_consent``).
    ``crm_edits``: ``CRM_EDITS_SCHEMA`` rows or None. ``ownership``: ``field, owner``.
    ``previous_contacts``: last run's contacts (None on the first run).

    Returns ``(contacts, blocked)``: one row per contact (``contact_id, record_count,
    customer_count, shops`` then every ownership field in table order, integration fields
    typed as computed, the others as strings), and ``BLOCKED_SCHEMA`` counts per field and
    refused source (fields with nothing blocked are absent).
    """
    validate_ownership(ownership)
    base = (
        identities.group_by("contact_id")
        .agg(
            record_count=pl.len().cast(pl.UInt32),
            customer_count=(pl.col("record_type") == "customer").sum().cast(pl.UInt32),
            shops=pl.col("shop").unique().sort(),
        )
        .sort("contact_id")
    )
    frame = base.join(_shopify_profiles(identities, customers), on="contact_id", how="left")
    integration = _integration_values(metrics, consent)
    frame = frame.join(integration, on="contact_id", how="left")

    edits = (crm_edits if crm_edits is not None else pl.DataFrame(schema=CRM_EDITS_SCHEMA)).cast(
        CRM_EDITS_SCHEMA  # type: ignore[arg-type]
    )
    latest_edits = (
        edits.sort("edited_at")
        .group_by("contact_id", "field")
        .agg(pl.col("value").last())
        .pivot(on="field", index="contact_id", values="value")
        if edits.height
        else pl.DataFrame(schema={"contact_id": pl.String})
    )
    latest_edits = latest_edits.rename({c: f"_crm_{c}" for c in latest_edits.columns if c != "contact_id"})
    frame = frame.join(latest_edits, on="contact_id", how="left")

    previous = (
        previous_contacts if previous_contacts is not None else pl.DataFrame(schema={"contact_id": pl.String})
    )
    prev_cols = [c for c in previous.columns if c != "contact_id"]
    frame = frame.join(
        previous.select("contact_id", *[pl.col(c).alias(f"_prev_{c}") for c in prev_cols]).with_columns(
            _existed=pl.lit(True)
        ),
        on="contact_id",
        how="left",
    ).with_columns(pl.col("_existed").fill_null(False))

    def col(name: str, dtype: pl.DataType = pl.String) -> pl.Expr:
        return pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype)

    values: list[pl.Expr] = []
    blocked: list[pl.Expr] = []
    owners: list[tuple[str, str, str]] = []
    for field, owner in ownership.select("field", "owner").iter_rows():
        crm = col(f"_crm_{field}")
        shopify = col(f"_shopify_{field}")
        prev = col(f"_prev_{field}")
        if owner == "integration":
            values.append((pl.col(field) if field in frame.columns else pl.lit(None)).alias(field))
            blocked.append(crm.is_not_null().alias(f"{field}|crm"))
            owners.append((field, owner, "crm"))
            continue
        # CRM fields: the CRM's edit, else what the contact had. Shopify-on-create fields: the
        # same, and Shopify's value while the field is still empty (on create, or never filled).
        value = pl.coalesce(crm, prev) if owner == "crm" else pl.coalesce(crm, prev, shopify)
        values.append(value.alias(field))
        refused = shopify.is_not_null() & (value.is_null() | (shopify != value)).fill_null(True)
        if owner == "shopify_on_create":
            refused = refused & pl.col("_existed") & prev.is_not_null()
        blocked.append(refused.fill_null(False).alias(f"{field}|shopify"))
        owners.append((field, owner, "shopify"))

    contacts = frame.select("contact_id", "record_count", "customer_count", "shops", *values)
    flags = frame.select(blocked)
    counts = [
        (field, owner, source, int(flags[f"{field}|{source}"].sum())) for field, owner, source in owners
    ]
    blocked_frame = pl.DataFrame(
        [c for c in counts if c[3] > 0], schema=list(BLOCKED_SCHEMA), orient="row"
    ).cast(BLOCKED_SCHEMA)  # type: ignore[arg-type]
    return contacts, blocked_frame


def carry_over_merges(
    previous_contacts: pl.DataFrame, identity_events: pl.DataFrame, ownership: pl.DataFrame
) -> pl.DataFrame:
    """Previous contacts with CRM and Shopify-on-create values of merged-away contacts moved to the survivor.

    ``identity_events`` are the current run's events (``event_type, contact_id,
    related_contact_ids``). For each merge the surviving contact keeps its own values and
    takes, for fields it has empty, the value of the first merged contact (by id) that has
    one, so a CRM edit made on either half of a merge is not lost.
    """
    merges = identity_events.filter(pl.col("event_type") == "merge")
    if merges.height == 0 or previous_contacts.height == 0:
        return previous_contacts
    fields = [
        f
        for f in ownership.filter(pl.col("owner") != "integration")["field"].to_list()
        if f in previous_contacts.columns
    ]
    moves = (
        merges.select(
            pl.col("contact_id").alias("_survivor"), pl.col("related_contact_ids").alias("contact_id")
        )
        .explode("contact_id")
        .filter(pl.col("contact_id") != pl.col("_survivor"))
    )
    donors = (
        previous_contacts.join(moves, on="contact_id", how="inner")
        .sort("contact_id")
        .group_by("_survivor", maintain_order=True)
        .agg([pl.col(f).drop_nulls().first().alias(f"_donor_{f}") for f in fields])
        .rename({"_survivor": "contact_id"})
    )
    survivors = previous_contacts.join(moves.select("contact_id"), on="contact_id", how="anti")
    missing = donors.join(survivors.select("contact_id"), on="contact_id", how="anti").select("contact_id")
    merged = pl.concat([survivors, missing], how="diagonal_relaxed").join(donors, on="contact_id", how="left")
    return merged.with_columns([pl.coalesce(f, f"_donor_{f}").alias(f) for f in fields]).drop(
        [f"_donor_{f}" for f in fields]
    )
