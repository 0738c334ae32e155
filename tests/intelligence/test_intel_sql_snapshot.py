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
from transforms.rfm import PROSPECT, SEGMENTS

MARTS = {
    "customer_360",
    "rfm_segments",
    "clv",
    "consent_audit",
    "contact_consent_audit",
    "identity_review",
    "store_overview",
}
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


MART_COLUMNS: dict[str, list[str]] = {
    "customer_360": [
        "contact_id", "first_name", "last_name", "email", "phone", "country", "shops", "customer_count",
        "record_count", "order_count", "total_spent", "average_order_value", "first_order_at", "last_order_at",
        "churn_risk", "clv_tier", "rfm_segment", "clv_12m", "email_consented", "sms_consented",
        "lifecycle_stage", "lead_status", "owner",
    ],
    "rfm_segments": [
        "segment", "contacts", "orders", "total_spent", "avg_days_since_last_order", "predicted_clv_12m",
    ],
    "clv": [
        "contact_id", "first_name", "last_name", "email", "currency_code", "order_count", "total_spent",
        "p_alive", "expected_purchases_12m", "predicted_average_value", "clv_12m", "clv_tier", "clv_rank",
    ],
    "consent_audit": [
        "recorded_at", "shop", "customer_id", "contact_id", "channel", "previous_state", "state", "updated_at",
        "source", "source_ref",
    ],
    "contact_consent_audit": [
        "recorded_at", "contact_id", "first_name", "last_name", "email", "channel", "reason", "previous_state",
        "state", "updated_at", "source", "previous_contact_ids",
    ],
    "identity_review": [
        "reason", "weight", "contact_id_l", "shop_l", "record_type_l", "record_id_l", "first_name_l",
        "last_name_l", "email_l", "contact_id_r", "shop_r", "record_type_r", "record_id_r", "first_name_r",
        "last_name_r", "email_r", "explanation",
    ],
    "store_overview": [
        "shop", "customers", "orders", "guest_orders", "currency_code", "net_revenue", "contacts",
        "contacts_shared_with_other_stores",
    ],
}  # fmt: skip


@pytest.mark.slow
def test_marts_have_their_columns_and_real_content(intel: Any) -> None:
    # an ambiguous pair the way shops get them: a second account typed with a partner's
    # first name on the same mailbox (same email, different first names: not merged, reviewed)
    con = duckdb.connect(str(intel.paths.warehouse_path))
    try:
        victim = con.execute(
            "SELECT shop, id, email FROM shopify.customers WHERE email IS NOT NULL AND first_name IS NOT NULL "
            "AND _deleted_at IS NULL ORDER BY shop, id LIMIT 1"
        ).fetchone()
        con.execute(
            "INSERT INTO shopify.customers SELECT * REPLACE (id + 999999 AS id, 'Zebedee' AS first_name) "
            "FROM shopify.customers WHERE shop = ? AND id = ?",
            [victim[0], victim[1]],
        )
    finally:
        con.close()
    intel.refresh()
    con = duckdb.connect(str(intel.paths.warehouse_path), read_only=True)
    try:
        marts = {name: con.sql(sql).pl() for name, sql in mart_queries().items() if name not in OPS_MARTS}
        contacts = con.execute("SELECT count(*) FROM core.contacts").fetchone()[0]
        buyers = con.execute("SELECT count(*) FROM core.contact_metrics WHERE order_count > 0").fetchone()[0]
        stores = con.execute("SELECT count(DISTINCT shop) FROM shopify.customers").fetchone()[0]
    finally:
        con.close()
    for name, frame in marts.items():
        assert frame.columns == MART_COLUMNS[name], name

    c360 = marts["customer_360"]
    assert c360.height == contacts == c360["contact_id"].n_unique()
    assert c360.filter(c360["order_count"] > 0).height == buyers > 0
    assert c360["total_spent"].drop_nulls().len() == contacts and c360["email_consented"].any()
    assert c360.filter(c360["shops"].list.len() > 1).height > 0  # people in both stores

    rfm = marts["rfm_segments"]
    assert set(rfm["segment"]) <= {*SEGMENTS, PROSPECT} and rfm["contacts"].sum() == contacts
    assert rfm.filter(rfm["segment"] != PROSPECT)["orders"].min() > 0

    clv = marts["clv"]
    assert clv.height == contacts and clv["clv_rank"].is_sorted() and clv["clv_rank"][0] == 1
    # this small world has too few repeat buyers for the CLV fit (the demo test covers a fitted
    # one): the mart still lists every person with the value behind the prediction
    same = clv.join(c360, on="contact_id").filter(clv.join(c360, on="contact_id")["order_count"] > 0)
    assert same.height == buyers and (same["total_spent"] == same["total_spent_right"]).all()

    audit = marts["consent_audit"]
    assert audit.height > 0 and audit["contact_id"].null_count() == 0
    assert set(audit["state"]) <= {
        "SUBSCRIBED",
        "NOT_SUBSCRIBED",
        "UNSUBSCRIBED",
        "PENDING",
        "INVALID",
        "REDACTED",
    }
    people = marts["contact_consent_audit"]
    assert people.height > 0 and set(people["reason"]) == {"new contact"}  # the first run: all new

    review = marts["identity_review"]
    reviewed = review.filter(
        ((review["record_id_l"] == str(victim[1])) | (review["record_id_r"] == str(victim[1])))
        & (review["shop_l"] == victim[0])
    )
    assert reviewed.height == 1 and reviewed["reason"][0] == "same email, different first names"
    assert {reviewed["first_name_l"][0], reviewed["first_name_r"][0]} >= {"Zebedee"}
    assert reviewed["email_l"][0] == reviewed["email_r"][0]

    overview = marts["store_overview"]
    assert overview.height == stores == 2
    assert (overview["orders"] > 0).all() and (overview["contacts_shared_with_other_stores"] > 0).all()
    assert set(overview["currency_code"]) == {"USD", "GBP"}


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
