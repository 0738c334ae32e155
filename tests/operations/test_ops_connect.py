"""Connecting and reconnecting a store the three ways, against the devstore over real HTTP.

OAuth runs the real CLI in a subprocess: the test reads the authorize URL it prints and
plays the merchant with httpx (the devstore approves at once and redirects to the CLI's
local callback). A tampered ``hmac`` and a foreign ``state`` are refused and store nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from click.testing import CliRunner
from support.oauth import authorization_code

from devstore.server import RunningDevstore
from orchestration.cli import cli
from orchestration.control import AuthKind, ControlSettings, EntityState, StoreRegistry, StoreStatus
from orchestration.control.connect import ConnectError, requested_scopes, verify_oauth
from orchestration.control.health import API, OAUTH, SCOPES, TOKEN, check_health
from orchestration.defs.shopify.resources import ShopifyStores
from pipelines.shopify.client import ShopifyAuthError, ShopifyClient
from pipelines.shopify.oauth import migrate_offline_token

SHOPSYNC = str(Path(sys.executable).parent / "shopsync")


@pytest.fixture
def callback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def store(devstore_factory: Callable[..., RunningDevstore], callback_port: int) -> RunningDevstore:
    """A one-shop devstore whose app allows shopsync's local callback, as a Partner app must."""
    running = devstore_factory(stores=1, customers=5, seed=3, token_ttl=timedelta(hours=24))
    handle = running.shops[0]["domain"].removesuffix(".myshopify.com")
    running.control(
        "PUT",
        f"/shops/{handle}/app",
        {"redirect_urls": [f"http://127.0.0.1:{callback_port}/shopsync/oauth/callback"]},
    )
    return running


def _registry(data_dir: Path) -> StoreRegistry:
    return StoreRegistry(ControlSettings(data_dir=data_dir))


class CliProcess:
    """The ``shopsync`` CLI in a subprocess, read line by line (OAuth needs the printed URL)."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "SHOPSYNC_LOG_LEVEL": "WARNING"}
        self.proc = subprocess.Popen(
            [SHOPSYNC, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: list[str] = []

    def authorize_url(self) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if "/admin/oauth/authorize?" in line:
                return line.strip()
        raise AssertionError("no authorize URL printed: " + "".join(self.lines) + self.finish()[1])

    def finish(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, "".join(self.lines) + out, err


def _merchant_approves(url: str) -> httpx.Response:
    """What a browser does: follow the authorize redirect to the local callback."""
    return httpx.get(url, follow_redirects=True, timeout=30)


def _tampered(url: str, **changes: str) -> str:
    """Follow the authorize step by hand and alter the callback's query (``hmac=...``)."""
    redirect = httpx.get(url, follow_redirects=False, timeout=30)
    assert redirect.status_code == 302, redirect.text
    parts = urlsplit(redirect.headers["location"])
    params = dict(parse_qsl(parts.query))
    params.update(changes)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), ""))


def test_oauth_connect_end_to_end_stores_the_offline_token(
    store: RunningDevstore, tmp_path: Path, callback_port: int
) -> None:
    shop = store.shops[0]
    cli_run = CliProcess(
        "stores", "connect", shop["domain"], "--oauth",
        "--client-id", shop["client_id"], "--client-secret", shop["client_secret"],
        "--base-url", shop["base_url"], "--no-dagster", "--data-dir", str(tmp_path),
        "--callback-port", str(callback_port),
    )  # fmt: skip
    url = cli_run.authorize_url()
    assert shop["client_secret"] not in url and "state=" in url
    answer = _merchant_approves(url)
    assert answer.status_code == 200 and "authorised" in answer.text
    code, out, err = cli_run.finish()
    assert code == 0, out + err
    assert "with OAuth" in out and shop["client_secret"] not in out + err

    registry = _registry(tmp_path)
    info = registry.get_store(shop["domain"])
    assert info.auth_kind is AuthKind.OAUTH and info.status is StoreStatus.CONNECTED
    assert set(info.scopes) == set(requested_scopes())
    secret = registry.credentials(shop["domain"])
    assert secret["client_secret"] == shop["client_secret"] and secret["access_token"].startswith("shpat_")
    assert secret["access_token"] != shop["access_token"]  # a token of its own, from the code exchange
    # an expiring offline token (an hour, as Shopify requires of public apps from 2027) and its refresh token
    expires = datetime.fromisoformat(secret["access_token_expires_at"])
    assert timedelta(minutes=55) < expires - datetime.now(UTC) <= timedelta(hours=1)
    assert secret["refresh_token"].startswith("shprt_")
    with ShopifyClient(shop["domain"], **registry.client_options(shop["domain"])) as client:
        assert client.execute("{ shop { myshopifyDomain } }")["shop"]["myshopifyDomain"] == shop["domain"]
    stored = (tmp_path / "control.db").read_bytes()
    assert (
        stored.find(secret["access_token"].encode()) == -1
        and stored.find(secret["refresh_token"].encode()) == -1
    )


def _connect_by_oauth(store: RunningDevstore, data_dir: Path, port: int) -> StoreRegistry:
    """Connect the store in this process (the merchant approves from a thread)."""
    shop = store.shops[0]
    approvals: list[threading.Thread] = []

    def merchant(url: str) -> None:
        approvals.append(threading.Thread(target=_merchant_approves, args=(url,), daemon=True))
        approvals[-1].start()

    verified = verify_oauth(
        shop["domain"], shop["client_id"], shop["client_secret"], shop["base_url"], requested_scopes(),
        port=port, show_url=merchant, timeout=20,
    )  # fmt: skip
    for thread in approvals:
        thread.join(10)
    registry = _registry(data_dir)
    registry.connect_store(
        shop["domain"],
        credentials=verified.credentials,
        api_base_url=shop["base_url"],
        scopes=verified.scopes,
        auth_kind=verified.auth_kind,
    )
    return registry


def test_an_expired_oauth_token_is_refreshed_once_stored_and_shared(
    store: RunningDevstore, tmp_path: Path, callback_port: int
) -> None:
    domain = store.shops[0]["domain"]
    registry = _connect_by_oauth(store, tmp_path, callback_port)
    first = registry.credentials(domain)
    early = ShopifyClient(domain, **registry.client_options(domain))  # holds the first token
    assert early.execute("{ shop { id } }")["shop"]["id"]

    store.world.clock.offset = timedelta(hours=2)  # the hour-long token has expired at Shopify
    with ShopifyClient(domain, **registry.client_options(domain)) as client:
        assert client.execute("{ shop { id } }")["shop"]["id"]
    second = registry.credentials(domain)
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]  # rotated, and the new one stored
    assert datetime.fromisoformat(second["access_token_expires_at"]) > datetime.fromisoformat(
        first["access_token_expires_at"]
    )
    # another process still holding the old token meets Shopify's 401 and takes the stored one
    with early:
        assert early.execute("{ shop { id } }")["shop"]["id"]
        assert early.stats.retries.get("401") == 1
    assert registry.credentials(domain)["refresh_token"] == second["refresh_token"]  # no second refresh
    report = check_health(registry, domain)
    assert all(report.item(name).passed for name in (OAUTH, TOKEN, SCOPES, API))
    assert report.item(TOKEN).detail.startswith("expires at")

    # the refresh token stops working once the app is uninstalled: the store must be approved again
    handle = domain.removesuffix(".myshopify.com")
    store.control("POST", f"/shops/{handle}/uninstall")
    store.world.clock.offset = timedelta(hours=4)
    with (
        ShopifyClient(domain, **registry.client_options(domain)) as client,
        pytest.raises(ShopifyAuthError, match="stores reconnect") as refused,
    ):
        client.execute("{ shop { id } }")
    assert second["refresh_token"] not in str(refused.value)
    registry.update_credentials(domain, {"access_token_expires_at": datetime.now(UTC).isoformat()})
    report = check_health(registry, domain)
    assert not report.item(TOKEN).passed and "stores reconnect" in report.item(TOKEN).detail
    assert report.status is StoreStatus.RECONNECT_REQUIRED
    registry.close()


def test_a_store_connected_with_a_non_expiring_oauth_token_is_moved_to_an_expiring_one(
    store: RunningDevstore, tmp_path: Path
) -> None:
    # As an earlier shopsync left it: an OAuth store holding a non-expiring offline token.
    shop = store.shops[0]
    domain = shop["domain"]
    code = authorization_code(store)
    keys = {"client_id": shop["client_id"], "client_secret": shop["client_secret"]}
    old = httpx.post(shop["base_url"] + "/admin/oauth/access_token", json={**keys, "code": code}, timeout=30)
    old_token = old.json()["access_token"]
    assert "refresh_token" not in old.json()
    registry = _registry(tmp_path)
    registry.connect_store(
        domain,
        credentials={"access_token": old_token, **keys},
        api_base_url=shop["base_url"],
        scopes=["read_customers"],
        auth_kind=AuthKind.OAUTH,
    )

    # Shopify's token endpoint fails: the old token (still accepted until 2027) keeps the store syncing
    store.control("PUT", "/faults", {"rate_500": 1.0, "kinds": ["oauth"]})
    with ShopifyClient(domain, **{**registry.client_options(domain), "max_attempts": 2}) as client:
        assert client.execute("{ shop { id } }")["shop"]["id"]
    assert registry.credentials(domain)["access_token"] == old_token
    store.control("DELETE", "/faults")

    with ShopifyClient(domain, **registry.client_options(domain)) as client:
        assert client.execute("{ shop { id } }")["shop"]["id"]
    moved = registry.credentials(domain)
    assert moved["access_token"] != old_token and moved["refresh_token"].startswith("shprt_")
    assert datetime.fromisoformat(moved["access_token_expires_at"]) > datetime.now(UTC)
    gone = httpx.post(
        shop["base_url"] + "/admin/api/2026-10/graphql.json",
        json={"query": "{ shop { id } }"},
        headers={"X-Shopify-Access-Token": old_token},
        timeout=30,
    )
    assert gone.status_code == 401  # the old kind of token no longer works
    # the exchange answer lost on the way: asking again with the old token gives the same pair
    again = migrate_offline_token(
        domain, shop["base_url"], shop["client_id"], shop["client_secret"], old_token
    )
    assert (again.access_token, again.refresh_token) == (moved["access_token"], moved["refresh_token"])
    registry.close()


def test_oauth_callback_with_a_tampered_hmac_is_refused_and_nothing_is_stored(
    store: RunningDevstore, tmp_path: Path, callback_port: int
) -> None:
    shop = store.shops[0]
    cli_run = CliProcess(
        "stores", "connect", shop["domain"], "--oauth",
        "--client-id", shop["client_id"], "--client-secret", shop["client_secret"],
        "--base-url", shop["base_url"], "--no-dagster", "--data-dir", str(tmp_path),
        "--callback-port", str(callback_port),
    )  # fmt: skip
    url = cli_run.authorize_url()
    answer = httpx.get(_tampered(url, hmac="0" * 64), timeout=30)
    assert answer.status_code == 400 and "hmac" in answer.text
    code, _out, err = cli_run.finish()
    assert code == 1 and "hmac signature does not verify" in err and "Nothing was stored" in err
    assert "Traceback" not in err
    assert _registry(tmp_path).list_stores() == []


def test_oauth_callback_for_another_attempt_state_is_refused(
    store: RunningDevstore, callback_port: int
) -> None:
    shop = store.shops[0]
    answers: list[httpx.Response] = []
    threads: list[threading.Thread] = []

    def merchant(url: str) -> None:
        # A genuine, correctly signed redirect, but for an authorization this attempt did not start.
        parts = urlsplit(url)
        params = dict(parse_qsl(parts.query))
        params["state"] = "somebody-elses-state"
        foreign = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), ""))
        thread = threading.Thread(target=lambda: answers.append(_merchant_approves(foreign)))
        thread.start()
        threads.append(thread)

    with pytest.raises(ConnectError, match="state does not match"):
        verify_oauth(
            shop["domain"],
            shop["client_id"],
            shop["client_secret"],
            shop["base_url"],
            requested_scopes(),
            port=callback_port,
            show_url=merchant,
            timeout=20,
        )
    for thread in threads:
        thread.join(10)
    assert answers and answers[0].status_code == 400


def test_client_credentials_connect_every_consumer_and_health(store: RunningDevstore, tmp_path: Path) -> None:
    shop = store.shops[0]
    result = CliRunner().invoke(
        cli,
        [
            "stores", "connect", shop["domain"],
            "--client-id", shop["client_id"], "--client-secret", shop["client_secret"],
            "--base-url", shop["base_url"], "--no-dagster", "--data-dir", str(tmp_path),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "with client credentials" in result.output and shop["client_secret"] not in result.output
    registry = _registry(tmp_path)
    domain = shop["domain"]
    info = registry.get_store(domain)
    assert info.auth_kind is AuthKind.CLIENT_CREDENTIALS
    secret = registry.credentials(domain)
    assert "access_token" not in secret  # tokens are obtained (and refreshed) by the clients
    expires = datetime.fromisoformat(secret["expires_at"])
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)
    assert registry.client_options(domain)["access_token"] is None

    # the Dagster resource and the reverse-sync service build working clients from the pair
    from orchestration.defs.reverse_sync.service import client_for

    for client in (ShopifyStores(data_dir=str(tmp_path)).client_for(domain), client_for(registry, domain)):
        with client:
            assert client.execute("{ shop { myshopifyDomain } }")["shop"]["myshopifyDomain"] == domain
            assert client.stats.token_fetches == 1

    report = check_health(registry, domain)
    assert report.item(TOKEN).passed and "refreshed" in report.item(TOKEN).detail
    assert report.item(OAUTH).passed and report.item(SCOPES).passed and report.item(API).passed

    # the token endpoint fails and the recorded token has expired: "Token not expired" fails
    registry.update_credentials(
        domain, {"expires_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat()}
    )
    store.control("PUT", "/faults", {"rate_500": 1.0, "kinds": ["oauth"]})
    report = check_health(registry, domain)
    token = report.item(TOKEN)
    assert not token.passed and "could not be refreshed" in token.detail and "reconnect" in token.fix
    assert report.item(OAUTH).passed and not report.item(API).passed
    assert report.status is StoreStatus.RECONNECT_REQUIRED
    store.control("DELETE", "/faults")

    # a wrong secret is refused with a clear message and nothing changes
    refused = CliRunner().invoke(
        cli,
        [
            "stores", "connect", domain, "--client-id", shop["client_id"], "--client-secret", "wrong",
            "--base-url", shop["base_url"], "--no-dagster", "--data-dir", str(tmp_path),
        ],
    )  # fmt: skip
    assert refused.exit_code == 1 and "refused the app credentials" in refused.output
    assert registry.credentials(domain)["client_secret"] == shop["client_secret"]


def test_reconnect_by_each_flow_keeps_settings_list_and_history(
    store: RunningDevstore, tmp_path: Path, callback_port: int
) -> None:
    shop = store.shops[0]
    domain = shop["domain"]
    registry = _registry(tmp_path)
    registry.connect_store(
        domain,
        credentials={"client_id": shop["client_id"], "client_secret": shop["client_secret"]},
        api_base_url=shop["base_url"],
        auth_kind=AuthKind.CLIENT_CREDENTIALS,
        project="alpha",
    )
    registry.set_inbound_toggles(domain, {"catalogue": False})
    registry.set_outbound_toggles(domain, {"email_consent": True})
    registry.assign_customer_list(domain, "VIP")
    bulk_at = datetime(2026, 1, 2, tzinfo=UTC)
    registry.mark_entity(domain, "customers", EntityState.SYNCED, bulk_synced_at=bulk_at)
    registry.set_store_status(domain, StoreStatus.RECONNECT_REQUIRED, "token revoked")

    def kept() -> None:
        assert registry.get_store(domain).project == "alpha"
        assert registry.get_store(domain).status is StoreStatus.CONNECTED
        assert "catalogue" not in registry.inbound_toggles(domain)
        assert registry.outbound_toggles(domain) == {"email_consent"}
        assert registry.customer_list(domain) == "VIP"
        status = registry.entity_status(domain, "customers")
        assert status is not None and status.last_bulk_sync_at == bulk_at

    runner = CliRunner()
    # 1. no options: the store's own flow again (a new client-credentials grant)
    again = runner.invoke(cli, ["stores", "reconnect", domain, "--data-dir", str(tmp_path)])
    assert again.exit_code == 0, again.output
    assert "with client credentials" in again.output
    kept()

    # 2. OAuth, with the stored app credentials; write_customers is asked for since a push is on
    registry.set_store_status(domain, StoreStatus.RECONNECT_REQUIRED, "scope missing")
    cli_run = CliProcess(
        "stores", "reconnect", domain, "--oauth", "--data-dir", str(tmp_path), "--callback-port", str(callback_port)
    )  # fmt: skip
    url = cli_run.authorize_url()
    assert "write_customers" in dict(parse_qsl(urlsplit(url).query))["scope"]
    assert _merchant_approves(url).status_code == 200
    code, out, err = cli_run.finish()
    assert code == 0, out + err
    assert registry.get_store(domain).auth_kind is AuthKind.OAUTH
    assert "write_customers" in registry.get_store(domain).scopes
    kept()

    # 3. a static token (the client secret stays for webhook signatures)
    token = store.control("POST", f"/shops/{domain.removesuffix('.myshopify.com')}/reinstall", {})[
        "access_token"
    ]
    by_token = runner.invoke(
        cli, ["stores", "reconnect", domain, "--token", token, "--data-dir", str(tmp_path)]
    )
    assert by_token.exit_code == 0, by_token.output
    assert registry.get_store(domain).auth_kind is AuthKind.ACCESS_TOKEN
    assert registry.credentials(domain)["client_secret"] == shop["client_secret"]
    kept()
    # a static-token store reconnected without a token is told what to give
    bare = runner.invoke(cli, ["stores", "reconnect", domain, "--data-dir", str(tmp_path)])
    assert bare.exit_code == 2 and "--token" in bare.output


def test_connect_requires_one_way_of_authenticating(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["stores", "connect", "mystore", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "No credentials given" in result.output and "--oauth" in result.output
    both = CliRunner().invoke(
        cli, ["stores", "connect", "mystore", "--token", "x", "--oauth", "--data-dir", str(tmp_path)]
    )
    assert both.exit_code == 2 and "not both" in both.output
    half = CliRunner().invoke(cli, ["stores", "connect", "mystore", "--oauth", "--data-dir", str(tmp_path)])
    assert half.exit_code == 2 and "--oauth needs --client-id and --client-secret" in half.output


def test_connect_offers_the_initial_sync_in_order_and_runs_are_on_the_instance(
    store: RunningDevstore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dagster as dg

    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    shop = store.shops[0]
    domain = shop["domain"]
    data = tmp_path / "data"
    args = ["--base-url", shop["base_url"], "--data-dir", str(data)]
    runner = CliRunner()

    # not at a terminal and no --sync: nothing runs, the command to run it is printed
    quiet = runner.invoke(cli, ["stores", "connect", domain, "--token", shop["access_token"], *args])
    assert quiet.exit_code == 0, quiet.output
    assert "Customers → Orders → Products → Collections → Checkouts" in quiet.output
    assert f"shopsync stores resync {domain}" in quiet.output
    assert _registry(data).entity_statuses(domain) == []

    synced = runner.invoke(
        cli, ["stores", "connect", domain, "--token", shop["access_token"], "--sync", *args]
    )
    assert synced.exit_code == 0, synced.output
    order = [
        line.split()[0] for line in synced.output.splitlines() if line.startswith("  ") and " run " in line
    ]
    assert order == ["Customers", "Orders", "Products", "Collections", "Checkouts"]
    registry = _registry(data)
    assert all(
        e.state is EntityState.SYNCED and e.last_bulk_sync_at for e in registry.entity_statuses(domain)
    )

    retried = runner.invoke(cli, ["stores", "retry", domain, "orders", "--data-dir", str(data)])
    assert retried.exit_code == 0, retried.output

    # a fresh instance on the same DAGSTER_HOME (what `dagster dev` opens) reads the runs back
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        initial = instance.get_runs(filters=dg.RunsFilter(tags={"shopsync/trigger": "initial_sync"}))
        assert len(initial) == 5
        assert all(
            r.status == dg.DagsterRunStatus.SUCCESS and r.tags["dagster/partition"] == domain for r in initial
        )
        entities = [next(k.path[-1] for k in r.asset_selection or ()) for r in reversed(initial)]
        assert entities == ["customers", "orders", "products", "collections", "abandoned_checkouts"]
        retry_runs = instance.get_runs(filters=dg.RunsFilter(tags={"shopsync/trigger": "retry"}))
        assert len(retry_runs) == 1 and retry_runs[0].status == dg.DagsterRunStatus.SUCCESS
        run_id = retry_runs[0].run_id
        assert run_id in retried.output
        materialized = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        keys = {r.event_log_entry.dagster_event.asset_key for r in materialized.records}
        assert dg.AssetKey(["shopify", "orders"]) in keys
        assert domain in instance.get_dynamic_partitions("stores")
    finally:
        instance.dispose()
