"""The landing sensor: new landing batches (webhooks, fetches run on their own) become load runs.

The cursor is the set of batch ids already requested and not yet loaded, so it stays
small, and a batch that lands late with an older id is still seen. Run keys are derived
from the batch ids, so a tick that re-evaluates the same batches cannot launch twice.
Batches of a (store, entity) whose load is already queued or running are left for that
run: a scheduled sync fetches and loads in one run, and must not trigger a second load.
"""

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg

from orchestration.defs.logs import with_run_logging
from orchestration.defs.shopify.jobs import load_job, op_name_for, resync_job, sync_job
from orchestration.defs.shopify.partitions import SHOPIFY_ENTITIES
from orchestration.defs.shopify.resources import SyncPaths
from pipelines.landing import ENGAGEMENT, pending_batches

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dataclass(frozen=True)
class PendingBatch:
    """A landing batch the loader has not committed yet."""

    shop: str
    entity: str
    batch_id: str


@dataclass(frozen=True)
class LoadRequest:
    """One load run to launch: these batches of one entity of one store."""

    shop: str
    entity: str
    batch_ids: tuple[str, ...]

    @property
    def run_key(self) -> str:
        """Derived from the batch ids alone: the same batches always give the same key."""
        digest = hashlib.sha256("\n".join(self.batch_ids).encode()).hexdigest()[:16]
        return f"load:{self.shop}:{self.entity}:{self.batch_ids[-1]}:{digest}"


def parse_cursor(cursor: str | None) -> set[str]:
    """The batch ids a previous tick requested (an empty or unreadable cursor means none)."""
    if not cursor:
        return set()
    try:
        data = json.loads(cursor)
    except json.JSONDecodeError:
        return set()
    return set(data.get("requested", [])) if isinstance(data, dict) else set()


def plan_load_requests(
    pending: Iterable[PendingBatch],
    requested: set[str],
    busy: set[tuple[str, str]],
) -> tuple[list[LoadRequest], str]:
    """Decide which load runs to request and the next cursor.

    ``pending``: unloaded batches now on disk; ``requested``: ids from the cursor;
    ``busy``: (shop, entity) pairs whose load is queued or running.
    """
    pending = sorted(pending, key=lambda b: b.batch_id)
    pending_ids = {b.batch_id for b in pending}
    # Ids that got loaded leave the cursor; the rest stay so they are not requested twice.
    still_requested = requested & pending_ids
    groups: dict[tuple[str, str], list[str]] = {}
    for batch in pending:
        if batch.batch_id in still_requested or (batch.shop, batch.entity) in busy:
            continue
        groups.setdefault((batch.shop, batch.entity), []).append(batch.batch_id)
    requests = [LoadRequest(shop, entity, tuple(ids)) for (shop, entity), ids in sorted(groups.items())]
    for request in requests:
        still_requested.update(request.batch_ids)
    return requests, json.dumps({"requested": sorted(still_requested)})


# Jobs whose whole selection loads every entity: a run of one of them (launched from the UI
# or the CLI, so without an asset subset) will load what its own fetches land.
_WHOLE_STORE_JOBS = frozenset({sync_job.name, resync_job.name, load_job.name})


def busy_loads(runs: Iterable[dg.DagsterRun]) -> set[tuple[str, str]]:
    """(shop, entity) pairs that an in-flight run is already going to load."""
    busy: set[tuple[str, str]] = set()
    for run in runs:
        shop = run.tags.get("dagster/partition")
        if not shop:
            continue
        if run.asset_selection is None:
            if run.job_name in _WHOLE_STORE_JOBS:
                busy.update((shop, entity) for entity in SHOPIFY_ENTITIES)
            continue
        for key in run.asset_selection:
            if len(key.path) == 2 and key.path[0] == "shopify":
                busy.add((shop, key.path[1]))
    return busy


def _busy_loads(instance: dg.DagsterInstance) -> set[tuple[str, str]]:
    return busy_loads(instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT), limit=200))


@dg.sensor(
    job=load_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Turns new landing batches (webhooks, fetches run alone) into load runs per store and entity.",
)
def landing_batches_sensor(context: dg.SensorEvaluationContext, paths: SyncPaths) -> dg.SensorResult:
    """Request one load run per (store, entity) with unrequested landing batches."""
    known = set(context.instance.get_dynamic_partitions("stores"))
    pending = [
        PendingBatch(m.shop, m.entity, m.batch_id)
        for m, _ in pending_batches(paths.landing_path)
        # webhook batches are applied into entity batches first (orchestration/defs/webhooks)
        if m.shop != ENGAGEMENT and m.shop in known and m.entity != "webhooks"
    ]
    requests, cursor = plan_load_requests(
        pending, parse_cursor(context.cursor), _busy_loads(context.instance)
    )
    run_requests = [
        dg.RunRequest(
            run_key=r.run_key,
            partition_key=r.shop,
            asset_selection=[dg.AssetKey(["shopify", r.entity])],
            run_config=with_run_logging(
                {"ops": {op_name_for(r.entity): {"config": {"batch_ids": list(r.batch_ids)}}}}
            ),
            tags={"shopsync/trigger": "landing", "shopsync/entity": r.entity},
        )
        for r in requests
    ]
    return dg.SensorResult(run_requests=run_requests, cursor=cursor)
