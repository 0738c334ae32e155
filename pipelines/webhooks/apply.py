"""Turn sealed webhook batches into entity landing batches the loader understands.

Webhook payloads are REST-shaped, arrive out of order and may be days old, so they are
never loaded as they are. Instead each delivery only says *which* record changed:

- ``<resource>/delete``: the record is gone; a ``{"id": gid, "__deleted": true}`` row lands.
- create/update/consent topics: the record is read again by id (``nodes(ids:)`` with the
  same fragments as the incremental read) and lands as an ``incremental`` batch, so the
  warehouse always gets Shopify's *current* state in the usual shape. A record that no
  longer exists when re-read is landed as deleted.
- ``app/uninstalled``: reported to the caller (the store needs reconnecting).
- privacy topics never reach this step: the receiver seals them apart (``_privacy``).

Old deliveries never regress the warehouse: a payload older than what is held is stale in
the receiver's journal when a newer one for the same record came first; otherwise its
re-read returns the record as it is *now*, and the loader keeps, per record, whichever
version has the later ``updated_at`` (older rows count as stale). So the comparison with
the warehouse's ``updated_at`` happens where the warehouse is written, at load time.

A webhook batch is marked loaded (``.loaded``) once its entity batches are written, so it
is applied once; re-applying after a crash in between only re-lands the same current
state, which the loader's merge on ``(shop, id)`` absorbs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines import landing
from pipelines.shopify import documents
from pipelines.shopify.client import ShopifyClient
from pipelines.shopify.fetch import flatten_node
from pipelines.webhooks.journal import ENTITY as WEBHOOKS

# webhook resource (the topic's first part) -> landing entity
TOPIC_ENTITIES: dict[str, str] = {
    "customers": "customers",
    "orders": "orders",
    "products": "products",
    "collections": "collections",
    "checkouts": "abandoned_checkouts",
    # the 2025-01 split consent topics name their own resource
    "customers_email_marketing_consent": "customers",
    "customers_marketing_consent": "customers",
}
# landing entity -> GraphQL type of its ids
GID_TYPES: dict[str, str] = {
    "customers": "Customer",
    "orders": "Order",
    "products": "Product",
    "collections": "Collection",
    "abandoned_checkouts": "AbandonedCheckout",
}
# Topics about a customer that are not entity changes of their own resource.
_PRIVACY_TOPICS = frozenset({"customers/data_request", "customers/redact", "shop/redact"})
# Shopify's largest ``nodes(ids:)`` list.
REFETCH_CHUNK = 250

ClientFactory = Callable[[], ShopifyClient]


@dataclass
class ApplyResult:
    """What one apply pass did for one shop."""

    shop: str
    webhook_batches: list[str] = field(default_factory=list)
    deliveries: int = 0
    refetched: int = 0
    deleted: int = 0
    ignored: int = 0
    uninstalled: bool = False
    landed: list[landing.Manifest] = field(default_factory=list)
    # seconds between the oldest applied delivery's trigger time and now (webhook lag)
    max_lag_s: float | None = None


def _gid(entity: str, value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    if text.startswith("gid://"):
        return text
    return f"gid://shopify/{GID_TYPES[entity]}/{text}" if text.isdigit() else None


def classify(topic: str, payload: dict[str, Any]) -> tuple[str, str, str] | None:
    """``(action, entity, gid)`` for an entity topic, ``action`` being ``delete`` or ``refetch``.

    None for topics that carry no entity change (app/uninstalled, compliance, bulk finish).
    """
    if topic in _PRIVACY_TOPICS:
        return None
    resource, _, verb = topic.partition("/")
    entity = TOPIC_ENTITIES.get(resource)
    if entity is None:
        return None
    if topic == "customers_email_marketing_consent/update":
        gid = _gid(entity, payload.get("customer_id"))
    else:
        gid = _gid(entity, payload.get("admin_graphql_api_id")) or _gid(entity, payload.get("id"))
    if gid is None:
        return None
    return ("delete" if verb == "delete" else "refetch", entity, gid)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _instant(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def refetch(client: ShopifyClient, ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    """The current node of each id (None where the record no longer exists)."""
    wanted = list(dict.fromkeys(ids))
    found: dict[str, dict[str, Any] | None] = {}
    document = documents.load("webhook_refetch")
    for start in range(0, len(wanted), REFETCH_CHUNK):
        chunk = wanted[start : start + REFETCH_CHUNK]
        data = client.execute(document, {"ids": chunk}, expected_cost=20 * len(chunk) + 2)
        for gid, node in zip(chunk, data.get("nodes") or [], strict=False):
            found[gid] = node
    return found


def pending_webhook_batches(
    landing_root: Path, shop: str | None = None
) -> list[tuple[landing.Manifest, Path]]:
    """Sealed webhook batches not applied yet, oldest first."""
    return landing.pending_batches(landing_root, shop, WEBHOOKS)


def apply_pending(
    landing_root: Path,
    shop: str,
    client_factory: ClientFactory,
    *,
    now: datetime | None = None,
    entities: Collection[str] | None = None,
    redacted: Collection[int] = (),
) -> ApplyResult:
    """Apply every pending webhook batch of ``shop``; return what was landed.

    ``entities``: the entities the store's inbound toggles let in (None = all); deliveries
    about the others are acknowledged and counted as ignored. ``redacted``: ids of
    customers erased on request (customers/redact); their changes are not re-read, so the
    personal data is not fetched back.

    ``client_factory`` is called only if a record must be re-read. Errors of the client
    (``ShopifyError``) propagate and leave the webhook batches pending for the next pass.
    """
    result = ApplyResult(shop=shop)
    erased = {str(i) for i in redacted}
    batches = pending_webhook_batches(landing_root, shop)
    if not batches:
        return result
    # gid -> (entity, final action); a delete anywhere wins, since a deleted id never returns
    actions: dict[str, tuple[str, str]] = {}
    reported: dict[str, datetime] = {}  # when Shopify reported each delete (sync-lag figures)
    oldest: datetime | None = None
    for manifest, path in batches:
        result.webhook_batches.append(manifest.batch_id)
        for row in _read_rows(path):
            result.deliveries += 1
            topic = str(row.get("topic") or "")
            payload = row.get("payload") or {}
            triggered = _instant(row.get("triggered_at")) or _instant(row.get("received_at"))
            if triggered is not None and (oldest is None or triggered < oldest):
                oldest = triggered
            if topic == "app/uninstalled":
                result.uninstalled = True
                continue
            decided = classify(topic, payload)
            if decided is None:
                result.ignored += 1
                continue
            action, entity, gid = decided
            if entities is not None and entity not in entities:
                result.ignored += 1
                continue
            if entity == "customers" and action == "refetch" and gid.rsplit("/", 1)[-1] in erased:
                result.ignored += 1
                continue
            if actions.get(gid, ("", ""))[1] != "delete":
                actions[gid] = (entity, action)
            if action == "delete" and triggered is not None:
                reported[gid] = triggered

    to_refetch = [gid for gid, (_, action) in actions.items() if action == "refetch"]
    nodes: dict[str, dict[str, Any] | None] = {}
    if to_refetch and not result.uninstalled:
        client = client_factory()
        try:
            nodes = refetch(client, to_refetch)
        finally:
            client.close()
    elif result.uninstalled:
        # The app lost its access: nothing can be re-read; deletes still apply.
        actions = {gid: a for gid, a in actions.items() if a[1] == "delete"}

    rows_by_entity: dict[str, list[dict[str, Any]]] = {}
    for gid, (entity, action) in actions.items():
        rows = rows_by_entity.setdefault(entity, [])
        node = nodes.get(gid) if action == "refetch" else None
        if node:
            node = {k: v for k, v in node.items() if k != "__typename"}
            rows.extend(flatten_node(node))
            result.refetched += 1
        else:
            marker: dict[str, Any] = {"id": gid, "__deleted": True}
            if gid in reported:
                marker["__triggered_at"] = reported[gid].isoformat()
            rows.append(marker)
            result.deleted += 1
    for entity, rows in sorted(rows_by_entity.items()):
        result.landed.append(
            landing.write_batch(
                landing_root,
                shop,
                entity,
                "incremental",
                rows,
                extra={"source": "webhooks", "webhook_batches": result.webhook_batches},
            )
        )
    applied_at = now or datetime.now(UTC)
    if oldest is not None:
        result.max_lag_s = max(0.0, (applied_at - oldest).total_seconds())
    for _, path in batches:
        landing.mark_loaded(
            path,
            {
                "applied_at": applied_at.isoformat(),
                "landed": [m.batch_id for m in result.landed],
                "lag_s": result.max_lag_s,
            },
        )
    return result


def webhook_lag_s(landing_root: Path, shop: str, *, now: datetime | None = None) -> float | None:
    """Seconds the oldest unapplied webhook batch of ``shop`` has waited (None when none waits)."""
    pending = pending_webhook_batches(landing_root, shop)
    if not pending:
        return None
    created = _instant(pending[0][0].created_at)
    if created is None:
        return None
    return max(0.0, ((now or datetime.now(UTC)) - created).total_seconds())
