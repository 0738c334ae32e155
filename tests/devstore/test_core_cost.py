"""Query cost by Shopify's rules, the leaky bucket, THROTTLED and MAX_COST_EXCEEDED over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import graphql
import httpx
import pytest
from core_tables import tiny_tables

from devstore import cost, graph
from devstore.server import RunningDevstore, start_in_thread, world_from_tables

# one client per module: a new httpx client per call costs an SSL context each time
HTTP = httpx.Client(timeout=30)

KNOWN = """{ customers(first: 10) { edges { node { id addressesV2(first: 5) { nodes { city } } } } pageInfo { hasNextPage } }
  shop { name } }"""


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_requested_and_actual_cost_of_a_known_query() -> None:
    schema = graph.load_schema()
    document = graphql.parse(KNOWN)
    # customers: 2 + 10 x (1 customer + (2 + 5 x 1 address)) = 82; shop: 1
    assert cost.requested_cost(schema, document) == 83
    world = world_from_tables(tiny_tables())
    shop = world.shop("tiny")
    assert shop is not None
    result = graph.execute(world, shop, KNOWN)
    # 10 customers came back, each with exactly one address: 2 + 10 x (1 + 2 + 1) + 1
    assert cost.actual_cost(schema, document, result.data) == 43


def test_cost_rules_for_variables_fragments_interfaces_and_mutations() -> None:
    schema = graph.load_schema()
    with_vars = graphql.parse(
        "query($n: Int!) { orders(first: $n) { nodes { ...F } } } fragment F on Order { id lineItems(first: 3) { edges { node { id } } } }"
    )
    assert cost.requested_cost(schema, with_vars, {"n": 4}) == 2 + 4 * (1 + 2 + 3 * 1)
    node = graphql.parse(
        '{ node(id: "gid://shopify/Customer/1") { id ... on Customer { defaultAddress { id } } ... on Order { customer { id } lineItems(first: 2) { nodes { id } } } } }'
    )
    # node 1 + the dearer branch (Order: customer 1 + lineItems 2 + 2)
    assert cost.requested_cost(schema, node) == 1 + 5
    mutation = graphql.parse(
        'mutation { customerUpdate(input: {id: "gid://shopify/Customer/1", note: "x"}) { customer { id } } }'
    )
    assert cost.requested_cost(schema, mutation) == 10
    assert cost.requested_cost(schema, graphql.parse("{ shop { name plan { displayName } } }")) == 2


def test_leaky_bucket_drains_and_restores() -> None:
    clock = FakeClock()
    bucket = cost.ThrottleBucket(2000, 100, clock=clock)
    assert bucket.try_take(1500)
    assert bucket.status() == {"maximumAvailable": 2000.0, "currentlyAvailable": 500, "restoreRate": 100.0}
    assert not bucket.try_take(600)
    assert bucket.status()["currentlyAvailable"] == 500  # a refused request takes nothing
    clock.t += 1.0
    assert bucket.try_take(600)
    bucket.refund(100)
    assert bucket.status()["currentlyAvailable"] == 100
    clock.t += 3600
    assert bucket.status()["currentlyAvailable"] == 2000
    limiter = cost.CostLimiter(clock=clock)
    assert limiter.bucket("app", "a.myshopify.com", "plus").maximum == 20000
    assert limiter.bucket("app", "a.myshopify.com", "plus").restore_rate == 1000
    assert limiter.bucket("app", "b.myshopify.com", "advanced").status()["maximumAvailable"] == 4000.0
    assert limiter.bucket("other", "a.myshopify.com", None).restore_rate == 100


@pytest.fixture
def tiny_store() -> Iterator[tuple[RunningDevstore, FakeClock]]:
    clock = FakeClock()
    running = start_in_thread(
        world_from_tables(tiny_tables()), limiter=cost.CostLimiter(clock=clock), webhooks=False
    )
    yield running, clock
    running.stop()


def test_cost_extension_throttled_and_max_cost_over_http(
    tiny_store: tuple[RunningDevstore, FakeClock],
) -> None:
    store, clock = tiny_store
    url = store.graphql_url("tiny")
    headers = {"X-Shopify-Access-Token": store.token("tiny")}
    body = HTTP.post(url, json={"query": KNOWN}, headers=headers).json()
    assert body["extensions"]["cost"] == {
        "requestedQueryCost": 83,
        "actualQueryCost": 43,
        "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 1957, "restoreRate": 100.0},
    }
    app = next(iter(store.world.shop("tiny").apps.values()))  # type: ignore[union-attr]
    store.app.state.limiter.bucket(app.client_id, "tiny.myshopify.com", "standard").drain()
    response = HTTP.post(url, json={"query": KNOWN}, headers=headers)
    assert response.status_code == 200
    assert response.json() == {
        "errors": [
            {
                "message": "Throttled",
                "extensions": {
                    "code": "THROTTLED",
                    "documentation": "https://shopify.dev/api/usage/rate-limits",
                },
            }
        ],
        "extensions": {
            "cost": {
                "requestedQueryCost": 83,
                "actualQueryCost": None,
                "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 0, "restoreRate": 100.0},
            }
        },
    }
    clock.t += 1.0  # 100 points restored: enough for 83 requested, 40 of them refunded
    body = HTTP.post(url, json={"query": KNOWN}, headers=headers).json()
    assert body["data"]["shop"] == {"name": "Tiny Shop"}
    assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 100 - 43
    big = "{ customers(first: 250) { nodes { id addressesV2(first: 10) { nodes { id } } } } }"
    body = HTTP.post(url, json={"query": big}, headers=headers).json()
    assert body["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"
    assert body["errors"][0]["extensions"]["cost"] == 2 + 250 * 13
    assert body["errors"][0]["message"].startswith(
        "Query cost is 3252, which exceeds the single query max cost limit (1000)."
    )
    assert "data" not in body
    assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 57  # nothing taken


def test_which_answers_carry_extensions_cost(tiny_store: tuple[RunningDevstore, FakeClock]) -> None:
    """As Shopify: everything that reached costing carries cost; syntax, validation and variable errors do not."""
    store, _clock = tiny_store
    url = store.graphql_url("tiny")
    headers = {"X-Shopify-Access-Token": store.token("tiny")}

    def post(query: str, variables: dict | None = None) -> dict:
        response = HTTP.post(url, json={"query": query, "variables": variables}, headers=headers)
        assert response.status_code == 200
        return response.json()

    without_cost = {
        "{ shop {": "parseError",
        "{ nope }": "undefinedField",
        "{ shop }": "selectionMismatch",
    }
    for query, code in without_cost.items():
        body = post(query)
        assert set(body) == {"errors"}, body
        assert body["errors"][0]["extensions"]["code"] == code
    paged = "query($n: Int!) { customers(first: $n) { nodes { id } } }"
    for variables, explanation in (
        ({}, "Expected value to not be null"),
        ({"n": "x"}, 'Could not coerce value "x" to Int'),
    ):
        body = post(paged, variables)
        assert set(body) == {"errors"}, body
        (error,) = body["errors"]
        assert error["message"] == "Variable $n of type Int! was provided invalid value"
        assert error["extensions"]["code"] == "INVALID_VARIABLE"
        assert error["extensions"]["problems"] == [{"path": [], "explanation": explanation}]
    nested = post(
        "mutation($i: CustomerInput!) { customerUpdate(input: $i) { userErrors { message } } }",
        {"i": {"id": "gid://shopify/Customer/1001", "note": 5}},
    )
    assert set(nested) == {"errors"}
    assert nested["errors"][0]["message"] == (
        "Variable $i of type CustomerInput! was provided invalid value for note (Could not coerce value 5 to String)"
    )
    # a body that is not a GraphQL request is refused before costing too
    bad_json = HTTP.post(url, content=b"{not json", headers={**headers, "content-type": "application/json"})
    assert bad_json.status_code == 400 and "extensions" not in bad_json.json()
    # none of those took anything from the bucket
    fine = post(paged, {"n": 1})
    assert fine["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 2000 - 3
    # an execution error was costed, so it carries cost (here: nothing came back, nothing charged)
    failed = post("{ customers { nodes { id } } }")
    assert failed["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    assert failed["extensions"]["cost"]["requestedQueryCost"] == 2
