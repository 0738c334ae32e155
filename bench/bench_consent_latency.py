"""Consent latency: an unsubscribe file landing → Shopify (the devstore) showing UNSUBSCRIBED.

Everything between is the product's own automation, ticked like the Dagster daemon ticks it:
the engagement feed sensor and the consent push sensor are evaluated at their minimum
intervals (random phase per sample) against a persistent SQLite instance, and each run they
request is launched as its own process (as the default run launcher does), which imports the
definitions, runs the job and writes its events where the next sensor reads them. A
warehouse synced from the devstore by the real pipeline sits underneath.

Per sample: a file with one `email_unsubscribe` for a subscribed customer is written into
`landing/_engagement/`; the clock stops when the devstore reports the customer UNSUBSCRIBED.
Prints the median and p95 (goal: p95 <= 60 s), their ratio to the goal, and the median of each
leg (pickup by the sensor, feed run, consent sensor, push run).

    .venv/bin/python bench/bench_consent_latency.py [--quick] [--samples N]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402

from devstore.server import create_world, start_in_thread  # noqa: E402
from orchestration.control import ControlSettings, StoreRegistry  # noqa: E402
from orchestration.defs.intelligence.definitions import build_intelligence_defs  # noqa: E402
from orchestration.defs.reverse_sync.definitions import build_reverse_sync_defs  # noqa: E402
from orchestration.defs.shopify.definitions import build_shopify_defs  # noqa: E402
from orchestration.defs.shopify.partitions import add_store_partition  # noqa: E402
from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths  # noqa: E402

GOAL_P95_S = 60.0
SENSORS = ("engagement_feed_sensor", "consent_push_sensor")

# What the run launcher's process does: load the definitions, run one job, record to the instance.
RUNNER = """
import json, sys
from pathlib import Path
import dagster as dg
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/bench"]
from bench_consent_latency import definitions
home, data_dir, job, request = sys.argv[2], Path(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
instance = dg.DagsterInstance.local_temp(tempdir=home, overrides={"telemetry": {"enabled": False}})
result = definitions(data_dir).resolve_job_def(job).execute_in_process(
    instance=instance, run_config=request["run_config"] or None, partition_key=request["partition_key"],
    tags=request["tags"], raise_on_error=False)
sys.exit(0 if result.success else 1)
"""


def definitions(data_dir: Path) -> dg.Definitions:
    """The definitions a deployment loads, bound to one data folder."""
    paths = SyncPaths.under(data_dir)
    stores = ShopifyStores(data_dir=str(data_dir), bulk_poll_interval_s=0.05)
    return dg.Definitions.merge(
        build_shopify_defs(stores=stores, paths=paths),
        build_intelligence_defs(paths),
        build_reverse_sync_defs(paths),
    )


@dataclass
class Sample:
    """One unsubscribe's way to Shopify (seconds after the file landed)."""

    customer_id: int
    landed: float
    marks: dict[str, float] = field(default_factory=dict)

    def leg(self, start: str, end: str) -> float:
        return self.marks[end] - (self.landed if start == "landed" else self.marks[start])


def main() -> None:
    """Sync a store, then time unsubscribes through the sensors and runs; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 samples (~2 minutes)")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--customers", type=int, default=None)
    args = parser.parse_args()
    samples = args.samples or (3 if args.quick else 15)
    customers = args.customers or (40 if args.quick else 200)
    rng = random.Random(7)

    work = Path(tempfile.mkdtemp(prefix="consent-latency-"))
    data_dir, home = work / "data", work / "dagster_home"
    home.mkdir(parents=True)
    devstore = start_in_thread(
        create_world(stores=1, customers=customers, seed=5, plan="standard"), webhooks=False
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        shop = devstore.shops[0]
        domain = shop["domain"]
        registry = StoreRegistry(ControlSettings(data_dir=data_dir))
        registry.connect_store(
            domain, access_token=shop["access_token"], api_base_url=shop["base_url"], scopes=shop["scopes"]
        )
        registry.set_outbound_toggles(domain, {"email_consent": True})
        instance = dg.DagsterInstance.local_temp(
            tempdir=str(home), overrides={"telemetry": {"enabled": False}}
        )
        add_store_partition(instance, domain)
        defs = definitions(data_dir)
        started = time.monotonic()
        assert (
            defs.resolve_job_def("shopify_sync")
            .execute_in_process(instance=instance, partition_key=domain)
            .success
        )
        assert defs.resolve_job_def("intelligence_refresh").execute_in_process(instance=instance).success
        setup_s = time.monotonic() - started

        state = devstore.world.shop(domain)
        assert state is not None
        with state.lock:
            subscribed = [
                c["id"]
                for c in sorted(state.records["customers"].values(), key=lambda c: c["id"])
                if c.get("email") and c.get("email_consent_state") == "SUBSCRIBED"
            ]
        assert len(subscribed) >= samples, "not enough subscribed customers for the samples"
        resources = {"paths": SyncPaths.under(data_dir), "stores": ShopifyStores(data_dir=str(data_dir))}
        cursors: dict[str, str | None] = {}
        # the sensors start from the current end of the event log, as a freshly deployed daemon does
        for name in SENSORS:
            cursors[name] = _tick(defs, instance, name, None, resources)[1]
        launched: set[str] = set()
        done: list[Sample] = []
        drop = SyncPaths.under(data_dir).landing_path / "_engagement"
        drop.mkdir(parents=True, exist_ok=True)
        for i in range(samples):
            cid = subscribed[i]
            with state.lock:
                email = state.records["customers"][cid]["email"]
            event = {
                "event_id": f"bench-unsub-{i}",
                "occurred_at": (datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
                "type": "email_unsubscribe",
                "email": email,
                "shop": domain,
            }
            tmp = drop / f".unsub-{i}.tmp"
            tmp.write_text(json.dumps(event) + "\n")
            tmp.rename(drop / f"unsub-{i}.jsonl")  # landed: complete and visible at once
            sample = Sample(cid, time.monotonic())
            # the daemon evaluates each sensor every minimum interval; where in that cycle the
            # file lands is chance
            next_tick = {
                name: sample.landed
                + rng.uniform(0, defs.resolve_sensor_def(name).minimum_interval_seconds or 30)
                for name in SENSORS
            }
            while True:
                now = time.monotonic()
                for name in SENSORS:
                    if now < next_tick[name]:
                        continue
                    interval = defs.resolve_sensor_def(name).minimum_interval_seconds or 30
                    next_tick[name] = now + interval
                    requests, cursors[name] = _tick(defs, instance, name, cursors[name], resources)
                    for request in requests:
                        if request.run_key in launched:
                            continue
                        launched.add(request.run_key or "")
                        job = request.job_name or defs.resolve_sensor_def(name).job_name
                        sample.marks.setdefault(f"{name}_requested", time.monotonic())
                        procs.append(_launch(home, data_dir, job, request))
                for proc in list(procs):
                    if proc.poll() is not None:
                        procs.remove(proc)
                        if proc.returncode != 0:
                            raise SystemExit(f"a launched run failed; see {home / 'runs.log'}")
                        key = "feed_run_done" if "engagement_feed" in str(proc.args) else "push_run_done"
                        sample.marks.setdefault(key, time.monotonic())
                with state.lock:
                    if state.records["customers"][cid]["email_consent_state"] == "UNSUBSCRIBED":
                        sample.marks["shopify_unsubscribed"] = time.monotonic()
                        break
                if time.monotonic() - sample.landed > 600:
                    raise SystemExit(f"sample {i}: the unsubscribe never reached Shopify")
                time.sleep(0.1)
            for proc in procs:
                proc.wait()
            procs.clear()
            done.append(sample)
            print(
                f"sample {i + 1}/{samples}: {sample.leg('landed', 'shopify_unsubscribed'):.1f} s",
                file=sys.stderr,
            )
    finally:
        for proc in procs:
            proc.kill()
        devstore.stop()

    latencies = sorted(s.leg("landed", "shopify_unsubscribed") for s in done)
    # nearest rank: with 15 samples the p95 is the slowest one
    p95 = latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)]

    def median_leg(start: str, end: str) -> float:
        return round(statistics.median(s.leg(start, end) for s in done), 1)

    figures: dict[str, Any] = {
        "samples": len(done),
        "customers": customers,
        "setup_sync_s": round(setup_s, 1),
        "latency_median_s": round(statistics.median(latencies), 1),
        "latency_p95_s": round(p95, 1),
        "latency_max_s": round(latencies[-1], 1),
        "goal_p95_s": GOAL_P95_S,
        "p95_vs_goal": round(p95 / GOAL_P95_S, 2),
        "legs_median_s": {
            "file_to_feed_run_requested": median_leg("landed", "engagement_feed_sensor_requested"),
            "feed_run": median_leg("engagement_feed_sensor_requested", "feed_run_done"),
            "feed_done_to_push_requested": median_leg("feed_run_done", "consent_push_sensor_requested"),
            "push_run_to_shopify": median_leg("consent_push_sensor_requested", "shopify_unsubscribed"),
        },
        "sensor_intervals_s": {n: defs.resolve_sensor_def(n).minimum_interval_seconds for n in SENSORS},
        "runs": "one process per run (as the default run launcher)",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(figures, indent=1))


def _tick(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    name: str,
    cursor: str | None,
    resources: dict[str, Any],
) -> tuple[list[dg.RunRequest], str | None]:
    sensor = defs.resolve_sensor_def(name)
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, sensor_name=name
    ) as ctx:
        result = sensor(ctx)
    if isinstance(result, dg.SensorResult):
        return list(result.run_requests or []), result.cursor if result.cursor is not None else cursor
    return [], cursor


def _launch(home: Path, data_dir: Path, job: str, request: dg.RunRequest) -> subprocess.Popen[bytes]:
    # the daemon tags a run with the key its sensor gave it
    tags = {**request.tags, "dagster/run_key": request.run_key or ""}
    payload = json.dumps(
        {"run_config": request.run_config, "partition_key": request.partition_key, "tags": tags}
    )
    with open(home / "runs.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(ROOT), str(home), str(data_dir), job, payload],
            stdout=log,
            stderr=log,
        )


if __name__ == "__main__":
    main()
