"""A warehouse built by the real pipeline: devstore over HTTP → shopify_sync per store → DuckDB.

Built once per test session (the sync is the slow part) and copied per test that writes to
it, so each test starts from the same synced stores.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from devstore.server import create_world, start_in_thread
from orchestration.control import ControlSettings, StoreRegistry
from orchestration.defs.instance import ensure_warehouse_pool
from orchestration.defs.intelligence.definitions import build_intelligence_defs
from orchestration.defs.shopify.definitions import build_shopify_defs
from orchestration.defs.shopify.partitions import add_store_partition
from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths


@dataclass
class Synced:
    """A data folder whose warehouse holds the synced shops (no core.* yet)."""

    data_dir: Path
    domains: list[str]


@dataclass
class Intel:
    """A copy of the synced data folder plus the intelligence definitions bound to it."""

    data_dir: Path
    paths: SyncPaths
    defs: dg.Definitions
    instance: dg.DagsterInstance

    def refresh(self, run_config: dict[str, Any] | None = None) -> dg.ExecuteInProcessResult:
        """Run the intelligence job once and require success."""
        job = self.defs.resolve_job_def("intelligence_refresh")
        result = job.execute_in_process(
            instance=self.instance, run_config=run_config or {}, raise_on_error=False
        )
        failures = [e.event_specific_data for e in result.all_events if e.is_failure]
        assert result.success, failures
        return result


@pytest.fixture(scope="session")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synced]:
    data_dir = tmp_path_factory.mktemp("synced")
    devstore = start_in_thread(create_world(stores=2, customers=40, seed=41, plan="plus"))
    try:
        control_url = f"sqlite:///{data_dir / 'control.db'}"
        registry = StoreRegistry(ControlSettings(data_dir=data_dir, control_url=control_url))
        instance = dg.DagsterInstance.ephemeral()
        for shop in devstore.shops:
            registry.connect_store(
                shop["domain"],
                access_token=shop["access_token"],
                api_base_url=shop["base_url"],
                scopes=shop["scopes"],
            )
            add_store_partition(instance, shop["domain"])
        ensure_warehouse_pool(instance)
        paths = SyncPaths.under(data_dir)
        stores = ShopifyStores(data_dir=str(data_dir), control_url=control_url, bulk_poll_interval_s=0.05)
        job = build_shopify_defs(stores, paths).resolve_job_def("shopify_sync")
        domains = [s["domain"] for s in devstore.shops]
        for domain in domains:
            assert job.execute_in_process(instance=instance, partition_key=domain).success
        registry.close()
    finally:
        devstore.stop()
    yield Synced(data_dir, domains)


@pytest.fixture
def intel(synced: Synced, tmp_path: Path) -> Intel:
    data_dir = tmp_path / "data"
    shutil.copytree(synced.data_dir, data_dir)
    paths = SyncPaths.under(data_dir)
    instance = dg.DagsterInstance.ephemeral()
    ensure_warehouse_pool(instance)
    return Intel(data_dir, paths, build_intelligence_defs(paths), instance)
