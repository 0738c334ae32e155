"""Delete and the privacy topics, end to end: the devstore sends, the receiver takes it, apply acts.

Every warehouse table is enumerated from the warehouse itself, so a table added later is
checked by the same assertions.
"""

from __future__ import annotations

import json
import sqlite3
import stat
import time
from typing import Any

import duckdb
import httpx
from store_ops_support import Ops, customer_rows, subscribe_privacy_topics

from orchestration.commands.webhooks import apply_and_load
from orchestration.control import StoreStatus
from orchestration.defs.instance import local_instance
from orchestration.defs.shopify.partitions import STORES_PARTITION, add_store_partition

CONTACT_TABLES_WITHOUT_SHOP = ("core.contacts", "core.contact_metrics", "core.contact_consent")


def _tables(ops: Ops) -> dict[str, set[str]]:
    rows = ops.sql(
        "SELECT c.table_schema || '.' || c.table_name, c.column_name FROM information_schema.columns c "
        "JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
        "WHERE t.table_type = 'BASE TABLE' AND c.table_schema NOT LIKE '%_staging' AND c.table_name NOT LIKE '_dlt%'"
    )
    tables: dict[str, set[str]] = {}
    for table, column in rows:
        tables.setdefault(table, set()).add(column)
    return tables


def _shop_counts(ops: Ops, tables: dict[str, set[str]], shop: str) -> dict[str, int]:
    counts = {}
    for table, columns in tables.items():
        cols = [c for c in ("shop", "shop_l", "shop_r") if c in columns]
        if cols:
            where = " OR ".join(f"{c} = ?" for c in cols)
            counts[table] = ops.sql(f"SELECT count(*) FROM {table} WHERE {where}", *([shop] * len(cols)))[0][
                0
            ]
    return counts


def _contacts_by_store(ops: Ops) -> dict[str, set[str]]:
    rows = ops.sql("SELECT contact_id, list(DISTINCT shop) FROM core.contact_identities GROUP BY contact_id")
    return {contact: set(shops) for contact, shops in rows}


def _wait_delivery(ops: Ops, shop: str, topic: str, *, ok: bool = True, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = httpx.get(
            f"{ops.store.url}/_devstore/webhooks/deliveries", params={"shop": shop, "topic": topic}, timeout=5
        ).json()
        if any(r["ok"] is ok for r in records):
            time.sleep(0.4)  # the receiver seals every 0.1 s
            return
        time.sleep(0.05)
    raise AssertionError(f"no {'successful' if ok else 'refused'} {topic} delivery for {shop}")


def _subject(ops: Ops, shop: str) -> tuple[int, str, str | None]:
    """The customer the template gave a push row and an engagement event (lowest id with an email)."""
    row = ops.sql(
        "SELECT id, email, phone FROM shopify.customers WHERE shop = ? AND email IS NOT NULL ORDER BY id LIMIT 1",
        shop,
    )[0]
    return int(row[0]), str(row[1]), row[2]


def _privacy(ops: Ops, i: int, topic: str, customer_id: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"topic": topic}
    if customer_id is not None:
        body["customer_id"] = customer_id
    return ops.control("POST", f"/shops/{ops.handle(i)}/privacy", body).json()


def test_delete_removes_exactly_that_store_from_every_table(ops: Ops) -> None:
    shop0, shop1 = ops.shops[0]["domain"], ops.shops[1]["domain"]
    tables = _tables(ops)
    # the template holds every kind of table, each with rows of both stores
    for expected in (
        "shopify.orders",
        "core.contact_identities",
        "core.consent",
        "sync.push_log",
        "engagement.events",
    ):
        assert expected in tables
    before0, before1 = _shop_counts(ops, tables, shop0), _shop_counts(ops, tables, shop1)
    assert sum(before0.values()) > 0
    contacts = _contacts_by_store(ops)
    only0 = {c for c, shops in contacts.items() if shops == {shop0}}
    shared = {c for c, shops in contacts.items() if shops == {shop0, shop1}}
    keep = {c for c, shops in contacts.items() if shop1 in shops}
    assert only0 and shared, "the world's stores share customers"
    contact_rows_kept = {
        t: ops.sql(f"SELECT count(*) FROM {t} WHERE contact_id IN ?", list(keep))[0][0]
        for t in CONTACT_TABLES_WITHOUT_SHOP
    }
    add_store_partition(local_instance(), shop0)
    landing_email = _subject(ops, shop0)[1]
    quarantine = ops.data_dir / "landing" / "_quarantine" / "webhooks"
    quarantine.mkdir(parents=True, exist_ok=True)
    for i, shop in enumerate((shop0, shop1)):
        (quarantine / f"q{i}.json").write_text(
            json.dumps({"event_id": f"q{i}", "shop": shop, "body": "{bad"})
        )

    refused = ops.cli("stores", "delete", shop0, input="wrong\n")
    assert (
        refused.exit_code == 1 and "nothing was deleted" in refused.output and customer_rows(ops, shop0) > 0
    )
    deleted = ops.cli("stores", "delete", shop0, input=f"{shop0}\n")
    assert deleted.exit_code == 0, deleted.output
    assert "warehouse rows in" in deleted.output and "shopify.customers" in deleted.output
    assert "Shopify grant: revoked (app uninstalled)" in deleted.output
    assert "Dagster partition removed: yes" in deleted.output

    after_tables = _tables(ops)
    assert set(after_tables) >= set(tables)
    assert all(n == 0 for n in _shop_counts(ops, after_tables, shop0).values())
    assert _shop_counts(ops, after_tables, shop1) == before1  # the other store untouched
    # people: contacts only of the deleted store are gone, the others are all still there
    remaining = _contacts_by_store(ops)
    assert not (only0 & set(remaining)) and all(shop0 not in s for s in remaining.values())
    for table in CONTACT_TABLES_WITHOUT_SHOP:
        assert ops.sql(f"SELECT count(*) FROM {table} WHERE contact_id IN ?", list(only0))[0][0] == 0
        assert (
            ops.sql(f"SELECT count(*) FROM {table} WHERE contact_id IN ?", list(keep))[0][0]
            == contact_rows_kept[table]
        )
    assert ops.sql("SELECT count(*) FROM core.contacts WHERE list_contains(shops, ?)", shop0) == [(0,)]
    assert ops.sql(
        "SELECT count(*) FROM core.identity_events WHERE len(list_filter(records, lambda r: starts_with(r, ?))) > 0",
        shop0 + "|",
    ) == [(0,)]
    # files: landing, quarantined webhooks, journal, snapshot
    assert not (ops.data_dir / "landing" / shop0).exists() and (ops.data_dir / "landing" / shop1).exists()
    assert sorted(p.name for p in quarantine.iterdir()) == ["q1.json"]
    journal = sqlite3.connect(ops.data_dir / "webhooks" / "journal.db")
    assert journal.execute("SELECT count(*) FROM deliveries WHERE shop = ?", (shop0,)).fetchone() == (0,)
    journal.close()
    snapshot = duckdb.connect(str(ops.data_dir / "snapshot" / "analyst.duckdb"), read_only=True)
    try:
        assert snapshot.execute(
            "SELECT count(*) FROM shopify.customers WHERE shop = ?", [shop0]
        ).fetchone() == (0,)
        assert (
            snapshot.execute("SELECT count(*) FROM shopify.customers WHERE shop = ?", [shop1]).fetchone()[0]
            > 0
        )
    finally:
        snapshot.close()
    versions = [p for p in (ops.data_dir / "snapshot").iterdir() if p.is_dir()]
    assert len(versions) == 1  # the versions that held the store's rows are gone
    assert not any(
        landing_email in p.read_text(errors="ignore") for p in versions[0].glob("shopify.customers*")
    )
    # registry: gone with its credentials, a tombstone and an audit row remain; the token is dead
    assert [s.domain for s in ops.registry.list_stores()] == [shop1]
    assert ops.registry.deleted_store(shop0) is not None
    audit = ops.registry.privacy_actions(shop0)
    assert [a.topic for a in audit] == ["stores/delete"] and audit[0].outcome == "deleted"
    assert audit[0].touched["warehouse_rows"]["shopify.customers"] == before0["shopify.customers"]
    assert STORES_PARTITION and shop0 not in local_instance().get_dynamic_partitions(STORES_PARTITION)
    log = ops.control("GET", f"/shops/{ops.handle(0)}/write_log?operation=appUninstall").json()
    assert len(log) == 1
    response = httpx.post(
        ops.shops[0]["base_url"] + "/admin/api/2026-10/graphql.json",
        json={"query": "{ shop { name } }"},
        headers={"X-Shopify-Access-Token": ops.shops[0]["access_token"]},
        timeout=10,
    )
    assert response.status_code == 401


def test_data_request_writes_everything_held_to_a_file_for_the_owner(ops: Ops) -> None:
    shop0 = ops.shops[0]["domain"]
    customer_id, email, phone = _subject(ops, shop0)
    sent = _privacy(ops, 0, "customers/data_request", customer_id)
    _wait_delivery(ops, shop0, "customers/data_request")
    # the sealed request keeps ids only
    sealed = list((ops.data_dir / "landing" / "_privacy" / "requests").glob("*.jsonl"))
    assert sealed and all(email not in p.read_text() for p in sealed)

    outcome = apply_and_load(ops.registry, ops.data_dir)
    assert outcome[shop0]["privacy"][0]["outcome"] == "exported", outcome
    path = (
        ops.data_dir / "privacy" / shop0 / f"customer-{customer_id}-request-{sent['data_request']['id']}.json"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    tables = document["tables"]
    assert [r["email"] for r in tables["shopify.customers"]] == [email]
    # the customer's orders, and guest orders placed with the same email or phone
    orders = ops.sql(
        "SELECT count(*) FROM shopify.orders WHERE shop = ? AND (customer_id = ? OR email = ? OR phone = ?)",
        shop0,
        customer_id,
        email,
        phone or "",
    )[0][0]
    assert len(tables.get("shopify.orders", [])) == orders
    for expected in (
        "core.contact_identities",
        "core.contacts",
        "core.consent_audit",
        "sync.push_log",
        "engagement.events",
    ):
        assert tables.get(expected), expected
    audit = ops.registry.privacy_actions(shop0)
    assert [(a.topic, a.outcome) for a in audit] == [("customers/data_request", "exported")]
    assert audit[0].customer_id == customer_id and email not in json.dumps(audit[0].touched)
    # applied once: the same request again does nothing new
    assert "privacy" not in apply_and_load(ops.registry, ops.data_dir).get(shop0, {})


def test_customer_redact_erases_personal_data_everywhere_and_is_audited(ops: Ops) -> None:
    shop0, shop1 = ops.shops[0]["domain"], ops.shops[1]["domain"]
    customer_id, email, phone = _subject(ops, shop0)
    # a webhook about the customer, so the journal and a webhook batch hold their data too
    ops.control("PATCH", f"/shops/{ops.handle(0)}/records/customers/{customer_id}", {"note": "likes tea"})
    _wait_delivery(ops, shop0, "customers/update")
    apply_and_load(ops.registry, ops.data_dir)
    other_before = customer_rows(ops, shop1)
    amount = ops.sql(
        "SELECT amount_spent FROM shopify.customers WHERE shop = ? AND id = ?", shop0, customer_id
    )

    _privacy(ops, 0, "customers/redact", customer_id)
    _wait_delivery(ops, shop0, "customers/redact")
    outcome = apply_and_load(ops.registry, ops.data_dir)
    assert outcome[shop0]["privacy"][0]["outcome"] == "redacted", outcome

    row = ops.sql(
        "SELECT first_name, last_name, email, phone, note, amount_spent FROM shopify.customers WHERE shop = ? AND id = ?",
        shop0,
        customer_id,
    )
    assert row == [(None, None, None, None, None, amount[0][0])]  # ids and money stay
    assert ops.sql(
        "SELECT count(*) FROM shopify.customer_addresses WHERE shop = ? AND customer_id = ? AND address1 IS NOT NULL",
        shop0,
        customer_id,
    ) == [(0,)]
    assert ops.sql(
        "SELECT count(*) FROM shopify.orders WHERE shop = ? AND customer_id = ? AND (email IS NOT NULL OR billing_address1 IS NOT NULL)",
        shop0,
        customer_id,
    ) == [(0,)]
    assert ops.sql(
        "SELECT payload FROM sync.pushed_state WHERE shop = ? AND customer_id = ?", shop0, customer_id
    ) == [(None,)]
    assert ops.sql("SELECT count(*) FROM engagement.events WHERE shop = ? AND email = ?", shop0, email) == [
        (0,)
    ]
    assert ops.sql("SELECT shop, customer_id FROM privacy.redacted_customers") == [(shop0, customer_id)]
    contacts = [
        r[0]
        for r in ops.sql(
            "SELECT contact_id FROM core.contact_identities WHERE shop = ? AND record_type = 'customer' AND record_id = ?",
            shop0,
            str(customer_id),
        )
    ]
    assert contacts and ops.sql(
        "SELECT count(*) FROM core.contacts WHERE contact_id IN ? AND email IS NOT NULL", contacts
    ) == [(0,)]
    # no table's rows of this store still carry the email or phone
    for table, columns in _tables(ops).items():
        if "shop" not in columns:
            continue
        for column in columns & {"email", "phone", "billing_phone"}:
            needles = [n for n in (email, phone) if n]
            hits = ops.sql(f"SELECT count(*) FROM {table} WHERE shop = ? AND {column} IN ?", shop0, needles)[
                0
            ][0]
            assert hits == 0, (table, column)
    # nor do the store's landing batches, the journal or the published snapshot
    for path in (ops.data_dir / "landing" / shop0).rglob("*.jsonl"):
        assert email not in path.read_text(), path
    journal = sqlite3.connect(ops.data_dir / "webhooks" / "journal.db")
    bodies = [
        bytes(b).decode() for (b,) in journal.execute("SELECT body FROM deliveries WHERE shop = ?", (shop0,))
    ]
    journal.close()
    assert bodies and not any(email in b for b in bodies)
    snapshot = duckdb.connect(str(ops.data_dir / "snapshot" / "analyst.duckdb"), read_only=True)
    try:
        assert snapshot.execute(
            "SELECT count(*) FROM shopify.customers WHERE shop = ? AND email = ?", [shop0, email]
        ).fetchone() == (0,)
    finally:
        snapshot.close()
    assert customer_rows(ops, shop1) == other_before
    audit = ops.registry.privacy_actions(shop0)
    assert [(a.topic, a.outcome) for a in audit] == [("customers/redact", "redacted")]
    assert audit[0].touched["tables"]["shopify.customers"] == 1 and email not in json.dumps(audit[0].touched)
    # a later change in Shopify is acknowledged but the customer is not read back
    ops.control("PATCH", f"/shops/{ops.handle(0)}/records/customers/{customer_id}", {"note": "again"})
    ops.wait_webhooks(shop0, "customers/update", n=2)
    assert apply_and_load(ops.registry, ops.data_dir)[shop0]["ignored"] >= 1
    assert ops.sql(
        "SELECT email, note FROM shopify.customers WHERE shop = ? AND id = ?", shop0, customer_id
    ) == [(None, None)]
    # Shopify still serves the customer: a full re-sync loads the profile, which is erased again
    resynced = ops.cli("stores", "resync", shop0)
    assert resynced.exit_code == 0, resynced.output
    assert ops.sql(
        "SELECT first_name, email, phone, note FROM shopify.customers WHERE shop = ? AND id = ?",
        shop0,
        customer_id,
    ) == [(None, None, None, None)]
    assert ops.sql(
        "SELECT count(*) FROM shopify.orders WHERE shop = ? AND customer_id = ? AND email IS NOT NULL",
        shop0,
        customer_id,
    ) == [(0,)]
    assert ops.sql("SELECT count(*) FROM privacy.redacted_customers") == [(1,)]


def test_shop_redact_after_uninstall_deletes_the_store(ops: Ops) -> None:
    shop0, shop1 = ops.shops[0]["domain"], ops.shops[1]["domain"]
    ops.control("POST", f"/shops/{ops.handle(1)}/uninstall", {})
    _wait_delivery(ops, shop1, "app/uninstalled")
    apply_and_load(ops.registry, ops.data_dir)
    assert ops.registry.get_store(shop1).status is StoreStatus.RECONNECT_REQUIRED
    # compliance webhooks belong to the app's configuration: they still arrive after the uninstall
    subscribe_privacy_topics(ops)
    kept = customer_rows(ops, shop0)

    _privacy(ops, 1, "shop/redact")
    _wait_delivery(ops, shop1, "shop/redact")
    outcome = apply_and_load(ops.registry, ops.data_dir)
    assert outcome[shop1]["privacy"][0]["outcome"] == "deleted", outcome
    assert [s.domain for s in ops.registry.list_stores()] == [shop0]
    assert all(n == 0 for n in _shop_counts(ops, _tables(ops), shop1).values())
    assert customer_rows(ops, shop0) == kept
    topics = [(a.topic, a.outcome) for a in ops.registry.privacy_actions(shop1)]
    assert ("shop/redact", "deleted") in topics and ("shop/redact (delete)", "deleted") in topics
    # its signing secret went with the shop/redact: a later delivery for it is refused
    assert ops.registry.deleted_store_secrets(shop1) == ()


def test_shop_redact_for_a_deleted_store_is_verified_with_the_kept_secret(ops: Ops) -> None:
    shop0 = ops.shops[0]["domain"]
    assert ops.cli("stores", "delete", shop0, "--yes").exit_code == 0
    assert ops.registry.deleted_store_secrets(shop0) == (ops.shops[0]["client_secret"],)
    subscribe_privacy_topics(ops)

    # a customer request for a store already deleted: verified, audited, nothing held
    first = _privacy(
        ops,
        0,
        "customers/redact",
        int(ops.control("GET", f"/shops/{ops.handle(0)}/records/customers?limit=1").json()[0]["id"]),
    )
    del first
    _wait_delivery(ops, shop0, "customers/redact")
    _privacy(ops, 0, "shop/redact")
    _wait_delivery(ops, shop0, "shop/redact")
    apply_and_load(ops.registry, ops.data_dir)
    actions = {a.topic: a for a in ops.registry.privacy_actions(shop0)}
    assert actions["customers/redact"].outcome == "nothing held"
    assert actions["shop/redact"].outcome == "deleted (already deleted; swept again)"
    assert actions["shop/redact"].touched["webhook_secret_erased"] is True
    assert ops.registry.deleted_store_secrets(shop0) == ()
    assert not (ops.data_dir / "landing" / shop0).exists()
    # nothing can verify it any more: Shopify's next delivery is refused and nothing is stored
    _privacy(ops, 0, "shop/redact")
    _wait_delivery(ops, shop0, "shop/redact", ok=False)
    assert shop0 not in apply_and_load(ops.registry, ops.data_dir)


def test_privacy_sensor_requests_a_run_and_the_job_acts_in_the_warehouse_pool(ops: Ops) -> None:
    import dagster as dg

    from orchestration.defs.instance import WAREHOUSE_POOL
    from orchestration.defs.shopify.resources import ShopifyStores
    from orchestration.defs.webhooks.definitions import privacy_job, privacy_requests_sensor

    shop0 = ops.shops[0]["domain"]
    customer_id, _email, _phone = _subject(ops, shop0)
    _privacy(ops, 0, "customers/data_request", customer_id)
    _wait_delivery(ops, shop0, "customers/data_request")
    stores = ShopifyStores(data_dir=str(ops.data_dir))
    with dg.build_sensor_context(resources={"stores": stores}) as context:
        result = privacy_requests_sensor(context)
    assert isinstance(result, dg.SensorResult) and len(result.run_requests or []) == 1
    request = (result.run_requests or [])[0]
    assert request.run_key and request.run_key.startswith("privacy:")
    assert privacy_job.graph.node_named("privacy_requests_op").definition.pool == WAREHOUSE_POOL

    instance = local_instance()
    run = privacy_job.execute_in_process(resources={"stores": stores}, instance=instance, tags=request.tags)
    assert run.success
    assert [(a.topic, a.outcome) for a in ops.registry.privacy_actions(shop0)] == [
        ("customers/data_request", "exported")
    ]
    with dg.build_sensor_context(resources={"stores": stores}) as context:
        again = privacy_requests_sensor(context)
    assert not again.run_requests
