"""The store registry: domain validation messages, encryption at rest, statuses, the stores CLI."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from orchestration.cli import cli
from orchestration.control import (
    ControlSettings,
    EntityState,
    InvalidStoreDomain,
    SecretKeyError,
    StoreInOtherProject,
    StoreRegistry,
    StoreStatus,
    normalize_store_domain,
)

TOKEN = "shpat_0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("entered", "domain"),
    [
        ("mystore", "mystore.myshopify.com"),
        ("mystore.myshopify.com", "mystore.myshopify.com"),
        ("https://mystore.myshopify.com", "mystore.myshopify.com"),
        ("https://mystore.myshopify.com/", "mystore.myshopify.com"),
        ("mystore/", "mystore.myshopify.com"),
        ("https://mystore", "mystore.myshopify.com"),
        ("  My-Store-2  ", "my-store-2.myshopify.com"),
        ("a" * 60, "a" * 60 + ".myshopify.com"),
    ],
)
def test_accepted_domains_are_normalised(entered: str, domain: str) -> None:
    assert normalize_store_domain(entered) == domain


@pytest.mark.parametrize(
    ("entered", "message"),
    [
        ("", "Store domain is required"),
        ("   ", "Store domain is required"),
        (None, "Store domain is required"),
        ("www.mystore.com", "Invalid store domain format"),
        ("http://mystore.myshopify.com", "Invalid store domain format"),
        ("mystore.myshopify.com/admin", "Invalid store domain format"),
        ("my store", "Invalid store domain format"),
        ("my_store", "Invalid store domain format"),
        ("mystore.myshopify.com:443", "Invalid store domain format"),
        (".myshopify.com", "Invalid store domain format"),
        ("https://", "Invalid store domain format"),
        ("mystore//", "Invalid store domain format"),
        ("abc", "Store name must be at least 4 characters"),
        ("abc.myshopify.com", "Store name must be at least 4 characters"),
        ("a" * 61, "Store name cannot exceed 60 characters"),
        ("-mystore", "Store name cannot start or end with a hyphen"),
        ("mystore-.myshopify.com", "Store name cannot start or end with a hyphen"),
    ],
)
def test_rejected_domains_give_exactly_one_product_message(entered: str | None, message: str) -> None:
    with pytest.raises(InvalidStoreDomain) as caught:
        normalize_store_domain(entered)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("entered", "message"),
    [
        ("", "Store domain is required"),
        ("x.com", "Invalid store domain format"),
        ("ab", "Store name must be at least 4 characters"),
        ("a" * 61, "Store name cannot exceed 60 characters"),
        ("-mystore-", "Store name cannot start or end with a hyphen"),
    ],
)
def test_stores_connect_rejects_bad_domains_with_exit_code_2(
    tmp_path: Path, entered: str, message: str
) -> None:
    # "--" lets a name that starts with a hyphen through as the argument it is
    result = CliRunner().invoke(
        cli, ["stores", "connect", "--token", TOKEN, "--data-dir", str(tmp_path), "--", entered]
    )
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: {message}"
    assert not (tmp_path / "control.db").exists()  # nothing was stored, not even the database


def test_stores_connect_refuses_a_store_of_another_project_naming_it(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.connect_store("taken-shop", access_token=TOKEN, project="alpha")
    result = CliRunner().invoke(
        cli,
        [
            "stores",
            "connect",
            "taken-shop",
            "--token",
            TOKEN,
            "--project",
            "beta",
            "--data-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Already connected to another project" in result.output and "'alpha'" in result.output
    assert registry.get_store("taken-shop.myshopify.com").project == "alpha"
    assert registry.credentials("taken-shop.myshopify.com") == {"access_token": TOKEN}


def _registry(tmp_path: Path, **overrides: object) -> StoreRegistry:
    return StoreRegistry(ControlSettings(data_dir=tmp_path, **overrides))


def test_credentials_are_encrypted_at_rest(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.connect_store("secret-shop", access_token=TOKEN, scopes=["read_orders", "read_customers"])
    registry.close()

    raw = (tmp_path / "control.db").read_bytes()
    assert TOKEN.encode() not in raw
    assert b"secret-shop.myshopify.com" in raw  # the row is there, only the secret is hidden
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes().strip() not in raw

    reopened = _registry(tmp_path)
    assert reopened.credentials("secret-shop.myshopify.com") == {"access_token": TOKEN}
    store = reopened.get_store("secret-shop.myshopify.com")
    assert store.scopes == ("read_customers", "read_orders")
    assert store.status is StoreStatus.CONNECTED
    assert TOKEN not in repr(store)


def test_the_key_from_the_environment_wins_and_a_wrong_key_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("SHOPSYNC_SECRET_KEY", key)
    registry = _registry(tmp_path)
    registry.connect_store("keyed-shop", access_token=TOKEN)
    assert not (tmp_path / "secret.key").exists()

    monkeypatch.setenv("SHOPSYNC_SECRET_KEY", Fernet.generate_key().decode())
    with pytest.raises(SecretKeyError, match="reconnect the store"):
        _registry(tmp_path).credentials("keyed-shop.myshopify.com")

    monkeypatch.setenv("SHOPSYNC_SECRET_KEY", "not-a-key")
    with pytest.raises(SecretKeyError, match="not a valid Fernet key"):
        _registry(tmp_path).connect_store("other-shop", access_token=TOKEN)


def test_reconnect_keeps_sync_history_and_other_projects_are_refused(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.connect_store("history-shop", access_token=TOKEN, project="alpha")
    registry.mark_entity("history-shop.myshopify.com", "orders", EntityState.FAILED, error="boom")
    registry.set_store_status("history-shop.myshopify.com", StoreStatus.RECONNECT_REQUIRED, "token revoked")

    registry.connect_store("https://history-shop.myshopify.com/", access_token=TOKEN + "x", project="alpha")
    store = registry.get_store("history-shop.myshopify.com")
    assert store.status is StoreStatus.CONNECTED and store.status_detail is None
    assert registry.entity_status("history-shop.myshopify.com", "orders").last_error == "boom"

    done = registry.mark_entity("history-shop.myshopify.com", "orders", EntityState.SYNCED)
    assert done.last_error is None and done.last_sync_at is not None

    with pytest.raises(StoreInOtherProject, match="Already connected to another project"):
        registry.connect_store("history-shop", access_token=TOKEN, project="beta")


def test_stores_list_shows_registered_stores(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.connect_store(
        "listed-shop", access_token=TOKEN, api_base_url="http://127.0.0.1:1/shops/listed-shop"
    )
    bulk_at = datetime(2026, 11, 2, 3, 4, tzinfo=UTC)
    registry.mark_entity("listed-shop.myshopify.com", "customers", EntityState.SYNCED, bulk_synced_at=bulk_at)
    registry.mark_entity("listed-shop.myshopify.com", "orders", EntityState.FAILED, error="boom")
    result = CliRunner().invoke(cli, ["stores", "list", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "listed-shop.myshopify.com" in lines[0] and "Connected" in lines[0]
    assert any("customers" in line and "Synced" in line and "2026-11-02 03:04 UTC" in line for line in lines)
    assert any("orders" in line and "Failed" in line and "last bulk sync never" in line for line in lines)
    assert TOKEN not in result.output
    as_json = CliRunner().invoke(cli, ["stores", "list", "--json", "--data-dir", str(tmp_path)])
    entity = json.loads(as_json.output)[0]["entities"]["customers"]
    assert entity["last_bulk_sync_at"] == bulk_at.isoformat() and entity["state"] == "Synced"
