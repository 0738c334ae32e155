"""The one Dagster entry point (``workspace.yaml`` loads it): every ``defs/`` folder, merged."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.shopify.definitions import build_shopify_defs


@dg.definitions
def defs() -> dg.Definitions:
    """All shopsync definitions with their default resources (paths under ./data)."""
    return dg.Definitions.merge(build_shopify_defs())
