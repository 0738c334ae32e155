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
