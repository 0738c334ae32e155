"""The landing zone: immutable JSONL batches written by fetchers, read by the loader.

Layout::

    <root>/<shop>/<entity>/<batch_id>.jsonl         the rows, Shopify bulk-JSONL shape
    <root>/<shop>/<entity>/<batch_id>.json          the manifest, written last
    <root>/<shop>/<entity>/<batch_id>.loaded        written by the loader after its commit
    <root>/_engagement/<batch_id>.jsonl|.json        engagement feed batches (shop = "_engagement")

Every batch, whatever fetched it (bulk export, paged query, webhook, reconciliation),
has the shape of Shopify's bulk-operation output: one JSON object per line, each with
its ``id`` gid; rows of nested connections are separate lines carrying ``__parentId``.
So the loader has one path for every source.

A batch becomes visible only when its manifest exists: data first (temp file, fsync,
atomic rename), manifest second. A crash leaves at most a ``.tmp-*`` file that is never
read. Batch ids sort by creation time.

This module is the only writer of landing batches.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

Mode = Literal["bulk", "incremental", "reconcile", "webhook", "feed"]
ENGAGEMENT = "_engagement"
# Folders under the landing root that hold no batches: feed inbox, processed feed files,
# quarantined lines, fetcher state.
_IGNORED_FOLDERS = frozenset({"inbox", "processed", "_quarantine", "_state"})


@dataclass(frozen=True)
class Manifest:
    """What a batch holds and how it came to be."""

    batch_id: str
    shop: str
    entity: str
    mode: Mode
    rows: int
    bytes: int
    sha256: str
    created_at: str
    # True when the batch is a complete export of the entity for the shop (bulk full
    # sync or re-sync, or a reconciliation id list): ids absent from it are deleted.
    complete: bool = False
    window_from: str | None = None
    window_to: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # True for the partial data of a failed bulk job. Its lines are whole, but Shopify's
    # ungrouped JSONL can cut a parent's child lines anywhere, so those children add to
    # what the warehouse holds instead of replacing it.
    partial: bool = False

    @property
    def data_path_name(self) -> str:
        """File name of the batch's rows."""
        return f"{self.batch_id}.jsonl"


def new_batch_id(mode: str, now: datetime | None = None) -> str:
    """A batch id that sorts by creation time and is unique across processes."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%f")
    return f"{stamp}-{mode}-{secrets.token_hex(4)}"


def entity_dir(root: Path, shop: str, entity: str) -> Path:
    """Folder holding one shop's batches of one entity (``_engagement`` has no entity level)."""
    return root / shop if shop == ENGAGEMENT else root / shop / entity


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_batch(
    root: Path,
    shop: str,
    entity: str,
    mode: Mode,
    rows: Iterable[dict[str, Any] | str | bytes] | Path,
    *,
    complete: bool = False,
    window_from: str | None = None,
    window_to: str | None = None,
    extra: dict[str, Any] | None = None,
    batch_id: str | None = None,
    partial: bool = False,
) -> Manifest:
    """Write one immutable batch and return its manifest.

    ``rows`` is either an iterable of JSON objects (dicts, or already-encoded lines) or the
    path of a JSONL file already on disk (a downloaded bulk result), which is moved in
    without being read into memory. Idempotent for a given ``batch_id``: if that batch
    already exists, its manifest is returned unchanged.
    """
    folder = entity_dir(root, shop, entity)
    folder.mkdir(parents=True, exist_ok=True)
    batch_id = batch_id or new_batch_id(mode)
    data_path = folder / f"{batch_id}.jsonl"
    manifest_path = folder / f"{batch_id}.json"
    if manifest_path.exists():
        return read_manifest(manifest_path)

    digest = hashlib.sha256()
    count = 0
    if isinstance(rows, Path):
        with open(rows, "rb") as fh:
            for line in fh:
                if line.strip():
                    count += 1
                digest.update(line)
            os.fsync(fh.fileno())
        os.replace(rows, data_path)
    else:
        tmp = folder / f".tmp-{batch_id}.jsonl"
        with open(tmp, "wb") as fh:
            for row in rows:
                if isinstance(row, dict):
                    line = json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode()
                elif isinstance(row, str):
                    line = row.encode()
                else:
                    line = row
                line = line.rstrip(b"\n") + b"\n"
                digest.update(line)
                fh.write(line)
                count += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, data_path)

    manifest = Manifest(
        batch_id=batch_id,
        shop=shop,
        entity=entity,
        mode=mode,
        rows=count,
        bytes=data_path.stat().st_size,
        sha256=digest.hexdigest(),
        created_at=datetime.now(UTC).isoformat(),
        complete=complete,
        window_from=window_from,
        window_to=window_to,
        extra=dict(extra or {}),
        partial=partial,
    )
    _write_atomic(manifest_path, json.dumps(asdict(manifest), indent=1).encode())
    _fsync_dir(folder)
    return manifest


def write_feed_import(
    landing_root: Path,
    shop: str,
    entity: str,
    source: Path,
    accepted: list[dict[str, Any]],
    rejected: list[dict[str, Any]],
    batch_id: str,
) -> tuple[Manifest | None, Path | None]:
    """Land a feed file's accepted lines as one batch and its rejected ones in quarantine.

    Accepted rows become batch ``batch_id`` (mode ``feed``, noting the source file and how
    many lines were quarantined); rejected lines go to
    ``<landing>/_quarantine/<entity>/<batch_id>.jsonl``. Returns (manifest, quarantine path),
    each None when there was nothing to write.
    """
    manifest = None
    if accepted:
        manifest = write_batch(
            landing_root,
            shop,
            entity,
            "feed",
            accepted,
            batch_id=batch_id,
            extra={"source": source.name, "quarantined": len(rejected)},
        )
    quarantine_path = None
    if rejected:
        folder = landing_root / "_quarantine" / entity
        folder.mkdir(parents=True, exist_ok=True)
        quarantine_path = folder / f"{batch_id}.jsonl"
        with open(quarantine_path, "w", encoding="utf-8") as fh:
            for item in rejected:
                fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    return manifest, quarantine_path


def rewrite_batch(data_path: Path, rows: Iterable[dict[str, Any]]) -> Manifest:
    """Replace a batch's rows in place (same id and row count), for erasure of personal data only.

    Batches are otherwise immutable; a privacy request (customers/redact) is the one reason
    to change one. The rows and then the manifest are swapped atomically, so a reader sees
    the old batch or the new one.
    """
    manifest_path = data_path.with_suffix(".json")
    manifest = read_manifest(manifest_path)
    digest = hashlib.sha256()
    tmp = data_path.with_name(f".tmp-{data_path.name}")
    count = 0
    with open(tmp, "wb") as fh:
        for row in rows:
            line = json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
            digest.update(line)
            fh.write(line)
            count += 1
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, data_path)
    updated = Manifest(
        **{**asdict(manifest), "rows": count, "bytes": data_path.stat().st_size, "sha256": digest.hexdigest()}
    )
    _write_atomic(manifest_path, json.dumps(asdict(updated), indent=1).encode())
    return updated


def read_manifest(path: Path) -> Manifest:
    """Read a manifest file."""
    return Manifest(**json.loads(path.read_text()))


def iter_batches(
    root: Path, shop: str | None = None, entity: str | None = None, *, unloaded_only: bool = False
) -> Iterator[tuple[Manifest, Path]]:
    """Every complete batch (manifest present) as ``(manifest, data_path)``, oldest first.

    With ``shop`` and ``entity`` only that folder is scanned; ``unloaded_only`` skips a loaded
    batch on its marker, before its manifest is read (the landing zone keeps every batch).
    """
    if not root.exists():
        return
    base = entity_dir(root, shop, entity) if shop is not None and entity is not None else root
    found: list[tuple[Manifest, Path]] = []
    for manifest_path in base.glob("**/*.json"):
        if manifest_path.name.startswith(".tmp-") or _IGNORED_FOLDERS & set(
            manifest_path.relative_to(root).parts
        ):
            continue
        data_path = manifest_path.with_suffix(".jsonl")
        if not data_path.exists():
            continue  # a stray .json (say, a file dropped by hand) is not a batch
        if unloaded_only and is_loaded(data_path):
            continue
        manifest = read_manifest(manifest_path)
        if shop is not None and manifest.shop != shop:
            continue
        if entity is not None and manifest.entity != entity:
            continue
        found.append((manifest, data_path))
    found.sort(key=lambda item: item[0].batch_id)
    yield from found


def is_loaded(data_path: Path) -> bool:
    """Whether the loader has committed this batch."""
    return data_path.with_suffix(".loaded").exists()


def mark_loaded(data_path: Path, info: dict[str, Any]) -> None:
    """Record, after the warehouse commit, that a batch is loaded (the sensor reads this)."""
    _write_atomic(data_path.with_suffix(".loaded"), json.dumps(info).encode())


def pending_batches(
    root: Path, shop: str | None = None, entity: str | None = None
) -> list[tuple[Manifest, Path]]:
    """Complete batches not yet loaded, oldest first."""
    return list(iter_batches(root, shop, entity, unloaded_only=True))
