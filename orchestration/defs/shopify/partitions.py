"""Stores as dynamic partitions: one partition per connected shop, keyed by its domain."""

from __future__ import annotations

import dagster as dg

STORES_PARTITION = "stores"

stores_partitions = dg.DynamicPartitionsDefinition(name=STORES_PARTITION)

# Entities extracted from every store, in the order a full sync runs them.
SHOPIFY_ENTITIES: tuple[str, ...] = (
    "customers",
    "orders",
    "products",
    "collections",
    "abandoned_checkouts",
)


def add_store_partition(instance: dg.DagsterInstance, domain: str) -> bool:
    """Make ``domain`` a partition of the stores; returns False if it already was one."""
    if instance.has_dynamic_partition(STORES_PARTITION, domain):
        return False
    instance.add_dynamic_partitions(STORES_PARTITION, [domain])
    return True
