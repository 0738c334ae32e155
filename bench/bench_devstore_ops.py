"""Devstore operations: bulk export and webhook delivery throughput, against references in the same run.

Run ``.venv/bin/python bench/bench_devstore_ops.py [--quick]``. Prints:

- bulk export: objects per second from ``bulkOperationRunQuery`` to the downloaded JSONL, and
  the same data read with paged GraphQL queries (10 customers per page with up to 50 orders each, to stay under the 1000-point query cost) —
  the way a client would read it without bulk — as the reference;
- webhook delivery: signed deliveries per second from the dispatcher to a local receiver,
  against plain sequential httpx POSTs of the same bodies to the same receiver (the floor
  any single-connection sender pays).
"""

from __future__ import annotations

import argparse
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from devstore.mutations import create_webhook_subscription
from devstore.server import create_world, start_in_thread
from devstore.webhooks import dispatcher_for

BULK_QUERY = (
    "{ customers { edges { node { id email updatedAt tags "
    "orders { edges { node { id name processedAt } } } } } } }"
)
PAGED_QUERY = """query($after: String) { customers(first: 10, after: $after) {
  pageInfo { hasNextPage endCursor }
  edges { node { id email updatedAt tags orders(first: 50) { edges { node { id name processedAt } } } } } } }"""


class _Sink:
    """A local HTTP receiver answering 200 to every POST and counting them."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with sink._lock:
                    sink.count += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


def bench_bulk(client: httpx.Client, url: str) -> tuple[int, float, float]:
    """(objects, bulk seconds, paged seconds)."""
    started = time.perf_counter()
    run = client.post(
        url,
        json={
            "query": "mutation($q: String!) { bulkOperationRunQuery(query: $q, groupObjects: false)"
            " { bulkOperation { id } userErrors { message } } }",
            "variables": {"q": BULK_QUERY},
        },
    ).json()
    assert run["data"]["bulkOperationRunQuery"]["userErrors"] == [], run
    while True:
        op = client.post(url, json={"query": "{ currentBulkOperation { status objectCount url } }"}).json()[
            "data"
        ]["currentBulkOperation"]
        if op["status"] == "COMPLETED":
            break
        time.sleep(0.02)
    lines = httpx.get(op["url"], timeout=120).text.count("\n")
    bulk_s = time.perf_counter() - started

    started = time.perf_counter()
    after = None
    paged_objects = 0
    while True:
        body = client.post(url, json={"query": PAGED_QUERY, "variables": {"after": after}}).json()
        if body.get("data") is None:
            codes = {e.get("extensions", {}).get("code") for e in body.get("errors", [])}
            if codes != {"THROTTLED"}:
                raise RuntimeError(f"paged reference query failed: {body['errors']}")
            time.sleep(0.2)  # throttled: wait for the bucket like a real client
            continue
        page = body["data"]["customers"]
        for edge in page["edges"]:
            paged_objects += 1 + len(edge["node"]["orders"]["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    paged_s = time.perf_counter() - started
    assert paged_objects == lines, (paged_objects, lines)
    return lines, bulk_s, paged_s


def bench_webhooks(world: Any, shop: Any, events: int) -> tuple[float, float]:
    """(dispatcher seconds, plain-POST seconds) for ``events`` deliveries."""
    sink = _Sink()
    app = next(iter(shop.apps.values()))
    create_webhook_subscription(shop, "CUSTOMERS_UPDATE", sink.url, client_id=app.client_id)
    dispatcher = dispatcher_for(world)
    assert dispatcher is not None
    ids = sorted(shop.records["customers"])[:events]
    started = time.perf_counter()
    for i, customer_id in enumerate(ids):
        shop.update_record(
            "customers", customer_id, {"note": f"bench {i}"}, operation="bench", topics=("customers/update",)
        )
    assert dispatcher.wait_idle(300)
    ours = time.perf_counter() - started
    bodies = [b"{" + b'"id": %d, "note": "bench"' % i + b"}" for i in ids]
    before = sink.count
    started = time.perf_counter()
    with httpx.Client(timeout=10) as plain:
        for body in bodies:
            plain.post(sink.url, content=body, headers={"Content-Type": "application/json"})
    reference = time.perf_counter() - started
    assert sink.count - before == len(bodies)
    return ours, reference


def main() -> None:
    """Run both benchmarks and print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (seconds)")
    args = parser.parse_args()
    customers, events = (400, 200) if args.quick else (5000, 2000)
    world = create_world(stores=1, customers=customers, seed=1, plan="plus")
    shop = next(iter(world.shops.values()))
    running = start_in_thread(world, port=0, webhook_time_scale=1.0)
    try:
        client = httpx.Client(timeout=120, headers={"X-Shopify-Access-Token": running.token(shop.handle)})
        url = running.graphql_url(shop.handle)
        objects, bulk_s, paged_s = bench_bulk(client, url)
        print(
            f"bulk export   {objects:>7} objects  bulk {bulk_s:6.2f} s ({objects / bulk_s:8.0f}/s)"
            f"  paged reference {paged_s:6.2f} s ({objects / paged_s:8.0f}/s)  ratio paged/bulk {paged_s / bulk_s:5.2f}x"
        )
        ours, reference = bench_webhooks(world, shop, events)
        print(
            f"webhooks      {events:>7} deliveries  dispatcher {ours:6.2f} s ({events / ours:6.0f}/s)"
            f"  plain POST reference {reference:6.2f} s ({events / reference:6.0f}/s)  ratio {ours / reference:5.2f}x"
        )
    finally:
        running.stop()


if __name__ == "__main__":
    main()
