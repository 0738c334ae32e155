"""Encryption at rest of store credentials (Fernet: AES-128-CBC + HMAC-SHA256).

The key comes from ``SHOPSYNC_SECRET_KEY`` when set (production: a secret manager puts it
there), otherwise it is generated once into ``<data_dir>/secret.key`` readable only by its
owner. Losing the key means reconnecting every store; it is never written to the control
database or the warehouse.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from orchestration.control.settings import ControlSettings


class SecretKeyError(RuntimeError):
    """The encryption key is missing, malformed or does not match the stored credentials."""


def _read_key_file(path: Path) -> bytes:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # Tighten rather than refuse: the file is ours and a permissive umask made it so.
        os.chmod(path, 0o600)
    return path.read_bytes().strip()


def _create_key_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        # O_EXCL: two processes starting at once must not each write their own key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key_file(path)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key


def load_key(settings: ControlSettings) -> bytes:
    """The Fernet key: from the settings, else the key file (created on first use, mode 0600)."""
    if settings.secret_key is not None:
        key = settings.secret_key.get_secret_value().strip().encode()
    elif settings.key_path.exists():
        key = _read_key_file(settings.key_path)
    else:
        key = _create_key_file(settings.key_path)
    try:
        Fernet(key)
    except (ValueError, TypeError) as exc:
        raise SecretKeyError(
            "SHOPSYNC_SECRET_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes). "
            'Generate one with: python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"'
        ) from exc
    return key


class CredentialCipher:
    """Encrypts and decrypts a store's credentials (a small JSON object)."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def encrypt(self, credentials: dict[str, Any]) -> bytes:
        """Encrypt credentials for storage."""
        return self._fernet.encrypt(json.dumps(credentials, separators=(",", ":")).encode())

    def decrypt(self, token: bytes) -> dict[str, Any]:
        """Decrypt stored credentials; a key mismatch raises ``SecretKeyError``."""
        try:
            data: dict[str, Any] = json.loads(self._fernet.decrypt(token))
        except InvalidToken as exc:
            raise SecretKeyError(
                "Stored store credentials cannot be decrypted with the current secret key. "
                "Restore the original SHOPSYNC_SECRET_KEY (or data/secret.key), or reconnect the store."
            ) from exc
        return data
