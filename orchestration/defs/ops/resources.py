"""Service levels of the sync-health figures, as Dagster config."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
from pydantic import Field

from transforms.sync_health import HealthSettings


class SyncHealthSettings(dg.ConfigurableResource):
    """Per-entity p95 lag service levels (seconds) and the window the figures cover."""

    default_lag_objective_s: float = Field(
        default=1800.0, description="p95 seconds from a change in Shopify to the warehouse, for every entity."
    )
    lag_objective_s: dict[str, float] = Field(
        default_factory=dict,
        description="Per-entity overrides, e.g. {'customers': 300} when webhooks carry customer changes.",
    )
    window_hours: float = Field(default=24.0, description="Hours of history each evaluation covers.")

    def health_settings(self) -> HealthSettings:
        """The transform's settings for this deployment."""
        return HealthSettings(
            default_lag_objective_s=self.default_lag_objective_s,
            lag_objective_s=dict(self.lag_objective_s),
            window=timedelta(hours=self.window_hours),
        )
