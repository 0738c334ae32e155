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
from pathlib import Path

import dagster as dg
import pytest

from orchestration.control import ControlSettings, StoreRegistry
from orchestration.defs.instance import ensure_warehouse_pool
from orchestration.defs.shopify.partitions import add_store_partition
from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths
from pipelines.shopify.client import ShopifyClient

# the devstore test helpers live beside the devstore tests (no package there)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "devstore"))
from ops_support import Store, start_store
from reverse_support import Pipeline, Synced, merged_defs, seeded_world


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


# ---- a warehouse built by the real pipeline (see reverse_support.py) --------------------------


@pytest.fixture(scope="session")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synced]:
    data_dir = tmp_path_factory.mktemp("reverse_synced")
    devstore = seeded_world()
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
        defs = merged_defs(ShopifyStores(data_dir=str(data_dir), bulk_poll_interval_s=0.05), paths)
        assert (
            defs.resolve_job_def("shopify_sync")
            .execute_in_process(instance=instance, partition_key=shop["domain"])
            .success
        )
        assert defs.resolve_job_def("intelligence_refresh").execute_in_process(instance=instance).success
    finally:
        devstore.stop()
    yield Synced(data_dir, shop["domain"])


@pytest.fixture
def pipeline(synced: Synced, tmp_path: Path) -> Iterator[Pipeline]:
    """The synced store in a fresh devstore and a copy of its data folder, with every definition."""
    data_dir = tmp_path / "data"
    shutil.copytree(synced.data_dir, data_dir)
    devstore = seeded_world()
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
            devstore, synced.domain, data_dir, paths, stores, registry, instance, merged_defs(stores, paths)
        )
        registry.close()
    finally:
        devstore.stop()
