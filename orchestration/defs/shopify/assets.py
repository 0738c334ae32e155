"""Shopify assets: per entity, a fetch into the landing zone and a load into ``shopify.*``.

The two halves are separate assets because they hold different things: a fetch waits on
Shopify's rate limit and never opens the warehouse, so fetches of many stores run side by
side; a load holds the warehouse (pool ``warehouse``, one at a time) and never calls
Shopify. Retrying one entity of one store is materialising its two assets for the store's
partition; re-syncing is the same with ``full: true``.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from pydantic import Field

from orchestration.control import EntityState, StoreStatus
from orchestration.control.registry import ENTITY_TOGGLES, INBOUND_TOGGLES
from orchestration.control.status import mark_reconnect_required, mark_sync_failed, mark_sync_succeeded
from orchestration.defs.instance import IN_WAREHOUSE
from orchestration.defs.shopify.checks import live_rows_by_shop
from orchestration.defs.shopify.jobs import fetch_key, table_key
from orchestration.defs.shopify.partitions import SHOPIFY_ENTITIES, stores_partitions
from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths
from pipelines.loader import LoadError, load_pending, warehouse_counts
from pipelines.loader_specs import SPECS
from pipelines.shopify.client import ShopifyAuthError, ShopifyError
from pipelines.shopify.fetch import FetchResult, fetch_entity
from pipelines.shopify.preflight import ORDERS_WINDOW_MESSAGE
from pipelines.warehouse_io import save_store_settings

# What each entity's data means to the business; shown as the assets' descriptions.
FETCH_DOCS: dict[str, str] = {
    "customers": "Customer profiles as Shopify last sent them (names, emails, phones, marketing consent, "
    "addresses, metafields), as immutable landing batches awaiting load.",
    "orders": "Orders with line items and refunds as Shopify last sent them, as landing batches awaiting load.",
    "products": "The product catalogue with variants and prices, as landing batches awaiting load.",
    "collections": "Collections and which products they hold, as landing batches awaiting load.",
    "abandoned_checkouts": "Checkouts shoppers started and left, with their line items, as landing batches "
    "awaiting load.",
}
TABLE_DOCS: dict[str, str] = {
    "customers": "Every customer of the store, one row per Shopify customer: contact details, email and SMS "
    "marketing consent, order count and amount spent. The input of identity resolution and consent sync. "
    "Children: customer_addresses, customer_metafields.",
    "orders": "Every order of the store with money in shop and presentment currency, status and billing "
    "address; guest orders have no customer_id. The basis of revenue, RFM and lifetime value. "
    "Children: order_line_items, order_refunds.",
    "products": "The product catalogue: what the store sells, its status and type. Children: product_variants "
    "(SKU, price, stock).",
    "collections": "Merchandising collections and their products (collection_products), for category-level "
    "analysis.",
    "abandoned_checkouts": "Checkouts shoppers started and did not complete, with contact details and cart "
    "value: recovery campaigns and purchase intent. Children: abandoned_checkout_line_items.",
}


class FetchConfig(dg.Config):
    """How a fetch runs. By default: bulk export if the entity never synced, else incremental."""

    full: bool = Field(
        default=False,
        description="Re-sync: bulk export of everything, then an ids-only reconciliation that marks deletions.",
    )
    reconcile: bool = Field(
        default=False,
        description="Only the ids-only export that marks records deleted in Shopify (the nightly job).",
    )
    lookback_minutes: float = Field(
        default=5.0,
        ge=0,
        description="Incremental reads start this many minutes before the last watermark, so a record "
        "Shopify indexed late is still seen; the overlap is merged, never duplicated.",
    )


class LoadConfig(dg.Config):
    """Which landing batches to load; empty means every pending batch of the store and entity."""

    batch_ids: list[str] = Field(default_factory=list)


def choose_modes(config: FetchConfig, last_bulk_sync_at: datetime | None) -> list[str]:
    """The fetch modes to run, in order, for a config and the entity's sync history."""
    if config.full:
        return ["bulk", "reconcile"]
    if config.reconcile:
        return ["reconcile"]
    return ["bulk"] if last_bulk_sync_at is None else ["incremental"]


def incomplete_reasons(results: list[FetchResult]) -> list[str]:
    """Warnings meaning the fetch missed data (the 60-day orders window is a known limit, not a miss)."""
    return [w for r in results for w in r.warnings if w != ORDERS_WINDOW_MESSAGE]


def _fetch_metadata(shop: str, modes: list[str], results: list[FetchResult]) -> dict[str, Any]:
    batches = [m.batch_id for r in results for m in r.batches]
    metadata: dict[str, Any] = {
        "shop": shop,
        "mode": "+".join(modes),
        "rows": dg.MetadataValue.int(sum(r.rows for r in results)),
        "batches": dg.MetadataValue.int(len(batches)),
        "batch_ids": dg.MetadataValue.json(batches),
        "api_points_spent": dg.MetadataValue.int(sum(r.api_points for r in results)),
        "throttle_wait_s": dg.MetadataValue.float(round(sum(r.throttle_wait_s for r in results), 3)),
        "throttled_responses": dg.MetadataValue.int(sum(r.throttled for r in results)),
        "warnings": dg.MetadataValue.json([w for r in results for w in r.warnings]),
    }
    rates = [r.restore_rate for r in results if r.restore_rate]
    if rates:
        metadata["api_restore_rate"] = dg.MetadataValue.float(rates[-1])
    return metadata


def build_fetch_asset(entity: str) -> dg.AssetsDefinition:
    """The fetch asset of one entity: Shopify → landing batches for one store partition."""

    @dg.asset(
        key=fetch_key(entity),
        partitions_def=stores_partitions,
        group_name="shopify",
        kinds={"shopify", "jsonl"},
        description=FETCH_DOCS[entity],
        output_required=False,
        tags={"shopsync/entity": entity, "shopsync/stage": "fetch"},
    )
    def _fetch(
        context: dg.AssetExecutionContext, config: FetchConfig, stores: ShopifyStores, paths: SyncPaths
    ) -> Iterator[dg.MaterializeResult]:
        shop = context.partition_key
        registry = stores.registry()
        status = registry.entity_status(shop, entity)
        modes = choose_modes(config, None if status is None else status.last_bulk_sync_at)
        client = stores.client_for(shop)
        if entity not in registry.enabled_entities(shop):
            label = INBOUND_TOGGLES[ENTITY_TOGGLES[entity]]
            # Off means not imported: nothing is fetched or loaded, data already held stays.
            context.log.info(
                f"{shop}: {entity} not fetched, the '{label}' toggle is off "
                f"(shopsync stores settings {shop} --sync-{ENTITY_TOGGLES[entity].replace('_', '-')} on)"
            )
            client.close()
            return
        registry.mark_entity(shop, entity, EntityState.SYNCING)
        started = datetime.now(UTC)
        results: list[FetchResult] = []
        try:
            for mode in modes:
                context.log.info(f"Fetching {entity} of {shop} ({mode})")
                result = fetch_entity(
                    client,
                    shop=shop,
                    entity=entity,
                    landing_root=paths.landing_path,
                    state_dir=paths.state_path,
                    mode=mode,
                    lookback=timedelta(minutes=config.lookback_minutes),
                    settings=stores.fetch_settings(),
                )
                if result.skipped_reason:
                    # A missing scope skips this entity (the others still sync) and says
                    # which scope to grant. Nothing is materialised, so its load is skipped.
                    registry.mark_entity(shop, entity, EntityState.FAILED, error=result.skipped_reason)
                    mark_reconnect_required(registry, shop, result.skipped_reason)
                    context.log.warning(f"{shop}: {result.skipped_reason}")
                    return
                for warning in result.warnings:
                    context.log.warning(f"{shop}: {warning}")
                results.append(result)
        except ShopifyAuthError as exc:
            registry.mark_entity(shop, entity, EntityState.FAILED, error=str(exc))
            registry.set_store_status(shop, StoreStatus.RECONNECT_REQUIRED, str(exc))
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        except ShopifyError as exc:
            registry.mark_entity(shop, entity, EntityState.FAILED, error=str(exc))
            mark_sync_failed(registry, shop, f"Fetching {entity} failed: {exc}")
            raise dg.Failure(description=f"Fetching {entity} of {shop} failed: {exc}") from None
        finally:
            client.close()
        problems = incomplete_reasons(results)
        if problems:
            # Partial results are still landed and loaded; the entity shows Failed with the
            # reason until a later sync completes, and the next run exports in bulk again.
            registry.mark_entity(shop, entity, EntityState.FAILED, error=" ".join(problems))
        elif "bulk" in modes:
            registry.mark_entity(shop, entity, EntityState.SYNCING, bulk_synced_at=started)
        metadata = _fetch_metadata(shop, modes, results)
        metadata["complete"] = not problems
        yield dg.MaterializeResult(metadata=metadata)

    return _fetch


def build_table_asset(entity: str) -> dg.AssetsDefinition:
    """The raw table asset of one entity: pending landing batches → ``shopify.*`` for one store."""
    tables = [SPECS[entity].table, *(c.table for c in SPECS[entity].children)]

    @dg.asset(
        key=table_key(entity),
        deps=[fetch_key(entity)],
        partitions_def=stores_partitions,
        group_name="shopify",
        kinds={"duckdb"},
        **IN_WAREHOUSE,
        description=TABLE_DOCS[entity],
        tags={"shopsync/entity": entity, "shopsync/stage": "load"},
        metadata={"tables": dg.MetadataValue.json([f"shopify.{t}" for t in tables])},
    )
    def _load(
        context: dg.AssetExecutionContext, config: LoadConfig, stores: ShopifyStores, paths: SyncPaths
    ) -> dg.MaterializeResult:
        shop = context.partition_key
        registry = stores.registry()
        try:
            result = load_pending(
                paths.warehouse_path,
                paths.landing_path,
                shop=shop,
                entity=entity,
                batch_ids=config.batch_ids or None,
            )
        except LoadError as exc:
            registry.mark_entity(shop, entity, EntityState.FAILED, error=f"Load failed: {exc}")
            mark_sync_failed(registry, shop, f"Loading {entity} failed: {exc}")
            raise dg.Failure(description=f"Loading {entity} of {shop} failed: {exc}") from None
        except Exception as exc:
            registry.mark_entity(shop, entity, EntityState.FAILED, error=f"Load failed: {exc}")
            raise
        # The toggles and list the intelligence transforms honour travel with the data.
        save_store_settings(
            paths.warehouse_path,
            shop,
            registry.inbound_toggles(shop),
            registry.customer_list(shop),
            at=datetime.now(UTC),
        )
        status = registry.entity_status(shop, entity)
        if status is not None and status.state is EntityState.SYNCING:
            # A fetch that missed data left the entity Failed; loading its partial data
            # does not make it Synced.
            registry.mark_entity(shop, entity, EntityState.SYNCED)
            mark_sync_succeeded(registry, shop)
        counts = warehouse_counts(paths.warehouse_path)
        by_shop = live_rows_by_shop(paths.warehouse_path, tables)
        metadata: dict[str, Any] = {
            "shop": shop,
            "batches_loaded": dg.MetadataValue.int(len(result.batches)),
            "new": dg.MetadataValue.int(result.inserted),
            "updated": dg.MetadataValue.int(result.updated),
            "unchanged": dg.MetadataValue.int(result.unchanged),
            "deleted": dg.MetadataValue.int(result.deleted),
            "rows_written": dg.MetadataValue.json(result.rows),
        }
        for table in tables:
            if table in by_shop:
                metadata[f"store_rows.shopify.{table}"] = dg.MetadataValue.int(by_shop[table].get(shop, 0))
        if tables[0] in counts:
            # All stores' live rows: the table is shared, the partition is one store's slice.
            metadata["dagster/row_count"] = dg.MetadataValue.int(counts[tables[0]])
        return dg.MaterializeResult(metadata=metadata)

    return _load


fetch_assets: list[dg.AssetsDefinition] = [build_fetch_asset(e) for e in SHOPIFY_ENTITIES]
table_assets: list[dg.AssetsDefinition] = [build_table_asset(e) for e in SHOPIFY_ENTITIES]
