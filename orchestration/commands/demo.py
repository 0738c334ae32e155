"""``shopsync demo``: a local Shopify, synced end to end through Dagster, with a summary.

It starts a devstore in a thread (generated shops whose customers overlap), registers the
shops in a control database under the demo's data folder, adds them as store partitions
of the persistent Dagster instance in ``.dagster_home/`` and runs the ``shopify_sync`` job
for each, so ``dagster dev`` (``make ui``) shows the same runs afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

DEFAULT_DATA_DIR = Path("data/demo")
_MARKER = ".shopsync-demo"
UI_COMMAND = "make ui   (the demo again, then the Dagster UI on it: shopsync demo --ui)"
# The fetch reads customer metafields in shopsync's own namespace only (the ones reverse
# sync writes); the devstore's merchant metafields live in ``custom``, so a fresh demo
# store has none to sync and the count of 0 is expected.
METAFIELDS_NOTE = (
    'shopify.customer_metafields holds only metafields in shopsync\'s own namespace "shopsync" '
    "(written by reverse sync, which the demo does not run); the stores' merchant metafields "
    '(namespace "custom") are not synced by design, so 0 is expected here.'
)
# Dagster's console logger: warnings and errors only, so the summary stays readable.
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _fresh_data_dir(data_dir: Path) -> None:
    """Empty the demo's own folder (only ever one it created, recognised by its marker)."""
    if data_dir.exists() and any(data_dir.iterdir()):
        if not (data_dir / _MARKER).exists():
            raise click.ClickException(
                f"{data_dir} exists and was not created by the demo; choose another --data-dir or remove it."
            )
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / _MARKER).write_text("created by `shopsync demo`; emptied on every demo run\n")


def run_demo(
    stores: int,
    customers: int,
    seed: int,
    data_dir: Path,
    *,
    keep_serving: contextlib.ExitStack | None = None,
) -> dict[str, Any]:
    """Run the whole demo and return its summary (see ``--json``).

    With ``keep_serving`` the devstore stays up after the syncs (it stops when that stack
    closes), so the stores the demo registered can still be synced from the Dagster UI.
    """
    from devstore.server import create_world, start_in_thread
    from orchestration.control import ControlSettings, StoreRegistry
    from orchestration.defs.instance import in_process_tags, local_instance
    from orchestration.defs.shopify.checks import live_rows_by_shop
    from orchestration.defs.shopify.definitions import build_shopify_defs
    from orchestration.defs.shopify.partitions import add_store_partition
    from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths
    from pipelines.loader import warehouse_counts
    from pipelines.warehouse_io import table_counts

    started = time.perf_counter()
    data_dir = data_dir.resolve()
    _fresh_data_dir(data_dir)
    control_url = f"sqlite:///{data_dir / 'control.db'}"
    registry = StoreRegistry(ControlSettings(data_dir=data_dir, control_url=control_url))
    # The demo's folder is a data folder of its own (control database, key, warehouse), so its
    # stores belong to the default project there: data/demo/warehouse.duckdb and so on.
    instance = local_instance()

    # The shops' history ends today (midnight UTC), not on the generator's fixed date: the
    # intelligence run computes as of now, and a history that stopped months ago would age
    # every demo customer into "lost" and leave too few recent buyers to fit CLV.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    world = create_world(stores=stores, customers=customers, seed=seed, now=today)
    devstore = start_in_thread(world)
    if keep_serving is not None:
        keep_serving.callback(devstore.stop)
    runs: list[dict[str, Any]] = []
    try:
        shops = devstore.shops
        for shop in shops:
            registry.connect_store(
                shop["domain"],
                access_token=shop["access_token"],
                api_base_url=shop["base_url"],
                scopes=shop["scopes"],
            )
            add_store_partition(instance, shop["domain"])
        paths = SyncPaths.under(data_dir)
        defs = build_shopify_defs(
            ShopifyStores(
                data_dir=str(data_dir), control_url=control_url, project="default", bulk_poll_interval_s=0.1
            ),
            paths,
        )
        job = defs.resolve_job_def("shopify_sync")

        def sync(shop: dict[str, Any]) -> dict[str, Any]:
            run_started = time.perf_counter()
            result = job.execute_in_process(
                instance=instance,
                partition_key=shop["domain"],
                run_config=_QUIET,
                tags={"shopsync/trigger": "demo", **in_process_tags()},
                raise_on_error=False,
            )
            return {
                "store": shop["domain"],
                "run_id": result.run_id,
                "success": result.success,
                "seconds": round(time.perf_counter() - run_started, 2),
            }

        # One run per store, one after the other: execute_in_process is not safe to call
        # from several threads (the daemon runs stores side by side in production).
        runs = [sync(shop) for shop in shops]
    finally:
        if keep_serving is None:
            devstore.stop()
    if all(run["success"] for run in runs):
        runs.append(_refresh_intelligence(instance, paths))

    warehouse = paths.warehouse_path
    by_store = live_rows_by_shop(warehouse)
    statuses = {
        s.domain: {
            e.entity: {"state": e.state.value, "error": e.last_error}
            for e in registry.entity_statuses(s.domain)
        }
        for s in registry.list_stores()
    }
    registry.close()
    tables = {f"shopify.{t}": n for t, n in warehouse_counts(warehouse).items()}
    notes: list[str] = []
    if not tables.get("shopify.customer_metafields"):
        notes.append(METAFIELDS_NOTE)
    return {
        "warehouse": str(warehouse),
        "tables": {**tables, **table_counts(warehouse, "core")},
        **_intelligence_summary(warehouse),
        "notes": notes,
        "stores": {
            shop: {f"shopify.{t}": counts.get(shop, 0) for t, counts in sorted(by_store.items())}
            for shop in sorted(statuses)
        },
        "entity_status": statuses,
        "runs": runs,
        "seconds": round(time.perf_counter() - started, 2),
        "dagster_home": str(instance.root_directory),
        "control_db": str(data_dir / "control.db"),
        "ui": UI_COMMAND,
    }


def _refresh_intelligence(instance: Any, paths: Any) -> dict[str, Any]:
    """Materialise identity, metrics, consent, contacts and the analyst snapshot on the same instance."""
    from orchestration.defs.instance import in_process_tags
    from orchestration.defs.intelligence.definitions import build_intelligence_defs

    started = time.perf_counter()
    job = build_intelligence_defs(paths).resolve_job_def("intelligence_refresh")
    result = job.execute_in_process(
        instance=instance,
        run_config=_QUIET,
        tags={"shopsync/trigger": "demo", **in_process_tags()},
        raise_on_error=False,
    )
    return {
        "store": "all stores (intelligence)",
        "run_id": result.run_id,
        "success": result.success,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _intelligence_summary(warehouse: Path) -> dict[str, Any]:
    """Identity outcomes, the RFM distribution, the top 5 contacts by CLV and the snapshot path."""
    from pipelines.warehouse_io import connect, table_exists

    snapshot = warehouse.parent / "snapshot" / "analyst.duckdb"
    out: dict[str, Any] = {
        "snapshot": str(snapshot) if snapshot.exists() else None,
        "identity": {},
        "rfm": {},
        "top_clv": [],
    }
    if not warehouse.exists():
        return out
    con = connect(warehouse, read_only=True)
    try:
        if table_exists(con, "core.identity_outcomes"):
            frame = con.sql("SELECT * FROM core.identity_outcomes ORDER BY run_number DESC LIMIT 1").pl()
            out["identity"] = {
                k: v
                for k, v in frame.row(0, named=True).items()
                if k not in {"run_id", "as_of", "run_number"}
            }
        if table_exists(con, "core.contact_metrics"):
            out["rfm"] = dict(
                con.execute(
                    "SELECT segment, count(*) FROM core.contact_metrics GROUP BY segment ORDER BY 2 DESC, 1"
                ).fetchall()
            )
        if table_exists(con, "core.contacts"):
            rows = con.execute(
                "SELECT m.contact_id, trim(coalesce(c.first_name, '') || ' ' || coalesce(c.last_name, '')), "
                "c.email, m.order_count, CAST(m.total_spent AS DOUBLE), round(m.clv_12m, 2), m.segment "
                "FROM core.contact_metrics m JOIN core.contacts c USING (contact_id) "
                "WHERE m.clv_12m IS NOT NULL ORDER BY m.clv_12m DESC, m.contact_id LIMIT 5"
            ).fetchall()
            keys = ("contact_id", "name", "email", "orders", "total_spent", "clv_12m", "segment")
            out["top_clv"] = [dict(zip(keys, r, strict=True)) for r in rows]
    finally:
        con.close()
    return out


def _print_intelligence(summary: dict[str, Any]) -> None:
    identity = summary.get("identity") or {}
    if identity:
        click.echo("")
        click.echo("Identity resolution:")
        click.echo("  " + "  ".join(f"{k}={v}" for k, v in identity.items()))
    if summary.get("rfm"):
        click.echo("")
        click.echo("RFM segments (contacts):")
        for segment, n in sorted(summary["rfm"].items(), key=lambda item: (-item[1], str(item[0]))):
            click.echo(f"  {str(segment).ljust(20)}{str(n).rjust(8)}")
    if summary.get("top_clv"):
        click.echo("")
        click.echo("Top 5 contacts by predicted 12-month CLV (reporting currency):")
        for row in summary["top_clv"]:
            click.echo(
                f"  {row['contact_id']}  {(row['name'] or '-')[:24].ljust(24)} {str(row['orders']).rjust(4)} orders"
                f"  spent {row['total_spent']:>10.2f}  CLV {row['clv_12m']:>10.2f}  {row['segment']}"
            )


def _print_summary(summary: dict[str, Any]) -> None:
    stores = sorted(summary["stores"])
    tables = sorted(summary["tables"])
    width = max([len(t) for t in tables] + [10])
    click.echo("")
    click.echo("Rows per table per store (live rows):")
    click.echo(
        "  "
        + "table".ljust(width)
        + "".join(s.removesuffix(".myshopify.com").rjust(18) for s in stores)
        + "total".rjust(10)
    )
    for table in tables:
        # core.* spans stores: no per-store count
        cells = "".join(str(summary["stores"][s].get(table, "-")).rjust(18) for s in stores)
        click.echo("  " + table.ljust(width) + cells + str(summary["tables"][table]).rjust(10))
    problems = [
        f"  {store} {entity}: {info['state']} - {info['error']}"
        for store, entities in summary["entity_status"].items()
        for entity, info in entities.items()
        if info["state"] != "Synced"
    ]
    if problems:
        click.echo("")
        click.echo("Entities not fully synced:")
        for line in problems:
            click.echo(line)
    for note in summary.get("notes", []):
        click.echo("")
        click.echo(f"Note: {note}")
    _print_intelligence(summary)
    click.echo("")
    for run in summary["runs"]:
        outcome = "succeeded" if run["success"] else "FAILED"
        click.echo(f"Dagster run {run['run_id']} for {run['store']} {outcome} in {run['seconds']} s")
    click.echo(f"Time taken:   {summary['seconds']} s")
    click.echo(f"Warehouse:    {summary['warehouse']}")
    if summary.get("snapshot"):
        click.echo(f'Snapshot:     {summary["snapshot"]}   (shopsync query --snapshot PATH "SELECT ...")')
    click.echo(f"Dagster home: {summary['dagster_home']}")
    click.echo(f"Open the UI:  {summary['ui']}")


@click.command(name="demo")
@click.option("--stores", default=2, show_default=True, type=click.IntRange(1, 20), help="Generated shops.")
@click.option(
    "--customers",
    default=500,
    show_default=True,
    type=click.IntRange(10, 100_000),
    help="Customers per shop.",
)
@click.option("--seed", default=7, show_default=True, help="Generator seed (same seed, same shops).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="The demo's own folder (emptied on every run): control DB, landing zone, warehouse.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the summary.")
@click.option(
    "--ui",
    is_flag=True,
    help="Afterwards keep the local Shopify running and start the Dagster UI on the demo (Ctrl-C stops both).",
)
@click.option(
    "--ui-port", default=3000, show_default=True, type=click.IntRange(1, 65535), help="Port of the UI."
)
def command(
    stores: int, customers: int, seed: int, data_dir: Path, as_json: bool, ui: bool, ui_port: int
) -> None:
    """Start a local Shopify, sync it end to end through Dagster and print a summary."""
    if not as_json:
        click.echo(f"Starting a devstore with {stores} stores of ~{customers} customers and syncing them ...")
    with contextlib.ExitStack() as serving:
        # Keep stdout for the summary: anything the libraries print goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            summary = run_demo(stores, customers, seed, data_dir, keep_serving=serving if ui else None)
        if as_json:
            click.echo(json.dumps(summary, indent=None, sort_keys=True))
        else:
            _print_summary(summary)
        if not all(run["success"] for run in summary["runs"]):
            raise SystemExit(1)
        if ui:
            raise SystemExit(serve_ui(Path(summary["dagster_home"]), data_dir.resolve(), ui_port))


def serve_ui(dagster_home: Path, data_dir: Path, port: int) -> int:
    """Run ``dagster dev`` (webserver and daemon) on the demo's instance and data until interrupted.

    The code location reads the demo's control database, landing zone and warehouse through
    ``SHOPSYNC_DATA_DIR``; the devstore keeps serving in this process meanwhile, so a store's
    re-sync launched from the UI reaches its (local) Shopify.
    """
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "SHOPSYNC_DATA_DIR": str(data_dir)}
    for key in ("SHOPSYNC_CONTROL_URL", "SHOPSYNC_PROJECT"):
        env.pop(key, None)  # the demo's stores live in its own control database, default project
    dagster = Path(sys.executable).with_name("dagster")
    argv = [str(dagster), "dev", "-m", "orchestration.definitions", "-h", "127.0.0.1", "-p", str(port)]
    click.echo(
        f"\nDagster UI: http://127.0.0.1:{port}   (the local Shopify keeps running; Ctrl-C stops both)"
    )
    child = subprocess.Popen(argv, env=env)

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # a terminated demo takes its UI down with it

    signal.signal(signal.SIGTERM, _stop)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)  # dagster dev shuts its webserver and daemon down on SIGINT
        try:
            return child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()
