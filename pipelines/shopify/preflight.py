"""Preflight: read the app's granted scopes before syncing, and say what they allow.

An entity whose scope is missing is skipped with a message naming the scope to grant;
without ``read_all_orders`` Shopify serves only the last 60 days of orders, and the
preflight says so rather than letting a sync look complete when it is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from pipelines.shopify import documents
from pipelines.shopify.client import ShopifyClient
from pipelines.shopify.settings import ALL_ORDERS_SCOPE, ENTITY_SCOPES, RECENT_ORDERS_WINDOW

ENTITY_LABELS: dict[str, str] = {
    "customers": "Customers",
    "orders": "Orders",
    "products": "Products",
    "collections": "Collections",
    "abandoned_checkouts": "Checkouts",
}


@dataclass
class Preflight:
    """What the granted scopes let shopsync read from one shop."""

    shop: str
    scopes: set[str]
    skipped: dict[str, str] = field(default_factory=dict)  # entity -> why it is skipped
    orders_window: timedelta | None = None  # None = every order is readable
    messages: list[str] = field(default_factory=list)

    @property
    def entities(self) -> list[str]:
        """Entities that can be synced."""
        return [e for e in ENTITY_SCOPES if e not in self.skipped]

    @property
    def all_scopes_granted(self) -> bool:
        """The health checklist's "All scopes granted"."""
        return not self.skipped and self.orders_window is None


def read_scopes(client: ShopifyClient) -> set[str]:
    """The access scope handles granted to the app on the shop."""
    data = client.execute(documents.load("access_scopes"), expected_cost=2)
    installation = data.get("currentAppInstallation") or {}
    return {str(s["handle"]) for s in installation.get("accessScopes") or [] if s.get("handle")}


def _implied(scopes: set[str]) -> set[str]:
    # a write scope implies its read scope on Shopify
    return scopes | {"read_" + s.removeprefix("write_") for s in scopes if s.startswith("write_")}


def skip_reason(entity: str, scopes: set[str]) -> str | None:
    """Why ``entity`` cannot be read with ``scopes``, or None when it can."""
    needed = ENTITY_SCOPES[entity]
    if needed in _implied(scopes):
        return None
    return (
        f"{ENTITY_LABELS[entity]} skipped: the app lacks the `{needed}` access scope. "
        f"Grant `{needed}` to the app and reconnect the store to sync {ENTITY_LABELS[entity].lower()}."
    )


def orders_restricted(scopes: set[str]) -> bool:
    """True when only the last 60 days of orders are readable."""
    return ALL_ORDERS_SCOPE not in scopes


ORDERS_WINDOW_MESSAGE = (
    "Only orders from the last 60 days are read: the app lacks the `read_all_orders` access scope. "
    "Grant `read_all_orders` and run a full re-sync to import older orders."
)


def evaluate(shop: str, scopes: set[str]) -> Preflight:
    """The preflight verdict for a known set of scopes (no network)."""
    result = Preflight(shop=shop, scopes=set(scopes))
    for entity in ENTITY_SCOPES:
        reason = skip_reason(entity, scopes)
        if reason:
            result.skipped[entity] = reason
            result.messages.append(reason)
    if "orders" not in result.skipped and orders_restricted(scopes):
        result.orders_window = RECENT_ORDERS_WINDOW
        result.messages.append(ORDERS_WINDOW_MESSAGE)
    return result


def preflight(client: ShopifyClient) -> Preflight:
    """Read the granted scopes and decide, per entity, whether and how much can be synced."""
    return evaluate(client.shop, read_scopes(client))
