"""The production setup on the machine's PostgreSQL: the control plane, and a store's sync on deploy/dagster.yaml."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa
from support.oauth import authorization_code

from devstore.server import RunningDevstore
from orchestration.control import (
    AuthKind,
    ControlSettings,
    EntityState,
    RegistryError,
    StoreInOtherProject,
    StoreNotFound,
    StoreRegistry,
    StoreStatus,
)
from orchestration.control.registry import INBOUND_TOGGLES
from orchestration.control.status import delete_store
from orchestration.defs.instance import WAREHOUSE_POOL, ensure_warehouse_pool
from orchestration.defs.shopify.definitions import build_shopify_defs
from orchestration.defs.shopify.jobs import table_key
from orchestration.defs.shopify.partitions import SHOPIFY_ENTITIES, STORES_PARTITION, add_store_partition
from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths
from pipelines.shopify.oauth import exchange_code

ROOT = Path(__file__).resolve().parents[2]
SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"
TOKEN = "shpat_pg0123456789abcdef0123456789ab"

pytestmark = pytest.mark.postgres


def _fresh_database() -> Iterator[str]:
    name = f"shopsync_test_{secrets.token_hex(4)}"
    admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as con:
        con.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        with admin.connect() as con:
            con.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            con.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the local server, dropped afterwards."""
    yield from _fresh_database()


def test_store_registry_on_postgres_keeps_tokens_encrypted(database: str, tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:5432/{database}"  # as a user writes SHOPSYNC_CONTROL_URL
    registry = StoreRegistry(ControlSettings(data_dir=tmp_path, control_url=url))
    registry.connect_store("pg-shop", access_token=TOKEN, scopes=["read_customers"])
    registry.mark_entity("pg-shop.myshopify.com", "customers", EntityState.SYNCED)
    registry.set_store_status("pg-shop.myshopify.com", StoreStatus.RECONNECT_REQUIRED, "token revoked")
    registry.close()

    reopened = StoreRegistry(ControlSettings(data_dir=tmp_path, control_url=url))
    store = reopened.get_store("pg-shop.myshopify.com")
    assert store.status is StoreStatus.RECONNECT_REQUIRED
    assert reopened.entity_status("pg-shop.myshopify.com", "customers").state is EntityState.SYNCED
    assert reopened.credentials("pg-shop.myshopify.com")["access_token"] == TOKEN
    with reopened.engine.connect() as con:
        stored = con.execute(sa.text("SELECT credentials, status FROM stores")).one()
    assert TOKEN.encode() not in bytes(stored[0]) and stored[1] == "Reconnect required"
    reopened.close()


def test_control_plane_operations_on_postgres(database: str, tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:5432/{database}"
    registry = StoreRegistry(ControlSettings(data_dir=tmp_path, control_url=url))
    try:
        registry.connect_store("pg-one", access_token=TOKEN, project="alpha")
        registry.connect_store("pg-two", access_token=TOKEN, project="beta")
        one, two = "pg-one.myshopify.com", "pg-two.myshopify.com"
        # toggles
        assert registry.set_inbound_toggles(one, {"orders": False}) == set(INBOUND_TOGGLES) - {"orders"}
        assert registry.enabled_entities(one) == ["customers", "products", "collections"]
        assert registry.set_outbound_toggles(one, {"email_consent": True}) == {"email_consent"}
        # a customer list belongs to one store
        assert registry.assign_customer_list(one, "VIP") == "VIP"
        with pytest.raises(RegistryError, match="already assigned to pg-one"):
            registry.assign_customer_list(two, "VIP")
        assert registry.customer_lists() == {one: "VIP"}
        # one project per store; projects keep their own warehouses
        with pytest.raises(StoreInOtherProject, match="'alpha'"):
            registry.connect_store("pg-one", access_token=TOKEN, project="beta")
        assert registry.projects() == {
            "alpha": str(tmp_path / "projects" / "alpha" / "warehouse.duckdb"),
            "beta": str(tmp_path / "projects" / "beta" / "warehouse.duckdb"),
        }
        assert [s.domain for s in StoreRegistry(registry.settings, project="beta").list_stores()] == [two]
        # delete: every per-store row goes, the tombstone keeps only the signing secret, the action is audited
        registry.update_credentials(one, {"client_secret": "shpss_pg"})
        registry.mark_entity(one, "customers", EntityState.SYNCED)
        report = delete_store(registry, one, revoke=False)
        assert report.credentials and report.project == "alpha"
        with pytest.raises(StoreNotFound):
            registry.get_store(one)
        assert registry.entity_statuses(one) == [] and registry.customer_lists() == {}
        assert registry.deleted_store_secrets(one) == ("shpss_pg",)
        assert [(a.topic, a.outcome) for a in registry.privacy_actions(one)] == [("stores/delete", "deleted")]
        with registry.engine.connect() as con:
            left = {
                table: con.execute(
                    sa.text(f"SELECT count(*) FROM {table} WHERE store_domain = :d"), {"d": one}
                ).scalar()
                for table in ("entity_status", "inbound_toggles", "outbound_toggles", "store_details")
            }
            tomb = con.execute(sa.text("SELECT webhook_secrets FROM deleted_stores")).scalar()
        assert set(left.values()) == {0}
        assert b"shpss_pg" not in bytes(tomb)
        assert [s.domain for s in registry.list_stores()] == [two]
    finally:
        registry.close()


@pytest.fixture
def control_database() -> Iterator[str]:
    """A second fresh database: the control plane beside the Dagster instance, as in production."""
    yield from _fresh_database()


def _production_instance(database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME holding exactly deploy/dagster.yaml, its PostgreSQL credentials in the env."""
    for key, value in {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_DB": database,
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "",
    }.items():
        monkeypatch.setenv(key, value)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    return home


@pytest.mark.slow
def test_a_store_sync_runs_on_the_production_instance_and_reads_back(
    database: str,
    control_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    devstore: RunningDevstore,
) -> None:
    home = _production_instance(database, tmp_path, monkeypatch)
    control_url = f"postgresql://postgres@127.0.0.1:5432/{control_database}"
    shop = devstore.shops[0]
    domain = shop["domain"]
    registry = StoreRegistry(ControlSettings(data_dir=tmp_path, control_url=control_url))
    registry.connect_store(
        domain, access_token=shop["access_token"], api_base_url=shop["base_url"], scopes=shop["scopes"]
    )
    registry.close()

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert add_store_partition(instance, domain)
        ensure_warehouse_pool(instance)
        paths = SyncPaths.under(tmp_path)
        stores = ShopifyStores(data_dir=str(tmp_path), control_url=control_url, bulk_poll_interval_s=0.05)
        job = build_shopify_defs(stores, paths).resolve_job_def("shopify_sync")
        result = job.execute_in_process(instance=instance, partition_key=domain, raise_on_error=False)
        assert result.success, [e.event_specific_data for e in result.all_events if e.is_failure]
    finally:
        instance.dispose()

    # Another process's view: a new instance object on the same database reads the run back.
    reopened = dg.DagsterInstance.from_config(str(home))
    try:
        runs = reopened.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": domain}))
        assert [(r.run_id, r.job_name, r.status) for r in runs] == [
            (result.run_id, "shopify_sync", dg.DagsterRunStatus.SUCCESS)
        ]
        assert reopened.get_dynamic_partitions(STORES_PARTITION) == [domain]
        for entity in SHOPIFY_ENTITIES:
            event = reopened.get_latest_materialization_event(table_key(entity))
            assert event is not None and event.run_id == result.run_id, entity
            assert event.asset_materialization is not None
            assert event.asset_materialization.partition == domain
        # the load steps gave their warehouse slot back
        assert reopened.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).active_slot_count == 0
    finally:
        reopened.dispose()

    state = devstore.world.shop(domain)
    assert state is not None
    con = duckdb.connect(str(paths.warehouse_path), read_only=True)
    try:
        loaded = con.execute(
            "SELECT count(*) FROM shopify.customers WHERE shop = ? AND _deleted_at IS NULL", [domain]
        ).fetchone()
    finally:
        con.close()
    assert loaded is not None and loaded[0] == len(state.records["customers"]) > 0
    registry = StoreRegistry(ControlSettings(data_dir=tmp_path, control_url=control_url))
    try:
        assert {e.entity: e.state for e in registry.entity_statuses(domain)} == dict.fromkeys(
            SHOPIFY_ENTITIES, EntityState.SYNCED
        )
        assert registry.get_store(domain).status is StoreStatus.CONNECTED
    finally:
        registry.close()


@pytest.mark.parametrize("ending", ["failed", "canceled"])
def test_pool_slots_of_failed_or_cancelled_runs_are_freed_on_postgres(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    home = _production_instance(database, tmp_path, monkeypatch)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        ensure_warehouse_pool(instance)
        storage = instance.event_log_storage
        assert storage.get_concurrency_info(WAREHOUSE_POOL).slot_count == 1
        run = instance.create_run_for_job(dg.GraphDefinition(name="load_that_died").to_job())
        assert storage.claim_concurrency_slot(WAREHOUSE_POOL, run.run_id, "load").is_claimed
        if ending == "failed":
            instance.report_run_failed(run)
        else:
            instance.report_run_canceled(run)
        assert storage.get_concurrency_info(WAREHOUSE_POOL).active_slot_count == 1
        ensure_warehouse_pool(instance)
        assert storage.get_concurrency_info(WAREHOUSE_POOL).active_slot_count == 0
    finally:
        instance.dispose()


def test_concurrent_callers_refresh_an_expiring_oauth_token_once_on_postgres(
    database: str, tmp_path: Path, devstore_factory: Callable[..., RunningDevstore]
) -> None:
    running = devstore_factory(stores=1, customers=3, seed=5)
    shop = running.shops[0]
    domain, handle = shop["domain"], shop["domain"].removesuffix(".myshopify.com")
    code = authorization_code(running)
    grant = exchange_code(domain, shop["base_url"], shop["client_id"], shop["client_secret"], code)
    registry = StoreRegistry(
        ControlSettings(data_dir=tmp_path, control_url=f"postgresql://postgres@127.0.0.1:5432/{database}")
    )
    try:
        registry.connect_store(
            domain,
            credentials={
                **grant.credentials(),
                "client_id": shop["client_id"],
                "client_secret": shop["client_secret"],
            },
            api_base_url=shop["base_url"],
            auth_kind=AuthKind.OAUTH,
        )
        app = running.world.shop(handle).apps[shop["client_id"]]  # type: ignore[union-attr]
        issued = len(app.tokens)
        # four processes' worth of callers find the token refused at once: one refresh serves all
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(lambda _: registry.offline_token(domain, stale=grant.access_token), range(4))
            )
        assert len({token for token, _ in answers}) == 1 and answers[0][0] != grant.access_token
        assert len(app.tokens) == issued + 1
        stored = registry.credentials(domain)
        assert stored["access_token"] == answers[0][0] and stored["refresh_token"] != grant.refresh_token
    finally:
        registry.close()
