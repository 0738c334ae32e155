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


def test_csv_dropped_in_the_landing_folder_is_imported_once(tmp_path: Path) -> None:
    root = tmp_path / "landing"
    drop = engagement.drop_dir(root)
    assert drop == root / landing.ENGAGEMENT
    drop.mkdir(parents=True)
    csv_text = (
        "event_id,occurred_at,type,email,phone,shop,campaign,body\n"
        "c1,2026-11-01T00:00:00Z,email_unsubscribe,bob@example.com,,,spring,\n"
        "c2,yesterday,email_open,bob@example.com,,,,\n"
    )
    (drop / "a.csv").write_text(csv_text)
    (drop / "notes.json").write_text("{}")  # a stray file is neither imported nor mistaken for a batch
    (drop / "empty.jsonl").write_bytes(b"")
    (drop / "noheader.csv").write_text("1,2,3\n")  # not a feed at all: quarantined whole
    # still being written: left for a later pickup
    assert engagement.dropped_files(root, now=(drop / "a.csv").stat().st_mtime + 0.5) == []
    files = engagement.dropped_files(root, settle_s=0)
    assert sorted(f.path.name for f in files) == ["a.csv", "empty.jsonl", "noheader.csv"]
    results = [engagement.import_dropped(root, f) for f in files]
    assert sorted((r.accepted, r.quarantined) for r in results) == [(0, 0), (0, 1), (1, 1)]
    # the batch it landed is not taken for a dropped file, and the folder is empty of drops
    assert engagement.dropped_files(root, settle_s=0) == []
    assert [m.rows for m, _ in landing.iter_batches(root)] == [1]
    # the same content dropped again is set aside, not imported twice
    (drop / "again.csv").write_text(csv_text)
    again = engagement.dropped_files(root, settle_s=0)
    assert engagement.already_imported(root, again[0].sha256)
    assert engagement.import_dropped(root, again[0]).batch is None
    assert sorted(p.name.split("-", 1)[1] for p in engagement.processed_dir(root).iterdir()) == [
        "a.csv",
        "again.csv",
        "empty.jsonl",
        "noheader.csv",
    ]
    assert [m.rows for m, _ in landing.iter_batches(root)] == [1]
    quarantined = [
        json.loads(line)
        for q in (root / "_quarantine" / "engagement").iterdir()
        for line in q.read_text().splitlines()
    ]
    reasons = sorted((q["source"], q["line"], q["reason"].split(":")[0]) for q in quarantined)
    assert reasons[0] == ("a.csv", 3, "occurred_at")
    assert reasons[1][:2] == ("noheader.csv", None) and "header row" in quarantined_reason(
        quarantined, "noheader.csv"
    )


def quarantined_reason(items: list[dict], source: str) -> str:
    return next(q["reason"] for q in items if q["source"] == source)


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
