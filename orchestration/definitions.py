"""The one Dagster entry point (``workspace.yaml`` loads it): every ``defs/`` folder, merged."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.intelligence.definitions import build_intelligence_defs
from orchestration.defs.logs import LOGGERS
from orchestration.defs.ops.assets import build_ops_defs
from orchestration.defs.reverse_sync.definitions import build_reverse_sync_defs
from orchestration.defs.shopify.definitions import build_shopify_defs
from orchestration.defs.shopify.resources import SyncPaths
from orchestration.defs.webhooks.definitions import build_webhook_defs
from pipelines.logs import install_redaction


@dg.definitions
def defs() -> dg.Definitions:
    """All shopsync definitions with their default resources (paths under ./data)."""
    install_redaction()
    paths = SyncPaths()  # one instance: merged Definitions must share a resource object
    return dg.Definitions.merge(
        build_shopify_defs(paths=paths),
        build_intelligence_defs(paths),
        build_webhook_defs(),
        build_reverse_sync_defs(paths),
        build_ops_defs(paths),
        dg.Definitions(loggers=LOGGERS),
    )
