"""Every query document shopsync sends runs against the devstore over HTTP, with the model's values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import graphql
import httpx
import pytest

from devstore import graph
from devstore.server import RunningDevstore

# one client per module: a new httpx client per call costs an SSL context each time
HTTP = httpx.Client(timeout=30)

QUERIES = Path(__file__).resolve().parents[2] / "pipelines" / "shopify" / "queries"
ENTITY_TYPES = {
    "customers": "Customer",
    "orders": "Order",
    "products": "Product",
    "collections": "Collection",
    "abandoned_checkouts": "AbandonedCheckout",
}


def _fragments() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in QUERIES.glob("*.fields.graphql"):
        for definition in graphql.parse(path.read_text()).definitions:
            if isinstance(definition, graphql.FragmentDefinitionNode):
                out[definition.name.value] = graphql.print_ast(definition)
    return out


def _with_fragments(source: str, fragments: dict[str, str]) -> str:
    needed: list[str] = []
    pending = [source]
    while pending:
        text = pending.pop()
        for name, fragment in fragments.items():
            if f"...{name}" in text.replace("... ", "...") and name not in needed:
                needed.append(name)
                pending.append(fragment)
    return "\n".join([source, *(fragments[n] for n in needed)])


def _documents() -> list[Path]:
    return sorted(p for p in QUERIES.glob("*.graphql") if not p.name.endswith(".fields.graphql"))


def _variables(
    operation: graphql.OperationDefinitionNode, entity: str, sample_id: int | None, customer_gid: str
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for definition in operation.variable_definitions:
        name = definition.variable.name.value
        type_text = graphql.print_ast(definition.type)
        if type_text.startswith("Int"):
            values[name] = 5
        elif type_text == "ID!" and sample_id is not None:
            values[name] = f"gid://shopify/{ENTITY_TYPES[entity]}/{sample_id}"
        elif type_text in ("[ID!]!", "[ID!]"):
            # id lists (refetches, re-reads before a push): any customer is a valid node
            values[name] = [customer_gid]
        elif type_text == "ID!" and name.lower().startswith("customer"):
            values[name] = customer_gid
    return values


@pytest.mark.skipif(not QUERIES.exists(), reason="pipelines/shopify/queries is not in this checkout")
def test_every_query_document_runs(devstore_shared: RunningDevstore) -> None:
    fragments = _fragments()
    handle = sorted(devstore_shared.world.shops)[0]
    shop = devstore_shared.world.shops[handle]
    headers = {"X-Shopify-Access-Token": devstore_shared.token(handle)}
    customer_gid = f"gid://shopify/Customer/{next(iter(shop.records['customers']))}"
    ran = 0
    for path in _documents():
        source = _with_fragments(path.read_text(), fragments)
        document = graphql.parse(source)
        operation = next(d for d in document.definitions if isinstance(d, graphql.OperationDefinitionNode))
        if operation.operation != graphql.OperationType.QUERY:
            continue
        entity = path.name.split(".", 1)[0]
        table = shop.records.get(entity)
        sample_id = next(iter(table)) if table else None
        needs_id = any(graphql.print_ast(v.type) == "ID!" for v in operation.variable_definitions)
        if needs_id and sample_id is None:
            continue  # e.g. a bulk operation id: the bulk tests cover those
        variables = _variables(operation, entity, sample_id, customer_gid)
        if ".bulk." in path.name or ".ids." in path.name:
            # bulk documents carry no page sizes; the bulk runner executes them in bulk mode
            result = graph.execute(devstore_shared.world, shop, source, variables, bulk=True)
            assert not result.errors, (path.name, result.errors)
        else:
            body = HTTP.post(
                devstore_shared.graphql_url(handle),
                json={"query": source, "variables": variables},
                headers=headers,
            ).json()
            assert "errors" not in body, (path.name, body.get("errors"))
            assert body["extensions"]["cost"]["requestedQueryCost"] <= 1000
        ran += 1
    assert ran >= 10


def test_customer_page_matches_the_model(devstore_shared: RunningDevstore) -> None:
    handle = sorted(devstore_shared.world.shops)[0]
    shop = devstore_shared.world.shops[handle]
    query = """{ customers(first: 50, sortKey: ID) { nodes { legacyResourceId firstName lastName email
        defaultEmailAddress { emailAddress marketingState } defaultPhoneNumber { phoneNumber }
        smsMarketingConsent { marketingState consentCollectedFrom } tags updatedAt numberOfOrders } } }"""
    headers = {"X-Shopify-Access-Token": devstore_shared.token(handle)}
    nodes = HTTP.post(devstore_shared.graphql_url(handle), json={"query": query}, headers=headers).json()[
        "data"
    ]["customers"]["nodes"]
    assert [int(n["legacyResourceId"]) for n in nodes] == sorted(shop.records["customers"])[:50]
    orders_per_customer: dict[int, int] = {}
    for order in shop.records["orders"].values():
        if order["customer_id"] is not None:
            orders_per_customer[order["customer_id"]] = orders_per_customer.get(order["customer_id"], 0) + 1
    for node in nodes:
        record = shop.records["customers"][int(node["legacyResourceId"])]
        assert node["firstName"] == record["first_name"] and node["lastName"] == record["last_name"]
        assert node["email"] == record["email"]
        assert (node["defaultEmailAddress"] or {}).get("emailAddress") == record["email"]
        if record["email"]:
            assert node["defaultEmailAddress"]["marketingState"] == record["email_consent_state"]
        assert (node["defaultPhoneNumber"] or {}).get("phoneNumber") == record["phone"]
        if record["phone"]:
            assert node["smsMarketingConsent"]["marketingState"] == record["sms_consent_state"]
        assert node["tags"] == list(record["tags"] or [])
        assert node["updatedAt"] == record["updated_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
        assert int(node["numberOfOrders"]) == orders_per_customer.get(record["id"], 0)


def test_fresh_devstore_fixture_serves_every_shop(devstore: RunningDevstore) -> None:
    assert len(devstore.shops) == 2
    for entry in devstore.shops:
        body = HTTP.post(
            entry["base_url"] + "/admin/api/2026-10/graphql.json",
            json={"query": "{ shop { myshopifyDomain } customersCount { count } }"},
            headers={"X-Shopify-Access-Token": entry["access_token"]},
        ).json()
        assert body["data"]["shop"]["myshopifyDomain"] == entry["domain"]
        assert body["data"]["customersCount"]["count"] > 50
