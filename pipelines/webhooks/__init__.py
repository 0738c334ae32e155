"""Shopify webhooks: signature verification, the durable receiver journal, the receiver app."""
