"""Bulk operations over real HTTP: lifecycle, JSONL with __parentId, limits, cancel, faults, expiry."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from ops_support import Store, start_store

RUN = """
mutation($q: String!, $g: Boolean!) {
  bulkOperationRunQuery(query: $q, groupObjects: $g) {
    bulkOperation { id status type createdAt objectCount query }
    userErrors { field message code }
  }
}"""
CURRENT = """{ currentBulkOperation { id status objectCount rootObjectCount fileSize url partialDataUrl completedAt errorCode } }"""
NODE = """query($id: ID!) { node(id: $id) { ... on BulkOperation { id status objectCount url errorCode partialDataUrl } } }"""
CANCEL = """mutation($id: ID!) { bulkOperationCancel(id: $id) { bulkOperation { id status } userErrors { field message } } }"""
CUSTOMERS_WITH_ORDERS = (
    "{ customers { edges { node { id email tags defaultAddress { city } "
    "orders { edges { node { id name totalPriceSet { shopMoney { amount } } } } } } } } }"
)


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    running = start_store(customers=60, seed=5)
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def _reset(store: Store) -> Iterator[None]:
    store.control("DELETE", "/faults")
    store.control("PUT", "/bulk/settings", {"seconds_per_object": 0, "min_seconds": 0})
    yield
    # leave nothing running for the next test
    for op in list(store.shop.bulk_operations.values()):
        if op["status"] in ("CREATED", "RUNNING"):
            store.gql(CANCEL, {"id": f"gid://shopify/BulkOperation/{op['id']}"})
    store.control("DELETE", "/faults")


def _run(store: Store, query: str = CUSTOMERS_WITH_ORDERS, group: bool = False) -> dict:
    body = store.gql(RUN, {"q": query, "g": group})
    return body["data"]["bulkOperationRunQuery"]


def _wait(store: Store, gid: str, states: tuple[str, ...], timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node = store.gql(NODE, {"id": gid})["data"]["node"]
        if node["status"] in states:
            return node
        time.sleep(0.02)
    raise AssertionError(f"bulk operation {gid} never reached {states}")


def _lines(url: str) -> list[dict]:
    # no access token: the result URL is pre-signed, like Shopify's storage URLs
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    return [json.loads(line) for line in response.text.splitlines()]


def test_lifecycle_and_ungrouped_jsonl_with_parent_ids(store: Store) -> None:
    store.control("PUT", "/bulk/settings", {"min_seconds": 0.4})
    payload = _run(store)
    assert payload["userErrors"] == []
    op = payload["bulkOperation"]
    assert op["status"] == "CREATED" and op["type"] == "QUERY" and op["objectCount"] == "0"
    running = _wait(store, op["id"], ("RUNNING",))
    assert running["url"] is None
    done = _wait(store, op["id"], ("COMPLETED",))
    current = store.gql(CURRENT)["data"]["currentBulkOperation"]
    assert current["id"] == op["id"] and current["completedAt"] is not None and current["errorCode"] is None
    lines = _lines(current["url"])
    assert int(current["objectCount"]) == len(lines) == int(done["objectCount"])
    assert int(current["fileSize"]) == len(httpx.get(current["url"]).content)
    customers = [line for line in lines if line["id"].startswith("gid://shopify/Customer/")]
    orders = [line for line in lines if line["id"].startswith("gid://shopify/Order/")]
    assert int(current["rootObjectCount"]) == len(customers) == len(store.shop.records["customers"])
    assert orders and all(o["__parentId"].startswith("gid://shopify/Customer/") for o in orders)
    assert all("__parentId" not in c and "orders" not in c for c in customers)
    # list and object fields stay inline
    assert all(isinstance(c["tags"], list) for c in customers)
    assert any(isinstance(c.get("defaultAddress"), dict) for c in customers)
    # every order belongs to the customer its line says
    by_id = {o["id"]: o for o in orders}
    for order_id, parent in ((o["id"], o["__parentId"]) for o in orders):
        record = store.shop.records["orders"][int(order_id.rsplit("/", 1)[1])]
        assert parent == f"gid://shopify/Customer/{record['customer_id']}"
    assert len(by_id) == len(orders)
    # ungrouped: children come after every root
    first_child = next(i for i, line in enumerate(lines) if "__parentId" in line)
    assert all("__parentId" in line for line in lines[first_child:])


def test_grouped_output_puts_children_after_their_parent(store: Store) -> None:
    op = _run(store, group=True)["bulkOperation"]
    done = _wait(store, op["id"], ("COMPLETED",))
    lines = _lines(done["url"])
    last_root = None
    for line in lines:
        if "__parentId" in line:
            assert line["__parentId"] == last_root
        else:
            last_root = line["id"]


@pytest.mark.parametrize(
    "query, message",
    [
        ("{ shop { name } }", "at least one connection"),
        (
            "{ customers { edges { node { id orders { edges { node { id lineItems { edges { node { id } } } } } } } } } }",
            "nesting depth",
        ),
        ("{ customers { edges { node { id nope } } } }", "Invalid bulk query"),
        ("{ customers { edges { node { id } } ", "Invalid bulk query"),
    ],
)
def test_invalid_queries_are_user_errors(store: Store, query: str, message: str) -> None:
    payload = _run(store, query)
    assert payload["bulkOperation"] is None
    assert payload["userErrors"][0]["field"] == ["query"]
    assert payload["userErrors"][0]["code"] == "INVALID"
    assert message in payload["userErrors"][0]["message"]


def test_at_most_five_concurrent_operations_and_cancel(store: Store) -> None:
    store.control("PUT", "/bulk/settings", {"min_seconds": 30})
    ids = []
    for _ in range(5):
        payload = _run(store, "{ products { edges { node { id title } } } }")
        assert payload["userErrors"] == []
        ids.append(payload["bulkOperation"]["id"])
    sixth = _run(store, "{ products { edges { node { id } } } }")
    assert sixth["bulkOperation"] is None
    assert sixth["userErrors"][0]["code"] == "LIMIT_REACHED"
    cancel = store.gql(CANCEL, {"id": ids[0]})["data"]["bulkOperationCancel"]
    assert cancel["userErrors"] == [] and cancel["bulkOperation"]["status"] == "CANCELING"
    _wait(store, ids[0], ("CANCELED",))
    # a slot is free again
    assert _run(store, "{ products { edges { node { id } } } }")["userErrors"] == []
    finished = store.gql(CANCEL, {"id": ids[0]})["data"]["bulkOperationCancel"]
    assert finished["userErrors"][0]["message"] == "A bulk operation cannot be canceled when it is canceled"


def test_fault_fails_with_partial_data(store: Store) -> None:
    assert store.control("PUT", "/faults", {"seed": 1, "bulk_fail_rate": 1.0}).status_code == 200
    op = _run(store)["bulkOperation"]
    failed = _wait(store, op["id"], ("FAILED",))
    assert failed["errorCode"] == "INTERNAL_SERVER_ERROR" and failed["url"] is None
    partial = _lines(failed["partialDataUrl"])
    assert 0 < len(partial) == int(failed["objectCount"])
    faults = store.control("GET", "/faults").json()
    assert faults["counters"]["bulk_fail_partial"] == 1


def test_fault_never_finishes_until_cancelled(store: Store) -> None:
    store.control("PUT", "/faults", {"seed": 2, "bulk_never_finish_rate": 1.0})
    op = _run(store)["bulkOperation"]
    _wait(store, op["id"], ("RUNNING",))
    time.sleep(0.3)
    assert store.gql(NODE, {"id": op["id"]})["data"]["node"]["status"] == "RUNNING"
    store.gql(CANCEL, {"id": op["id"]})
    _wait(store, op["id"], ("CANCELED",))


def test_results_expire_after_seven_days(store: Store) -> None:
    op = _run(store, "{ products { edges { node { id } } } }")["bulkOperation"]
    done = _wait(store, op["id"], ("COMPLETED",))
    assert httpx.get(done["url"]).status_code == 200
    store.control("POST", "/clock/shift", {"days": 8})
    try:
        expired = store.gql(NODE, {"id": op["id"]})["data"]["node"]
        assert expired["status"] == "EXPIRED" and expired["url"] is None
        assert httpx.get(done["url"]).status_code == 410
    finally:
        store.control("POST", "/clock/shift", {"days": -8})


def test_unknown_result_files_are_not_served(store: Store) -> None:
    assert httpx.get(f"{store.url}/_devstore/bulk/123.jsonl").status_code == 404
    assert httpx.get(f"{store.url}/_devstore/bulk/..%2Fetc%2Fpasswd").status_code == 404
