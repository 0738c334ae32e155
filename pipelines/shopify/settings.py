"""Shopify API settings: the pinned API version, cost limits and fetch defaults.

The API version lives here and nowhere else; every URL the client builds takes it from
``API_VERSION``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

API_VERSION = "2026-10"

# Shopify rejects a single query whose requested cost exceeds this (MAX_COST_EXCEEDED).
MAX_QUERY_COST = 1000
# Shopify's largest page for any connection.
MAX_PAGE_SIZE = 250

# The access scope each entity needs to be read at all.
ENTITY_SCOPES: dict[str, str] = {
    "customers": "read_customers",
    "orders": "read_orders",
    "products": "read_products",
    "collections": "read_products",
    "abandoned_checkouts": "read_orders",
}
# Without this scope Shopify serves only the orders of the last 60 days.
ALL_ORDERS_SCOPE = "read_all_orders"
RECENT_ORDERS_WINDOW = timedelta(days=60)

# Shopify's earliest possible timestamp for a record (the company's founding year); the
# lower bound of a full export when the oldest record cannot be read.
EPOCH_ISO = "2006-01-01T00:00:00Z"


@dataclass
class FetchSettings:
    """Tunables of the fetchers. The defaults suit a real store; tests shrink the waits."""

    # paged (incremental) reads
    target_query_cost: int = 900  # requested cost per page, kept below MAX_QUERY_COST
    bucket_share: float = 0.5  # never ask for more than this share of the bucket in one query
    first_page_size: int = 25  # at most this many nodes until the first response tells the real cost per node
    child_page_size: int = 25  # nested connections in a page; the rest is drained by follow-ups
    rows_per_batch: int = 10_000  # landing batch size for paged reads; the cursor is saved per batch
    # bulk operations
    max_concurrent_jobs: int = 5  # Shopify runs up to 5 bulk queries per shop at once
    initial_slices: int = 4  # date slices of a full export before any halving
    slice_timeout_s: float = 1800.0  # a job running longer is cancelled and its slice halved
    min_slice: timedelta = timedelta(seconds=2)  # below this a slice is re-run whole, never split
    max_slice_attempts: int = 4  # failed/cancelled runs of one slice before giving up on it
    poll_interval_s: float = 2.0
    max_poll_interval_s: float = 30.0
    download_timeout_s: float = 300.0
