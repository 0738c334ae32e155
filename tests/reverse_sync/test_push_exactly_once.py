"""Exactly once across a killed process: `shopsync push run` SIGKILLed mid-push, then run again.

The devstore's write log is the witness: every planned consent write and every metafield
(engagement keys and the origin) reaches Shopify once, whatever the kill interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from ops_support import Store

from orchestration.control import ControlSettings, StoreRegistry
from pipelines.push_journal import PushJournal, journal_path

CONSENT_OP = "customerEmailMarketingConsentUpdate"


def _warehouse(path: Path, store: Store, ids: list[int]) -> None:
    """A warehouse holding the shop's customers, unsubscribes and engagement events for ``ids``."""
    domain = store.shop.domain
    at = store.shop.clock.now().astimezone(UTC) - timedelta(hours=1)
    with store.shop.lock:
        records = [store.shop.records["customers"][cid] for cid in ids]
    customers = pl.DataFrame(
        {
            "shop": domain,
            "id": ids,
            "email": [c["email"] for c in records],
            "first_name": [c.get("first_name") for c in records],
            "updated_at": at,
        }
    )
    consent = pl.DataFrame(
        {
            "shop": domain,
            "customer_id": ids,
            "channel": "email",
            "state": "UNSUBSCRIBED",
            "opt_in_level": "SINGLE_OPT_IN",
            "updated_at": at,
            "source": "engagement",
            "source_ref": [f"evt-{cid}" for cid in ids],
            "consented": False,
        }
    )
    events = pl.DataFrame(
        {
            "event_id": [f"open-{cid}" for cid in ids] + [f"click-{cid}" for cid in ids],
            "occurred_at": at,
            "type": ["email_open"] * len(ids) + ["email_click"] * len(ids),
            "email": [c["email"] for c in records] * 2,
            "phone": None,
            "shop": domain,
            "body": None,
        },
        schema_overrides={"phone": pl.String, "body": pl.String},
    )
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA shopify; CREATE SCHEMA core; CREATE SCHEMA engagement")
    for name, frame in (
        ("shopify.customers", customers),
        ("core.consent", consent),
        ("engagement.events", events),
    ):
        con.register("_f", frame.to_arrow())
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM _f")
        con.unregister("_f")
    con.close()


def _push(data_dir: Path, domain: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from orchestration.cli import main; main()",
            "push",
            "run",
            domain,
            "--data-dir",
            str(data_dir),
            "--warehouse",
            str(data_dir / "warehouse.duckdb"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _writes(store: Store) -> list[dict[str, Any]]:
    entries = store.control("GET", f"/shops/{store.shop.handle}/write_log").json()
    return [e for e in entries if e["outcome"] == "ok" and not e["operation"].startswith("control.")]


@pytest.mark.slow  # three real `shopsync push run` processes (~15 s)
def test_killed_mid_push_then_rerun_writes_everything_exactly_once(tmp_path: Path, store: Store) -> None:
    domain = store.shop.domain
    with store.shop.lock:
        ids = sorted(c["id"] for c in store.shop.records["customers"].values() if c.get("email"))[:6]
    _warehouse(tmp_path / "warehouse.duckdb", store, ids)
    registry = StoreRegistry(ControlSettings(data_dir=tmp_path))
    registry.connect_store(
        domain, access_token=store.token, api_base_url=f"{store.url}/shops/{store.shop.handle}"
    )
    registry.set_outbound_toggles(domain, {"email_consent": True, "engagement": True})
    registry.close()

    # many answers are cut off after Shopify applied the write: the pusher is busy verifying and
    # backing off when the kill lands, so writes are on Shopify that nobody heard about
    store.control("PUT", "/faults", {"seed": 3, "reset_rate": 0.5, "kinds": ["graphql"]})
    first = _push(tmp_path, domain)
    journal_file = journal_path(tmp_path / "state" / "push_journal", domain)
    deadline = time.monotonic() + 90

    def landed_unanswered() -> list[str]:
        """Consent writes Shopify applied whose answer the pusher never got (it is backing off)."""
        if not journal_file.exists():
            return []
        with PushJournal(journal_file) as journal:
            pending = {
                f"gid://shopify/Customer/{i.customer_id}"
                for i in journal.pending()
                if i.kind == "email_consent"
            }
        return [
            e["target"] for e in _writes(store) if e["operation"] == CONSENT_OP and e["target"] in pending
        ]

    while not landed_unanswered():
        assert first.poll() is None, (
            "the push ended before a write was caught in flight",
            first.communicate(),
        )
        assert time.monotonic() < deadline, "the push never got going"
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL
    at_kill = Counter(e["operation"] for e in _writes(store))
    assert at_kill[CONSENT_OP] < len(ids), "the first push finished before it could be killed"

    store.control("DELETE", "/faults")
    second = _push(tmp_path, domain)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err

    writes = _writes(store)
    consent = Counter(e["target"] for e in writes if e["operation"] == CONSENT_OP)
    assert sorted(consent) == sorted(f"gid://shopify/Customer/{cid}" for cid in ids)
    assert set(consent.values()) == {1}, consent
    metafields = Counter(
        (e["target"], m["key"])
        for e in writes
        if e["operation"] == "metafieldsSet"
        for m in e["payload"]["metafields"]
    )
    keys = {"last_email_open_at", "last_email_click_at", "messages_sent_total", "origin"}
    assert set(metafields) == {(f"gid://shopify/Customer/{cid}", k) for cid in ids for k in keys}
    assert set(metafields.values()) == {1}, metafields

    # the warehouse recorded each consent write once, and the journal holds nothing unsettled
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    logged = con.execute(
        "SELECT customer_id, count(*) FROM sync.push_log WHERE kind = 'email_consent' AND outcome = 'written' GROUP BY 1"
    ).fetchall()
    con.close()
    assert sorted(logged) == [(cid, 1) for cid in ids]
    with PushJournal(journal_path(tmp_path / "state" / "push_journal", domain)) as journal:
        assert set(journal.counts()) <= {"recorded", "void"}
    # and a third run has nothing left to send
    third = _push(tmp_path, domain)
    out, err = third.communicate(timeout=120)
    assert third.returncode == 0 and "Nothing to push" in out, (out, err)
    assert len(_writes(store)) == len(writes)
