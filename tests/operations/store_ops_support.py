"""Shared pieces of the store-operations tests: a devstore, the receiver, two connected shops.

The world has two shops whose customers overlap (so some contacts span both stores).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import uvicorn
from click.testing import CliRunner

from devstore.server import RunningDevstore, create_world, start_in_thread
from orchestration.cli import cli
from orchestration.commands.webhooks import registry_lookup
from orchestration.control import ControlSettings, StoreRegistry
from pipelines.webhooks.journal import Journal
from pipelines.webhooks.receiver import create_receiver

PRIVACY_TOPICS = ("customers/data_request", "customers/redact", "shop/redact")

WORLD = {"stores": 2, "customers": 20, "seed": 5}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_devstore() -> RunningDevstore:
    # Same seed, same world and tokens: a fresh devstore matches the synced template.
    return start_in_thread(create_world(**WORLD), webhooks=True, webhook_time_scale=0.001)


class Receiver:
    """``shopsync webhooks serve``'s app in a thread, with secrets from the registry."""

    def __init__(self, registry: StoreRegistry, data_dir: Path) -> None:
        self.journal = Journal(data_dir / "webhooks" / "journal.db")
        app = create_receiver(
            self.journal,
            registry_lookup(registry, ttl_s=0.0),
            landing_root=data_dir / "landing",
            seal_interval=0.1,
        )
        port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}/webhooks"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.journal.close()


class Ops:
    """A devstore with two shops, both connected (webhooks subscribed) and synced."""

    def __init__(self, store: RunningDevstore, data_dir: Path, *, connect: bool = True) -> None:
        self.store = store
        self.data_dir = data_dir
        self.registry = StoreRegistry(ControlSettings(data_dir=data_dir))
        self.receiver = Receiver(self.registry, data_dir)
        self.runner = CliRunner()
        self.shops = store.shops
        if not connect:
            return
        for shop in self.shops:
            result = self.cli(
                "stores",
                "connect",
                shop["domain"],
                "--token",
                shop["access_token"],
                "--base-url",
                shop["base_url"],
                "--client-secret",
                shop["client_secret"],
                "--webhook-url",
                self.receiver.url,
            )
            assert result.exit_code == 0, result.output
            assert "Subscribed" in result.output and shop["client_secret"] not in result.output

    def cli(self, *args: str, input: str | None = None) -> Any:
        return self.runner.invoke(cli, [*args, "--data-dir", str(self.data_dir)], input=input)

    def handle(self, i: int) -> str:
        return str(self.shops[i]["domain"]).removesuffix(".myshopify.com")

    def control(self, method: str, path: str, body: Any = None) -> httpx.Response:
        response = httpx.request(method, f"{self.store.url}/_devstore{path}", json=body, timeout=10)
        assert response.status_code < 300, response.text
        return response

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(self.data_dir / "warehouse.duckdb"), read_only=True)
        try:
            return con.execute(query, list(params)).fetchall()
        finally:
            con.close()

    def wait_webhooks(self, shop: str, topic: str, n: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``n`` deliveries of ``topic`` reached the receiver, then for the seal."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = httpx.get(
                f"{self.store.url}/_devstore/webhooks/deliveries",
                params={"shop": shop, "topic": topic},
                timeout=5,
            ).json()
            if sum(1 for r in records if r.get("ok")) >= n:
                break
            time.sleep(0.05)
        time.sleep(0.4)  # the receiver seals every 0.1 s

    def close(self) -> None:
        self.receiver.stop()
        self.registry.close()


def subscribe_privacy_topics(ops: Ops) -> None:
    """Point the compliance webhooks at the receiver (a real app sets them in its configuration)."""
    for i in range(len(ops.shops)):
        for topic in PRIVACY_TOPICS:
            ops.control("POST", f"/shops/{ops.handle(i)}/webhooks", {"topic": topic, "uri": ops.receiver.url})


def customer_rows(ops: Ops, shop: str) -> int:
    """Live customers of ``shop`` in the warehouse."""
    return ops.sql("SELECT count(*) FROM shopify.customers WHERE shop = ? AND _deleted_at IS NULL", shop)[0][
        0
    ]
