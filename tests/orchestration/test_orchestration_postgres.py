"""The production setup on the machine's PostgreSQL: the store registry and the dagster.yaml example."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from orchestration.control import (
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
from orchestration.defs.shopify.partitions import STORES_PARTITION, add_store_partition

ROOT = Path(__file__).resolve().parents[2]
SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"
TOKEN = "shpat_pg0123456789abcdef0123456789ab"

pytestmark = pytest.mark.postgres


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the local server, dropped afterwards."""
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


def test_production_dagster_yaml_runs_on_postgres(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert add_store_partition(instance, "pg-shop.myshopify.com")
        assert not add_store_partition(instance, "pg-shop.myshopify.com")
        assert instance.get_dynamic_partitions(STORES_PARTITION) == ["pg-shop.myshopify.com"]
        ensure_warehouse_pool(instance)
        assert instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).slot_count == 1

        @dg.asset(pool=WAREHOUSE_POOL)
        def probe() -> int:
            return 1

        result = dg.materialize([probe], instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
        # the slot is free again once the run ended
        assert instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).active_slot_count == 0
    finally:
        instance.dispose()
