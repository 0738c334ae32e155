"""Store operations against the devstore over real HTTP and a real DuckDB warehouse.

Webhooks end to end (devstore change → receiver → apply → load → warehouse), the status
transitions, the health checklist for each failure the devstore can cause, status cards,
retry / re-sync without duplicates, disconnect / reconnect keeping data, delete removing
exactly one store.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
import uvicorn
from click.testing import CliRunner

from devstore.server import RunningDevstore, create_world, start_in_thread
from orchestration.cli import cli
from orchestration.commands.stores import launch_sync
from orchestration.commands.webhooks import apply_and_load, register_subscriptions, registry_lookup
from orchestration.control import ControlSettings, EntityState, StoreRegistry, StoreStatus
from orchestration.control.health import API, INITIAL_SYNC, OAUTH, SCOPES, check_health
from orchestration.control.status import mark_sync_failed
from pipelines import landing
from pipelines.shopify.client import ShopifyClient
from pipelines.webhooks.journal import Journal
from pipelines.webhooks.receiver import create_receiver

WORLD = {"stores": 2, "customers": 20, "seed": 5}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_devstore() -> RunningDevstore:
    # Same seed, same world and tokens: a fresh devstore matches the synced template.
    return start_in_thread(create_world(**WORLD), webhooks=True, webhook_time_scale=0.001)


class Receiver:
    """``shopsync webhooks serve``'s app in a thread, with secrets from the registry."""

    def __init__(self, registry: StoreRegistry, data_dir: Path) -> None:
        self.journal = Journal(data_dir / "webhooks" / "journal.db")
        app = create_receiver(
            self.journal,
            registry_lookup(registry, ttl_s=0.0),
            landing_root=data_dir / "landing",
            seal_interval=0.1,
        )
        port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}/webhooks"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.journal.close()


class Ops:
    """A devstore with two shops, both connected (webhooks subscribed) and synced."""

    def __init__(self, store: RunningDevstore, data_dir: Path, *, connect: bool = True) -> None:
        self.store = store
        self.data_dir = data_dir
        self.registry = StoreRegistry(ControlSettings(data_dir=data_dir))
        self.receiver = Receiver(self.registry, data_dir)
        self.runner = CliRunner()
        self.shops = store.shops
        if not connect:
            return
        for shop in self.shops:
            result = self.cli(
                "stores",
                "connect",
                shop["domain"],
                "--token",
                shop["access_token"],
                "--base-url",
                shop["base_url"],
                "--client-secret",
                shop["client_secret"],
                "--webhook-url",
                self.receiver.url,
            )
            assert result.exit_code == 0, result.output
            assert "Subscribed" in result.output and shop["client_secret"] not in result.output

    def cli(self, *args: str, input: str | None = None) -> Any:
        return self.runner.invoke(cli, [*args, "--data-dir", str(self.data_dir)], input=input)

    def handle(self, i: int) -> str:
        return str(self.shops[i]["domain"]).removesuffix(".myshopify.com")

    def control(self, method: str, path: str, body: Any = None) -> httpx.Response:
        response = httpx.request(method, f"{self.store.url}/_devstore{path}", json=body, timeout=10)
        assert response.status_code < 300, response.text
        return response

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(self.data_dir / "warehouse.duckdb"), read_only=True)
        try:
            return con.execute(query, list(params)).fetchall()
        finally:
            con.close()

    def wait_webhooks(self, shop: str, topic: str, n: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``n`` deliveries of ``topic`` reached the receiver, then for the seal."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = httpx.get(
                f"{self.store.url}/_devstore/webhooks/deliveries",
                params={"shop": shop, "topic": topic},
                timeout=5,
            ).json()
            if sum(1 for r in records if r.get("ok")) >= n:
                break
            time.sleep(0.05)
        time.sleep(0.4)  # the receiver seals every 0.1 s

    def close(self) -> None:
        self.receiver.stop()
        self.registry.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One initial sync of both shops (connect with webhooks, then a Dagster run each), reused by copy."""
    root = tmp_path_factory.mktemp("ops_template")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(root / "dagster_home"))
        store = _start_devstore()
        o = Ops(store, root / "data")
        try:
            for shop in o.shops:
                outcome = launch_sync(o.registry, shop["domain"], trigger="test")
                assert outcome["success"], o.registry.entity_statuses(shop["domain"])
        finally:
            o.close()
            store.stop()
    yield root / "data"


@pytest.fixture
def ops(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ops]:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    shutil.copytree(template, tmp_path / "data")
    store = _start_devstore()
    o = Ops(store, tmp_path / "data", connect=False)
    for shop in o.shops:
        # The copied registry points at the template's devstore port; reconnecting keeps the history.
        o.registry.connect_store(
            shop["domain"],
            access_token=shop["access_token"],
            api_base_url=shop["base_url"],
            scopes=shop["scopes"],
            extra_credentials={"client_secret": shop["client_secret"]},
        )
        with ShopifyClient(shop["domain"], access_token=shop["access_token"], base_url=shop["base_url"]) as c:
            register_subscriptions(c, o.receiver.url)
    yield o
    o.close()
    store.stop()


def _customer_rows(ops: Ops, shop: str) -> int:
    return ops.sql("SELECT count(*) FROM shopify.customers WHERE shop = ? AND _deleted_at IS NULL", shop)[0][
        0
    ]


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

    before = _customer_rows(ops, shop)
    ops.control("DELETE", f"/shops/{ops.handle(0)}/records/customers/{second}")
    ops.wait_webhooks(shop, "customers/delete")
    outcome = apply_and_load(ops.registry, ops.data_dir)
    assert outcome[shop]["deleted"] == 1, outcome
    deleted = ops.sql(
        "SELECT _deleted_at IS NOT NULL FROM shopify.customers WHERE shop = ? AND id = ?", shop, second
    )
    assert deleted == [(True,)]
    assert _customer_rows(ops, shop) == before - 1
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
    rows = _customer_rows(ops, shop1)
    token = ops.control("POST", f"/shops/{ops.handle(1)}/reinstall", {}).json()["access_token"]
    reconnected = ops.cli("stores", "reconnect", shop1, "--token", token)
    assert reconnected.exit_code == 0, reconnected.output
    assert ops.registry.get_store(shop1).status is StoreStatus.CONNECTED
    assert ops.registry.credentials(shop1)["client_secret"] == ops.shops[1]["client_secret"]
    assert _customer_rows(ops, shop1) == rows
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


def test_delete_removes_exactly_that_store(ops: Ops) -> None:
    shop0, shop1 = ops.shops[0]["domain"], ops.shops[1]["domain"]
    other_before = _customer_rows(ops, shop1)
    assert _customer_rows(ops, shop0) > 0
    refused = ops.cli("stores", "delete", shop0, input="wrong\n")
    assert refused.exit_code == 1 and _customer_rows(ops, shop0) > 0

    deleted = ops.cli("stores", "delete", shop0, input=f"{shop0}\n")
    assert deleted.exit_code == 0, deleted.output
    assert "shopify.customers" in deleted.output and "Shopify grant: revoked" in deleted.output
    assert ops.sql("SELECT count(*) FROM shopify.customers WHERE shop = ?", shop0) == [(0,)]
    assert ops.sql("SELECT count(*) FROM shopify.orders WHERE shop = ?", shop0) == [(0,)]
    assert _customer_rows(ops, shop1) == other_before
    assert not (ops.data_dir / "landing" / shop0).exists()
    assert (ops.data_dir / "landing" / shop1).exists()
    assert [s.domain for s in ops.registry.list_stores()] == [shop1]
    # the old token no longer works on the shop
    response = httpx.post(
        ops.shops[0]["base_url"] + "/admin/api/2026-10/graphql.json",
        json={"query": "{ shop { name } }"},
        headers={"X-Shopify-Access-Token": ops.shops[0]["access_token"]},
        timeout=10,
    )
    assert response.status_code == 401


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
