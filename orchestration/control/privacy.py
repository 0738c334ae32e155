"""Acting on Shopify's privacy webhooks, each action audited in ``privacy_actions``.

- ``customers/data_request``: everything the project's warehouse holds about the customer
  is written to ``<project>/privacy/<shop>/`` as one JSON file for the store owner to send on.
- ``customers/redact``: the customer's personal data is erased in every table, in the
  landing batches and in the receiver's journal; ``privacy.redacted_customers`` lists them
  so nothing is pushed to them again; the analyst snapshot is re-published without it.
- ``shop/redact`` (48 h after the app is uninstalled): what ``shopsync stores delete`` does.
  For a store already deleted, the same sweep runs again (anything that arrived since
  goes) and the tombstone's last secret is erased.

Requests come from ``<landing>/_privacy/requests/`` batches the receiver seals. They are
acted on whatever the store's status (paused, Reconnect required, deleted), each once: the
audit row (keyed by Shopify's event id) says it was done.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestration.control.models import utcnow
from orchestration.control.projects import ProjectPaths
from orchestration.control.registry import PrivacyActionInfo, StoreNotFound, StoreRegistry


@dataclass(frozen=True)
class PrivacyRequest:
    """One sealed compliance webhook."""

    event_id: str
    topic: str
    shop: str
    received_at: datetime | None
    payload: dict[str, Any]

    @property
    def customer_id(self) -> int | None:
        """The customer the request is about (None for shop/redact)."""
        customer = self.payload.get("customer") or {}
        value = customer.get("id") if isinstance(customer, dict) else None
        return int(value) if value is not None and str(value).isdigit() else None

    @property
    def order_ids(self) -> set[int]:
        """The orders Shopify names in the request."""
        ids = self.payload.get("orders_to_redact") or self.payload.get("orders_requested") or []
        return {int(o) for o in ids if str(o).isdigit()}

    @property
    def request_id(self) -> str | None:
        """Shopify's id of a data request."""
        request = self.payload.get("data_request") or {}
        value = request.get("id") if isinstance(request, dict) else None
        return None if value is None else str(value)


def _instant(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def pending_privacy_batches(paths: ProjectPaths) -> list[tuple[str, Path]]:
    """(batch id, rows file) of the project's privacy requests not yet acted on, oldest first."""
    from pipelines import landing
    from pipelines.webhooks.journal import PRIVACY_ENTITY, PRIVACY_FOLDER

    return [
        (m.batch_id, p) for m, p in landing.pending_batches(paths.landing, PRIVACY_FOLDER, PRIVACY_ENTITY)
    ]


def _requests(path: Path) -> list[PrivacyRequest]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        out.append(
            PrivacyRequest(
                event_id=str(row["event_id"]),
                topic=str(row["topic"]),
                shop=str(row["shop"]),
                received_at=_instant(row.get("received_at")),
                payload=row.get("payload") or {},
            )
        )
    return out


def _project_of(registry: StoreRegistry, shop: str) -> ProjectPaths | None:
    try:
        return registry.store_paths(shop)
    except StoreNotFound:
        return None


def _data_request(registry: StoreRegistry, request: PrivacyRequest) -> tuple[str, dict[str, Any]]:
    from pipelines import privacy

    paths = _project_of(registry, request.shop)
    gone = registry.deleted_store(request.shop)
    if paths is None or request.customer_id is None:
        return "nothing held", {"reason": "store unknown" if paths is None else "no customer id"}
    subject = privacy.Subject(request.shop, request.customer_id, set(request.order_ids))
    rows = {} if gone is not None else privacy.export_customer(paths.warehouse, subject)
    document = {
        "shop": request.shop,
        "customer_id": request.customer_id,
        "data_request_id": request.request_id,
        "orders_requested": sorted(request.order_ids),
        "exported_at": utcnow().isoformat(),
        "note": (
            f"The store was deleted from shopsync on {gone.deleted_at.isoformat()}; nothing is held."
            if gone is not None
            else "Every row shopsync's warehouse holds about this customer, by table."
        ),
        "tables": rows,
    }
    name = f"customer-{request.customer_id}-request-{request.request_id or request.event_id}.json"
    path = privacy.write_export(paths.privacy / request.shop, name, document)
    touched: dict[str, Any] = {"file": str(path), "tables": {t: len(r) for t, r in rows.items()}}
    return ("exported" if rows else "exported (nothing held)"), touched


def _redact(registry: StoreRegistry, request: PrivacyRequest) -> tuple[str, dict[str, Any]]:
    from orchestration.control.status import republish_snapshot
    from pipelines import privacy
    from pipelines.webhooks.journal import redact_deliveries

    paths = _project_of(registry, request.shop)
    if paths is None or request.customer_id is None:
        return "nothing held", {"reason": "store unknown" if paths is None else "no customer id"}
    if registry.deleted_store(request.shop) is not None:
        return "nothing held", {"reason": "store deleted"}
    subject = privacy.Subject(request.shop, request.customer_id, set(request.order_ids))
    tables = privacy.redact_customer(paths.warehouse, subject, at=utcnow())
    lines = privacy.scrub_landing(paths.landing, subject)
    customer_gid = f"gid://shopify/Customer/{subject.customer_id}"
    order_gids = {f"gid://shopify/Order/{o}" for o in subject.order_ids}

    def about(row: dict[str, Any]) -> bool:
        return privacy.line_is_about(row, subject, order_gids, customer_gid)

    journal = redact_deliveries(registry.settings.journal_path, request.shop, about, privacy.scrub)
    needles = [str(subject.customer_id), *subject.emails, *subject.phones]
    quarantined = privacy.scrub_quarantine(paths.landing, request.shop, needles)
    snapshot = republish_snapshot(paths)
    touched = {
        "tables": tables,
        "landing_lines": lines,
        "journal_deliveries": journal,
        "quarantined_webhooks": quarantined,
        "snapshot": snapshot,
    }
    return "redacted", touched


def _shop_redact(
    registry: StoreRegistry, request: PrivacyRequest, remove_partition: Callable[[str], bool] | None
) -> tuple[str, dict[str, Any]]:
    from orchestration.control.status import delete_store, erase_store_data

    try:
        registry.get_store(request.shop)
    except StoreNotFound:
        gone = registry.deleted_store(request.shop)
        if gone is None:
            return "nothing held", {"reason": "store unknown"}
        report = erase_store_data(
            request.shop, registry.project_paths(gone.project), registry.settings.journal_path
        )
        if remove_partition is not None:
            report.partition = remove_partition(request.shop)
        erased = registry.erase_deleted_store_secrets(request.shop)
        return "deleted (already deleted; swept again)", {**report.summary(), "webhook_secret_erased": erased}
    # Shopify sends shop/redact only after the uninstall: there is no grant left to revoke.
    report = delete_store(
        registry,
        request.shop,
        revoke=False,
        remove_partition=remove_partition,
        event_id=f"delete:{request.event_id}",
        topic="shop/redact (delete)",
    )
    registry.erase_deleted_store_secrets(request.shop)
    return "deleted", report.summary()


ACTIONS = ("customers/data_request", "customers/redact", "shop/redact")


def handle_request(
    registry: StoreRegistry,
    request: PrivacyRequest,
    *,
    remove_partition: Callable[[str], bool] | None = None,
) -> PrivacyActionInfo:
    """Act on one privacy request (once: an audited, done request is returned as it is)."""
    done = registry.privacy_action(request.event_id)
    if done is not None and done.done_at is not None:
        return done
    if request.topic == "customers/data_request":
        outcome, touched = _data_request(registry, request)
    elif request.topic == "customers/redact":
        outcome, touched = _redact(registry, request)
    elif request.topic == "shop/redact":
        outcome, touched = _shop_redact(registry, request, remove_partition)
    else:
        outcome, touched = "ignored", {"reason": "not a privacy topic"}
    return registry.record_privacy_action(
        request.event_id,
        request.topic,
        request.shop,
        customer_id=request.customer_id,
        request_id=request.request_id,
        received_at=request.received_at,
        outcome=outcome,
        touched=touched,
    )


def handle_privacy_requests(
    registry: StoreRegistry,
    *,
    shop: str | None = None,
    projects: list[str] | None = None,
    remove_partition: Callable[[str], bool] | None = None,
) -> list[PrivacyActionInfo]:
    """Act on every pending privacy request of the given projects (default: all), oldest first.

    A batch is marked done once each of its requests is audited as done; a failure leaves
    it pending (what was done stays done) and propagates.
    """
    from pipelines import landing

    names = projects if projects is not None else list(registry.projects())
    actions: list[PrivacyActionInfo] = []
    for name in names:
        paths = registry.project_paths(name)
        for batch_id, path in pending_privacy_batches(paths):
            requests = _requests(path)
            if shop is not None and any(r.shop != shop for r in requests):
                requests = [r for r in requests if r.shop == shop]
                for request in requests:
                    actions.append(handle_request(registry, request, remove_partition=remove_partition))
                continue  # the batch holds other stores' requests: left for a full pass
            for request in requests:
                actions.append(handle_request(registry, request, remove_partition=remove_partition))
            landing.mark_loaded(
                path, {"applied_at": utcnow().isoformat(), "batch_id": batch_id, "requests": len(requests)}
            )
    return actions
