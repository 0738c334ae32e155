"""Fixtures for the reverse sync tests.

``store`` / ``client``: a one-shop devstore over real HTTP and the shared client for it.
``pipeline``: a warehouse built by the real pipeline (devstore → shopify_sync → intelligence),
copied per test, a fresh devstore holding the same shop, the control plane and every
definition merged, so tests drive the real assets, sensors and schedules.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx
import pytest

from devstore.server import RunningDevstore, create_world, start_in_thread
from orchestration.control import ControlSettings, StoreRegistry
from orchestration.defs.instance import ensure_warehouse_pool
from orchestration.defs.intelligence.definitions import build_intelligence_defs
from orchestration.defs.reverse_sync.definitions import build_reverse_sync_defs
from orchestration.defs.shopify.definitions import build_shopify_defs
from orchestration.defs.shopify.jobs import fetch_key, table_key
from orchestration.defs.shopify.partitions import add_store_partition
from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths
from pipelines.shopify.client import ShopifyClient

# the devstore test helpers live beside the devstore tests (no package there)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "devstore"))
from ops_support import Store, start_store


@pytest.fixture
def store() -> Iterator[Store]:
    """A fresh one-shop devstore (40 customers) with the app installed."""
    running = start_store(customers=40, seed=11)
    yield running
    running.stop()


@pytest.fixture
def client(store: Store) -> Iterator[ShopifyClient]:
    """The shared Shopify client pointed at the devstore shop, with test-sized backoff."""
    c = ShopifyClient(
        store.shop.domain, access_token=store.token, base_url=f"{store.url}/shops/{store.shop.handle}"
    )
    c.backoff_base_s = 0.01
    c.backoff_cap_s = 0.05
    yield c
    c.close()


# ---- a warehouse built by the real pipeline --------------------------------------------------
# The world is generated from a seed, so a fresh devstore per test holds exactly what the
# session's warehouse was synced from: the slow sync runs once, each test mutates its own copy.

SEED = 7
CUSTOMERS = 30


@dataclass
class Synced:
    """A data folder whose warehouse holds one synced store and its intelligence tables."""

    data_dir: Path
    domain: str


def _defs(stores: ShopifyStores, paths: SyncPaths) -> dg.Definitions:
    return dg.Definitions.merge(
        build_shopify_defs(stores=stores, paths=paths),
        build_intelligence_defs(paths),
        build_reverse_sync_defs(paths),
    )


def _world() -> RunningDevstore:
    return start_in_thread(
        create_world(stores=1, customers=CUSTOMERS, seed=SEED, plan="plus"), webhooks=False
    )


@pytest.fixture(scope="session")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synced]:
    data_dir = tmp_path_factory.mktemp("reverse_synced")
    devstore = _world()
    try:
        registry = StoreRegistry(ControlSettings(data_dir=data_dir))
        shop = devstore.shops[0]
        registry.connect_store(
            shop["domain"],
            access_token=shop["access_token"],
            api_base_url=shop["base_url"],
            scopes=shop["scopes"],
        )
        registry.close()
        instance = dg.DagsterInstance.ephemeral()
        add_store_partition(instance, shop["domain"])
        paths = SyncPaths.under(data_dir)
        defs = _defs(ShopifyStores(data_dir=str(data_dir), bulk_poll_interval_s=0.05), paths)
        assert (
            defs.resolve_job_def("shopify_sync")
            .execute_in_process(instance=instance, partition_key=shop["domain"])
            .success
        )
        assert defs.resolve_job_def("intelligence_refresh").execute_in_process(instance=instance).success
    finally:
        devstore.stop()
    yield Synced(data_dir, shop["domain"])


@dataclass
class Pipeline:
    """A copy of the synced data folder, a fresh devstore with the same shop, and every definition."""

    devstore: RunningDevstore
    domain: str
    data_dir: Path
    paths: SyncPaths
    stores: ShopifyStores
    registry: StoreRegistry
    instance: dg.DagsterInstance
    defs: dg.Definitions

    @property
    def shop(self) -> Any:
        """The devstore's state of the shop (lock it to read)."""
        return self.devstore.world.shop(self.domain)

    @property
    def handle(self) -> str:
        return self.domain.removesuffix(".myshopify.com")

    def run(self, job: str, **kwargs: Any) -> dg.ExecuteInProcessResult:
        """Execute a job in process on the test's instance and require success."""
        result = self.defs.resolve_job_def(job).execute_in_process(instance=self.instance, **kwargs)
        assert result.success, [e.event_specific_data for e in result.all_events if e.is_failure]
        return result

    def launch(self, job: str, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """Run what a sensor or schedule asked for, as the daemon would."""
        return self.run(
            job,
            run_config=request.run_config or None,
            partition_key=request.partition_key,
            tags=request.tags,
        )

    def tick(self, sensor: str, cursor: str | None = None) -> dg.SensorResult:
        """Evaluate a sensor once with the definitions' resources."""
        definition = self.defs.resolve_sensor_def(sensor)
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=cursor,
            sensor_name=sensor,
            resources={"paths": self.paths, "stores": self.stores},
        ) as context:
            result = definition(context)
        if isinstance(result, dg.SkipReason):
            return dg.SensorResult(skip_reason=result, cursor=cursor)
        if isinstance(result, list):
            return dg.SensorResult(run_requests=result, cursor=cursor)
        assert isinstance(result, dg.SensorResult)
        return result

    def sync_customers(self) -> None:
        """An incremental read of the store's customers into the warehouse (what the 15-minute sync does)."""
        self.run(
            "shopify_sync",
            partition_key=self.domain,
            asset_selection=[fetch_key("customers"), table_key("customers")],
        )

    def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """A call to the shop's Admin API as a staff app would make it."""
        response = httpx.post(
            self.devstore.graphql_url(self.domain),
            json={"query": query, "variables": variables or {}},
            headers={"X-Shopify-Access-Token": self.devstore.token(self.domain)},
            timeout=30,
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        assert not body.get("errors"), body
        return body["data"]

    def writes(self, operation: str | None = None) -> list[dict[str, Any]]:
        """Mutations Shopify applied (the devstore's write log), optionally of one operation."""
        entries = self.devstore.control("GET", f"/shops/{self.handle}/write_log")
        return [
            e
            for e in entries
            if e["outcome"] == "ok"
            and not e["operation"].startswith("control.")
            and (operation is None or e["operation"] == operation)
        ]

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows from the warehouse (read only)."""
        con = duckdb.connect(str(self.paths.warehouse_path), read_only=True)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()


@pytest.fixture
def pipeline(synced: Synced, tmp_path: Path) -> Iterator[Pipeline]:
    """The synced store in a fresh devstore and a copy of its data folder, with every definition."""
    data_dir = tmp_path / "data"
    shutil.copytree(synced.data_dir, data_dir)
    devstore = _world()
    try:
        registry = StoreRegistry(ControlSettings(data_dir=data_dir))
        shop = devstore.shops[0]
        registry.connect_store(  # the copy's store, reconnected to this devstore (history kept)
            shop["domain"],
            access_token=shop["access_token"],
            api_base_url=shop["base_url"],
            scopes=shop["scopes"],
        )
        instance = dg.DagsterInstance.ephemeral()
        add_store_partition(instance, synced.domain)
        ensure_warehouse_pool(instance)
        paths = SyncPaths.under(data_dir)
        stores = ShopifyStores(data_dir=str(data_dir), bulk_poll_interval_s=0.05)
        yield Pipeline(
            devstore, synced.domain, data_dir, paths, stores, registry, instance, _defs(stores, paths)
        )
        registry.close()
    finally:
        devstore.stop()
