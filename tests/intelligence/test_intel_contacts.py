"""Golden contacts under the field-ownership table: who may write which field, and what is refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from pipelines import landing
from pipelines.engagement_load import CRM, CRM_ENTITY
from transforms.contacts import build_contacts, carry_over_merges, field_ownership, validate_ownership

TS = pl.Datetime("us", "UTC")


def _identities(rows: list[tuple[str, str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["shop", "record_type", "record_id", "contact_id"], orient="row")


def _customers(
    note: str | None = None, first_name: str = "Ada", tags: list[str] | None = None
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "shop": ["a.myshopify.com"],
            "id": [1],
            "first_name": [first_name],
            "last_name": ["Lovelace"],
            "email": ["ada@example.com"],
            "phone": ["+15550001111"],
            "address1": ["1 Analytical Way"],
            "city": ["London"],
            "zip": ["N1"],
            "country": ["GB"],
            "note": [note],
            "tags": [tags or []],
            "updated_at": [datetime(2026, 11, 1, tzinfo=UTC)],
        }
    )


METRICS = pl.DataFrame(
    {
        "contact_id": ["ct_1"],
        "order_count": [3],
        "total_spent": [120.5],
        "segment": ["loyal"],
        "clv_12m": [80.0],
    }
)
CONSENT = pl.DataFrame({"contact_id": ["ct_1"], "channel": ["email"], "state": ["SUBSCRIBED"]})
IDS = _identities([("a.myshopify.com", "customer", "1", "ct_1")])


def _edits(*rows: tuple[str, str, str | None, datetime]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"contact_id": pl.String, "field": pl.String, "value": pl.String, "edited_at": TS},
        orient="row",
    )


def _blocked(frame: pl.DataFrame) -> dict[tuple[str, str], int]:
    return {(r["field"], r["source"]): r["blocked"] for r in frame.iter_rows(named=True)}


def test_shopify_cannot_overwrite_a_crm_field_and_it_is_counted() -> None:
    edits = _edits(("ct_1", "notes", "VIP - call before shipping", datetime(2026, 11, 2, tzinfo=UTC)))
    contacts, blocked = build_contacts(
        IDS,
        _customers(note="leave at the door", tags=["wholesale"]),
        METRICS,
        CONSENT,
        edits,
        field_ownership(),
        None,
    )
    row = contacts.row(0, named=True)
    assert row["notes"] == "VIP - call before shipping"
    assert row["custom_segments"] is None  # Shopify tags never become CRM segments
    assert (
        row["first_name"] == "Ada" and row["email_consent"] == "SUBSCRIBED" and row["rfm_segment"] == "loyal"
    )
    counts = _blocked(blocked)
    assert counts[("notes", "shopify")] == 1
    assert counts[("custom_segments", "shopify")] == 1


def test_shopify_fields_are_set_on_create_only_and_crm_cannot_write_integration_fields() -> None:
    first, _ = build_contacts(IDS, _customers(), METRICS, CONSENT, None, field_ownership(), None)
    edits = _edits(
        ("ct_1", "lifecycle_stage", "customer", datetime(2026, 11, 3, tzinfo=UTC)),
        ("ct_1", "lifecycle_stage", "evangelist", datetime(2026, 11, 4, tzinfo=UTC)),
        ("ct_1", "order_count", "999", datetime(2026, 11, 4, tzinfo=UTC)),
    )
    second, blocked = build_contacts(
        IDS, _customers(first_name="Augusta"), METRICS, CONSENT, edits, field_ownership(), first
    )
    row = second.row(0, named=True)
    assert row["first_name"] == "Ada"  # Shopify's later rename is refused
    assert row["lifecycle_stage"] == "evangelist"  # the latest CRM edit
    assert row["order_count"] == 3  # computed, never the CRM's value
    assert _blocked(blocked) == {("first_name", "shopify"): 1, ("order_count", "crm"): 1}
    # a new contact still takes Shopify's values on create
    ids = _identities(
        [("a.myshopify.com", "customer", "1", "ct_1"), ("a.myshopify.com", "customer", "2", "ct_2")]
    )
    customers = pl.concat(
        [
            _customers(first_name="Augusta"),
            _customers(first_name="Grace").with_columns(id=pl.lit(2, pl.Int64)),
        ]
    )
    third, _ = build_contacts(ids, customers, METRICS, CONSENT, None, field_ownership(), second)
    names = dict(third.select("contact_id", "first_name").iter_rows())
    assert names == {"ct_1": "Ada", "ct_2": "Grace"}


def test_each_profile_field_comes_from_the_newest_record_that_has_it() -> None:
    """A newer account without an email or address does not blank what an older one holds."""
    ids = _identities(
        [("a.myshopify.com", "customer", "1", "ct_1"), ("b.myshopify.com", "customer", "2", "ct_1")]
    )
    older = _customers()
    newer = older.with_columns(
        shop=pl.lit("b.myshopify.com"),
        id=pl.lit(2, pl.Int64),
        first_name=pl.lit("Augusta"),
        email=pl.lit(None, pl.String),
        address1=pl.lit(None, pl.String),
        city=pl.lit("Paris"),  # a city without a street: no address to take
        updated_at=pl.lit(datetime(2026, 11, 20, tzinfo=UTC)),
    )
    contacts, _ = build_contacts(
        ids, pl.concat([older, newer]), METRICS, CONSENT, None, field_ownership(), None
    )
    row = contacts.row(0, named=True)
    assert row["first_name"] == "Augusta"  # the newest record's name
    assert row["email"] == "ada@example.com"  # the only email the person has
    assert (row["address1"], row["city"], row["zip"]) == ("1 Analytical Way", "London", "N1")


def test_ownership_table_is_validated() -> None:
    table = field_ownership()
    assert set(table["owner"]) == {"integration", "crm", "shopify_on_create"}
    assert {"lifecycle_stage", "lead_status", "owner", "notes", "custom_segments"} <= set(
        table.filter(pl.col("owner") == "crm")["field"]
    )
    with pytest.raises(ValueError, match="Unknown owner"):
        validate_ownership(
            pl.concat([table, pl.DataFrame({"field": ["x"], "owner": ["marketing"], "description": [""]})])
        )
    with pytest.raises(ValueError, match="twice"):
        validate_ownership(pl.concat([table, table.head(1)]))


@pytest.mark.slow
def test_crm_edits_feed_reaches_the_golden_record(intel: Any) -> None:
    intel.refresh()
    wh = intel.paths.warehouse_path
    con = duckdb.connect(str(wh), read_only=True)
    contact_id, note_blocked = con.execute(
        "SELECT contact_id, (SELECT coalesce(sum(blocked), 0) FROM core.contact_blocked_overwrites WHERE field = 'lifecycle_stage') "
        "FROM core.contacts ORDER BY contact_id LIMIT 1"
    ).fetchone()
    con.close()
    assert note_blocked == 0
    edit = {
        "contact_id": contact_id,
        "field": "lifecycle_stage",
        "value": "customer",
        "edited_at": "2026-11-02T09:30:00Z",
    }
    for _ in range(2):  # delivered twice
        landing.write_batch(
            Path(intel.paths.landing_path),
            CRM,
            CRM_ENTITY,
            "feed",
            [edit, {**edit, "field": "total_spent", "value": "1"}],
        )
    intel.refresh()
    con = duckdb.connect(str(wh), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM crm.field_edits").fetchone()[0] == 2
        assert con.execute(
            "SELECT lifecycle_stage FROM core.contacts WHERE contact_id = ?", [contact_id]
        ).fetchone() == ("customer",)
        blocked = con.execute(
            "SELECT blocked FROM core.contact_blocked_overwrites WHERE field = 'total_spent' AND source = 'crm'"
        ).fetchone()
        assert blocked == (1,)
    finally:
        con.close()
    assert json.dumps(edit)  # the documented feed shape is plain JSON


def test_crm_values_of_a_merged_contact_move_to_the_survivor() -> None:
    previous = pl.DataFrame(
        {
            "contact_id": ["ct_a", "ct_b", "ct_c"],
            "lifecycle_stage": [None, "customer", "lead"],
            "owner": ["sam", "kim", None],
            "order_count": [1, 2, 3],
        }
    )
    events = pl.DataFrame(
        {
            "event_type": ["merge"],
            "contact_id": ["ct_a"],
            "related_contact_ids": [["ct_a", "ct_b"]],
            "records": [["x"]],
        }
    )
    out = carry_over_merges(previous, events, field_ownership()).sort("contact_id")
    assert out["contact_id"].to_list() == ["ct_a", "ct_c"]
    row = out.row(0, named=True)
    assert (row["lifecycle_stage"], row["owner"], row["order_count"]) == ("customer", "sam", 1)


@pytest.mark.slow
def test_a_crm_file_dropped_in_the_inbox_reaches_the_golden_record(intel: Any) -> None:
    from pipelines.crm_feed import inbox_dir

    intel.refresh()
    wh = intel.paths.warehouse_path
    con = duckdb.connect(str(wh), read_only=True)
    contact_id = con.execute("SELECT contact_id FROM core.contacts ORDER BY contact_id LIMIT 1").fetchone()[0]
    con.close()
    inbox = inbox_dir(Path(intel.paths.landing_path))
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "crm-export.csv").write_text(
        "contact_id,field,value,edited_at\n"
        f"{contact_id},owner,Priya Shah,2026-11-02T09:30:00Z\n"
        f"{contact_id},favourite_colour,teal,2026-11-02T09:30:00Z\n"
    )
    result = intel.refresh()
    con = duckdb.connect(str(wh), read_only=True)
    try:
        owner = con.execute("SELECT owner FROM core.contacts WHERE contact_id = ?", [contact_id]).fetchone()
    finally:
        con.close()
    assert owner == ("Priya Shah",)
    meta = result.asset_materializations_for_node("core__contacts")[0].metadata
    assert meta["crm_files_imported"].value == 1 and meta["crm_lines_quarantined"].value == 1
    assert (inbox.parent / "processed" / "crm-export.csv").exists() and not any(inbox.iterdir())
