"""Helpers of the reverse sync tests that drive the real pipeline (the fixtures are in conftest.py).

A separate module, not conftest: test modules import ``Pipeline`` from here, and every test
folder has a conftest of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx

from devstore.server import RunningDevstore, create_world, start_in_thread
from orchestration.control import StoreRegistry
from orchestration.defs.intelligence.definitions import build_intelligence_defs
from orchestration.defs.reverse_sync.definitions import build_reverse_sync_defs
from orchestration.defs.shopify.definitions import build_shopify_defs
from orchestration.defs.shopify.jobs import fetch_key, table_key
from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths

# The world is generated from a seed, so a fresh devstore per test holds exactly what the
# session's warehouse was synced from: the slow sync runs once, each test mutates its own copy.

SEED = 7
CUSTOMERS = 30


@dataclass
class Synced:
    """A data folder whose warehouse holds one synced store and its intelligence tables."""

    data_dir: Path
    domain: str


def merged_defs(stores: ShopifyStores, paths: SyncPaths) -> dg.Definitions:
    return dg.Definitions.merge(
        build_shopify_defs(stores=stores, paths=paths),
        build_intelligence_defs(paths),
        build_reverse_sync_defs(paths),
    )


def seeded_world() -> RunningDevstore:
    return start_in_thread(
        create_world(stores=1, customers=CUSTOMERS, seed=SEED, plan="plus"), webhooks=False
    )


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
        """Run what a sensor or schedule asked for, as the daemon would (its run key as a tag)."""
        tags = dict(request.tags)
        if request.run_key:
            tags["dagster/run_key"] = request.run_key
        return self.run(
            job, run_config=request.run_config or None, partition_key=request.partition_key, tags=tags
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
