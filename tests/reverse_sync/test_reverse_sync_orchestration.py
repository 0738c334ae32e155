"""Reverse sync wiring: retries and dead letters, the Dagster assets and sensor, the CLI, toggles in the registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from click.testing import CliRunner
from ops_support import Store

from orchestration.cli import cli
from orchestration.control import ControlSettings, StoreRegistry, StoreStatus
from orchestration.defs.reverse_sync.definitions import (
    CONSENT_AUDIT_KEY,
    build_reverse_sync_defs,
    consent_push_sensor,
    pushable_stores,
    retry_run_requests,
)
from orchestration.defs.reverse_sync.service import REDACTED_REASON, plan_store
from orchestration.defs.shopify.definitions import build_shopify_defs
from orchestration.defs.shopify.partitions import STORES_PARTITION
from orchestration.defs.shopify.resources import ShopifyStores, SyncPaths
from pipelines import sync_log
from transforms.reverse_sync import plan_push

SHOP = "s.myshopify.com"


def _outcome(cid: int, outcome: str, error: str | None = None, payload_hash: str = "h1") -> dict:
    return {
        "shop": SHOP,
        "customer_id": cid,
        "kind": "email_consent",
        "key": "",
        "operation": "customerEmailMarketingConsentUpdate",
        "outcome": outcome,
        "error": error,
        "payload": '{"state":"UNSUBSCRIBED"}',
        "payload_hash": payload_hash,
    }


def test_failures_back_off_then_dead_letter_then_replay(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    consent = pl.DataFrame(
        {
            "shop": [SHOP],
            "customer_id": [1],
            "channel": ["email"],
            "state": ["UNSUBSCRIBED"],
            "updated_at": [t0],
            "source": ["engagement"],
        }
    )
    customers = pl.DataFrame({"shop": [SHOP], "customer_id": [1], "email": ["a@x.io"]})

    def plan(at: datetime) -> pl.DataFrame:
        return plan_push(
            toggles={SHOP: {"email_consent"}},
            as_of=at,
            pushed_state=sync_log.read_pushed_state(con),
            dead_letters=sync_log.read_dead_letters(con),
            consent=consent,
            customers=customers,
        )[0]

    at = t0
    for attempt in range(1, 4):
        planned = plan(at)
        assert planned.height == 1
        failed = _outcome(1, "failed", "boom", planned["payload_hash"][0])
        sync_log.record(con, pl.DataFrame([failed]), run_id=f"r{attempt}", at=at, max_attempts=3)
        if attempt < 3:
            # waiting for its backoff: not planned yet, then planned again with a retry reason
            assert plan(at + timedelta(seconds=1)).is_empty()
            at = at + sync_log.backoff(attempt)
            assert plan(at)["reason"][0].startswith(f"retry {attempt + 1}")
    dead = sync_log.read_dead_letters(con)
    assert dead.height == 1 and plan(at + timedelta(days=1)).is_empty()
    assert sync_log.replay_dead_letters(con, SHOP, at=at) == 1
    replanned = plan(at)
    assert replanned.height == 1
    written = _outcome(1, "written", payload_hash=replanned["payload_hash"][0])
    sync_log.record(con, pl.DataFrame([written]), run_id="r9", at=at)
    assert plan(at).is_empty()
    log = sync_log.push_log(con)
    assert log["outcome"].to_list() == ["failed", "failed", "failed", "written"]


def _setup(tmp_path: Path, store: Store) -> tuple[StoreRegistry, SyncPaths, ShopifyStores, str]:
    registry = StoreRegistry(ControlSettings(data_dir=tmp_path))
    domain = store.shop.domain
    registry.connect_store(
        domain, access_token=store.token, api_base_url=f"{store.url}/shops/{store.shop.handle}"
    )
    paths = SyncPaths.under(tmp_path)
    at = store.shop.clock.now().astimezone(UTC) - timedelta(hours=1)
    with store.shop.lock:
        rows = [
            {"shop": domain, "id": c["id"], "email": c.get("email"), "phone": c.get("phone")}
            for c in store.shop.records["customers"].values()
        ]
    customers = pl.DataFrame(rows)
    # three customers to write, and one without an email (a skip, logged with its reason)
    ids = customers.filter(pl.col("email").is_not_null())["id"].head(3).to_list()
    ids += customers.filter(pl.col("email").is_null())["id"].head(1).to_list()
    consent = pl.DataFrame(
        {
            "shop": domain,
            "customer_id": ids,
            "channel": "email",
            "state": "UNSUBSCRIBED",
            "opt_in_level": "SINGLE_OPT_IN",
            "updated_at": at,
            "source": "engagement",
            "source_ref": [f"evt-{i}" for i in ids],
            "consented": False,
        }
    )
    audit = consent.select(
        "shop",
        "customer_id",
        "channel",
        "state",
        "updated_at",
        "source",
        "source_ref",
        pl.lit(at).alias("recorded_at"),
    )
    con = duckdb.connect(str(paths.warehouse_path))
    con.execute("CREATE SCHEMA shopify; CREATE SCHEMA core")
    for name, frame in (
        ("shopify.customers", customers),
        ("core.consent", consent),
        ("core.consent_audit", audit),
    ):
        con.register("_f", frame.to_arrow())
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM _f")
        con.unregister("_f")
    con.close()
    return registry, paths, ShopifyStores(data_dir=str(tmp_path)), domain


def _ids(paths: SyncPaths, *, email: bool = True) -> list[int]:
    con = duckdb.connect(str(paths.warehouse_path), read_only=True)
    try:
        rows = con.execute(
            "SELECT k.customer_id FROM core.consent k JOIN shopify.customers c ON c.id = k.customer_id "
            f"WHERE c.email IS {'NOT ' if email else ''}NULL ORDER BY 1"
        ).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def _consent_writes(store: Store) -> list[dict]:
    entries = store.control("GET", f"/shops/{store.shop.handle}/write_log").json()
    return [e for e in entries if e["operation"] == "customerEmailMarketingConsentUpdate"]


@pytest.mark.slow  # a real in-process Dagster run (~10 s)
def test_sensor_and_consent_job_push_and_record(tmp_path: Path, store: Store) -> None:
    registry, paths, stores, domain = _setup(tmp_path, store)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(STORES_PARTITION, [domain])
        resources = {"stores": stores}

        def tick(cursor: str | None = None) -> dg.SensorResult:
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                result = consent_push_sensor(context)
            assert isinstance(result, dg.SensorResult)
            return result

        def audit(shops: list[str]) -> None:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=CONSENT_AUDIT_KEY, metadata={"pushable_shops": shops})
            )

        audit([domain])
        first = tick()
        assert first.run_requests == []  # toggle off: the sensor asks for nothing, but moves on
        registry.set_outbound_toggles(domain, {"email_consent": True})
        assert tick(first.cursor).run_requests == []  # that change is behind the cursor now
        audit(["other.myshopify.com"])  # a change in another store only
        second = tick(first.cursor)
        assert second.run_requests == [] and int(second.cursor or 0) > int(first.cursor or 0)
        audit([domain])
        third = tick(second.cursor)
        assert [r.partition_key for r in third.run_requests] == [domain]
        assert third.run_requests[0].run_key.startswith(f"consent:{domain}:")
        assert tick(third.cursor).run_requests == []
        # paused stores are never asked for
        registry.set_store_status(domain, StoreStatus.DISCONNECTED, "paused")
        audit([domain])
        assert tick(third.cursor).run_requests == []
        registry.set_store_status(domain, StoreStatus.CONNECTED)

        defs = dg.Definitions.merge(
            build_shopify_defs(stores=stores, paths=paths), build_reverse_sync_defs(paths)
        )
        job = defs.resolve_job_def("reverse_sync_consent")
        run = job.execute_in_process(partition_key=domain, instance=instance)
        assert run.success
        checks = [
            e.asset_check_evaluation_data
            for e in run.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        assert [c.passed for c in checks] == [True]
        assert len(_consent_writes(store)) == 3
        con = duckdb.connect(str(paths.warehouse_path), read_only=True)
        assert (
            con.execute("SELECT count(*) FROM sync.push_log WHERE outcome = 'written'").fetchall()[0][0] == 6
        )  # 3 consent + 3 origin
        con.close()


def test_missing_scope_marks_reconnect_required_and_sends_nothing(tmp_path: Path, store: Store) -> None:
    registry, paths, _stores, domain = _setup(tmp_path, store)
    registry.set_outbound_toggles(domain, {"email_consent": True})
    store.control("POST", f"/shops/{store.shop.handle}/scopes/remove", {"scope": "write_customers"})
    result = CliRunner().invoke(
        cli, ["push", "run", domain, "--data-dir", str(tmp_path), "--warehouse", str(paths.warehouse_path)]
    )
    assert result.exit_code == 1
    assert "Reconnect" in result.output and "Traceback" not in result.output
    assert registry.get_store(domain).status is StoreStatus.RECONNECT_REQUIRED
    assert _consent_writes(store) == []


def test_cli_settings_plan_and_retry_dead(tmp_path: Path, store: Store) -> None:
    registry, paths, _stores, domain = _setup(tmp_path, store)
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path)]
    out = runner.invoke(cli, ["stores", "settings", domain, *base])
    assert out.exit_code == 0 and out.output.count("off") == 4
    out = runner.invoke(cli, ["push", "plan", domain, *base, "--warehouse", str(paths.warehouse_path)])
    assert "toggles are off" in out.output
    out = runner.invoke(cli, ["stores", "settings", domain, *base, "--push-email-consent", "on"])
    assert out.exit_code == 0 and registry.outbound_toggles(domain) == {"email_consent"}
    out = runner.invoke(cli, ["push", "plan", domain, *base, "--warehouse", str(paths.warehouse_path)])
    assert out.exit_code == 0, out.output
    assert "email_consent" in out.output and "3" in out.output
    assert _consent_writes(store) == []  # plan sends nothing
    out = runner.invoke(cli, ["push", "run", domain, *base, "--warehouse", str(paths.warehouse_path)])
    assert out.exit_code == 0, out.output
    assert len(_consent_writes(store)) == 3
    out = runner.invoke(cli, ["push", "retry-dead", domain, *base, "--warehouse", str(paths.warehouse_path)])
    assert out.exit_code == 0 and out.output.startswith("0 dead-lettered")
    assert json.loads(json.dumps(sorted(registry.outbound_toggles(domain)))) == ["email_consent"]


@pytest.mark.slow  # in-process Dagster runs (~8 s)
def test_failed_consent_push_fails_its_check_alerts_and_is_retried_when_due(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    registry, paths, stores, domain = _setup(tmp_path, store)
    registry.set_outbound_toggles(domain, {"email_consent": True})
    ok, gone, _third = _ids(paths)
    with store.shop.lock:  # deleted on Shopify after the warehouse last saw it
        del store.shop.records["customers"][gone]
    defs = dg.Definitions.merge(
        build_shopify_defs(stores=stores, paths=paths), build_reverse_sync_defs(paths)
    )
    job = defs.resolve_job_def("reverse_sync_consent")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(STORES_PARTITION, [domain])
        with caplog.at_level("ERROR", logger="shopsync.shopify.push"):
            run = job.execute_in_process(partition_key=domain, instance=instance, raise_on_error=False)
        (check,) = run.get_asset_check_evaluations()
        assert check.check_name == "consent_pushed" and not check.passed
        assert check.metadata["failed_customer_ids"].value == [gone]
        assert check.metadata["errors"].value == ["Customer not found"]
        # the alert names the customer and the error, on its own line
        assert any(
            str(gone) in r.getMessage() and "Customer not found" in r.getMessage() for r in caplog.records
        )
        assert ok not in [int(r.getMessage().split("customer ")[1].split(":")[0]) for r in caplog.records]
        record = run.asset_materializations_for_node("reverse_sync__record")[0].metadata
        assert record["by_outcome"].value == {
            "written": 4,
            "failed": 1,
            "skipped": 1,
        }  # 2 consent + 2 origins
        due = datetime.fromisoformat(record["next_retry"].value["email_consent"])

        # the retry is asked for once it is due, by the record that scheduled it, and only once
        assert retry_run_requests(instance, [domain], due - timedelta(seconds=1)) == []
        (retry,) = retry_run_requests(instance, [domain], due)
        assert retry.job_name == "reverse_sync_consent" and retry.partition_key == domain
        assert retry_run_requests(instance, [domain], due)[0].run_key == retry.run_key
        con = duckdb.connect(str(paths.warehouse_path))
        con.execute(
            "UPDATE sync.pushed_state SET next_attempt_at = now() - INTERVAL 1 SECOND WHERE attempts > 0"
        )
        con.close()
        again = job.execute_in_process(partition_key=domain, instance=instance, raise_on_error=False)
        record = again.asset_materializations_for_node("reverse_sync__record")[0].metadata
        # only the failed write went out again; the skip is not logged a second time
        assert record["by_outcome"].value == {"failed": 1}
        # the second failure backs off further, and a later retry comes from the newer record
        assert retry_run_requests(instance, [domain], due) == []
        assert retry_run_requests(instance, [domain], due + timedelta(hours=1))[0].run_key != retry.run_key
    con = duckdb.connect(str(paths.warehouse_path), read_only=True)
    skips = con.execute("SELECT customer_id, error FROM sync.push_log WHERE outcome = 'skipped'").fetchall()
    attempts = con.execute("SELECT attempts FROM sync.pushed_state WHERE customer_id = ?", [gone]).fetchall()
    con.close()
    assert skips == [(_ids(paths, email=False)[0], "no email address")]
    assert attempts == [(2,)]


def test_disconnected_store_plans_and_sends_nothing(tmp_path: Path, store: Store) -> None:
    registry, paths, _stores, domain = _setup(tmp_path, store)
    registry.set_outbound_toggles(domain, {"email_consent": True})
    registry.set_store_status(domain, StoreStatus.DISCONNECTED, "paused by the user")
    plan = plan_store(paths.warehouse_path, registry, domain, as_of=datetime.now(UTC))
    assert plan.plan.is_empty() and plan.blocked is not None and "Disconnected" in plan.blocked
    base = ["--data-dir", str(tmp_path), "--warehouse", str(paths.warehouse_path)]
    result = CliRunner().invoke(cli, ["push", "run", domain, *base])
    assert result.exit_code == 1 and "Disconnected" in result.output and "Traceback" not in result.output
    assert pushable_stores(registry, {"email_consent"}) == []
    assert _consent_writes(store) == []


def test_missing_scope_with_an_empty_plan_still_asks_for_reconnect(tmp_path: Path, store: Store) -> None:
    registry, paths, _stores, domain = _setup(tmp_path, store)
    registry.set_outbound_toggles(domain, {"profile": True})  # nothing to fill in this warehouse
    assert plan_store(paths.warehouse_path, registry, domain, as_of=datetime.now(UTC)).plan.is_empty()
    store.control("POST", f"/shops/{store.shop.handle}/scopes/remove", {"scope": "write_customers"})
    base = ["--data-dir", str(tmp_path), "--warehouse", str(paths.warehouse_path)]
    result = CliRunner().invoke(cli, ["push", "run", domain, *base])
    assert result.exit_code == 1 and "reconnect" in result.output.lower()
    assert registry.get_store(domain).status is StoreStatus.RECONNECT_REQUIRED


def test_redacted_customers_are_never_planned(tmp_path: Path, store: Store) -> None:
    registry, paths, _stores, domain = _setup(tmp_path, store)
    registry.set_outbound_toggles(domain, {"email_consent": True})
    first, second, third = _ids(paths)
    con = duckdb.connect(str(paths.warehouse_path))
    con.execute(
        "CREATE SCHEMA privacy; CREATE TABLE privacy.redacted_customers "
        "(shop VARCHAR, customer_id BIGINT, redacted_at TIMESTAMPTZ)"
    )
    con.execute("INSERT INTO privacy.redacted_customers VALUES (?, ?, now())", [domain, second])
    con.execute("INSERT INTO privacy.redacted_customers VALUES ('other.myshopify.com', ?, now())", [first])
    con.close()
    plan = plan_store(paths.warehouse_path, registry, domain, as_of=datetime.now(UTC))
    assert plan.plan["customer_id"].to_list() == [first, third]
    redacted = plan.skips.filter(pl.col("customer_id") == second)
    assert redacted["reason"].to_list() == [REDACTED_REASON] and redacted["payload"].to_list() == [None]
