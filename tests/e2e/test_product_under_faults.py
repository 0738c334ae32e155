"""The whole product against a misbehaving Shopify, with two processes killed on the way.

One devstore (two shops) turns on a fault profile: throttle storms, 5xx bursts, connection
resets, slow replies, bulk jobs failing with partial data, and webhooks duplicated, reordered
and late. shopsync runs as a user runs it, through its CLI in real processes, on a persistent
Dagster instance and data folder:

1. ``stores connect`` both shops (webhooks subscribed to a running ``webhooks serve``);
2. ``stores resync`` of the first shop is SIGKILLed while it loads into the warehouse, then
   re-run; the second shop syncs under the same faults;
3. the shops change (edits, creates, deletes) and their webhooks reach the receiver through
   the faulty dispatcher; ``webhooks apply`` applies them;
4. the intelligence run, an engagement feed dropped in ``landing/_engagement/`` (unsubscribes,
   opens, clicks), the engagement job, then ``push run`` with consent and engagement toggles on,
   SIGKILLed mid-push and re-run;
5. Shopify recovers; the next scheduled sync of each shop runs.

Then: the warehouse equals the devstore's records, every planned push reached Shopify exactly
once (the devstore's write log is the witness), no webhook was lost (every event the devstore
delivered is in the receiver's journal once), and the health figures show the API use, the
webhook lag and the pushes. It prints one summary line.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx
import polars as pl
import pytest
from support.truth import warehouse_mismatches

from devstore.server import RunningDevstore, create_world, start_in_thread
from orchestration.defs.reverse_sync.engagement import feed_run_request
from pipelines.engagement import SETTLE_S

SHOPSYNC = str(Path(sys.executable).with_name("shopsync"))
FAULTS: dict[str, Any] = {
    "seed": 17,
    "throttle_storm_rate": 0.02,
    "throttle_storm_length": 3,
    "rate_500": 0.015,
    "rate_502": 0.01,
    "rate_503": 0.015,
    "burst_length": 2,
    "reset_rate": 0.03,
    "slow_rate": 0.03,
    "slow_delay": 0.4,
    "bulk_fail_rate": 0.2,
    "webhook_duplicate_rate": 0.3,
    "webhook_reorder_rate": 0.3,
    "webhook_late_rate": 0.3,
    "webhook_late_delay": 20.0,  # x the dispatcher's time scale (0.05): a second late
    "kinds": ["graphql"],
}
CONSENT_OP = "customerEmailMarketingConsentUpdate"
PUSH_OPS = frozenset(
    {
        CONSENT_OP,
        "customerSmsMarketingConsentUpdate",
        "metafieldsSet",
        "customerUpdate",
        "customerAddressCreate",
    }
)
# ~3 min on two busy cores; the suite-wide 300 s guard against hangs is too tight for it
pytestmark = [pytest.mark.slow, pytest.mark.fault_suite, pytest.mark.timeout(600)]


class Product:
    """shopsync's processes and folders for one test, and the devstore they talk to."""

    def __init__(self, tmp_path: Path, devstore: RunningDevstore) -> None:
        self.devstore = devstore
        self.data = tmp_path / "data"
        self.home = tmp_path / "dagster_home"
        self.home.mkdir(parents=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "SHOPSYNC_"))},
            "DAGSTER_HOME": str(self.home),
            "SHOPSYNC_DATA_DIR": str(self.data),
            "SHOPSYNC_LOG_LEVEL": "INFO",
        }
        self.port = _free_port()
        self.receiver: subprocess.Popen[bytes] | None = None

    # processes -----------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """Run ``shopsync ARGS`` to completion."""
        return subprocess.run(
            [SHOPSYNC, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def cli_until_ok(self, *args: str, attempts: int = 3) -> int:
        """Run a command again while it fails, as a user (or the next schedule tick) would."""
        for attempt in range(1, attempts + 1):
            done = self.cli(*args)
            if done.returncode == 0:
                return attempt
        raise AssertionError(f"shopsync {' '.join(args)} kept failing:\n{done.stdout}\n{done.stderr[-3000:]}")

    def start_receiver(self) -> None:
        self.receiver = subprocess.Popen(
            [SHOPSYNC, "webhooks", "serve", "--port", str(self.port), "--data-dir", str(self.data)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.receiver_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.receiver.poll() is None, "the webhook receiver exited"
            assert time.monotonic() < deadline, "the webhook receiver did not start"
            time.sleep(0.2)

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.receiver is not None and self.receiver.poll() is None:
            self.receiver.send_signal(signal.SIGINT)
            try:
                self.receiver.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.receiver.kill()

    # in-process parts (what the daemon would launch) -------------------------------------------
    def run_job(
        self, name: str, partition: str | None = None, run_config: dict[str, Any] | None = None
    ) -> dg.ExecuteInProcessResult:
        """One job of the code location, on the test's instance, as a schedule or sensor launches it."""
        from orchestration.definitions import defs

        instance = dg.DagsterInstance.from_config(str(self.home))
        try:
            job = defs().resolve_job_def(name)
            result = job.execute_in_process(
                instance=instance, partition_key=partition, run_config=run_config or {}, raise_on_error=False
            )
        finally:
            instance.dispose()
        failures = [e.event_specific_data for e in result.all_events if e.is_failure]
        assert result.success, (name, partition, failures)
        return result

    # reading back ---------------------------------------------------------------------------
    @property
    def warehouse(self) -> Path:
        return self.data / "warehouse.duckdb"

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(self.warehouse), read_only=True)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    def shopify_rows(self) -> int:
        """Rows in every shopify.* table."""
        if not self.warehouse.exists():
            return 0
        tables = self.query(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'shopify' AND NOT starts_with(table_name, '_')"
        )
        return sum(self.query(f"SELECT count(*) FROM shopify.{t}")[0][0] for (t,) in tables)

    def writes(self, handle: str) -> list[dict[str, Any]]:
        """Pushes Shopify accepted from shopsync (consent, metafields, profile fill)."""
        entries = self.devstore.control("GET", f"/shops/{handle}/write_log")
        return [e for e in entries if e["outcome"] == "ok" and e["operation"] in PUSH_OPS]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kill_when(
    process: subprocess.Popen[str], seen: threading.Event, what: str, timeout: float = 180
) -> None:
    deadline = time.monotonic() + timeout
    while not seen.is_set():
        assert process.poll() is None, f"the process ended before {what}: {process.returncode}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def _watch_stderr(process: subprocess.Popen[str], needle: str) -> threading.Event:
    """An event set once ``needle`` appears on the process's stderr (read on a thread)."""
    seen = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if needle in line:
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    return seen


@pytest.fixture
def product(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    world = create_world(stores=2, customers=60, seed=23, plan="plus")
    devstore = start_in_thread(world, webhook_time_scale=0.05)
    running = Product(tmp_path, devstore)
    # the jobs this test runs in its own process read the same data folder as the CLI's
    for key in [k for k in os.environ if k.startswith("SHOPSYNC_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SHOPSYNC_DATA_DIR", str(running.data))
    try:
        yield running
    finally:
        running.stop()
        devstore.stop()


def test_the_whole_product_under_faults_ends_with_the_truth(
    product: Product, record_property: Callable[[str, object], None]
) -> None:
    p = product
    started = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - started - sum(phases.values()), 1)

    shops = p.devstore.shops
    (a, b), handles = (
        [s["domain"] for s in shops],
        [s["domain"].removesuffix(".myshopify.com") for s in shops],
    )

    # 1. Connect both shops, webhooks subscribed to the running receiver.
    p.start_receiver()
    for shop in shops:
        done = p.cli(
            "stores", "connect", shop["domain"], "--token", shop["access_token"],
            "--client-secret", shop["client_secret"], "--base-url", shop["base_url"],
            "--webhook-url", f"{p.receiver_url}/webhooks", "--no-sync", "--data-dir", str(p.data),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]

    p.devstore.control("PUT", "/faults", FAULTS)
    phase("connect")

    # 2. The first shop's re-sync is killed while it loads, then re-run; the second syncs.
    killed = subprocess.Popen(
        [SHOPSYNC, "stores", "resync", a, "--data-dir", str(p.data)],
        env=p.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _kill_when(killed, _watch_stderr(killed, "loaded batch"), "the first loaded batch")
    loaded_before = p.shopify_rows()  # what the killed run had committed
    resync_attempts = p.cli_until_ok("stores", "resync", a, "--data-dir", str(p.data))
    resync_attempts += p.cli_until_ok("stores", "resync", b, "--data-dir", str(p.data))

    phase("sync, killed mid-load, re-run")

    # 3. The shops change; their webhooks come duplicated, reordered and late.
    changed: dict[str, dict[str, list[int]]] = {}
    for handle, domain in zip(handles, (a, b), strict=True):
        state = p.devstore.world.shop(domain)
        assert state is not None
        with state.lock:
            ids = sorted(state.records["customers"])
        edited, deleted = ids[:6], ids[6:8]
        for cid in edited:
            p.devstore.control("PATCH", f"/shops/{handle}/records/customers/{cid}", {"note": f"vip {cid}"})
        for cid in deleted:
            p.devstore.control("DELETE", f"/shops/{handle}/records/customers/{cid}")
        created = [
            p.devstore.control(
                "POST",
                f"/shops/{handle}/records/customers",
                {"first_name": f"New{i}", "last_name": "Webhook", "email": f"new{i}.{handle}@example.com"},
            )["id"]
            for i in range(3)
        ]
        changed[domain] = {"edited": edited, "deleted": deleted, "created": created}
    delivered = _wait_for_deliveries(p)
    journal_events = _journal_events(p.data / "webhooks" / "journal.db")
    assert set(delivered) <= set(journal_events), "a delivered webhook is missing from the journal"
    apply = p.cli("webhooks", "apply", "--data-dir", str(p.data))
    assert apply.returncode == 0, apply.stderr[-3000:]
    for domain, ids in changed.items():  # the webhooks alone brought the changes in
        notes = dict(
            p.query("SELECT id, note FROM shopify.customers WHERE shop = ? AND _deleted_at IS NULL", [domain])
        )
        assert all(notes.get(cid) == f"vip {cid}" for cid in ids["edited"]), domain
        assert all(cid in notes for cid in ids["created"]), domain
        gone = p.query(
            "SELECT id FROM shopify.customers WHERE shop = ? AND _deleted_at IS NOT NULL", [domain]
        )
        assert {r[0] for r in gone} >= set(ids["deleted"]), domain

    phase("webhooks")

    # 4. Intelligence, an engagement feed dropped in the landing zone, and the push, killed once.
    p.run_job("intelligence_refresh")
    settings = p.cli(
        "stores", "settings", a, "--push-email-consent", "on", "--push-engagement", "on",
        "--data-dir", str(p.data),
    )  # fmt: skip
    assert settings.returncode == 0, settings.stderr[-3000:]
    unsubscribing = _drop_engagement_feed(p, a)
    request, _cursor, _duplicates = feed_run_request(p.data / "landing", None)  # the sensor's tick
    assert request is not None, "the dropped feed file was not picked up"
    p.run_job("engagement_feed", run_config=request.run_config)
    plan = _plan(p, a)
    planned_consent = set(plan.filter(pl.col("kind") == "email_consent")["customer_gid"])
    planned_metafields = {
        (r["customer_gid"], r["key"])
        for r in plan.filter(pl.col("kind") == "engagement").iter_rows(named=True)
    }
    assert planned_consent == {f"gid://shopify/Customer/{cid}" for cid in unsubscribing}
    assert planned_metafields, "the engagement feed planned no metafields"

    assert p.writes(handles[0]) == [], "something was pushed before the push"
    pushing = subprocess.Popen(
        [SHOPSYNC, "push", "run", a, "--data-dir", str(p.data)],
        env=p.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    first_write = threading.Event()

    def watch_writes() -> None:
        while pushing.poll() is None and not first_write.is_set():
            if p.writes(handles[0]):
                first_write.set()
            time.sleep(0.02)

    threading.Thread(target=watch_writes, daemon=True).start()
    _kill_when(pushing, first_write, "a push reaching Shopify")
    writes_at_kill = len(p.writes(handles[0]))
    push_attempts = p.cli_until_ok("push", "run", a, "--data-dir", str(p.data))

    phase("intelligence and push, killed mid-push, re-run")

    # 5. Shopify recovers; the next scheduled sync of each shop runs (and applies late webhooks).
    injected = p.devstore.control("GET", "/faults")
    p.devstore.control("DELETE", "/faults")
    _wait_for_deliveries(p)
    assert p.cli("webhooks", "apply", "--data-dir", str(p.data)).returncode == 0
    for domain in (a, b):
        p.run_job("shopify_sync", partition=domain)

    phase("recovery sync")

    # The warehouse equals Shopify, value by value, in every table of both shops.
    mismatches = [m for domain in (a, b) for m in warehouse_mismatches(p.warehouse, p.devstore, domain)]
    assert mismatches == []
    rows_checked = p.query("SELECT sum(estimated_size) FROM duckdb_tables() WHERE schema_name = 'shopify'")[
        0
    ][0]
    duplicates = p.query("SELECT count(*) - count(DISTINCT (shop, id)) FROM shopify.customers")[0][0]
    assert duplicates == 0

    # Every planned push happened exactly once, whatever the kill interrupted.
    writes = p.writes(handles[0])
    consent_writes = Counter(e["target"] for e in writes if e["operation"] == CONSENT_OP)
    assert set(consent_writes) == planned_consent and set(consent_writes.values()) == {1}, consent_writes
    metafield_writes = Counter(
        (e["target"], m["key"])
        for e in writes
        if e["operation"] == "metafieldsSet"
        for m in e["payload"]["metafields"]
    )
    assert planned_metafields <= set(metafield_writes), planned_metafields - set(metafield_writes)
    assert set(metafield_writes.values()) == {1}, {k: n for k, n in metafield_writes.items() if n > 1}
    unsubscribed = p.query(
        "SELECT id FROM shopify.customers WHERE shop = ? AND email_marketing_state = 'UNSUBSCRIBED'", [a]
    )
    assert set(unsubscribing) <= {r[0] for r in unsubscribed}

    # No webhook was lost, and none was taken twice.
    delivered = _wait_for_deliveries(p)
    journal_events = _journal_events(p.data / "webhooks" / "journal.db")
    assert set(delivered) <= set(journal_events)
    assert len(journal_events) == len(set(journal_events))

    # The health figures show what happened.
    health = p.run_job("sync_health")
    figures = pl.from_arrow(
        duckdb.connect(str(p.warehouse), read_only=True)
        .sql(
            "SELECT * FROM ops.sync_health WHERE evaluated_at = (SELECT max(evaluated_at) FROM ops.sync_health)"
        )
        .to_arrow_table()
    )
    assert isinstance(figures, pl.DataFrame)
    used = dict(figures.filter(pl.col("metric") == "api_points_used").select("shop", "value").iter_rows())
    assert used[a] > 0 and used[b] > 0
    webhook_lag = p.query(
        "SELECT count(*) FROM ops.sync_lag WHERE source = 'webhook' AND entity = 'customers'"
    )[0][0]
    assert webhook_lag > 0
    dead = dict(figures.filter(pl.col("metric") == "dead_letters").select("shop", "value").iter_rows())
    assert dead.get(a, 0) == 0
    checks = {c.check_name: c.passed for c in health.get_asset_check_evaluations()}

    counters = injected.get("counters", {})
    deliveries = p.devstore.control("GET", "/webhooks/deliveries")
    summary = {
        "faults_injected": sum(counters.values()),
        "faults": counters,
        "webhook_duplicates_sent": sum(1 for d in deliveries if d["duplicate"]),
        "retries": {"resync_runs": resync_attempts, "push_runs": push_attempts},
        "killed": {"mid_load_after_rows": loaded_before, "mid_push_after_writes": writes_at_kill},
        "rows_checked": int(rows_checked or 0),
        "pushes": {"consent": len(consent_writes), "metafields": len(metafield_writes)},
        "webhooks": {"events": len(set(delivered)), "journalled": len(journal_events)},
        "health_checks": checks,
        "mismatches": len(mismatches),
        "seconds": round(time.monotonic() - started, 1),
        "phases_s": phases,
    }
    line = "fault suite: " + json.dumps(summary, sort_keys=True)
    print(line)
    record_property("summary", line)  # printed at the end of the run (tests/conftest.py)


def _wait_for_deliveries(p: Product, timeout: float = 60) -> list[str]:
    """Event ids the devstore delivered, once every event it emitted got through (late ones too)."""
    deadline = time.monotonic() + timeout
    while True:
        records = p.devstore.control("GET", "/webhooks/deliveries")
        emitted = {r["event_id"] for r in records}
        delivered = {r["event_id"] for r in records if r["ok"]}
        settled = emitted == delivered
        if settled:
            time.sleep(1.5)  # held-back and late copies of the same events
            again = p.devstore.control("GET", "/webhooks/deliveries")
            if len(again) == len(records):
                return sorted(delivered)
        assert time.monotonic() < deadline, sorted(emitted - delivered)[:5]
        time.sleep(0.2)


def _journal_events(path: Path) -> list[str]:
    import sqlite3

    db = sqlite3.connect(path, timeout=30)
    try:
        return [r[0] for r in db.execute("SELECT event_id FROM deliveries")]
    finally:
        db.close()


def _drop_engagement_feed(p: Product, domain: str) -> list[int]:
    """Unsubscribes from five subscribed customers and opens/clicks from ten, as a file in the inbox."""
    state = p.devstore.world.shop(domain)
    assert state is not None
    with state.lock:
        subscribed = sorted(
            cid
            for cid, c in state.records["customers"].items()
            if c.get("email") and c.get("email_consent_state") == "SUBSCRIBED"
        )
        emails = {cid: state.records["customers"][cid]["email"] for cid in subscribed}
    assert len(subscribed) >= 10, "the world has too few subscribed customers"
    now = datetime.now(UTC).replace(microsecond=0)
    events = [
        {"event_id": f"unsub-{cid}", "occurred_at": now.isoformat(), "type": "email_unsubscribe",
         "email": emails[cid], "shop": domain, "campaign": "winter"}
        for cid in subscribed[:5]
    ] + [
        {"event_id": f"{kind}-{cid}", "occurred_at": now.isoformat(), "type": kind,
         "email": emails[cid], "shop": domain, "campaign": "winter"}
        for cid in subscribed[:10]
        for kind in ("email_sent", "email_open", "email_click")
    ]  # fmt: skip
    inbox = p.data / "landing" / "_engagement"
    inbox.mkdir(parents=True, exist_ok=True)
    tmp = inbox / ".winter.jsonl.part"
    tmp.write_text("".join(json.dumps(e) + "\n" for e in events))
    tmp.rename(inbox / "winter.jsonl")
    time.sleep(SETTLE_S + 0.2)  # the inbox takes a file once it has stopped changing
    return subscribed[:5]


def _plan(p: Product, domain: str) -> pl.DataFrame:
    from orchestration.control import ControlSettings, StoreRegistry
    from orchestration.defs.reverse_sync.service import plan_store

    registry = StoreRegistry(ControlSettings(data_dir=p.data))
    try:
        return plan_store(p.warehouse, registry, domain, as_of=datetime.now(UTC)).plan
    finally:
        registry.close()
