"""Seeded faults are reproducible over real HTTP: same seed and profile, same requests -> same faults.

Two devstores with the same world and fault profile receive the same sequence of requests;
what the client observes (THROTTLED storms, 429, 500/502/503, a connection reset mid-body,
a slow reply, a body that is not JSON; bulk operations that fail with partial data or
never finish) must be identical, and another fault seed must give another sequence. This
is what lets a failing sync against a faulty devstore be replayed exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from devstore.server import RunningDevstore

HANDLE = "acme-outdoors"
SLOW = 0.5
REQUEST_FAULTS: dict[str, Any] = {
    "throttle_storm_rate": 0.06,
    "throttle_storm_length": 3,
    "rate_429": 0.03,
    "retry_after": 0.05,
    "rate_500": 0.03,
    "rate_502": 0.05,
    "rate_503": 0.03,
    "reset_rate": 0.05,
    "slow_rate": 0.04,
    "slow_delay": SLOW,
    "invalid_json_rate": 0.05,
    "kinds": ["graphql", "rest"],
}
# bulk faults only: the requests that start and poll the operations stay clean
BULK_FAULTS: dict[str, Any] = {"bulk_fail_rate": 0.3, "bulk_never_finish_rate": 0.2, "kinds": []}
QUERY = {"query": "{ customers(first: 3) { nodes { id } } }"}
RUN = """mutation { bulkOperationRunQuery(query: "{ customers { edges { node { id email } } } }") {
  bulkOperation { id } userErrors { message } } }"""
NODE = """query($id: ID!) { node(id: $id) { ... on BulkOperation { status objectCount partialDataUrl errorCode } } }"""
CANCEL = """mutation($id: ID!) { bulkOperationCancel(id: $id) { bulkOperation { status } userErrors { message } } }"""


def _client(store: RunningDevstore) -> httpx.Client:
    return httpx.Client(timeout=10, headers={"X-Shopify-Access-Token": store.token(HANDLE)})


class Pacer:
    """A cost-aware client's view of its bucket: it never sends a query the bucket cannot pay for.

    So every THROTTLED it sees comes from the fault profile, never from its own pace.
    """

    def __init__(self) -> None:
        self.available: float | None = None  # unknown until the first answer: the bucket starts full
        self.rate = 1.0
        self.cost = 0.0

    def before(self) -> None:
        if self.available is not None and self.available < self.cost:
            time.sleep((self.cost - self.available) / self.rate + 0.01)
            self.available = self.cost

    def after(self, body: dict[str, Any] | None) -> None:
        spent = (body or {}).get("extensions", {}).get("cost")
        if spent:
            self.cost = float(spent["requestedQueryCost"])
            self.available = float(spent["throttleStatus"]["currentlyAvailable"])
            self.rate = float(spent["throttleStatus"]["restoreRate"])
        elif self.available is not None:
            self.available -= self.cost  # no answer to read: assume the query was charged


def request_outcomes(store: RunningDevstore, n: int = 50) -> list[str]:
    """Send ``n`` requests (every fifth one REST, the rest GraphQL) and say what each one met."""
    outcomes = []
    pacer = Pacer()
    with _client(store) as http:
        for i in range(n):
            rest = i % 5 == 4
            if not rest:
                pacer.before()
            started = time.monotonic()
            body: dict[str, Any] | None = None
            try:
                if rest:
                    response = http.get(store.shop_url(HANDLE) + "/admin/api/2026-10/shop.json")
                else:
                    response = http.post(store.graphql_url(HANDLE), json=QUERY)
                elapsed = time.monotonic() - started
                if response.status_code != 200:
                    outcome = str(response.status_code)
                else:
                    try:
                        body = response.json()
                    except ValueError:
                        outcome = "invalid_json"
                    else:
                        errors = body.get("errors") or []
                        codes = [e.get("extensions", {}).get("code") for e in errors if isinstance(e, dict)]
                        if "THROTTLED" in codes:
                            outcome = "throttled"
                        elif elapsed >= SLOW:
                            outcome = "slow"
                        else:
                            assert not errors, body
                            outcome = "ok"
            except httpx.TransportError:
                outcome = "reset"
            if not rest:
                pacer.after(body)
            outcomes.append(outcome)
    return outcomes


def _wait(http: httpx.Client, store: RunningDevstore, gid: str, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        node: dict[str, Any] = http.post(
            store.graphql_url(HANDLE), json={"query": NODE, "variables": {"id": gid}}
        ).json()["data"]["node"]
        if node["status"] not in ("CREATED", "RUNNING", "CANCELING") or time.monotonic() > deadline:
            return node
        time.sleep(0.02)


def bulk_outcomes(store: RunningDevstore, n: int = 8) -> list[str]:
    """Run ``n`` bulk queries one after another and say how each one ended."""
    outcomes = []
    with _client(store) as http:
        for _ in range(n):
            started = http.post(store.graphql_url(HANDLE), json={"query": RUN}).json()
            payload = started["data"]["bulkOperationRunQuery"]
            assert payload["userErrors"] == [], payload
            gid = payload["bulkOperation"]["id"]
            # without a simulated running time a healthy operation finishes at once (within a
            # couple of seconds on a loaded machine); one that never finishes stays RUNNING
            node = _wait(http, store, gid, 2.0)
            if node["status"] == "RUNNING":
                outcomes.append(f"never_finished_at_{node['objectCount']}")
                http.post(store.graphql_url(HANDLE), json={"query": CANCEL, "variables": {"id": gid}})
                assert _wait(http, store, gid, 5)["status"] == "CANCELED"
            elif node["status"] == "FAILED":
                assert node["partialDataUrl"], node
                partial = httpx.get(node["partialDataUrl"], timeout=10).text.splitlines()
                outcomes.append(f"failed_with_{len(partial)}_partial_lines")
            else:
                assert node["status"] == "COMPLETED", node
                outcomes.append(f"completed_{node['objectCount']}")
    return outcomes


def _with_profile(
    store: RunningDevstore, profile: dict[str, Any], run: Callable[[RunningDevstore], list[str]]
) -> tuple[list[str], list[str | None]]:
    """What ``run`` observed under ``profile``, and the request faults the devstore decided meanwhile."""
    store.control("PUT", "/faults", profile)
    try:
        return run(store), store.app.state.faults.history(HANDLE)
    finally:
        store.control("DELETE", "/faults")


def test_same_seed_same_faults_over_http_and_another_seed_differs(
    devstore_factory: Callable[..., RunningDevstore],
) -> None:
    world = {"stores": 1, "customers": 20, "seed": 3, "plan": "plus", "webhooks": False}
    first, second = devstore_factory(**world), devstore_factory(**world)
    profile = {"seed": 3, **REQUEST_FAULTS}

    one, decided = _with_profile(first, profile, request_outcomes)
    two, _ = _with_profile(second, profile, request_outcomes)
    assert one == two
    assert {"throttled", "502", "reset", "slow", "invalid_json", "429", "500", "503", "ok"} <= set(one), one
    # what the client met is what the profile decided (a REST call ignores a throttle storm)
    rest_ok = {i for i, kind in enumerate(decided) if kind == "throttled" and i % 5 == 4}
    assert one == ["ok" if kind is None or i in rest_ok else kind for i, kind in enumerate(decided)]
    # a storm is consecutive: once THROTTLED by the profile, the next GraphQL calls are too
    assert "throttled,throttled" in ",".join(one)

    other, _ = _with_profile(first, {**profile, "seed": 4}, request_outcomes)
    assert other != one

    bulk = {"seed": 3, **BULK_FAULTS}
    one, _ = _with_profile(first, bulk, bulk_outcomes)
    two, _ = _with_profile(second, bulk, bulk_outcomes)
    assert one == two
    assert {o.split("_")[0] for o in one} == {"completed", "failed", "never"}, one
    assert _with_profile(first, {**bulk, "seed": 4}, bulk_outcomes)[0] != one
