"""The store registry: which stores exist, how to reach them, and how their syncs stand.

Callers get plain frozen records (``StoreInfo``, ``EntityStatusInfo``), never ORM objects,
so nothing leaks a session, and never credentials unless they ask for them by name
(``credentials``). A registry opened for one project (``project=``) lists only that
project's stores: a Dagster code location serves one project and its warehouse.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, select
from sqlalchemy.orm import Session, sessionmaker

from orchestration.control.crypto import CredentialCipher, load_key
from orchestration.control.domains import normalize_store_domain
from orchestration.control.models import (
    AuthKind,
    Base,
    DeletedStore,
    EntityState,
    EntityStatus,
    PrivacyAction,
    Project,
    Store,
    StoreStatus,
    utcnow,
)
from orchestration.control.projects import (
    DEFAULT_PROJECT,
    InvalidProjectName,
    ProjectPaths,
    default_warehouse_path,
    validate_project_name,
)
from orchestration.control.settings import ControlSettings

log = logging.getLogger("shopsync.control")

# Credential keys that sign webhooks (several during a secret rotation).
WEBHOOK_SECRET_KEYS = ("client_secret", "previous_client_secret")
# An expiring offline token (an hour) is refreshed when less than this is left of it.
TOKEN_REFRESH_MARGIN = timedelta(minutes=5)

# The five "Sync data from Shopify" toggles, on by default, with their product labels.
INBOUND_TOGGLES: dict[str, str] = {
    "customer_profiles": "Customer profiles",
    "email_consent": "Email consent",
    "sms_consent": "SMS consent",
    "orders": "Orders, checkouts and carts",
    "catalogue": "Product catalogue",
}
# Which inbound toggle gates each Shopify entity (in the initial sync's order).
ENTITY_TOGGLES: dict[str, str] = {
    "customers": "customer_profiles",
    "orders": "orders",
    "products": "catalogue",
    "collections": "catalogue",
    "abandoned_checkouts": "orders",
}


class RegistryError(RuntimeError):
    """An expected failure of a registry operation; ``str(exc)`` is the message to show."""


class StoreNotFound(RegistryError):
    """The store is not registered."""


class StoreInOtherProject(RegistryError):
    """A store can be connected to one project only."""


@dataclass(frozen=True)
class DeletedStoreInfo:
    """A deleted store's tombstone (no credentials)."""

    domain: str
    project: str
    deleted_at: datetime
    keeps_webhook_secret: bool
    removed: dict[str, Any]


@dataclass(frozen=True)
class PrivacyActionInfo:
    """One audited privacy action (ids, times, outcome and counts; no personal data)."""

    event_id: str
    topic: str
    shop: str
    customer_id: int | None
    request_id: str | None
    received_at: datetime
    done_at: datetime | None
    outcome: str
    touched: dict[str, Any]


def _aware(value: datetime | None) -> datetime | None:
    # SQLite drops the zone; everything the registry writes is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class StoreInfo:
    """A registered store, without its credentials."""

    domain: str
    project: str
    api_base_url: str | None
    auth_kind: AuthKind
    scopes: tuple[str, ...]
    status: StoreStatus
    status_detail: str | None
    created_at: datetime
    connected_at: datetime | None


@dataclass(frozen=True)
class EntityStatusInfo:
    """The sync status of one entity of one store."""

    store: str
    entity: str
    state: EntityState
    last_bulk_sync_at: datetime | None
    last_sync_at: datetime | None
    last_error: str | None


def _store_info(row: Store) -> StoreInfo:
    return StoreInfo(
        domain=row.domain,
        project=row.project_name,
        api_base_url=row.api_base_url,
        auth_kind=AuthKind(row.auth_kind),
        scopes=tuple(s for s in row.scopes.split(",") if s),
        status=StoreStatus(row.status),
        status_detail=row.status_detail,
        created_at=_aware(row.created_at) or utcnow(),
        connected_at=_aware(row.connected_at),
    )


def _entity_info(row: EntityStatus) -> EntityStatusInfo:
    return EntityStatusInfo(
        store=row.store_domain,
        entity=row.entity,
        state=EntityState(row.state),
        last_bulk_sync_at=_aware(row.last_bulk_sync_at),
        last_sync_at=_aware(row.last_sync_at),
        last_error=row.last_error,
    )


def _privacy_info(row: PrivacyAction) -> PrivacyActionInfo:
    return PrivacyActionInfo(
        event_id=row.event_id,
        topic=row.topic,
        shop=row.shop,
        customer_id=row.customer_id,
        request_id=row.request_id,
        received_at=_aware(row.received_at) or utcnow(),
        done_at=_aware(row.done_at),
        outcome=row.outcome,
        touched=json.loads(row.touched or "{}"),
    )


def _enable_sqlite_foreign_keys(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        # Dagster runs assets of several stores at once: wait for the writer, don't fail.
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


@dataclass(frozen=True)
class OfflineTokenSource:
    """A ``ShopifyClient`` token source: the store's expiring OAuth offline token, kept fresh
    in the control plane (``StoreRegistry.offline_token``)."""

    registry: StoreRegistry
    domain: str

    def token(self, stale: str | None = None) -> tuple[str, datetime | None]:
        return self.registry.offline_token(self.domain, stale)

    def __repr__(self) -> str:
        return f"OfflineTokenSource(domain={self.domain!r})"


def _instant(text: Any) -> datetime | None:
    return datetime.fromisoformat(str(text)) if text else None


class StoreRegistry:
    """The control-plane database: projects, stores (credentials encrypted), entity status.

    ``project``: list only that project's stores (a code location's view); None lists all.
    """

    def __init__(self, settings: ControlSettings | None = None, *, project: str | None = None) -> None:
        self.settings = settings or ControlSettings()
        self.project = project
        url = self.settings.database_url
        if url.startswith("sqlite:///"):
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            _enable_sqlite_foreign_keys(self.engine)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._cipher: CredentialCipher | None = None

    # plumbing ----------------------------------------------------------------------------
    @property
    def cipher(self) -> CredentialCipher:
        """The credential cipher (the key is loaded, or created, on first use)."""
        if self._cipher is None:
            self._cipher = CredentialCipher(load_key(self.settings))
        return self._cipher

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        """Release database connections."""
        self.engine.dispose()

    # projects ----------------------------------------------------------------------------
    def ensure_project(self, name: str = DEFAULT_PROJECT, warehouse_path: str | None = None) -> str:
        """Create the project if it does not exist yet; return its warehouse path (resolved).

        ``warehouse_path`` is relative to the data folder unless absolute; by default the
        default project's warehouse is ``warehouse.duckdb`` and any other project's is
        ``projects/<name>/warehouse.duckdb``.
        """
        try:
            validate_project_name(name)
        except InvalidProjectName as exc:
            raise RegistryError(str(exc)) from None
        with self.session() as s:
            self._ensure_project(s, name, warehouse_path)
        return str(self.project_paths(name).warehouse)

    @staticmethod
    def _ensure_project(s: Session, name: str, warehouse_path: str | None = None) -> Project:
        project = s.get(Project, name)
        if project is None:
            project = Project(name=name, warehouse_path=warehouse_path or default_warehouse_path(name))
            s.add(project)
            s.flush()
        return project

    def projects(self) -> dict[str, str]:
        """Project name -> its warehouse file (resolved against the data folder)."""
        with self.session() as s:
            rows = [(p.name, p.warehouse_path) for p in s.scalars(select(Project).order_by(Project.name))]
        return {
            name: str(ProjectPaths.resolve(name, self.settings.data_dir, path).warehouse)
            for name, path in rows
        }

    def project_paths(self, name: str) -> ProjectPaths:
        """Where a project's warehouse, landing zone, state and exports live (a project not
        created yet gets its default place)."""
        with self.session() as s:
            row = s.get(Project, name)
            stored = None if row is None else row.warehouse_path
        return ProjectPaths.resolve(name, self.settings.data_dir, stored)

    def store_paths(self, domain: str) -> ProjectPaths:
        """The paths of the project a registered (or deleted) store belongs to."""
        with self.session() as s:
            row = s.get(Store, domain)
            project = row.project_name if row is not None else None
            if project is None:
                gone = s.get(DeletedStore, domain)
                project = gone.project_name if gone is not None else None
        if project is None:
            raise StoreNotFound(f"Store {domain} is not registered.")
        return self.project_paths(project)

    # stores ------------------------------------------------------------------------------
    def connect_store(
        self,
        domain: str,
        *,
        access_token: str | None = None,
        credentials: dict[str, Any] | None = None,
        project: str = DEFAULT_PROJECT,
        api_base_url: str | None = None,
        scopes: Iterable[str] = (),
        auth_kind: AuthKind = AuthKind.ACCESS_TOKEN,
        extra_credentials: dict[str, Any] | None = None,
    ) -> StoreInfo:
        """Register (or reconnect) a store with verified credentials; status becomes Connected.

        ``credentials`` (encrypted at rest) hold ``access_token`` and/or ``client_id`` and
        ``client_secret``; ``access_token`` and ``extra_credentials`` are shorthands merged
        into it. ``domain`` is normalised (raises ``InvalidStoreDomain``). Reconnecting a
        store keeps its entity status, settings and lists; a store already in another
        project is refused, as the product allows one project per store, unless it was
        disconnected there: then it moves, and its sync status starts over (the new
        project's warehouse has none of its data).
        """
        domain = normalize_store_domain(domain)
        try:
            validate_project_name(project)
        except InvalidProjectName as exc:
            raise RegistryError(str(exc)) from None
        secret_fields: dict[str, Any] = {**(credentials or {}), **(extra_credentials or {})}
        if access_token:
            secret_fields["access_token"] = access_token
        if not secret_fields.get("access_token") and not (
            secret_fields.get("client_id") and secret_fields.get("client_secret")
        ):
            raise RegistryError(
                f"No credentials for {domain}: give an access token, or a client id and client secret."
            )
        secret = self.cipher.encrypt(secret_fields)
        now = utcnow()
        with self.session() as s:
            row = s.get(Store, domain)
            if row is not None and row.project_name != project:
                if row.status is not StoreStatus.DISCONNECTED:
                    raise StoreInOtherProject(
                        f"Already connected to another project: {domain} belongs to project "
                        f"{row.project_name!r}. Disconnect it there first, then connect it here."
                    )
                self._ensure_project(s, project)
                row.project_name = project
                s.execute(delete(EntityStatus).where(EntityStatus.store_domain == domain))
            self._ensure_project(s, project)
            if row is None:
                # A store connected again after a delete starts fresh: the tombstone goes.
                gone = s.get(DeletedStore, domain)
                if gone is not None:
                    s.delete(gone)
                row = Store(domain=domain, project_name=project, created_at=now)
                s.add(row)
            row.api_base_url = api_base_url
            row.auth_kind = auth_kind
            row.credentials = secret
            row.scopes = ",".join(sorted(set(scopes)))
            row.status = StoreStatus.CONNECTED
            row.status_detail = None
            row.connected_at = now
            s.flush()
            return _store_info(row)

    def update_credentials(self, domain: str, changes: dict[str, Any]) -> None:
        """Change some credential fields (None removes one), e.g. a refreshed token's expiry."""
        with self.session() as s:
            row = s.get(Store, domain)
            if row is None:
                raise StoreNotFound(f"Store {domain} is not registered.")
            current = self.cipher.decrypt(row.credentials)
            for key, value in changes.items():
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = value
            row.credentials = self.cipher.encrypt(current)

    def set_scopes(self, domain: str, scopes: Iterable[str]) -> None:
        """Record the access scopes Shopify last reported as granted."""
        with self.session() as s:
            row = s.get(Store, domain)
            if row is None:
                raise StoreNotFound(f"Store {domain} is not registered.")
            row.scopes = ",".join(sorted(set(scopes)))

    def get_store(self, domain: str) -> StoreInfo:
        """A registered store (raises ``StoreNotFound``)."""
        with self.session() as s:
            row = s.get(Store, domain)
            if row is None:
                raise StoreNotFound(
                    f"Store {domain} is not registered. Connect it with: shopsync stores connect {domain} --token ..."
                )
            return _store_info(row)

    def list_stores(self, project: str | None = None) -> list[StoreInfo]:
        """Registered stores, by domain: of ``project``, else of the registry's project, else all."""
        project = project or self.project
        with self.session() as s:
            query = select(Store).order_by(Store.domain)
            if project is not None:
                query = query.where(Store.project_name == project)
            return [_store_info(r) for r in s.scalars(query)]

    def credentials(self, domain: str) -> dict[str, Any]:
        """The decrypted credentials of a store (``{"access_token": ...}``). Never log them."""
        with self.session() as s:
            row = s.get(Store, domain)
            if row is None:
                raise StoreNotFound(f"Store {domain} is not registered.")
            blob = row.credentials
        return self.cipher.decrypt(blob)

    def client_options(self, domain: str) -> dict[str, Any]:
        """Keyword arguments of ``ShopifyClient`` for a store: its base URL and credentials.

        A store on the client-credentials grant gets no ``access_token``: the client then
        obtains tokens itself and refreshes them before expiry and on a 401. A store holding an
        expiring OAuth offline token gets a ``token_source`` that refreshes it here.
        """
        store = self.get_store(domain)
        secret = self.credentials(domain)
        static = store.auth_kind is not AuthKind.CLIENT_CREDENTIALS
        options: dict[str, Any] = {
            "access_token": (secret.get("access_token") or None) if static else None,
            "client_id": secret.get("client_id"),
            "client_secret": secret.get("client_secret"),
            "base_url": store.api_base_url,
            # every process calling this shop (one per entity fetch, the pusher, the CLI)
            # paces to one bucket and shares the bulk-operation slots
            "shared_dir": self.shared_state_dir,
        }
        oauth = store.auth_kind is AuthKind.OAUTH and secret.get("client_id") and secret.get("client_secret")
        if static and (secret.get("refresh_token") or oauth):
            options["token_source"] = OfflineTokenSource(self, domain)
        return options

    def offline_token(
        self, domain: str, stale: str | None = None, *, margin: timedelta = TOKEN_REFRESH_MARGIN
    ) -> tuple[str, datetime | None]:
        """The store's expiring OAuth offline token, refreshed first if it is ``stale`` (found
        expired or refused) or expires within ``margin``; returns it and its expiry.

        One refresh at a time per store: a file lock among this machine's processes and the
        store row's lock on PostgreSQL. A process that waited finds the token the other one
        stored and uses it. Shopify rotates the refresh token on every use; the new pair is
        stored (encrypted) before the token is handed out. A refused refresh (revoked,
        expired, app uninstalled) raises ``ShopifyAuthError``: reconnect the store. A store
        connected by OAuth earlier holds a non-expiring token: the first call moves it to an
        expiring pair by token exchange (Shopify stops accepting the old kind on 2027-01-01).
        """
        from pipelines.shopify.client import ShopifyAuthError, ShopifyUnavailable
        from pipelines.shopify.oauth import (
            OAuthError,
            OAuthRefused,
            migrate_offline_token,
            refresh_offline_token,
        )
        from pipelines.shopify.shared_state import SharedState, state_file

        lock = SharedState(state_file(self.shared_state_dir, domain, "oauth_token"))
        with lock.edit(), self.session() as s:
            row = s.scalars(select(Store).where(Store.domain == domain).with_for_update()).one_or_none()
            if row is None:
                raise StoreNotFound(f"Store {domain} is not registered.")
            current = self.cipher.decrypt(row.credentials)
            token = current.get("access_token")
            expires = _instant(current.get("access_token_expires_at"))
            refresh = current.get("refresh_token")
            fresh = expires is None or expires - datetime.now(UTC) > margin
            if token and token != stale and fresh and refresh:
                return str(token), expires
            keys = (str(current.get("client_id") or ""), str(current.get("client_secret") or ""))
            base_url = row.api_base_url or f"https://{domain}"
            try:
                if refresh:
                    grant = refresh_offline_token(domain, base_url, *keys, str(refresh))
                elif token and row.auth_kind is AuthKind.OAUTH:
                    # a non-expiring offline token from before: moved to an expiring one, once
                    grant = migrate_offline_token(domain, base_url, *keys, str(token))
                else:
                    raise ShopifyAuthError(
                        f"Shopify rejected the access token for {domain} and there is no refresh token: "
                        "reconnect the store.",
                        shop=domain,
                    )
            except OAuthError as exc:
                if not refresh and token and token != stale:
                    # The move failed but the old token still works (Shopify accepts it until
                    # 2027-01-01): keep syncing with it; the next run tries the move again.
                    log.warning("%s: could not move to an expiring offline token yet (%s)", domain, exc)
                    return str(token), None
                if not isinstance(exc, OAuthRefused):
                    raise ShopifyUnavailable(str(exc), shop=domain) from None
                raise ShopifyAuthError(
                    f"Shopify would not refresh the access token for {domain}, so the store must be "
                    f"approved again: shopsync stores reconnect {domain} --oauth --client-id ID "
                    f"--client-secret SECRET. ({exc})",
                    shop=domain,
                ) from None
            current.update(grant.credentials())
            row.credentials = self.cipher.encrypt(current)
            return grant.access_token, grant.expires_at

    @property
    def shared_state_dir(self) -> Path:
        """Where the processes calling a shop share its rate-limit bucket and bulk-job slots."""
        return self.settings.data_dir / "shopify_shared"

    def webhook_secrets(self, domain: str) -> tuple[str, ...]:
        """The app secrets that may sign the store's webhooks (empty if none is known)."""
        secret = self.credentials(domain)
        return tuple(str(secret[k]) for k in WEBHOOK_SECRET_KEYS if secret.get(k))

    # deletion ----------------------------------------------------------------------------
    def forget_store(self, domain: str, removed: dict[str, Any] | None = None) -> None:
        """Remove the store's row and every per-store row, keeping a tombstone.

        The tombstone keeps, encrypted, only the secrets that sign the store's webhooks, so
        the ``shop/redact`` Shopify sends after the uninstall can still be verified.
        """
        with self.session() as s:
            row = s.get(Store, domain)
            if row is None:
                raise StoreNotFound(f"Store {domain} is not registered.")
            secret = self.cipher.decrypt(row.credentials)
            kept = [str(secret[k]) for k in WEBHOOK_SECRET_KEYS if secret.get(k)]
            tomb = s.get(DeletedStore, domain) or DeletedStore(domain=domain)
            tomb.project_name = row.project_name
            tomb.deleted_at = utcnow()
            tomb.webhook_secrets = self.cipher.encrypt({"secrets": kept}) if kept else None
            tomb.removed = json.dumps(removed or {}, default=str)
            s.merge(tomb)
            # Every per-store table by its store_domain column, children first, so no
            # foreign key is left dangling on any database.
            for table in reversed(Base.metadata.sorted_tables):
                if "store_domain" in table.c:
                    s.execute(delete(table).where(table.c.store_domain == domain))
            s.delete(row)

    def deleted_store(self, domain: str) -> DeletedStoreInfo | None:
        """The tombstone of a deleted store, or None."""
        with self.session() as s:
            row = s.get(DeletedStore, domain)
            if row is None:
                return None
            return DeletedStoreInfo(
                domain=row.domain,
                project=row.project_name,
                deleted_at=_aware(row.deleted_at) or utcnow(),
                keeps_webhook_secret=row.webhook_secrets is not None,
                removed=json.loads(row.removed or "{}"),
            )

    def deleted_store_secrets(self, domain: str) -> tuple[str, ...]:
        """The webhook-signing secrets a tombstone still keeps (empty once erased)."""
        with self.session() as s:
            row = s.get(DeletedStore, domain)
            blob = None if row is None else row.webhook_secrets
        if blob is None:
            return ()
        return tuple(self.cipher.decrypt(blob).get("secrets") or ())

    def erase_deleted_store_secrets(self, domain: str) -> bool:
        """Drop the last secret a tombstone keeps (after ``shop/redact``); True if one was kept."""
        with self.session() as s:
            row = s.get(DeletedStore, domain)
            if row is None or row.webhook_secrets is None:
                return False
            row.webhook_secrets = None
            return True

    # privacy audit -----------------------------------------------------------------------
    def privacy_action(self, event_id: str) -> PrivacyActionInfo | None:
        """The audit row of one privacy request, or None if it was never seen."""
        with self.session() as s:
            row = s.scalars(select(PrivacyAction).where(PrivacyAction.event_id == event_id)).first()
            return None if row is None else _privacy_info(row)

    def privacy_actions(self, shop: str | None = None) -> list[PrivacyActionInfo]:
        """Audited privacy actions, oldest first (of one shop, or all)."""
        with self.session() as s:
            query = select(PrivacyAction).order_by(PrivacyAction.id)
            if shop is not None:
                query = query.where(PrivacyAction.shop == shop)
            return [_privacy_info(r) for r in s.scalars(query)]

    def redacted_customers(self, shop: str) -> set[int]:
        """Ids of the store's customers erased on request (customers/redact done)."""
        with self.session() as s:
            rows = s.scalars(
                select(PrivacyAction.customer_id).where(
                    PrivacyAction.shop == shop,
                    PrivacyAction.topic == "customers/redact",
                    PrivacyAction.outcome == "redacted",
                )
            ).all()
        return {int(r) for r in rows if r is not None}

    def record_privacy_action(
        self,
        event_id: str,
        topic: str,
        shop: str,
        *,
        customer_id: int | None = None,
        request_id: str | None = None,
        received_at: datetime | None = None,
        outcome: str,
        touched: dict[str, Any] | None = None,
        done: bool = True,
    ) -> PrivacyActionInfo:
        """Insert or update the audit row of a privacy request (``touched``: counts, never personal data)."""
        with self.session() as s:
            row = s.scalars(select(PrivacyAction).where(PrivacyAction.event_id == event_id)).first()
            if row is None:
                row = PrivacyAction(
                    event_id=event_id, topic=topic, shop=shop, received_at=received_at or utcnow()
                )
                s.add(row)
            row.customer_id = customer_id
            row.request_id = request_id
            row.outcome = outcome
            row.touched = json.dumps(touched or {}, default=str, sort_keys=True)
            row.done_at = utcnow() if done else None
            s.flush()
            return _privacy_info(row)

    def set_store_status(self, domain: str, status: StoreStatus, detail: str | None = None) -> None:
        """Change a store's status badge (e.g. Reconnect required after a 401)."""
        with self.session() as s:
            row = s.get(Store, domain)
            if row is None:
                raise StoreNotFound(f"Store {domain} is not registered.")
            row.status = status
            row.status_detail = detail

    # entity status -----------------------------------------------------------------------
    def entity_status(self, domain: str, entity: str) -> EntityStatusInfo | None:
        """The status of one entity of a store, or None if it never started."""
        with self.session() as s:
            row = s.get(EntityStatus, (domain, entity))
            return None if row is None else _entity_info(row)

    def entity_statuses(self, domain: str) -> list[EntityStatusInfo]:
        """Every entity status row of a store."""
        with self.session() as s:
            rows = s.scalars(
                select(EntityStatus).where(EntityStatus.store_domain == domain).order_by(EntityStatus.entity)
            )
            return [_entity_info(r) for r in rows]

    def mark_entity(
        self,
        domain: str,
        entity: str,
        state: EntityState,
        *,
        error: str | None = None,
        bulk_synced_at: datetime | None = None,
    ) -> EntityStatusInfo:
        """Record a state change of one entity; Synced clears the last error."""
        with self.session() as s:
            row = s.get(EntityStatus, (domain, entity))
            if row is None:
                row = EntityStatus(store_domain=domain, entity=entity)
                s.add(row)
            row.state = state
            if state is EntityState.SYNCED:
                row.last_sync_at = utcnow()
                row.last_error = None
            if error is not None:
                row.last_error = error
            if bulk_synced_at is not None:
                row.last_bulk_sync_at = bulk_synced_at
            s.flush()
            return _entity_info(row)

    # outbound toggles (reverse sync) -------------------------------------------------------
    def outbound_toggles(self, domain: str) -> set[str]:
        """The enabled reverse-sync kinds of a store: some of ``profile``, ``email_consent``,
        ``sms_consent``, ``engagement`` (empty = all off, the default)."""
        from orchestration.control.models import OutboundToggles

        with self.session() as s:
            if s.get(Store, domain) is None:
                raise StoreNotFound(f"Store {domain} is not registered.")
            row = s.get(OutboundToggles, domain)
            if row is None:
                return set()
            flags = {
                "profile": row.profile_fill,
                "email_consent": row.email_consent,
                "sms_consent": row.sms_consent,
                "engagement": row.engagement,
            }
            return {kind for kind, on in flags.items() if on}

    def set_outbound_toggles(self, domain: str, changes: dict[str, bool]) -> set[str]:
        """Turn reverse-sync kinds on or off (keys as in ``outbound_toggles``); returns the enabled set."""
        from orchestration.control.models import OutboundToggles

        columns = {
            "profile": "profile_fill",
            "email_consent": "email_consent",
            "sms_consent": "sms_consent",
            "engagement": "engagement",
        }
        unknown = sorted(set(changes) - set(columns))
        if unknown:
            raise RegistryError(f"Unknown outbound toggles {unknown}; known: {sorted(columns)}.")
        with self.session() as s:
            if s.get(Store, domain) is None:
                raise StoreNotFound(f"Store {domain} is not registered.")
            row = s.get(OutboundToggles, domain)
            if row is None:
                row = OutboundToggles(
                    store_domain=domain,
                    profile_fill=False,
                    email_consent=False,
                    sms_consent=False,
                    engagement=False,
                )
                s.add(row)
            for kind, on in changes.items():
                setattr(row, columns[kind], bool(on))
        return self.outbound_toggles(domain)

    # inbound toggles (Shopify → warehouse) and the customer list ----------------------------
    def inbound_toggles(self, domain: str) -> set[str]:
        """The enabled inbound kinds of a store: some of ``INBOUND_TOGGLES`` (all by default)."""
        from orchestration.control.models import InboundToggles

        with self.session() as s:
            if s.get(Store, domain) is None:
                raise StoreNotFound(f"Store {domain} is not registered.")
            row = s.get(InboundToggles, domain)
            if row is None:
                return set(INBOUND_TOGGLES)
            return {kind for kind in INBOUND_TOGGLES if getattr(row, kind)}

    def set_inbound_toggles(self, domain: str, changes: dict[str, bool]) -> set[str]:
        """Turn inbound kinds on or off; returns the enabled set."""
        from orchestration.control.models import InboundToggles

        unknown = sorted(set(changes) - set(INBOUND_TOGGLES))
        if unknown:
            raise RegistryError(f"Unknown inbound toggles {unknown}; known: {sorted(INBOUND_TOGGLES)}.")
        with self.session() as s:
            if s.get(Store, domain) is None:
                raise StoreNotFound(f"Store {domain} is not registered.")
            row = s.get(InboundToggles, domain)
            if row is None:
                row = InboundToggles(store_domain=domain, **dict.fromkeys(INBOUND_TOGGLES, True))
                s.add(row)
            for kind, on in changes.items():
                setattr(row, kind, bool(on))
        return self.inbound_toggles(domain)

    def enabled_entities(self, domain: str) -> list[str]:
        """The Shopify entities the store's inbound toggles let shopsync fetch, in sync order."""
        on = self.inbound_toggles(domain)
        return [e for e, kind in ENTITY_TOGGLES.items() if kind in on]

    def customer_list(self, domain: str) -> str | None:
        """The name of the customer list assigned to the store, if any."""
        from orchestration.control.models import CustomerList

        with self.session() as s:
            row = s.scalars(select(CustomerList).where(CustomerList.store_domain == domain)).first()
            return None if row is None else row.name

    def customer_lists(self) -> dict[str, str]:
        """Store domain → its customer list, for every store that has one."""
        from orchestration.control.models import CustomerList

        with self.session() as s:
            rows = s.scalars(select(CustomerList).where(CustomerList.store_domain.is_not(None))).all()
            return {str(r.store_domain): r.name for r in rows}

    def assign_customer_list(self, domain: str, name: str | None) -> str | None:
        """Assign the list ``name`` to the store (created if new), or unassign with None.

        A list belongs to one store: assigning a list another store holds is refused.
        """
        from orchestration.control.models import CustomerList

        clean = (name or "").strip()
        if name is not None and not clean:
            raise RegistryError("A customer list needs a name.")
        if len(clean) > 100:
            raise RegistryError("A customer list name cannot exceed 100 characters.")
        with self.session() as s:
            if s.get(Store, domain) is None:
                raise StoreNotFound(f"Store {domain} is not registered.")
            current = s.scalars(select(CustomerList).where(CustomerList.store_domain == domain)).first()
            if name is None:
                if current is not None:
                    current.store_domain = None
                return None
            target = s.get(CustomerList, clean)
            if target is not None and target.store_domain not in (None, domain):
                raise RegistryError(
                    f'The list "{clean}" is already assigned to {target.store_domain}; '
                    "a list can be assigned to one store only. Choose another list or unassign it there first."
                )
            if current is not None and current is not target:
                current.store_domain = None
                s.flush()
            if target is None:
                target = CustomerList(name=clean)
                s.add(target)
            target.store_domain = domain
        return clean
