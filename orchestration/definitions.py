"""The one Dagster entry point (``workspace.yaml`` loads it): every ``defs/`` folder, merged."""

from __future__ import annotations

import warnings

import dagster as dg

from orchestration.defs.freshness import with_freshness
from orchestration.defs.instance import WAREHOUSE_TAG
from orchestration.defs.intelligence.definitions import build_intelligence_defs
from orchestration.defs.logs import LOGGERS
from orchestration.defs.ops.assets import build_ops_defs
from orchestration.defs.reverse_sync.definitions import build_reverse_sync_defs
from orchestration.defs.shopify.definitions import build_shopify_defs
from orchestration.defs.shopify.resources import SyncPaths
from orchestration.defs.webhooks.definitions import build_webhook_defs
from pipelines.logs import install_redaction

# Each step runs in its own process (a crashed load cannot take the run down with it), forked
# from a server that has already imported the code location: a fresh interpreter per step
# spends seconds importing dagster, dlt, polars and duckdb before doing a millisecond of work.
# One warehouse step of a run asks for the pool slot at a time (see WAREHOUSE_OP_TAGS).
STEP_EXECUTOR_CONFIG = {
    "start_method": {"forkserver": {"preload_modules": ["orchestration.definitions"]}},
    "tag_concurrency_limits": [{"key": WAREHOUSE_TAG, "limit": 1}],
}
STEP_EXECUTOR = dg.multiprocess_executor.configured(STEP_EXECUTOR_CONFIG)


@dg.definitions
def defs() -> dg.Definitions:
    """All shopsync definitions; data paths under ``$SHOPSYNC_DATA_DIR`` (default ./data)."""
    install_redaction()
    # One instance: merged Definitions must share a resource object. Its paths are the
    # project's under $SHOPSYNC_DATA_DIR ($SHOPSYNC_PROJECT, else the default project).
    paths = SyncPaths()
    merged = dg.Definitions.merge(
        build_shopify_defs(paths=paths),
        build_intelligence_defs(paths),
        build_webhook_defs(),
        build_reverse_sync_defs(paths),
        build_ops_defs(paths),
        dg.Definitions(loggers=LOGGERS, executor=STEP_EXECUTOR),
    )
    with warnings.catch_warnings():  # the mapping API is marked preview; its behaviour is what we test
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return merged.map_resolved_asset_specs(func=with_freshness)
