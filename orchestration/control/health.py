"""The store health check: the five-item readiness checklist, and the store details refresh.

OAuth connected · Token not expired · All scopes granted · API responding · Initial sync
complete. Each item passes or fails with the fix the product gives. The check also reads
the shop's details (domain, email, custom domain, plan, currency, country) and keeps them
with the store, and moves the store's status: an auth failure or a missing scope means
Reconnect required, any other failure means Error, a clean check of an Error store means
Connected again. A Disconnected store stays Disconnected (the user paused it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from orchestration.control.models import AuthKind, EntityState, StoreDetails, StoreStatus, utcnow
from orchestration.control.registry import StoreRegistry

OAUTH = "OAuth connected"
TOKEN = "Token not expired"
SCOPES = "All scopes granted"
API = "API responding"
INITIAL_SYNC = "Initial sync complete"
CHECKLIST = (OAUTH, TOKEN, SCOPES, API, INITIAL_SYNC)

FIX_RECONNECT = "Reconnect the store: shopsync stores reconnect {domain}"
FIXES: dict[str, str] = {
    OAUTH: "The app was uninstalled or its token revoked. " + FIX_RECONNECT,
    TOKEN: "Reconnect to refresh the credentials: shopsync stores reconnect {domain}",
    SCOPES: "Reconnect and approve the full scope set: shopsync stores reconnect {domain}",
    API: "Shopify did not answer; check the network or Shopify's status, then run the health check again.",
    INITIAL_SYNC: "Run the initial sync: shopsync stores resync {domain}",
}


@dataclass(frozen=True)
class CheckItem:
    """One line of the readiness checklist."""

    name: str
    passed: bool
    detail: str = ""
    fix: str = ""


@dataclass(frozen=True)
class HealthReport:
    """The checklist of one store, the details read from Shopify and the resulting status."""

    domain: str
    items: tuple[CheckItem, ...]
    details: dict[str, Any] = field(default_factory=dict)
    status: StoreStatus = StoreStatus.CONNECTED
    checked_at: datetime | None = None

    @property
    def healthy(self) -> bool:
        """Whether every item passed."""
        return all(i.passed for i in self.items)

    def item(self, name: str) -> CheckItem:
        """The checklist item called ``name``."""
        return next(i for i in self.items if i.name == name)


def required_scopes(entities: list[str] | None = None) -> set[str]:
    """Access scopes the enabled inbound entities need (all entities by default)."""
    from pipelines.shopify.settings import ENTITY_SCOPES

    chosen = entities if entities is not None else list(ENTITY_SCOPES)
    return {ENTITY_SCOPES[e] for e in chosen if e in ENTITY_SCOPES}


def _implied(scopes: set[str]) -> set[str]:
    # write_X grants read_X on Shopify
    return scopes | {"read_" + s.removeprefix("write_") for s in scopes if s.startswith("write_")}


def _shop_details(data: dict[str, Any]) -> dict[str, Any]:
    shop = data.get("shop") or {}
    return {
        "name": shop.get("name"),
        "domain": shop.get("myshopifyDomain"),
        "email": shop.get("contactEmail"),
        "custom_domain": (shop.get("primaryDomain") or {}).get("host"),
        "plan": (shop.get("plan") or {}).get("publicDisplayName"),
        "currency": shop.get("currencyCode"),
        "country": (shop.get("billingAddress") or {}).get("countryCodeV2"),
    }


def check_health(
    registry: StoreRegistry,
    domain: str,
    *,
    client_factory: Callable[[], Any] | None = None,
    entities: list[str] | None = None,
) -> HealthReport:
    """Run the readiness checklist of a registered store, save the result and move its status.

    ``client_factory`` builds the ``ShopifyClient`` (default: from the registry's credentials).
    """
    from pipelines.shopify import documents
    from pipelines.shopify.client import ShopifyAuthError, ShopifyClient, ShopifyError
    from pipelines.shopify.oauth import OAuthError, OAuthRefused, client_credentials_grant
    from pipelines.shopify.preflight import read_scopes

    store = registry.get_store(domain)
    options = registry.client_options(domain)
    secret = registry.credentials(domain)
    fix = {k: v.format(domain=domain) for k, v in FIXES.items()}
    auth_ok, api_ok = True, True
    auth_detail, api_detail = "", ""

    # Token not expired: a static or non-expiring offline token has no expiry; a
    # client-credentials store must be able to get a fresh token (the grant is tried now, and
    # its expiry recorded); an expiring OAuth offline token must be fresh or refreshable.
    expires_at = secret.get("expires_at")
    expiry = datetime.fromisoformat(str(expires_at)) if expires_at else None
    token_ok, token_detail = True, "static token, no expiry"
    if store.auth_kind is AuthKind.CLIENT_CREDENTIALS and client_factory is None:
        try:
            grant = client_credentials_grant(
                domain,
                store.api_base_url or f"https://{domain}",
                str(options["client_id"]),
                str(options["client_secret"]),
            )
        except OAuthRefused as exc:
            auth_ok, api_ok = False, False
            auth_detail = api_detail = str(exc)
        except OAuthError as exc:
            api_ok, api_detail = False, str(exc)
            if expiry is not None and expiry <= utcnow():
                token_ok = False
                token_detail = f"expired at {expiry.isoformat()} and could not be refreshed: {exc}"
            else:
                token_detail = "could not be refreshed now" + (
                    f"; the last token expires at {expiry.isoformat()}" if expiry else ""
                )
        else:
            expiry = grant.expires_at
            registry.update_credentials(domain, {"expires_at": expiry.isoformat() if expiry else None})
            token_detail = "refreshed" + (f"; expires at {expiry.isoformat()}" if expiry else ", no expiry")
            # the checks below use the fresh token
            options = {**options, "access_token": grant.access_token}
    elif secret.get("refresh_token") and client_factory is None:
        # An expiring OAuth offline token: the store's own source hands out a token that is
        # good for at least a few minutes, refreshing it first if need be.
        before = secret.get("access_token")
        try:
            token, expiry = registry.offline_token(domain)
        except ShopifyAuthError as exc:
            token_ok, auth_ok, api_ok = False, False, False
            token_detail = auth_detail = api_detail = str(exc)
        except ShopifyError as exc:
            api_ok, api_detail = False, str(exc)
            token_detail = "could not be refreshed now"
        else:
            token_detail = ("refreshed; " if token != before else "") + (
                f"expires at {expiry.isoformat()}" if expiry else "no expiry"
            )
    elif expiry is not None:
        if expiry <= utcnow():
            token_ok, token_detail = False, f"expired at {expiry.isoformat()}"
        else:
            token_detail = f"expires at {expiry.isoformat()}"

    def default_client() -> ShopifyClient:
        return ShopifyClient(domain, **{**options, "max_attempts": 2})

    granted: set[str] | None = None
    scopes_from_record = False
    details: dict[str, Any] = {}
    if auth_ok and api_ok:
        try:
            with (client_factory or default_client)() as client:
                reported = read_scopes(client)
                registry.set_scopes(domain, reported)
                granted = _implied(reported)
                details = _shop_details(client.execute(documents.load("shop_details"), expected_cost=2))
        except ShopifyAuthError as exc:
            auth_ok, api_ok = False, False
            auth_detail = api_detail = str(exc)
        except ShopifyError as exc:
            api_ok = False
            api_detail = str(exc)
    if not auth_ok:
        # no grant, no usable token
        token_ok, token_detail = False, auth_detail
    elif granted is None:
        # Shopify did not answer: judge the scopes it reported last (connect or last check),
        # so an outage shows as "API responding" alone.
        granted = _implied(set(store.scopes))
        scopes_from_record = True

    if entities is None:
        entities = registry.enabled_entities(domain)  # what the inbound toggles let in
    needed = required_scopes(entities)
    if registry.outbound_toggles(domain):
        needed.add("write_customers")  # a "Sync data to Shopify" toggle is on
    missing = sorted(needed - granted) if granted is not None else []
    scopes_ok = granted is not None and not missing
    if granted is None:
        scopes_detail = "could not read the granted scopes"
    elif missing:
        scopes_detail = "missing: " + ", ".join(missing)
    else:
        scopes_detail = "granted: " + ", ".join(sorted(needed))
    if scopes_from_record and granted is not None:
        scopes_detail += " (as Shopify last reported; it did not answer now)"

    statuses = {e.entity: e for e in registry.entity_statuses(domain)}
    wanted = entities
    not_done = [e for e in wanted if e not in statuses or statuses[e].last_bulk_sync_at is None]
    failed = [e for e in wanted if e in statuses and statuses[e].state is EntityState.FAILED]
    sync_ok = not not_done
    sync_detail = (
        "never bulk-synced: " + ", ".join(not_done)
        if not_done
        else ("complete" + (f" (failed since: {', '.join(failed)})" if failed else ""))
    )

    items = (
        CheckItem(OAUTH, auth_ok, auth_detail or "grant valid", "" if auth_ok else fix[OAUTH]),
        CheckItem(TOKEN, token_ok, token_detail, "" if token_ok else fix[TOKEN]),
        CheckItem(SCOPES, scopes_ok, scopes_detail, "" if scopes_ok else fix[SCOPES]),
        CheckItem(API, api_ok, api_detail or "a test call succeeded", "" if api_ok else fix[API]),
        CheckItem(INITIAL_SYNC, sync_ok, sync_detail, "" if sync_ok else fix[INITIAL_SYNC]),
    )
    status = store.status
    if store.status is not StoreStatus.DISCONNECTED:
        if not auth_ok or not token_ok or (granted is not None and missing):
            status = StoreStatus.RECONNECT_REQUIRED
        elif not all(i.passed for i in items):
            status = StoreStatus.ERROR
        else:
            status = StoreStatus.CONNECTED
        failed_items = [i for i in items if not i.passed]
        detail = "; ".join(f"{i.name}: {i.detail}" for i in failed_items) or None
        registry.set_store_status(domain, status, detail)
    report = HealthReport(domain=domain, items=items, details=details, status=status, checked_at=utcnow())
    save_health(registry, report)
    return report


def save_health(registry: StoreRegistry, report: HealthReport) -> None:
    """Keep the report (and the details, when Shopify answered) with the store."""
    with registry.session() as s:
        row = s.get(StoreDetails, report.domain)
        if row is None:
            row = StoreDetails(store_domain=report.domain, details="{}")
            s.add(row)
        if report.details:
            row.details = json.dumps(report.details)
        row.health = json.dumps([asdict(i) for i in report.items])
        row.checked_at = report.checked_at


def saved_health(
    registry: StoreRegistry, domain: str
) -> tuple[dict[str, Any], list[CheckItem], datetime | None]:
    """The last saved details, checklist and check time of a store (empty if never checked)."""
    with registry.session() as s:
        row = s.get(StoreDetails, domain)
        if row is None:
            return {}, [], None
        items = [CheckItem(**i) for i in json.loads(row.health or "[]")]
        return json.loads(row.details or "{}"), items, row.checked_at
