"""Identity resolution benchmark: accuracy against the generator's ground truth, time and memory.

    .venv/bin/python bench/bench_identity.py                     # 2 x 520k customers: ~1M customer records
    .venv/bin/python bench/bench_identity.py --splink            # also Splink 5 on the same world
    .venv/bin/python bench/bench_identity.py --quick --splink    # 2 stores x 5,000 customers, seconds

Records are the generator's customer records (with their default address) plus guest
orders and guest checkouts, resolved cross-store and scored pairwise against ``truth``.
Every (method, fields) runs in its own child process so its peak RSS is its own; time is
wall time (and CPU time, which a loaded machine does not inflate). Measured in the same
run: an exact-email baseline (what a simple sync does), the ceiling of names and
addresses (``evaluate.address_ceiling``, an oracle that links exactly the records of one
person sharing a normalised address: no method without email and phone can find more
without guessing), and with
``--splink`` Splink 5 on DuckDB (``SPLINK_SETUP`` says how it was given a fair chance).
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
FULL_CUSTOMERS = 520_000  # per store; x2 stores x ~0.96 = ~1M customer records (+ ~0.4M guest records)
QUICK_CUSTOMERS = 5_000
SPLINK_TIMED_THRESHOLD = 0.9
SPLINK_SWEEP: tuple[float, ...] = (0.05, 0.2, 0.5, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999)
SPLINK_SETUP = (
    "Splink 5.0 on DuckDB over our normalised columns (emails with provider rules, E.164 phones, "
    "folded names, abbreviated streets, canonical postcodes), first names compared exact (TF), "
    "nickname-canonical, nickname-set overlap, one edit and Jaro-Winkler; last names exact (TF), "
    "one edit, JW; emails exact (TF), same mailbox, 2 edits, same digits; phones exact (TF), last 7; "
    "address same/similar/postcode (TF)/city; our blocking rules plus exact email; lambda from exact "
    "email/phone rules, u from 1e7 random pairs, m by EM on name and address blocks; clusters at the "
    "match-probability threshold with the best F1 against the truth (chosen after the timed run at "
    f"{SPLINK_TIMED_THRESHOLD}: an advantage ours does not get)"
)
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


def _split_ids(frame: pl.DataFrame) -> pl.DataFrame:
    """``unique_id`` (``shop|record_type|record_id``) back into the three key columns."""
    parts = frame["unique_id"].str.split_exact("|", 2)
    return pl.DataFrame(
        {
            "shop": parts.struct.field("field_0"),
            "record_type": parts.struct.field("field_1"),
            "record_id": parts.struct.field("field_2"),
            "contact_id": frame["contact_id"].cast(pl.String),
        }
    )


def _splink(records: pl.DataFrame, shops: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, float]]:
    """Splink 5 on DuckDB given every advantage we could find; see ``SPLINK_SETUP``.

    Returns the pairwise predictions' clustering at a fixed 0.9 threshold (timed) and,
    in ``info``, the predictions themselves so the parent can pick the best threshold
    with the ground truth.
    """
    import duckdb
    import splink.comparison_level_library as cll
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
        "first_canon",
        "first_keys",
        "last_name_norm",
        "email_norm",
        "email_local",
        "email_digits",
        "phone_e164",
        "address_norm",
        "house_number",
        "postcode",
        "city_norm",
    ]
    frame = norm.select(cols).to_arrow()
    has_email = norm["email_norm"].null_count() < norm.height
    first_name = cl.CustomComparison(
        [
            cll.NullLevel("first_token"),
            cll.ExactMatchLevel("first_token", term_frequency_adjustments=True),
            # nickname: Bob/Robert share a canonical name, Pat may be Patricia or Patrick
            cll.ExactMatchLevel("first_canon"),
            cll.ArrayIntersectLevel("first_keys"),
            cll.DamerauLevenshteinLevel("first_token", 1),
            cll.JaroWinklerLevel("first_token", 0.88),
            cll.ElseLevel(),
        ],
        output_column_name="first_name",
    )
    last_name = cl.CustomComparison(
        [
            cll.NullLevel("last_name_norm"),
            cll.ExactMatchLevel("last_name_norm", term_frequency_adjustments=True),
            cll.DamerauLevenshteinLevel("last_name_norm", 1),
            cll.JaroWinklerLevel("last_name_norm", 0.9),
            cll.ElseLevel(),
        ],
        output_column_name="last_name",
    )
    location = cl.CustomComparison(
        [
            cll.CustomLevel(
                "(address_norm_l IS NULL OR address_norm_r IS NULL) AND (postcode_l IS NULL OR postcode_r IS NULL)",
                "null",
            ).configure(is_null_level=True),
            cll.CustomLevel("address_norm_l = address_norm_r AND postcode_l = postcode_r", "same address"),
            cll.CustomLevel(
                "postcode_l = postcode_r AND (house_number_l = house_number_r "
                "OR jaro_winkler_similarity(address_norm_l, address_norm_r) >= 0.9)",
                "similar address",
            ),
            cll.ExactMatchLevel("postcode", term_frequency_adjustments=True),
            cll.ExactMatchLevel("city_norm"),
            cll.ElseLevel(),
        ],
        output_column_name="location",
    )
    comparisons = [first_name, last_name, location]
    if has_email:
        comparisons += [
            cl.CustomComparison(
                [
                    cll.NullLevel("email_norm"),
                    cll.ExactMatchLevel("email_norm", term_frequency_adjustments=True),
                    cll.ExactMatchLevel("email_local"),
                    cll.DamerauLevenshteinLevel("email_local", 2),
                    cll.ExactMatchLevel("email_digits"),
                    cll.ElseLevel(),
                ],
                output_column_name="email",
            ),
            cl.CustomComparison(
                [
                    cll.NullLevel("phone_e164"),
                    cll.ExactMatchLevel("phone_e164", term_frequency_adjustments=True),
                    cll.CustomLevel("right(phone_e164_l, 7) = right(phone_e164_r, 7)", "same last 7"),
                    cll.ElseLevel(),
                ],
                output_column_name="phone",
            ),
        ]
    rules = [block_on(*r) for r in DEFAULT_SETTINGS.blocking_rules]
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=[block_on("email_norm"), *rules],
        retain_intermediate_calculation_columns=False,
    )
    # the same memory budget as our goal (6 GB); DuckDB spills to disk past it rather than fail
    con = duckdb.connect(":memory:")
    con.execute("SET memory_limit = '6GB'")
    linker = Linker(DuckDBAPI(con).register(frame), settings, log_level=40)
    if has_email:
        exact = [block_on("email_norm"), block_on("phone_e164")]
        recall = 0.75
    else:
        exact = [block_on("first_canon", "last_name_norm", "address_norm", "postcode")]
        recall = 0.7
    linker.training.estimate_probability_two_random_records_match(exact, recall=recall)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e7, seed=1)
    # EM twice so every comparison is trained with the other one fixed by the blocking rule
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("first_canon", "last_name_norm"), max_pairs=5e6
    )
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("address_norm", "postcode"), max_pairs=5e6
    )
    predictions = linker.inference.predict(threshold_match_probability=SPLINK_SWEEP[0])
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, SPLINK_TIMED_THRESHOLD
    )
    out = pl.from_arrow(clusters.as_duckdbpyrelation().select("unique_id, cluster_id").arrow())
    pairs = pl.from_arrow(
        predictions.as_duckdbpyrelation().select("unique_id_l, unique_id_r, match_probability").arrow()
    )
    assert isinstance(out, pl.DataFrame) and isinstance(pairs, pl.DataFrame)
    return _split_ids(out.rename({"cluster_id": "contact_id"})), {"pairs": pairs, "ids": norm["unique_id"]}


METHODS = {"ours": _ours, "email_baseline": _email_baseline, "splink": _splink}


def _best_threshold(info: dict, truth: pl.DataFrame) -> dict[str, float]:
    """Cluster Splink's predictions at each sweep threshold; the figures at the best F1."""
    from transforms.identity.cluster import cluster_records
    from transforms.identity.evaluate import pairwise_metrics

    ids: pl.Series = info["ids"]
    index = pl.DataFrame({"unique_id": ids, "_rid": pl.arange(0, ids.len(), eager=True, dtype=pl.UInt32)})
    pairs = (
        info["pairs"]
        .join(index.rename({"unique_id": "unique_id_l", "_rid": "l"}), on="unique_id_l")
        .join(index.rename({"unique_id": "unique_id_r", "_rid": "r"}), on="unique_id_r")
    )
    best: dict[str, float] = {}
    for threshold in SPLINK_SWEEP:
        edges = pairs.filter(pl.col("match_probability") >= threshold).select("l", "r")
        labels = cluster_records(ids.len(), edges)
        found = _split_ids(pl.DataFrame({"unique_id": ids, "contact_id": labels.cast(pl.String)}))
        metrics = pairwise_metrics(found, truth)
        if not best or metrics["f1"] > best["f1"]:
            best = {**metrics, "threshold": threshold}
    return best


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
    extra: dict[str, float] = {}
    if method == "ceiling":
        from transforms.identity.evaluate import address_ceiling

        identities = address_ceiling(records, truth)
    else:
        out = METHODS[method](records, shops)
        identities, info = out if isinstance(out, tuple) else (out, None)
    seconds = time.perf_counter() - started
    # CPU seconds over all threads: on a shared machine wall time inflates, this does not
    cpu = time.process_time() - cpu_before
    peak = _peak_rss_mb()
    metrics = pairwise_metrics(identities, truth)
    if method == "splink" and info is not None:
        best = _best_threshold(info, truth)
        extra = {
            "timed_threshold": SPLINK_TIMED_THRESHOLD,
            "timed_precision": metrics["precision"],
            "timed_recall": metrics["recall"],
            "timed_f1": metrics["f1"],
            "threshold": best["threshold"],
        }
        metrics = {k: v for k, v in best.items() if k != "threshold"}
    print(
        json.dumps(
            {
                **metrics,
                **extra,
                "method": method,
                "fields": fields,
                "records": records.height,
                "customers": int((records["record_type"] == "customer").sum()),
                "seconds": seconds,
                "cpu_seconds": cpu,
                "load_avg_1m": os.getloadavg()[0],
                "peak_rss_mb": peak,
                "rss_before_mb": base_rss,
            }
        ),
        flush=True,
    )


def _run_child(method: str, fields: str, customers: int, seed: int) -> dict | None:
    """Run one (method, fields) in a fresh process; its JSON figures, or None when it failed."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        method,
        fields,
        "--customers",
        str(customers),
        "--seed",
        str(seed),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        print(
            f"{method}/{fields} at {customers:,} customers/store failed:\n{done.stderr[-2000:]}", flush=True
        )
        return None
    result: dict = json.loads(lines[-1])
    threshold = f" at p>={result['threshold']}" if "threshold" in result else ""
    print(
        f"{method:15s} {fields:16s} records={result['records']:>9,} customers={result['customers']:>9,} "
        f"precision={result['precision']:.4f} recall={result['recall']:.4f} f1={result['f1']:.4f}{threshold} "
        f"time={result['seconds']:.1f}s cpu={result['cpu_seconds']:.1f}s "
        f"peak_rss={result['peak_rss_mb'] / 1024:.2f}GB (load avg {result['load_avg_1m']:.1f} on {os.cpu_count()} cores)",
        flush=True,
    )
    if "timed_threshold" in result:
        print(
            f"{'':32s}(timed run at p>={result['timed_threshold']}: precision={result['timed_precision']:.4f} "
            f"recall={result['timed_recall']:.4f} f1={result['timed_f1']:.4f})",
            flush=True,
        )
    return result


def _compare(ours: dict | None, other: dict | None, label: str) -> None:
    if ours and other:
        print(
            f"ours vs {label}: time {other['seconds'] / ours['seconds']:.2f}x ours, cpu {other['cpu_seconds'] / ours['cpu_seconds']:.2f}x, "
            f"peak RSS {other['peak_rss_mb'] / ours['peak_rss_mb']:.2f}x; ours precision {ours['precision'] - other['precision']:+.4f}, "
            f"recall {ours['recall'] - other['recall']:+.4f}, F1 {ours['f1'] - other['f1']:+.4f}",
            flush=True,
        )


def main() -> None:
    """Parse arguments; as parent, run every (method, fields) in a child and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"2 stores x {QUICK_CUSTOMERS:,} customers")
    parser.add_argument(
        "--customers",
        type=int,
        default=None,
        help=f"customer records per store (default {FULL_CUSTOMERS:,}: ~1M customer records, plus guests)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splink", action="store_true", help="also run Splink 5 (and ours at Splink's size)")
    parser.add_argument(
        "--splink-customers",
        type=int,
        default=None,
        help="customers per store for the Splink comparison (default: the same world as ours); "
        "Splink runs under DuckDB's 6 GB memory limit, the goal's budget",
    )
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FIELDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    customers = args.customers or (QUICK_CUSTOMERS if args.quick else FULL_CUSTOMERS)
    if args.child:
        child(args.child[0], args.child[1], customers, args.seed)
        return
    if args.generate:
        world_files(customers, args.seed)
        return

    def generate(size: int) -> None:
        # in a child: a parent that held the world would pass its peak RSS to the children
        # it forks (Linux reports the inherited high-water mark)
        cmd = [sys.executable, __file__, "--generate", "--customers", str(size), "--seed", str(args.seed)]
        subprocess.run(cmd, check=True)

    generate(customers)
    print(f"== {customers:,} customers per store, 2 stores", flush=True)
    runs = [
        ("ours", "all"),
        ("ours", "names_addresses"),
        ("ceiling", "names_addresses"),
        ("email_baseline", "all"),
    ]
    by_key = {(m, f): r for m, f in runs if (r := _run_child(m, f, customers, args.seed))}
    ours, na, ceiling = (
        by_key.get(("ours", "all")),
        by_key.get(("ours", "names_addresses")),
        by_key.get(("ceiling", "names_addresses")),
    )
    _compare(ours, by_key.get(("email_baseline", "all")), "exact-email baseline (all fields)")
    if ours:
        print(
            "goals (all fields): precision>=0.995 {} ({:.4f}), recall>=0.97 {} ({:.4f}), time<=30s {} ({:.1f}s), "
            "peak RSS<=6GB {} ({:.2f}GB)".format(
                "PASS" if ours["precision"] >= 0.995 else "FAIL",
                ours["precision"],
                "PASS" if ours["recall"] >= 0.97 else "FAIL",
                ours["recall"],
                "PASS" if ours["seconds"] <= 30 else "FAIL",
                ours["seconds"],
                "PASS" if ours["peak_rss_mb"] <= 6 * 1024 else "FAIL",
                ours["peak_rss_mb"] / 1024,
            ),
            flush=True,
        )
    if na:
        print(
            f"goal (names and addresses only): F1>=0.97 {'PASS' if na['f1'] >= 0.97 else 'FAIL'} ({na['f1']:.4f})",
            flush=True,
        )
    if na and ceiling:
        print(
            f"names and addresses: ours reaches {na['recall'] / ceiling['recall']:.3f} of the ceiling's recall "
            f"(ceiling F1 {ceiling['f1']:.4f}: no method without email or phone can do much better on this world)",
            flush=True,
        )
    if not args.splink:
        return
    size = args.splink_customers or customers
    print(f"== Splink comparison at {size:,} customers per store: {SPLINK_SETUP}", flush=True)
    if size != customers:
        generate(size)
    for fields in ("all", "names_addresses"):
        mine = (
            by_key.get(("ours", fields)) if size == customers else _run_child("ours", fields, size, args.seed)
        )
        theirs = _run_child("splink", fields, size, args.seed)
        _compare(mine, theirs, f"Splink ({fields.replace('_', ' and ')})")


if __name__ == "__main__":
    main()
