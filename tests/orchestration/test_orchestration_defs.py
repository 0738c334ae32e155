"""Dagster wiring: definitions load, sensor run keys come from batch ids, schedules fan out per store."""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config_schema

from orchestration.control import ControlSettings, StoreRegistry, StoreStatus
from orchestration.defs.instance import WAREHOUSE_POOL, WAREHOUSE_TAG, ensure_warehouse_pool
from orchestration.defs.shopify.assets import FetchConfig, choose_modes
from orchestration.defs.shopify.definitions import build_shopify_defs
from orchestration.defs.shopify.jobs import fetch_run_config, table_key
from orchestration.defs.shopify.partitions import SHOPIFY_ENTITIES, STORES_PARTITION, add_store_partition
from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths
from orchestration.defs.shopify.schedules import incremental_sync_schedule, nightly_reconciliation_schedule
from orchestration.defs.shopify.sensors import (
    LoadRequest,
    PendingBatch,
    busy_loads,
    landing_batches_sensor,
    parse_cursor,
    plan_load_requests,
)
from pipelines import landing

ROOT = Path(__file__).resolve().parents[2]
A, B = "alpha-shop.myshopify.com", "bravo-shop.myshopify.com"


def test_all_definitions_load() -> None:
    from orchestration.definitions import defs

    loaded = defs()
    dg.Definitions.validate_loadable(loaded)
    keys = {k.to_user_string() for k in loaded.resolve_asset_graph().get_all_asset_keys()}
    for entity in SHOPIFY_ENTITIES:
        assert f"shopify/landing/{entity}" in keys and f"shopify/{entity}" in keys
    assert {j.name for j in loaded.resolve_all_job_defs()} >= {"shopify_sync", "shopify_load"}
    graph = loaded.resolve_asset_graph()
    for entity in SHOPIFY_ENTITIES:
        node = graph.get(table_key(entity))
        assert loaded.resolve_assets_def(table_key(entity)).op.pool == WAREHOUSE_POOL  # loads never overlap
        assert node.group_name == "shopify" and node.description
        fetch = loaded.resolve_assets_def(dg.AssetKey(["shopify", "landing", entity]))
        assert fetch.op.pool is None  # fetches of different stores run side by side
        assert isinstance(node.partitions_def, dg.DynamicPartitionsDefinition)
    assert graph.get(table_key("orders")).parent_keys == {dg.AssetKey(["shopify", "landing", "orders"])}


@pytest.mark.parametrize(
    ("config", "last_bulk", "modes"),
    [
        (FetchConfig(), None, ["bulk"]),
        (FetchConfig(), datetime(2026, 1, 1, tzinfo=UTC), ["incremental"]),
        (FetchConfig(full=True), datetime(2026, 1, 1, tzinfo=UTC), ["bulk", "reconcile"]),
        (FetchConfig(full=True), None, ["bulk", "reconcile"]),
        (FetchConfig(reconcile=True), datetime(2026, 1, 1, tzinfo=UTC), ["reconcile"]),
    ],
)
def test_fetch_mode_follows_config_and_history(
    config: FetchConfig, last_bulk: datetime | None, modes: list[str]
) -> None:
    assert choose_modes(config, last_bulk) == modes


def test_dagster_yaml_files_are_valid_instance_config(tmp_path: Path) -> None:
    for path in (
        ROOT / "dagster.yaml",
        ROOT / "deploy" / "dagster.yaml",
        ROOT / "orchestration" / "dagster_home" / "dagster.yaml",
    ):
        config = yaml.safe_load(path.read_text())
        result = validate_config(dagster_instance_config_schema(), config)
        assert result.success, (path, result.errors)
        assert config["concurrency"]["pools"]["default_limit"] == 1
        assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "orchestration" / "dagster_home" / "dagster.yaml").read_text())
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == 1
        assert config.run_queue_config is not None and config.run_queue_config.max_concurrent_runs == 4
        assert instance.run_monitoring_enabled
        assert instance.run_coordinator.dequeue_interval_seconds == 1  # type: ignore[attr-defined]
    finally:
        instance.dispose()


def test_every_warehouse_step_queues_inside_its_run_for_the_one_slot() -> None:
    from dagster._core.execution.api import create_execution_plan

    from orchestration.definitions import STEP_EXECUTOR_CONFIG, defs

    definitions = defs()
    pooled = 0
    for job in definitions.resolve_all_job_defs():
        for step in create_execution_plan(job).get_all_steps_in_topo_order():
            tagged = (step.tags or {}).get(WAREHOUSE_TAG) is not None
            assert tagged == (step.pool == WAREHOUSE_POOL), (job.name, step.key)
            pooled += tagged
    assert pooled >= 30
    assert STEP_EXECUTOR_CONFIG["tag_concurrency_limits"] == [{"key": WAREHOUSE_TAG, "limit": 1}]


def test_dagster_dev_from_the_repo_root_uses_the_demo_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without DAGSTER_HOME, `dagster dev` makes a temporary home configured by ./dagster.yaml:
    # the root file must point its storage at ./.dagster_home, where the demo's runs are.
    from dagster._core.instance.ref import InstanceRef

    monkeypatch.chdir(tmp_path)
    with tempfile.TemporaryDirectory(dir=tmp_path) as temporary:
        instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(temporary, config_dir=str(ROOT)))
        try:
            add_store_partition(instance, "demo-store.myshopify.com")
        finally:
            instance.dispose()
    assert (tmp_path / ".dagster_home" / "history" / "runs.db").exists()
    reopened = dg.DagsterInstance.from_ref(
        InstanceRef.from_dir(str(tmp_path / "again"), config_dir=str(ROOT))
    )
    try:
        assert reopened.get_dynamic_partitions(STORES_PARTITION) == ["demo-store.myshopify.com"]
    finally:
        reopened.dispose()


def test_a_cli_run_whose_process_died_is_failed_and_frees_its_slot() -> None:
    """A run the CLI executed itself and that was SIGKILLed stays "started"; the next CLI run cleans up."""
    import subprocess
    import sys

    from orchestration.defs.instance import in_process_tags

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    with dg.instance_for_test() as instance:
        ensure_warehouse_pool(instance)
        storage = instance.event_log_storage
        job = dg.GraphDefinition(name="g").to_job()
        crashed = instance.create_run_for_job(
            job, tags={**in_process_tags(), "shopsync/pid": dead.stdout.strip()}
        )
        running = instance.create_run_for_job(job, tags=in_process_tags())  # this very process: alive
        for run in (crashed, running):
            instance.handle_new_event(
                dg.EventLogEntry(
                    error_info=None,
                    level="DEBUG",
                    user_message="",
                    run_id=run.run_id,
                    timestamp=time.time(),
                    dagster_event=dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=job.name),
                )
            )
        assert storage.claim_concurrency_slot(WAREHOUSE_POOL, crashed.run_id, "load").is_claimed
        ensure_warehouse_pool(instance)
        after = instance.get_run_by_id(crashed.run_id)
        assert after is not None and after.status == dg.DagsterRunStatus.FAILURE
        assert storage.get_concurrency_info(WAREHOUSE_POOL).active_slot_count == 0
        still = instance.get_run_by_id(running.run_id)
        assert still is not None and still.status == dg.DagsterRunStatus.STARTED


def test_stale_pool_slots_of_ended_runs_are_freed() -> None:
    with dg.instance_for_test() as instance:
        ensure_warehouse_pool(instance)
        storage = instance.event_log_storage
        assert storage.get_concurrency_info(WAREHOUSE_POOL).slot_count == 1
        # a run that crashed while holding the slot (its record says it failed)
        run = instance.create_run_for_job(dg.GraphDefinition(name="g").to_job())
        instance.report_run_failed(run)
        assert storage.claim_concurrency_slot(WAREHOUSE_POOL, run.run_id, "load").is_claimed
        assert storage.get_concurrency_info(WAREHOUSE_POOL).active_slot_count == 1
        ensure_warehouse_pool(instance)
        assert storage.get_concurrency_info(WAREHOUSE_POOL).active_slot_count == 0


# -- the landing sensor ------------------------------------------------------------------------

_P1, _P2, _P3 = (
    PendingBatch(A, "customers", "20260101T000000000001-webhook-aa"),
    PendingBatch(A, "customers", "20260101T000000000002-webhook-bb"),
    PendingBatch(B, "orders", "20260101T000000000003-webhook-cc"),
)


@pytest.mark.parametrize(
    ("pending", "cursor", "busy", "expected", "next_requested"),
    [
        pytest.param([], None, set(), [], [], id="nothing pending"),
        pytest.param(
            [_P2, _P1, _P3],
            None,
            set(),
            [(A, "customers", (_P1.batch_id, _P2.batch_id)), (B, "orders", (_P3.batch_id,))],
            [_P1.batch_id, _P2.batch_id, _P3.batch_id],
            id="first tick groups per store and entity",
        ),
        pytest.param(
            [_P1, _P2, _P3],
            json.dumps({"requested": [_P1.batch_id, _P2.batch_id, _P3.batch_id]}),
            set(),
            [],
            [_P1.batch_id, _P2.batch_id, _P3.batch_id],
            id="same batches again: nothing new",
        ),
        pytest.param(
            [_P2, _P3],
            json.dumps({"requested": [_P1.batch_id]}),
            set(),
            [(A, "customers", (_P2.batch_id,)), (B, "orders", (_P3.batch_id,))],
            [_P2.batch_id, _P3.batch_id],
            id="loaded ids leave the cursor, new ones are requested",
        ),
        pytest.param(
            [_P1, _P3],
            json.dumps({"requested": [_P3.batch_id]}),
            set(),
            [(A, "customers", (_P1.batch_id,))],
            [_P1.batch_id, _P3.batch_id],
            id="a late batch with an older id is still seen",
        ),
        pytest.param(
            [_P1, _P3],
            None,
            {(A, "customers")},
            [(B, "orders", (_P3.batch_id,))],
            [_P3.batch_id],
            id="a queued or running load of the same store and entity takes its batches",
        ),
        pytest.param(
            [_P1], "not json", set(), [(A, "customers", (_P1.batch_id,))], [_P1.batch_id], id="bad cursor"
        ),
    ],
)
def test_sensor_plans_loads_from_batch_ids(
    pending: list[PendingBatch],
    cursor: str | None,
    busy: set[tuple[str, str]],
    expected: list[tuple[str, str, tuple[str, ...]]],
    next_requested: list[str],
) -> None:
    requests, next_cursor = plan_load_requests(pending, parse_cursor(cursor), busy)
    assert [(r.shop, r.entity, r.batch_ids) for r in requests] == expected
    assert sorted(parse_cursor(next_cursor)) == sorted(next_requested)


def test_a_whole_store_run_without_an_asset_subset_keeps_its_entities_busy() -> None:
    """A re-sync launched from the UI has no asset subset; its own loads take its batches."""
    runs = [
        dg.DagsterRun(job_name="shopify_resync", tags={"dagster/partition": A}),
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            tags={"dagster/partition": B},
            asset_selection=frozenset({table_key("orders"), dg.AssetKey(["shopify", "landing", "orders"])}),
        ),
        dg.DagsterRun(job_name="intelligence_refresh"),
        dg.DagsterRun(job_name="some_other_job", tags={"dagster/partition": B}),
    ]
    assert busy_loads(runs) == {(A, e) for e in SHOPIFY_ENTITIES} | {(B, "orders")}


def test_run_keys_derive_from_batch_ids_only() -> None:
    one = LoadRequest(A, "customers", (_P1.batch_id, _P2.batch_id))
    assert one.run_key == LoadRequest(A, "customers", (_P1.batch_id, _P2.batch_id)).run_key
    assert one.run_key != LoadRequest(A, "customers", (_P1.batch_id,)).run_key
    assert one.run_key != LoadRequest(B, "customers", (_P1.batch_id, _P2.batch_id)).run_key
    assert _P2.batch_id in one.run_key


def test_sensor_turns_landing_batches_into_load_runs(tmp_path: Path) -> None:
    root = tmp_path / "landing"
    first = landing.write_batch(root, A, "customers", "webhook", [{"id": "gid://shopify/Customer/1"}])
    landing.write_batch(
        root, "unknown-shop.myshopify.com", "customers", "webhook", [{"id": "gid://shopify/Customer/2"}]
    )
    loaded = landing.write_batch(root, A, "orders", "webhook", [{"id": "gid://shopify/Order/3"}])
    landing.mark_loaded(landing.entity_dir(root, A, "orders") / loaded.data_path_name, {})
    paths = SyncPaths.under(tmp_path)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(STORES_PARTITION, [A])
        context = dg.build_sensor_context(instance=instance, cursor=None, resources={"paths": paths})
        result = landing_batches_sensor(context)
        assert len(result.run_requests) == 1
        request = result.run_requests[0]
        assert request.partition_key == A
        assert request.asset_selection == [table_key("customers")]
        assert request.run_config["ops"]["shopify__customers"]["config"]["batch_ids"] == [first.batch_id]
        assert first.batch_id in request.run_key

        again = landing_batches_sensor(
            dg.build_sensor_context(instance=instance, cursor=result.cursor, resources={"paths": paths})
        )
        assert again.run_requests == []


# -- schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", [incremental_sync_schedule, nightly_reconciliation_schedule])
def test_schedules_request_one_run_per_syncing_store(tmp_path: Path, schedule: dg.ScheduleDefinition) -> None:
    registry = StoreRegistry(ControlSettings(data_dir=tmp_path))
    for domain in (A, B, "paused-shop.myshopify.com"):
        registry.connect_store(domain, access_token="shpat_x")
    registry.set_store_status("paused-shop.myshopify.com", StoreStatus.DISCONNECTED)
    stores = ShopifyStores(data_dir=str(tmp_path))
    tick = datetime(2026, 11, 22, 3, 30, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(
            STORES_PARTITION, [A, B, "paused-shop.myshopify.com", "unregistered.myshopify.com"]
        )
        with dg.build_schedule_context(
            instance=instance, scheduled_execution_time=tick, resources={"stores": stores}
        ) as context:
            requests = schedule(context)
    assert sorted(r.partition_key for r in requests) == [A, B]
    assert len({r.run_key for r in requests}) == 2
    assert all(tick.isoformat() in r.run_key for r in requests)
    if schedule is nightly_reconciliation_schedule:
        assert requests[0].run_config == fetch_run_config(reconcile=True)


def test_schedule_and_sensor_targets_are_the_shopify_jobs() -> None:
    defs = build_shopify_defs()
    assert defs.resolve_schedule_def("incremental_sync_schedule").job_name == "shopify_sync"
    assert defs.resolve_sensor_def("landing_batches_sensor").job_name == "shopify_load"
    assert incremental_sync_schedule.cron_schedule == "*/15 * * * *"


# -- assets called directly --------------------------------------------------------------------


def test_fetch_of_an_unknown_or_paused_store_fails_with_what_to_do(tmp_path: Path) -> None:
    from orchestration.defs.shopify.assets import fetch_assets

    registry = StoreRegistry(ControlSettings(data_dir=tmp_path))
    registry.connect_store(A, access_token="shpat_x")
    registry.set_store_status(A, StoreStatus.DISCONNECTED)
    resources = {"stores": ShopifyStores(data_dir=str(tmp_path)), "paths": SyncPaths.under(tmp_path)}
    fetch_customers = fetch_assets[0]
    for shop, message, fix in [
        (B, "is not registered", "shopsync stores connect"),
        (A, "is Disconnected", "shopsync stores reconnect"),
    ]:
        with (
            dg.build_asset_context(partition_key=shop, resources=resources) as context,
            pytest.raises(dg.Failure) as caught,
        ):
            list(fetch_customers(context, FetchConfig()))
        assert message in str(caught.value.description)
        assert fix in str(caught.value.description)
    assert registry.entity_status(A, "customers") is None  # nothing started


def test_every_pipeline_asset_has_a_freshness_window_and_pushes_have_none() -> None:
    from datetime import timedelta

    from orchestration.definitions import defs as load_defs

    graph = load_defs().resolve_asset_graph()
    windows = {key.to_user_string(): graph.get(key).freshness_policy for key in graph.get_all_asset_keys()}
    for name, policy in windows.items():
        if name.startswith(("reverse_sync/", "engagement/")):
            assert policy is None, name  # they run when there is something to push or a feed arrives
        else:
            assert policy is not None and hasattr(policy, "fail_window"), name
    assert windows["shopify/customers"].fail_window.to_timedelta() == timedelta(hours=1)
    assert windows["core/contacts"].fail_window.to_timedelta() == timedelta(hours=26)
    assert windows["ops/sync_health"].fail_window.to_timedelta() == timedelta(hours=1)
    assert windows["shopify/store_health"].fail_window.to_timedelta() == timedelta(hours=26)
