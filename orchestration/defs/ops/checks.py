"""The sync-health checks: plain functions of one evaluation's figures, so they test without Dagster runs.

Each fails (severity ERROR, red in the UI) with the breaching figures' messages, which say
what to do.
"""

from __future__ import annotations

import dagster as dg
import polars as pl

LAG_CHECK = "sync_lag_within_service_level"
CONSENT_CHECK = "consent_pushes_succeed"
DEAD_LETTER_CHECK = "dead_letters_not_growing"
CHECK_METRICS: dict[str, tuple[str, ...]] = {
    LAG_CHECK: ("sync_lag_p95_s",),
    CONSENT_CHECK: ("consent_push_errors",),
    DEAD_LETTER_CHECK: ("dead_letters",),
}
CHECK_DOCS: dict[str, str] = {
    LAG_CHECK: "Every store's changes reach the warehouse within the entity's p95 lag service level.",
    CONSENT_CHECK: "No consent push to Shopify failed in the window (unsubscribes must reach Shopify).",
    DEAD_LETTER_CHECK: "The dead-letter queue of no store grew since the previous evaluation.",
}


def evaluate(check: str, figures: pl.DataFrame) -> dg.AssetCheckResult:
    """The result of one sync-health check over an evaluation's figures."""
    mine = figures.filter(pl.col("metric").is_in(list(CHECK_METRICS[check])))
    breaches = mine.filter(pl.col("status") == "breach")
    messages = breaches["message"].to_list()
    return dg.AssetCheckResult(
        check_name=check,
        passed=breaches.is_empty(),
        severity=dg.AssetCheckSeverity.ERROR,
        description=" ".join(messages) if messages else f"{mine.height} figures within their objectives",
        metadata={
            "figures": dg.MetadataValue.int(mine.height),
            "breaches": dg.MetadataValue.int(breaches.height),
            "breaching": dg.MetadataValue.json(
                [
                    {k: r[k] for k in ("shop", "entity", "event_type", "value", "objective")}
                    for r in breaches.iter_rows(named=True)
                ]
            ),
        },
    )


def check_specs(asset_key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    """The specs of the three checks on the sync-health asset."""
    return [dg.AssetCheckSpec(name, asset=asset_key, description=doc) for name, doc in CHECK_DOCS.items()]
