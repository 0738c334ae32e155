"""Dagster definitions for the Shopify source: one folder owning its assets and schedules."""
