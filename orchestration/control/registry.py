"""The store registry: which stores exist, how to reach them, and how their syncs stand.

Callers get plain frozen records (``StoreInfo``, ``EntityStatusInfo``), never ORM objects,
so nothing leaks a session, and never credentials unless they ask for them by name
(``credentials``). Extension points for the later connect flows (OAuth, reconnect,
disconnect, delete, health) are the status setters and ``AuthKind``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from orchestration.control.crypto import CredentialCipher, load_key
from orchestration.control.domains import normalize_store_domain
from orchestration.control.models import (
    AuthKind,
    Base,
    EntityState,
    EntityStatus,
    Project,
    Store,
    StoreStatus,
    utcnow,
)
from orchestration.control.settings import ControlSettings

DEFAULT_PROJECT = "default"

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


def _enable_sqlite_foreign_keys(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        # Dagster runs assets of several stores at once: wait for the writer, don't fail.
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


class StoreRegistry:
    """The control-plane database: projects, stores (credentials encrypted), entity status."""

    def __init__(self, settings: ControlSettings | None = None) -> None:
        self.settings = settings or ControlSettings()
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
    def ensure_project(
        self, name: str = DEFAULT_PROJECT, warehouse_path: str = "data/warehouse.duckdb"
    ) -> str:
        """Create the project if it does not exist yet; return its warehouse path."""
        with self.session() as s:
            project = s.get(Project, name)
            if project is None:
                project = Project(name=name, warehouse_path=warehouse_path)
                s.add(project)
            return project.warehouse_path

    def projects(self) -> dict[str, str]:
        """Project name -> warehouse path."""
        with self.session() as s:
            return {p.name: p.warehouse_path for p in s.scalars(select(Project).order_by(Project.name))}

    # stores ------------------------------------------------------------------------------
    def connect_store(
        self,
        domain: str,
        *,
        access_token: str,
        project: str = DEFAULT_PROJECT,
        api_base_url: str | None = None,
        scopes: Iterable[str] = (),
        auth_kind: AuthKind = AuthKind.ACCESS_TOKEN,
        extra_credentials: dict[str, Any] | None = None,
    ) -> StoreInfo:
        """Register (or reconnect) a store with verified credentials; status becomes Connected.

        ``domain`` is normalised (raises ``InvalidStoreDomain``). Reconnecting a store keeps
        its entity status (and so its sync history); a store already in another project is
        refused, as the product allows one project per store.
        """
        domain = normalize_store_domain(domain)
        secret = self.cipher.encrypt({"access_token": access_token, **(extra_credentials or {})})
        now = utcnow()
        with self.session() as s:
            if s.get(Project, project) is None:
                s.add(Project(name=project, warehouse_path="data/warehouse.duckdb"))
                s.flush()
            row = s.get(Store, domain)
            if row is not None and row.project_name != project:
                raise StoreInOtherProject(
                    f"Already connected to another project: {domain} belongs to project "
                    f"{row.project_name!r}. Disconnect it there first, then connect it here."
                )
            if row is None:
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
        """Registered stores, by domain."""
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
