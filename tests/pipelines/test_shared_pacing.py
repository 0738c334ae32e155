"""Two processes syncing one shop share its cost bucket: pacing through a shared state file.

Dagster's multiprocess executor fetches each entity of a store in its own process. Each
process has its own client; only a shared pacing folder lets them see each other's spending.
The devstore here has a small bucket, so two clients that each believed they had the whole
bucket would be THROTTLED again and again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devstore.cost import CostLimiter
from devstore.server import RunningDevstore, create_world, start_in_thread
from pipelines.shopify.pacing import Pacer

# A small, fast bucket: the two fetches together need several bucketfuls.
BUCKET = (300.0, 2000.0)

FETCH = """
import json, sys
from pathlib import Path
from pipelines.shopify import ShopifyClient, ShopifyUnavailable, fetch_entity
shop, token, base_url, entity, work, pacing = sys.argv[1:7]
work = Path(work)
with ShopifyClient(shop, access_token=token, base_url=base_url, shared_dir=Path(pacing) if pacing else None) as client:
    try:
        rows = fetch_entity(client, shop=shop, entity=entity, landing_root=work / "landing",
                            state_dir=work / "state", mode="incremental").rows
    except ShopifyUnavailable:  # THROTTLED on every attempt
        rows = -1
    print(json.dumps({"rows": rows, **client.stats.as_dict()}))
"""


@pytest.fixture
def small_bucket_store() -> Any:
    world = create_world(stores=1, customers=40, seed=31, plan="standard")
    running = start_in_thread(world, limiter=CostLimiter(limits={"standard": BUCKET}))
    yield running
    running.stop()


def _sync_concurrently(running: RunningDevstore, work: Path, pacing: Path | None) -> list[dict[str, Any]]:
    shop = running.shops[0]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                FETCH,
                shop["domain"],
                shop["access_token"],
                shop["base_url"],
                entity,
                str(work / f"{i}-{entity}"),
                str(pacing or ""),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # two order fetches: the costliest entity, so both are still paging at the same time
        for i, entity in enumerate(("orders", "orders"))
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


@pytest.mark.slow
def test_two_processes_share_the_bucket_and_are_rarely_throttled(
    small_bucket_store: RunningDevstore, tmp_path: Path
) -> None:
    shared = _sync_concurrently(small_bucket_store, tmp_path / "shared", tmp_path / "pacing")
    requests = sum(r["requests"] for r in shared)
    throttled = sum(r["throttled"] for r in shared)
    assert all(r["rows"] > 0 for r in shared)
    assert requests >= 20
    assert throttled <= 0.01 * requests, shared
    assert sum(r["pacing_wait_s"] for r in shared) > 0.5  # they did wait for each other

    # the same two fetches, each pacing alone as if it had the whole bucket: throttled often
    # (and one may even give up after every attempt was THROTTLED)
    alone = _sync_concurrently(small_bucket_store, tmp_path / "alone", None)
    alone_throttled = sum(r["throttled"] for r in alone)
    assert alone_throttled >= max(5, 3 * throttled), alone


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pacers_sharing_a_file_queue_behind_each_other(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "pacing" / "shop.bucket.json"
    first, second = Pacer(path, clock=clock), Pacer(path, clock=clock)
    assert first.reserve(50, max_wait_s=60) == (0.0, None)  # nothing known yet: nothing to pace by
    first.observe(100, 100, 10, None)

    wait_a, a = first.reserve(60, max_wait_s=60)
    wait_b, b = second.reserve(60, max_wait_s=60)
    need = 60 * 1.02 + 1
    assert wait_a == 0.0 and a is not None and b is not None
    # the second saw the first's reservation: it waits for the points the first took
    assert wait_b == pytest.approx((need - (100 - need)) / 10)

    # the first's answer: Shopify took its points; the second's are still reserved
    first.observe(100, 100 - 60, 10, a)
    bucket = second.bucket()
    assert bucket is not None and bucket.available_at(clock.now) == pytest.approx(40 - need)
    # an answerless attempt ends its reservation; one whose process died expires
    second.release(b)
    first.observe(100, 40, 10, None)
    assert first.bucket().available_at(clock.now) == pytest.approx(40)  # type: ignore[union-attr]
    _, lost = first.reserve(10, max_wait_s=60)
    clock.now += 10_000
    first.observe(100, 100, 10, None)
    assert first.bucket().available_at(clock.now) == pytest.approx(100)  # type: ignore[union-attr]
    assert lost is not None

    path.write_text("{not json")  # a process killed mid-write
    assert Pacer(path, clock=clock).bucket() is None
