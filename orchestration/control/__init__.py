"""The control plane: the store registry (SQLAlchemy), credential encryption, domain validation."""

from orchestration.control.crypto import SecretKeyError
from orchestration.control.domains import InvalidStoreDomain, normalize_store_domain
from orchestration.control.models import AuthKind, EntityState, StoreStatus
from orchestration.control.registry import (
    EntityStatusInfo,
    RegistryError,
    StoreInfo,
    StoreInOtherProject,
    StoreNotFound,
    StoreRegistry,
)
from orchestration.control.settings import ControlSettings

__all__ = [
    "AuthKind",
    "ControlSettings",
    "EntityState",
    "EntityStatusInfo",
    "InvalidStoreDomain",
    "RegistryError",
    "SecretKeyError",
    "StoreInOtherProject",
    "StoreInfo",
    "StoreNotFound",
    "StoreRegistry",
    "StoreStatus",
    "normalize_store_domain",
]
