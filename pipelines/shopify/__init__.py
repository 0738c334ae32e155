"""Shopify Admin GraphQL client, documents, fetchers and bulk operations."""

from pipelines.shopify.client import (
    ClientStats,
    ShopifyAccessDenied,
    ShopifyAuthError,
    ShopifyClient,
    ShopifyCostTooHigh,
    ShopifyError,
    ShopifyQueryError,
    ShopifyUnavailable,
)
from pipelines.shopify.fetch import ENTITIES, FetchResult, fetch_entity
from pipelines.shopify.preflight import Preflight, preflight
from pipelines.shopify.settings import API_VERSION, FetchSettings

__all__ = [
    "API_VERSION",
    "ENTITIES",
    "ClientStats",
    "FetchResult",
    "FetchSettings",
    "Preflight",
    "ShopifyAccessDenied",
    "ShopifyAuthError",
    "ShopifyClient",
    "ShopifyCostTooHigh",
    "ShopifyError",
    "ShopifyQueryError",
    "ShopifyUnavailable",
    "fetch_entity",
    "preflight",
]
