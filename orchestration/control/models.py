"""Tables of the control plane: projects, stores, per-entity sync status, deletions and privacy actions.

Portable SQL only (SQLite by default, PostgreSQL in production): enums are stored as
strings with a CHECK, timestamps as timezone-aware values in UTC.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import BigInteger, DateTime, Enum, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Now, in UTC (the only clock the control plane uses)."""
    return datetime.now(UTC)


class StoreStatus(enum.StrEnum):
    """The status badge of a store."""

    CONNECTED = "Connected"
    DISCONNECTED = "Disconnected"
    ERROR = "Error"
    RECONNECT_REQUIRED = "Reconnect required"


class EntityState(enum.StrEnum):
    """The sync status of one entity of one store."""

    PENDING = "Pending"
    SYNCING = "Syncing"
    SYNCED = "Synced"
    FAILED = "Failed"


class AuthKind(enum.StrEnum):
    """How the store's credentials authenticate (more kinds come with the OAuth flows)."""

    ACCESS_TOKEN = "access_token"
    CLIENT_CREDENTIALS = "client_credentials"
    OAUTH = "oauth"


def _enum(kind: type[enum.StrEnum], name: str) -> Enum:
    # Store the human value ("Reconnect required"), not the member name, so SQL readers see
    # the product's words; non-native so SQLite and PostgreSQL behave the same.
    return Enum(
        kind,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [m.value for m in members],
    )


class Base(DeclarativeBase):
    """Declarative base of the control-plane tables."""


class Project(Base):
    """A workspace owning one warehouse; a store belongs to exactly one project.

    ``warehouse_path`` is relative to the data folder unless absolute; the project's landing
    zone, fetch state, snapshot and privacy exports live beside the warehouse file.
    """

    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    warehouse_path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    stores: Mapped[list[Store]] = relationship(back_populates="project")


class Store(Base):
    """A connected Shopify store: where to reach it and how (credentials encrypted)."""

    __tablename__ = "stores"

    domain: Mapped[str] = mapped_column(String(100), primary_key=True)
    project_name: Mapped[str] = mapped_column(ForeignKey("projects.name"), index=True)
    # Set for the devstore or a proxy; None means https://<domain>.
    api_base_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    auth_kind: Mapped[AuthKind] = mapped_column(_enum(AuthKind, "auth_kind"), default=AuthKind.ACCESS_TOKEN)
    credentials: Mapped[bytes] = mapped_column(LargeBinary)
    scopes: Mapped[str] = mapped_column(Text, default="")  # comma-separated, sorted
    status: Mapped[StoreStatus] = mapped_column(
        _enum(StoreStatus, "store_status"), default=StoreStatus.CONNECTED
    )
    status_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    connected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    project: Mapped[Project] = relationship(back_populates="stores")
    entities: Mapped[list[EntityStatus]] = relationship(back_populates="store", cascade="all, delete-orphan")


class EntityStatus(Base):
    """Where one entity of one store stands: the Sync status row of the product."""

    __tablename__ = "entity_status"

    store_domain: Mapped[str] = mapped_column(
        ForeignKey("stores.domain", ondelete="CASCADE"), primary_key=True
    )
    entity: Mapped[str] = mapped_column(String(40), primary_key=True)
    state: Mapped[EntityState] = mapped_column(
        _enum(EntityState, "entity_state"), default=EntityState.PENDING
    )
    last_bulk_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    store: Mapped[Store] = relationship(back_populates="entities")


class StoreDetails(Base):
    """The shop's own details as Shopify last reported them (refreshed by the health check)."""

    __tablename__ = "store_details"

    store_domain: Mapped[str] = mapped_column(
        ForeignKey("stores.domain", ondelete="CASCADE"), primary_key=True
    )
    details: Mapped[str] = mapped_column(Text, default="{}")  # JSON object
    health: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list of checklist items
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class OutboundToggles(Base):
    """The four "Sync data to Shopify" toggles of a store (reverse sync); all off by default."""

    __tablename__ = "outbound_toggles"

    store_domain: Mapped[str] = mapped_column(
        ForeignKey("stores.domain", ondelete="CASCADE"), primary_key=True
    )
    profile_fill: Mapped[bool] = mapped_column(default=False)
    email_consent: Mapped[bool] = mapped_column(default=False)
    sms_consent: Mapped[bool] = mapped_column(default=False)
    engagement: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class InboundToggles(Base):
    """The five "Sync data from Shopify" toggles of a store; all on by default.

    A missing row means all on. ``customer_profiles`` gates the customers fetch,
    ``orders`` the orders and abandoned-checkouts fetches, ``catalogue`` products and
    collections; ``email_consent``/``sms_consent`` gate importing Shopify's consent states.
    """

    __tablename__ = "inbound_toggles"

    store_domain: Mapped[str] = mapped_column(
        ForeignKey("stores.domain", ondelete="CASCADE"), primary_key=True
    )
    customer_profiles: Mapped[bool] = mapped_column(default=True)
    email_consent: Mapped[bool] = mapped_column(default=True)
    sms_consent: Mapped[bool] = mapped_column(default=True)
    orders: Mapped[bool] = mapped_column(default=True)
    catalogue: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class CustomerList(Base):
    """A named customer list; assigned to at most one store, and a store has at most one."""

    __tablename__ = "customer_lists"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    store_domain: Mapped[str | None] = mapped_column(
        ForeignKey("stores.domain", ondelete="SET NULL"), unique=True, nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeletedStore(Base):
    """A store that was deleted: when, from which project, and what was removed.

    No credentials are kept except, encrypted, the app secret(s) that sign the store's
    webhooks, and only until Shopify's ``shop/redact`` for the store has been handled: that
    compliance webhook arrives about 48 hours after the app is uninstalled and must be
    verified like any other delivery.
    """

    __tablename__ = "deleted_stores"

    domain: Mapped[str] = mapped_column(String(100), primary_key=True)
    project_name: Mapped[str] = mapped_column(String(100))
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    webhook_secrets: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    removed: Mapped[str] = mapped_column(Text, default="{}")  # JSON summary of what was removed


class PrivacyAction(Base):
    """One privacy request (a compliance webhook or a delete) and what was done about it.

    Holds ids, times, the outcome and counts of what was touched, never personal data.
    """

    __tablename__ = "privacy_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    topic: Mapped[str] = mapped_column(String(60))
    shop: Mapped[str] = mapped_column(String(100), index=True)
    customer_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    outcome: Mapped[str] = mapped_column(String(40), default="pending")
    touched: Mapped[str] = mapped_column(Text, default="{}")  # JSON: table -> rows, files, ...
