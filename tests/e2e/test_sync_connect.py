"""``shopsync stores connect`` against the devstore: the token is checked with Shopify before it is stored."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from devstore.server import RunningDevstore
from orchestration.cli import cli
from orchestration.control import ControlSettings, StoreRegistry


def test_connect_verifies_the_token_stores_it_encrypted_and_adds_the_partition(
    devstore_shared: RunningDevstore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    shop = devstore_shared.shops[0]
    handle = shop["domain"].removesuffix(".myshopify.com")
    data_dir = tmp_path / "data"
    runner = CliRunner()

    bad = runner.invoke(
        cli,
        [
            "stores",
            "connect",
            handle,
            "--token",
            "shpat_wrong",
            "--base-url",
            shop["base_url"],
            "--data-dir",
            str(data_dir),
        ],
    )
    assert bad.exit_code == 1
    assert "reconnect" in bad.output.lower() and "Traceback" not in bad.output
    assert StoreRegistry(ControlSettings(data_dir=data_dir)).list_stores() == []

    good = runner.invoke(
        cli,
        [
            "stores",
            "connect",
            f"https://{shop['domain']}/",
            "--token",
            shop["access_token"],
            "--base-url",
            shop["base_url"],
            "--data-dir",
            str(data_dir),
        ],
    )
    assert good.exit_code == 0, good.output
    assert shop["domain"] in good.output and shop["access_token"] not in good.output
    store = StoreRegistry(ControlSettings(data_dir=data_dir)).get_store(shop["domain"])
    assert set(store.scopes) == set(shop["scopes"]) and store.api_base_url == shop["base_url"]
    assert shop["access_token"].encode() not in (data_dir / "control.db").read_bytes()

    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster_home"))
    try:
        assert instance.get_dynamic_partitions("stores") == [shop["domain"]]
    finally:
        instance.dispose()

    listed = runner.invoke(cli, ["stores", "list", "--data-dir", str(data_dir)])
    assert shop["domain"] in listed.output and "Connected" in listed.output
