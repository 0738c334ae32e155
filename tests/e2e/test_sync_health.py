"""Sync health through Dagster: lag samples from real syncs, the ops.sync_health figures, the checks, the mart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg
import duckdb
import polars as pl
import pytest
from test_sync_pipeline import harness_factory  # noqa: F401  (fixture)

from orchestration.defs.ops.assets import sync_health_asset
from orchestration.defs.ops.checks import CONSENT_CHECK, DEAD_LETTER_CHECK, LAG_CHECK
from orchestration.defs.ops.resources import SyncHealthSettings
from orchestration.defs.shopify.resources import ShopifyStores
from pipelines import sync_log
from pipelines.snapshot import publish_snapshot


def _evaluate(h: Any, **settings: Any) -> tuple[dict[str, Any], pl.DataFrame]:
    stores = ShopifyStores(data_dir=str(h.data_dir), control_url=f"sqlite:///{h.data_dir / 'control.db'}")
    result = dg.materialize(
        [sync_health_asset],
        instance=h.instance,
        resources={"stores": stores, "paths": h.paths, "health": SyncHealthSettings(**settings)},
        raise_on_error=False,
    )
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    (materialization,) = result.asset_materializations_for_node("ops__sync_health")
    h.health_metadata = {k: v.value for k, v in materialization.metadata.items()}
    con = duckdb.connect(str(h.paths.warehouse_path), read_only=True)
    try:
        latest = pl.from_arrow(
            con.sql(
                "SELECT * FROM ops.sync_health WHERE evaluated_at = (SELECT max(evaluated_at) FROM ops.sync_health)"
            ).to_arrow_table()
        )
    finally:
        con.close()
    assert isinstance(latest, pl.DataFrame)
    return checks, latest


@pytest.mark.slow
def test_lag_consent_errors_and_dead_letters_turn_the_checks_red(harness_factory: Any) -> None:  # noqa: F811
    h = harness_factory(stores=1, customers=30, seed=31)
    shop = h.domains[0]
    handle = shop.removesuffix(".myshopify.com")
    h.sync(shop)  # the backfill: history, not lag
    assert h.query("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ops'") == [(0,)]

    state = h.devstore.world.shop(shop)
    assert state is not None
    edited = sorted(state.records["customers"])[0]
    h.control("PATCH", f"/shops/{handle}/records/customers/{edited}", {"note": "changed"})
    h.control("POST", f"/shops/{handle}/records/customers", {"first_name": "Lag", "last_name": "Probe"})
    h.sync(shop)
    samples = h.query("SELECT entity, event_type, source, lag_s FROM ops.sync_lag WHERE shop = ?", [shop])
    assert {(e, t, s) for e, t, s, _ in samples} >= {
        ("customers", "update", "poll"),
        ("customers", "create", "poll"),
    }
    assert all(0 <= lag < 300 for *_, lag in samples)

    checks, figures = _evaluate(h)
    assert all(c.passed for c in checks.values()), {n: c.description for n, c in checks.items()}
    p95 = figures.filter((pl.col("metric") == "sync_lag_p95_s") & (pl.col("entity") == "customers"))
    assert set(p95["status"]) == {"ok"} and set(p95["event_type"]) >= {"create", "update"}
    used = figures.filter((pl.col("metric") == "api_points_used") & (pl.col("shop") == shop))["value"][0]
    utilisation = figures.filter(pl.col("metric") == "api_utilisation")["value"][0]
    assert used > 0 and 0 < utilisation < 1
    # the same figures as the asset's metadata, per store / entity / event type
    metadata = h.health_metadata
    assert metadata["api_points_used"][shop] == pytest.approx(used, abs=1e-3)
    assert metadata["api_points_available"][shop] > used
    assert set(metadata["lag_p50_s"]) >= {f"{shop}/customers/create", f"{shop}/customers/update"}
    assert metadata["consent_push_errors"] == {shop: 0} and metadata["dead_letters"] == {shop: 0}
    assert figures.filter(pl.col("metric") == "identity_email_match_rate").is_empty()  # no identity run yet

    # A service level nothing can meet; a consent push that failed for the fifth time.
    con = duckdb.connect(str(h.paths.warehouse_path))
    try:
        failure = pl.DataFrame(
            {
                "shop": [shop],
                "customer_id": [edited],
                "kind": ["email_consent"],
                "key": [""],
                "operation": ["customerEmailMarketingConsentUpdate"],
                "outcome": ["failed"],
                "error": ["HTTP 503 from Shopify"],
            }
        )
        for _ in range(sync_log.MAX_ATTEMPTS):
            sync_log.record(con, failure, run_id="test", at=datetime.now(UTC))
    finally:
        con.close()
    checks, figures = _evaluate(h, lag_objective_s={"customers": 0.0})
    assert not checks[LAG_CHECK].passed
    assert "above the 0 s service level" in (checks[LAG_CHECK].description or "")
    assert not checks[CONSENT_CHECK].passed
    assert f"customers {edited}" in (checks[CONSENT_CHECK].description or "")
    assert not checks[DEAD_LETTER_CHECK].passed
    assert f"shopsync push retry-dead {shop}" in (checks[DEAD_LETTER_CHECK].description or "")
    for check in checks.values():
        assert check.severity == dg.AssetCheckSeverity.ERROR

    # Nothing grew since: the dead-letter check is green again; the analyst mart shows the latest.
    checks, _ = _evaluate(h)
    assert checks[DEAD_LETTER_CHECK].passed and checks[LAG_CHECK].passed
    snapshot = publish_snapshot(h.paths.warehouse_path, h.data_dir / "snapshot")
    assert "marts.sync_health" in snapshot.views and "ops.sync_lag" in snapshot.views
    con = duckdb.connect(str(snapshot.database), read_only=True)
    try:
        statuses = dict(
            con.execute(
                "SELECT metric, status FROM marts.sync_health WHERE metric = 'dead_letters'"
            ).fetchall()
        )
    finally:
        con.close()
    assert statuses == {"dead_letters": "ok"}
