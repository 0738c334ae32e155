"""End to end through Dagster: devstore over real HTTP → landing zone → DuckDB in tmp_path.

Each test builds its own small world and runs the real ``shopify_sync`` job per store
partition on a test instance, then compares the warehouse with the devstore's records.
Changes are caused through the devstore control API (``/_devstore``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from support.truth import warehouse_mismatches

from devstore.server import RunningDevstore, create_world, start_in_thread
from orchestration.control import ControlSettings, EntityState, StoreRegistry, StoreStatus
from orchestration.defs.instance import ensure_warehouse_pool
from orchestration.defs.shopify.definitions import build_shopify_defs
from orchestration.defs.shopify.jobs import fetch_key, fetch_run_config, table_key
from orchestration.defs.shopify.partitions import SHOPIFY_ENTITIES, STORES_PARTITION, add_store_partition
from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths
from orchestration.defs.shopify.sensors import landing_batches_sensor
from pipelines.landing import iter_batches
from pipelines.shopify.cursors import IncrementalCursor
from pipelines.tables import WAREHOUSE

# devstore table -> (warehouse table, parent column in the devstore's child rows or None)
PARENT_TABLES = {e: e for e in SHOPIFY_ENTITIES}
CHILD_TABLES = {
    "order_line_items": "order_line_items",
    "variants": "product_variants",
    "checkout_line_items": "abandoned_checkout_line_items",
}
LINEAGE = {"_loaded_at", "_batch_id", "_dlt_id", "_dlt_load_id"}


class Harness:
    """One devstore, its stores registered, a Dagster test instance and the sync job."""

    def __init__(self, devstore: RunningDevstore, data_dir: Path, instance: dg.DagsterInstance) -> None:
        self.devstore = devstore
        self.data_dir = data_dir
        self.instance = instance
        control_url = f"sqlite:///{data_dir / 'control.db'}"
        self.registry = StoreRegistry(ControlSettings(data_dir=data_dir, control_url=control_url))
        for shop in devstore.shops:
            self.registry.connect_store(
                shop["domain"],
                access_token=shop["access_token"],
                api_base_url=shop["base_url"],
                scopes=shop["scopes"],
            )
            add_store_partition(instance, shop["domain"])
        ensure_warehouse_pool(instance)
        self.paths = SyncPaths.under(data_dir)
        stores = ShopifyStores(data_dir=str(data_dir), control_url=control_url, bulk_poll_interval_s=0.05)
        self.stores = stores
        self.defs = build_shopify_defs(stores, self.paths)
        self.job = self.defs.resolve_job_def("shopify_sync")

    @property
    def domains(self) -> list[str]:
        return [s["domain"] for s in self.devstore.shops]

    def sync(
        self, shop: str, run_config: dict[str, Any] | None = None, *, expect_success: bool = True
    ) -> dg.ExecuteInProcessResult:
        result = self.job.execute_in_process(
            instance=self.instance, partition_key=shop, run_config=run_config or {}, raise_on_error=False
        )
        if expect_success:
            failures = [e.event_specific_data for e in result.all_events if e.is_failure]
            assert result.success, failures
        return result

    def control(self, method: str, path: str, body: Any = None) -> Any:
        return self.devstore.control(method, path, body)

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(self.paths.warehouse_path), read_only=True)
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    def scheduled_shops(self) -> list[str]:
        """The stores the real incremental schedule would sync at its next tick."""
        schedule = self.defs.resolve_schedule_def("incremental_sync_schedule")
        # a schedule context needs a persistent instance; it holds the same store partitions
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(
                STORES_PARTITION, self.instance.get_dynamic_partitions(STORES_PARTITION)
            )
            with dg.build_schedule_context(
                instance=instance,
                scheduled_execution_time=datetime(2026, 11, 22, 3, 30, tzinfo=UTC),
                resources={"stores": self.stores},
            ) as context:
                requests = schedule(context)
        return sorted(r.partition_key for r in requests if r.partition_key)

    def live_ids(self, table: str, shop: str) -> set[int]:
        rows = self.query(f"SELECT id FROM shopify.{table} WHERE shop = ? AND _deleted_at IS NULL", [shop])
        return {r[0] for r in rows}

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every shopify table's rows without lineage columns, sorted: equal means same content."""
        tables = [
            r[0]
            for r in self.query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'shopify' AND table_name NOT LIKE '_dlt%'"
            )
        ]
        out = {}
        for table in sorted(tables):
            columns = [r[0] for r in self.query(f"DESCRIBE shopify.{table}") if r[0] not in LINEAGE]
            cols = ", ".join(f'"{c}"' for c in columns)
            out[table] = sorted(self.query(f"SELECT {cols} FROM shopify.{table}"), key=repr)
        return out

    def mismatches(self, shop: str, tables: list[str] | None = None, *, derived: bool = True) -> list[str]:
        """Every difference between the warehouse's live rows of ``shop`` and the devstore (values too)."""
        return warehouse_mismatches(
            self.paths.warehouse_path, self.devstore, shop, tables=tables, derived=derived
        )

    def truth(self, shop: str) -> dict[str, set[int]]:
        """Ids the devstore holds per table (parents and the children compared)."""
        state = self.devstore.world.shop(shop)
        assert state is not None
        with state.lock:
            out = {PARENT_TABLES[t]: set(state.records[t]) for t in PARENT_TABLES}
            for child, table in CHILD_TABLES.items():
                out[table] = {r["id"] for rows in state.children[child].values() for r in rows}
        return out


@pytest.fixture
def harness_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[RunningDevstore] = []

    def make(stores: int, customers: int, seed: int) -> Harness:
        devstore = start_in_thread(create_world(stores=stores, customers=customers, seed=seed, plan="plus"))
        started.append(devstore)
        # An in-memory instance: the same run machinery, without SQLite writes per event.
        return Harness(devstore, tmp_path, dg.DagsterInstance.ephemeral())

    yield make
    for devstore in started:
        devstore.stop()


@pytest.mark.slow
def test_full_sync_equals_devstore_truth_and_resync_is_idempotent(harness_factory: Any) -> None:
    h = harness_factory(stores=2, customers=40, seed=21)
    for shop in h.domains:
        h.sync(shop)
    for shop in h.domains:
        assert h.mismatches(shop) == []
        statuses = {e.entity: e for e in h.registry.entity_statuses(shop)}
        assert {e: s.state for e, s in statuses.items()} == dict.fromkeys(
            SHOPIFY_ENTITIES, EntityState.SYNCED
        )
        assert all(s.last_bulk_sync_at is not None for s in statuses.values())

    before = h.snapshot()
    shop = h.domains[0]
    for _ in range(2):
        result = h.sync(shop, fetch_run_config(full=True))
        checks = result.get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks)
        fetched = result.asset_materializations_for_node("shopify__landing__customers")[0]
        assert fetched.metadata["mode"].value == "bulk+reconcile"
    assert h.snapshot() == before
    for table in ("customers", "orders", "order_line_items", "products"):
        dupes = h.query(f"SELECT count(*) - count(DISTINCT (shop, id)) FROM shopify.{table}")[0][0]
        assert dupes == 0, table

    # the comparison sees values, not just ids: change two in the warehouse behind its back
    con = duckdb.connect(str(h.paths.warehouse_path))
    try:
        line_item = con.execute(
            "UPDATE shopify.order_line_items SET quantity = quantity + 1 WHERE id = "
            "(SELECT min(id) FROM shopify.order_line_items WHERE shop = ?) RETURNING id",
            [shop],
        ).fetchall()[0][0]
        con.execute(
            "UPDATE shopify.customer_addresses SET city = 'Nowhere' WHERE id = "
            "(SELECT min(id) FROM shopify.customer_addresses WHERE shop = ?)",
            [shop],
        )
    finally:
        con.close()
    found = h.mismatches(shop)
    assert len(found) == 2
    assert f"order_line_items: row {{'id': {line_item}}} quantity" in found[1]
    assert "customer_addresses" in found[0] and "'Nowhere'" in found[0]


@pytest.mark.slow
def test_incremental_picks_up_changes_and_reconciliation_marks_deletions(harness_factory: Any) -> None:
    h = harness_factory(stores=1, customers=150, seed=22)
    shop = h.domains[0]
    handle = shop.removesuffix(".myshopify.com")
    h.sync(shop)
    state = h.devstore.world.shop(shop)
    assert state is not None

    created = h.control(
        "POST",
        f"/shops/{handle}/records/customers",
        {
            "first_name": "Newly",
            "last_name": "Created",
            "email": "newly.created@example.com",
            "locale": "en",
            "addresses": [{"address1": "1 New Street", "city": "Leeds", "country_code": "GB"}],
            "metafields": [
                {
                    "owner_type": "Customer",
                    "namespace": "shopsync",
                    "key": "rfm_segment",
                    "type": "single_line_text_field",
                    "value": "new",
                    "created_at": "2026-11-01T10:00:00Z",
                    "updated_at": "2026-11-01T10:00:00Z",
                }
            ],
        },
    )
    some_customer = sorted(state.records["customers"])[0]
    h.control("PATCH", f"/shops/{handle}/records/customers/{some_customer}", {"note": "updated by the test"})
    # a mass edit bigger than one page, every row with the same updated_at
    edited = h.control(
        "POST",
        f"/shops/{handle}/mass_edit",
        {"entity": "customers", "count": 120, "changes": {"tags": ["mass-edit"]}},
    )
    assert edited["updated"] == 120
    # an order edited to drop one of its line items
    order_id = next(oid for oid, items in state.children["order_line_items"].items() if len(items) >= 2)
    with state.lock:
        removed = state.children["order_line_items"][order_id].pop()["id"]
    h.control("PATCH", f"/shops/{handle}/records/orders/{order_id}", {"tags": ["edited"]})

    result = h.sync(shop)
    fetched = result.asset_materializations_for_node("shopify__landing__customers")[0]
    assert fetched.metadata["mode"].value == "incremental"
    assert created["id"] in h.live_ids("customers", shop)
    assert h.query("SELECT note FROM shopify.customers WHERE shop = ? AND id = ?", [shop, some_customer]) == [
        ("updated by the test",)
    ]
    tagged = h.query(
        "SELECT count(*) FROM shopify.customers WHERE shop = ? AND tags::VARCHAR LIKE '%mass-edit%'", [shop]
    )[0][0]
    assert tagged == 120
    items = {
        r[0]
        for r in h.query(
            "SELECT id FROM shopify.order_line_items WHERE shop = ? AND order_id = ?", [shop, order_id]
        )
    }
    assert removed not in items and items == {i["id"] for i in state.children["order_line_items"][order_id]}
    assert h.mismatches(shop) == []
    assert h.query(
        "SELECT value FROM shopify.customer_metafields WHERE customer_id = ?", [created["id"]]
    ) == [("new",)]

    # a product leaves a collection and another joins it; the collection itself is not edited
    collection_id = sorted(state.records["collections"])[0]
    with state.lock:
        members = state.children["collection_products"][collection_id]
        left = members.pop(0)["product_id"]
        joined = next(
            p for p in sorted(state.records["products"]) if p not in {m["product_id"] for m in members}
        )
        members.append({"shop": shop, "collection_id": collection_id, "product_id": joined, "position": 999})
    h.sync(shop)
    # no incremental read can see that; the comparison does
    assert any("collection_products" in m for m in h.mismatches(shop, ["collection_products"]))

    deleted = {
        "customers": sorted(state.records["customers"])[5],
        "orders": sorted(state.records["orders"])[3],
        "products": sorted(state.records["products"])[1],
    }
    for entity, record_id in deleted.items():
        h.control("DELETE", f"/shops/{handle}/records/{entity}/{record_id}")
    result = h.sync(shop, fetch_run_config(reconcile=True))
    for entity, record_id in deleted.items():
        marked = h.query(
            f"SELECT _deleted_at IS NOT NULL FROM shopify.{entity} WHERE shop = ? AND id = ?",
            [shop, record_id],
        )
        assert marked == [(True,)], entity
    # the nightly reconciliation exports collections whole: the membership change is in
    # (the deleted order's customer keeps the order figures of its last read: see DERIVED)
    found = h.mismatches(shop, derived=False)
    assert found == [], "\n".join(found)
    members_now = {
        r[0]
        for r in h.query(
            "SELECT product_id FROM shopify.collection_products WHERE collection_id = ?", [collection_id]
        )
    }
    assert joined in members_now and left not in members_now
    loaded = result.asset_materializations_for_node("shopify__customers")[0]
    assert loaded.metadata["deleted"].value >= 1


@pytest.mark.slow
def test_missing_scope_skips_the_entity_and_a_revoked_token_says_reconnect(harness_factory: Any) -> None:
    h = harness_factory(stores=1, customers=30, seed=23)
    shop = h.domains[0]
    handle = shop.removesuffix(".myshopify.com")
    h.control("POST", f"/shops/{handle}/scopes/remove", {"scope": "read_products"})

    result = h.sync(shop)
    assert result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert fetch_key("products") not in materialized and table_key("products") not in materialized
    assert fetch_key("customers") in materialized and table_key("customers") in materialized
    products = h.registry.entity_status(shop, "products")
    assert products is not None and products.state is EntityState.FAILED
    assert "read_products" in (products.last_error or "")
    assert h.registry.entity_status(shop, "customers").state is EntityState.SYNCED
    # the store asks to be reconnected, yet its scheduled syncs go on for what its scopes allow
    assert h.registry.get_store(shop).status is StoreStatus.RECONNECT_REQUIRED
    assert h.scheduled_shops() == [shop]
    changed = sorted(h.devstore.world.shop(shop).records["customers"])[0]  # type: ignore[union-attr]
    h.control("PATCH", f"/shops/{handle}/records/customers/{changed}", {"note": "while products are skipped"})
    h.sync(shop)
    assert h.query("SELECT note FROM shopify.customers WHERE shop = ? AND id = ?", [shop, changed]) == [
        ("while products are skipped",)
    ]

    # the fix: grant the scope, then retry just that entity (its two assets) for the store
    h.control("POST", f"/shops/{handle}/scopes/grant", {"scope": "read_products"})
    retried = h.job.execute_in_process(
        instance=h.instance,
        partition_key=shop,
        asset_selection=[fetch_key("products"), table_key("products")],
    )
    assert retried.success
    assert {e.asset_key for e in retried.get_asset_materialization_events()} == {
        fetch_key("products"),
        table_key("products"),
    }
    assert h.registry.entity_status(shop, "products").state is EntityState.SYNCED
    # everything but collections (skipped for the same scope, not retried here) equals the store
    every = [t for t in WAREHOUSE if not t.startswith("collection")]
    assert h.mismatches(shop, every) == []

    # a fetch run on its own leaves landing batches; the sensor turns them into one load run
    created = h.control(
        "POST",
        f"/shops/{handle}/records/customers",
        {"first_name": "Via", "last_name": "Sensor", "locale": "en"},
    )
    assert h.job.execute_in_process(
        instance=h.instance, partition_key=shop, asset_selection=[fetch_key("customers")]
    ).success
    assert created["id"] not in h.live_ids("customers", shop)
    with dg.build_sensor_context(instance=h.instance, resources={"paths": h.paths}) as context:
        tick = landing_batches_sensor(context)
    assert [(r.partition_key, r.asset_selection) for r in tick.run_requests] == [
        (shop, [table_key("customers")])
    ]
    request = tick.run_requests[0]
    loaded = h.defs.resolve_job_def("shopify_load").execute_in_process(
        instance=h.instance,
        partition_key=request.partition_key,
        run_config=request.run_config,
        asset_selection=request.asset_selection,
        tags=request.tags,
    )
    assert loaded.success
    assert created["id"] in h.live_ids("customers", shop)
    with dg.build_sensor_context(
        instance=h.instance, cursor=tick.cursor, resources={"paths": h.paths}
    ) as context:
        assert landing_batches_sensor(context).run_requests == []

    token = h.devstore.token(shop)
    h.control("POST", f"/shops/{handle}/tokens/revoke", {"all": True})
    failed = h.sync(shop, expect_success=False)
    assert not failed.success
    messages = [str(e.event_specific_data.error.message) for e in failed.all_events if e.is_step_failure]
    assert messages and all("reconnect" in m.lower() for m in messages)
    assert all("Traceback" not in m for m in messages)
    store = h.registry.get_store(shop)
    assert store.status is StoreStatus.RECONNECT_REQUIRED
    assert token not in (store.status_detail or "") and all(token not in m for m in messages)
    # a refused token pauses the schedules until the store is reconnected
    assert h.scheduled_shops() == []


def test_lookback_window_is_set_in_the_fetch_config(harness_factory: Any) -> None:
    h = harness_factory(stores=1, customers=20, seed=24)
    shop = h.domains[0]
    customers = [fetch_key("customers"), table_key("customers")]
    assert h.job.execute_in_process(
        instance=h.instance, partition_key=shop, asset_selection=customers
    ).success
    watermark = IncrementalCursor.load(h.paths.state_path, shop, "customers").watermark
    assert watermark is not None

    some = sorted(h.devstore.world.shop(shop).records["customers"])[0]  # type: ignore[union-attr]
    h.control(
        "PATCH", f"/shops/{shop.removesuffix('.myshopify.com')}/records/customers/{some}", {"note": "x"}
    )
    config = fetch_run_config(entities=["customers"])
    config["ops"]["shopify__landing__customers"]["config"]["lookback_minutes"] = 90
    result = h.job.execute_in_process(
        instance=h.instance, partition_key=shop, asset_selection=customers, run_config=config
    )
    assert result.success
    incremental = [
        m for m, _ in iter_batches(h.paths.landing_path, shop, "customers") if m.mode == "incremental"
    ]
    assert incremental, "the second run read incrementally"
    start = datetime.fromisoformat(incremental[0].window_from.replace("Z", "+00:00"))  # type: ignore[union-attr]
    assert datetime.fromisoformat(watermark.replace("Z", "+00:00")) - start == timedelta(minutes=90)
