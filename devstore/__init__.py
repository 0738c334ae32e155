"""A local Shopify: the Admin GraphQL API 2026-10 served from Shopify's own schema."""
