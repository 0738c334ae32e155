"""Engagement events and CRM edits from landing batches into DuckDB, loaded once each; definitions wiring."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb

from orchestration.defs.intelligence.assets import INTELLIGENCE_GROUPS
from orchestration.defs.intelligence.definitions import build_intelligence_defs
from pipelines import landing
from pipelines.engagement import import_file
from pipelines.engagement_load import CRM, CRM_ENTITY, load_crm_edits, load_engagement_events


def test_engagement_events_load_once_per_event_id(tmp_path: Path) -> None:
    root = tmp_path / "landing"
    feed = tmp_path / "feed.jsonl"
    events = [
        {
            "event_id": "e1",
            "occurred_at": "2026-11-02T09:30:00Z",
            "type": "sms_inbound",
            "phone": "+15550001111",
            "body": "STOP",
        },
        {
            "event_id": "e2",
            "occurred_at": "2026-11-02T10:00:00+01:00",
            "type": "email_open",
            "email": "a@example.com",
        },
    ]
    feed.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    import_file(feed, root)
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    try:
        first = load_engagement_events(con, root)
        assert (first.inserted, first.duplicates, len(first.batches)) == (2, 0, 1)
        assert load_engagement_events(con, root).batches == []  # marked loaded
        import_file(feed, root)  # the sender re-sends the same events
        again = load_engagement_events(con, root)
        assert (again.inserted, again.duplicates) == (0, 2)
        rows = con.execute(
            "SELECT event_id, type, body, occurred_at FROM engagement.events ORDER BY event_id"
        ).fetchall()
        assert [r[:3] for r in rows] == [("e1", "sms_inbound", "STOP"), ("e2", "email_open", None)]
        assert rows[1][3] == datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # an instant, whatever the offset
    finally:
        con.close()


def test_crm_edits_load_once(tmp_path: Path) -> None:
    root = tmp_path / "landing"
    edit = {"contact_id": "ct_1", "field": "owner", "value": "sam", "edited_at": "2026-11-02T09:30:00Z"}
    cleared = {**edit, "value": None, "edited_at": "2026-11-03T09:30:00Z"}
    landing.write_batch(root, CRM, CRM_ENTITY, "feed", [edit, edit, cleared])
    landing.write_batch(root, CRM, CRM_ENTITY, "feed", [edit, cleared])
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    try:
        result = load_crm_edits(con, root)
        assert result.inserted == 2 and len(result.batches) == 2
        assert con.execute("SELECT count(*) FROM crm.field_edits WHERE value IS NULL").fetchone()[0] == 1
    finally:
        con.close()


def test_intelligence_definitions_are_wired(tmp_path: Path) -> None:
    defs = build_intelligence_defs()
    graph = defs.resolve_asset_graph()
    keys = [k for k in graph.get_all_asset_keys() if graph.get(k).group_name in INTELLIGENCE_GROUPS]
    assert len(keys) == 11  # ten core.* assets and the analyst snapshot
    for key in keys:
        node = graph.get(key)
        assert node.automation_condition is not None, key
        assert node.pools == {"warehouse"}, key
        assert not node.is_partitioned, key
        assert node.description, key
    upstream = graph.get(dg.AssetKey(["core", "contact_identities"])).parent_keys
    assert dg.AssetKey(["shopify", "customers"]) in upstream
    assert defs.resolve_job_def("intelligence_refresh") is not None
    assert defs.resolve_schedule_def("nightly_intelligence_schedule").cron_schedule == "0 4 * * *"


def test_crm_inbox_lands_valid_edits_once_and_quarantines_the_rest(tmp_path: Path) -> None:
    from pipelines import crm_feed

    root = tmp_path / "landing"
    inbox = crm_feed.inbox_dir(root)
    inbox.mkdir(parents=True)
    (inbox / "monday.jsonl").write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "contact_id": "ct_1",
                        "field": "lifecycle_stage",
                        "value": "customer",
                        "edited_at": "2026-11-02T09:30:00Z",
                    }
                ),
                json.dumps(
                    {
                        "contact_id": "ct_1",
                        "field": "lifecycle_stag",
                        "value": "lead",
                        "edited_at": "2026-11-02T09:30:00Z",
                    }
                ),
                json.dumps(
                    {"contact_id": "ct_2", "field": "owner", "value": "Sam", "edited_at": "2026-11-02 09:30"}
                ),
                "{not json",
                "",
            ]
        )
    )
    (inbox / "tuesday.csv").write_text(
        "contact_id,field,value,edited_at\nct_2,owner,,2026-11-03T10:00:00+01:00\n,notes,x,2026-11-03T10:00:00Z\n"
    )
    results = crm_feed.import_inbox(root, {"lifecycle_stage", "owner", "notes"})
    assert [(r.source.name, r.accepted, r.quarantined) for r in results] == [
        ("monday.jsonl", 1, 3),
        ("tuesday.csv", 1, 1),
    ]
    reasons = [json.loads(line)["reason"] for line in results[0].quarantine_path.read_text().splitlines()]
    assert "field 'lifecycle_stag' is not a contact field" in reasons[0]
    assert "edited_at" in reasons[1] and "UTC offset" in reasons[1]
    assert reasons[2].startswith("not JSON")
    assert json.loads(results[1].quarantine_path.read_text())["line"] == 3
    assert list(inbox.iterdir()) == [] and crm_feed.import_inbox(root) == []  # moved to processed/

    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    try:
        assert load_crm_edits(con, root).inserted == 2
        assert load_crm_edits(con, root).inserted == 0
        rows = con.execute("SELECT contact_id, field, value FROM crm.field_edits ORDER BY ALL").fetchall()
    finally:
        con.close()
    # an empty value clears the field
    assert rows == [("ct_1", "lifecycle_stage", "customer"), ("ct_2", "owner", None)]
