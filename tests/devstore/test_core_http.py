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

from devstore.faults import FaultProfile
from devstore.server import RunningDevstore, start_in_thread, world_from_tables

# one client per module: a new httpx client per call costs an SSL context each time
HTTP = httpx.Client(timeout=30)

SHOP = "tiny.myshopify.com"
CUSTOMERS_QUERY = {"query": "{ customers(first: 2) { nodes { id } } }"}
INVALID = {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}


@pytest.fixture
def store() -> Iterator[RunningDevstore]:
    running = start_in_thread(world_from_tables(tiny_tables(), token_ttl=timedelta(hours=1)), webhooks=False)
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
    # Shopify's rule: drop hmac, sort the rest, join k=v with &, hex HMAC-SHA256 with the client secret
    signed = {k: v for k, v in params.items() if k not in ("hmac", "x")}
    message = "&".join(f"{k}={v}" for k, v in sorted(signed.items()))
    expected = hmac.new(creds["client_secret"].encode(), message.encode(), hashlib.sha256).hexdigest()
    assert params["hmac"] == expected
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


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from datetime import UTC, datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_serves_https_with_a_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
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
