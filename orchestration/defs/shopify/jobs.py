"""Jobs over the Shopify assets, and the run config that selects a sync mode."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dagster as dg

from orchestration.defs.logs import with_run_logging
from orchestration.defs.shopify.partitions import SHOPIFY_ENTITIES, stores_partitions


def fetch_key(entity: str) -> dg.AssetKey:
    """Key of the fetch (landing) asset of an entity."""
    return dg.AssetKey(["shopify", "landing", entity])


def table_key(entity: str) -> dg.AssetKey:
    """Key of the raw warehouse table asset of an entity."""
    return dg.AssetKey(["shopify", entity])


def op_name_for(entity: str) -> str:
    """Op name of the table (load) asset, for run config."""
    return "__".join(table_key(entity).path)


def fetch_op_name_for(entity: str) -> str:
    """Op name of the fetch asset, for run config."""
    return "__".join(fetch_key(entity).path)


def fetch_run_config(
    *, full: bool = False, reconcile: bool = False, entities: Iterable[str] = SHOPIFY_ENTITIES
) -> dict[str, Any]:
    """Run config setting the fetch mode of the given entities.

    ``full``: bulk re-sync plus reconciliation (the product's Re-sync); ``reconcile``: only
    the ids-only export that marks deletions (the nightly job).
    """
    return with_run_logging(
        {"ops": {fetch_op_name_for(e): {"config": {"full": full, "reconcile": reconcile}} for e in entities}}
    )


# The store's health (orchestration/defs/shopify/health.py): its own asset and job, never part
# of a sync run, where "initial sync complete" would still be false.
STORE_HEALTH_CHECK_KEY = dg.AssetCheckKey(dg.AssetKey(["shopify", "store_health"]), "store_ready")

sync_job = dg.define_asset_job(
    name="shopify_sync",
    selection=dg.AssetSelection.assets(*[fetch_key(e) for e in SHOPIFY_ENTITIES])
    | dg.AssetSelection.assets(*[table_key(e) for e in SHOPIFY_ENTITIES]),
    partitions_def=stores_partitions,
    config=with_run_logging(),
    description="Fetch every entity of one store into the landing zone, then load it into the warehouse.",
)

# The product's Re-sync as its own job, so the UI offers it directly: pick the store's
# partition in the launchpad and launch; the config already asks for a full bulk export
# plus reconciliation of every entity (editable there like any run config).
resync_job = dg.define_asset_job(
    name="shopify_resync",
    selection=sync_job.selection,
    partitions_def=stores_partitions,
    config=fetch_run_config(full=True),
    description=(
        "Re-sync one store: a full bulk export of every entity plus reconciliation, merged by Shopify id "
        "(safe to repeat; rows missing from the export are marked deleted)."
    ),
)

load_job = dg.define_asset_job(
    name="shopify_load",
    selection=dg.AssetSelection.assets(*[table_key(e) for e in SHOPIFY_ENTITIES]),
    partitions_def=stores_partitions,
    config=with_run_logging(),
    description="Load pending landing batches of one store into the warehouse (no Shopify calls).",
)
