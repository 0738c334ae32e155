"""Shopify runs at most five bulk queries per app and shop. Exports of one shop (one process
per entity under Dagster) take turns through shared slots; jobs the slots do not know of
(another machine's, a dead process's) end in LIMIT_REACHED, and the export waits and submits."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstore.server import RunningDevstore, create_world, start_in_thread
from pipelines.shopify import FetchSettings, ShopifyClient, fetch_entity
from pipelines.shopify import documents as docs
from pipelines.shopify.bulk import BulkSlots, submit

FAST = FetchSettings(poll_interval_s=0.05, max_poll_interval_s=0.2)

EXPORT = """
import json, sys
from pathlib import Path
from pipelines.shopify import FetchSettings, ShopifyClient, fetch_entity
shop, token, base_url, entity, work, shared = sys.argv[1:7]
work = Path(work)
settings = FetchSettings(poll_interval_s=0.05, max_poll_interval_s=0.2, initial_slices=4)
with ShopifyClient(shop, access_token=token, base_url=base_url, shared_dir=Path(shared) if shared else None) as client:
    result = fetch_entity(client, shop=shop, entity=entity, landing_root=work / "landing",
                          state_dir=work / "state", mode="bulk", scopes={"read_customers", "read_orders", "read_all_orders"},
                          settings=settings)
    print(json.dumps({"rows": result.rows, "warnings": result.warnings}))
"""


@pytest.fixture
def store() -> Iterator[RunningDevstore]:
    running = start_in_thread(create_world(stores=1, customers=40, seed=41, plan="plus"), port=0)
    yield running
    running.stop()


def _handle(running: RunningDevstore) -> str:
    return str(running.shops[0]["domain"]).removesuffix(".myshopify.com")


def _limit_reached(running: RunningDevstore) -> int:
    log = running.control(
        "GET", f"/shops/{_handle(running)}/write_log?operation=bulkOperationRunQuery&outcome=LIMIT_REACHED"
    )
    entries = log.get("entries", log) if isinstance(log, dict) else log
    return len(entries)


def _most_at_once(running: RunningDevstore) -> int:
    """The most bulk jobs the shop ran at the same time (from their created/completed times)."""
    state = running.world.shop(_handle(running))
    assert state is not None
    events = []
    for op in state.bulk_operations.values():
        events.append((op["created_at"], 1))
        events.append((op["completed_at"], -1))
    most = current = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        current += step
        most = max(most, current)
    return most


def _export_concurrently(running: RunningDevstore, work: Path, shared: Path | None) -> list[dict[str, Any]]:
    shop = running.shops[0]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                EXPORT,
                shop["domain"],
                shop["access_token"],
                shop["base_url"],
                entity,
                str(work / entity),
                str(shared or ""),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for entity in ("customers", "orders")
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


@pytest.mark.slow
def test_two_processes_exporting_one_shop_share_its_five_bulk_slots(
    store: RunningDevstore, tmp_path: Path
) -> None:
    # jobs run long enough that the two exports' slices (three closed ones each) overlap
    store.control("PUT", "/bulk/settings", {"min_seconds": 1.0})
    reports = _export_concurrently(store, tmp_path / "shared", tmp_path / "slots")
    assert all(r["rows"] > 0 and not r["warnings"] for r in reports), reports
    assert _limit_reached(store) == 0
    assert _most_at_once(store) == 5
    assert BulkSlots(tmp_path / "slots" / f"{store.shops[0]['domain']}.bulk_slots.json", 5).count() == 0


def test_limit_reached_defers_the_submission_until_a_job_finishes(
    store: RunningDevstore, tmp_path: Path
) -> None:
    shop = store.shops[0]
    store.control("PUT", "/bulk/settings", {"min_seconds": 1.0})
    with ShopifyClient(shop["domain"], access_token=shop["access_token"], base_url=shop["base_url"]) as other:
        # five jobs this export's slots know nothing of (another machine's, say) hold Shopify's limit
        for _ in range(5):
            submit(other, docs.inline_bulk_query(docs.load("products.bulk"), {"query": None}))
    started = time.monotonic()
    with ShopifyClient(
        shop["domain"],
        access_token=shop["access_token"],
        base_url=shop["base_url"],
        shared_dir=tmp_path / "slots",
    ) as client:
        result = fetch_entity(
            client,
            shop=shop["domain"],
            entity="customers",
            landing_root=tmp_path / "landing",
            state_dir=tmp_path / "state",
            mode="bulk",
            scopes={"read_customers"},
            settings=FetchSettings(poll_interval_s=0.05, max_poll_interval_s=0.2, initial_slices=1),
        )
    assert _limit_reached(store) >= 1
    assert time.monotonic() - started >= 1.0  # it waited for the other jobs
    customers = store.world.shop(_handle(store)).records["customers"]  # type: ignore[union-attr]
    parents = [
        line
        for manifest in result.batches
        for line in (tmp_path / "landing" / manifest.shop / manifest.entity / manifest.data_path_name)
        .read_text()
        .splitlines()
        if '"__parentId"' not in line
    ]
    assert not result.warnings and len(parents) == len(customers)
