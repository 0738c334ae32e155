"""Two projects sharing one control plane, each with its own warehouse, landing zone and code location view."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from click.testing import CliRunner

from devstore.server import RunningDevstore
from orchestration.cli import cli
from orchestration.commands.stores import launch_sync
from orchestration.commands.webhooks import registry_lookup
from orchestration.control import ControlSettings, StoreRegistry
from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths


def _shops_in(warehouse: Path) -> set[str]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT DISTINCT shop FROM shopify.customers").fetchall()}
    finally:
        con.close()


def test_two_projects_share_the_control_plane_and_keep_their_own_warehouses(
    devstore_factory: Callable[..., RunningDevstore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    store = devstore_factory(stores=2, customers=5, seed=8)
    first, second = store.shops
    data = tmp_path / "data"
    runner = CliRunner()

    def connect(shop: dict[str, str], *extra: str) -> str:
        result = runner.invoke(
            cli,
            [
                "stores", "connect", shop["domain"], "--token", shop["access_token"],
                "--base-url", shop["base_url"], "--no-sync", "--data-dir", str(data), *extra,
            ],
        )  # fmt: skip
        return f"{result.exit_code}:{result.output}"

    assert connect(first).startswith("0:")
    assert connect(second, "--project", "eu").startswith("0:")
    refused = connect(second, "--project", "default")
    assert (
        refused.startswith("1:") and "Already connected to another project" in refused and "'eu'" in refused
    )
    bad_name = connect(first, "--project", "EU West")
    assert bad_name.startswith("2:") and "Invalid project name" in bad_name

    registry = StoreRegistry(ControlSettings(data_dir=data))
    for shop in (first, second):
        assert launch_sync(registry, shop["domain"], entities=["customers"], trigger="test")["success"]
    default_wh, eu_wh = data / "warehouse.duckdb", data / "projects" / "eu" / "warehouse.duckdb"
    assert _shops_in(default_wh) == {first["domain"]} and _shops_in(eu_wh) == {second["domain"]}
    assert (data / "projects" / "eu" / "landing" / second["domain"]).is_dir()
    assert not (data / "landing" / second["domain"]).exists()
    assert registry.projects() == {"default": str(default_wh), "eu": str(eu_wh)}

    listed = runner.invoke(cli, ["projects", "list", "--json", "--data-dir", str(data)])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output) == [
        {"project": "default", "warehouse": str(default_wh), "stores": [first["domain"]]},
        {"project": "eu", "warehouse": str(eu_wh), "stores": [second["domain"]]},
    ]
    cards = runner.invoke(cli, ["status", "--project", "eu", "--json", "--data-dir", str(data)])
    assert [c["domain"] for c in json.loads(cards.output)] == [second["domain"]]
    assert json.loads(cards.output)[0]["last_bulk_synced"] is not None

    # a code location serves one project: its registry lists that project's stores only
    eu = ShopifyStores(data_dir=str(data), project="eu")
    assert [s.domain for s in eu.registry().list_stores()] == [second["domain"]]
    with eu.client_for(second["domain"]) as client:
        assert client.execute("{ shop { myshopifyDomain } }")["shop"]["myshopifyDomain"] == second["domain"]
    with pytest.raises(dg.Failure, match="belongs to project 'default'"):
        eu.client_for(first["domain"])
    monkeypatch.setenv("SHOPSYNC_DATA_DIR", str(data))
    monkeypatch.setenv("SHOPSYNC_PROJECT", "eu")
    assert (
        SyncPaths().warehouse_path == eu_wh
        and SyncPaths().landing_path == data / "projects" / "eu" / "landing"
    )
    assert [s.domain for s in ShopifyStores().registry().list_stores()] == [second["domain"]]
    monkeypatch.delenv("SHOPSYNC_PROJECT")
    assert SyncPaths().warehouse_path == default_wh

    # webhooks of each store land in its own project's landing zone; queries find the project's snapshot
    lookup = registry_lookup(registry, ttl_s=0)
    registry.update_credentials(second["domain"], {"client_secret": "s"})
    config = lookup(second["domain"])
    assert config is not None and config.landing_root == data / "projects" / "eu" / "landing"
    missing = runner.invoke(cli, ["query", "--project", "eu", "--list"])
    assert (
        missing.exit_code == 1
        and str(data / "projects" / "eu" / "snapshot" / "analyst.duckdb") in missing.output
    )
