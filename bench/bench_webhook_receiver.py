"""Webhook receiver throughput and latency under a local load of signed deliveries.

Starts the receiver (verify + group-committed durable journal) in its own process, and a
reference server in another: the same Starlette/uvicorn stack answering 200 without doing
anything. Both get the same signed deliveries from client threads in this process. Prints
requests per second, client-side p50/p99 latency, and our throughput as a share of the
reference's. Goal (issue): p99 <= 50 ms.

    .venv/bin/python bench/bench_webhook_receiver.py [--quick] [--requests N] [--threads T]
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.webhooks.verify import sign  # noqa: E402

SECRET = "shpss_bench_secret"
SHOP = "bench-store.myshopify.com"

SERVER = """
import sys, uvicorn
from pathlib import Path
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
kind, port, data, shop, secret = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5]
if kind == "reference":
    async def ok(request):
        await request.body()
        return JSONResponse({"status": "ok"})
    app = Starlette(routes=[Route("/webhooks", ok, methods=["POST"])])
else:
    from pipelines.webhooks.journal import Journal
    from pipelines.webhooks.receiver import ShopWebhookConfig, create_receiver
    shops = {shop: ShopWebhookConfig((secret,))}
    app = create_receiver(Journal(data / "journal.sqlite"), shops.get, landing_root=data / "landing")
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(kind: str, data: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, kind, str(port), str(data), SHOP, SECRET], cwd=ROOT
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


def load(port: int, requests: int, threads: int, prefix: str) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        for i in range(offset, requests, threads):
            body = json.dumps(
                {
                    "id": i,
                    "admin_graphql_api_id": f"gid://shopify/Customer/{i}",
                    "updated_at": "2026-11-02T09:30:00Z",
                    "email": f"c{i}@example.com",
                }
            ).encode()
            headers = {
                "Content-Type": "application/json",
                "X-Shopify-Hmac-Sha256": sign(body, SECRET),
                "X-Shopify-Topic": "customers/update",
                "X-Shopify-Shop-Domain": SHOP,
                "X-Shopify-Event-Id": f"{prefix}-{i}",
                "X-Shopify-Triggered-At": "2026-11-02T09:30:00Z",
            }
            started = time.perf_counter()
            conn.request("POST", "/webhooks", body=body, headers=headers)
            reply = conn.getresponse()
            reply.read()
            mine.append((time.perf_counter() - started) * 1000)
            if reply.status != 200:
                raise RuntimeError(f"unexpected status {reply.status}")
        conn.close()
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return requests / (time.perf_counter() - started), sorted(latencies)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000 requests instead of 10,000")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    requests = args.requests or (1_000 if args.quick else 10_000)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("reference", "receiver"):
            proc, port = start(kind, Path(tmp))
            try:
                load(port, min(200, requests), args.threads, f"warm-{kind}")  # warm up
                results[kind] = load(port, requests, args.threads, kind)
            finally:
                proc.terminate()
                proc.wait(10)
    for kind, (rps, lat) in results.items():
        print(f"{kind:9s}  {rps:8.0f} req/s   p50 {pct(lat, 0.5):6.1f} ms   p99 {pct(lat, 0.99):6.1f} ms")
    ours, ref = results["receiver"][0], results["reference"][0]
    p99 = pct(results["receiver"][1], 0.99)
    print(
        f"receiver throughput / bare-server throughput = {ours / ref:.2f}; "
        f"receiver p99 {p99:.1f} ms (goal <= 50 ms: {'met' if p99 <= 50 else 'NOT met'}); "
        f"{requests} signed deliveries, {args.threads} client threads"
    )


if __name__ == "__main__":
    main()
