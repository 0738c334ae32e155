"""How well the Shopify client uses the rate limit, and how cheap an incremental sync is.

Runs a devstore (standard plan: bucket 2000 points, restoring 100 points/s) with one shop of
N customers, then, with shopsync's own client and fetcher:

1. a paged (incremental-mode) read of every customer from an empty cursor ("full");
2. a change to 1% of the customers;
3. an incremental read of what changed, starting from a rested bucket.

Prints points spent per second ÷ the shop's restore rate (goal ≥ 0.9; the reference is the
restore rate Shopify reports in the same run), the THROTTLED share of requests (goal ≤ 1%),
and incremental time ÷ full time (goal ≤ 0.1).

    .venv/bin/python bench/bench_api_efficiency.py            # 20,000 customers (~35 min at 100 points/s)
    .venv/bin/python bench/bench_api_efficiency.py --quick    # 1,500 customers (~2 min)
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devstore.server import create_world, start_in_thread  # noqa: E402
from pipelines.shopify import ShopifyClient, fetch_entity  # noqa: E402
from pipelines.shopify import documents as docs  # noqa: E402


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,500 customers instead of 20,000")
    parser.add_argument("--customers", type=int, default=None)
    parser.add_argument(
        "--changed", type=float, default=0.01, help="share of customers changed (default 1%%)"
    )
    args = parser.parse_args()
    customers = args.customers or (1_500 if args.quick else 20_000)

    started = time.monotonic()
    world = create_world(stores=1, customers=customers, seed=7, plan="standard")
    running = start_in_thread(world, port=0)
    print(
        f"devstore with {customers:,} customers (standard plan) ready in {time.monotonic() - started:.1f} s"
    )
    try:
        shop = running.shops[0]
        domain = shop["domain"]
        handle = domain.removesuffix(".myshopify.com")
        state = world.shop(handle)
        assert state is not None
        total = len(state.records["customers"])
        with (
            tempfile.TemporaryDirectory() as tmp,
            ShopifyClient(domain, access_token=shop["access_token"], base_url=shop["base_url"]) as client,
        ):
            root = Path(tmp)
            scopes = {"read_customers"}

            # 1. full paged read
            client.execute(docs.load("access_scopes"))  # learn the bucket
            bucket = client.bucket
            assert bucket is not None
            initial_available, rate = bucket.available_at(time.monotonic()), bucket.restore_rate
            before = client.stats.as_dict()
            t0 = time.monotonic()
            full = fetch_entity(
                client,
                shop=domain,
                entity="customers",
                landing_root=root,
                state_dir=root / "state",
                mode="incremental",
                scopes=scopes,
            )
            full_s = time.monotonic() - t0
            after = client.stats.as_dict()
            final_available = client.bucket.available_at(time.monotonic()) if client.bucket else 0.0
            requests = after["requests"] - before["requests"]
            throttled = after["throttled"] - before["throttled"]
            points = after["points"] - before["points"]
            parents = sum(1 for _ in _parent_rows(root, full))

            # 2. change 1% of the customers
            ids = random.Random(1).sample(
                sorted(state.records["customers"]), max(1, int(total * args.changed))
            )
            response = httpx.post(
                f"{running.url}/_devstore/shops/{handle}/mass_edit",
                json={"entity": "customers", "ids": ids, "changes": {"note": "bench change"}},
                timeout=60,
            )
            response.raise_for_status()

            # 3. incremental read from a rested bucket (as a scheduled run would start)
            if client.bucket is not None:
                time.sleep(
                    max(0.0, (client.bucket.maximum - client.bucket.available_at(time.monotonic())) / rate)
                )
            t1 = time.monotonic()
            incremental = fetch_entity(
                client,
                shop=domain,
                entity="customers",
                landing_root=root,
                state_dir=root / "state",
                mode="incremental",
                scopes=scopes,
            )
            incremental_s = time.monotonic() - t1
            changed_read = sum(1 for _ in _parent_rows(root, incremental))
    finally:
        running.stop()

    # points that came from the restore rate (not from the full bucket we started with)
    restored = points - max(0.0, initial_available - final_available)
    print(
        f"full paged read: {parents:,}/{total:,} customers, {requests} requests, {points:,.0f} points in {full_s:.1f} s"
    )
    print(
        f"  points/s ÷ restore rate ({rate:.0f}/s), raw:                        {points / full_s / rate:.3f}"
    )
    print(
        f"  points/s ÷ restore rate, without the initial full bucket (goal ≥ 0.9): {restored / full_s / rate:.3f}"
    )
    print(
        f"  THROTTLED share of requests (goal ≤ 1%):                          {throttled / max(1, requests):.2%} ({throttled})"
    )
    print(f"incremental read: {changed_read:,} customers ({len(ids):,} changed) in {incremental_s:.2f} s")
    print(f"  incremental time ÷ full time (goal ≤ 0.1):                        {incremental_s / full_s:.4f}")


def _parent_rows(root: Path, result: object) -> list[dict]:
    import json

    from pipelines import landing

    rows = []
    for manifest in result.batches:  # type: ignore[attr-defined]
        path = landing.entity_dir(root, manifest.shop, manifest.entity) / manifest.data_path_name
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if "__parentId" not in row:
                rows.append(row)
    return rows


if __name__ == "__main__":
    main()
