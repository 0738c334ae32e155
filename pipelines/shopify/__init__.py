"""Shopify Admin GraphQL client, documents, fetchers and bulk operations."""
