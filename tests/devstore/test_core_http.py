"""Auth (tokens, client credentials, authorization code), addressing, REST endpoints and faults over HTTP."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from core_tables import tiny_tables
from tls_support import self_signed

from devstore.faults import FaultProfile
from devstore.server import RunningDevstore, start_in_thread, world_from_tables

# one client per module: a new httpx client per call costs an SSL context each time
HTTP = httpx.Client(timeout=30)

SHOP = "tiny.myshopify.com"
CUSTOMERS_QUERY = {"query": "{ customers(first: 2) { nodes { id } } }"}
INVALID = {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}
CALLBACK = "https://app.example/callback"


@pytest.fixture
def store() -> Iterator[RunningDevstore]:
    world = world_from_tables(tiny_tables(), token_ttl=timedelta(hours=1), redirect_urls=[CALLBACK])
    running = start_in_thread(world, webhooks=False)
    yield running
    running.stop()


def _creds(store: RunningDevstore) -> dict[str, str]:
    return store.shops[0]


def test_missing_or_wrong_token_is_401(store: RunningDevstore) -> None:
    url = store.graphql_url("tiny")
    for headers in ({}, {"X-Shopify-Access-Token": "shpat_nope"}):
        response = HTTP.post(url, json=CUSTOMERS_QUERY, headers=headers)
        assert response.status_code == 401
        assert response.json() == INVALID
    assert HTTP.get(store.shop_url("tiny") + "/admin/api/2026-10/shop.json").status_code == 401


def test_client_credentials_token_and_its_expiry(store: RunningDevstore) -> None:
    creds = _creds(store)
    token_url = store.shop_url("tiny") + "/admin/oauth/access_token"
    grant = {
        "grant_type": "client_credentials",
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
    }
    form = HTTP.post(token_url, data=grant)
    assert form.status_code == 200
    body = form.json()
    assert body["expires_in"] == 3600 and body["access_token"].startswith("shpat_")
    assert set(body["scope"].split(",")) == set(creds["scopes"])
    as_json = HTTP.post(token_url, json=grant).json()
    assert as_json["access_token"] != body["access_token"]
    headers = {"X-Shopify-Access-Token": body["access_token"]}
    assert HTTP.post(store.graphql_url("tiny"), json=CUSTOMERS_QUERY, headers=headers).status_code == 200
    store.world.clock.offset += timedelta(hours=1, seconds=1)
    expired = HTTP.post(store.graphql_url("tiny"), json=CUSTOMERS_QUERY, headers=headers)
    assert expired.status_code == 401 and expired.json() == INVALID
    # the static token does not expire
    static = {"X-Shopify-Access-Token": creds["access_token"]}
    assert HTTP.post(store.graphql_url("tiny"), json=CUSTOMERS_QUERY, headers=static).status_code == 200
    wrong = HTTP.post(token_url, data={**grant, "client_secret": "shpss_wrong"})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_client"


def test_authorization_code_flow_with_hmac(store: RunningDevstore) -> None:
    creds = _creds(store)
    base = store.shop_url("tiny")
    response = HTTP.get(
        base + "/admin/oauth/authorize",
        params={
            "client_id": creds["client_id"],
            "scope": "read_customers",
            "redirect_uri": "https://app.example/callback?x=1",
            "state": "nonce-123",
        },
    )
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "app.example", "/callback")
    params = dict(parse_qsl(location.query))
    assert params["state"] == "nonce-123" and params["shop"] == SHOP and params["x"] == "1"
    assert {"code", "hmac", "host", "timestamp"} <= set(params)
    signed = {k: v for k, v in params.items() if k != "x"}
    assert _callback_verifies(signed, creds["client_secret"])
    exchange = {
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "code": params["code"],
    }
    token = HTTP.post(base + "/admin/oauth/access_token", json=exchange)
    assert token.status_code == 200
    assert token.json()["scope"] == "read_customers" and "expires_in" not in token.json()
    headers = {"X-Shopify-Access-Token": token.json()["access_token"]}
    assert "errors" not in HTTP.post(store.graphql_url("tiny"), json=CUSTOMERS_QUERY, headers=headers).json()
    denied = HTTP.post(
        store.graphql_url("tiny"), json={"query": "{ orders(first: 1) { nodes { id } } }"}, headers=headers
    ).json()
    assert denied["errors"][0]["extensions"]["code"] == "ACCESS_DENIED"
    scopes = HTTP.get(base + "/admin/oauth/access_scopes.json", headers=headers).json()
    assert scopes == {"access_scopes": [{"handle": "read_customers"}]}
    again = HTTP.post(base + "/admin/oauth/access_token", json=exchange)
    assert again.status_code == 400  # a code is good once


def test_expiring_offline_tokens_refresh_and_rotate(store: RunningDevstore) -> None:
    creds = _creds(store)
    base = store.shop_url("tiny")
    response = _authorize(store, client_id=creds["client_id"], redirect_uri=CALLBACK, state="s1")
    code = dict(parse_qsl(urlsplit(response.headers["location"]).query))["code"]
    keys = {"client_id": creds["client_id"], "client_secret": creds["client_secret"]}
    first = HTTP.post(base + "/admin/oauth/access_token", json={**keys, "code": code, "expiring": "1"}).json()
    assert first["expires_in"] == 3600 and first["refresh_token_expires_in"] == 90 * 86400
    assert first["refresh_token"].startswith("shprt_")

    def refresh(token: str) -> httpx.Response:
        body = {**keys, "grant_type": "refresh_token", "refresh_token": token}
        return HTTP.post(base + "/admin/oauth/access_token", json=body)

    def works(access_token: str) -> bool:
        headers = {"X-Shopify-Access-Token": access_token}
        return HTTP.post(store.graphql_url("tiny"), json=CUSTOMERS_QUERY, headers=headers).status_code == 200

    store.world.clock.offset += timedelta(hours=1, seconds=1)
    assert not works(first["access_token"])
    second = refresh(first["refresh_token"]).json()
    assert works(second["access_token"]) and second["refresh_token"] != first["refresh_token"]
    # a refresh answer lost on the way: the spent token still works until its replacement is used
    third = refresh(first["refresh_token"]).json()
    assert works(third["access_token"])
    assert refresh(third["refresh_token"]).status_code == 200
    spent = refresh(first["refresh_token"])
    assert spent.status_code == 400 and spent.json()["error"] == "invalid_grant"
    assert refresh("shprt_" + "0" * 32).status_code == 400


def _callback_verifies(params: dict[str, str], secret: str) -> bool:
    """What an app does with the callback, by Shopify's rule, written here from scratch:
    drop hmac, sort the rest, join k=v with &, compare the hex HMAC-SHA256 keyed with the client secret."""
    message = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "hmac")
    expected = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(params.get("hmac", ""), expected)


def _authorize(store: RunningDevstore, **params: str) -> httpx.Response:
    return HTTP.get(store.shop_url("tiny") + "/admin/oauth/authorize", params=params)


def test_a_tampered_callback_fails_verification(store: RunningDevstore) -> None:
    creds = _creds(store)
    response = _authorize(store, client_id=creds["client_id"], redirect_uri=CALLBACK, state="s1")
    params = dict(parse_qsl(urlsplit(response.headers["location"]).query))
    assert _callback_verifies(params, creds["client_secret"])
    assert not _callback_verifies(params, "shpss_someone_elses_secret")
    # every signed parameter is covered: changing any of them breaks the signature
    for key, forged in (
        ("code", "0" * 32),
        ("shop", "evil.myshopify.com"),
        ("state", "s2"),
        ("timestamp", "1"),
    ):
        assert key in params
        assert not _callback_verifies({**params, key: forged}, creds["client_secret"]), key
    flipped = params["hmac"][:-1] + ("1" if params["hmac"][-1] != "1" else "2")
    assert not _callback_verifies({**params, "hmac": flipped}, creds["client_secret"])


def test_a_tampered_authorize_request_is_refused(store: RunningDevstore) -> None:
    creds = _creds(store)
    codes = store.app.state.devstore.oauth.codes
    ok = _authorize(store, client_id=creds["client_id"], redirect_uri=CALLBACK + "?next=/home", state="s")
    assert ok.status_code == 302  # the app's own query string may ride along
    issued = len(codes)
    for forged in (
        "https://evil.example/callback",  # another host
        "https://app.example.evil.example/callback",
        "http://app.example/callback",  # downgraded scheme
        "https://app.example:8443/callback",  # another port
        "https://app.example/callback/",  # even a trailing slash
        "https://app.example/other",
    ):
        refused = _authorize(store, client_id=creds["client_id"], redirect_uri=forged, state="s")
        assert refused.status_code == 400, forged
        assert "location" not in refused.headers
        assert refused.json()["error"] == "invalid_request"
        assert refused.json()["error_description"].startswith("The redirect_uri is not whitelisted")
    unknown_app = _authorize(store, client_id="0" * 32, redirect_uri=CALLBACK)
    assert unknown_app.status_code == 400 and unknown_app.json()["error"] == "invalid_request"
    missing = _authorize(store, client_id=creds["client_id"])
    assert missing.status_code == 400
    assert len(codes) == issued  # no refused request got an authorization code


def test_control_api_sets_token_ttl_and_redirect_urls(store: RunningDevstore) -> None:
    creds = _creds(store)
    assert store.control("GET", "/shops/tiny/app")["token_ttl_seconds"] == 3600
    token_url = store.shop_url("tiny") + "/admin/oauth/access_token"
    grant = {
        "grant_type": "client_credentials",
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
    }
    before = HTTP.post(token_url, data=grant).json()
    settings = store.control(
        "PUT", "/shops/tiny/app", {"token_ttl_seconds": 60, "redirect_urls": ["http://127.0.0.1:9/cb"]}
    )
    assert settings["token_ttl_seconds"] == 60 and settings["redirect_urls"] == ["http://127.0.0.1:9/cb"]
    after = HTTP.post(token_url, data=grant).json()
    assert after["expires_in"] == 60
    store.world.clock.offset += timedelta(seconds=61)
    graphql = store.graphql_url("tiny")
    short = HTTP.post(
        graphql, json=CUSTOMERS_QUERY, headers={"X-Shopify-Access-Token": after["access_token"]}
    )
    assert short.status_code == 401
    # a token issued before the change keeps its own expiry
    long = HTTP.post(
        graphql, json=CUSTOMERS_QUERY, headers={"X-Shopify-Access-Token": before["access_token"]}
    )
    assert long.status_code == 200
    assert (
        _authorize(store, client_id=creds["client_id"], redirect_uri="http://127.0.0.1:9/cb").status_code
        == 302
    )
    assert _authorize(store, client_id=creds["client_id"], redirect_uri=CALLBACK).status_code == 400
    for body, message in (
        ({"token_ttl_seconds": 0}, "above 0"),
        ({"token_ttl_seconds": "soon"}, "above 0"),
        ({"redirect_urls": ["/relative"]}, "absolute http(s) URLs"),
        ({"redirect_urls": "https://x.example"}, "list of URLs"),
        ({"ttl": 5}, "Unknown app settings: ttl"),
    ):
        response = HTTP.put(f"{store.url}/_devstore/shops/tiny/app", json=body)
        assert response.status_code == 400 and message in response.json()["error"], body
    assert store.control("GET", "/shops/tiny/app")["token_ttl_seconds"] == 60  # refusals changed nothing


def test_host_and_path_prefix_routing_and_versions(store: RunningDevstore) -> None:
    headers = {"X-Shopify-Access-Token": _creds(store)["access_token"]}
    query = {"query": "{ shop { myshopifyDomain } }"}
    by_host = HTTP.post(
        store.url + "/admin/api/2026-10/graphql.json", json=query, headers={**headers, "Host": SHOP}
    )
    assert by_host.json()["data"] == {"shop": {"myshopifyDomain": SHOP}}
    by_path = HTTP.post(store.graphql_url("tiny"), json=query, headers=headers)
    assert by_path.json()["data"] == by_host.json()["data"]
    unknown = HTTP.post(
        store.url + "/admin/api/2026-10/graphql.json",
        json=query,
        headers={**headers, "Host": "nope.myshopify.com"},
    )
    assert unknown.status_code == 404
    assert (
        HTTP.post(
            store.shop_url("nope") + "/admin/api/2026-10/graphql.json", json=query, headers=headers
        ).status_code
        == 404
    )
    old = HTTP.post(store.shop_url("tiny") + "/admin/api/2025-01/graphql.json", json=query, headers=headers)
    assert old.status_code == 404
    bad = HTTP.post(
        store.graphql_url("tiny"),
        content=b"{not json",
        headers={**headers, "content-type": "application/json"},
    )
    assert bad.status_code == 400


def test_rest_shop_and_access_scopes(store: RunningDevstore) -> None:
    creds = _creds(store)
    headers = {"X-Shopify-Access-Token": creds["access_token"]}
    shop = HTTP.get(store.shop_url("tiny") + "/admin/api/2026-10/shop.json", headers=headers).json()["shop"]
    assert shop["myshopify_domain"] == SHOP and shop["currency"] == "EUR" and shop["country_code"] == "DE"
    assert (
        shop["domain"] == "www.tiny.example"
        and shop["plan_name"] == "basic"
        and shop["iana_timezone"] == "Europe/Berlin"
    )
    scopes = HTTP.get(store.shop_url("tiny") + "/admin/oauth/access_scopes.json", headers=headers).json()
    assert sorted(s["handle"] for s in scopes["access_scopes"]) == sorted(creds["scopes"])


def test_faults_are_applied(store: RunningDevstore) -> None:
    headers = {"X-Shopify-Access-Token": _creds(store)["access_token"]}
    url = store.graphql_url("tiny")
    faults = store.app.state.faults

    faults.set_profile(FaultProfile(rate_429=1.0, retry_after=2.5))
    response = HTTP.post(url, json=CUSTOMERS_QUERY, headers=headers)
    assert response.status_code == 429 and response.headers["retry-after"] == "2.5"

    for status in (500, 502, 503):
        faults.set_profile(FaultProfile(**{f"rate_{status}": 1.0}))
        assert HTTP.post(url, json=CUSTOMERS_QUERY, headers=headers).status_code == status

    faults.set_profile(FaultProfile(throttle_storm_rate=1.0))
    body = HTTP.post(url, json=CUSTOMERS_QUERY, headers=headers).json()
    assert body["errors"][0]["extensions"]["code"] == "THROTTLED"
    assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 0

    faults.set_profile(FaultProfile(invalid_json_rate=1.0))
    response = HTTP.post(url, json=CUSTOMERS_QUERY, headers=headers)
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()

    faults.set_profile(FaultProfile(reset_rate=1.0))
    with pytest.raises(httpx.TransportError):
        HTTP.post(url, json=CUSTOMERS_QUERY, headers=headers)

    faults.set_profile(FaultProfile(slow_rate=1.0, slow_delay=0.3))
    started = time.monotonic()
    assert HTTP.post(url, json=CUSTOMERS_QUERY, headers=headers).status_code == 200
    assert time.monotonic() - started >= 0.3

    faults.set_profile(FaultProfile(rate_500=1.0, kinds=("oauth",)))
    assert HTTP.post(url, json=CUSTOMERS_QUERY, headers=headers).status_code == 200
    faults.clear()


def test_serves_https_with_a_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    running = start_in_thread(world_from_tables(tiny_tables()), tls_cert=cert, tls_key=key, webhooks=False)
    try:
        assert running.url.startswith("https://")
        with httpx.Client(verify=False) as client:
            body = client.post(
                running.graphql_url("tiny"),
                json={"query": "{ shop { name } }"},
                headers={"X-Shopify-Access-Token": running.token("tiny")},
            ).json()
        assert body["data"] == {"shop": {"name": "Tiny Shop"}}
    finally:
        running.stop()


def test_search_on_an_unknown_field_is_dropped_and_reported_in_extensions(store: RunningDevstore) -> None:
    headers = {"X-Shopify-Access-Token": _creds(store)["access_token"]}
    document = "query($q: String) { customers(first: 5, query: $q) { nodes { id } } }"
    body = HTTP.post(
        store.graphql_url("tiny"),
        json={"query": document, "variables": {"q": "id:1003 OR colour:blue"}},
        headers=headers,
    ).json()
    assert "errors" not in body
    assert body["data"]["customers"]["nodes"] == [{"id": "gid://shopify/Customer/1003"}]
    assert body["extensions"]["search"] == [
        {
            "path": ["customers"],
            "query": "id:1003 OR colour:blue",
            "warnings": [
                {
                    "field": "colour",
                    "message": "Invalid search field for this query.",
                    "code": "invalid_field",
                }
            ],
        }
    ]
    clean = HTTP.post(
        store.graphql_url("tiny"), json={"query": document, "variables": {"q": "-id:1003"}}, headers=headers
    ).json()
    assert "search" not in clean["extensions"] and len(clean["data"]["customers"]["nodes"]) == 5
    assert {"id": "gid://shopify/Customer/1003"} not in clean["data"]["customers"]["nodes"]
