"""Extraction under faults: throttle storms, 5xx bursts, resets, failing bulk jobs, and a
fetch process killed while its bulk job runs. Afterwards the warehouse equals the devstore."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from test_sync_pipeline import harness_factory  # noqa: F401  (fixture)

from orchestration.control import EntityState
from orchestration.defs.shopify.jobs import fetch_run_config
from pipelines.shopify.client import ShopifyClient
from pipelines.shopify.cursors import state_path

KILLED_FETCH = """
import sys
from pathlib import Path
from pipelines.shopify import ShopifyClient, fetch_entity
shop, token, base_url, landing, state = sys.argv[1:6]
with ShopifyClient(shop, access_token=token, base_url=base_url) as client:
    fetch_entity(client, shop=shop, entity="customers", landing_root=Path(landing),
                 state_dir=Path(state), mode="bulk")
"""


@pytest.mark.slow
def test_faults_and_a_killed_bulk_fetch_still_end_with_the_truth(
    harness_factory: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the client's backoff shrunk tenfold (its knobs are there for tests): same retries, less sleep
    monkeypatch.setattr(ShopifyClient, "backoff_base_s", 0.05)
    monkeypatch.setattr(ShopifyClient, "backoff_cap_s", 2.0)
    h = harness_factory(stores=1, customers=120, seed=11)
    shop = h.devstore.shops[0]
    domain, handle = shop["domain"], shop["domain"].removesuffix(".myshopify.com")

    # 1. A fetch process submits its bulk job, which runs long, and is killed mid-job.
    h.control("PUT", "/bulk/settings", {"min_seconds": 4})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_FETCH,
            domain,
            shop["access_token"],
            shop["base_url"],
            str(h.paths.landing_path),
            str(h.paths.state_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while h.control("GET", f"/shops/{handle}/counts")["bulk_operations"] == 0:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the fetch never submitted its bulk job"
        time.sleep(0.1)
    time.sleep(0.5)  # let it persist the job id it was given
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    plan_file = state_path(h.paths.state_path, domain, "customers", "bulk")
    assert plan_file.exists(), "the killed run persisted no bulk state to resume from"
    killed_plan = json.loads(plan_file.read_text())
    persisted = {s["job_id"]: s for s in killed_plan["slices"] if s["status"] == "running" and s["job_id"]}
    assert persisted, "the killed run persisted no running bulk job"

    # 2. Shopify misbehaves for the re-run: storms, bursts, resets, bulk jobs failing with partial data.
    h.control("PUT", "/bulk/settings", {"min_seconds": 0})
    profile = {
        "seed": 5,
        "throttle_storm_rate": 0.05,
        "throttle_storm_length": 3,
        "rate_500": 0.04,
        "rate_502": 0.03,
        "rate_503": 0.03,
        "burst_length": 2,
        "reset_rate": 0.03,
        "bulk_fail_rate": 0.3,
        "kinds": ["graphql"],
    }
    h.control("PUT", "/faults", profile)
    try:
        h.sync(domain, fetch_run_config(full=True))
        # the next scheduled run, still under faults: an entity whose slice gave up is Failed
        # and exports again; the rest reads incrementally
        h.sync(domain)
    finally:
        injected = h.control("GET", "/faults")
        h.control("DELETE", "/faults")
    # Faults are random: a slice can fail on every attempt of both runs (the entity then shows
    # Failed). The first run after Shopify recovers must leave nothing behind.
    failed = [e.entity for e in h.registry.entity_statuses(domain) if e.state is EntityState.FAILED]
    h.sync(domain)
    assert all(e.state is EntityState.SYNCED for e in h.registry.entity_statuses(domain)), failed

    # 3. The re-run resumed the killed run's export: it landed the same plan (same upper bound)
    # and polled each persisted job to its end instead of submitting its slice again.
    operations = h.devstore.world.shop(handle).bulk_operations  # type: ignore[union-attr]
    landed = [
        json.loads(p.read_text())
        for p in (h.paths.landing_path / domain / "customers").glob("*.json")
        if json.loads(p.read_text())["mode"] == "bulk"
    ]
    assert [m["extra"]["started_at"] for m in landed if not m["partial"]] == [killed_plan["started_at"]]
    for job_id, piece in persisted.items():
        job = operations[int(job_id.rsplit("/", 1)[-1])]  # the devstore keys jobs by number
        assert job["status"] == "COMPLETED", job
        same_slice = [op["id"] for op in operations.values() if op["query"] == job["query"]]
        assert same_slice == [job["id"]], f"slice {piece['start']}..{piece['end']} was submitted again"

    assert h.mismatches(domain) == []
    duplicates = h.query("SELECT count(*) - count(DISTINCT (shop, id)) FROM shopify.customers")[0][0]
    assert duplicates == 0
    print(json.dumps({"faults": injected.get("counters", injected), "failed_before_recovery": failed}))
