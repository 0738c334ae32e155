"""Dagster definitions, one folder per source system (``shopify``; identity, metrics and
reverse sync join later), merged by ``orchestration.definitions``."""
