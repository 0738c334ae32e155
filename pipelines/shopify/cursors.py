"""Persisted fetch state: incremental cursors and in-flight bulk jobs, one JSON file each.

Layout: ``<state_dir>/<shop>/<entity>.<kind>.json`` where kind is ``incremental``,
``bulk`` or ``reconcile``. Files are replaced atomically (temp file, fsync, rename), so a
crash leaves either the old state or the new one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def state_path(state_dir: Path, shop: str, entity: str, kind: str) -> Path:
    """The file holding one shop's ``kind`` state for ``entity``."""
    return state_dir / shop / f"{entity}.{kind}.json"


def load_state(state_dir: Path, shop: str, entity: str, kind: str) -> dict[str, Any] | None:
    """The saved state, or None when there is none."""
    path = state_path(state_dir, shop, entity, kind)
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def save_state(state_dir: Path, shop: str, entity: str, kind: str, data: dict[str, Any]) -> None:
    """Replace the saved state atomically."""
    path = state_path(state_dir, shop, entity, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def clear_state(state_dir: Path, shop: str, entity: str, kind: str) -> None:
    """Forget the saved state (missing is fine)."""
    state_path(state_dir, shop, entity, kind).unlink(missing_ok=True)


@dataclass
class Window:
    """An incremental window in progress: fixed bounds and the GraphQL cursor reached so far."""

    window_from: str
    window_to: str
    after: str | None = None  # GraphQL endCursor of the last page already written to landing
    rows: int = 0


@dataclass
class IncrementalCursor:
    """Where the incremental read of one entity stands.

    ``watermark`` is the upper bound of the last completed window: everything updated at
    or before it has been read. ``updated_at``/``id`` is the newest row seen (the
    ``(updated_at, id)`` cursor), kept for diagnostics and as a floor when no watermark
    exists. ``window`` is set while a window is being paged, so a crashed run resumes with
    the same bounds and GraphQL cursor instead of restarting from ``updated_at`` alone.
    """

    watermark: str | None = None
    updated_at: str | None = None
    id: str | None = None
    window: Window | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: Path, shop: str, entity: str) -> IncrementalCursor:
        """The saved cursor, or an empty one."""
        data = load_state(state_dir, shop, entity, "incremental") or {}
        window = data.get("window")
        return cls(
            watermark=data.get("watermark"),
            updated_at=data.get("updated_at"),
            id=data.get("id"),
            window=Window(**window) if window else None,
            extra=data.get("extra") or {},
        )

    def save(self, state_dir: Path, shop: str, entity: str) -> None:
        """Persist atomically."""
        save_state(state_dir, shop, entity, "incremental", asdict(self))

    def advance(self, updated_at: str | None, row_id: str | None) -> None:
        """Move the ``(updated_at, id)`` cursor forward if this row is newer."""
        if updated_at is None:
            return
        if self.updated_at is None or (updated_at, row_id or "") > (self.updated_at, self.id or ""):
            self.updated_at, self.id = updated_at, row_id
