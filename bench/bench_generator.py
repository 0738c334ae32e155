"""Benchmark: generate a large world and write it as Shopify bulk-export JSONL.

Default (full): ~1M customers and ~5M orders with line items over 2 stores, written as
bulk JSONL (customers; orders with line items as child lines). Targets: under 2 minutes
end to end and under 8 GB peak RSS. ``--quick`` runs a small world.

The reference is Polars' own ``write_ndjson`` of the same flat frames (customers, orders,
line items), measured in the same process; the ratio says what the bulk shape (nested
objects, gids, interleaved children) costs over a plain dump.

    .venv/bin/python bench/bench_generator.py --quick
    .venv/bin/python bench/bench_generator.py
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devstore.bulk_jsonl import write_customers_jsonl, write_orders_jsonl
from devstore.generator import generate_world, person_summary


class PeakRss:
    """Sample this process's RSS in a background thread (ru_maxrss cannot be reset)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def main() -> None:
    """Run the benchmark and print figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small world (~50k customers, ~250k orders)")
    parser.add_argument("--stores", type=int, default=2)
    parser.add_argument("--customers", type=int, default=None, help="customer records per store")
    parser.add_argument("--orders-per-customer", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the JSONL files here")
    args = parser.parse_args()
    # ``customers`` is what each store gets on average; 1% over 500k keeps the full run at
    # or above a million customers (and five million orders) whatever the sampling noise.
    per_store = args.customers or (25_250 if args.quick else 505_000)

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_generator_"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        with PeakRss() as gen_rss:
            tables = generate_world(
                stores=args.stores,
                customers=per_store,
                seed=args.seed,
                orders_per_customer=args.orders_per_customer,
            )
        t_gen, c_gen = time.perf_counter() - t0, time.process_time() - c0
        n_cust = tables["customers"].height
        n_orders = tables["orders"].height
        n_items = tables["order_line_items"].height
        rows_total = sum(f.height for f in tables.values())
        print(
            f"world: {args.stores} stores, {n_cust:,} customers, {n_orders:,} orders, {n_items:,} line items"
        )
        print(f"       {rows_total:,} rows in {len(tables)} tables; {person_summary(tables)}")
        print(
            f"generate: {t_gen:.1f} s ({c_gen:.1f} CPU-s), {rows_total / t_gen:,.0f} rows/s, "
            f"peak RSS {_gb(gen_rss.peak)}"
        )

        ours: list[Path] = []
        t1, c1 = time.perf_counter(), time.process_time()
        lines = 0
        with PeakRss() as write_rss:
            for shop in tables["shops"]["shop"].to_list():
                handle = shop.removesuffix(".myshopify.com")
                cpath, opath = out / f"{handle}.customers.jsonl", out / f"{handle}.orders.jsonl"
                lines += write_customers_jsonl(tables, cpath, shop)
                lines += write_orders_jsonl(tables, opath, shop)
                ours += [cpath, opath]
        t_write, c_write = time.perf_counter() - t1, time.process_time() - c1
        written = _size(ours)
        print(
            f"bulk JSONL: {t_write:.1f} s ({c_write:.1f} CPU-s), {lines:,} lines, {lines / t_write:,.0f} lines/s, "
            f"{written / 1e9:.2f} GB at {written / 1e6 / t_write:,.0f} MB/s, peak RSS {_gb(write_rss.peak)}"
        )

        # Reference: Polars' native NDJSON writer on the same flat frames.
        ref = [out / "ref.customers.ndjson", out / "ref.orders.ndjson", out / "ref.line_items.ndjson"]
        t2, c2 = time.perf_counter(), time.process_time()
        with PeakRss() as ref_rss:
            tables["customers"].write_ndjson(ref[0])
            tables["orders"].write_ndjson(ref[1])
            tables["order_line_items"].write_ndjson(ref[2])
        t_ref, c_ref = time.perf_counter() - t2, time.process_time() - c2
        ref_size = _size(ref)
        print(
            f"reference write_ndjson (flat): {t_ref:.1f} s ({c_ref:.1f} CPU-s), {(n_cust + n_orders + n_items) / t_ref:,.0f} rows/s, "
            f"{ref_size / 1e9:.2f} GB at {ref_size / 1e6 / t_ref:,.0f} MB/s, peak RSS {_gb(ref_rss.peak)}"
        )
        total = t_gen + t_write
        max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(
            f"ratio bulk JSONL / reference: time {t_write / t_ref:.2f}x, MB/s {written / t_write / (ref_size / t_ref):.2f}x"
        )
        print(
            f"end to end (generate + bulk JSONL): {total:.1f} s ({c_gen + c_write:.1f} CPU-s on "
            f"{os.cpu_count()} cores); process peak RSS {_gb(max_rss)}"
        )
        if not args.quick:
            big_enough = n_cust >= 1_000_000 and n_orders >= 5_000_000
            print(f"size (>= 1M customers, >= 5M orders): {'OK' if big_enough else 'TOO SMALL'}")
            verdict = "OK" if total < 120 and max_rss < 8e9 else "OVER TARGET"
            print(f"targets (< 120 s, < 8 GB): {verdict}")
        # Wall times depend on what else the machine runs; the load average says how busy it was.
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}")
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
