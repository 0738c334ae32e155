"""Settings of the control plane, read from the environment when constructed (never at import)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ControlSettings(BaseSettings):
    """Where the store registry lives and how its secrets are protected.

    Environment: ``SHOPSYNC_CONTROL_URL`` (an SQLAlchemy URL, e.g.
    ``postgresql+psycopg2://user:pw@host/db``), ``SHOPSYNC_SECRET_KEY`` (a Fernet key),
    ``SHOPSYNC_DATA_DIR`` and ``SHOPSYNC_PROJECT`` (the project a Dagster code location
    serves). Values passed to the constructor win over the environment.
    """

    model_config = SettingsConfigDict(env_prefix="SHOPSYNC_", extra="ignore")

    data_dir: Path = Path("data")
    control_url: str | None = None
    secret_key: SecretStr | None = None
    project: str = "default"

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL of the control database (SQLite under ``data_dir`` by default)."""
        if self.control_url:
            # SQLAlchemy 2.1 maps a bare "postgresql://" to psycopg 3; the lock ships psycopg2.
            for bare in ("postgresql://", "postgres://"):
                if self.control_url.startswith(bare):
                    return "postgresql+psycopg2://" + self.control_url.removeprefix(bare)
            return self.control_url
        return f"sqlite:///{(self.data_dir / 'control.db').resolve()}"

    @property
    def journal_path(self) -> Path:
        """The webhook receiver's journal (shared by every project)."""
        return self.data_dir / "webhooks" / "journal.db"

    @property
    def key_path(self) -> Path:
        """Where a generated encryption key is kept when ``SHOPSYNC_SECRET_KEY`` is not set."""
        return self.data_dir / "secret.key"
