"""The Shopify client against the devstore over real HTTP: pacing, retries, tokens, typed errors."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from devstore.generator import generate_world
from devstore.server import RunningDevstore, start_in_thread, world_from_tables
from pipelines.shopify import (
    FetchSettings,
    ShopifyAccessDenied,
    ShopifyAuthError,
    ShopifyClient,
    ShopifyUnavailable,
    fetch_entity,
)
from pipelines.shopify import documents as docs

CUSTOMERS_PAGE = docs.load("customers")
SCOPES = docs.load("access_scopes")


@functools.cache
def _tables(customers: int) -> dict[str, Any]:
    # generated once; each test gets its own world (and server) built from these tables
    return generate_world(stores=1, customers=customers, seed=21)


def _start(plan: str, customers: int = 30, token_ttl: timedelta | None = None) -> RunningDevstore:
    world = world_from_tables(_tables(customers), seed=21, plan=plan, token_ttl=token_ttl)
    return start_in_thread(world, port=0)


@pytest.fixture
def standard_store() -> Iterator[RunningDevstore]:
    running = _start("standard")
    yield running
    running.stop()


@pytest.fixture
def plus_store() -> Iterator[RunningDevstore]:
    running = _start("plus")
    yield running
    running.stop()


def _shop(running: RunningDevstore) -> dict[str, Any]:
    return running.shops[0]


def _handle(running: RunningDevstore) -> str:
    return str(_shop(running)["domain"]).removesuffix(".myshopify.com")


def _static_client(running: RunningDevstore, **options: Any) -> ShopifyClient:
    shop = _shop(running)
    client = ShopifyClient(
        shop["domain"], access_token=shop["access_token"], base_url=shop["base_url"], **options
    )
    client.backoff_base_s = 0.01
    return client


def test_pacing_avoids_throttling_at_the_standard_plan(
    standard_store: RunningDevstore, tmp_path: Path
) -> None:
    shop = _shop(standard_store)
    with _static_client(standard_store) as client:
        client.execute(SCOPES)  # learn the bucket
        # start from an empty bucket (as after a long sync) so every further page has to wait for points
        limiter = standard_store.app.state.limiter
        limiter.bucket(
            next(iter(standard_store.world.shop(_handle(standard_store)).apps)), shop["domain"], "standard"
        ).drain()  # type: ignore[union-attr]
        client.execute(SCOPES)  # may be THROTTLED once: the bucket was emptied behind the client's back
        throttled_before, requests_before = client.stats.throttled, client.stats.requests
        started = time.monotonic()
        result = fetch_entity(
            client,
            shop=shop["domain"],
            entity="customers",
            landing_root=tmp_path,
            state_dir=tmp_path,
            mode="incremental",
            scopes={"read_customers"},
            settings=FetchSettings(target_query_cost=100),
        )
        elapsed = time.monotonic() - started
    stats = client.stats
    assert result.rows > 0 and stats.requests - requests_before >= 4
    assert stats.throttled == throttled_before, stats.as_dict()
    assert stats.pacing_wait_s > 1.0  # it did wait for the bucket instead of being refused
    # points spent per second stay at the restore rate (100/s), neither far below nor above
    assert result.api_points / elapsed <= 100 * 1.15
    assert result.api_points / elapsed >= 100 * 0.6


def test_retries_429_5xx_resets_and_broken_json(plus_store: RunningDevstore) -> None:
    plus_store.control(
        "PUT",
        "/faults",
        {
            "seed": 5,
            "rate_429": 0.12,
            "retry_after": 0.05,
            "rate_500": 0.08,
            "rate_502": 0.08,
            "rate_503": 0.08,
            "reset_rate": 0.1,
            "invalid_json_rate": 0.08,
            "slow_rate": 0.05,
            "slow_delay": 1.0,
            "kinds": ["graphql"],
        },
    )
    try:
        # a slow reply outlasts the client's timeout: a timeout is retried like any transient failure
        with _static_client(plus_store, max_attempts=10, timeout=0.5) as client:
            for _ in range(40):
                data = client.execute(CUSTOMERS_PAGE, {"first": 5, "childFirst": 1, "query": None})
                assert len(data["customers"]["edges"]) == 5
    finally:
        plus_store.control("DELETE", "/faults")
    retries = client.stats.retries
    assert {"429", "reset", "invalid_json", "timeout"} <= set(retries), dict(retries)
    assert {"500", "502", "503"} & set(retries), dict(retries)
    # Retry-After was honoured for every 429
    assert client.stats.throttle_wait_s >= 0.05 * retries["429"] * 0.99


def test_persistent_5xx_raises_a_clear_unavailable_error(plus_store: RunningDevstore) -> None:
    plus_store.control("PUT", "/faults", {"seed": 1, "rate_503": 1.0, "kinds": ["graphql"]})
    try:
        with (
            _static_client(plus_store, max_attempts=3) as client,
            pytest.raises(ShopifyUnavailable) as raised,
        ):
            client.execute(SCOPES)
    finally:
        plus_store.control("DELETE", "/faults")
    message = str(raised.value)
    assert (
        _shop(plus_store)["domain"] in message
        and "3 attempts" in message
        and "try the sync again later" in message
    )
    assert client.stats.retries["503"] == 3


def test_client_credentials_token_is_refreshed_before_expiry_and_once_on_401(
    caplog: pytest.LogCaptureFixture,
) -> None:
    running = _start("plus", token_ttl=timedelta(seconds=3))
    caplog.set_level(logging.DEBUG)
    try:
        shop = _shop(running)
        client = ShopifyClient(
            shop["domain"],
            client_id=shop["client_id"],
            client_secret=shop["client_secret"],
            base_url=shop["base_url"],
        )
        client.backoff_base_s = 0.01
        client.token_refresh_margin_s = 1.0
        with client:
            assert client.execute(SCOPES)["currentAppInstallation"]["accessScopes"]
            assert client.stats.token_fetches == 1
            time.sleep(2.2)  # inside the refresh margin: a new token before the old one expires
            client.execute(SCOPES)
            assert client.stats.token_fetches == 2 and client.stats.retries["401"] == 0
            running.control("POST", f"/shops/{_handle(running)}/tokens/revoke", {"all": True})
            client.execute(SCOPES)  # 401, one fresh token, success
            assert client.stats.token_fetches == 3 and client.stats.retries["401"] == 1
            tokens = list(next(iter(running.world.shop(_handle(running)).apps.values())).tokens)  # type: ignore[union-attr]
    finally:
        running.stop()
    text = caplog.text + repr(client)
    assert shop["client_secret"] not in text
    assert tokens and all(token not in text for token in tokens)


def test_revoked_token_raises_auth_error_without_leaking_it(
    plus_store: RunningDevstore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    shop = _shop(plus_store)
    plus_store.control("POST", f"/shops/{_handle(plus_store)}/tokens/revoke", {"token": shop["access_token"]})
    client = ShopifyClient(shop["domain"], access_token=shop["access_token"], base_url=shop["base_url"])
    with client, pytest.raises(ShopifyAuthError) as raised:
        client.execute(SCOPES)
    assert client.stats.requests == 1  # a rejected static token is not retried
    assert str(raised.value).startswith(
        f"Shopify rejected the access token for {shop['domain']}: reconnect the store"
    )
    for text in (str(raised.value), repr(raised.value), repr(client), caplog.text):
        assert shop["access_token"] not in text


def test_missing_scope_raises_access_denied_naming_it(plus_store: RunningDevstore) -> None:
    plus_store.control("POST", f"/shops/{_handle(plus_store)}/scopes/remove", {"scope": "read_customers"})
    plus_store.control("POST", f"/shops/{_handle(plus_store)}/scopes/remove", {"scope": "write_customers"})
    with _static_client(plus_store) as client, pytest.raises(ShopifyAccessDenied) as raised:
        client.execute(CUSTOMERS_PAGE, {"first": 1, "childFirst": 1, "query": None})
    assert raised.value.scope == "read_customers"
    assert "`read_customers`" in str(raised.value)


def test_wrong_app_credentials_raise_auth_error(plus_store: RunningDevstore) -> None:
    shop = _shop(plus_store)
    client = ShopifyClient(
        shop["domain"], client_id=shop["client_id"], client_secret="shpss_wrong", base_url=shop["base_url"]
    )
    with client, pytest.raises(ShopifyAuthError) as raised:
        client.execute(SCOPES)
    assert "refused the app credentials" in str(raised.value) and "shpss_wrong" not in str(raised.value)
