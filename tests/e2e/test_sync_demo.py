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

from orchestration.commands.demo import _print_intelligence
from transforms.identity import OUTCOMES
from transforms.rfm import PROSPECT, SEGMENTS

SHOPSYNC = Path(sys.executable).with_name("shopsync")


@pytest.mark.slow
def test_demo_syncs_through_a_persistent_dagster_instance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
    _assert_intelligence(summary, warehouse, capsys)

    # the store tokens never reach the warehouse or the summary
    assert "shpat_" not in completed.stdout
    assert b"shpat_" not in warehouse.read_bytes()


def _assert_intelligence(summary: dict, warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo's identity outcomes, RFM distribution and top contacts by CLV match the warehouse."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        records, contacts = con.execute(
            "SELECT count(*), count(DISTINCT contact_id) FROM core.contact_identities"
        ).fetchone()
        rfm = dict(con.execute("SELECT segment, count(*) FROM core.contact_metrics GROUP BY 1").fetchall())
        top = con.execute(
            "SELECT contact_id, round(clv_12m, 2) FROM core.contact_metrics WHERE clv_12m IS NOT NULL "
            "ORDER BY clv_12m DESC, contact_id LIMIT 5"
        ).fetchall()
    finally:
        con.close()

    identity = summary["identity"]
    assert set(OUTCOMES) <= set(identity)
    assert identity["records"] == records and identity["contacts"] == contacts
    # two stores whose customers overlap: people are found behind several records
    assert identity["contacts"] < identity["records"]
    assert identity["email_match"] > 0 and identity["probabilistic_match"] + identity["phone_match"] > 0
    assert (
        sum(identity[k] for k in ("email_match", "phone_match", "probabilistic_match", "unmatched"))
        == records
    )

    assert summary["rfm"] == rfm and sum(rfm.values()) == contacts
    assert set(rfm) <= {*SEGMENTS, PROSPECT} and len(set(rfm) & set(SEGMENTS)) >= 5

    shown = summary["top_clv"]
    assert len(shown) == 5 and [(r["contact_id"], r["clv_12m"]) for r in shown] == top
    assert all(r["clv_12m"] > 0 and r["orders"] >= 1 and r["segment"] in SEGMENTS for r in shown)

    # and the text a person reads shows the same
    _print_intelligence(summary)
    text = capsys.readouterr().out
    assert "Identity resolution:" in text and f"records={records}" in text and f"contacts={contacts}" in text
    block = text.split("RFM segments (contacts):\n")[1].split("\n\n")[0].splitlines()
    counts = [int(line.split()[-1]) for line in block]
    assert len(counts) == len(rfm) and counts == sorted(counts, reverse=True)  # largest segment first
    assert "Top 5 contacts by predicted 12-month CLV" in text and shown[0]["contact_id"] in text
