"""Store status transitions, status cards, and the data side of disconnect / delete.

Transitions (the product's four badges):

- auth failure (401), ``app/uninstalled``, a scope missing for an enabled entity → Reconnect required
- a failed health check or a failed sync → Error (never over Reconnect required or Disconnected)
- a successful sync → Connected (from Error only: a paused or unauthorised store stays so)
- disconnect → Disconnected; reconnect (new credentials) → Connected
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestration.control.models import EntityState, StoreStatus
from orchestration.control.projects import ProjectPaths
from orchestration.control.registry import EntityStatusInfo, StoreRegistry

# Badges a sync outcome must not overwrite: the user or Shopify must act first.
_STICKY = (StoreStatus.DISCONNECTED, StoreStatus.RECONNECT_REQUIRED)


def mark_reconnect_required(registry: StoreRegistry, domain: str, detail: str) -> None:
    """The grant is gone or too narrow (401, uninstall, missing scope)."""
    if registry.get_store(domain).status is not StoreStatus.DISCONNECTED:
        registry.set_store_status(domain, StoreStatus.RECONNECT_REQUIRED, detail)


def mark_sync_failed(registry: StoreRegistry, domain: str, detail: str) -> None:
    """A sync (fetch or load) failed for a reason other than auth → Error."""
    if registry.get_store(domain).status not in _STICKY:
        registry.set_store_status(domain, StoreStatus.ERROR, detail)


def mark_sync_succeeded(registry: StoreRegistry, domain: str) -> None:
    """A sync completed → Connected again if it was in Error and no entity is still Failed."""
    if registry.get_store(domain).status is StoreStatus.ERROR and not any(
        e.state is EntityState.FAILED for e in registry.entity_statuses(domain)
    ):
        registry.set_store_status(domain, StoreStatus.CONNECTED, None)


def disconnect(registry: StoreRegistry, domain: str) -> None:
    """Pause the store: schedules, sensors and the webhook receiver skip it; data stays."""
    registry.set_store_status(domain, StoreStatus.DISCONNECTED, "Disconnected by the user.")


def is_syncing(registry: StoreRegistry, domain: str) -> bool:
    """Whether scheduled syncs and webhook processing should run for the store."""
    return registry.get_store(domain).status is StoreStatus.CONNECTED or (
        registry.get_store(domain).status is StoreStatus.ERROR
    )


# status cards --------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoreCard:
    """What ``shopsync status`` shows for one store."""

    domain: str
    project: str
    status: StoreStatus
    status_detail: str | None
    entities: tuple[EntityStatusInfo, ...]
    last_synced: datetime | None
    health: tuple[tuple[str, bool], ...]
    health_checked_at: datetime | None
    details: dict[str, Any] = field(default_factory=dict)
    dead_letters: int = 0
    webhook_lag_s: float | None = None
    pending_webhook_batches: int = 0
    last_bulk_synced: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "domain": self.domain,
            "project": self.project,
            "status": self.status.value,
            "status_detail": self.status_detail,
            "entities": {
                e.entity: {
                    "state": e.state.value,
                    "last_sync_at": e.last_sync_at.isoformat() if e.last_sync_at else None,
                    "last_bulk_sync_at": e.last_bulk_sync_at.isoformat() if e.last_bulk_sync_at else None,
                    "last_error": e.last_error,
                }
                for e in self.entities
            },
            "last_synced": self.last_synced.isoformat() if self.last_synced else None,
            "last_bulk_synced": self.last_bulk_synced.isoformat() if self.last_bulk_synced else None,
            "health": {name: ok for name, ok in self.health},
            "health_checked_at": self.health_checked_at.isoformat() if self.health_checked_at else None,
            "details": self.details,
            "dead_letters": self.dead_letters,
            "webhook_lag_s": self.webhook_lag_s,
            "pending_webhook_batches": self.pending_webhook_batches,
        }


def dead_letter_counts(warehouse: Path) -> dict[str, int]:
    """Dead letters per shop (empty when the warehouse or ``sync.dead_letters`` does not exist)."""
    import duckdb

    if not Path(warehouse).exists():
        return {}
    try:
        con = duckdb.connect(str(warehouse), read_only=True)
    except duckdb.Error:
        return {}
    try:
        present = con.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = 'sync' AND table_name = 'dead_letters'"
        ).fetchone()
        if not present:
            return {}
        rows = con.execute(
            "SELECT shop, count(*) FROM sync.dead_letters WHERE replayed_at IS NULL GROUP BY shop"
        ).fetchall()
        return {shop: n for shop, n in rows}
    finally:
        con.close()


def store_cards(
    registry: StoreRegistry,
    warehouse: Path | None = None,
    landing_root: Path | None = None,
    *,
    project: str | None = None,
) -> list[StoreCard]:
    """A card per registered store (of ``project``, or all).

    Each store's dead letters and webhook lag come from its own project's warehouse and
    landing zone, unless ``warehouse``/``landing_root`` say otherwise.
    """
    from orchestration.control.health import saved_health
    from pipelines.webhooks.apply import pending_webhook_batches, webhook_lag_s

    dead_by_project: dict[str, dict[str, int]] = {}
    cards = []
    for store in registry.list_stores(project):
        paths = registry.project_paths(store.project)
        if store.project not in dead_by_project:
            dead_by_project[store.project] = dead_letter_counts(warehouse or paths.warehouse)
        landing_path = landing_root or paths.landing
        entities = tuple(registry.entity_statuses(store.domain))
        synced = [e.last_sync_at for e in entities if e.last_sync_at is not None]
        bulk = [e.last_bulk_sync_at for e in entities if e.last_bulk_sync_at is not None]
        details, items, checked_at = saved_health(registry, store.domain)
        cards.append(
            StoreCard(
                domain=store.domain,
                project=store.project,
                status=store.status,
                status_detail=store.status_detail,
                entities=entities,
                last_synced=max(synced) if synced else None,
                health=tuple((i.name, i.passed) for i in items),
                health_checked_at=checked_at,
                details=details,
                dead_letters=dead_by_project[store.project].get(store.domain, 0),
                webhook_lag_s=webhook_lag_s(landing_path, store.domain),
                pending_webhook_batches=len(pending_webhook_batches(landing_path, store.domain)),
                last_bulk_synced=max(bulk) if bulk else None,
            )
        )
    return cards


_BADGES = {
    StoreStatus.CONNECTED: "● Connected",
    StoreStatus.DISCONNECTED: "○ Disconnected",
    StoreStatus.ERROR: "✖ Error",
    StoreStatus.RECONNECT_REQUIRED: "▲ Reconnect required",
}


def render_card(card: StoreCard) -> str:
    """A store card as text."""

    def when(value: datetime | None) -> str:
        return value.strftime("%Y-%m-%d %H:%M UTC") if value else "never"

    lines = [f"┌ {card.domain}  [{_BADGES[card.status]}]  project={card.project}"]
    if card.status_detail:
        lines.append(f"│ {card.status_detail}")
    if card.entities:
        for e in card.entities:
            extra = f" — {e.last_error}" if e.state is EntityState.FAILED and e.last_error else ""
            lines.append(
                f"│   {e.entity:<20} {e.state.value:<8} last synced {when(e.last_sync_at)}"
                f"  last bulk sync {when(e.last_bulk_sync_at)}{extra}"
            )
    else:
        lines.append("│   no entity synced yet")
    lines.append(f"│ Last synced: {when(card.last_synced)}   Last bulk sync: {when(card.last_bulk_synced)}")
    if card.health:
        marks = "  ".join(f"{'✔' if ok else '✘'} {name}" for name, ok in card.health)
        lines.append(f"│ Health ({when(card.health_checked_at)}): {marks}")
    else:
        lines.append("│ Health: never checked (shopsync stores health DOMAIN)")
    lag = "none waiting" if card.webhook_lag_s is None else f"{card.webhook_lag_s:.0f} s"
    lines.append(
        f"│ Dead letters: {card.dead_letters}   Webhook lag: {lag} "
        f"({card.pending_webhook_batches} batch(es) pending)"
    )
    lines.append("└")
    return "\n".join(lines)


# delete ----------------------------------------------------------------------------------------
@dataclass
class DeleteReport:
    """What deleting a store removed (counts and yes/no only: no personal data)."""

    domain: str
    project: str = ""
    warehouse_rows: dict[str, int] = field(default_factory=dict)
    landing_files: int = 0
    state_files: int = 0
    quarantined: int = 0
    journal_deliveries: int = 0
    privacy_exports: int = 0
    snapshot: str = "none published"
    credentials: bool = False
    partition: bool = False
    grant_revoked: str = "not attempted"

    def summary(self) -> dict[str, Any]:
        """The report as JSON-ready data (kept in the audit and the tombstone)."""
        return {
            "project": self.project,
            "warehouse_rows": dict(sorted(self.warehouse_rows.items())),
            "landing_files": self.landing_files,
            "state_files": self.state_files,
            "quarantined_webhooks": self.quarantined,
            "journal_deliveries": self.journal_deliveries,
            "privacy_exports": self.privacy_exports,
            "snapshot": self.snapshot,
            "credentials": self.credentials,
            "partition": self.partition,
            "grant": self.grant_revoked,
        }


def _remove_tree(path: Path) -> int:
    if not path.exists():
        return 0
    count = sum(1 for p in path.rglob("*") if p.is_file())
    shutil.rmtree(path)
    return count


def republish_snapshot(paths: ProjectPaths) -> str:
    """Publish the analyst snapshot again and drop older versions (they hold erased data)."""
    from pipelines.snapshot import DATABASE_NAME, SnapshotError, publish_snapshot

    if not (paths.snapshot / DATABASE_NAME).exists():
        return "none published"
    try:
        publish_snapshot(paths.warehouse, paths.snapshot, keep=1, min_age_s=0.0)
    except (SnapshotError, OSError) as exc:
        return f"not re-published ({exc}); materialise analyst_snapshot to refresh it"
    return "re-published; older versions removed"


def revoke_grant(registry: StoreRegistry, domain: str) -> str:
    """Uninstall the app from the store (GraphQL ``appUninstall``): Shopify revokes its tokens."""
    from pipelines.shopify import documents
    from pipelines.shopify.client import ShopifyAuthError, ShopifyClient, ShopifyError

    try:
        with ShopifyClient(domain, **{**registry.client_options(domain), "max_attempts": 3}) as client:
            data = client.execute(documents.load("app_uninstall"), expected_cost=10)
    except ShopifyAuthError:
        return "already revoked (Shopify no longer accepts the app's credentials)"
    except ShopifyError as exc:
        return f"not revoked ({exc}); uninstall the app in the store's Shopify admin"
    errors = [e.get("message", "") for e in (data.get("appUninstall") or {}).get("userErrors") or []]
    if errors:
        return f"not revoked ({'; '.join(errors)}); uninstall the app in the store's Shopify admin"
    return "revoked (app uninstalled)"


def erase_store_data(
    domain: str, paths: ProjectPaths, journal: Path, *, customer_list: str | None = None
) -> DeleteReport:
    """Remove everything the project holds about a store (idempotent; the registry is left alone).

    Warehouse rows of every table (and the store's people from the contact tables), the
    landing folder, quarantined webhooks, fetch state, the receiver journal's deliveries,
    data-request exports; the analyst snapshot is re-published without them.
    """
    from pipelines import privacy
    from pipelines.webhooks.journal import forget_shop

    report = DeleteReport(domain=domain, project=paths.project)
    report.warehouse_rows = privacy.delete_shop_rows(paths.warehouse, domain, customer_list=customer_list)
    report.landing_files = _remove_tree(paths.landing / domain)
    report.quarantined = privacy.scrub_quarantine(paths.landing, domain)
    report.state_files = _remove_tree(paths.state / domain)
    if paths.state.exists():
        for path in list(paths.state.glob(f"*{domain}*")):
            if path.is_file():
                path.unlink()
                report.state_files += 1
    report.journal_deliveries = forget_shop(journal, domain)
    report.privacy_exports = _remove_tree(paths.privacy / domain)
    report.snapshot = republish_snapshot(paths)
    return report


def delete_store(
    registry: StoreRegistry,
    domain: str,
    *,
    revoke: bool = True,
    remove_partition: Callable[[str], bool] | None = None,
    event_id: str | None = None,
    topic: str = "stores/delete",
) -> DeleteReport:
    """Delete a store irreversibly: revoke the grant, erase its data, forget its credentials.

    The store is paused first so nothing new arrives for it meanwhile; a tombstone keeps
    only what verifies the ``shop/redact`` Shopify sends after the uninstall. The action is
    audited in ``privacy_actions``.
    """
    from orchestration.control.models import utcnow

    store = registry.get_store(domain)  # raises StoreNotFound
    paths = registry.project_paths(store.project)
    customer_list = registry.customer_list(domain)
    received = utcnow()
    registry.set_store_status(domain, StoreStatus.DISCONNECTED, "Being deleted.")
    grant = revoke_grant(registry, domain) if revoke else "not attempted (the app was already uninstalled)"
    report = erase_store_data(domain, paths, registry.settings.journal_path, customer_list=customer_list)
    report.grant_revoked = grant
    report.credentials = True
    if remove_partition is not None:
        report.partition = remove_partition(domain)
    registry.forget_store(domain, removed=report.summary())
    registry.record_privacy_action(
        event_id or f"delete:{domain}:{received.isoformat()}",
        topic,
        domain,
        received_at=received,
        outcome="deleted",
        touched=report.summary(),
    )
    return report
