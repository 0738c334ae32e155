"""Store operations against the devstore over real HTTP and a real DuckDB warehouse.

Webhooks end to end (devstore change → receiver → apply → load → warehouse), the status
transitions, the health checklist for each failure the devstore can cause, status cards,
retry / re-sync without duplicates, disconnect / reconnect keeping data (delete and the
privacy topics: test_ops_privacy.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from store_ops_support import Ops, customer_rows

from devstore.server import RunningDevstore
from orchestration.commands.webhooks import apply_and_load
from orchestration.control import ControlSettings, EntityState, StoreRegistry, StoreStatus
from orchestration.control.health import API, INITIAL_SYNC, OAUTH, SCOPES, check_health
from orchestration.control.status import mark_sync_failed
from pipelines import landing


def test_webhook_change_and_delete_reach_the_warehouse(ops: Ops) -> None:
    shop = ops.shops[0]["domain"]
    records = ops.control("GET", f"/shops/{ops.handle(0)}/records/customers?limit=2").json()
    first, second = records[0]["id"], records[1]["id"]
    ops.control("PATCH", f"/shops/{ops.handle(0)}/records/customers/{first}", {"first_name": "Webhooked"})
    ops.wait_webhooks(shop, "customers/update")
    outcome = apply_and_load(ops.registry, ops.data_dir)
    assert outcome[shop]["refetched"] >= 1, outcome
    assert ops.sql("SELECT first_name FROM shopify.customers WHERE shop = ? AND id = ?", shop, first) == [
        ("Webhooked",)
    ]

    before = customer_rows(ops, shop)
    ops.control("DELETE", f"/shops/{ops.handle(0)}/records/customers/{second}")
    ops.wait_webhooks(shop, "customers/delete")
    outcome = apply_and_load(ops.registry, ops.data_dir)
    assert outcome[shop]["deleted"] == 1, outcome
    deleted = ops.sql(
        "SELECT _deleted_at IS NOT NULL FROM shopify.customers WHERE shop = ? AND id = ?", shop, second
    )
    assert deleted == [(True,)]
    assert customer_rows(ops, shop) == before - 1
    # applied once: a second pass finds nothing
    assert apply_and_load(ops.registry, ops.data_dir)[shop]["deliveries"] == 0

    cards = ops.cli("status", "--json")
    assert cards.exit_code == 0, cards.output
    assert '"dead_letters": 0' in cards.output and '"webhook_lag_s": null' in cards.output


def test_disconnected_store_webhooks_are_dropped_and_uninstall_requires_reconnect(ops: Ops) -> None:
    shop0, shop1 = ops.shops[0]["domain"], ops.shops[1]["domain"]
    assert ops.cli("stores", "disconnect", shop0).exit_code == 0
    assert ops.registry.get_store(shop0).status is StoreStatus.DISCONNECTED
    first = ops.control("GET", f"/shops/{ops.handle(0)}/records/customers?limit=1").json()[0]["id"]
    ops.control("PATCH", f"/shops/{ops.handle(0)}/records/customers/{first}", {"first_name": "Ignored"})
    ops.wait_webhooks(shop0, "customers/update")
    assert shop0 not in apply_and_load(ops.registry, ops.data_dir)
    assert ops.sql("SELECT count(*) FROM shopify.customers WHERE first_name = 'Ignored'") == [(0,)]

    ops.control("POST", f"/shops/{ops.handle(1)}/uninstall", {})
    ops.wait_webhooks(shop1, "app/uninstalled")
    outcome = apply_and_load(ops.registry, ops.data_dir)
    assert outcome[shop1]["uninstalled"] is True
    store = ops.registry.get_store(shop1)
    assert store.status is StoreStatus.RECONNECT_REQUIRED and "uninstalled" in (store.status_detail or "")
    listed = ops.cli("status")
    assert "Reconnect required" in listed.output and "Disconnected" in listed.output


def test_health_checklist_for_each_failure(ops: Ops) -> None:
    shop = ops.shops[0]["domain"]
    healthy = ops.cli("stores", "health", shop)
    assert healthy.exit_code == 0, healthy.output
    assert healthy.output.count("PASS") == 5 and "currency" in healthy.output
    report = check_health(ops.registry, shop)
    assert report.healthy and report.details["domain"] == shop and report.status is StoreStatus.CONNECTED

    # removed scope -> All scopes granted fails -> Reconnect required
    ops.control("POST", f"/shops/{ops.handle(0)}/scopes/remove", {"scope": "read_orders"})
    ops.control("POST", f"/shops/{ops.handle(0)}/scopes/remove", {"scope": "write_orders"})
    report = check_health(ops.registry, shop)
    assert not report.item(SCOPES).passed and "read_orders" in report.item(SCOPES).detail
    assert report.item(OAUTH).passed and report.status is StoreStatus.RECONNECT_REQUIRED
    assert "reconnect" in report.item(SCOPES).fix

    # revoked token -> OAuth connected and API responding fail
    ops.control("POST", f"/shops/{ops.handle(0)}/tokens/revoke", {"all": True})
    failed = ops.cli("stores", "health", shop)
    assert failed.exit_code == 1 and "FAIL  OAuth connected" in failed.output
    assert "Traceback" not in failed.output and ops.shops[0]["access_token"] not in failed.output
    report = check_health(ops.registry, shop)
    assert not report.item(OAUTH).passed and not report.item(API).passed
    assert report.status is StoreStatus.RECONNECT_REQUIRED

    # uninstalled app (other shop) -> OAuth fails too
    shop1 = ops.shops[1]["domain"]
    ops.control("POST", f"/shops/{ops.handle(1)}/uninstall", {})
    report = check_health(ops.registry, shop1)
    assert not report.item(OAUTH).passed and report.status is StoreStatus.RECONNECT_REQUIRED

    # reinstall + reconnect -> Connected, data and client secret kept
    rows = customer_rows(ops, shop1)
    token = ops.control("POST", f"/shops/{ops.handle(1)}/reinstall", {}).json()["access_token"]
    reconnected = ops.cli("stores", "reconnect", shop1, "--token", token)
    assert reconnected.exit_code == 0, reconnected.output
    assert ops.registry.get_store(shop1).status is StoreStatus.CONNECTED
    assert ops.registry.credentials(shop1)["client_secret"] == ops.shops[1]["client_secret"]
    assert customer_rows(ops, shop1) == rows
    assert check_health(ops.registry, shop1).healthy


def test_no_initial_sync_fails_health_with_error(
    devstore_factory: Callable[..., RunningDevstore], tmp_path: Path
) -> None:
    store = devstore_factory(stores=1, customers=5, seed=1)
    shop = store.shops[0]
    registry = StoreRegistry(ControlSettings(data_dir=tmp_path))
    registry.connect_store(
        shop["domain"],
        access_token=shop["access_token"],
        api_base_url=shop["base_url"],
        scopes=shop["scopes"],
    )
    report = check_health(registry, shop["domain"])
    assert [i.name for i in report.items if not i.passed] == [INITIAL_SYNC]
    assert "resync" in report.item(INITIAL_SYNC).fix and report.status is StoreStatus.ERROR
    assert registry.get_store(shop["domain"]).status is StoreStatus.ERROR
    registry.close()


@pytest.mark.slow
def test_sync_failure_is_error_then_retry_and_resync_recover_without_duplicates(ops: Ops) -> None:
    shop = ops.shops[0]["domain"]
    counts = {
        t: ops.sql(f"SELECT count(*) FROM shopify.{t} WHERE shop = ?", shop)[0][0]
        for t in ("customers", "orders")
    }
    # a landing batch the loader cannot read makes the orders load fail
    bad = landing.write_batch(ops.data_dir / "landing", shop, "orders", "incremental", ["this is not JSON"])
    failed = ops.cli("stores", "retry", shop, "orders")
    assert failed.exit_code == 1 and "Traceback" not in failed.output
    assert ops.registry.entity_status(shop, "orders").state is EntityState.FAILED
    assert ops.registry.get_store(shop).status is StoreStatus.ERROR
    # the fix: the broken batch goes; the retry then succeeds and the store is Connected again
    for suffix in (".jsonl", ".json"):
        (ops.data_dir / "landing" / shop / "orders" / f"{bad.batch_id}{suffix}").unlink()

    retried = ops.cli("stores", "retry", shop, "orders")
    assert retried.exit_code == 0, retried.output
    assert ops.registry.entity_status(shop, "orders").state is EntityState.SYNCED
    assert ops.registry.get_store(shop).status is StoreStatus.CONNECTED

    resynced = ops.cli("stores", "resync", shop)
    assert resynced.exit_code == 0, resynced.output
    for table, n in counts.items():
        assert ops.sql(f"SELECT count(*) FROM shopify.{table} WHERE shop = ?", shop)[0][0] == n
        dupes = ops.sql(
            f"SELECT count(*) FROM (SELECT id FROM shopify.{table} GROUP BY shop, id HAVING count(*) > 1)"
        )
        assert dupes == [(0,)]

    # a failure never overrides Reconnect required
    ops.registry.set_store_status(shop, StoreStatus.RECONNECT_REQUIRED, "test")
    mark_sync_failed(ops.registry, shop, "boom")
    assert ops.registry.get_store(shop).status is StoreStatus.RECONNECT_REQUIRED


def test_sensor_applies_webhooks_for_the_landing_loader(ops: Ops) -> None:
    import dagster as dg

    from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths
    from orchestration.defs.webhooks.definitions import webhook_apply_sensor
    from pipelines.loader import load_pending

    shop = ops.shops[1]["domain"]
    first = ops.control("GET", f"/shops/{ops.handle(1)}/records/products?limit=1").json()[0]["id"]
    ops.control("PATCH", f"/shops/{ops.handle(1)}/records/products/{first}", {"title": "Sensor Title"})
    ops.wait_webhooks(shop, "products/update")
    paths = SyncPaths.under(ops.data_dir)
    with dg.build_sensor_context(
        resources={"stores": ShopifyStores(data_dir=str(ops.data_dir)), "paths": paths}
    ) as context:
        skip = webhook_apply_sensor(context)
    assert "1 re-read" in str(skip.skip_message), skip
    pending = landing.pending_batches(paths.landing_path, shop, "products")
    assert len(pending) == 1 and pending[0][0].mode == "incremental"
    load_pending(paths.warehouse_path, paths.landing_path, shop=shop)
    assert ops.sql("SELECT title FROM shopify.products WHERE shop = ? AND id = ?", shop, first) == [
        ("Sensor Title",)
    ]


def test_webhooks_of_an_entity_turned_off_are_acknowledged_and_not_applied(ops: Ops) -> None:
    shop = ops.shops[0]["domain"]
    first = ops.control("GET", f"/shops/{ops.handle(0)}/records/customers?limit=1").json()[0]["id"]
    ops.registry.set_inbound_toggles(shop, {"customer_profiles": False})
    ops.control("PATCH", f"/shops/{ops.handle(0)}/records/customers/{first}", {"first_name": "NotImported"})
    ops.wait_webhooks(shop, "customers/update")
    outcome = apply_and_load(ops.registry, ops.data_dir)
    assert outcome[shop]["refetched"] == 0 and outcome[shop]["deliveries"] >= 1, outcome
    assert ops.sql("SELECT first_name FROM shopify.customers WHERE shop = ? AND id = ?", shop, first) != [
        ("NotImported",)
    ]
    # applied (acknowledged), not kept waiting: turning the toggle on does not replay it
    ops.registry.set_inbound_toggles(shop, {"customer_profiles": True})
    assert apply_and_load(ops.registry, ops.data_dir)[shop]["deliveries"] == 0


def test_shopify_5xx_fails_api_responding_alone(
    devstore_factory: Callable[..., RunningDevstore], tmp_path: Path
) -> None:
    store = devstore_factory(stores=1, customers=5, seed=2)
    shop = store.shops[0]
    registry = StoreRegistry(ControlSettings(data_dir=tmp_path))
    registry.connect_store(
        shop["domain"],
        access_token=shop["access_token"],
        api_base_url=shop["base_url"],
        scopes=shop["scopes"],
    )
    for entity in registry.enabled_entities(shop["domain"]):
        registry.mark_entity(shop["domain"], entity, EntityState.SYNCED, bulk_synced_at=datetime.now(UTC))
    store.control("PUT", "/faults", {"rate_500": 1.0, "kinds": ["graphql"]})
    report = check_health(registry, shop["domain"])
    assert [i.name for i in report.items if not i.passed] == [API]
    assert "last reported" in report.item(SCOPES).detail
    assert report.status is StoreStatus.ERROR and "API responding" in (
        registry.get_store(shop["domain"]).status_detail or ""
    )
    store.control("DELETE", "/faults")
    healed = check_health(registry, shop["domain"])
    assert healed.healthy and healed.status is StoreStatus.CONNECTED
    registry.close()


def test_an_old_delivery_never_regresses_a_newer_row(ops: Ops) -> None:
    """Deliveries only say *which* record changed: apply re-reads the record as it is now, and the
    loader keeps whichever version has the later updated_at, so a days-late payload cannot win."""
    from pipelines.webhooks.verify import sign

    shop = ops.shops[0]["domain"]
    cid = ops.control("GET", f"/shops/{ops.handle(0)}/records/customers?limit=3").json()[2]["id"]
    ops.control("PATCH", f"/shops/{ops.handle(0)}/records/customers/{cid}", {"first_name": "Current"})
    ops.wait_webhooks(shop, "customers/update")
    apply_and_load(ops.registry, ops.data_dir)
    held = ops.sql(
        "SELECT first_name, updated_at FROM shopify.customers WHERE shop = ? AND id = ?", shop, cid
    )
    assert held[0][0] == "Current"

    # a late redelivery of an old version (new event id, older updated_at, old values)
    old = json.dumps(
        {
            "id": cid,
            "admin_graphql_api_id": f"gid://shopify/Customer/{cid}",
            "first_name": "Stale",
            "updated_at": "2020-01-01T00:00:00Z",
        }
    ).encode()
    reply = httpx.post(
        ops.receiver.url,
        content=old,
        headers={
            "Content-Type": "application/json",
            "X-Shopify-Hmac-Sha256": sign(old, ops.shops[0]["client_secret"]),
            "X-Shopify-Topic": "customers/update",
            "X-Shopify-Shop-Domain": shop,
            "X-Shopify-Event-Id": "late-old-version",
            "X-Shopify-Triggered-At": "2020-01-01T00:00:00Z",
        },
        timeout=10,
    )
    assert reply.status_code == 200 and reply.json()["status"] in ("accepted", "stale")
    time.sleep(0.4)
    apply_and_load(ops.registry, ops.data_dir)
    after = ops.sql(
        "SELECT first_name, updated_at FROM shopify.customers WHERE shop = ? AND id = ?", shop, cid
    )
    assert after[0][0] == "Current" and after[0][1] >= held[0][1]
