"""``shopsync demo --json`` end to end, as a user runs it: a subprocess in a fresh folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

SHOPSYNC = Path(sys.executable).with_name("shopsync")


@pytest.mark.slow
def test_demo_syncs_through_a_persistent_dagster_instance(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "SHOPSYNC_"))}
    completed = subprocess.run(
        [str(SHOPSYNC), "demo", "--json", "--customers", "100"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, completed.stdout  # exactly one JSON object on stdout
    summary = json.loads(lines[0])

    warehouse = Path(summary["warehouse"])
    assert warehouse == (tmp_path / "data" / "demo" / "warehouse.duckdb").resolve() and warehouse.exists()
    for table in ("shopify.customers", "shopify.orders", "shopify.order_line_items", "shopify.products"):
        assert summary["tables"][table] > 0, table
    assert len(summary["stores"]) == 2
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        assert (
            con.execute("SELECT count(*) FROM shopify.customers WHERE _deleted_at IS NULL").fetchone()[0]
            == (summary["tables"]["shopify.customers"])
        )
    finally:
        con.close()
    assert all(run["success"] for run in summary["runs"])

    # the runs and store partitions are in the instance `dagster dev` opens afterwards
    home = tmp_path / ".dagster_home"
    assert Path(summary["dagster_home"]) == home.resolve() and (home / "dagster.yaml").exists()
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert sorted(instance.get_dynamic_partitions("stores")) == sorted(summary["stores"])
        runs = instance.get_runs()
        assert {r.run_id for r in runs} == {r["run_id"] for r in summary["runs"]}
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    finally:
        instance.dispose()
    # the store tokens never reach the warehouse or the summary
    assert "shpat_" not in completed.stdout
    assert b"shpat_" not in warehouse.read_bytes()
