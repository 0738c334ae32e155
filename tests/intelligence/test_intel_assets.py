"""The intelligence assets over a warehouse built by the real pipeline (devstore → sync → DuckDB)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl
import pytest

from orchestration.defs.intelligence import checks
from orchestration.defs.intelligence.assets import core_key
from orchestration.defs.intelligence.definitions import build_intelligence_defs
from orchestration.defs.intelligence.resources import IntelligenceSettings
from orchestration.defs.intelligence.schedules import as_of_run_config, nightly_request
from pipelines.engagement import import_file

CORE_ASSETS = {
    "contact_identities",
    "identity_events",
    "identity_review",
    "identity_outcomes",
    "customer_metrics",
    "contact_metrics",
    "consent",
    "contact_consent",
    "consent_audit",
    "contacts",
}


def _rows(path: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _frame(path: Path, sql: str) -> pl.DataFrame:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.sql(sql).pl()
    finally:
        con.close()


@pytest.mark.slow
def test_assets_materialise_with_outcomes_and_every_check_passes(intel: Any) -> None:
    result = intel.refresh()
    keys = {e.asset_key for e in result.get_asset_materialization_events()}
    assert {core_key(n) for n in CORE_ASSETS} <= keys
    assert dg.AssetKey(["analyst", "snapshot"]) in keys
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == len(checks.intelligence_checks)
    assert all(e.passed for e in evaluations), [
        (e.check_name, e.metadata) for e in evaluations if not e.passed
    ]

    wh = intel.paths.warehouse_path
    customers = _rows(wh, "SELECT count(*) FROM shopify.customers WHERE _deleted_at IS NULL")[0][0]
    guests = _rows(
        wh, "SELECT count(*) FROM shopify.orders WHERE customer_id IS NULL AND _deleted_at IS NULL"
    )[0][0]
    identities = _rows(
        wh, "SELECT count(*) FILTER (WHERE record_type = 'customer'), count(*) FROM core.contact_identities"
    )[0]
    assert identities[0] == customers and identities[1] >= customers + guests
    contacts = _rows(wh, "SELECT count(*), count(DISTINCT contact_id) FROM core.contacts")[0]
    assert (
        contacts[0]
        == contacts[1]
        == _rows(wh, "SELECT count(DISTINCT contact_id) FROM core.contact_identities")[0][0]
    )
    # two stores with overlapping customers: some people are in both
    assert _rows(wh, "SELECT count(*) FROM core.contacts WHERE len(shops) > 1")[0][0] > 0

    outcomes = _frame(wh, "SELECT * FROM core.identity_outcomes")
    assert outcomes.height == 1 and outcomes["records"][0] == identities[1]
    meta = result.asset_materializations_for_node("core__identity")
    by_key = {m.asset_key: m.metadata for m in meta}
    assert by_key[core_key("identity_outcomes")]["outcome.contacts"].value == contacts[0]

    metrics = _frame(wh, "SELECT * FROM core.contact_metrics")
    assert metrics.height == contacts[0]
    assert metrics.filter(pl.col("order_count") > 0)["segment"].is_in(["prospect"]).sum() == 0
    assert (metrics["clv_12m"].drop_nulls() >= 0).all()
    per_customer = _rows(wh, "SELECT count(*) FROM core.customer_metrics")[0][0]
    assert 0 < per_customer <= customers
    audit = _rows(wh, "SELECT count(*) FROM core.consent_audit")[0][0]
    assert audit == _rows(wh, "SELECT count(*) FROM core.consent")[0][0]


@pytest.mark.slow
def test_contact_ids_are_stable_across_runs(intel: Any) -> None:
    intel.refresh()
    wh = intel.paths.warehouse_path
    first = _frame(
        wh, "SELECT shop, record_type, record_id, contact_id FROM core.contact_identities ORDER BY ALL"
    )
    second_run = intel.refresh()
    second = _frame(
        wh, "SELECT shop, record_type, record_id, contact_id FROM core.contact_identities ORDER BY ALL"
    )
    assert first.equals(second)
    outcomes = _frame(wh, "SELECT run_number, new_contacts FROM core.identity_outcomes ORDER BY run_number")
    assert outcomes["run_number"].to_list() == [1, 2]
    assert outcomes["new_contacts"].to_list()[1] == 0
    assert all(e.passed for e in second_run.get_asset_check_evaluations())
    previous = _frame(wh, "SELECT * FROM core.contact_identities_previous ORDER BY ALL")
    assert previous.equals(first)
    # nothing changed: the second run audits no consent change
    assert _rows(wh, "SELECT count(DISTINCT recorded_at) FROM core.consent_audit")[0][0] == 1


@pytest.mark.slow
def test_checks_fail_on_corrupted_data(intel: Any) -> None:
    intel.refresh()
    intel.refresh()
    wh = intel.paths.warehouse_path
    con = duckdb.connect(str(wh))
    try:
        victim = con.execute(
            "SELECT contact_id FROM core.contact_identities ORDER BY contact_id LIMIT 1"
        ).fetchone()[0]
        # an id vanishes without a merge event; a record gets two contacts; scores and CLV go bad
        con.execute(
            "UPDATE core.contact_identities SET contact_id = 'ct_intruder' WHERE contact_id = ?", [victim]
        )
        con.execute(
            "INSERT INTO core.contact_identities SELECT shop, record_type, record_id, 'ct_other', rule, score "
            "FROM core.contact_identities LIMIT 1"
        )
        con.execute("INSERT INTO core.contacts SELECT * FROM core.contacts LIMIT 1")
        con.execute(
            "UPDATE core.contact_metrics SET r_score = 7 WHERE contact_id IN (SELECT contact_id FROM core.contact_metrics WHERE r_score IS NOT NULL LIMIT 1)"
        )
        con.execute(
            "UPDATE core.contact_metrics SET clv_12m = -5 WHERE contact_id IN (SELECT contact_id FROM core.contact_metrics LIMIT 1)"
        )
        # a newer unsubscribe the resolved state ignores
        con.execute(
            "UPDATE core.consent SET state = 'SUBSCRIBED', updated_at = TIMESTAMPTZ '2020-01-01 00:00:00+00' WHERE rowid = (SELECT min(rowid) FROM core.consent)"
        )
        con.execute(
            "INSERT INTO core.consent_observations SELECT shop, customer_id, channel, 'UNSUBSCRIBED', NULL, "
            "TIMESTAMPTZ '2021-01-01 00:00:00+00', 'engagement', 'test' FROM core.consent WHERE rowid = (SELECT min(rowid) FROM core.consent)"
        )
    finally:
        con.close()
    # and the deployment's FX table lost its GBP rate (the second store sells in GBP)
    settings = IntelligenceSettings(fx_rates={"USD": "1"})
    for check in checks.intelligence_checks:
        needs = check.required_resource_keys
        outcome = check(paths=intel.paths, **({"intelligence": settings} if "intelligence" in needs else {}))
        assert not outcome.passed, check.check_key.name
        assert outcome.metadata["failures"].value >= 1


def test_check_rules_on_frames() -> None:
    previous = pl.DataFrame({"contact_id": ["a", "b", "c"]})
    current = pl.DataFrame({"contact_id": ["a", "d"]})
    events = pl.DataFrame(
        {
            "event_type": ["merge"],
            "contact_id": ["a"],
            "related_contact_ids": [["a", "b"]],
            "records": [["x"]],
        }
    )
    assert checks.lost_contact_ids(previous, current, events) == ["c"]
    ids = pl.DataFrame(
        {
            "shop": ["s", "s", "s"],
            "record_type": ["customer"] * 3,
            "record_id": ["1", "1", "2"],
            "contact_id": ["a", "b", "a"],
        }
    )
    assert checks.records_in_several_contacts(ids) == 1
    scores = pl.DataFrame({"r_score": [1, None, 5], "f_score": [5, None, 0], "m_score": [3, None, 2]})
    assert checks.rfm_scores_out_of_range(scores) == 1
    assert checks.negative_clv(pl.DataFrame({"clv_12m": [1.0, None, -0.1], "clv_tier": ["a", "b", "c"]})) == 1


@pytest.mark.slow
def test_engagement_stop_unsubscribes_and_is_loaded_once(intel: Any, tmp_path: Path) -> None:
    intel.refresh()
    wh = intel.paths.warehouse_path
    shop, customer_id, email = _rows(
        wh,
        "SELECT k.shop, k.customer_id, c.email FROM core.consent k JOIN shopify.customers c "
        "ON c.shop = k.shop AND c.id = k.customer_id "
        "WHERE k.channel = 'email' AND k.state = 'SUBSCRIBED' AND c.email IS NOT NULL ORDER BY ALL LIMIT 1",
    )[0]
    feed = tmp_path / "feed.jsonl"
    event = {
        "event_id": "evt-unsub-1",
        "occurred_at": datetime.now(UTC).isoformat(),
        "type": "email_unsubscribe",
        "email": f"  {email.upper()} ",
        "shop": shop,
    }
    feed.write_text(json.dumps(event) + "\n")
    import_file(feed, intel.paths.landing_path)
    import_file(feed, intel.paths.landing_path)  # the same event sent twice
    intel.refresh()
    assert _rows(wh, "SELECT count(*) FROM engagement.events")[0][0] == 1
    state = _rows(
        wh,
        "SELECT state, source FROM core.consent WHERE shop = ? AND customer_id = ? AND channel = 'email'",
        [shop, customer_id],
    )
    assert state == [("UNSUBSCRIBED", "engagement")]
    audit = _rows(
        wh,
        "SELECT previous_state, state FROM core.consent_audit WHERE shop = ? AND customer_id = ? AND channel = 'email' "
        "ORDER BY recorded_at DESC LIMIT 1",
        [shop, customer_id],
    )
    assert audit == [("SUBSCRIBED", "UNSUBSCRIBED")]


@pytest.mark.slow
def test_nightly_schedule_passes_the_tick_date_as_of(intel: Any) -> None:
    request = nightly_request(datetime(2026, 11, 20, 4, 0, tzinfo=UTC))
    assert request.run_key == "intelligence:2026-11-20"
    assert request.run_config == as_of_run_config("2026-11-20")
    intel.refresh(request.run_config)
    as_of = _rows(intel.paths.warehouse_path, "SELECT DISTINCT as_of FROM core.contact_metrics")
    assert [r[0].astimezone(UTC) for r in as_of] == [datetime(2026, 11, 20, tzinfo=UTC)]


@pytest.mark.slow
def test_a_currency_without_rate_warns_and_keeps_its_totals(intel: Any) -> None:
    # a deployment whose FX table only knows dollars, over a US and a UK (GBP) store
    settings = IntelligenceSettings(fx_rates={"USD": "1"}, churn_high_days=60, churn_medium_days=30)
    run = type(intel)(
        intel.data_dir, intel.paths, build_intelligence_defs(intel.paths, settings), intel.instance
    )
    result = run.refresh()
    meta = {m.asset_key: m.metadata for m in result.asset_materializations_for_node("core__metrics")}
    assert meta[core_key("contact_metrics")]["currencies_without_rate"].value == ["GBP"]
    fx_check = [e for e in result.get_asset_check_evaluations() if e.check_name == "fx_rates_complete"]
    assert len(fx_check) == 1 and not fx_check[0].passed
    assert fx_check[0].severity == dg.AssetCheckSeverity.WARN
    assert "No exchange rate to USD for GBP" in (fx_check[0].description or "")
    wh = intel.paths.warehouse_path
    gbp = _frame(wh, "SELECT * FROM core.customer_metrics WHERE currency_code = 'GBP'")
    assert gbp.height > 0 and gbp["total_spent"].null_count() == 0
    assert gbp["total_spent_reporting"].null_count() == gbp.height
    contacts = _frame(
        wh,
        "SELECT total_spent, [s.currency_code FOR s IN spend_by_currency] AS currencies, churn_risk, "
        "days_since_last_order FROM core.contact_metrics WHERE order_count > 0",
    )
    in_gbp = contacts.filter(pl.col("currencies").list.contains("GBP"))
    assert in_gbp.height > 0 and in_gbp["total_spent"].null_count() == in_gbp.height
    only_usd = contacts.filter(pl.col("currencies") == ["USD"])
    assert only_usd.height > 0 and only_usd["total_spent"].null_count() == 0
    # the churn thresholds of the resource config, not the defaults
    expected = (
        pl.when(pl.col("days_since_last_order") > 60)
        .then(pl.lit("high"))
        .when(pl.col("days_since_last_order") > 30)
        .then(pl.lit("medium"))
        .otherwise(pl.lit("low"))
    )
    assert contacts.select((pl.col("churn_risk") == expected).all()).item()


@pytest.mark.slow
def test_a_stale_shopify_subscribe_cannot_undo_a_recorded_unsubscribe(intel: Any) -> None:
    intel.refresh()
    wh = intel.paths.warehouse_path
    # an unsubscribe that is its person's latest word (another record of the same person that
    # subscribed later would rightly make the person subscribed)
    shop, customer_id, unsubscribed_at = _rows(
        wh,
        "SELECT c.shop, c.customer_id, c.updated_at FROM core.consent c "
        "JOIN core.contact_identities i ON i.shop = c.shop AND i.record_type = 'customer' "
        "AND i.record_id = CAST(c.customer_id AS VARCHAR) "
        "WHERE c.channel = 'email' AND c.state = 'UNSUBSCRIBED' AND c.updated_at IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM core.contact_identities j JOIN core.consent d ON d.shop = j.shop "
        "AND CAST(d.customer_id AS VARCHAR) = j.record_id AND d.channel = 'email' "
        "WHERE j.contact_id = i.contact_id AND d.updated_at > c.updated_at) ORDER BY ALL LIMIT 1",
    )[0]
    contact = _rows(
        wh,
        "SELECT contact_id FROM core.contact_identities WHERE shop = ? AND record_type = 'customer' "
        "AND record_id = ?",
        [shop, str(customer_id)],
    )[0][0]
    # a re-sync from an old export puts back the subscribed state the shopper had before
    con = duckdb.connect(str(wh))
    try:
        con.execute(
            "UPDATE shopify.customers SET email_marketing_state = 'SUBSCRIBED', "
            "email_consent_updated_at = ?::TIMESTAMPTZ - INTERVAL 30 DAY WHERE shop = ? AND id = ?",
            [unsubscribed_at, shop, customer_id],
        )
    finally:
        con.close()
    result = intel.refresh()
    state = _rows(
        wh,
        "SELECT state FROM core.consent WHERE shop = ? AND customer_id = ? AND channel = 'email'",
        [shop, customer_id],
    )
    assert state == [("UNSUBSCRIBED",)]
    person = _rows(
        wh, "SELECT state FROM core.contact_consent WHERE contact_id = ? AND channel = 'email'", [contact]
    )
    assert person == [("UNSUBSCRIBED",)]
    ratchet = [e for e in result.get_asset_check_evaluations() if e.check_name == "consent_ratchet_holds"]
    assert ratchet[0].passed
    assert _rows(wh, "SELECT count(*) FROM core.contact_consent_audit")[0][0] > 0
    # had the run let it through, the check compares with the recorded state and goes red
    con = duckdb.connect(str(wh))
    try:
        con.execute(
            "UPDATE core.consent SET state = 'SUBSCRIBED', updated_at = updated_at - INTERVAL 30 DAY "
            "WHERE shop = ? AND customer_id = ? AND channel = 'email'",
            [shop, customer_id],
        )
        con.execute(
            "DELETE FROM core.consent_observations WHERE shop = ? AND customer_id = ?", [shop, customer_id]
        )
    finally:
        con.close()
    outcome = checks.consent_ratchet_holds(paths=intel.paths)
    assert not outcome.passed and outcome.metadata["failures"].value == 1
    assert outcome.metadata["sample"].value == [f"record {shop}/{customer_id}/email"]
