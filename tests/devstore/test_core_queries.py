"""Query resolvers: values from the model tables, pagination, sort keys, search syntax, scopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from core_tables import BASE, CUSTOMERS, tiny_tables

from devstore import graph
from devstore.server import world_from_tables
from devstore.state import ALL_SCOPES, ShopState, World


@pytest.fixture
def world() -> World:
    return world_from_tables(tiny_tables())


@pytest.fixture
def shop(world: World) -> ShopState:
    found = world.shop("tiny")
    assert found is not None
    return found


def run(world: World, shop: ShopState, query: str, variables: dict[str, Any] | None = None, **kw: Any) -> Any:
    result = graph.execute(world, shop, query, variables, **kw)
    assert not result.errors, result.errors
    return result.data


def run_errors(world: World, shop: ShopState, query: str, **kw: Any) -> list[dict[str, Any]]:
    result = graph.execute(world, shop, query, **kw)
    assert result.errors
    return [graph.error_dict(e) for e in result.errors]


def test_customer_fields_come_from_the_model(world: World, shop: ShopState) -> None:
    data = run(
        world,
        shop,
        """{ customer(id: "gid://shopify/Customer/1001") {
            id legacyResourceId firstName lastName displayName email phone tags state locale
            defaultEmailAddress { emailAddress marketingState marketingOptInLevel marketingUpdatedAt }
            defaultPhoneNumber { phoneNumber }
            emailMarketingConsent { marketingState consentUpdatedAt }
            smsMarketingConsent { marketingState }
            numberOfOrders amountSpent { amount currencyCode }
            defaultAddress { id city countryCodeV2 }
            addresses { address1 } addressesV2(first: 5) { nodes { city } }
            metafields(first: 10, namespace: "shopsync") { nodes { key value namespace } }
            metafield(namespace: "other", key: "key2") { value }
            createdAt updatedAt } }""",
    )
    c = data["customer"]
    assert c["id"] == "gid://shopify/Customer/1001" and c["legacyResourceId"] == "1001"
    assert c["displayName"] == "First0 Last0"
    assert c["email"] is None and c["defaultEmailAddress"] is None and c["emailMarketingConsent"] is None
    assert c["defaultPhoneNumber"] == {"phoneNumber": "+4915100000000"}
    assert c["smsMarketingConsent"] == {"marketingState": "NOT_SUBSCRIBED"}
    assert c["tags"] == ["vip"] and c["state"] == "ENABLED"
    # two orders, one of them older than 60 days: counted all the same; 100 - 20 refunded + 100
    assert c["numberOfOrders"] == "2"
    assert c["amountSpent"] == {"amount": "180.00", "currencyCode": "EUR"}
    assert c["defaultAddress"]["city"] == "Berlin" and c["defaultAddress"]["countryCodeV2"] == "DE"
    assert c["addresses"] == [{"address1": "0 Hauptstrasse"}]
    assert [m["key"] for m in c["metafields"]["nodes"]] == ["key0", "key1"]
    assert c["metafield"] == {"value": "value2"}
    assert c["createdAt"] == "2026-01-01T00:00:00Z"
    assert c["updatedAt"] == (BASE + timedelta(days=60, hours=CUSTOMERS)).strftime("%Y-%m-%dT%H:%M:%SZ")
    second = run(
        world,
        shop,
        '{ customer(id: "gid://shopify/Customer/1002") { defaultEmailAddress { emailAddress marketingState } } }',
    )
    assert second["customer"]["defaultEmailAddress"] == {
        "emailAddress": "c1@example.com",
        "marketingState": "SUBSCRIBED",
    }


def test_orders_money_line_items_refunds(world: World, shop: ShopState) -> None:
    data = run(
        world,
        shop,
        """{ order(id: "gid://shopify/Order/7001") {
            name customer { id } currencyCode presentmentCurrencyCode displayFinancialStatus
            totalPriceSet { shopMoney { amount currencyCode } presentmentMoney { amount currencyCode } }
            totalRefundedSet { shopMoney { amount } }
            billingAddress { firstName countryCodeV2 }
            refunds { id note totalRefundedSet { presentmentMoney { amount currencyCode } } }
            lineItems(first: 2) { pageInfo { hasNextPage endCursor }
              nodes { id quantity product { id } variant { id }
                      originalUnitPriceSet { shopMoney { amount currencyCode } presentmentMoney { amount currencyCode } } } } } }""",
    )
    o = data["order"]
    assert o["name"] == "#1001" and o["customer"] == {"id": "gid://shopify/Customer/1001"}
    assert o["totalPriceSet"] == {
        "shopMoney": {"amount": "100.00", "currencyCode": "EUR"},
        "presentmentMoney": {"amount": "110.00", "currencyCode": "USD"},
    }
    assert o["totalRefundedSet"] == {"shopMoney": {"amount": "20.00"}}
    assert o["billingAddress"] == {"firstName": "Ada", "countryCodeV2": "DE"}
    assert o["refunds"] == [
        {
            "id": "gid://shopify/Refund/6001",
            "note": "broken",
            "totalRefundedSet": {"presentmentMoney": {"amount": "22.00", "currencyCode": "USD"}},
        }
    ]
    items = o["lineItems"]
    assert [n["quantity"] for n in items["nodes"]] == [1, 2] and items["pageInfo"]["hasNextPage"] is True
    assert items["nodes"][0]["originalUnitPriceSet"]["presentmentMoney"] == {
        "amount": "33.00",
        "currencyCode": "USD",
    }
    assert items["nodes"][0]["variant"] == {"id": "gid://shopify/ProductVariant/9101"}
    rest = run(
        world,
        shop,
        'query($after: String) { node(id: "gid://shopify/Order/7001") { ... on Order { lineItems(first: 5, after: $after) { nodes { quantity } pageInfo { hasNextPage } } } } }',
        {"after": items["pageInfo"]["endCursor"]},
    )
    assert rest["node"]["lineItems"] == {"nodes": [{"quantity": 3}], "pageInfo": {"hasNextPage": False}}


def test_products_collections_checkouts_nodes_counts_shop(world: World, shop: ShopState) -> None:
    data = run(
        world,
        shop,
        """{ products(first: 10) { nodes { id title variants(first: 5) { nodes { sku price product { id } } } } }
            collections(first: 5) { nodes { title sortOrder products(first: 5) { nodes { id } } } }
            abandonedCheckouts(first: 5) { nodes { abandonedCheckoutUrl customer { id }
                totalPriceSet { shopMoney { amount currencyCode } }
                lineItems(first: 5) { nodes { quantity title variant { id } originalUnitPriceSet { shopMoney { amount } } } } } }
            nodes(ids: ["gid://shopify/Customer/1005", "gid://shopify/Product/9002", "gid://shopify/Customer/1"]) {
                __typename ... on Customer { firstName } ... on Product { title } }
            customersCount { count precision } ordersCount(query: "id:>7001") { count precision }
            shop { name myshopifyDomain primaryDomain { host url } currencyCode billingAddress { countryCodeV2 }
                   plan { displayName shopifyPlus partnerDevelopment } ianaTimezone email }
            currentAppInstallation { accessScopes { handle } } }""",
    )
    products = data["products"]["nodes"]
    assert [len(p["variants"]["nodes"]) for p in products] == [2, 2, 1]
    assert products[0]["variants"]["nodes"][0] == {
        "sku": "SKU-0",
        "price": "30.00",
        "product": {"id": "gid://shopify/Product/9001"},
    }
    assert data["collections"]["nodes"][0]["products"]["nodes"] == [
        {"id": "gid://shopify/Product/9003"},
        {"id": "gid://shopify/Product/9001"},
    ]
    checkout = data["abandonedCheckouts"]["nodes"][0]
    assert checkout["customer"] == {"id": "gid://shopify/Customer/1003"}
    assert checkout["totalPriceSet"] == {"shopMoney": {"amount": "45.50", "currencyCode": "EUR"}}
    assert checkout["lineItems"]["nodes"] == [
        {
            "quantity": 2,
            "title": "Mug",
            "variant": {"id": "gid://shopify/ProductVariant/9102"},
            "originalUnitPriceSet": {"shopMoney": {"amount": "22.75"}},
        }
    ]
    assert data["nodes"] == [
        {"__typename": "Customer", "firstName": "First4"},
        {"__typename": "Product", "title": "Product 1"},
        None,
    ]
    assert data["customersCount"] == {"count": CUSTOMERS, "precision": "EXACT"}
    assert data["ordersCount"] == {"count": 3, "precision": "EXACT"}
    capped = run(
        world,
        shop,
        "{ a: customersCount(limit: 5) { count precision } b: customersCount(limit: null) { count } }",
    )
    assert capped == {"a": {"count": 5, "precision": "AT_LEAST"}, "b": {"count": CUSTOMERS}}
    assert data["shop"] == {
        "name": "Tiny Shop",
        "myshopifyDomain": "tiny.myshopify.com",
        "primaryDomain": {"host": "www.tiny.example", "url": "https://www.tiny.example"},
        "currencyCode": "EUR",
        "billingAddress": {"countryCodeV2": "DE"},
        "plan": {"displayName": "Basic", "shopifyPlus": False, "partnerDevelopment": False},
        "ianaTimezone": "Europe/Berlin",
        "email": "owner@tiny.example",
    }
    assert {s["handle"] for s in data["currentAppInstallation"]["accessScopes"]} == set(ALL_SCOPES)


def _ids(conn: dict[str, Any]) -> list[int]:
    return [int(e["node"]["id"].rsplit("/", 1)[1]) for e in conn["edges"]]


PAGE = """query($first: Int, $after: String, $last: Int, $before: String, $sortKey: CustomerSortKeys, $reverse: Boolean, $query: String) {
  customers(first: $first, after: $after, last: $last, before: $before, sortKey: $sortKey, reverse: $reverse, query: $query) {
    edges { cursor node { id updatedAt } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }"""


def _drain(world: World, shop: ShopState, between: Any = None, **variables: Any) -> list[int]:
    seen: list[int] = []
    after = None
    for page in range(100):
        conn = run(world, shop, PAGE, {"first": 7, "after": after, **variables})["customers"]
        seen += _ids(conn)
        if not conn["pageInfo"]["hasNextPage"]:
            return seen
        after = conn["pageInfo"]["endCursor"]
        if between:
            between(page, seen)
    raise AssertionError("pagination did not end")


def test_paging_by_id_while_records_change_returns_each_record_once(world: World, shop: ShopState) -> None:
    original = set(shop.records["customers"])
    later = world.clock.now() + timedelta(days=1)

    def churn(page: int, seen: list[int]) -> None:
        with shop.lock:
            # touch records already seen and records still ahead, and delete the cursor record
            for cid in (seen[0], seen[-1] + 3, 1030 - page):
                if cid in shop.records["customers"]:
                    shop.records["customers"][cid] = {**shop.records["customers"][cid], "updated_at": later}
            if page == 1:
                del shop.records["customers"][seen[-1]]

    seen = _drain(world, shop, churn, sortKey="ID")
    assert len(seen) == len(set(seen))
    assert set(seen) == original
    assert seen == sorted(seen)


def test_paging_an_updated_at_window_never_repeats_a_record(world: World, shop: ShopState) -> None:
    bound = BASE + timedelta(days=61, hours=1)
    query = f"updated_at:<='{bound.strftime('%Y-%m-%dT%H:%M:%SZ')}'"
    in_window = {cid for cid, c in shop.records["customers"].items() if c["updated_at"] <= bound}
    moved: set[int] = set()

    def churn(page: int, seen: list[int]) -> None:
        # an edit during the sync moves a record past the window's fixed upper bound
        with shop.lock:
            for cid in (seen[0], 1001 + page):
                shop.records["customers"][cid] = {
                    **shop.records["customers"][cid],
                    "updated_at": world.clock.now(),
                }
                moved.add(cid)

    seen = _drain(world, shop, churn, sortKey="UPDATED_AT", query=query)
    assert len(seen) == len(set(seen))
    assert set(seen) <= in_window
    assert in_window - moved <= set(seen)


def test_sort_keys_reverse_and_backwards_paging(world: World, shop: ShopState) -> None:
    by_id = _drain(world, shop, sortKey="ID")
    assert by_id == list(range(1001, 1001 + CUSTOMERS))
    assert _drain(world, shop, sortKey="ID", reverse=True) == by_id[::-1]
    assert _drain(world, shop, sortKey="UPDATED_AT") == by_id[::-1]  # built so: later ids updated earlier
    assert _drain(world, shop, sortKey="CREATED_AT") == by_id
    first = run(world, shop, PAGE, {"first": 5, "sortKey": "ID"})["customers"]
    assert first["pageInfo"]["hasPreviousPage"] is False and first["pageInfo"]["hasNextPage"] is True
    back = run(world, shop, PAGE, {"last": 3, "before": first["edges"][4]["cursor"], "sortKey": "ID"})[
        "customers"
    ]
    assert _ids(back) == [1002, 1003, 1004]
    assert (
        back["pageInfo"]["hasPreviousPage"] is True
        and back["pageInfo"]["startCursor"] == first["edges"][1]["cursor"]
    )
    tail = run(world, shop, PAGE, {"last": 2, "sortKey": "ID"})["customers"]
    assert _ids(tail) == [1029, 1030] and tail["pageInfo"]["hasNextPage"] is False


def test_search_syntax(world: World, shop: ShopState) -> None:
    lo = BASE + timedelta(days=60, hours=5)
    hi = BASE + timedelta(days=60, hours=10)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    query = f"updated_at:>='{lo.strftime(fmt)}' AND updated_at:<'{hi.strftime(fmt)}'"
    # hours = 30 - i  ->  5 <= 30 - i < 10  ->  i in 21..25
    assert sorted(_drain(world, shop, query=query)) == list(range(1022, 1027))
    unquoted = f"updated_at:>={lo.strftime(fmt)} AND updated_at:<{hi.strftime(fmt)}"
    assert sorted(_drain(world, shop, query=unquoted)) == list(range(1022, 1027))
    assert _drain(world, shop, query="id:>1027") == [1028, 1029, 1030]
    assert _drain(world, shop, query="created_at:>=2026-01-29") == [1029, 1030]
    assert _drain(world, shop, query="id:>1027 AND colour:blue") == [1028, 1029, 1030]  # unknown term ignored
    assert _drain(world, shop, query="email:C3@example.com") == [1004]


def test_search_or_not_and_grouping(world: World, shop: ShopState) -> None:
    everyone = list(range(1001, 1001 + CUSTOMERS))
    assert _drain(world, shop, query="id:1005 OR id:1007", sortKey="ID") == [1005, 1007]
    assert _drain(world, shop, query="id:1005 id:1007") == []  # implied AND
    for negated in ("-id:1005", "NOT id:1005", "NOT (id:1005)"):
        assert _drain(world, shop, query=negated, sortKey="ID") == [i for i in everyone if i != 1005], negated
    assert _drain(world, shop, query="id:>1026 -id:1028", sortKey="ID") == [1027, 1029, 1030]
    # AND binds tighter than OR
    assert _drain(world, shop, query="id:1002 OR id:>1028 AND id:<1030", sortKey="ID") == [1002, 1029]
    assert _drain(world, shop, query="(id:1002 OR id:>1028) AND id:<1030", sortKey="ID") == [1002, 1029]
    assert _drain(world, shop, query="(id:1002 OR id:1029) -(id:1029)", sortKey="ID") == [1002]
    assert _drain(world, shop, query="NOT (id:<1029 OR id:1030)", sortKey="ID") == [1029]
    # every fifth customer (1001, 1006, ...) has no email: -email:x keeps them, email:x never matches them
    assert _drain(world, shop, query="email:c3@example.com OR email:c4@example.com", sortKey="ID") == [
        1004,
        1005,
    ]
    assert len(_drain(world, shop, query="-email:c3@example.com")) == CUSTOMERS - 1
    # a term on a field customers cannot be searched by is dropped, leaving the rest of its group
    assert _drain(world, shop, query="id:1003 OR colour:blue", sortKey="ID") == [1003]
    assert _drain(world, shop, query="-colour:blue id:1003") == [1003]


def test_page_size_limits_and_bulk_mode(world: World, shop: ShopState) -> None:
    errors = run_errors(world, shop, "{ customers(first: 251) { nodes { id } } }")
    assert errors[0]["extensions"]["code"] == "BAD_REQUEST" and "250" in errors[0]["message"]
    errors = run_errors(world, shop, "{ customers { nodes { id } } }")
    assert errors[0]["message"] == "you must provide one of first or last"
    data = run(world, shop, "{ customers(first: 2) { nodes { id } pageInfo { hasNextPage } } }", bulk=True)
    assert (
        len(data["customers"]["nodes"]) == CUSTOMERS and data["customers"]["pageInfo"]["hasNextPage"] is False
    )
    errors = run_errors(world, shop, '{ customers(first: 1, after: "garbage!") { nodes { id } } }')
    assert errors[0]["extensions"]["code"] == "INVALID_CURSOR"


def test_scopes_deny_and_hide_old_orders(world: World, shop: ShopState) -> None:
    errors = run_errors(world, shop, "{ customers(first: 1) { nodes { id } } }", app_scopes={"read_orders"})
    assert errors[0]["extensions"]["code"] == "ACCESS_DENIED"
    assert (
        errors[0]["message"]
        == "Access denied for customers field. Required access: `read_customers` access scope."
    )
    assert errors[0]["path"] == ["customers"]
    for field, scope in (
        ("products", "read_products"),
        ("orders", "read_orders"),
        ("abandonedCheckouts", "read_orders"),
    ):
        errors = run_errors(
            world, shop, f"{{ {field}(first: 1) {{ nodes {{ id }} }} }}", app_scopes={"read_customers"}
        )
        assert errors[0]["extensions"]["requiredAccess"] == f"`{scope}` access scope."
    recent_only = run(world, shop, "{ orders(first: 10) { nodes { id } } }", app_scopes={"read_orders"})
    assert [n["id"] for n in recent_only["orders"]["nodes"]] == [
        "gid://shopify/Order/7001",
        "gid://shopify/Order/7003",
        "gid://shopify/Order/7004",
    ]
    assert (
        run(world, shop, '{ order(id: "gid://shopify/Order/7002") { id } }', app_scopes={"read_orders"})[
            "order"
        ]
        is None
    )
    everything = run(
        world, shop, "{ orders(first: 10) { nodes { id } } }", app_scopes={"read_orders", "read_all_orders"}
    )
    assert len(everything["orders"]["nodes"]) == 4


def test_datetime_and_cursor_round_trip() -> None:
    from devstore.queries import (
        SearchAnd,
        SearchNot,
        SearchOr,
        SearchTerm,
        decode_cursor,
        encode_cursor,
        parse_search,
        parse_search_tree,
    )

    assert decode_cursor(encode_cursor(123, 7)) == (123, 7)
    assert parse_search("updated_at:>='2026-01-01T00:00:00Z' AND id:>5") == [
        ("updated_at", ">=", "2026-01-01T00:00:00Z"),
        ("id", ">", "5"),
    ]
    assert parse_search_tree("-id:5 OR (NOT state:enabled)") == SearchOr(
        (SearchNot(SearchTerm("id", "=", "5")), SearchNot(SearchTerm("state", "=", "enabled")))
    )
    assert parse_search_tree("id:>5 AND email:'a b'") == SearchAnd(
        (SearchTerm("id", ">", "5"), SearchTerm("email", "=", "a b"))
    )
    # lenient like Shopify: stray connectives and unbalanced parentheses do not fail the request
    assert parse_search_tree("AND id:5 OR") == SearchTerm("id", "=", "5")
    assert parse_search_tree("((id:5") == SearchTerm("id", "=", "5")
    assert parse_search_tree("id:5)") == SearchTerm("id", "=", "5")
    assert parse_search_tree("ANDROID") == SearchTerm(None, "=", "ANDROID")
    assert parse_search_tree("   ") is None
    assert graph._format_datetime(datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
