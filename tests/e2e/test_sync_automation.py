"""After a store's load, the running-by-default automation sensor asks for the intelligence refresh."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
from test_sync_pipeline import harness_factory  # noqa: F401  (fixture)

from orchestration.defs.intelligence.assets import SNAPSHOT_KEY, core_key
from orchestration.defs.intelligence.definitions import build_intelligence_defs


def test_the_automatic_paths_run_by_default() -> None:
    """Webhooks reach the warehouse and intelligence follows loads without a click in the UI."""
    from orchestration.definitions import defs

    built = defs()
    for name in ("intelligence_after_loads", "webhook_apply_sensor", "landing_batches_sensor"):
        assert built.resolve_sensor_def(name).default_status is dg.DefaultSensorStatus.RUNNING, name


@pytest.mark.slow
def test_a_load_makes_the_eager_intelligence_assets_due(harness_factory: Any) -> None:  # noqa: F811
    h = harness_factory(stores=1, customers=15, seed=12)
    defs = dg.Definitions.merge(h.defs, build_intelligence_defs(h.paths))
    first = dg.evaluate_automation_conditions(defs=defs, instance=h.instance)
    assert first.total_requested == 0  # nothing loaded yet: nothing to refresh

    h.sync(h.domains[0])
    after_load = dg.evaluate_automation_conditions(defs=defs, instance=h.instance, cursor=first.cursor)
    requested = {r.key for r in after_load.results if r.true_subset.size}
    # the whole chain in one request: Dagster runs it in dependency order
    assert {
        core_key("contact_identities"),
        core_key("contacts"),
        core_key("customer_metrics"),
        SNAPSHOT_KEY,
    } <= requested

    # once refreshed, the conditions stay quiet until the next load
    result = defs.resolve_job_def("intelligence_refresh").execute_in_process(instance=h.instance)
    assert result.success
    quiet = dg.evaluate_automation_conditions(defs=defs, instance=h.instance, cursor=after_load.cursor)
    assert SNAPSHOT_KEY not in {r.key for r in quiet.results if r.true_subset.size}


@pytest.mark.slow
def test_the_store_health_check_runs_per_partition_and_moves_the_status(harness_factory: Any) -> None:  # noqa: F811
    from orchestration.control import StoreStatus
    from orchestration.defs.shopify.jobs import STORE_HEALTH_CHECK_KEY

    h = harness_factory(stores=2, customers=10, seed=14)
    shop, other = h.domains
    job = h.defs.resolve_job_def("store_health")

    def run(domain: str) -> dg.AssetCheckEvaluation:
        result = job.execute_in_process(instance=h.instance, partition_key=domain)
        (evaluation,) = result.get_asset_check_evaluations()
        assert evaluation.asset_check_key == STORE_HEALTH_CHECK_KEY
        return evaluation

    # before any sync the initial-sync item fails and says what to do
    fresh = run(shop)
    assert not fresh.passed and "Initial sync complete" in (fresh.description or "")
    h.sync(shop)
    healthy = run(shop)
    assert healthy.passed, healthy.description
    assert healthy.metadata["status"].value == "Connected"
    assert str(healthy.metadata["API responding"].value).startswith("pass")

    handle = shop.removesuffix(".myshopify.com")
    h.control("POST", f"/shops/{handle}/tokens/revoke", {"all": True})
    revoked = run(shop)
    assert not revoked.passed and "reconnect" in (revoked.description or "").lower()
    assert h.registry.get_store(shop).status is StoreStatus.RECONNECT_REQUIRED
    # one store's partition never touches another's status
    assert h.registry.get_store(other).status is StoreStatus.CONNECTED

    # the health check is not part of a sync run (it would see the initial sync unfinished)
    result = h.sync(other)
    assert result.get_asset_check_evaluations() and all(
        e.asset_check_key != STORE_HEALTH_CHECK_KEY for e in result.get_asset_check_evaluations()
    )
