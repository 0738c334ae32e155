"""The local Dagster instance: ``.dagster_home/`` under the working directory, and its pool.

``shopsync demo`` and ``shopsync stores connect`` use the same persistent instance that
``dagster dev`` (``make ui``) shows, so runs and store partitions appear there.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Any

import dagster as dg

WAREHOUSE_POOL = "warehouse"
# Also on every step in the pool: the run's executor lets one such step at a time ask the
# instance for the slot (``STEP_EXECUTOR``), so the rest of a run's warehouse steps wait in the
# run's own queue, which it checks on every tick. Left to the pool alone, each waiting step
# polls for the slot with a back-off growing to 15 s and the slot sits idle between steps.
WAREHOUSE_TAG = "shopsync/warehouse"
WAREHOUSE_OP_TAGS = {WAREHOUSE_TAG: "writer"}
# What every asset and check that opens the warehouse is declared with: ``**IN_WAREHOUSE``.
IN_WAREHOUSE: dict[str, Any] = {"pool": WAREHOUSE_POOL, "op_tags": WAREHOUSE_OP_TAGS}
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


# Tags of a run a shopsync process executes itself (the CLI, the demo): which process runs it,
# so a later process can tell a run whose process died from one still going.
HOST_TAG = "shopsync/host"
PID_TAG = "shopsync/pid"


def in_process_tags() -> dict[str, str]:
    """Tags for a run executed in this process (``execute_in_process``)."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _process_died(run: dg.DagsterRun) -> bool:
    """True when the run was executed in a process of this host that no longer exists."""
    pid = run.tags.get(PID_TAG)
    if run.tags.get(HOST_TAG) != socket.gethostname() or not pid or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False


def ensure_warehouse_pool(instance: dg.DagsterInstance) -> None:
    """Give the ``warehouse`` pool its one slot and free slots held by runs that ended.

    Run monitoring frees such slots when the daemon runs. A run the CLI executed itself and
    whose process was killed stays "started" with its slot for ever, since no launcher
    watches it: such a run is marked failed (saying so) and its slot freed, so the next
    run does not wait on a slot nobody holds.
    """
    storage = instance.event_log_storage
    info = storage.get_concurrency_info(WAREHOUSE_POOL)
    if info.slot_count != 1:
        storage.set_concurrency_slots(WAREHOUSE_POOL, 1)
    for run_id in info.active_run_ids | info.pending_run_ids:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status in _ACTIVE and _process_died(run):
            instance.report_run_failed(
                run,
                f"The process that ran it (pid {run.tags[PID_TAG]}) ended without finishing it; "
                "its warehouse slot is freed. Run the sync again.",
            )
            run = instance.get_run_by_id(run_id)
        if run is None or run.status not in _ACTIVE:
            storage.free_concurrency_slots_for_run(run_id)
