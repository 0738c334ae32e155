"""Reverse sync: push consent, engagement metafields and profile fill back to Shopify."""
