"""Mutations over real HTTP: consent, metafieldsSet, customerUpdate, addresses, webhook subscriptions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from ops_support import Store, customer_gid, numeric_id, start_store

EMAIL_CONSENT = """
mutation($input: CustomerEmailMarketingConsentUpdateInput!) {
  customerEmailMarketingConsentUpdate(input: $input) {
    customer { id updatedAt emailMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt } }
    userErrors { field message code }
  }
}"""
SMS_CONSENT = """
mutation($input: CustomerSmsMarketingConsentUpdateInput!) {
  customerSmsMarketingConsentUpdate(input: $input) {
    customer { id smsMarketingConsent { marketingState consentUpdatedAt consentCollectedFrom } }
    userErrors { field message code }
  }
}"""
METAFIELDS_SET = """
mutation($m: [MetafieldsSetInput!]!) {
  metafieldsSet(metafields: $m) {
    metafields { id namespace key type value compareDigest }
    userErrors { field message code elementIndex }
  }
}"""
CUSTOMER_UPDATE = """
mutation($i: CustomerInput!) {
  customerUpdate(input: $i) {
    customer { id firstName lastName tags note defaultEmailAddress { emailAddress } defaultPhoneNumber { phoneNumber } }
    userErrors { field message }
  }
}"""
ADDRESS_CREATE = """
mutation($c: ID!, $a: MailingAddressInput!, $d: Boolean) {
  customerAddressCreate(customerId: $c, address: $a, setAsDefault: $d) {
    address { id address1 city zip countryCodeV2 }
    userErrors { field message }
  }
}"""


def _stamp(store: Store, ago: timedelta) -> str:
    """A consentUpdatedAt ``ago`` before devstore time (newer than anything the generator stored)."""
    return (store.world.clock.now() - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


CUSTOMER = """query($id: ID!) { customer(id: $id) { id updatedAt defaultAddress { address1 }
  metafield(namespace: "shopsync", key: "score") { value compareDigest } } }"""


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    running = start_store(customers=40, seed=3)
    yield running
    running.stop()


def _log(store: Store, operation: str) -> list[dict]:
    response = store.control("GET", f"/shops/{store.shop.handle}/write_log?operation={operation}")
    assert response.status_code == 200
    return response.json()


# consent ---------------------------------------------------------------------------------
def test_email_consent_update_sets_state_and_moves_updated_at(store: Store) -> None:
    gid = customer_gid(store.shop, with_email=True)
    before = store.gql(CUSTOMER, {"id": gid})["data"]["customer"]["updatedAt"]
    stamp = _stamp(store, timedelta(minutes=5))
    body = store.gql(
        EMAIL_CONSENT,
        {
            "input": {
                "customerId": gid,
                "emailMarketingConsent": {
                    "marketingState": "UNSUBSCRIBED",
                    "marketingOptInLevel": "SINGLE_OPT_IN",
                    "consentUpdatedAt": stamp,
                },
            }
        },
    )
    payload = body["data"]["customerEmailMarketingConsentUpdate"]
    assert payload["userErrors"] == []
    consent = payload["customer"]["emailMarketingConsent"]
    assert consent == {
        "marketingState": "UNSUBSCRIBED",
        "marketingOptInLevel": "SINGLE_OPT_IN",
        "consentUpdatedAt": stamp,
    }
    assert payload["customer"]["updatedAt"] >= before
    entries = _log(store, "customerEmailMarketingConsentUpdate")
    assert entries[-1]["target"] == gid and entries[-1]["outcome"] == "ok"


def test_older_consent_never_overwrites_a_newer_one(store: Store) -> None:
    gid = customer_gid(store.shop, with_email=True)
    newer_at = _stamp(store, timedelta(minutes=3))
    newer = {"marketingState": "UNSUBSCRIBED", "consentUpdatedAt": newer_at}
    older = {"marketingState": "SUBSCRIBED", "consentUpdatedAt": _stamp(store, timedelta(days=30))}
    store.gql(EMAIL_CONSENT, {"input": {"customerId": gid, "emailMarketingConsent": newer}})
    body = store.gql(EMAIL_CONSENT, {"input": {"customerId": gid, "emailMarketingConsent": older}})
    payload = body["data"]["customerEmailMarketingConsentUpdate"]
    assert payload["userErrors"] == []
    assert payload["customer"]["emailMarketingConsent"]["marketingState"] == "UNSUBSCRIBED"
    assert payload["customer"]["emailMarketingConsent"]["consentUpdatedAt"] == newer_at
    assert _log(store, "customerEmailMarketingConsentUpdate")[-1]["outcome"] == "ignored_older"
    # a later decision does win
    latest = {"marketingState": "SUBSCRIBED", "consentUpdatedAt": _stamp(store, timedelta(minutes=1))}
    body = store.gql(EMAIL_CONSENT, {"input": {"customerId": gid, "emailMarketingConsent": latest}})
    assert body["data"]["customerEmailMarketingConsentUpdate"]["customer"]["emailMarketingConsent"][
        "marketingState"
    ] == ("SUBSCRIBED")


@pytest.mark.parametrize("state", ["NOT_SUBSCRIBED", "REDACTED", "INVALID"])
def test_unsettable_email_states_are_user_errors(store: Store, state: str) -> None:
    gid = customer_gid(store.shop, with_email=True)
    body = store.gql(
        EMAIL_CONSENT, {"input": {"customerId": gid, "emailMarketingConsent": {"marketingState": state}}}
    )
    payload = body["data"]["customerEmailMarketingConsentUpdate"]
    assert payload["customer"] is None
    assert payload["userErrors"][0]["field"] == ["input", "emailMarketingConsent", "marketingState"]
    assert payload["userErrors"][0]["code"] == "INCLUSION"


def test_consent_needs_an_email_or_a_phone_and_a_real_customer(store: Store) -> None:
    no_email = customer_gid(store.shop, with_email=False)
    body = store.gql(
        EMAIL_CONSENT,
        {"input": {"customerId": no_email, "emailMarketingConsent": {"marketingState": "SUBSCRIBED"}}},
    )
    error = body["data"]["customerEmailMarketingConsentUpdate"]["userErrors"][0]
    assert error["code"] == "INVALID" and error["field"] == ["input", "customerId"]
    assert "email address" in error["message"]
    missing = "gid://shopify/Customer/1"
    body = store.gql(
        EMAIL_CONSENT,
        {"input": {"customerId": missing, "emailMarketingConsent": {"marketingState": "PENDING"}}},
    )
    assert (
        body["data"]["customerEmailMarketingConsentUpdate"]["userErrors"][0]["message"]
        == "Customer not found"
    )
    no_phone = customer_gid(store.shop, with_email=True, with_phone=False)
    body = store.gql(
        SMS_CONSENT,
        {"input": {"customerId": no_phone, "smsMarketingConsent": {"marketingState": "SUBSCRIBED"}}},
    )
    assert "phone number" in body["data"]["customerSmsMarketingConsentUpdate"]["userErrors"][0]["message"]


def test_sms_consent_update_and_future_timestamps(store: Store) -> None:
    gid = customer_gid(store.shop, with_email=True, with_phone=True)
    body = store.gql(
        SMS_CONSENT,
        {
            "input": {
                "customerId": gid,
                "smsMarketingConsent": {
                    "marketingState": "SUBSCRIBED",
                    "marketingOptInLevel": "SINGLE_OPT_IN",
                },
            }
        },
    )
    payload = body["data"]["customerSmsMarketingConsentUpdate"]
    assert payload["userErrors"] == []
    assert payload["customer"]["smsMarketingConsent"]["marketingState"] == "SUBSCRIBED"
    future = {"marketingState": "UNSUBSCRIBED", "consentUpdatedAt": "2999-01-01T00:00:00Z"}
    body = store.gql(SMS_CONSENT, {"input": {"customerId": gid, "smsMarketingConsent": future}})
    assert body["data"]["customerSmsMarketingConsentUpdate"]["userErrors"][0]["field"] == [
        "input",
        "smsMarketingConsent",
        "consentUpdatedAt",
    ]


def test_mutations_need_write_customers(store: Store) -> None:
    app = store.app
    app.scopes.discard("write_customers")
    try:
        gid = customer_gid(store.shop, with_email=True)
        body = store.gql(
            EMAIL_CONSENT,
            {"input": {"customerId": gid, "emailMarketingConsent": {"marketingState": "PENDING"}}},
        )
        assert body["data"]["customerEmailMarketingConsentUpdate"] is None
        assert body["errors"][0]["extensions"]["code"] == "ACCESS_DENIED"
        body = store.gql(
            METAFIELDS_SET,
            {
                "m": [
                    {"ownerId": gid, "namespace": "shopsync", "key": "k1", "type": "boolean", "value": "true"}
                ]
            },
        )
        assert body["errors"][0]["extensions"]["code"] == "ACCESS_DENIED"
    finally:
        app.scopes.add("write_customers")


# metafields ------------------------------------------------------------------------------
def _mf(
    gid: str, key: str = "score", value: str = "5", type_: str | None = "number_integer", **extra: object
) -> dict:
    out: dict = {"ownerId": gid, "namespace": "shopsync", "key": key, "value": value, **extra}
    if type_ is not None:
        out["type"] = type_
    return out


def test_metafields_set_returns_compare_digest_and_compare_and_set_works(store: Store) -> None:
    gid = customer_gid(store.shop, with_email=True)
    body = store.gql(METAFIELDS_SET, {"m": [_mf(gid, value="5", compareDigest=None)]})
    payload = body["data"]["metafieldsSet"]
    assert payload["userErrors"] == []
    digest = payload["metafields"][0]["compareDigest"]
    assert len(digest) == 64
    # the digest read back through the customer matches, and moves with the value
    read = store.gql(CUSTOMER, {"id": gid})["data"]["customer"]["metafield"]
    assert read == {"value": "5", "compareDigest": digest}
    body = store.gql(METAFIELDS_SET, {"m": [_mf(gid, value="6", type_=None, compareDigest=digest)]})
    assert body["data"]["metafieldsSet"]["userErrors"] == []
    assert body["data"]["metafieldsSet"]["metafields"][0]["compareDigest"] != digest
    # the old digest is now stale
    body = store.gql(METAFIELDS_SET, {"m": [_mf(gid, value="7", compareDigest=digest)]})
    error = body["data"]["metafieldsSet"]["userErrors"][0]
    assert error["code"] == "STALE_OBJECT" and error["elementIndex"] == 0
    # null compareDigest means "must not exist yet"
    body = store.gql(METAFIELDS_SET, {"m": [_mf(gid, value="8", compareDigest=None)]})
    assert body["data"]["metafieldsSet"]["userErrors"][0]["code"] == "STALE_OBJECT"
    assert store.gql(CUSTOMER, {"id": gid})["data"]["customer"]["metafield"]["value"] == "6"


def test_metafields_set_is_atomic_and_points_at_the_bad_element(store: Store) -> None:
    gid = customer_gid(store.shop, with_email=True)
    elements = [
        _mf(gid, key="first_seen", value="2026-01-31T12:00:00Z", type_="date_time"),
        _mf(gid, key="segment", value="champions", type_="single_line_text_field"),
        _mf(gid, key="orders_count", value="many", type_="number_integer"),
        _mf(gid, key="flags", value="{not json", type_="json"),
    ]
    before = len(store.shop.children["metafields"].get(numeric_id(gid), []))
    payload = store.gql(METAFIELDS_SET, {"m": elements})["data"]["metafieldsSet"]
    assert payload["metafields"] == []
    assert sorted((e["elementIndex"], e["code"]) for e in payload["userErrors"]) == [
        (2, "INVALID_VALUE"),
        (3, "INVALID_VALUE"),
    ]
    assert payload["userErrors"][0]["field"] == ["metafields", "2", "value"]
    assert len(store.shop.children["metafields"].get(numeric_id(gid), [])) == before
    assert _log(store, "metafieldsSet")[-1]["outcome"] == "INVALID_VALUE"


@pytest.mark.parametrize(
    "element, code",
    [
        ({"namespace": "shopify"}, "INVALID"),
        ({"namespace": "ab"}, "TOO_SHORT"),
        ({"key": "x"}, "TOO_SHORT"),
        ({"key": "has space"}, "INVALID"),
        ({"type": "no_such_type"}, "INVALID_TYPE"),
        ({"type": "boolean", "value": "yes"}, "INVALID_VALUE"),
        ({"type": "date_time", "value": "31/01/2026"}, "INVALID_VALUE"),
        ({"type": None, "key": "brand_new_key"}, "BLANK"),
        ({"ownerId": "gid://shopify/Customer/1"}, "INVALID"),
    ],
)
def test_metafields_set_validation(store: Store, element: dict, code: str) -> None:
    gid = customer_gid(store.shop, with_email=True)
    base = _mf(gid, key="valid_key", value="1")
    base.update(element)
    if base.get("type") is None:
        base.pop("type")
    payload = store.gql(METAFIELDS_SET, {"m": [base]})["data"]["metafieldsSet"]
    assert [e["code"] for e in payload["userErrors"]] == [code]


def test_metafields_set_refuses_more_than_25(store: Store) -> None:
    gid = customer_gid(store.shop, with_email=True)
    elements = [_mf(gid, key=f"k{i:02d}", value="true", type_="boolean") for i in range(26)]
    payload = store.gql(METAFIELDS_SET, {"m": elements})["data"]["metafieldsSet"]
    assert payload["userErrors"][0]["code"] == "LESS_THAN_OR_EQUAL_TO"
    assert "25" in payload["userErrors"][0]["message"]
    payload = store.gql(METAFIELDS_SET, {"m": elements[:25]})["data"]["metafieldsSet"]
    assert payload["userErrors"] == [] and len(payload["metafields"]) == 25


# customers -------------------------------------------------------------------------------
def test_customer_update_profile_and_errors(store: Store) -> None:
    gid = customer_gid(store.shop, with_email=True)
    body = store.gql(
        CUSTOMER_UPDATE,
        {
            "i": {
                "id": gid,
                "firstName": "Ada",
                "lastName": "Lovelace",
                "tags": ["vip, loyal", "beta"],
                "note": "n",
            }
        },
    )
    payload = body["data"]["customerUpdate"]
    assert payload["userErrors"] == []
    assert payload["customer"]["firstName"] == "Ada"
    assert sorted(payload["customer"]["tags"]) == ["beta", "loyal", "vip"]
    assert store.shop.records["customers"][numeric_id(gid)]["first_name"] == "Ada"
    assert store.gql(CUSTOMER_UPDATE, {"i": {"id": gid, "email": "nope"}})["data"]["customerUpdate"][
        "userErrors"
    ] == [{"field": ["email"], "message": "Email is invalid"}]
    other = next(
        c for c in store.shop.records["customers"].values() if c.get("email") and c["id"] != numeric_id(gid)
    )
    taken = store.gql(CUSTOMER_UPDATE, {"i": {"id": gid, "email": other["email"].upper()}})
    assert taken["data"]["customerUpdate"]["userErrors"][0]["message"] == "Email has already been taken"
    assert store.gql(CUSTOMER_UPDATE, {"i": {"id": gid, "phone": "12"}})["data"]["customerUpdate"][
        "userErrors"
    ][0]["field"] == ["phone"]
    missing = store.gql(CUSTOMER_UPDATE, {"i": {"id": "gid://shopify/Customer/1", "firstName": "x"}})
    assert missing["data"]["customerUpdate"] == {
        "customer": None,
        "userErrors": [{"field": ["id"], "message": "Customer does not exist"}],
    }


def test_customer_update_fills_a_missing_phone(store: Store) -> None:
    gid = customer_gid(store.shop, with_email=True, with_phone=False)
    payload = store.gql(CUSTOMER_UPDATE, {"i": {"id": gid, "phone": "+1 415 555 2671"}})["data"][
        "customerUpdate"
    ]
    assert payload["userErrors"] == []
    assert payload["customer"]["defaultPhoneNumber"]["phoneNumber"] == "+14155552671"
    assert store.shop.records["customers"][numeric_id(gid)]["sms_consent_state"] == "NOT_SUBSCRIBED"
    # the new phone's SMS consent reads back whole (its opt-in level is non-null in the schema),
    # so a later sync of the customer does not fail
    read = store.gql(
        "query($id: ID!) { customer(id: $id) { smsMarketingConsent { marketingState marketingOptInLevel } } }",
        {"id": gid},
    )
    assert "errors" not in read, read
    assert read["data"]["customer"]["smsMarketingConsent"] == {
        "marketingState": "NOT_SUBSCRIBED",
        "marketingOptInLevel": "SINGLE_OPT_IN",
    }


def test_customer_address_create_sets_default(store: Store) -> None:
    gid = customer_gid(store.shop, with_email=True)
    address = {
        "address1": "12 Harbour Rd",
        "city": "Portland",
        "zip": "97201",
        "countryCode": "US",
        "provinceCode": "OR",
    }
    payload = store.gql(ADDRESS_CREATE, {"c": gid, "a": address, "d": True})["data"]["customerAddressCreate"]
    assert payload["userErrors"] == []
    assert payload["address"]["city"] == "Portland" and payload["address"]["countryCodeV2"] == "US"
    assert (
        store.gql(CUSTOMER, {"id": gid})["data"]["customer"]["defaultAddress"]["address1"] == "12 Harbour Rd"
    )
    missing = store.gql(ADDRESS_CREATE, {"c": "gid://shopify/Customer/1", "a": address})
    assert missing["data"]["customerAddressCreate"]["userErrors"] == [
        {"field": ["customerId"], "message": "Customer does not exist"}
    ]


# webhook subscriptions -------------------------------------------------------------------
SUB_CREATE = """
mutation($topic: WebhookSubscriptionTopic!, $uri: String!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: {uri: $uri, format: JSON}) {
    webhookSubscription { id topic uri format apiVersion { handle } endpoint { __typename ... on WebhookHttpEndpoint { callbackUrl } } }
    userErrors { field message }
  }
}"""
SUB_DELETE = """mutation($id: ID!) { webhookSubscriptionDelete(id: $id) { deletedWebhookSubscriptionId userErrors { field message } } }"""
SUB_LIST = """query($topics: [WebhookSubscriptionTopic!]) { webhookSubscriptions(first: 50, topics: $topics) {
  edges { node { id topic uri } } } }"""


def test_webhook_subscription_create_list_delete(store: Store) -> None:
    uri = "https://hooks.example.com/shopify"
    payload = store.gql(SUB_CREATE, {"topic": "ORDERS_CREATE", "uri": uri})["data"][
        "webhookSubscriptionCreate"
    ]
    assert payload["userErrors"] == []
    sub = payload["webhookSubscription"]
    assert sub["topic"] == "ORDERS_CREATE" and sub["apiVersion"]["handle"] == "2026-10"
    assert sub["endpoint"] == {"__typename": "WebhookHttpEndpoint", "callbackUrl": uri}
    again = store.gql(SUB_CREATE, {"topic": "ORDERS_CREATE", "uri": uri})["data"]["webhookSubscriptionCreate"]
    assert again["userErrors"][0]["message"] == "Address for this topic has already been taken"
    bad = store.gql(SUB_CREATE, {"topic": "ORDERS_CREATE", "uri": "http://hooks.example.com/x"})["data"]
    assert (
        bad["webhookSubscriptionCreate"]["userErrors"][0]["message"]
        == "Address protocol http:// is not supported"
    )
    listed = store.gql(SUB_LIST, {"topics": ["ORDERS_CREATE"]})["data"]["webhookSubscriptions"]["edges"]
    assert [e["node"]["id"] for e in listed] == [sub["id"]]
    deleted = store.gql(SUB_DELETE, {"id": sub["id"]})["data"]["webhookSubscriptionDelete"]
    assert deleted == {"deletedWebhookSubscriptionId": sub["id"], "userErrors": []}
    gone = store.gql(SUB_DELETE, {"id": sub["id"]})["data"]["webhookSubscriptionDelete"]
    assert gone["userErrors"][0]["field"] == ["id"]
    assert store.gql(SUB_LIST, {"topics": ["ORDERS_CREATE"]})["data"]["webhookSubscriptions"]["edges"] == []


def test_customer_update_can_set_metafields_atomically(store: Store) -> None:
    gid = customer_gid(store.shop, with_email=True)
    origin = {
        "namespace": "shopsync",
        "key": "origin",
        "type": "single_line_text_field",
        "value": "shopsync:42",
    }
    ok = store.gql(CUSTOMER_UPDATE, {"i": {"id": gid, "note": "with origin", "metafields": [origin]}})
    assert ok["data"]["customerUpdate"]["userErrors"] == []
    values = {
        (m["namespace"], m["key"]): m["value"] for m in store.shop.children["metafields"][numeric_id(gid)]
    }
    assert values[("shopsync", "origin")] == "shopsync:42"
    bad = {**origin, "type": "number_integer", "key": "count", "value": "many"}
    refused = store.gql(CUSTOMER_UPDATE, {"i": {"id": gid, "note": "never written", "metafields": [bad]}})
    assert refused["data"]["customerUpdate"]["userErrors"][0]["field"] == ["metafields", "0", "value"]
    assert store.shop.records["customers"][numeric_id(gid)]["note"] == "with origin"
