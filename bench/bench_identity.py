"""Identity resolution benchmark: accuracy against the generator's ground truth, time and memory.

    .venv/bin/python bench/bench_identity.py            # ~1M records (2 x 370k customers + guests; cached)
    .venv/bin/python bench/bench_identity.py --quick    # 2 stores x 5,000 customers
    .venv/bin/python bench/bench_identity.py --quick --splink   # also run the Splink 5 reference

Records are the generator's customers (with their default address) plus guest orders and
guest checkouts, resolved cross-store and scored pairwise against ``truth``. Every setting
runs in its own child process so its peak RSS is its own. References measured in the same
run: an exact-email baseline (what a simple sync does) and, with ``--splink``, Splink 5 on
DuckDB with u from random sampling and m by EM over the same normalised columns and blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "out"
NAME_ADDRESS = [
    "shop",
    "record_type",
    "record_id",
    "first_name",
    "last_name",
    "address1",
    "address2",
    "city",
    "province",
    "zip",
    "country",
]


def world_files(customers: int, seed: int) -> tuple[Path, Path, Path]:
    """Generate (once) and cache the records, truth and shop regions for a world."""
    stem = OUT / f"identity_c{customers}_s{seed}"
    paths = (
        stem.with_suffix(".records.parquet"),
        stem.with_suffix(".truth.parquet"),
        stem.with_suffix(".shops.parquet"),
    )
    if all(p.exists() for p in paths):
        return paths
    from devstore.generator import generate_world
    from transforms.identity.sources import records_from_shopify

    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tables = generate_world(stores=2, customers=customers, seed=seed)
    records = records_from_shopify(
        tables["customers"], tables["customer_addresses"], tables["orders"], tables["abandoned_checkouts"]
    )
    records.write_parquet(paths[0])
    tables["truth"].write_parquet(paths[1])
    tables["shops"].select("shop", "country_code").write_parquet(paths[2])
    print(
        f"generated {records.height:,} records in {time.perf_counter() - started:.1f}s -> {paths[0]}",
        flush=True,
    )
    return paths


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ours(records: pl.DataFrame, shops: pl.DataFrame) -> pl.DataFrame:
    from transforms.identity import LinkageSettings, resolve

    settings = LinkageSettings(shop_regions=dict(zip(shops["shop"], shops["country_code"], strict=True)))
    return resolve(records, settings=settings).contact_identities


def _email_baseline(records: pl.DataFrame, shops: pl.DataFrame) -> pl.DataFrame:
    """Lowercased, trimmed email equality; records without an email stand alone."""
    key = pl.col("email").str.strip_chars().str.to_lowercase()
    return records.select(
        "shop",
        "record_type",
        "record_id",
        contact_id=pl.coalesce(key, pl.concat_str(["shop", "record_type", "record_id"], separator="|")),
    )


def _splink(records: pl.DataFrame, shops: pl.DataFrame) -> pl.DataFrame:
    """Splink 5 (DuckDB) over our normalised columns, same blocking rules, u sampled, m by EM."""
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    from transforms.identity.normalise import conform_records, normalise
    from transforms.identity.settings import DEFAULT_SETTINGS

    regions = dict(zip(shops["shop"], shops["country_code"], strict=True))
    norm = normalise(conform_records(records), shop_regions=regions).with_columns(
        unique_id=pl.concat_str(["shop", "record_type", "record_id"], separator="|")
    )
    cols = [
        "unique_id",
        "first_token",
        "last_name_norm",
        "email_norm",
        "email_local",
        "email_digits",
        "phone_e164",
        "address_norm",
        "house_number",
        "postcode",
        "city_norm",
        "first_canon",
    ]
    frame = norm.select(cols).to_arrow()
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=[
            cl.JaroWinklerAtThresholds("first_token", [0.92, 0.88]).configure(
                term_frequency_adjustments=True
            ),
            cl.JaroWinklerAtThresholds("last_name_norm", [0.92, 0.88]).configure(
                term_frequency_adjustments=True
            ),
            cl.ExactMatch("email_norm"),
            cl.ExactMatch("phone_e164"),
            cl.ExactMatch("address_norm"),
            cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
            cl.ExactMatch("city_norm"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("email_norm"),
            *[block_on(*r) for r in DEFAULT_SETTINGS.blocking_rules],
        ],
        retain_intermediate_calculation_columns=False,
    )
    db_api = DuckDBAPI()
    linker = Linker(db_api.register(frame), settings, log_level=40)
    has_email = norm["email_norm"].null_count() < norm.height
    exact_rules = (
        [block_on("email_norm"), block_on("phone_e164")]
        if has_email
        else [block_on("first_token", "last_name_norm", "address_norm")]
    )
    linker.training.estimate_probability_two_random_records_match(exact_rules, recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("last_name_norm", "postcode"))
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("email_norm") if has_email else block_on("first_token", "last_name_norm")
    )
    predictions = linker.inference.predict(threshold_match_probability=0.5)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, 0.95)
    out = pl.from_arrow(clusters.as_duckdbpyrelation().select("unique_id, cluster_id").arrow())
    assert isinstance(out, pl.DataFrame)
    parts = out["unique_id"].str.split_exact("|", 2)
    return pl.DataFrame(
        {
            "shop": parts.struct.field("field_0"),
            "record_type": parts.struct.field("field_1"),
            "record_id": parts.struct.field("field_2"),
            "contact_id": out["cluster_id"].cast(pl.String),
        }
    )


METHODS = {"ours": _ours, "email_baseline": _email_baseline, "splink": _splink}


def child(method: str, fields: str, customers: int, seed: int) -> None:
    """Run one method on one field set and print a JSON line of its figures."""
    from transforms.identity.evaluate import pairwise_metrics

    records_path, truth_path, shops_path = world_files(customers, seed)
    records = pl.read_parquet(records_path)
    if fields == "names_addresses":
        records = records.select(NAME_ADDRESS)
    shops = pl.read_parquet(shops_path)
    truth = pl.read_parquet(truth_path)
    base_rss = _peak_rss_mb()
    cpu_before = time.process_time()
    started = time.perf_counter()
    identities = METHODS[method](records, shops)
    seconds = time.perf_counter() - started
    # CPU seconds over all threads: on a shared machine wall time inflates, this does not
    cpu = time.process_time() - cpu_before
    metrics = pairwise_metrics(identities, truth)
    print(
        json.dumps(
            {
                **metrics,
                "method": method,
                "fields": fields,
                "records": records.height,
                "customers": int((records["record_type"] == "customer").sum()),
                "seconds": seconds,
                "cpu_seconds": cpu,
                "load_avg_1m": os.getloadavg()[0],
                "peak_rss_mb": _peak_rss_mb(),
                "rss_before_mb": base_rss,
            }
        ),
        flush=True,
    )


def main() -> None:
    """Parse arguments; as parent, run every (method, fields) in a child and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 stores x 5,000 customers")
    parser.add_argument(
        "--customers",
        type=int,
        default=None,
        help="customers per store (default 520,000: ~1M customer records)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--splink", action="store_true", help="also run the Splink 5 reference (slow at full size)"
    )
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FIELDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    customers = args.customers or (5_000 if args.quick else 370_000)
    if args.child:
        child(args.child[0], args.child[1], customers, args.seed)
        return

    if args.generate:
        world_files(customers, args.seed)
        return
    # generate in a child: a parent that held the world would pass its peak RSS to the
    # children it forks (Linux reports the inherited high-water mark)
    subprocess.run(
        [sys.executable, __file__, "--generate", "--customers", str(customers), "--seed", str(args.seed)],
        check=True,
    )
    runs = [("ours", "all"), ("ours", "names_addresses"), ("email_baseline", "all")]
    if args.splink:
        runs += [("splink", "all"), ("splink", "names_addresses")]
    results = []
    for method, fields in runs:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            method,
            fields,
            "--customers",
            str(customers),
            "--seed",
            str(args.seed),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if done.returncode != 0 or not lines:
            print(f"{method}/{fields} failed:\n{done.stderr[-2000:]}", flush=True)
            continue
        result = json.loads(lines[-1])
        results.append(result)
        print(
            f"{method:15s} {fields:16s} records={result['records']:>9,} customers={result['customers']:>9,} "
            f"precision={result['precision']:.4f} recall={result['recall']:.4f} f1={result['f1']:.4f} "
            f"time={result['seconds']:.1f}s cpu={result['cpu_seconds']:.1f}s peak_rss={result['peak_rss_mb'] / 1024:.2f}GB "
            f"(load avg {result['load_avg_1m']:.1f} on {os.cpu_count()} cores)",
            flush=True,
        )
    by_key = {(r["method"], r["fields"]): r for r in results}
    ours = by_key.get(("ours", "all"))
    for ref in ("email_baseline", "splink"):
        other = by_key.get((ref, "all"))
        if ours and other:
            print(
                f"ours vs {ref} (all fields): {ref} time / ours = {other['seconds'] / ours['seconds']:.2f}, "
                f"recall {ours['recall'] - other['recall']:+.4f}, precision {ours['precision'] - other['precision']:+.4f}, "
                f"peak RSS x{ours['peak_rss_mb'] / other['peak_rss_mb']:.2f}"
            )
    if ours:
        print(
            "goals: precision>=0.995 {}, recall>=0.97 {}, time<=30s {}, RSS<=6GB {}".format(
                ours["precision"] >= 0.995,
                ours["recall"] >= 0.97,
                ours["seconds"] <= 30,
                ours["peak_rss_mb"] <= 6 * 1024,
            )
        )
    na = by_key.get(("ours", "names_addresses"))
    if na:
        print(f"goal: names+addresses F1>=0.97 {na['f1'] >= 0.97} (f1={na['f1']:.4f})")


if __name__ == "__main__":
    main()
