"""The CRM field-edit feed: edits made in the CRM to contact fields, into the landing zone.

One edit per JSONL line (or CSV row, header as below)::

    {"contact_id": "ct_3f9a…", "field": "lifecycle_stage", "value": "customer",
     "edited_at": "2026-11-02T09:30:00Z"}

============  ========  ==============================================================
column        required  meaning
============  ========  ==============================================================
contact_id    yes       the contact's id in ``core.contacts``
field         yes       a field of the ownership table (``transforms/data/field_ownership.csv``)
value         no        the new value; empty or null clears the field
edited_at     yes       ISO 8601 with a UTC offset; the latest edit of a field wins
============  ========  ==============================================================

Drop files (``.jsonl``, ``.ndjson`` or ``.csv``) into
``<landing>/_crm/field_edits/inbox/``; the next refresh of ``core.contacts`` imports them
and moves them to ``processed/``. Each line is validated on its own: valid edits become one
immutable landing batch, which ``pipelines.engagement_load.load_crm_edits`` loads into
``crm.field_edits``; a malformed line (or an unknown field) is written with its line number
and the reason to ``<landing>/_quarantine/field_edits/<batch_id>.jsonl``, and the rest still
loads. An edit to a field the CRM does not own is loaded but refused when contacts are built
(counted in ``core.contact_blocked_overwrites``).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from pipelines import landing
from pipelines.engagement_load import CRM, CRM_ENTITY

INBOX = "inbox"
PROCESSED = "processed"
SUFFIXES = frozenset({".jsonl", ".ndjson", ".csv"})


class CrmEdit(BaseModel):
    """One validated CRM field edit."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    contact_id: str
    field: str
    value: str | None = None
    edited_at: datetime

    @field_validator("contact_id", "field")
    @classmethod
    def _present(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("value", mode="before")
    @classmethod
    def _blank_clears(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("edited_at")
    @classmethod
    def _has_offset(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2026-11-02T09:30:00Z")
        return value

    def to_row(self) -> dict[str, Any]:
        """The landing row: what ``crm.field_edits`` loads."""
        return {
            "contact_id": self.contact_id,
            "field": self.field,
            "value": self.value,
            "edited_at": self.edited_at.isoformat(),
        }


@dataclass(frozen=True)
class ImportResult:
    """What one file gave: edits landed, lines quarantined and where."""

    source: Path
    accepted: int
    quarantined: int
    batch: landing.Manifest | None
    quarantine_path: Path | None


class FeedFormatError(ValueError):
    """The file cannot be read as a CRM edit feed at all."""


def _lines(path: Path) -> Iterator[tuple[int, str, dict[str, Any] | None, str]]:
    """``(line number, raw text, parsed object or None, problem)`` per non-blank line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FeedFormatError(f"{path.name} is not UTF-8 text ({exc.reason}); save it as UTF-8.") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(text.splitlines()))
        if not rows:
            return
        header = [h.strip() for h in rows[0]]
        for number, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue
            raw = ",".join(row)
            if len(row) != len(header):
                yield number, raw, None, f"has {len(row)} cells, the header {len(header)}"
                continue
            yield number, raw, dict(zip(header, row, strict=True)), ""
        return
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield number, raw, None, f"not JSON ({exc.msg})"
            continue
        if not isinstance(parsed, dict):
            yield number, raw, None, "not a JSON object"
            continue
        yield number, raw, parsed, ""


def _reason(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(x) for x in item['loc'])}: {item['msg']}" if item["loc"] else item["msg"]
        for item in error.errors()
    )


def import_file(path: Path, landing_root: Path, known_fields: set[str] | None = None) -> ImportResult:
    """Validate ``path`` line by line; land the valid edits, quarantine the rest.

    ``known_fields`` (the ownership table's fields), when given, turns an edit of any other
    field into a quarantined line, so a misspelt field name is reported, not ignored.
    Raises ``FileNotFoundError`` for a missing file and ``FeedFormatError`` for a file that
    is not text; neither writes anything.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CRM edit file")
    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for number, raw, parsed, problem in _lines(path):
        if parsed is not None:
            try:
                edit = CrmEdit.model_validate(parsed)
            except ValidationError as exc:
                problem = _reason(exc)
            else:
                if known_fields is None or edit.field in known_fields:
                    accepted.append(edit.to_row())
                    continue
                problem = (
                    f"field {edit.field!r} is not a contact field (see transforms/data/field_ownership.csv)"
                )
        rejected.append({"source": path.name, "line": number, "reason": problem, "raw": raw})
    batch_id = landing.new_batch_id("feed")
    manifest, quarantine_path = landing.write_feed_import(
        landing_root, CRM, CRM_ENTITY, path, accepted, rejected, batch_id
    )
    return ImportResult(path, len(accepted), len(rejected), manifest, quarantine_path)


def inbox_dir(landing_root: Path) -> Path:
    """Where users drop CRM edit files for pickup."""
    return landing.entity_dir(landing_root, CRM, CRM_ENTITY) / INBOX


def import_inbox(landing_root: Path, known_fields: set[str] | None = None) -> list[ImportResult]:
    """Import every inbox file (oldest first), then move it to ``processed/`` so it counts once.

    A file that is not text is quarantined whole; the others still import.
    """
    folder = inbox_dir(landing_root)
    if not folder.exists():
        return []
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES),
        key=lambda p: (p.stat().st_mtime, p.name),
    )
    done = folder.parent / PROCESSED
    results = []
    for path in files:
        try:
            result = import_file(path, landing_root, known_fields)
        except FeedFormatError as exc:
            quarantine = landing_root / "_quarantine" / CRM_ENTITY
            quarantine.mkdir(parents=True, exist_ok=True)
            target = quarantine / f"{landing.new_batch_id('feed')}.jsonl"
            target.write_text(json.dumps({"source": path.name, "line": None, "reason": str(exc)}) + "\n")
            result = ImportResult(path, 0, 1, None, target)
        done.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(done / path.name))
        results.append(result)
    return results
