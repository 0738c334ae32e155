"""Helpers for the devstore operations tests: a running devstore, a GraphQL caller, a webhook receiver."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from devstore.server import create_world, start_in_thread
from devstore.state import AppCredentials, ShopState, World

API = "2026-10"


@dataclass
class Store:
    """A devstore served over real HTTP, with one installed app and its token."""

    url: str
    world: World
    shop: ShopState
    token: str
    stop: Callable[[], None]
    app: AppCredentials
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    @property
    def graphql_url(self) -> str:
        """The shop's Admin GraphQL endpoint (path-addressed, no DNS needed)."""
        return f"{self.url}/shops/{self.shop.handle}/admin/api/{API}/graphql.json"

    def gql(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        """POST a GraphQL document and return the JSON body."""
        response = self.http.post(
            self.graphql_url,
            json={"query": query, "variables": variables or {}},
            headers={"X-Shopify-Access-Token": token or self.token},
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def control(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """Call the control API under ``/_devstore``."""
        return self.http.request(method, f"{self.url}/_devstore{path}", json=body)


def start_store(customers: int = 40, seed: int = 3, **app_options: Any) -> Store:
    """A one-shop world with the shopsync app installed, served on a free port."""
    world = create_world(stores=1, customers=customers, seed=seed)
    shop = next(iter(world.shops.values()))
    app = next(iter(shop.apps.values()))
    running = start_in_thread(world, port=0, **app_options)
    return Store(
        url=running.url.rstrip("/"),
        world=world,
        shop=shop,
        token=running.token(shop.handle),
        stop=running.stop,
        app=app,
    )


def customer_gid(shop: ShopState, *, with_email: bool = True, with_phone: bool | None = None) -> str:
    """The gid of some customer matching the contact requirements."""
    with shop.lock:
        for c in sorted(shop.records["customers"].values(), key=lambda r: r["id"]):
            if bool(c.get("email")) != with_email:
                continue
            if with_phone is not None and bool(c.get("phone")) != with_phone:
                continue
            return f"gid://shopify/Customer/{c['id']}"
    raise LookupError("no customer with that contact shape in the generated shop")


def numeric_id(gid: str) -> int:
    """``gid://shopify/Customer/123`` -> 123."""
    return int(gid.rsplit("/", 1)[1].split("?", 1)[0])


def expected_hmac(body: bytes, secret: str) -> str:
    """What X-Shopify-Hmac-Sha256 must be, computed from nothing but the client secret."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


@dataclass
class Received:
    """One webhook POST as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        """The parsed body."""
        return json.loads(self.body)


class Receiver:
    """A tiny HTTP server that records webhook POSTs and answers with scripted statuses."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.statuses: list[int] = []  # answered in order; 200 once exhausted
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.received.append(
                        Received({k: v for k, v in self.headers.items()}, body, time.monotonic())
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """Where to subscribe."""
        return f"http://127.0.0.1:{self.server.server_port}/webhooks"

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Received]:
        """Block until ``n`` POSTs arrived (or fail)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= n:
                    return list(self.received)
            time.sleep(0.01)
        with self._lock:
            raise AssertionError(f"expected {n} webhook POSTs, got {len(self.received)}")

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
