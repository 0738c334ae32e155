"""Reverse sync efficiency against the devstore (real HTTP, Shopify's cost model and bucket).

1. Customers updated per 1,000 API points: the batched plan (metafieldsSet, 25 per call, with the
   origin metafield) vs a reference sending one mutation per field per customer, same run.
2. At the standard plan (2,000-point bucket restoring 100/s): achieved write throughput in points
   per second ÷ what the rate limit allows over the same time (bucket + restore × seconds).

    .venv/bin/python bench/bench_reverse_sync.py [--quick] [--customers N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta

import polars as pl

from devstore.cost import CostLimiter
from devstore.server import create_world, start_in_thread
from pipelines.push_journal import PushJournal, journal_path
from pipelines.shopify.client import ShopifyClient
from pipelines.shopify.push import push_shop
from transforms.reverse_sync import ENGAGEMENT_METAFIELDS, NAMESPACE, plan_push


def main() -> None:
    """Run the benchmark and print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (~10 s)")
    parser.add_argument("--customers", type=int, default=None)
    args = parser.parse_args()
    n = args.customers or (300 if args.quick else 1500)
    # quick keeps the standard restore rate but a smaller bucket so the limit is reached quickly
    limits = {"standard": (400.0, 100.0)} if args.quick else None
    # the standard plan: a 2,000-point bucket restoring 100 points/s (quick: a 400-point bucket)
    world = create_world(stores=1, customers=n, seed=1, plan="standard")
    shop = next(iter(world.shops.values()))
    running = start_in_thread(world, port=0, limiter=CostLimiter(limits=limits), webhooks=False)
    try:
        token = running.token(shop.handle)
        base = f"{running.url.rstrip('/')}/shops/{shop.handle}"
        bucket_max, restore = (limits or {"standard": (2000.0, 100.0)})["standard"]
        now = shop.clock.now().astimezone(UTC)
        with shop.lock:
            ids = sorted(shop.records["customers"])
        engagement = pl.DataFrame(
            {
                "shop": shop.domain,
                "customer_id": ids,
                "last_email_open_at": now - timedelta(days=1),
                "last_email_click_at": now - timedelta(days=2),
                "last_sms_click_at": now - timedelta(days=3),
                "rfm_segment": "Champions",
                "messages_sent": 7,
            }
        )
        plan, _ = plan_push(toggles={shop.domain: {"engagement"}}, as_of=now, engagement=engagement)

        # as the push asset runs it: every write journaled before it is sent (exactly once)
        journal = PushJournal(journal_path(tempfile.mkdtemp(prefix="push-journal-"), shop.domain))
        with ShopifyClient(shop.domain, access_token=token, base_url=base) as client, journal:
            started = time.monotonic()
            report = push_shop(client, plan, run_id="bench", now=now, journal=journal)
            elapsed = time.monotonic() - started
            points = client.stats.points
            calls = client.stats.requests
        written = report.count("written", "engagement")
        customers_batched = len(set(report.outcomes.filter(pl.col("kind") == "engagement")["customer_id"]))

        # reference: one metafieldsSet per field per customer, on a sample of customers
        sample = ids[: max(10, n // 20)]
        doc = (
            "mutation($m: [MetafieldsSetInput!]!) { metafieldsSet(metafields: $m) "
            "{ metafields { id } userErrors { message } } }"
        )
        with ShopifyClient(shop.domain, access_token=token, base_url=base) as ref:
            for cid in sample:
                for key, (mf_type, _col) in ENGAGEMENT_METAFIELDS.items():
                    value = (
                        "Loyal"
                        if mf_type == "single_line_text_field"
                        else "8"
                        if mf_type == "number_integer"
                        else "2026-01-01T00:00:00Z"
                    )
                    ref.execute(
                        doc,
                        {
                            "m": [
                                {
                                    "ownerId": f"gid://shopify/Customer/{cid}",
                                    "namespace": NAMESPACE,
                                    "key": key,
                                    "type": mf_type,
                                    "value": value,
                                }
                            ]
                        },
                    )
            ref_points = ref.stats.points
    finally:
        running.stop()

    batched_per_1000 = customers_batched / points * 1000 if points else 0.0
    ref_per_1000 = len(sample) / ref_points * 1000 if ref_points else 0.0
    allowed = bucket_max + restore * elapsed
    figures = {
        "customers": len(ids),
        "metafields_written": written,
        "calls": calls,
        "points": points,
        "seconds": round(elapsed, 2),
        "customers_per_1000_points_batched": round(batched_per_1000, 1),
        "customers_per_1000_points_one_per_field": round(ref_per_1000, 1),
        "ratio_batched_vs_one_per_field": round(batched_per_1000 / ref_per_1000, 1) if ref_per_1000 else None,
        "bucket": {"maximum": bucket_max, "restore_per_s": restore, "quick_bucket": bool(limits)},
        "achieved_points_per_s": round(points / elapsed, 1) if elapsed else None,
        "metafields_per_s": round(written / elapsed, 1) if elapsed else None,
        "throughput_vs_rate_limit": round(points / allowed, 3) if allowed else None,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
