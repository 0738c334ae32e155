"""How fresh each asset must be, declared in one place and applied to the merged definitions.

Dagster's freshness daemon marks an asset *Degraded* (warn) or *Failed* (red) once its latest
materialisation is older than these windows, whatever the cause: a stopped daemon, a schedule
turned off, a run queue backed up, a sync that keeps failing. The per-store, per-entity lag
figures and their service levels are the ``ops/sync_health`` checks; these windows are the
outer line that catches a pipeline that stopped altogether.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

# Shopify loads: an incremental sync every 15 minutes, plus webhooks in between.
_SYNCED = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=1), warn_window=timedelta(minutes=30))
# Intelligence: nightly at 04:00 UTC, and after loads when the daemon's automation runs.
_NIGHTLY = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26), warn_window=timedelta(hours=25))
# Sync health: every 15 minutes.
_HEALTH = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=1), warn_window=timedelta(minutes=30))
# Store health: daily at 05:15 UTC.
_DAILY = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26))

# The first matching prefix wins. Reverse-sync and engagement-feed assets have none: they run
# when there is something to push or a feed file arrives, so their age says nothing about
# health (push failures and quarantined lines have their own checks and counts).
POLICIES: tuple[tuple[tuple[str, ...], dg.FreshnessPolicy], ...] = (
    (("shopify", "store_health"), _DAILY),
    (("shopify",), _SYNCED),
    (("core",), _NIGHTLY),
    (("analyst",), _NIGHTLY),
    (("ops", "sync_health"), _HEALTH),
)


def policy_for(key: dg.AssetKey) -> dg.FreshnessPolicy | None:
    """The freshness policy of an asset, or None for assets judged only by their checks."""
    for prefix, policy in POLICIES:
        if tuple(key.path[: len(prefix)]) == prefix:
            return policy
    return None


def with_freshness(spec: dg.AssetSpec) -> dg.AssetSpec:
    """The spec with its freshness policy (an explicit one on the asset is kept)."""
    policy = policy_for(spec.key)
    if policy is None or spec.freshness_policy is not None:
        return spec
    return spec.replace_attributes(freshness_policy=policy)
