"""The engagement feed: email and SMS events from the messaging side, into the landing zone.

Schema (one event per JSONL line or CSV row; header names as below):

============  ========  ==========================================================
column        required  meaning
============  ========  ==========================================================
event_id      yes       unique id from the sender; re-sending an event is harmless
occurred_at   yes       ISO 8601 with a UTC offset, e.g. ``2026-11-02T09:30:00Z``
type          yes       ``email_sent`` ``email_delivered`` ``email_open``
                        ``email_click`` ``email_unsubscribe`` ``sms_sent``
                        ``sms_click`` ``sms_inbound``
email         one of    the recipient's email address (email events)
phone         these     the recipient's phone, E.164 or national (SMS events)
shop          no        ``<handle>.myshopify.com``: limits the event to that store
campaign      no        campaign name or id
body          sms_in.   the text of an inbound SMS (``STOP``, ``START``, …)
============  ========  ==========================================================

Files arrive two ways: ``shopsync engagement import FILE``, or dropped into
``<landing>/_engagement/`` (the Dagster sensor ``engagement_feed_sensor`` picks them up within
seconds; write the file elsewhere and move it in, or it is read once it has not changed for a
couple of seconds). Either way each line is validated on its own: valid events become one
immutable landing batch (shop ``_engagement``) that the loader reads like any other; a
malformed line is written, with its line number and the reason, to
``<landing>/_quarantine/engagement/<batch_id>.jsonl`` and the rest still loads. A dropped file
is then moved to ``<landing>/_engagement/processed/`` (prefixed with its content hash), so it
is imported once; the same content dropped again is set aside there without a second import.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from pipelines import landing

EventType = Literal[
    "email_sent",
    "email_delivered",
    "email_open",
    "email_click",
    "email_unsubscribe",
    "sms_sent",
    "sms_click",
    "sms_inbound",
]
ENTITY = "engagement"
PROCESSED = "processed"
FEED_SUFFIXES = frozenset({".jsonl", ".ndjson", ".csv"})
# a landing batch's own file name: <stamp>-<mode>-<8 hex>.jsonl (never taken for a dropped file)
_BATCH_NAME = re.compile(r"^\d{8}T\d{12}-[a-z]+-[0-9a-f]{8}$")
SETTLE_S = 2.0


class EngagementEvent(BaseModel):
    """One validated engagement event."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    event_id: str
    occurred_at: datetime
    type: EventType
    email: str | None = None
    phone: str | None = None
    shop: str | None = None
    campaign: str | None = None
    body: str | None = None

    @field_validator("email", "phone", "shop", "campaign", "body", mode="before")
    @classmethod
    def _blank_is_missing(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("event_id")
    @classmethod
    def _event_id_present(cls, value: str) -> str:
        if not value:
            raise ValueError("event_id is empty")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _has_offset(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("occurred_at needs a UTC offset, e.g. 2026-11-02T09:30:00Z")
        return value

    @field_validator("shop")
    @classmethod
    def _shop_domain(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith(".myshopify.com"):
            raise ValueError("shop must be a <handle>.myshopify.com domain")
        return value

    @model_validator(mode="after")
    def _addressable(self) -> EngagementEvent:
        if self.type.startswith("email") and not self.email:
            raise ValueError(f"{self.type} needs an email")
        if self.type.startswith("sms") and not self.phone:
            raise ValueError(f"{self.type} needs a phone")
        if self.type == "sms_inbound" and self.body is None:
            raise ValueError("sms_inbound needs a body")
        return self

    def to_row(self) -> dict[str, Any]:
        """The landing-row form (timestamps as ISO strings in UTC)."""
        row = self.model_dump()
        row["occurred_at"] = self.occurred_at.isoformat().replace("+00:00", "Z")
        return row


@dataclass(frozen=True)
class ImportResult:
    """What one import did."""

    source: Path
    accepted: int
    quarantined: int
    batch: landing.Manifest | None
    quarantine_path: Path | None


class FeedFormatError(ValueError):
    """The file cannot be read as an engagement feed at all (not a per-line problem)."""


def _lines(path: Path) -> Iterator[tuple[int, str, dict[str, Any] | None, str | None]]:
    """(line number, raw text, parsed object or None, parse error or None) per input line."""
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for number, raw in enumerate(fh, 1):
                text = raw.rstrip("\n")
                if not text.strip():
                    continue
                try:
                    parsed = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield number, text, None, f"not valid JSON: {exc.msg} at column {exc.colno}"
                    continue
                if not isinstance(parsed, dict):
                    yield number, text, None, "not a JSON object"
                    continue
                yield number, text, parsed, None
    elif suffix == ".csv":
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "event_id" not in reader.fieldnames:
                raise FeedFormatError(
                    f"{path.name}: a CSV feed needs a header row with event_id, occurred_at, type, …"
                )
            for number, row in enumerate(reader, 2):
                if None in row:
                    yield number, json.dumps(row, default=str), None, "more fields than the header has"
                    continue
                yield number, json.dumps(row), dict(row), None
    else:
        raise FeedFormatError(f"{path.name}: engagement files must be .jsonl or .csv")


def _reason(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(x) for x in item["loc"])
        parts.append(f"{where}: {item['msg']}" if where else item["msg"])
    return "; ".join(parts)


def import_file(path: Path, landing_root: Path, *, batch_id: str | None = None) -> ImportResult:
    """Validate ``path`` line by line; land the valid events, quarantine the rest.

    ``batch_id`` makes the import idempotent (a dropped file's id derives from its content):
    importing again rewrites nothing. Raises ``FileNotFoundError`` for a missing file and
    ``FeedFormatError`` for a file that is not a feed at all; neither writes anything.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such engagement file")
    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for number, raw, parsed, problem in _lines(path):
        if parsed is not None:
            try:
                accepted.append(EngagementEvent.model_validate(parsed).to_row())
                continue
            except ValidationError as exc:
                problem = _reason(exc)
        rejected.append({"source": path.name, "line": number, "reason": problem, "raw": raw})

    batch_id = batch_id or landing.new_batch_id("feed")
    manifest, quarantine_path = landing.write_feed_import(
        landing_root, landing.ENGAGEMENT, ENTITY, path, accepted, rejected, batch_id
    )
    return ImportResult(path, len(accepted), len(rejected), manifest, quarantine_path)


@dataclass(frozen=True)
class DroppedFile:
    """A feed file a user dropped into ``<landing>/_engagement/``."""

    path: Path
    sha256: str
    size: int
    modified: float

    @property
    def batch_id(self) -> str:
        """The landing batch its events become: derived from the drop time and the content."""
        stamp = datetime.fromtimestamp(self.modified, UTC).strftime("%Y%m%dT%H%M%S%f")
        return f"{stamp}-feed-{self.sha256[:8]}"


def drop_dir(landing_root: Path) -> Path:
    """Where users drop feed files for pickup (beside the engagement batches)."""
    return landing.entity_dir(landing_root, landing.ENGAGEMENT, ENTITY)


def processed_dir(landing_root: Path) -> Path:
    """Where picked-up feed files are kept after their import."""
    return drop_dir(landing_root) / PROCESSED


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dropped_files(
    landing_root: Path, *, settle_s: float = SETTLE_S, now: float | None = None
) -> list[DroppedFile]:
    """Feed files waiting in the drop folder, oldest first.

    Landing batches (a batch-id name or a manifest beside it), hidden and temporary files,
    and files changed within ``settle_s`` seconds (still being written) are left alone.
    """
    folder = drop_dir(landing_root)
    if not folder.is_dir():
        return []
    moment = time.time() if now is None else now
    found: list[DroppedFile] = []
    for path in folder.iterdir():
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in FEED_SUFFIXES:
            continue
        if _BATCH_NAME.match(path.stem) or path.with_suffix(".json").exists():
            continue
        stat = path.stat()
        if moment - stat.st_mtime < settle_s:
            continue
        found.append(DroppedFile(path, _sha256(path), stat.st_size, stat.st_mtime))
    return sorted(found, key=lambda f: (f.modified, f.path.name))


def already_imported(landing_root: Path, sha256: str) -> bool:
    """Whether a file with this content was picked up before."""
    folder = processed_dir(landing_root)
    return folder.is_dir() and any(folder.glob(f"{sha256[:16]}-*"))


def _set_aside(landing_root: Path, dropped: DroppedFile) -> Path:
    folder = processed_dir(landing_root)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{dropped.sha256[:16]}-{dropped.path.name}"
    shutil.move(str(dropped.path), target)
    return target


def set_aside_duplicate(landing_root: Path, dropped: DroppedFile) -> Path:
    """Move a re-dropped copy of an imported file to ``processed/`` without importing it again."""
    return _set_aside(landing_root, dropped)


def import_dropped(landing_root: Path, dropped: DroppedFile) -> ImportResult:
    """Import one dropped file, then move it to ``processed/``.

    Idempotent: its batch id derives from the file, so a run retried after a crash lands the
    same batch again (a no-op). A file that is not a feed at all is quarantined whole, with
    the reason, and moved aside too; nothing is lost.
    """
    if not dropped.path.exists():
        # a run retried after it moved the file: the batch is on disk already
        return ImportResult(dropped.path, 0, 0, None, None)
    if already_imported(landing_root, dropped.sha256):
        _set_aside(landing_root, dropped)
        return ImportResult(dropped.path, 0, 0, None, None)
    try:
        result = import_file(dropped.path, landing_root, batch_id=dropped.batch_id)
    except FeedFormatError as exc:
        folder = landing_root / "_quarantine" / ENTITY
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{dropped.batch_id}.jsonl"
        target.write_text(json.dumps({"source": dropped.path.name, "line": None, "reason": str(exc)}) + "\n")
        result = ImportResult(dropped.path, 0, 1, None, target)
    _set_aside(landing_root, dropped)
    return result


def feed_batches(landing_root: Path, *, pending_only: bool = True) -> list[tuple[landing.Manifest, Path]]:
    """Engagement batches (``landing/_engagement/<batch_id>.jsonl`` with its manifest), oldest first.

    Looks in the engagement folder only, not through every store's batches, so a sensor can
    ask every few seconds.
    """
    folder = drop_dir(landing_root)
    if not folder.is_dir():
        return []
    found = []
    for manifest_path in folder.glob("*.json"):
        data_path = manifest_path.with_suffix(".jsonl")
        if manifest_path.name.startswith(".") or not data_path.exists():
            continue
        if pending_only and landing.is_loaded(data_path):
            continue
        try:
            found.append((landing.read_manifest(manifest_path), data_path))
        except (ValueError, TypeError):
            continue  # a .json a person put there, not a batch manifest
    return sorted(found, key=lambda item: item[0].batch_id)


def import_drops(landing_root: Path) -> list[ImportResult]:
    """Import every file waiting in the drop folder (what the sensor's runs do, file by file)."""
    results = []
    for dropped in dropped_files(landing_root, settle_s=0.0):
        results.append(import_dropped(landing_root, dropped))
    return results
