"""The engagement feed in Dagster: dropped files → landing batches → ``engagement.events`` → consent.

* ``engagement/feed`` imports the feed files a user dropped into ``<landing>/_engagement/``
  (validated line by line, malformed lines quarantined with their reason, the file moved to
  ``processed/``); it never opens the warehouse.
* ``engagement/events`` loads every pending engagement batch (these, and those landed by
  ``shopsync engagement import``) into ``engagement.events`` through dlt, in pool ``warehouse``.
* The ``engagement_feed`` job runs both, then the consent assets (``core.consent`` …, group
  ``consent``, downstream of ``engagement/events``), so an unsubscribe or a STOP reply is in
  ``core.consent_audit`` as soon as its file is loaded; the consent push sensor takes it from
  there. The consent assets' eager condition ignores ``engagement/events``: this job already
  runs them, and a deployment that never loaded a feed must still refresh consent after loads.
* ``engagement_feed_sensor`` (every 5 s) requests that job for new dropped files and for
  engagement batches nobody has asked to load yet; the run key derives from the files'
  content hashes and the batch ids, so a re-evaluated tick never launches twice.
"""

# no `from __future__ import annotations`: Dagster reads the config/resource annotations at runtime
import hashlib
import json
from pathlib import Path

import dagster as dg
from pydantic import Field

from orchestration.defs.instance import IN_WAREHOUSE
from orchestration.defs.logs import with_run_logging
from orchestration.defs.shopify.resources import SyncPaths
from pipelines import warehouse_io as wio
from pipelines.engagement import (
    DroppedFile,
    already_imported,
    dropped_files,
    feed_batches,
    import_dropped,
    set_aside_duplicate,
)
from pipelines.engagement_load import load_engagement_events

ENGAGEMENT_GROUP = "engagement"
FEED_KEY = dg.AssetKey(["engagement", "feed"])
EVENTS_KEY = dg.AssetKey(["engagement", "events"])
FEED_OP = "engagement__feed"
# the consent assets (orchestration/defs/intelligence) recomputed by the same run
CONSENT_GROUP = "consent"


class FeedFile(dg.Config):
    """One dropped file as the sensor saw it."""

    path: str
    sha256: str
    size: int = 0
    modified: float = 0.0


class FeedConfig(dg.Config):
    """The dropped files this run imports (none: only load batches already landed)."""

    files: list[FeedFile] = Field(default_factory=list)


@dg.asset(key=FEED_KEY, group_name=ENGAGEMENT_GROUP, kinds={"jsonl"})
def engagement_feed(
    context: dg.AssetExecutionContext, config: FeedConfig, paths: SyncPaths
) -> dg.MaterializeResult:
    """Email and SMS events from the messaging side (sends, opens, clicks, unsubscribes, SMS replies such as
    STOP) dropped as JSONL or CSV files into the landing folder, validated and landed as immutable batches.
    Lines that break the documented schema are quarantined with their line number and reason; the rest lands.
    """
    accepted = quarantined = 0
    batches: list[str] = []
    quarantine: list[str] = []
    for item in config.files:
        dropped = DroppedFile(Path(item.path), item.sha256, item.size, item.modified)
        result = import_dropped(paths.landing_path, dropped)
        accepted += result.accepted
        quarantined += result.quarantined
        if result.batch is not None:
            batches.append(result.batch.batch_id)
        if result.quarantine_path is not None:
            quarantine.append(str(result.quarantine_path))
            context.log.warning(
                f"{dropped.path.name}: {result.quarantined} line(s) quarantined with their reasons in "
                f"{result.quarantine_path}"
            )
    return dg.MaterializeResult(
        metadata={
            "files": dg.MetadataValue.int(len(config.files)),
            "events_landed": dg.MetadataValue.int(accepted),
            "lines_quarantined": dg.MetadataValue.int(quarantined),
            "batches": dg.MetadataValue.json(batches),
            "quarantine_files": dg.MetadataValue.json(quarantine),
        }
    )


@dg.asset(
    key=EVENTS_KEY,
    deps=[FEED_KEY],
    group_name=ENGAGEMENT_GROUP,
    **IN_WAREHOUSE,
    kinds={"duckdb", "dlt"},
)
def engagement_events(paths: SyncPaths) -> dg.MaterializeResult:
    """Every email and SMS event the messaging side reported, one row per event id (a re-sent event is kept
    once): the evidence behind engagement metafields and behind unsubscribes and STOP replies in consent.
    """
    con = wio.connect(paths.warehouse_path)
    try:
        result = load_engagement_events(con, paths.landing_path)
    finally:
        con.close()
    return dg.MaterializeResult(
        metadata={
            "batches": dg.MetadataValue.json(result.batches),
            "inserted": dg.MetadataValue.int(result.inserted),
            "already_loaded": dg.MetadataValue.int(result.duplicates),
        }
    )


engagement_assets = [engagement_feed, engagement_events]

engagement_feed_job = dg.define_asset_job(
    "engagement_feed",
    selection=dg.AssetSelection.groups(ENGAGEMENT_GROUP, CONSENT_GROUP),
    config=with_run_logging(),
    description="Import dropped engagement files, load engagement batches, then recompute consent.",
)


def parse_cursor(cursor: str | None) -> tuple[set[str], set[str]]:
    """(file hashes, batch ids) a previous tick requested."""
    if not cursor:
        return set(), set()
    try:
        data = json.loads(cursor)
    except json.JSONDecodeError:
        return set(), set()
    if not isinstance(data, dict):
        return set(), set()
    return set(data.get("files", [])), set(data.get("batches", []))


def feed_run_request(landing_root: Path, cursor: str | None) -> tuple[dg.RunRequest | None, str, list[str]]:
    """The run to request for new dropped files and unrequested engagement batches, the next cursor,
    and the duplicate files set aside."""
    requested_files, requested_batches = parse_cursor(cursor)
    duplicates: list[str] = []
    files: list[DroppedFile] = []
    for dropped in dropped_files(landing_root):
        if dropped.sha256 in requested_files:
            files.append(dropped)
        elif already_imported(landing_root, dropped.sha256):
            set_aside_duplicate(landing_root, dropped)
            duplicates.append(dropped.path.name)
        else:
            files.append(dropped)
    pending = [m.batch_id for m, _ in feed_batches(landing_root)]
    new_files = [f for f in files if f.sha256 not in requested_files]
    new_batches = [b for b in pending if b not in requested_batches]
    still_files = {f.sha256 for f in files}
    # a file's batch is loaded by the run that imports it: do not request it again
    still_batches = (requested_batches & set(pending)) | {f.batch_id for f in files}
    request = None
    if new_files or new_batches:
        parts = sorted(f.sha256 for f in new_files) + sorted(new_batches)
        key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]
        request = dg.RunRequest(
            run_key=f"engagement:{key}",
            run_config=with_run_logging(
                {
                    "ops": {
                        FEED_OP: {
                            "config": {
                                "files": [
                                    {
                                        "path": str(f.path),
                                        "sha256": f.sha256,
                                        "size": f.size,
                                        "modified": f.modified,
                                    }
                                    for f in new_files
                                ]
                            }
                        }
                    }
                }
            ),
            tags={"shopsync/trigger": "engagement_feed"},
        )
        still_batches |= set(new_batches)
    next_cursor = json.dumps({"files": sorted(still_files), "batches": sorted(still_batches)})
    return request, next_cursor, duplicates


@dg.sensor(
    job=engagement_feed_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Picks up engagement files dropped in landing/_engagement/ and engagement batches waiting to load.",
)
def engagement_feed_sensor(
    context: dg.SensorEvaluationContext, paths: SyncPaths
) -> dg.SensorResult | dg.SkipReason:
    """New dropped feed files and unloaded engagement batches → one engagement_feed run."""
    request, cursor, duplicates = feed_run_request(paths.landing_path, context.cursor)
    for name in duplicates:
        context.log.info(f"{name} has the content of a file imported before; moved to processed/ unimported")
    if request is None:
        return dg.SensorResult(skip_reason="no new engagement files or batches", cursor=cursor)
    return dg.SensorResult(run_requests=[request], cursor=cursor)
