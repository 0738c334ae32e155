"""Fixtures of the store-operations tests: one synced template (both shops, intelligence run,
ledger rows), copied for every test that changes it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from store_ops_support import Ops, start_devstore, subscribe_privacy_topics

from orchestration.commands.stores import launch_sync
from orchestration.commands.webhooks import register_subscriptions
from orchestration.defs.instance import ensure_warehouse_pool
from orchestration.defs.intelligence.definitions import build_intelligence_defs
from orchestration.defs.shopify.resources import SyncPaths
from pipelines import sync_log
from pipelines.shopify.client import ShopifyClient


def _ledger_rows(warehouse: Path, shops: list[str]) -> None:
    """A push-ledger row and an engagement event per shop, so every kind of table holds both stores."""
    con = duckdb.connect(str(warehouse))
    try:
        sync_log.ensure_schema(con)
        now = datetime(2026, 11, 1, tzinfo=UTC)
        for shop in shops:
            customer = con.execute(
                "SELECT id, email FROM shopify.customers WHERE shop = ? AND email IS NOT NULL ORDER BY id LIMIT 1",
                [shop],
            ).fetchone()
            assert customer is not None
            con.execute(
                "INSERT INTO sync.push_log (run_id, logged_at, shop, customer_id, kind, key, operation, outcome, "
                "error, payload_hash, write_id) VALUES ('run', ?, ?, ?, 'profile', 'first_name', 'customerUpdate', "
                "'written', NULL, 'h', 'w')",
                [now, shop, customer[0]],
            )
            con.execute(
                "INSERT INTO sync.pushed_state (shop, customer_id, kind, key, payload, pushed_at) "
                "VALUES (?, ?, 'profile', 'first_name', ?, ?)",
                [shop, customer[0], '{"firstName": "Pushed"}', now],
            )
            con.execute(
                "INSERT INTO engagement.events (event_id, occurred_at, type, email, shop) VALUES (?, ?, 'email_open', ?, ?)",
                [f"ev-{shop}", now, customer[1], shop],
            )
    finally:
        con.close()


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One initial sync of both shops (connect with webhooks, then a Dagster run each), reused by copy."""
    root = tmp_path_factory.mktemp("ops_template")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(root / "dagster_home"))
        store = start_devstore()
        o = Ops(store, root / "data")
        try:
            for shop in o.shops:
                outcome = launch_sync(o.registry, shop["domain"], trigger="test")
                assert outcome["success"], o.registry.entity_statuses(shop["domain"])
            # identity, metrics, consent, contacts and the analyst snapshot over both stores
            instance = dg.DagsterInstance.ephemeral()
            ensure_warehouse_pool(instance)
            job = build_intelligence_defs(SyncPaths.under(root / "data")).resolve_job_def(
                "intelligence_refresh"
            )
            assert job.execute_in_process(instance=instance).success
            _ledger_rows(root / "data" / "warehouse.duckdb", [s["domain"] for s in o.shops])
        finally:
            o.close()
            store.stop()
    yield root / "data"


@pytest.fixture
def ops(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ops]:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    shutil.copytree(template, tmp_path / "data")
    store = start_devstore()
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
    subscribe_privacy_topics(o)
    yield o
    o.close()
    store.stop()
