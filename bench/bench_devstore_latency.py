"""Devstore page latency against the pacing Shopify's standard plan imposes.

Pages through a shop's customers 250 at a time over real HTTP (the query below costs
2 + 250 x 3 = 752 requested points, inside the 1000-point single-query limit) and prints
p50/p95 latency per page next to the seconds per page the standard plan's restore rate
allows (actual page cost / 100 points per second). A ratio well above 1 means the emulator
is never what limits a sync's speed in tests; the rate limit is.

    .venv/bin/python bench/bench_devstore_latency.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import httpx

from devstore.cost import CostLimiter
from devstore.server import create_world, start_in_thread

PAGE_QUERY = """query Page($after: String) {
  customers(first: 250, after: $after, sortKey: UPDATED_AT) {
    pageInfo { hasNextPage endCursor }
    edges { cursor node {
      id legacyResourceId firstName lastName displayName tags note state verifiedEmail taxExempt locale
      numberOfOrders createdAt updatedAt
      defaultEmailAddress { emailAddress marketingState marketingOptInLevel marketingUpdatedAt }
      defaultPhoneNumber { phoneNumber }
    } }
  }
}"""
STANDARD_RESTORE_RATE = 100.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    """Run the benchmark and print figures and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small world, few pages")
    args = parser.parse_args()
    customers = 1500 if args.quick else 10000
    rounds = 1 if args.quick else 3
    started = time.perf_counter()
    world = create_world(stores=1, customers=customers, seed=1, plan="standard")
    print(f"world: {customers} customers generated in {time.perf_counter() - started:.2f} s")
    # an unlimited bucket, so the emulator's own speed is measured, not the throttle
    unlimited = CostLimiter(limits={"standard": (1e12, 1e12)})
    running = start_in_thread(world, webhooks=False, limiter=unlimited)
    gc.freeze()  # as ``devstore.server.serve`` does: keep full collections off the world's objects
    try:
        entry = running.shops[0]
        url = running.graphql_url(entry["domain"])
        latencies: list[float] = []
        costs: list[int] = []
        requested = 0
        with httpx.Client(headers={"X-Shopify-Access-Token": entry["access_token"]}, timeout=30) as client:
            client.post(url, json={"query": "{ shop { name } }"})  # warm the connection
            for _ in range(rounds):
                after = None
                while True:
                    t0 = time.perf_counter()
                    response = client.post(url, json={"query": PAGE_QUERY, "variables": {"after": after}})
                    latencies.append(time.perf_counter() - t0)
                    body = response.json()
                    if "errors" in body:
                        raise SystemExit(f"query failed: {body['errors']}")
                    cost = body["extensions"]["cost"]
                    requested = cost["requestedQueryCost"]
                    costs.append(cost["actualQueryCost"])
                    page = body["data"]["customers"]
                    if not page["pageInfo"]["hasNextPage"]:
                        break
                    after = page["pageInfo"]["endCursor"]
    finally:
        running.stop()
    p50 = statistics.median(latencies)
    p95 = _percentile(latencies, 0.95)
    pacing = statistics.median(costs) / STANDARD_RESTORE_RATE
    print(
        f"pages: {len(latencies)} of 250 customers; requested cost {requested}, median actual cost {statistics.median(costs):.0f}"
    )
    print(f"devstore page latency: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms")
    print(
        f"standard-plan pacing (actual cost / {STANDARD_RESTORE_RATE:.0f} points/s): {pacing:.2f} s per page"
    )
    print(f"ratio pacing / p50 latency: {pacing / p50:.1f}x   (pacing / p95: {pacing / p95:.1f}x)")


if __name__ == "__main__":
    main()
