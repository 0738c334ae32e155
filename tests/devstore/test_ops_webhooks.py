"""Webhook delivery over real HTTP: signatures, REST payloads, retries, duplicates/reorder by seed."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator

import pytest
from ops_support import Receiver, Store, customer_gid, expected_hmac, numeric_id, start_store

from devstore.webhooks import WebhookDispatcher, dispatcher_for

SUBSCRIBE = """
mutation($topic: WebhookSubscriptionTopic!, $uri: String!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: {uri: $uri}) {
    webhookSubscription { id } userErrors { field message }
  }
}"""
CUSTOMER_UPDATE = """mutation($i: CustomerInput!) { customerUpdate(input: $i) { customer { id } userErrors { message } } }"""
EMAIL_CONSENT = """
mutation($input: CustomerEmailMarketingConsentUpdateInput!) {
  customerEmailMarketingConsentUpdate(input: $input) { customer { id } userErrors { message } }
}"""


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    # time_scale 1e-4: Shopify's retry schedule (1, 2, 4 ... 128 minutes) runs in about 1.5 s
    running = start_store(customers=30, seed=9, webhook_time_scale=1e-4)
    yield running
    running.stop()


@pytest.fixture
def receiver(store: Store) -> Iterator[Receiver]:
    rx = Receiver()
    yield rx
    dispatcher(store).wait_idle(5)
    with store.shop.lock:
        store.shop.webhook_subscriptions.clear()
    store.control("DELETE", "/faults")
    rx.close()


def dispatcher(store: Store) -> WebhookDispatcher:
    found = dispatcher_for(store.world)
    assert found is not None, "the devstore app should start a webhook dispatcher"
    return found


def _subscribe(store: Store, topic: str, uri: str) -> None:
    payload = store.gql(SUBSCRIBE, {"topic": topic, "uri": uri})["data"]["webhookSubscriptionCreate"]
    assert payload["userErrors"] == [], payload


def test_delivery_is_signed_with_the_client_secret_and_carries_shopify_headers(
    store: Store, receiver: Receiver
) -> None:
    _subscribe(store, "CUSTOMERS_UPDATE", receiver.url)
    gid = customer_gid(store.shop)
    store.gql(CUSTOMER_UPDATE, {"i": {"id": gid, "firstName": "Grace"}})
    (hit,) = receiver.wait_for(1)
    headers = {k.lower(): v for k, v in hit.headers.items()}
    assert headers["x-shopify-hmac-sha256"] == expected_hmac(hit.body, store.app.client_secret)
    assert headers["x-shopify-hmac-sha256"] != expected_hmac(hit.body, "some other secret")
    assert headers["x-shopify-topic"] == "customers/update"
    assert headers["x-shopify-shop-domain"] == store.shop.domain
    assert headers["x-shopify-api-version"] == "2026-10"
    assert (
        headers["x-shopify-webhook-id"]
        and headers["x-shopify-event-id"]
        and headers["x-shopify-triggered-at"]
    )
    body = hit.json
    assert body["id"] == numeric_id(gid) and isinstance(body["id"], int)
    assert body["admin_graphql_api_id"] == gid
    assert body["first_name"] == "Grace" and body["updated_at"]
    assert set(body["email_marketing_consent"]) == {"state", "opt_in_level", "consent_updated_at"}
    assert isinstance(body["tags"], str) and isinstance(body["addresses"], list)


def test_consent_mutation_emits_the_consent_topic(store: Store, receiver: Receiver) -> None:
    _subscribe(store, "CUSTOMERS_EMAIL_MARKETING_CONSENT_UPDATE", receiver.url)
    gid = customer_gid(store.shop)
    # no consentUpdatedAt: Shopify uses the time of the request, newer than anything stored
    consent = {"marketingState": "UNSUBSCRIBED"}
    store.gql(EMAIL_CONSENT, {"input": {"customerId": gid, "emailMarketingConsent": consent}})
    (hit,) = receiver.wait_for(1)
    assert hit.json["customer_id"] == numeric_id(gid)
    assert hit.json["email_marketing_consent"]["state"] == "unsubscribed"
    assert hit.json["email_marketing_consent"]["consent_updated_at"]
    assert hit.json["email_address"] == store.shop.records["customers"][numeric_id(gid)]["email"]


def test_admin_consent_change_fires_consent_and_update_topics(store: Store, receiver: Receiver) -> None:
    _subscribe(store, "CUSTOMERS_EMAIL_MARKETING_CONSENT_UPDATE", receiver.url)
    _subscribe(store, "CUSTOMERS_UPDATE", receiver.url)
    customer_id = numeric_id(customer_gid(store.shop))
    change = {"email_consent_state": "UNSUBSCRIBED", "email_consent_updated_at": "2026-11-01T00:00:00Z"}
    assert (
        store.control(
            "PATCH", f"/shops/{store.shop.handle}/records/customers/{customer_id}", change
        ).status_code
        == 200
    )
    hits = receiver.wait_for(2)
    topics = sorted(h.headers["X-Shopify-Topic"] for h in hits)
    assert topics == ["customers/update", "customers_email_marketing_consent/update"]
    consent = next(h.json for h in hits if h.headers["X-Shopify-Topic"] != "customers/update")
    assert consent["email_marketing_consent"]["state"] == "unsubscribed"


def test_failed_deliveries_are_retried_with_growing_gaps_and_the_same_webhook_id(
    store: Store, receiver: Receiver
) -> None:
    _subscribe(store, "CUSTOMERS_UPDATE", receiver.url)
    receiver.statuses = [500, 503, 404]
    store.gql(CUSTOMER_UPDATE, {"i": {"id": customer_gid(store.shop), "note": "retry me"}})
    hits = receiver.wait_for(4)
    assert len({h.headers["X-Shopify-Webhook-Id"] for h in hits}) == 1
    assert all(h.body == hits[0].body for h in hits)
    gaps = [b.at - a.at for a, b in itertools.pairwise(hits)]
    assert gaps[2] > gaps[0]
    assert dispatcher(store).wait_idle(5)  # the last answer is recorded after the receiver saw it
    records = [r for r in dispatcher(store).records(store.shop.handle) if r.uri == receiver.url]
    assert [(r.attempt, r.status, r.ok) for r in records] == [
        (1, 500, False),
        (2, 503, False),
        (3, 404, False),
        (4, 200, True),
    ]


def test_connection_errors_are_retried_until_the_attempts_run_out(store: Store, receiver: Receiver) -> None:
    dead = Receiver()
    url = dead.url
    dead.close()  # nothing listens there any more
    _subscribe(store, "CUSTOMERS_UPDATE", url)
    store.gql(CUSTOMER_UPDATE, {"i": {"id": customer_gid(store.shop), "note": "nobody home"}})
    assert dispatcher(store).wait_idle(10)
    attempts = [r for r in dispatcher(store).records() if r.uri == url]
    assert len(attempts) == dispatcher(store).max_attempts
    assert all(not r.ok and r.error for r in attempts)
    response = store.control("GET", f"/webhooks/deliveries?shop={store.shop.handle}&topic=customers/update")
    assert any(r["uri"] == url and r["error"] for r in response.json())
    # like Shopify, a subscription whose delivery failed every attempt is deleted
    assert all(sub["uri"] != url for sub in store.shop.webhook_subscriptions.values())
    removed = store.control(
        "GET", f"/shops/{store.shop.handle}/write_log?operation=webhook.subscription_removed"
    ).json()
    assert removed[-1]["payload"]["uri"] == url


def _burst(store: Store, receiver: Receiver, seed: int, n: int = 12) -> list[tuple[str, bool]]:
    """Trigger ``n`` customer updates under a duplicate/reorder profile; what arrived, in order."""
    receiver.received.clear()
    profile = {"seed": seed, "webhook_duplicate_rate": 0.3, "webhook_reorder_rate": 0.3}
    assert store.control("PUT", "/faults", profile).status_code == 200
    gid = customer_gid(store.shop)
    for i in range(n):
        store.gql(CUSTOMER_UPDATE, {"i": {"id": gid, "note": f"n{i:02d}"}})
    # one undisturbed event releases a delivery still held back, however slow the machine
    store.control("DELETE", "/faults")
    store.gql(CUSTOMER_UPDATE, {"i": {"id": gid, "note": "zz-end"}})
    assert dispatcher(store).wait_idle(10)
    return [(h.json["note"], h.headers["X-Shopify-Webhook-Id"]) for h in receiver.received]


def test_duplicates_and_reordering_are_reproducible_by_seed(store: Store, receiver: Receiver) -> None:
    _subscribe(store, "CUSTOMERS_UPDATE", receiver.url)
    # held deliveries wait for the next event rather than a timer, so timing cannot change the order
    dispatcher(store).reorder_window = 30.0
    try:
        _check_bursts(store, receiver)
    finally:
        dispatcher(store).reorder_window = 1.0


def _check_bursts(store: Store, receiver: Receiver) -> None:
    first = _burst(store, receiver, seed=21)
    notes = [note for note, _ in first]
    assert len(first) > 13, "some deliveries should be duplicated"
    assert len(set(notes)) == 13, "every event arrives at least once"
    deduped = list(dict.fromkeys(notes))
    assert deduped != sorted(deduped), "some deliveries should arrive out of order"
    # a duplicate repeats the webhook id of its original
    ids_by_note: dict[str, set[str]] = {}
    for note, webhook_id in first:
        ids_by_note.setdefault(note, set()).add(webhook_id)
    assert all(len(ids) == 1 for ids in ids_by_note.values())
    second = _burst(store, receiver, seed=21)
    assert [n for n, _ in second] == notes
    third = _burst(store, receiver, seed=22)
    assert [n for n, _ in third] != notes


def test_late_deliveries_are_held_back(store: Store, receiver: Receiver) -> None:
    _subscribe(store, "CUSTOMERS_UPDATE", receiver.url)
    # 2000 s scaled by the store's 1e-4 time scale: about 0.2 s late
    store.control("PUT", "/faults", {"seed": 1, "webhook_late_rate": 1.0, "webhook_late_delay": 2000})
    started = time.monotonic()
    store.gql(CUSTOMER_UPDATE, {"i": {"id": customer_gid(store.shop), "note": "late"}})
    (hit,) = receiver.wait_for(1)
    assert hit.at - started >= 0.19


def test_control_api_changes_emit_create_update_delete(store: Store, receiver: Receiver) -> None:
    for topic in (
        "CUSTOMERS_CREATE",
        "CUSTOMERS_DELETE",
        "ORDERS_CREATE",
        "ORDERS_UPDATED",
        "PRODUCTS_DELETE",
    ):
        _subscribe(store, topic, receiver.url)
    handle = store.shop.handle
    created = store.control(
        "POST", f"/shops/{handle}/records/customers", {"first_name": "Nina", "email": "nina@example.com"}
    ).json()
    order = store.control(
        "POST",
        f"/shops/{handle}/records/orders",
        {
            "customer_id": created["id"],
            "email": "nina@example.com",
            "total_price": "20.00",
            "line_items": [{"title": "Tent", "quantity": 1, "original_unit_price": "20.00"}],
        },
    ).json()
    store.control("PATCH", f"/shops/{handle}/records/orders/{order['id']}", {"tags": ["gift"]})
    store.control("DELETE", f"/shops/{handle}/records/customers/{created['id']}")
    product_id = next(iter(store.shop.records["products"]))
    store.control("DELETE", f"/shops/{handle}/records/products/{product_id}")
    hits = receiver.wait_for(5)
    by_topic = {h.headers["X-Shopify-Topic"]: h.json for h in hits}
    assert by_topic["customers/create"]["email"] == "nina@example.com"
    assert by_topic["orders/create"]["line_items"][0]["title"] == "Tent"
    assert by_topic["orders/create"]["customer"]["id"] == created["id"]
    assert by_topic["orders/updated"]["tags"] == "gift"
    assert by_topic["customers/delete"] == {"id": created["id"]}
    assert by_topic["products/delete"] == {"id": product_id}


def test_compliance_topics_and_bulk_finish(store: Store, receiver: Receiver) -> None:
    handle = store.shop.handle
    for topic in ("customers/data_request", "customers/redact", "shop/redact"):
        assert (
            store.control(
                "POST", f"/shops/{handle}/webhooks", {"topic": topic, "uri": receiver.url}
            ).status_code
            == 201
        )
    _subscribe(store, "BULK_OPERATIONS_FINISH", receiver.url)
    customer_id = numeric_id(customer_gid(store.shop))
    for topic in ("customers/data_request", "customers/redact"):
        assert (
            store.control(
                "POST", f"/shops/{handle}/privacy", {"topic": topic, "customer_id": customer_id}
            ).status_code
            == 200
        )
    store.control("POST", f"/shops/{handle}/privacy", {"topic": "shop/redact"})
    bulk = store.gql(
        'mutation { bulkOperationRunQuery(query: "{ products { edges { node { id } } } }", groupObjects: false)'
        " { bulkOperation { id } userErrors { message } } }"
    )["data"]["bulkOperationRunQuery"]["bulkOperation"]
    hits = receiver.wait_for(4)
    by_topic = {h.headers["X-Shopify-Topic"]: h.json for h in hits}
    assert by_topic["customers/redact"]["customer"]["id"] == customer_id
    assert "orders_to_redact" in by_topic["customers/redact"]
    assert "orders_requested" in by_topic["customers/data_request"]
    assert by_topic["shop/redact"]["shop_domain"] == store.shop.domain
    assert by_topic["bulk_operations/finish"] == {
        **by_topic["bulk_operations/finish"],
        "admin_graphql_api_id": bulk["id"],
        "status": "completed",
        "type": "query",
        "error_code": None,
    }
    bad = store.control("POST", f"/shops/{handle}/privacy", {"topic": "customers/redact"})
    assert bad.status_code == 404 and "customer_id" in bad.json()["error"]


def test_uninstall_emits_app_uninstalled_and_invalidates_tokens() -> None:
    store = start_store(customers=30, seed=9, webhook_time_scale=1e-4)
    rx = Receiver()
    try:
        _subscribe(store, "APP_UNINSTALLED", rx.url)
        response = store.control("POST", f"/shops/{store.shop.handle}/uninstall", {})
        assert response.status_code == 200
        (hit,) = rx.wait_for(1)
        assert hit.headers["X-Shopify-Topic"] == "app/uninstalled"
        assert hit.json["myshopify_domain"] == store.shop.domain
        assert hit.headers["X-Shopify-Hmac-Sha256"] == expected_hmac(hit.body, store.app.client_secret)
        denied = store.http.post(
            store.graphql_url,
            json={"query": "{ shop { name } }"},
            headers={"X-Shopify-Access-Token": store.token},
        )
        assert denied.status_code == 401
        assert store.shop.webhook_subscriptions == {}
        again = store.control("POST", f"/shops/{store.shop.handle}/reinstall", {}).json()
        allowed = store.http.post(
            store.graphql_url,
            json={"query": "{ shop { name } }"},
            headers={"X-Shopify-Access-Token": again["access_token"]},
        )
        assert allowed.status_code == 200 and allowed.json()["data"]["shop"]["name"]
    finally:
        rx.close()
        store.stop()


def test_checkout_and_collection_topics_are_delivered_with_their_payloads(
    store: Store, receiver: Receiver
) -> None:
    topics = (
        "CHECKOUTS_CREATE",
        "CHECKOUTS_UPDATE",
        "COLLECTIONS_CREATE",
        "COLLECTIONS_UPDATE",
        "COLLECTIONS_DELETE",
    )
    for topic in topics:
        _subscribe(store, topic, receiver.url)
    handle = store.shop.handle
    customer_id = numeric_id(customer_gid(store.shop))
    variant = next(v for rows in store.shop.children["variants"].values() for v in rows)
    checkout = store.control(
        "POST",
        f"/shops/{handle}/records/abandoned_checkouts",
        {
            "customer_id": customer_id,
            "email": "cart@example.com",
            "total_price": "42.50",
            "billing_city": "Leeds",
            "line_items": [
                {
                    "product_id": variant["product_id"],
                    "variant_id": variant["id"],
                    "title": "Lantern",
                    "quantity": 2,
                    "original_unit_price": "21.25",
                }
            ],
        },
    ).json()
    store.control(
        "PATCH",
        f"/shops/{handle}/records/abandoned_checkouts/{checkout['id']}",
        {"email": "cart2@example.com"},
    )
    collection = store.control(
        "POST", f"/shops/{handle}/records/collections", {"title": "Winter Sale", "sort_order": "BEST_SELLING"}
    ).json()
    store.control(
        "PATCH", f"/shops/{handle}/records/collections/{collection['id']}", {"title": "Winter Sale II"}
    )
    store.control("DELETE", f"/shops/{handle}/records/collections/{collection['id']}")
    hits = receiver.wait_for(5)
    assert sorted(h.headers["X-Shopify-Topic"] for h in hits) == sorted(
        t.lower().replace("_", "/", 1) for t in topics
    )
    for hit in hits:
        assert hit.headers["X-Shopify-Hmac-Sha256"] == expected_hmac(hit.body, store.app.client_secret)
        assert hit.headers["X-Shopify-Shop-Domain"] == store.shop.domain
    by_topic = {h.headers["X-Shopify-Topic"]: h.json for h in hits}

    created, updated = by_topic["checkouts/create"], by_topic["checkouts/update"]
    assert created["id"] == updated["id"] == checkout["id"] and isinstance(created["id"], int)
    assert created["email"] == "cart@example.com" and updated["email"] == "cart2@example.com"
    assert len(created["token"]) == 32 and created["token"] == updated["token"]
    assert created["total_price"] == "42.50" and created["currency"] == store.shop.info["currency_code"]
    assert created["customer"] == {
        "id": customer_id,
        "email": store.shop.records["customers"][customer_id]["email"],
        "phone": store.shop.records["customers"][customer_id]["phone"],
    }
    assert created["billing_address"]["city"] == "Leeds"
    assert created["line_items"] == [
        {
            "product_id": variant["product_id"],
            "variant_id": variant["id"],
            "title": "Lantern",
            "quantity": 2,
            "price": "21.25",
        }
    ]
    assert created["completed_at"] is None
    # REST timestamps: the shop's own UTC offset, to the second
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", created["created_at"])
    assert updated["updated_at"] >= created["updated_at"]

    made, renamed = by_topic["collections/create"], by_topic["collections/update"]
    assert made["id"] == renamed["id"] == collection["id"]
    assert made["admin_graphql_api_id"] == f"gid://shopify/Collection/{collection['id']}"
    assert (made["title"], renamed["title"]) == ("Winter Sale", "Winter Sale II")
    assert made["handle"] == "winter-sale" and made["sort_order"] == "best-selling"
    assert made["published_scope"] == "web"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", made["updated_at"])
    assert by_topic["collections/delete"] == {"id": collection["id"]}
