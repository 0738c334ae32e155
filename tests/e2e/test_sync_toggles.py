"""The five inbound toggles and the customer list: stored per store, honoured by the fetchers,
carried into the warehouse and onto contacts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner
from test_sync_pipeline import harness_factory  # noqa: F401  (fixture)

from orchestration.cli import cli
from orchestration.control.health import INITIAL_SYNC, SCOPES, check_health
from orchestration.control.registry import RegistryError
from transforms.warehouse_inputs import drop_disabled_consent, with_customer_lists


def test_inbound_toggles_default_on_and_lists_belong_to_one_store(harness_factory: Any) -> None:  # noqa: F811
    h = harness_factory(stores=2, customers=5, seed=4)
    a, b = h.domains
    reg = h.registry
    assert reg.inbound_toggles(a) == {
        "customer_profiles",
        "email_consent",
        "sms_consent",
        "orders",
        "catalogue",
    }
    assert reg.enabled_entities(a) == [
        "customers",
        "orders",
        "products",
        "collections",
        "abandoned_checkouts",
    ]
    assert reg.set_inbound_toggles(a, {"orders": False}) == {
        "customer_profiles",
        "email_consent",
        "sms_consent",
        "catalogue",
    }
    assert reg.enabled_entities(a) == ["customers", "products", "collections"]
    assert reg.inbound_toggles(b) == {
        "customer_profiles",
        "email_consent",
        "sms_consent",
        "orders",
        "catalogue",
    }
    with pytest.raises(RegistryError, match="Unknown inbound toggles"):
        reg.set_inbound_toggles(a, {"carts": False})

    assert reg.assign_customer_list(a, "Newsletter") == "Newsletter"
    with pytest.raises(RegistryError, match="already assigned to " + a):
        reg.assign_customer_list(b, "Newsletter")
    reg.assign_customer_list(a, "VIP")  # moving a store to another list frees the first
    assert reg.customer_list(a) == "VIP"
    assert reg.assign_customer_list(b, "Newsletter") == "Newsletter"
    assert reg.customer_lists() == {a: "VIP", b: "Newsletter"}
    reg.assign_customer_list(a, None)
    assert reg.customer_list(a) is None


@pytest.mark.slow
def test_fetchers_skip_what_the_toggles_turn_off_and_health_follows(harness_factory: Any) -> None:  # noqa: F811
    h = harness_factory(stores=1, customers=20, seed=8)
    (shop,) = h.domains
    h.registry.set_inbound_toggles(shop, {"orders": False, "catalogue": False, "email_consent": False})
    h.registry.assign_customer_list(shop, "Outdoor fans")
    h.sync(shop)

    assert h.live_ids("customers", shop) == h.truth(shop)["customers"]
    for table in ("orders", "products", "collections", "abandoned_checkouts"):
        present = h.query(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'shopify' AND table_name = ?",
            [table],
        )[0][0]
        if present:
            assert h.live_ids(table, shop) == set(), table
    settings = h.query(
        "SELECT customer_profiles, email_consent, sms_consent, orders, catalogue, customer_list "
        "FROM core.store_settings WHERE shop = ?",
        [shop],
    )
    assert settings == [(True, False, True, False, False, "Outdoor fans")]
    statuses = {e.entity for e in h.registry.entity_statuses(shop)}
    assert "orders" not in statuses and "products" not in statuses

    # health asks only for what is turned on: the initial sync is complete without orders
    report = check_health(h.registry, shop)
    items = {i.name: i for i in report.items}
    assert items[INITIAL_SYNC].passed, items[INITIAL_SYNC].detail
    # a push toggle on adds write_customers to the scopes the store must grant
    assert items[SCOPES].passed and "write_customers" not in items[SCOPES].detail
    h.registry.set_outbound_toggles(shop, {"email_consent": True})
    handle = shop.removesuffix(".myshopify.com")
    h.control("POST", f"/shops/{handle}/scopes/remove", {"scope": "write_customers"})
    items = {i.name: i for i in check_health(h.registry, shop).items}
    assert not items[SCOPES].passed and "write_customers" in items[SCOPES].detail
    h.control("POST", f"/shops/{handle}/scopes/grant", {"scope": "write_customers"})
    items = {i.name: i for i in check_health(h.registry, shop).items}
    assert items[SCOPES].passed and "write_customers" in items[SCOPES].detail

    # turned back on, the next sync brings the orders in
    h.registry.set_inbound_toggles(shop, {"orders": True})
    h.sync(shop)
    assert h.live_ids("orders", shop) == h.truth(shop)["orders"]


def test_consent_of_a_store_with_the_toggle_off_is_not_imported() -> None:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    consent = pl.DataFrame(
        {
            "shop": ["a.myshopify.com", "b.myshopify.com", "c.myshopify.com"],
            "customer_id": [1, 2, 3],
            "email_consent_state": ["SUBSCRIBED"] * 3,
            "email_consent_opt_in_level": ["SINGLE_OPT_IN"] * 3,
            "email_consent_updated_at": [ts] * 3,
            "sms_consent_state": ["SUBSCRIBED"] * 3,
            "sms_consent_opt_in_level": ["SINGLE_OPT_IN"] * 3,
            "sms_consent_updated_at": [ts] * 3,
        }
    )
    settings = pl.DataFrame(
        {
            "shop": ["a.myshopify.com", "b.myshopify.com"],
            "email_consent": [False, True],
            "sms_consent": [True, False],
        }
    )
    out = drop_disabled_consent(consent, settings)
    assert out.columns == consent.columns
    assert out["email_consent_state"].to_list() == [None, "SUBSCRIBED", "SUBSCRIBED"]
    assert out["email_consent_updated_at"].to_list() == [None, ts, ts]
    assert out["sms_consent_state"].to_list() == ["SUBSCRIBED", None, "SUBSCRIBED"]  # c has no row: all on


def test_contacts_show_the_lists_of_their_stores() -> None:
    contacts = pl.DataFrame(
        {"contact_id": ["p1", "p2", "p3"], "shops": [["a", "b"], ["b"], ["c"]]},
        schema={"contact_id": pl.String, "shops": pl.List(pl.String)},
    )
    settings = pl.DataFrame({"shop": ["a", "b", "c"], "customer_list": ["VIP", "Newsletter", None]})
    out = with_customer_lists(contacts, settings).sort("contact_id")
    assert out["customer_lists"].to_list() == [["Newsletter", "VIP"], ["Newsletter"], []]
    assert with_customer_lists(contacts.clear(), settings).columns == [
        "contact_id",
        "shops",
        "customer_lists",
    ]


def test_settings_command_shows_and_changes_both_directions(harness_factory: Any) -> None:  # noqa: F811
    h = harness_factory(stores=2, customers=3, seed=5)
    a, b = h.domains
    runner = CliRunner()
    base = ["stores", "settings", "--data-dir", str(h.data_dir)]
    env = {"SHOPSYNC_CONTROL_URL": f"sqlite:///{h.data_dir / 'control.db'}"}
    shown = runner.invoke(cli, [*base, a], env=env)
    assert shown.exit_code == 0, shown.output
    assert "Sync data from Shopify for" in shown.output and "Sync data to Shopify for" in shown.output
    assert (
        "on   Orders, checkouts and carts" in shown.output and "customer list: none assigned" in shown.output
    )
    changed = runner.invoke(cli, [*base, a, "--sync-orders", "off", "--customer-list", "VIP"], env=env)
    assert changed.exit_code == 0, changed.output
    assert "off  Orders, checkouts and carts" in changed.output and "customer list: VIP" in changed.output
    taken = runner.invoke(cli, [*base, b, "--customer-list", "VIP"], env=env)
    assert taken.exit_code == 1 and f'The list "VIP" is already assigned to {a}' in taken.output
    assert h.registry.customer_list(b) is None
