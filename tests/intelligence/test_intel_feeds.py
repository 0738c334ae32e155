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
