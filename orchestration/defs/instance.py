"""The local Dagster instance: ``.dagster_home/`` under the working directory, and its pool.

``shopsync demo`` and ``shopsync stores connect`` use the same persistent instance that
``dagster dev`` (``make ui``) shows, so runs and store partitions appear there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

WAREHOUSE_POOL = "warehouse"
LOCAL_HOME = ".dagster_home"
_TEMPLATE = Path(__file__).resolve().parents[1] / "dagster_home" / "dagster.yaml"

# Runs in these states may legitimately hold a pool slot.
_ACTIVE = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}


def dagster_home(root: Path | None = None) -> Path:
    """``$DAGSTER_HOME`` if set, else ``<root or cwd>/.dagster_home`` (created with its dagster.yaml)."""
    configured = os.environ.get("DAGSTER_HOME")
    home = Path(configured) if configured else (root or Path.cwd()) / LOCAL_HOME
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(_TEMPLATE, config)
    return home


def local_instance(root: Path | None = None) -> dg.DagsterInstance:
    """The persistent local instance (``DAGSTER_HOME`` is set for this process if it was not)."""
    home = dagster_home(root)
    os.environ["DAGSTER_HOME"] = str(home)
    instance = dg.DagsterInstance.get()
    ensure_warehouse_pool(instance)
    return instance


def ensure_warehouse_pool(instance: dg.DagsterInstance) -> None:
    """Give the ``warehouse`` pool its one slot and free slots held by runs that ended.

    Run monitoring frees such slots when the daemon runs; a CLI run without the daemon
    must not wait forever on a slot a crashed earlier run kept.
    """
    storage = instance.event_log_storage
    info = storage.get_concurrency_info(WAREHOUSE_POOL)
    if info.slot_count != 1:
        storage.set_concurrency_slots(WAREHOUSE_POOL, 1)
    for run_id in info.active_run_ids | info.pending_run_ids:
        run = instance.get_run_by_id(run_id)
        if run is None or run.status not in _ACTIVE:
            storage.free_concurrency_slots_for_run(run_id)
