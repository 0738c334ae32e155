"""Webhook delivery: REST-style JSON payloads, HMAC-signed, POSTed from a background thread.

Shops emit topics (``ShopState.emit``); the dispatcher, registered as a listener, renders
the payload Shopify's webhooks send for that topic (numeric ``id``,
``admin_graphql_api_id``, REST field names, timestamps in the shop's time zone) at the
moment of the event, signs it with the subscribing app's client secret and queues one
delivery per matching subscription. A single worker thread POSTs due deliveries with
httpx; failures (non-2xx or connection errors) are retried with exponential backoff.
``time_scale`` multiplies every delay, so tests run the four-hour retry schedule in a second.

Faults (from ``FaultInjector.decide_webhook``): a delivery may be sent twice with the same
``X-Shopify-Webhook-Id``, held back and sent after the shop's next delivery, or delayed.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import threading
import time
import uuid
import weakref
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from devstore.faults import FaultInjector, WebhookFault
from devstore.state import Record, ShopState, World

API_VERSION = "2026-10"
log = logging.getLogger(__name__)

# Topics the devstore emits (the X-Shopify-Topic values).
TOPICS: tuple[str, ...] = (
    "customers/create",
    "customers/update",
    "customers/delete",
    "customers_email_marketing_consent/update",
    "customers_marketing_consent/update",
    "orders/create",
    "orders/updated",
    "orders/delete",
    "products/create",
    "products/update",
    "products/delete",
    "collections/create",
    "collections/update",
    "collections/delete",
    "checkouts/create",
    "checkouts/update",
    "app/uninstalled",
    "bulk_operations/finish",
    "customers/data_request",
    "customers/redact",
    "shop/redact",
)


def sign(body: bytes, secret: str) -> str:
    """``X-Shopify-Hmac-Sha256``: base64 of the HMAC-SHA256 of the raw body keyed with the secret."""
    return base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()).decode("ascii")


def topic_enum(topic: str) -> str:
    """``customers/create`` -> ``CUSTOMERS_CREATE``."""
    return topic.upper().replace("/", "_")


def shop_numeric_id(domain: str) -> int:
    """A stable numeric shop id (the generated world has none) derived from the domain."""
    return int(hashlib.sha256(domain.encode("utf-8")).hexdigest()[:12], 16)


# payload rendering -----------------------------------------------------------------------
def _ts(value: Any, tz: ZoneInfo) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(tz).isoformat(timespec="seconds")
    return str(value)


def _lower(value: Any) -> str | None:
    return None if value is None else str(value).lower()


def _tags(value: Any) -> str:
    return ", ".join(value or [])


def _money_set(amount: Any, currency: Any, presentment: Any, presentment_currency: Any) -> dict[str, Any]:
    return {
        "shop_money": {"amount": amount, "currency_code": currency},
        "presentment_money": {"amount": presentment, "currency_code": presentment_currency},
    }


def _shop_tz(shop: ShopState) -> ZoneInfo:
    try:
        return ZoneInfo(shop.info.get("timezone") or "UTC")
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


def _address(a: Record | None) -> dict[str, Any] | None:
    if a is None:
        return None
    keys = ("id", "customer_id", "first_name", "last_name", "company", "address1", "address2", "city")
    out = {k: a.get(k) for k in keys}
    out.update(
        province=a.get("province"),
        country=a.get("country"),
        zip=a.get("zip"),
        phone=a.get("phone"),
        province_code=a.get("province_code"),
        country_code=a.get("country_code"),
    )
    return out


def render_customer(shop: ShopState, c: Record) -> dict[str, Any]:
    """A customer as the customers/* webhooks send it."""
    tz = _shop_tz(shop)
    addresses = [dict(_address(a) or {}) for a in shop.children["customer_addresses"].get(c["id"], [])]
    for a in addresses:
        a["default"] = a["id"] == c.get("default_address_id")
    default = next((a for a in addresses if a["default"]), None)
    email_consent = (
        None
        if not c.get("email")
        else {
            "state": _lower(c.get("email_consent_state")) or "not_subscribed",
            "opt_in_level": _lower(c.get("email_consent_opt_in_level")),
            "consent_updated_at": _ts(c.get("email_consent_updated_at"), tz),
        }
    )
    sms_consent = (
        None
        if not c.get("phone")
        else {
            "state": _lower(c.get("sms_consent_state")) or "not_subscribed",
            "opt_in_level": _lower(c.get("sms_consent_opt_in_level")),
            "consent_updated_at": _ts(c.get("sms_consent_updated_at"), tz),
            "consent_collected_from": c.get("sms_consent_collected_from") or "OTHER",
        }
    )
    return {
        "id": c["id"],
        "email": c.get("email"),
        "created_at": _ts(c.get("created_at"), tz),
        "updated_at": _ts(c.get("updated_at"), tz),
        "first_name": c.get("first_name"),
        "last_name": c.get("last_name"),
        "state": _lower(c.get("state")) or "disabled",
        "note": c.get("note"),
        "verified_email": bool(c.get("verified_email")),
        "multipass_identifier": None,
        "tax_exempt": bool(c.get("tax_exempt")),
        "phone": c.get("phone"),
        "currency": shop.info.get("currency_code"),
        "tags": _tags(c.get("tags")),
        "addresses": addresses,
        "tax_exemptions": [],
        "email_marketing_consent": email_consent,
        "sms_marketing_consent": sms_consent,
        "admin_graphql_api_id": shop.gid("customers", c["id"]),
        "default_address": default,
    }


def render_order(shop: ShopState, o: Record) -> dict[str, Any]:
    """An order as the orders/* webhooks send it."""
    tz = _shop_tz(shop)
    cur, pcur = o.get("currency_code"), o.get("presentment_currency_code")
    line_items = []
    for li in shop.children["order_line_items"].get(o["id"], []):
        line_items.append(
            {
                "id": li["id"],
                "admin_graphql_api_id": f"gid://shopify/LineItem/{li['id']}",
                "product_id": li.get("product_id"),
                "variant_id": li.get("variant_id"),
                "title": li.get("title"),
                "sku": li.get("sku"),
                "quantity": li.get("quantity"),
                "price": li.get("original_unit_price"),
                "price_set": _money_set(
                    li.get("original_unit_price"), cur, li.get("original_unit_price_presentment"), pcur
                ),
            }
        )
    customer = shop.records["customers"].get(o.get("customer_id")) if o.get("customer_id") else None
    refunds = [
        {
            "id": r["id"],
            "admin_graphql_api_id": f"gid://shopify/Refund/{r['id']}",
            "created_at": _ts(r.get("created_at"), tz),
            "note": r.get("note"),
            "order_id": o["id"],
        }
        for r in shop.children["refunds"].get(o["id"], [])
    ]
    return {
        "id": o["id"],
        "admin_graphql_api_id": shop.gid("orders", o["id"]),
        "name": o.get("name"),
        "email": o.get("email"),
        "phone": o.get("phone"),
        "test": bool(o.get("test")),
        "created_at": _ts(o.get("created_at"), tz),
        "updated_at": _ts(o.get("updated_at"), tz),
        "processed_at": _ts(o.get("processed_at"), tz),
        "cancelled_at": _ts(o.get("cancelled_at"), tz),
        "cancel_reason": _lower(o.get("cancel_reason")),
        "closed_at": _ts(o.get("closed_at"), tz),
        "currency": cur,
        "presentment_currency": pcur,
        "subtotal_price": o.get("subtotal_price"),
        "total_price": o.get("total_price"),
        "total_tax": o.get("total_tax"),
        "total_discounts": o.get("total_discounts"),
        "total_price_set": _money_set(o.get("total_price"), cur, o.get("total_price_presentment"), pcur),
        "subtotal_price_set": _money_set(
            o.get("subtotal_price"), cur, o.get("subtotal_price_presentment"), pcur
        ),
        "total_tax_set": _money_set(o.get("total_tax"), cur, o.get("total_tax_presentment"), pcur),
        "total_discounts_set": _money_set(
            o.get("total_discounts"), cur, o.get("total_discounts_presentment"), pcur
        ),
        "total_shipping_price_set": _money_set(
            o.get("total_shipping_price"), cur, o.get("total_shipping_price_presentment"), pcur
        ),
        "financial_status": _lower(o.get("financial_status")),
        "fulfillment_status": None
        if (o.get("fulfillment_status") or "UNFULFILLED") == "UNFULFILLED"
        else _lower(o.get("fulfillment_status")),
        "source_name": o.get("source_name"),
        "tags": _tags(o.get("tags")),
        "customer": None
        if customer is None
        else {
            "id": customer["id"],
            "email": customer.get("email"),
            "phone": customer.get("phone"),
            "first_name": customer.get("first_name"),
            "last_name": customer.get("last_name"),
            "admin_graphql_api_id": shop.gid("customers", customer["id"]),
        },
        "billing_address": None
        if not o.get("billing_address1") and not o.get("billing_last_name")
        else {
            "first_name": o.get("billing_first_name"),
            "last_name": o.get("billing_last_name"),
            "address1": o.get("billing_address1"),
            "address2": o.get("billing_address2"),
            "city": o.get("billing_city"),
            "province": o.get("billing_province"),
            "zip": o.get("billing_zip"),
            "country_code": o.get("billing_country_code"),
            "phone": o.get("billing_phone"),
        },
        "line_items": line_items,
        "refunds": refunds,
    }


def render_product(shop: ShopState, p: Record) -> dict[str, Any]:
    """A product as the products/* webhooks send it."""
    tz = _shop_tz(shop)
    variants = [
        {
            "id": v["id"],
            "admin_graphql_api_id": f"gid://shopify/ProductVariant/{v['id']}",
            "product_id": p["id"],
            "title": v.get("title"),
            "sku": v.get("sku"),
            "price": v.get("price"),
            "inventory_quantity": v.get("inventory_quantity"),
            "created_at": _ts(v.get("created_at"), tz),
            "updated_at": _ts(v.get("updated_at"), tz),
        }
        for v in shop.children["variants"].get(p["id"], [])
    ]
    return {
        "id": p["id"],
        "admin_graphql_api_id": shop.gid("products", p["id"]),
        "title": p.get("title"),
        "handle": p.get("handle"),
        "product_type": p.get("product_type"),
        "vendor": p.get("vendor"),
        "status": _lower(p.get("status")),
        "tags": _tags(p.get("tags")),
        "created_at": _ts(p.get("created_at"), tz),
        "updated_at": _ts(p.get("updated_at"), tz),
        "variants": variants,
    }


def render_collection(shop: ShopState, c: Record) -> dict[str, Any]:
    """A collection as the collections/* webhooks send it."""
    tz = _shop_tz(shop)
    return {
        "id": c["id"],
        "admin_graphql_api_id": shop.gid("collections", c["id"]),
        "title": c.get("title"),
        "handle": c.get("handle"),
        "sort_order": (c.get("sort_order") or "manual").lower().replace("_", "-"),
        "updated_at": _ts(c.get("updated_at"), tz),
        "published_scope": "web",
    }


def render_checkout(shop: ShopState, ch: Record) -> dict[str, Any]:
    """An abandoned checkout as the checkouts/* webhooks send it."""
    tz = _shop_tz(shop)
    customer = shop.records["customers"].get(ch.get("customer_id")) if ch.get("customer_id") else None
    return {
        "id": ch["id"],
        "token": hashlib.md5(str(ch["id"]).encode(), usedforsecurity=False).hexdigest(),
        "email": ch.get("email"),
        "phone": ch.get("phone"),
        "created_at": _ts(ch.get("created_at"), tz),
        "updated_at": _ts(ch.get("updated_at"), tz),
        "completed_at": _ts(ch.get("completed_at"), tz),
        "currency": ch.get("currency_code"),
        "presentment_currency": ch.get("currency_code"),
        "total_price": ch.get("total_price"),
        "abandoned_checkout_url": ch.get("abandoned_checkout_url"),
        "customer": None
        if customer is None
        else {"id": customer["id"], "email": customer.get("email"), "phone": customer.get("phone")},
        "billing_address": {
            "first_name": ch.get("billing_first_name"),
            "last_name": ch.get("billing_last_name"),
            "address1": ch.get("billing_address1"),
            "city": ch.get("billing_city"),
            "zip": ch.get("billing_zip"),
            "country_code": ch.get("billing_country_code"),
        },
        "line_items": [
            {
                "product_id": li.get("product_id"),
                "variant_id": li.get("variant_id"),
                "title": li.get("title"),
                "quantity": li.get("quantity"),
                "price": li.get("original_unit_price"),
            }
            for li in shop.children["checkout_line_items"].get(ch["id"], [])
        ],
    }


def render_shop(shop: ShopState) -> dict[str, Any]:
    """The shop, as app/uninstalled sends it."""
    info = shop.info
    return {
        "id": shop_numeric_id(shop.domain),
        "name": info.get("name"),
        "email": info.get("email"),
        "domain": info.get("primary_domain") or shop.domain,
        "myshopify_domain": shop.domain,
        "country_code": info.get("country_code"),
        "currency": info.get("currency_code"),
        "iana_timezone": info.get("timezone"),
        "plan_name": info.get("plan"),
    }


_RENDERERS = {
    "customers": render_customer,
    "orders": render_order,
    "products": render_product,
    "collections": render_collection,
    "checkouts": render_checkout,
}


def render_payload(shop: ShopState, topic: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The JSON body Shopify sends for ``topic``, from what the shop emitted.

    Entity topics receive the internal record; ``*/delete`` sends only the id; the
    compliance topics and bulk_operations/finish are emitted already in their final shape.
    """
    resource, _, action = topic.partition("/")
    tz = _shop_tz(shop)
    if topic == "app/uninstalled":
        return render_shop(shop)
    if topic == "customers_email_marketing_consent/update":
        return {
            "customer_id": payload["id"],
            "email_address": payload.get("email"),
            "email_marketing_consent": {
                "state": _lower(payload.get("email_consent_state")),
                "opt_in_level": _lower(payload.get("email_consent_opt_in_level")),
                "consent_updated_at": _ts(payload.get("email_consent_updated_at"), tz),
            },
        }
    if topic == "customers_marketing_consent/update":
        return {
            "id": payload["id"],
            "phone": payload.get("phone"),
            "sms_marketing_consent": {
                "state": _lower(payload.get("sms_consent_state")),
                "opt_in_level": _lower(payload.get("sms_consent_opt_in_level")),
                "consent_updated_at": _ts(payload.get("sms_consent_updated_at"), tz),
                "consent_collected_from": payload.get("sms_consent_collected_from") or "OTHER",
            },
        }
    if action == "delete" and resource in _RENDERERS:
        return {"id": payload["id"]}
    renderer = _RENDERERS.get(resource)
    if renderer is not None and "id" in payload:
        return renderer(shop, payload)
    # compliance topics, bulk_operations/finish: already shaped by the emitter
    return json.loads(json.dumps(payload, default=str))


# delivery --------------------------------------------------------------------------------
@dataclass
class Delivery:
    """One POST of one event to one subscription (retries reuse it)."""

    shop: str
    topic: str
    subscription_id: int
    uri: str
    secret: str
    body: bytes
    webhook_id: str
    event_id: str
    triggered_at: str
    attempt: int = 0
    duplicate: bool = False
    due: float = 0.0

    def headers(self) -> dict[str, str]:
        """Shopify's webhook headers, signed over the exact body bytes."""
        return {
            "Content-Type": "application/json",
            "User-Agent": "Shopify-Captain-Hook",
            "X-Shopify-Topic": self.topic,
            "X-Shopify-Hmac-Sha256": sign(self.body, self.secret),
            "X-Shopify-Shop-Domain": self.shop,
            "X-Shopify-API-Version": API_VERSION,
            "X-Shopify-Webhook-Id": self.webhook_id,
            "X-Shopify-Event-Id": self.event_id,
            "X-Shopify-Triggered-At": self.triggered_at,
        }


@dataclass
class DeliveryRecord:
    """What happened to one attempt, for the control API and tests."""

    shop: str
    topic: str
    subscription_id: int
    uri: str
    webhook_id: str
    event_id: str
    attempt: int
    status: int | None
    error: str | None
    ok: bool
    duplicate: bool
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


class WebhookDispatcher:
    """Delivers webhook topics emitted by shops, from one background thread."""

    def __init__(
        self,
        world: World,
        *,
        time_scale: float = 1.0,
        faults: FaultInjector | None = None,
        retry_base: float = 60.0,
        max_attempts: int = 9,
        timeout: float = 5.0,
        reorder_window: float = 1.0,
        remove_failing_subscriptions: bool = True,
    ) -> None:
        self.world = world
        self.time_scale = time_scale
        self.faults = faults
        # Shopify retries 8 times over about four hours: gaps of retry_base * 2**n seconds
        # (1, 2, 4 ... 128 minutes by default), multiplied by time_scale.
        self.retry_base = retry_base
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.reorder_window = reorder_window
        # Shopify deletes an Admin-API subscription whose delivery failed every attempt
        self.remove_failing_subscriptions = remove_failing_subscriptions
        # bounded so a long-running devstore does not grow without limit
        self.deliveries: deque[DeliveryRecord] = deque(maxlen=100_000)
        self._heap: list[tuple[float, int, Delivery]] = []
        self._held: dict[str, tuple[Delivery, float]] = {}
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._attached: list[ShopState] = []

    # lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Register with every shop of the world and start the delivery thread."""
        with self.world.lock:
            shops = list(self.world.shops.values())
        for shop in shops:
            self.attach(shop)
        with _DISPATCHERS_LOCK:
            _DISPATCHERS[self.world] = self
        if self._thread is None:
            self._stopped.clear()
            self._thread = threading.Thread(target=self._run, name="devstore-webhooks", daemon=True)
            self._thread.start()

    def attach(self, shop: ShopState) -> None:
        """Listen to a shop (one added after ``start`` must be attached explicitly)."""
        if self._on_event not in shop.listeners:
            shop.listeners.append(self._on_event)
            self._attached.append(shop)

    def stop(self) -> None:
        """Unregister from the shops and stop the thread; queued deliveries are dropped."""
        for shop in self._attached:
            if self._on_event in shop.listeners:
                shop.listeners.remove(self._on_event)
        self._attached.clear()
        with _DISPATCHERS_LOCK:
            if _DISPATCHERS.get(self.world) is self:
                del _DISPATCHERS[self.world]
        self._stopped.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 2)
            self._thread = None

    def pending(self) -> int:
        """Deliveries queued, held back or being sent."""
        with self._cond:
            return len(self._heap) + len(self._held) + self._in_flight

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is pending (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pending() == 0:
                return True
            time.sleep(0.01)
        return self.pending() == 0

    def records(self, shop: str | None = None, topic: str | None = None) -> list[DeliveryRecord]:
        """Delivery attempts so far, optionally for one shop (domain or handle) and topic."""
        with self._cond:
            out = list(self.deliveries)
        if shop:
            domain = shop if shop.endswith(".myshopify.com") else f"{shop}.myshopify.com"
            out = [r for r in out if r.shop == domain]
        if topic:
            out = [r for r in out if r.topic == topic]
        return out

    # events --------------------------------------------------------------------------
    def _on_event(self, shop: ShopState, topic: str, payload: dict[str, Any]) -> None:
        with shop.lock:
            subs = [s for s in shop.webhook_subscriptions.values() if s["topic"] == topic_enum(topic)]
            if not subs:
                return
            # rendered now, so the payload shows the record as it was at the event
            body_obj = render_payload(shop, topic, payload)
        event_id = str(uuid.uuid4())
        triggered_at = shop.clock.now().isoformat().replace("+00:00", "Z")
        for sub in subs:
            secret = self._secret_for(shop, sub)
            if secret is None:
                log.warning(
                    "webhook for %s on %s not sent: no app secret for the subscription", topic, shop.domain
                )
                continue
            obj = body_obj
            if sub.get("include_fields"):
                obj = {k: v for k, v in body_obj.items() if k in sub["include_fields"]}
            delivery = Delivery(
                shop=shop.domain,
                topic=topic,
                subscription_id=sub["id"],
                uri=sub["uri"],
                secret=secret,
                body=json.dumps(obj, default=str).encode("utf-8"),
                webhook_id=str(uuid.uuid4()),
                event_id=event_id,
                triggered_at=triggered_at,
            )
            fault = self.faults.decide_webhook(shop.handle) if self.faults is not None else WebhookFault()
            self._enqueue(delivery, fault)

    @staticmethod
    def _secret_for(shop: ShopState, sub: Record) -> str | None:
        app = shop.apps.get(sub.get("client_id") or "")
        if app is None and len(shop.apps) == 1:
            app = next(iter(shop.apps.values()))
        return None if app is None else app.client_secret

    def _enqueue(self, delivery: Delivery, fault: WebhookFault) -> None:
        now = time.monotonic()
        delivery.due = now + fault.late_delay * self.time_scale
        with self._cond:
            held = self._held.pop(delivery.shop, None)
            if fault.reorder:
                # held back until the shop's next delivery is queued (or the window passes)
                self._held[delivery.shop] = (delivery, now)
            else:
                self._push(delivery)
            if fault.duplicate:
                self._push(_copy(delivery, duplicate=True))
            if held is not None:
                held[0].due = max(held[0].due, delivery.due)
                self._push(held[0])
            self._cond.notify_all()

    def _push(self, delivery: Delivery) -> None:
        heapq.heappush(self._heap, (delivery.due, next(self._seq), delivery))

    # worker --------------------------------------------------------------------------
    def _run(self) -> None:
        # Shopify allows one second to connect and five in all
        with httpx.Client(timeout=httpx.Timeout(self.timeout, connect=min(1.0, self.timeout))) as client:
            while not self._stopped.is_set():
                delivery = self._next_due()
                if delivery is None:
                    continue
                try:
                    self._send(client, delivery)
                finally:
                    with self._cond:
                        self._in_flight -= 1

    def _next_due(self) -> Delivery | None:
        with self._cond:
            now = time.monotonic()
            for shop, (held, since) in list(self._held.items()):
                # nothing followed within the window: send it anyway, late rather than lost
                if now - since >= self.reorder_window:
                    del self._held[shop]
                    held.due = now
                    self._push(held)
            if self._heap and self._heap[0][0] <= now:
                _, _, delivery = heapq.heappop(self._heap)
                self._in_flight += 1
                return delivery
            wait = 0.05 if not self._heap else min(0.05, self._heap[0][0] - now)
            self._cond.wait(timeout=max(wait, 0.001))
            return None

    def _send(self, client: httpx.Client, delivery: Delivery) -> None:
        delivery.attempt += 1
        status: int | None = None
        error: str | None = None
        if not delivery.uri.startswith(("http://", "https://")):
            error = "only http(s) endpoints are delivered by the devstore"
        else:
            try:
                response = client.post(delivery.uri, content=delivery.body, headers=delivery.headers())
                status = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
        ok = status is not None and 200 <= status < 300
        record = DeliveryRecord(
            shop=delivery.shop,
            topic=delivery.topic,
            subscription_id=delivery.subscription_id,
            uri=delivery.uri,
            webhook_id=delivery.webhook_id,
            event_id=delivery.event_id,
            attempt=delivery.attempt,
            status=status,
            error=error,
            ok=ok,
            duplicate=delivery.duplicate,
        )
        gave_up = False
        with self._cond:
            self.deliveries.append(record)
            if not ok and delivery.uri.startswith(("http://", "https://")):
                if delivery.attempt < self.max_attempts:
                    delay = self.retry_base * (2 ** (delivery.attempt - 1)) * self.time_scale
                    delivery.due = time.monotonic() + delay
                    self._push(delivery)
                    self._cond.notify_all()
                else:
                    gave_up = True
        if gave_up and self.remove_failing_subscriptions:
            self._remove_subscription(delivery)

    def _remove_subscription(self, delivery: Delivery) -> None:
        shop = self.world.shop(delivery.shop)
        if shop is None:
            return
        with shop.lock:
            sub = shop.webhook_subscriptions.get(delivery.subscription_id)
            if sub is None or sub.get("source") == "control":
                return
            del shop.webhook_subscriptions[delivery.subscription_id]
            shop.log_write(
                "webhook.subscription_removed",
                f"gid://shopify/WebhookSubscription/{delivery.subscription_id}",
                {"topic": delivery.topic, "uri": delivery.uri, "attempts": delivery.attempt},
                outcome="delivery_failed",
            )


_DISPATCHERS: weakref.WeakKeyDictionary[World, WebhookDispatcher] = weakref.WeakKeyDictionary()
_DISPATCHERS_LOCK = threading.Lock()


def dispatcher_for(world: World) -> WebhookDispatcher | None:
    """The running dispatcher of ``world`` (the last one started), if any."""
    with _DISPATCHERS_LOCK:
        return _DISPATCHERS.get(world)


def _copy(delivery: Delivery, *, duplicate: bool) -> Delivery:
    return Delivery(**{**delivery.__dict__, "duplicate": duplicate})
