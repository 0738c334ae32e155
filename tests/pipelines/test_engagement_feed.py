"""Engagement feed import: valid lines land as one batch, malformed lines are quarantined."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import engagement, landing

GOOD = [
    {
        "event_id": "e1",
        "occurred_at": "2026-11-02T09:30:00Z",
        "type": "email_open",
        "email": "Ann@Example.com",
        "shop": "acme-outdoors.myshopify.com",
        "campaign": "nov",
    },
    {
        "event_id": "e2",
        "occurred_at": "2026-11-02T09:31:00+01:00",
        "type": "sms_inbound",
        "phone": "+14155550101",
        "body": " STOP ",
    },
]


def test_jsonl_import_lands_valid_lines_and_quarantines_the_rest(tmp_path: Path) -> None:
    feed = tmp_path / "events.jsonl"
    bad = [
        "{not json",
        json.dumps(
            {"event_id": "e3", "occurred_at": "2026-11-02T09:30:00", "type": "email_open", "email": "a@b.c"}
        ),
        json.dumps(
            {
                "event_id": "e4",
                "occurred_at": "2026-11-02T09:30:00Z",
                "type": "email_bounce",
                "email": "a@b.c",
            }
        ),
        json.dumps({"event_id": "e5", "occurred_at": "2026-11-02T09:30:00Z", "type": "sms_click"}),
        json.dumps(
            {"event_id": "e6", "occurred_at": "2026-11-02T09:30:00Z", "type": "sms_inbound", "phone": "+1415"}
        ),
        "[1, 2]",
    ]
    feed.write_text("\n".join([json.dumps(GOOD[0]), *bad, "", json.dumps(GOOD[1])]) + "\n")
    result = engagement.import_file(feed, tmp_path / "landing")

    assert (result.accepted, result.quarantined) == (2, 6)
    batches = list(landing.iter_batches(tmp_path / "landing"))
    assert len(batches) == 1 and batches[0][0].shop == landing.ENGAGEMENT and batches[0][0].rows == 2
    rows = [json.loads(line) for line in batches[0][1].read_text().splitlines()]
    assert [r["event_id"] for r in rows] == ["e1", "e2"]
    assert rows[1]["occurred_at"] == "2026-11-02T09:31:00+01:00" and rows[1]["body"] == "STOP"

    assert result.quarantine_path is not None
    quarantined = [json.loads(line) for line in result.quarantine_path.read_text().splitlines()]
    reasons = {q["line"]: q["reason"] for q in quarantined}
    assert "not valid JSON" in reasons[2]
    assert "UTC offset" in reasons[3]
    assert "type" in reasons[4]
    assert "needs a phone" in reasons[5]
    assert "needs a body" in reasons[6]
    assert reasons[7] == "not a JSON object"


def test_csv_import_and_inbox_pickup(tmp_path: Path) -> None:
    root = tmp_path / "landing"
    inbox = engagement.inbox_dir(root)
    inbox.mkdir(parents=True)
    (inbox / "a.csv").write_text(
        "event_id,occurred_at,type,email,phone,shop,campaign,body\n"
        "c1,2026-11-01T00:00:00Z,email_unsubscribe,bob@example.com,,,spring,\n"
        "c2,yesterday,email_open,bob@example.com,,,,\n"
    )
    (inbox / "notes.json").write_text("{}")  # a stray file is neither imported nor mistaken for a batch
    results = engagement.import_inbox(root)
    assert [(r.accepted, r.quarantined) for r in results] == [(1, 1)]
    assert engagement.inbox_files(root) == []
    assert engagement.import_inbox(root) == []  # processed once
    assert [m.rows for m, _ in landing.iter_batches(root)] == [1]


def test_unreadable_files_fail_clearly_and_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such engagement file"):
        engagement.import_file(tmp_path / "missing.jsonl", tmp_path / "landing")
    weird = tmp_path / "events.xlsx"
    weird.write_text("x")
    with pytest.raises(engagement.FeedFormatError, match=r"\.jsonl or \.csv"):
        engagement.import_file(weird, tmp_path / "landing")
    headerless = tmp_path / "events.csv"
    headerless.write_text("1,2,3\n")
    with pytest.raises(engagement.FeedFormatError, match="header row"):
        engagement.import_file(headerless, tmp_path / "landing")
    assert not (tmp_path / "landing").exists()
