"""The control API over real HTTP: records, mass edit, tokens, scopes, write log, clock, request faults."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from ops_support import Store, customer_gid, numeric_id, start_store

CUSTOMERS = """{ customers(first: 250, sortKey: UPDATED_AT) { edges { node { id updatedAt firstName } } } }"""


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    running = start_store(customers=40, seed=4)
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def _no_faults(store: Store) -> Iterator[None]:
    store.control("DELETE", "/faults")
    yield
    store.control("DELETE", "/faults")


def test_create_read_update_delete_records(store: Store) -> None:
    handle = store.shop.handle
    created = store.control(
        "POST",
        f"/shops/{handle}/records/customers",
        {
            "first_name": "Ola",
            "last_name": "Nordmann",
            "email": "ola@example.no",
            "addresses": [{"city": "Oslo"}],
        },
    )
    assert created.status_code == 201
    record = created.json()
    assert record["email_consent_state"] == "NOT_SUBSCRIBED" and record["updated_at"].endswith("Z")
    read = store.control("GET", f"/shops/{handle}/records/customers/{record['id']}").json()
    assert read["addresses"][0]["city"] == "Oslo"
    # visible through the Admin API at once
    body = store.gql(
        "query($id: ID!) { customer(id: $id) { firstName defaultEmailAddress { emailAddress } } }",
        {"id": f"gid://shopify/Customer/{record['id']}"},
    )
    assert body["data"]["customer"]["firstName"] == "Ola"
    patched = store.control(
        "PATCH", f"/shops/{handle}/records/customers/{record['id']}", {"last_name": "Hansen"}
    ).json()
    assert patched["last_name"] == "Hansen" and patched["first_name"] == "Ola"
    assert patched["updated_at"] >= record["updated_at"]
    assert store.control("DELETE", f"/shops/{handle}/records/customers/{record['id']}").status_code == 200
    assert store.control("GET", f"/shops/{handle}/records/customers/{record['id']}").status_code == 404
    ops = [e["operation"] for e in store.control("GET", f"/shops/{handle}/write_log").json()[-3:]]
    assert ops == ["control.create", "control.update", "control.delete"]


def test_order_counts_and_spend_follow_order_changes(store: Store) -> None:
    # the devstore keeps its orders-per-customer index between requests: every create,
    # reassignment and delete of an order must still show at once
    handle = store.shop.handle
    customer = store.control("POST", f"/shops/{handle}/records/customers", {"first_name": "Idx"}).json()
    gid = f"gid://shopify/Customer/{customer['id']}"
    query = "query($id: ID!) { customer(id: $id) { numberOfOrders amountSpent { amount } } }"

    def seen() -> tuple[str, str]:
        c = store.gql(query, {"id": gid})["data"]["customer"]
        return c["numberOfOrders"], str(float(c["amountSpent"]["amount"]))

    assert seen() == ("0", "0.0")
    order = store.control(
        "POST",
        f"/shops/{handle}/records/orders",
        {"customer_id": customer["id"], "total_price": "12.50", "total_price_presentment": "12.50"},
    ).json()
    assert seen() == ("1", "12.5")
    other = store.control("POST", f"/shops/{handle}/records/customers", {"first_name": "Other"}).json()
    store.control("PATCH", f"/shops/{handle}/records/orders/{order['id']}", {"customer_id": other["id"]})
    assert seen() == ("0", "0.0")
    store.control("PATCH", f"/shops/{handle}/records/orders/{order['id']}", {"customer_id": customer["id"]})
    assert seen()[0] == "1"
    store.control("DELETE", f"/shops/{handle}/records/orders/{order['id']}")
    assert seen()[0] == "0"


def test_record_listing_and_counts(store: Store) -> None:
    handle = store.shop.handle
    counts = store.control("GET", f"/shops/{handle}/counts").json()
    assert counts["customers"] == len(store.shop.records["customers"])
    listed = store.control("GET", f"/shops/{handle}/records/orders?limit=3").json()
    assert len(listed) == 3 and all("total_price" in o for o in listed)
    children = store.control("GET", f"/shops/{handle}/records/order_line_items?ids={listed[0]['id']}").json()
    assert children and all(c["order_id"] == listed[0]["id"] for c in children)
    shops = store.control("GET", "/shops").json()
    assert [s["shop"] for s in shops] == [store.shop.domain]


@pytest.mark.parametrize(
    "method, path, body, status, fragment",
    [
        (
            "POST",
            "/shops/{h}/records/customers",
            {"favourite_colour": "red"},
            400,
            "Unknown customers fields",
        ),
        ("POST", "/shops/{h}/records/widgets", {}, 404, "Unknown entity"),
        ("PATCH", "/shops/{h}/records/customers/1", {"note": "x"}, 404, "No customers record 1"),
        ("PATCH", "/shops/{h}/records/customers/1", {"updated_at": "yesterday"}, 400, "ISO 8601"),
        ("GET", "/shops/nosuchshop/counts", None, 404, "No shop"),
        ("PUT", "/faults", {"rate_500": 2}, 400, "between 0 and 1"),
        ("POST", "/shops/{h}/scopes/remove", {}, 400, "Say which scope"),
    ],
)
def test_mistakes_get_clear_json_errors(
    store: Store, method: str, path: str, body: object, status: int, fragment: str
) -> None:
    response = store.control(method, path.format(h=store.shop.handle), body)
    assert response.status_code == status
    assert fragment in response.json()["error"]


def test_mass_edit_gives_rows_one_identical_updated_at(store: Store) -> None:
    handle = store.shop.handle
    response = store.control(
        "POST",
        f"/shops/{handle}/mass_edit",
        {"entity": "customers", "count": 25, "changes": {"note": "mass"}},
    )
    result = response.json()
    assert result["updated"] == 25
    stamps = {store.shop.records["customers"][i]["updated_at"] for i in result["ids"]}
    assert len(stamps) == 1
    edges = store.gql(CUSTOMERS)["data"]["customers"]["edges"]
    tied = [e for e in edges if numeric_id(e["node"]["id"]) in set(result["ids"])]
    assert len({e["node"]["updatedAt"] for e in tied}) == 1
    log = store.control("GET", f"/write_log?shop={handle}&operation=control.mass_edit").json()
    assert len(log) == 25 and {e["payload"]["note"] for e in log} == {"mass"}


def test_revoked_token_is_refused(store: Store) -> None:
    token = store.app.issue_token(store.world.clock.now(), None)
    ok = store.http.post(
        store.graphql_url, json={"query": "{ shop { name } }"}, headers={"X-Shopify-Access-Token": token}
    )
    assert ok.status_code == 200
    response = store.control("POST", f"/shops/{store.shop.handle}/tokens/revoke", {"token": token})
    assert response.json() == {"revoked": 1}
    refused = store.http.post(
        store.graphql_url, json={"query": "{ shop { name } }"}, headers={"X-Shopify-Access-Token": token}
    )
    assert refused.status_code == 401
    assert token not in response.text


def test_removed_scope_denies_the_mutation_until_granted(store: Store) -> None:
    handle = store.shop.handle
    query = """mutation($i: CustomerInput!) { customerUpdate(input: $i) { customer { id } userErrors { message } } }"""
    variables = {"i": {"id": customer_gid(store.shop), "note": "scoped"}}
    removed = store.control("POST", f"/shops/{handle}/scopes/remove", {"scope": "write_customers"})
    assert "write_customers" not in removed.json()["scopes"]
    try:
        body = store.gql(query, variables)
        assert body["errors"][0]["extensions"]["code"] == "ACCESS_DENIED"
    finally:
        store.control("POST", f"/shops/{handle}/scopes/grant", {"scope": "write_customers"})
    assert store.gql(query, variables)["data"]["customerUpdate"]["userErrors"] == []


def test_clock_shift_moves_devstore_time(store: Store) -> None:
    before = store.control("GET", "/clock").json()
    shifted = store.control("POST", "/clock/shift", {"days": 2}).json()
    try:
        assert shifted["offset_seconds"] - before["offset_seconds"] == 2 * 86400
        record = store.control(
            "PATCH",
            f"/shops/{store.shop.handle}/records/customers/{numeric_id(customer_gid(store.shop))}",
            {"note": "t"},
        ).json()
        assert record["updated_at"] >= shifted["now"][:19]
    finally:
        store.control("POST", "/clock/shift", {"days": -2})


def _statuses(store: Store, n: int) -> list[int]:
    out = []
    for _ in range(n):
        try:
            response = store.http.post(
                store.graphql_url,
                json={"query": "{ shop { name } }"},
                headers={"X-Shopify-Access-Token": store.token},
            )
            out.append(
                response.status_code if response.status_code != 200 or "errors" not in response.text else 0
            )
        except httpx.HTTPError:
            out.append(-1)
    return out


def test_request_faults_reproduce_by_seed_over_http(store: Store) -> None:
    profile = {"seed": 99, "rate_500": 0.15, "rate_503": 0.1, "rate_429": 0.1, "retry_after": 1.5}
    store.control("PUT", "/faults", profile)
    first = _statuses(store, 40)
    store.control("PUT", "/faults", profile)
    second = _statuses(store, 40)
    assert first == second
    assert {500, 503, 429} <= set(first) and 200 in first
    counters = store.control("GET", "/faults").json()["counters"]
    assert counters["500"] == first.count(500)
    store.control("PUT", "/faults", {"seed": 1, "rate_429": 1.0, "retry_after": 1.5})
    limited = store.http.post(
        store.graphql_url,
        json={"query": "{ shop { name } }"},
        headers={"X-Shopify-Access-Token": store.token},
    )
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1.5"


def test_wrongly_typed_bodies_are_400_not_500(store: Store) -> None:
    response = store.control(
        "POST", f"/shops/{store.shop.handle}/mass_edit", {"entity": "customers", "count": "lots"}
    )
    assert response.status_code == 400 and "Invalid request" in response.json()["error"]
    response = store.http.post(f"{store.url}/_devstore/faults", content=b"{not json")
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
