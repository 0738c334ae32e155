"""The sql/ marts, the analyst snapshot and ``shopsync query`` over a pipeline-built warehouse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot
from click.testing import CliRunner
from sqlglot import exp

from orchestration.cli import cli
from pipelines.snapshot import (
    DATABASE_NAME,
    SQL_DIR,
    list_views,
    mart_files,
    mart_queries,
    prune_versions,
    publish_snapshot,
)

MARTS = {"customer_360", "rfm_segments", "clv", "consent_audit", "identity_review", "store_overview"}
# Over ops.sync_health, which the sync-health asset writes (run in tests/e2e/test_sync_health.py).
OPS_MARTS = {"sync_health"}


def test_each_sql_file_is_exactly_one_select() -> None:
    files = mart_files()
    assert set(files) == MARTS | OPS_MARTS
    assert {p.parent for p in files.values()} == {SQL_DIR, SQL_DIR / "ops"}
    for name, path in files.items():
        statements = [s for s in sqlglot.parse(path.read_text(), read="duckdb") if s is not None]
        assert len(statements) == 1, name
        assert isinstance(statements[0], exp.Query) and statements[0].find(exp.Select) is not None, name
        assert not isinstance(statements[0], (exp.Insert, exp.Update, exp.Delete, exp.Create)), name


@pytest.mark.slow
def test_marts_run_against_the_pipeline_warehouse(intel: Any) -> None:
    intel.refresh()
    con = duckdb.connect(str(intel.paths.warehouse_path), read_only=True)
    try:
        counts = {
            name: len(con.execute(sql).fetchall())
            for name, sql in mart_queries().items()
            if name not in OPS_MARTS
        }
        contacts = con.execute("SELECT count(*) FROM core.contacts").fetchone()[0]
        stores = con.execute("SELECT count(DISTINCT shop) FROM shopify.customers").fetchone()[0]
    finally:
        con.close()
    assert counts["customer_360"] == counts["clv"] == contacts
    assert counts["store_overview"] == stores == 2
    assert counts["rfm_segments"] >= 2 and counts["consent_audit"] > 0


def _snapshot_path(intel: Any) -> Path:
    return intel.paths.warehouse_path.parent / "snapshot" / DATABASE_NAME


@pytest.mark.slow
def test_snapshot_is_published_and_queryable(intel: Any) -> None:
    intel.refresh()
    database = _snapshot_path(intel)
    views = set(list_views(database))
    assert {f"marts.{m}" for m in MARTS} <= views
    assert {"core.contacts", "core.contact_metrics", "shopify.customers", "shopify.orders"} <= views
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["query", "SELECT count(*) AS n FROM core.contacts", "--snapshot", str(database), "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(intel.paths.warehouse_path), read_only=True)
    contacts = con.execute("SELECT count(*) FROM core.contacts").fetchone()[0]
    con.close()
    assert json.loads(result.output) == {"n": contacts}
    listed = runner.invoke(cli, ["query", "--list", "--snapshot", str(database)])
    assert listed.exit_code == 0 and "marts.rfm_segments" in listed.output.splitlines()
    table = runner.invoke(cli, ["query", "SELECT * FROM marts.rfm_segments", "--snapshot", str(database)])
    assert table.exit_code == 0 and "segment" in table.output.splitlines()[0]

    refused = runner.invoke(cli, ["query", "DROP VIEW core.contacts", "--snapshot", str(database)])
    assert refused.exit_code == 1 and "Query failed" in refused.output and "Traceback" not in refused.output
    missing = runner.invoke(cli, ["query", "SELECT 1", "--snapshot", str(database.parent / "nope.duckdb")])
    assert missing.exit_code == 1 and "No analyst snapshot" in missing.output


ANALYST = """
import json, sys, time, duckdb
database, stop, expected = sys.argv[1], sys.argv[2], set(json.loads(sys.argv[3]))
errors, seen = [], []
from pathlib import Path
while not Path(stop).exists() or not seen:
    try:
        con = duckdb.connect(database, read_only=True)
        try:
            views = {f"{s}.{v}" for s, v in con.execute(
                "SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
            if views != expected:
                errors.append("incomplete view set: " + ",".join(sorted(expected - views)))
            seen.append(con.execute("SELECT count(*) FROM core.contacts").fetchone()[0])
        finally:
            con.close()
    except duckdb.Error as exc:
        errors.append(str(exc))
print(json.dumps({"errors": errors[:5], "seen": sorted(set(seen)), "reads": len(seen)}))
"""


@pytest.mark.slow
def test_a_reader_holding_the_snapshot_never_blocks_or_sees_half_a_refresh(
    intel: Any, tmp_path: Path
) -> None:
    intel.refresh()
    database = _snapshot_path(intel)
    reader = duckdb.connect(str(database), read_only=True)
    before = reader.execute("SELECT count(*) FROM core.contacts").fetchone()[0]
    expected = sorted(list_views(database))
    stop = tmp_path / "stop"
    # an analyst in its own process, opening the snapshot again and again during the refreshes
    analyst = subprocess.Popen(
        [sys.executable, "-c", ANALYST, str(database), str(stop), json.dumps(expected)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # the pipeline writes the warehouse and publishes three times while a reader holds the file open
        intel.refresh()
        for _ in range(2):
            publish_snapshot(intel.paths.warehouse_path, database.parent)
    finally:
        stop.touch()
        out, _ = analyst.communicate(timeout=60)
    report = json.loads(out)
    assert report["errors"] == [] and report["reads"] > 0
    assert report["seen"] == [before]
    # the long-lived reader still reads its (old) version
    assert reader.execute("SELECT count(*) FROM core.contacts").fetchone()[0] == before
    reader.close()
    versions = sorted(p.name for p in database.parent.iterdir() if p.is_dir())
    assert len(versions) == 4  # nothing pruned while young
    assert prune_versions(database.parent, keep=2, min_age_s=0) == versions[:2]
    assert set(list_views(database)) == set(expected)


def test_publish_without_a_warehouse_says_what_to_do(tmp_path: Path) -> None:
    from pipelines.snapshot import SnapshotError

    with pytest.raises(SnapshotError, match="load some data first"):
        publish_snapshot(tmp_path / "missing.duckdb", tmp_path / "snapshot")
