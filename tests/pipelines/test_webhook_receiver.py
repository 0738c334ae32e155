"""The webhook receiver over real HTTP: verify, dedupe, durable, sealed into landing batches."""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from pipelines import landing
from pipelines.webhooks.journal import Journal
from pipelines.webhooks.receiver import SecretLookup, ShopWebhookConfig, create_receiver
from pipelines.webhooks.verify import sign, verify

SECRET = "shpss_test_secret"
SHOP = "acme-outdoors.myshopify.com"
PAUSED = "paused-store.myshopify.com"
DELETED = "deleted-store.myshopify.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    def __init__(self, tmp_path: Path, lookup: SecretLookup | None = None) -> None:
        self.landing = tmp_path / "landing"
        self.journal = Journal(tmp_path / "webhooks.sqlite")
        shops = {
            SHOP: ShopWebhookConfig((SECRET,)),
            PAUSED: ShopWebhookConfig((SECRET,), active=False),
            DELETED: ShopWebhookConfig((SECRET,), active=False, privacy_only=True),
        }
        app = create_receiver(self.journal, lookup or shops.get, landing_root=self.landing, seal_interval=0.2)
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}/webhooks"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.journal.close()

    def sealed_rows(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for _manifest, path in landing.iter_batches(self.landing, entity="webhooks"):
            rows.extend(json.loads(line) for line in path.read_text().splitlines())
        return rows


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(tmp_path)
    yield r
    r.stop()


def headers(
    body: bytes, *, event_id: str, topic: str = "customers/update", shop: str = SHOP, secret: str = SECRET
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Hmac-Sha256": sign(body, secret),
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-API-Version": "2026-10",
        "X-Shopify-Webhook-Id": f"wh-{event_id}",
        "X-Shopify-Event-Id": event_id,
        "X-Shopify-Triggered-At": "2026-11-02T09:30:00Z",
    }


def customer(cid: int, updated_at: str) -> bytes:
    return json.dumps(
        {
            "id": cid,
            "admin_graphql_api_id": f"gid://shopify/Customer/{cid}",
            "updated_at": updated_at,
            "email": "ann@example.com",
        }
    ).encode()


def test_signature_helpers_need_only_the_secret() -> None:
    body = b'{"id": 1}'
    assert verify(body, sign(body, SECRET), [SECRET])
    assert verify(body, sign(body, SECRET), ["old-secret", SECRET])  # rotation
    assert not verify(body + b" ", sign(body, SECRET), [SECRET])
    assert not verify(body, "not-base64!!", [SECRET])
    assert not verify(body, None, [SECRET])


def test_deliveries_are_verified_deduplicated_and_sealed(receiver: Receiver) -> None:
    body = customer(1, "2026-11-02T09:30:00Z")
    with httpx.Client(timeout=10) as client:
        assert client.post(receiver.url, content=body, headers=headers(body, event_id="e1")).json() == {
            "status": "accepted"
        }
        assert client.post(receiver.url, content=body, headers=headers(body, event_id="e1")).json() == {
            "status": "duplicate"
        }
        older = customer(1, "2026-11-01T00:00:00Z")
        assert client.post(receiver.url, content=older, headers=headers(older, event_id="e0")).json() == {
            "status": "stale"
        }
        paused = customer(2, "2026-11-02T09:30:00Z")
        reply = client.post(receiver.url, content=paused, headers=headers(paused, event_id="p1", shop=PAUSED))
        assert reply.status_code == 200 and reply.json() == {"status": "dropped"}

        forged = client.post(receiver.url, content=body, headers=headers(body, event_id="e2", secret="wrong"))
        assert forged.status_code == 401
        unknown = client.post(
            receiver.url, content=body, headers=headers(body, event_id="e3", shop="x.myshopify.com")
        )
        assert unknown.status_code == 401
        bare = client.post(receiver.url, content=body, headers={"Content-Type": "application/json"})
        assert bare.status_code == 400 and "X-Shopify-Topic" in bare.json()["error"]

        junk = b"{truncated"
        assert client.post(receiver.url, content=junk, headers=headers(junk, event_id="j1")).json() == {
            "status": "quarantined"
        }
    assert (receiver.landing / "_quarantine" / "webhooks" / "j1.json").exists()

    assert receiver.journal.counts() == {"accepted": 1, "stale": 1, "dropped": 1}
    receiver.journal.seal(receiver.landing)
    rows = receiver.sealed_rows()
    assert [r["event_id"] for r in rows] == ["e1"]
    assert rows[0]["topic"] == "customers/update" and rows[0]["payload"]["id"] == 1  # type: ignore[index]


def test_a_burst_with_duplicates_and_reordering_lands_each_event_once(receiver: Receiver) -> None:
    rng = random.Random(7)
    events = [(f"ev-{i}", customer(i, "2026-11-02T09:30:00Z")) for i in range(5000)]
    deliveries = events + rng.sample(events, 1000)  # at-least-once: a fifth delivered twice
    rng.shuffle(deliveries)

    # Plain keep-alive connections on threads: the client must not be the bottleneck of a
    # test that shares one interpreter with the server.
    statuses: list[int] = []

    def send(chunk: list[tuple[str, bytes]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=30)
        for event_id, body in chunk:
            conn.request("POST", "/webhooks", body=body, headers=headers(body, event_id=event_id))
            reply = conn.getresponse()
            reply.read()
            statuses.append(reply.status)
        conn.close()

    threads = [threading.Thread(target=send, args=(deliveries[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses) == {200}
    receiver.journal.seal(receiver.landing)
    ids = [r["event_id"] for r in receiver.sealed_rows()]
    assert len(ids) == 5000 and len(set(ids)) == 5000


def test_seal_after_a_crash_between_claim_and_write_loses_and_doubles_nothing(tmp_path: Path) -> None:
    from pipelines.webhooks.journal import Delivery

    journal = Journal(tmp_path / "j.sqlite")
    for i in range(3):
        body = customer(i, "2026-11-02T09:30:00Z")
        journal.record(Delivery(f"e{i}", SHOP, "customers/update", None, None, body, json.loads(body)))
    # Simulate a crash after the claim was committed but before the batch was written.
    journal._db.execute("UPDATE deliveries SET batch_id = 'claimed-1'")
    journal.close()

    reopened = Journal(tmp_path / "j.sqlite")
    manifests = reopened.seal(tmp_path / "landing")
    assert [m.batch_id for m in manifests] == ["claimed-1"] and manifests[0].rows == 3
    assert reopened.seal(tmp_path / "landing") == []
    reopened.close()


def test_the_split_consent_topics_refetch_the_customer() -> None:
    from pipelines.webhooks.apply import classify

    email = classify("customers_email_marketing_consent/update", {"customer_id": 42})
    sms = classify("customers_marketing_consent/update", {"id": 43, "phone": "+15550000000"})
    assert email == ("refetch", "customers", "gid://shopify/Customer/42")
    assert sms == ("refetch", "customers", "gid://shopify/Customer/43")


def test_privacy_topics_are_taken_for_paused_and_deleted_stores_and_sealed_with_ids_only(
    receiver: Receiver,
) -> None:
    request = json.dumps(
        {
            "shop_id": 1,
            "shop_domain": PAUSED,
            "customer": {"id": 7, "email": "ann@example.com", "phone": "+15550001111"},
            "orders_to_redact": [11, 12],
        }
    ).encode()
    shop_redact = json.dumps({"shop_id": 2, "shop_domain": DELETED}).encode()
    update = customer(3, "2026-11-02T09:30:00Z")
    with httpx.Client(timeout=10) as client:
        sent = {
            "r1": client.post(
                receiver.url,
                content=request,
                headers=headers(request, event_id="r1", topic="customers/redact", shop=PAUSED),
            ),
            "r2": client.post(
                receiver.url,
                content=shop_redact,
                headers=headers(shop_redact, event_id="r2", topic="shop/redact", shop=DELETED),
            ),
            "u1": client.post(
                receiver.url, content=update, headers=headers(update, event_id="u1", shop=DELETED)
            ),
        }
    assert {k: r.json()["status"] for k, r in sent.items()} == {
        "r1": "accepted",
        "r2": "accepted",
        "u1": "dropped",
    }
    receiver.journal.seal(receiver.landing)
    assert receiver.sealed_rows() == []  # nothing for the entity apply step
    rows = [
        json.loads(line)
        for path in sorted((receiver.landing / "_privacy" / "requests").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    by_id = {r["event_id"]: r for r in rows}
    assert set(by_id) == {"r1", "r2"}
    assert by_id["r1"]["shop"] == PAUSED and by_id["r1"]["payload"] == {
        "shop_id": 1,
        "shop_domain": PAUSED,
        "customer": {"id": 7},
        "orders_to_redact": [11, 12],
    }
    assert "ann@example.com" not in json.dumps(rows)


def test_a_slow_secret_lookup_does_not_stall_other_deliveries(tmp_path: Path) -> None:
    slow = "slow-store.myshopify.com"
    release = threading.Event()

    def lookup(shop: str) -> ShopWebhookConfig | None:
        if shop == slow:
            release.wait(30)  # a control database that hangs
        return ShopWebhookConfig((SECRET,))

    r = Receiver(tmp_path, lookup)
    try:
        body = customer(1, "2026-11-02T09:30:00Z")
        stuck: list[int] = []
        waiting = threading.Thread(
            target=lambda: stuck.append(
                httpx.post(
                    r.url, content=body, headers=headers(body, event_id="s1", shop=slow), timeout=60
                ).status_code
            )
        )
        waiting.start()
        time.sleep(0.2)
        # with the lookup on the event loop this would hang until the slow one is released
        other = httpx.post(r.url, content=body, headers=headers(body, event_id="f1"), timeout=5)
        assert other.json() == {"status": "accepted"} and not stuck
        release.set()
        waiting.join(10)
        assert stuck == [200]
    finally:
        release.set()
        r.stop()
