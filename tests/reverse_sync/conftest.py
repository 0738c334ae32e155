"""Fixtures for the reverse sync tests: a one-shop devstore over real HTTP and a client for it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.shopify.client import ShopifyClient

# the devstore test helpers live beside the devstore tests (no package there)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "devstore"))
from ops_support import Store, start_store


@pytest.fixture
def store() -> Iterator[Store]:
    """A fresh one-shop devstore (40 customers) with the app installed."""
    running = start_store(customers=40, seed=11)
    yield running
    running.stop()


@pytest.fixture
def client(store: Store) -> Iterator[ShopifyClient]:
    """The shared Shopify client pointed at the devstore shop, with test-sized backoff."""
    c = ShopifyClient(
        store.shop.domain, access_token=store.token, base_url=f"{store.url}/shops/{store.shop.handle}"
    )
    c.backoff_base_s = 0.01
    c.backoff_cap_s = 0.05
    yield c
    c.close()
