"""Projects: each owns one warehouse, and the landing zone, fetch state and exports beside it.

Several projects share one control plane (stores, credentials, statuses), and a store
belongs to one project. The default project keeps the historical layout directly under the
data folder; any other project lives under ``<data>/projects/<name>/``::

    <data>/control.db, secret.key, webhooks/journal.db      shared by every project
    <data>/warehouse.duckdb, landing/, state/, snapshot/      project "default"
    <data>/projects/<name>/warehouse.duckdb, landing/, ...    project <name>
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PROJECT = "default"
WAREHOUSE_FILE = "warehouse.duckdb"
# What a project row held before projects had their own warehouses (never read then).
_LEGACY_DEFAULT = "data/warehouse.duckdb"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class InvalidProjectName(ValueError):
    """A project name that cannot name a folder; ``str(exc)`` is the message to show."""


def validate_project_name(name: str) -> str:
    """The project name, or ``InvalidProjectName`` (it becomes a folder name)."""
    if not _NAME.fullmatch(name or ""):
        raise InvalidProjectName(
            f"Invalid project name {name!r}: use 1 to 63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit."
        )
    return name


def default_warehouse_path(project: str) -> str:
    """Where a new project's warehouse goes, relative to the data folder."""
    if project == DEFAULT_PROJECT:
        return WAREHOUSE_FILE
    return f"projects/{validate_project_name(project)}/{WAREHOUSE_FILE}"


@dataclass(frozen=True)
class ProjectPaths:
    """The files and folders of one project."""

    project: str
    warehouse: Path

    @property
    def root(self) -> Path:
        """The folder holding the warehouse and the project's other data."""
        return self.warehouse.parent

    @property
    def landing(self) -> Path:
        """The project's landing zone."""
        return self.root / "landing"

    @property
    def state(self) -> Path:
        """Fetch cursors and persisted bulk job ids."""
        return self.root / "state"

    @property
    def snapshot(self) -> Path:
        """The analyst snapshot folder (``analyst.duckdb`` inside)."""
        return self.root / "snapshot"

    @property
    def privacy(self) -> Path:
        """Answers to customers/data_request, one folder per store."""
        return self.root / "privacy"

    @classmethod
    def resolve(cls, project: str, data_dir: Path, warehouse_path: str | None = None) -> ProjectPaths:
        """The paths of ``project`` from its stored warehouse path (or the default one)."""
        stored = warehouse_path or default_warehouse_path(project)
        if stored == _LEGACY_DEFAULT:
            stored = default_warehouse_path(project)
        path = Path(stored)
        return cls(project=project, warehouse=path if path.is_absolute() else Path(data_dir) / path)
