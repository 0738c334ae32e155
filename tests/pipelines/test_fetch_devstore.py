"""Fetchers against the devstore over real HTTP: bulk, incremental, reconcile, resume, partial data, scopes."""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from devstore.faults import FaultInjector, FaultProfile
from devstore.generator import generate_world
from devstore.server import RunningDevstore, create_world, start_in_thread, world_from_tables
from pipelines import landing
from pipelines.shopify import (
    FetchSettings,
    ShopifyClient,
    ShopifyCostTooHigh,
    ShopifyUnavailable,
    fetch,
    fetch_entity,
    preflight,
)
from pipelines.shopify import documents as docs
from pipelines.shopify.bulk import BulkExport, make_slices
from pipelines.shopify.cursors import IncrementalCursor

FAST = FetchSettings(poll_interval_s=0.05, max_poll_interval_s=0.2)
ENTITY_TYPES = {
    "customers": "Customer",
    "orders": "Order",
    "products": "Product",
    "collections": "Collection",
    "abandoned_checkouts": "AbandonedCheckout",
}


@pytest.fixture(scope="module")
def store() -> Iterator[RunningDevstore]:
    # the plus plan keeps these functional tests fast; pacing at the standard plan is tested separately
    running = start_in_thread(create_world(stores=1, customers=120, seed=11, plan="plus"), port=0)
    yield running
    running.stop()


@functools.cache
def _tables() -> dict[str, Any]:
    # generated once; every test that changes the shop gets its own world built from these tables
    return generate_world(stores=1, customers=120, seed=12)


@pytest.fixture
def fresh_store() -> Iterator[RunningDevstore]:
    running = start_in_thread(world_from_tables(_tables(), seed=12, plan="plus"), port=0)
    yield running
    running.stop()


def _shop(running: RunningDevstore) -> dict[str, Any]:
    return running.shops[0]


def _client(running: RunningDevstore) -> ShopifyClient:
    shop = _shop(running)
    client = ShopifyClient(shop["domain"], access_token=shop["access_token"], base_url=shop["base_url"])
    client.backoff_base_s = 0.01
    return client


def _rows(batches: list[landing.Manifest], root: Path) -> list[dict[str, Any]]:
    rows = []
    for manifest in batches:
        path = landing.entity_dir(root, manifest.shop, manifest.entity) / manifest.data_path_name
        rows.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return rows


def _parents(rows: list[dict[str, Any]], type_name: str) -> dict[int, dict[str, Any]]:
    prefix = f"gid://shopify/{type_name}/"
    return {
        int(r["id"].removeprefix(prefix)): r
        for r in rows
        if r.get("id", "").startswith(prefix) and "__parentId" not in r
    }


def test_full_bulk_sync_matches_the_devstore_records(store: RunningDevstore, tmp_path: Path) -> None:
    shop = _shop(store)
    state = store.world.shop(shop["domain"])
    assert state is not None
    with _client(store) as client:
        for entity, type_name in ENTITY_TYPES.items():
            result = fetch_entity(
                client,
                shop=shop["domain"],
                entity=entity,
                landing_root=tmp_path,
                state_dir=tmp_path / "s",
                mode="bulk",
                settings=FAST,
            )
            assert result.skipped_reason is None and result.warnings == []
            assert len(result.batches) == 1 and result.batches[0].complete
            rows = _rows(result.batches, tmp_path)
            parents = _parents(rows, type_name)
            assert set(parents) == set(state.records[entity]), entity
            assert result.rows == len(rows)
            # the incremental watermark continues from the export's start
            assert (
                IncrementalCursor.load(tmp_path / "s", shop["domain"], entity).watermark
                == result.batches[0].window_to
            )

    customers = _parents(_rows(_landed(tmp_path, shop["domain"], "customers"), tmp_path), "Customer")
    some_id, record = next((i, r) for i, r in state.records["customers"].items() if r.get("email"))
    assert customers[some_id]["defaultEmailAddress"]["emailAddress"] == record["email"]
    orders = _rows(_landed(tmp_path, shop["domain"], "orders"), tmp_path)
    # money stays a decimal string in shop and presentment currency, exactly the store's amounts
    bags = {
        "subtotalPriceSet": "subtotal_price",
        "totalPriceSet": "total_price",
        "totalTaxSet": "total_tax",
        "totalDiscountsSet": "total_discounts",
        "totalShippingPriceSet": "total_shipping_price",
        "totalRefundedSet": "total_refunded",
    }
    for order in (r for r in orders if "__parentId" not in r):
        source = state.records["orders"][int(order["id"].rsplit("/", 1)[1])]
        for field, column in bags.items():
            shop_money, presentment = order[field]["shopMoney"], order[field]["presentmentMoney"]
            assert isinstance(shop_money["amount"], str) and isinstance(presentment["amount"], str)
            assert Decimal(shop_money["amount"]) == Decimal(source[column]), (order["id"], field)
            expected = source.get(f"{column}_presentment") or source[column]
            assert Decimal(presentment["amount"]) == Decimal(expected), (order["id"], field)
            assert presentment["currencyCode"] == source["presentment_currency_code"]
    line_items = [r for r in orders if r["id"].startswith("gid://shopify/LineItem/")]
    assert len(line_items) == sum(len(v) for v in state.children["order_line_items"].values())
    collections = _rows(_landed(tmp_path, shop["domain"], "collections"), tmp_path)
    members = [r for r in collections if "__parentId" in r]
    assert len(members) == sum(len(v) for v in state.children["collection_products"].values())


def _landed(root: Path, shop: str, entity: str) -> list[landing.Manifest]:
    return [m for m, _ in landing.iter_batches(root, shop, entity)]


def test_incremental_sees_creates_updates_and_a_mass_edit_bigger_than_a_page(
    fresh_store: RunningDevstore, tmp_path: Path
) -> None:
    shop = _shop(fresh_store)
    handle = shop["domain"].removesuffix(".myshopify.com")
    state = fresh_store.world.shop(handle)
    assert state is not None
    small_pages = FetchSettings(target_query_cost=300, rows_per_batch=40)
    with _client(fresh_store) as client:
        first = fetch_entity(
            client,
            shop=shop["domain"],
            entity="customers",
            landing_root=tmp_path,
            state_dir=tmp_path / "s",
            mode="incremental",
            settings=small_pages,
        )
        assert set(_parents(_rows(first.batches, tmp_path), "Customer")) == set(state.records["customers"])
        assert len(first.batches) > 1  # several landing batches, the cursor saved after each

        created = fresh_store.control(
            "POST",
            f"/shops/{handle}/records/customers",
            {"first_name": "Nia", "email": "nia@example.com", "locale": "en"},
        )
        some = sorted(state.records["customers"])[:3]
        fresh_store.control("PATCH", f"/shops/{handle}/records/customers/{some[0]}", {"note": "changed"})
        edited = fresh_store.control(
            "POST",
            f"/shops/{handle}/mass_edit",
            {"entity": "customers", "count": 100, "changes": {"locale": "fr"}},
        )
        assert edited["updated"] == 100

        second = fetch_entity(
            client,
            shop=shop["domain"],
            entity="customers",
            landing_root=tmp_path,
            state_dir=tmp_path / "s",
            mode="incremental",
            settings=small_pages,
        )
    rows = _rows(second.batches, tmp_path)
    parents = [r for r in rows if "__parentId" not in r]
    ids = Counter(r["id"] for r in parents)
    assert max(ids.values()) == 1, "a row was read twice within one window"
    got = {int(i.rsplit("/", 1)[1]) for i in ids}
    assert set(edited["ids"]) <= got and created["id"] in got and some[0] in got
    # only what changed (plus the look-back) was read, not the whole shop again
    assert len(got) <= len(edited["ids"]) + 2
    by_id = {int(r["id"].rsplit("/", 1)[1]): r for r in parents}
    assert by_id[some[0]]["note"] == "changed" and by_id[edited["ids"][-1]]["locale"] == "fr"
    # the page size was far below the mass edit, so the ties spanned several pages
    assert second.batches and len(second.batches) >= 3


def test_nested_line_items_past_the_first_page_are_drained(
    fresh_store: RunningDevstore, tmp_path: Path
) -> None:
    shop = _shop(fresh_store)
    handle = shop["domain"].removesuffix(".myshopify.com")
    variant = next(v for vs in fresh_store.world.shop(handle).children["variants"].values() for v in vs)  # type: ignore[union-attr]
    items = [
        {
            "product_id": variant["product_id"],
            "variant_id": variant["id"],
            "title": f"item {i}",
            "quantity": 1,
            "original_unit_price": "1.00",
        }
        for i in range(13)
    ]
    order = fresh_store.control(
        "POST",
        f"/shops/{handle}/records/orders",
        {
            "email": "big@example.com",
            "total_price": "13.00",
            "processed_at": datetime.now(UTC).isoformat(),
            "line_items": items,
        },
    )
    with _client(fresh_store) as client:
        result = fetch_entity(
            client,
            shop=shop["domain"],
            entity="orders",
            landing_root=tmp_path,
            state_dir=tmp_path / "s",
            mode="incremental",
            now=datetime.now(UTC) + timedelta(seconds=2),
        )
    rows = _rows(result.batches, tmp_path)
    mine = [r for r in rows if r.get("__parentId") == f"gid://shopify/Order/{order['id']}"]
    assert len(mine) == 13 and len({r["id"] for r in mine}) == 13


def test_reconcile_lists_every_id(store: RunningDevstore, tmp_path: Path) -> None:
    shop = _shop(store)
    state = store.world.shop(shop["domain"])
    assert state is not None
    with _client(store) as client:
        result = fetch_entity(
            client,
            shop=shop["domain"],
            entity="products",
            landing_root=tmp_path,
            state_dir=tmp_path,
            mode="reconcile",
            settings=FAST,
        )
    rows = _rows(result.batches, tmp_path)
    assert result.batches[0].mode == "reconcile" and result.batches[0].complete
    assert {int(r["id"].rsplit("/", 1)[1]) for r in rows} == set(state.records["products"])
    assert all(set(r) == {"id"} for r in rows)


def test_bulk_export_resumes_after_a_restart_without_submitting_again(
    fresh_store: RunningDevstore, tmp_path: Path
) -> None:
    shop = _shop(fresh_store)
    handle = shop["domain"].removesuffix(".myshopify.com")
    fresh_store.control("PUT", "/bulk/settings", {"min_seconds": 0.5})
    state_dir = tmp_path / "state"
    # the first run submits its jobs, persists their ids, then "crashes" before polling
    with _client(fresh_store) as first_client:
        export = BulkExport(
            first_client,
            shop=shop["domain"],
            entity="customers",
            landing_root=tmp_path,
            state_dir=state_dir,
            settings=FAST,
        )
        now = datetime.now(UTC)
        plan = export.new_plan(
            "bulk", "customers.bulk", now, make_slices(now - timedelta(days=2000), now, 3), "", None
        )
        export.save_plan(plan)
        export._submit_pending(plan, docs.load("customers.bulk"))
    submitted = fresh_store.control("GET", f"/shops/{handle}/counts")["bulk_operations"]
    # the two closed slices run now; the open-ended last slice waits for them
    assert submitted == 2
    assert [s.status for s in export.load_plan("bulk").slices] == ["running", "running", "pending"]  # type: ignore[union-attr]
    with _client(fresh_store) as second_client:
        result = fetch_entity(
            second_client,
            shop=shop["domain"],
            entity="customers",
            landing_root=tmp_path,
            state_dir=state_dir,
            mode="bulk",
            settings=FAST,
        )
    # the resumed run polled the two jobs it found and submitted only the remaining slice
    assert fresh_store.control("GET", f"/shops/{handle}/counts")["bulk_operations"] == submitted + 1
    rows = _rows(result.batches, tmp_path)
    customers = fresh_store.world.shop(handle).records["customers"]  # type: ignore[union-attr]
    assert set(_parents(rows, "Customer")) == set(customers)
    assert result.batches[-1].complete


def _seed_failing_first_then_succeeding(rate: float) -> int:
    # fault decisions are deterministic per seed: find one whose first bulk job fails, next ones succeed
    for seed in range(500):
        injector = FaultInjector(FaultProfile(seed=seed, bulk_fail_rate=rate))
        decisions = [injector.decide_bulk("x") for _ in range(7)]
        if decisions[0] == "fail_partial" and not any(decisions[1:]):
            return seed
    raise AssertionError("no suitable seed")


def test_failed_bulk_job_reruns_the_slice_and_keeps_partial_data_only_if_it_gives_up(
    fresh_store: RunningDevstore, tmp_path: Path
) -> None:
    shop = _shop(fresh_store)
    handle = shop["domain"].removesuffix(".myshopify.com")
    # FaultInjector streams are keyed by shop handle; compute the seed for this handle
    seed = next(
        s
        for s in range(1000)
        if (lambda inj: [inj.decide_bulk(handle) for _ in range(7)])(
            FaultInjector(FaultProfile(seed=s, bulk_fail_rate=0.3))
        )
        in (["fail_partial"] + [None] * 6,)
    )

    def export(root: Path, **settings: Any) -> Any:
        fresh_store.control("PUT", "/faults", {"seed": seed, "bulk_fail_rate": 0.3})
        try:
            with _client(fresh_store) as client:
                return fetch_entity(
                    client,
                    shop=shop["domain"],
                    entity="orders",
                    landing_root=root,
                    state_dir=root / "s",
                    mode="bulk",
                    settings=FetchSettings(
                        poll_interval_s=0.05, max_poll_interval_s=0.2, initial_slices=1, **settings
                    ),
                )
        finally:
            fresh_store.control("DELETE", "/faults")

    # The failed slice is halved and re-run; its partial data is superseded, so never landed
    # (a partial file may cut a parent's children short).
    result = export(tmp_path / "rerun")
    final = result.batches[-1]
    assert [m for m in result.batches if m.partial] == []
    assert final.complete and final.extra["slices"] == 2
    orders = fresh_store.world.shop(handle).records["orders"]  # type: ignore[union-attr]
    assert set(_parents(_rows([final], tmp_path / "rerun"), "Order")) == set(orders)

    # A slice that gives up keeps what Shopify exported, landed before (sorting before) the rest.
    gave_up = export(tmp_path / "gave-up", max_slice_attempts=1)
    partial = [m for m in gave_up.batches if m.partial]
    assert len(partial) == 1 and not partial[0].complete and partial[0].rows > 0
    assert not gave_up.batches[-1].complete
    assert partial[0].batch_id < gave_up.batches[-1].batch_id


def test_missing_scope_skips_the_entity_with_a_message(fresh_store: RunningDevstore, tmp_path: Path) -> None:
    shop = _shop(fresh_store)
    handle = shop["domain"].removesuffix(".myshopify.com")
    fresh_store.control("POST", f"/shops/{handle}/scopes/remove", {"scope": "read_products"})
    fresh_store.control("POST", f"/shops/{handle}/scopes/remove", {"scope": "read_all_orders"})
    with _client(fresh_store) as client:
        skipped = fetch_entity(
            client,
            shop=shop["domain"],
            entity="products",
            landing_root=tmp_path,
            state_dir=tmp_path,
            mode="incremental",
        )
        orders = fetch_entity(
            client,
            shop=shop["domain"],
            entity="orders",
            landing_root=tmp_path,
            state_dir=tmp_path,
            mode="bulk",
            settings=FAST,
        )
        reconcile = fetch_entity(
            client,
            shop=shop["domain"],
            entity="orders",
            landing_root=tmp_path,
            state_dir=tmp_path,
            mode="reconcile",
        )
        verdict = preflight(client)
    # a 60-day id list would make the loader mark every older order deleted
    assert reconcile.batches == [] and reconcile.warnings and reconcile.skipped_reason is None
    assert set(verdict.skipped) == {"products", "collections"} and verdict.orders_window == timedelta(days=60)
    assert skipped.batches == [] and skipped.skipped_reason is not None
    assert "`read_products`" in skipped.skipped_reason
    assert any("60 days" in w and "read_all_orders" in w for w in orders.warnings)
    assert (
        orders.batches and not orders.batches[-1].complete
    )  # a 60-day export must not mark older orders deleted
    cutoff = datetime.now(UTC) - timedelta(days=61)
    rows = _rows(orders.batches, tmp_path)
    assert all(
        datetime.fromisoformat(r["createdAt"].replace("Z", "+00:00")) >= cutoff
        for r in rows
        if "__parentId" not in r
    )


def test_a_slow_bulk_job_is_cancelled_and_its_slice_halved(
    fresh_store: RunningDevstore, tmp_path: Path
) -> None:
    shop = _shop(fresh_store)
    handle = shop["domain"].removesuffix(".myshopify.com")
    # a job's simulated running time grows with the rows it exports: the whole range is too slow
    fresh_store.control("PUT", "/bulk/settings", {"seconds_per_object": 0.01, "min_seconds": 0.0})
    settings = FetchSettings(
        poll_interval_s=0.05,
        max_poll_interval_s=0.1,
        initial_slices=1,
        slice_timeout_s=0.6,
        max_slice_attempts=6,
    )
    with _client(fresh_store) as client:
        result = fetch_entity(
            client,
            shop=shop["domain"],
            entity="customers",
            landing_root=tmp_path,
            state_dir=tmp_path / "s",
            mode="bulk",
            settings=settings,
        )
    final = result.batches[-1]
    assert final.complete and final.extra["slices"] >= 2
    log = fresh_store.control("GET", f"/shops/{handle}/write_log?operation=bulkOperationCancel")
    assert log, "the slow job was not cancelled"
    customers = fresh_store.world.shop(handle).records["customers"]  # type: ignore[union-attr]
    parents = [r for r in _rows([final], tmp_path) if "__parentId" not in r]
    assert len(parents) == len(customers) == len({r["id"] for r in parents})


def test_a_crashed_incremental_run_resumes_its_window_where_the_last_batch_ended(
    fresh_store: RunningDevstore, tmp_path: Path
) -> None:
    shop = _shop(fresh_store)
    handle = shop["domain"].removesuffix(".myshopify.com")
    # a seed whose 4th GraphQL request fails: three pages land, then the run dies
    seed = next(
        s
        for s in range(2000)
        if (lambda inj: [getattr(inj.decide(handle, "graphql"), "kind", None) for _ in range(4)])(
            FaultInjector(FaultProfile(seed=s, rate_500=0.2))
        )
        == [None, None, None, "500"]
    )
    settings = FetchSettings(target_query_cost=300, rows_per_batch=1)
    fresh_store.control("PUT", "/faults", {"seed": seed, "rate_500": 0.2, "kinds": ["graphql"]})
    try:
        shop_client = ShopifyClient(
            shop["domain"], access_token=shop["access_token"], base_url=shop["base_url"], max_attempts=1
        )
        with shop_client, pytest.raises(ShopifyUnavailable):
            fetch_entity(
                shop_client,
                shop=shop["domain"],
                entity="customers",
                landing_root=tmp_path,
                state_dir=tmp_path / "s",
                mode="incremental",
                scopes={"read_customers"},
                settings=settings,
            )
    finally:
        fresh_store.control("DELETE", "/faults")
    landed_first = _landed(tmp_path, shop["domain"], "customers")
    cursor = IncrementalCursor.load(tmp_path / "s", shop["domain"], "customers")
    assert (
        len(landed_first) == 3
        and cursor.window is not None
        and cursor.window.after
        and cursor.watermark is None
    )
    with _client(fresh_store) as client:
        second = fetch_entity(
            client,
            shop=shop["domain"],
            entity="customers",
            landing_root=tmp_path,
            state_dir=tmp_path / "s",
            mode="incremental",
            scopes={"read_customers"},
            settings=settings,
        )
    assert {m.window_to for m in second.batches} == {cursor.window.window_to}  # the same fixed window
    parents = [r["id"] for r in _rows(landed_first + second.batches, tmp_path) if "__parentId" not in r]
    assert len(parents) == len(set(parents)), "rows already landed were read again"
    customers = fresh_store.world.shop(handle).records["customers"]  # type: ignore[union-attr]
    assert {int(i.rsplit("/", 1)[1]) for i in parents} == set(customers)
    assert IncrementalCursor.load(tmp_path / "s", shop["domain"], "customers").window is None


@pytest.mark.parametrize("entity", list(ENTITY_TYPES))
def test_paged_rows_have_exactly_the_bulk_shape(store: RunningDevstore, tmp_path: Path, entity: str) -> None:
    shop = _shop(store)
    with _client(store) as client:
        bulk = fetch_entity(
            client,
            shop=shop["domain"],
            entity=entity,
            landing_root=tmp_path / "b",
            state_dir=tmp_path / "bs",
            mode="bulk",
            settings=FAST,
        )
        paged = fetch_entity(
            client,
            shop=shop["domain"],
            entity=entity,
            landing_root=tmp_path / "p",
            state_dir=tmp_path / "ps",
            mode="incremental",
        )
    bulk_rows = {(r["id"], r.get("__parentId")): r for r in _rows(bulk.batches, tmp_path / "b")}
    paged_rows = {(r["id"], r.get("__parentId")): r for r in _rows(paged.batches, tmp_path / "p")}
    assert bulk_rows.keys() == paged_rows.keys()
    assert bulk_rows == paged_rows


class _RefusalSpy(ShopifyClient):
    """A real client that also remembers the queries Shopify refused as too costly."""

    refusals: list[tuple[str, float]]

    def execute(
        self, document: str, variables: dict | None = None, *, expected_cost: float | None = None
    ) -> dict:
        try:
            return super().execute(document, variables, expected_cost=expected_cost)
        except ShopifyCostTooHigh as exc:
            name = re.search(r"^query (\w+)", document, re.MULTILINE)
            self.refusals.append((name.group(1) if name else "?", exc.requested))
            raise


def test_pages_refused_as_too_costly_are_asked_again_smaller(
    fresh_store: RunningDevstore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = _shop(fresh_store)
    handle = shop["domain"].removesuffix(".myshopify.com")
    # cost estimates far too low (as if Shopify's cost rules had changed): the first page of
    # orders and the first follow-up page of line items each ask for more than 1000 points
    monkeypatch.setitem(fetch.SPECS, "orders", replace(fetch.SPECS["orders"], node_cost=2.0, child_cost=0.5))
    items = [{"title": f"item {i}", "quantity": 1, "original_unit_price": "1.00"} for i in range(30)]
    order = fresh_store.control(
        "POST", f"/shops/{handle}/records/orders", {"email": "big@example.com", "line_items": items}
    )
    client = _RefusalSpy(shop["domain"], access_token=shop["access_token"], base_url=shop["base_url"])
    client.refusals = []
    with client:
        result = fetch_entity(
            client,
            shop=shop["domain"],
            entity="orders",
            landing_root=tmp_path,
            state_dir=tmp_path / "s",
            mode="incremental",
            settings=FetchSettings(first_page_size=250),
            now=datetime.now(UTC) + timedelta(seconds=2),
        )
    assert [name for name, _ in client.refusals] == ["OrdersPage", "OrdersChildren"]
    assert all(requested > 1000 for _, requested in client.refusals)
    rows = _rows(result.batches, tmp_path)
    state = fresh_store.world.shop(handle)
    assert state is not None and set(_parents(rows, "Order")) == set(state.records["orders"])
    mine = {r["id"] for r in rows if r.get("__parentId") == f"gid://shopify/Order/{order['id']}"}
    assert len(mine) == 30


@pytest.mark.parametrize("entity", list(fetch.SPECS))
def test_entity_cost_estimates_match_what_shopify_charges(store: RunningDevstore, entity: str) -> None:
    # The first pages are sized from these estimates: too low and Shopify refuses the page,
    # too high and a small incremental read waits for points it never spends.
    spec = fetch.SPECS[entity]
    variables = {"first": 4, "after": None, "query": None, "childFirst": spec.child_first}
    with _client(store) as client:
        client.execute(docs.load(entity), variables)
        requested, _ = client.last_cost
    per_node = (requested - 2) / 4
    assert per_node <= spec.node_cost <= per_node + 2, (entity, per_node, spec.node_cost)


def test_the_first_metafield_page_holds_every_engagement_key() -> None:
    # the paged customer read needs no follow-up query for the metafields shopsync writes
    from transforms.reverse_sync import ENGAGEMENT_METAFIELDS

    assert fetch.SPECS["customers"].child_first == len(ENGAGEMENT_METAFIELDS)
