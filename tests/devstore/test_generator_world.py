"""The world generator: determinism, contract, integrity, money, phones and ground truth."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import phonenumbers
import polars as pl
import pytest

from devstore import gen_names, model
from devstore.generator import DEFAULT_NOW, generate_world, write_engagement, write_truth
from devstore.state import World

World_ = dict[str, pl.DataFrame]


@pytest.fixture(scope="module")
def world() -> World_:
    return generate_world(stores=3, customers=1500, seed=7)


def _cents(col: str) -> pl.Expr:
    """Money string → integer cents, exactly (no float on the way)."""
    parts = pl.col(col).str.split_exact(".", 1)
    return parts.struct.field("field_0").cast(pl.Int64) * 100 + parts.struct.field("field_1").cast(pl.Int64)


def test_same_seed_gives_identical_frames_and_other_seed_differs(world: World_) -> None:
    again = generate_world(stores=3, customers=1500, seed=7)
    assert set(again) == set(world)
    for name, frame in world.items():
        assert frame.equals(again[name]), name
    other = generate_world(stores=3, customers=1500, seed=8)
    assert not other["customers"].equals(world["customers"])


def test_every_table_conforms_to_the_model(world: World_) -> None:
    assert set(world) == set(model.TABLES)
    for name, frame in world.items():
        assert frame.schema == pl.Schema(model.TABLES[name]), name
        assert model.conform(name, frame).equals(frame)
        assert frame.height > 0, name


def test_ids_are_unique_and_customer_ids_look_like_shopify(world: World_) -> None:
    for name, frame in world.items():
        if "id" in frame.columns and name != "engagement_events":
            assert frame["id"].null_count() == 0, name
            assert frame["id"].n_unique() == frame.height, name
    assert world["customers"]["id"].cast(pl.String).str.len_chars().unique().to_list() == [13]
    assert world["engagement_events"]["event_id"].n_unique() == world["engagement_events"].height


def test_shops_have_valid_handles_and_distinct_markets(world: World_) -> None:
    shops = world["shops"]
    assert (shops["handle"].str.len_chars() >= 4).all()
    assert (shops["shop"] == shops["handle"] + ".myshopify.com").all()
    assert shops["currency_code"].n_unique() == 3
    assert shops["country_code"].n_unique() == 3


def test_referential_integrity(world: World_) -> None:
    def subset(child: str, fk: str, parent: str, key: str = "id") -> None:
        values = world[child].filter(pl.col(fk).is_not_null()).select("shop", pl.col(fk).alias(key))
        missing = values.join(world[parent].select("shop", key), on=["shop", key], how="anti")
        assert missing.height == 0, f"{child}.{fk} → {parent}"

    subset("order_line_items", "order_id", "orders")
    subset("refunds", "order_id", "orders")
    subset("orders", "customer_id", "customers")
    subset("abandoned_checkouts", "customer_id", "customers")
    subset("checkout_line_items", "checkout_id", "abandoned_checkouts")
    subset("customer_addresses", "customer_id", "customers")
    subset("customers", "default_address_id", "customer_addresses")
    subset("variants", "product_id", "products")
    subset("order_line_items", "variant_id", "variants")
    subset("checkout_line_items", "variant_id", "variants")
    subset("collection_products", "collection_id", "collections")
    subset("collection_products", "product_id", "products")
    subset("metafields", "owner_id", "customers")
    per_order = world["order_line_items"].group_by("order_id").len()["len"]
    assert per_order.min() >= 1 and per_order.max() <= 5
    assert world["order_line_items"]["order_id"].n_unique() == world["orders"].height


def test_money_adds_up_in_shop_and_presentment_currency(world: World_) -> None:
    orders = world["orders"]
    for suffix in ("", "_presentment"):
        money = orders.select(
            [
                _cents(f"{c}{suffix}").alias(c)
                for c in (
                    "subtotal_price",
                    "total_tax",
                    "total_shipping_price",
                    "total_discounts",
                    "total_price",
                    "total_refunded",
                )
            ]
        )
        lhs = money["total_price"]
        rhs = (
            money["subtotal_price"]
            + money["total_tax"]
            + money["total_shipping_price"]
            - money["total_discounts"]
        )
        assert (lhs == rhs).all(), suffix
        assert (money["total_refunded"] <= money["total_price"]).all()
        lines = (
            world["order_line_items"]
            .group_by("order_id")
            .agg(_cents(f"discounted_total{suffix}").sum().alias("lines"))
            .join(
                orders.select(
                    pl.col("id").alias("order_id"), money["subtotal_price"], money["total_discounts"]
                ),
                on="order_id",
            )
        )
        assert (lines["lines"] == lines["subtotal_price"] - lines["total_discounts"]).all(), suffix
    refunds = world["refunds"].group_by("order_id").agg(_cents("total_refunded").sum().alias("refunded"))
    joined = orders.select(
        pl.col("id").alias("order_id"), _cents("total_refunded").alias("order_refunded")
    ).join(refunds, on="order_id", how="left")
    assert (joined["order_refunded"] == joined["refunded"].fill_null(0)).all()
    # Money strings have exactly two decimals.
    assert orders["total_price"].str.contains(r"^\d+\.\d{2}$").all()


def test_presentment_is_shop_amount_times_rate(world: World_) -> None:
    orders = world["orders"].with_columns(
        rate=pl.col("presentment_currency_code").replace_strict(gen_names.USD_RATES)
        / pl.col("currency_code").replace_strict(gen_names.USD_RATES),
        shop_cents=_cents("total_price"),
        pres_cents=_cents("total_price_presentment"),
    )
    assert orders.filter(pl.col("presentment_currency_code") != pl.col("currency_code")).height > 0
    off = (orders["pres_cents"] - orders["shop_cents"] * orders["rate"]).abs()
    assert (off <= 5 + orders["shop_cents"] * 0.001).all()
    same = orders.filter(pl.col("presentment_currency_code") == pl.col("currency_code"))
    assert (same["total_price"] == same["total_price_presentment"]).all()


def test_statuses_are_consistent_with_refunds_and_cancellations(world: World_) -> None:
    orders = world["orders"]
    cancelled = orders.filter(pl.col("cancelled_at").is_not_null())
    assert cancelled.height > 0 and cancelled["cancel_reason"].null_count() == 0
    assert set(cancelled["financial_status"].unique()) <= {"REFUNDED", "VOIDED"}
    assert (
        orders.filter(pl.col("cancelled_at").is_null())["cancel_reason"].null_count()
        == orders.filter(pl.col("cancelled_at").is_null()).height
    )
    refunded = orders.with_columns(r=_cents("total_refunded"), t=_cents("total_price"))
    assert (
        refunded.filter(pl.col("financial_status") == "REFUNDED")["r"]
        == refunded.filter(pl.col("financial_status") == "REFUNDED")["t"]
    ).all()
    partial = refunded.filter(pl.col("financial_status") == "PARTIALLY_REFUNDED")
    assert partial.height > 0 and ((partial["r"] > 0) & (partial["r"] < partial["t"])).all()
    assert (
        refunded.filter(pl.col("financial_status").is_in(["PAID", "PENDING", "AUTHORIZED", "VOIDED"]))["r"]
        == 0
    ).all()
    assert orders["test"].sum() > 0
    assert orders["presentment_currency_code"].n_unique() >= 3


def test_history_spans_years_with_recent_orders(world: World_) -> None:
    created = world["orders"]["created_at"]
    assert created.max() <= DEFAULT_NOW
    recent = (created >= DEFAULT_NOW - timedelta(days=60)).sum()
    old = (created < DEFAULT_NOW - timedelta(days=365)).sum()
    assert recent > 0.03 * len(created)
    assert old > 0.3 * len(created)
    assert created.min() >= DEFAULT_NOW - timedelta(days=3 * 366)


def test_customer_phones_are_valid_e164_for_their_country(world: World_) -> None:
    customers = world["customers"].filter(pl.col("phone").is_not_null())
    assert customers.height > 0.4 * world["customers"].height
    shop_country = dict(world["shops"].select("shop", "country_code").iter_rows())
    local = 0
    for shop, phone in customers.select("shop", "phone").iter_rows():
        parsed = phonenumbers.parse(phone)
        assert phonenumbers.is_valid_number(parsed), phone
        assert phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == phone
        local += phonenumbers.region_code_for_number(parsed) == shop_country[shop]
    # Most customers are local; shoppers from the other markets keep their own numbers.
    assert 0.6 < local / customers.height < 1.0


def test_guest_national_phones_parse_to_the_persons_number(world: World_) -> None:
    truth = world["truth"]
    shops = world["shops"].select("shop", "country_code")
    guests = (
        world["orders"]
        .filter(
            pl.col("customer_id").is_null()
            & pl.col("phone").is_not_null()
            & ~pl.col("phone").str.starts_with("+")
        )
        .join(shops, on="shop")
    )
    assert guests.height > 0
    for phone, region in guests.select("phone", "country_code").head(300).iter_rows():
        parsed = phonenumbers.parse(phone, region)
        assert phonenumbers.is_valid_number(parsed), (phone, region)
    # The same person's customer record, where it has a phone, holds that number in E.164.
    e164 = guests.with_columns(
        e164=pl.struct("phone", "country_code").map_elements(
            lambda r: phonenumbers.format_number(
                phonenumbers.parse(r["phone"], r["country_code"]), phonenumbers.PhoneNumberFormat.E164
            ),
            return_dtype=pl.String,
        )
    ).join(
        truth.filter(pl.col("record_type") == "order"), left_on=["shop", "id"], right_on=["shop", "record_id"]
    )
    cust = world["customers"].join(
        truth.filter(pl.col("record_type") == "customer"),
        left_on=["shop", "id"],
        right_on=["shop", "record_id"],
    )
    matched = e164.join(cust.select("person_id", pl.col("phone").alias("cphone")), on="person_id").filter(
        pl.col("cphone").is_not_null()
    )
    assert matched.height > 0
    # Households share phones, so a person's number usually (not always) is their own.
    assert (matched["e164"] == matched["cphone"]).mean() > 0.8


def test_truth_covers_every_record_once(world: World_) -> None:
    truth = world["truth"]
    assert truth.select("record_type", "shop", "record_id").is_unique().all()
    assert truth["person_id"].null_count() == 0
    for record_type, table in [
        ("customer", "customers"),
        ("order", "orders"),
        ("checkout", "abandoned_checkouts"),
    ]:
        ids = truth.filter(pl.col("record_type") == record_type).select("shop", "record_id")
        rows = world[table].select("shop", pl.col("id").alias("record_id"))
        assert ids.sort(ids.columns).equals(rows.sort(rows.columns)), table


def test_customers_overlap_across_stores_and_have_duplicates_within(world: World_) -> None:
    cust = world["truth"].filter(pl.col("record_type") == "customer")
    per_person = cust.group_by("person_id").agg(
        pl.col("shop").n_unique().alias("shops"), pl.len().alias("records")
    )
    assert (per_person["shops"] > 1).mean() > 0.1
    assert (per_person["shops"] == 3).sum() > 0
    assert (per_person["records"] > per_person["shops"]).sum() > 0  # second account in one shop
    per_shop = cust.group_by("shop").len()["len"]
    assert per_shop.min() > 1200 and per_shop.max() < 1800


def test_guests_are_people_too(world: World_) -> None:
    truth = world["truth"]
    guest_orders = world["orders"].filter(pl.col("customer_id").is_null())
    assert 0.05 < guest_orders.height / world["orders"].height < 0.25
    assert (guest_orders["email"].is_not_null() | guest_orders["phone"].is_not_null()).all()
    customers = set(truth.filter(pl.col("record_type") == "customer")["person_id"].to_list())
    guest_people = set(
        guest_orders.join(truth, left_on=["shop", "id"], right_on=["shop", "record_id"])[
            "person_id"
        ].to_list()
    )
    assert guest_people & customers  # registered persons sometimes check out as guests
    assert guest_people - customers  # and some persons never register
    checkouts = world["abandoned_checkouts"]
    assert checkouts["customer_id"].null_count() > 0 and checkouts["customer_id"].is_not_null().sum() > 0
    assert checkouts["completed_at"].is_not_null().sum() > 0


def _person_customers(world: World_) -> pl.DataFrame:
    truth = world["truth"].filter(pl.col("record_type") == "customer")
    return world["customers"].join(truth, left_on=["shop", "id"], right_on=["shop", "record_id"])


def test_hard_negatives_exist(world: World_) -> None:
    cust = _person_customers(world)
    orders = world["orders"].join(
        world["truth"].filter(pl.col("record_type") == "order"),
        left_on=["shop", "id"],
        right_on=["shop", "record_id"],
    )
    phones = pl.concat(
        [
            cust.select("phone", "person_id"),
            orders.filter(pl.col("phone").str.starts_with("+")).select("phone", "person_id"),
        ]
    ).drop_nulls()
    shared = (
        phones.group_by("phone")
        .agg(pl.col("person_id").n_unique().alias("persons"))
        .filter(pl.col("persons") > 1)
    )
    assert shared.height > 0
    addresses = cust.filter(pl.col("default_address_id").is_not_null()).join(
        world["customer_addresses"].select(pl.col("id").alias("default_address_id"), "address1", "zip"),
        on="default_address_id",
    )
    same_address = addresses.group_by("address1", "zip").agg(
        pl.col("person_id").n_unique().alias("persons"),
        pl.col("last_name").str.strip_chars().str.to_lowercase().n_unique(),
    )
    assert same_address.filter(pl.col("persons") > 1).height > 0
    john_smiths = cust.filter((pl.col("first_name") == "John") & (pl.col("last_name") == "Smith"))
    assert john_smiths["person_id"].n_unique() >= 5
    neither = cust.filter(pl.col("email").is_null() & pl.col("phone").is_null())
    assert neither.height > 0


def test_same_person_appears_with_noisy_variants(world: World_) -> None:
    cust = _person_customers(world)
    emails = cust["email"].drop_nulls()
    assert emails.str.contains(r"\+").any()  # plus tags
    assert (emails != emails.str.strip_chars()).any()  # whitespace
    assert (emails != emails.str.to_lowercase()).any()  # case
    multi = cust.group_by("person_id").agg(
        pl.col("first_name").drop_nulls().str.strip_chars().str.to_lowercase().n_unique().alias("firsts"),
        pl.col("email").drop_nulls().str.strip_chars().str.to_lowercase().n_unique().alias("emails"),
    )
    assert (multi["firsts"] > 1).sum() > 0  # nicknames / typos
    assert (multi["emails"] > 1).sum() > 0  # work vs personal, typos, aliases
    addresses = world["customer_addresses"]["address1"]
    assert addresses.str.ends_with(" St").any() and addresses.str.ends_with(" Street").any()
    movers = world["customer_addresses"].group_by("customer_id").len().filter(pl.col("len") > 1)
    assert movers.height > 0


def test_consent_follows_contact_points(world: World_) -> None:
    cust = world["customers"]
    no_email = cust.filter(pl.col("email").is_null())
    assert no_email["email_consent_state"].null_count() == no_email.height
    no_phone = cust.filter(pl.col("phone").is_null())
    assert no_phone["sms_consent_state"].null_count() == no_phone.height
    with_email = cust.filter(pl.col("email").is_not_null())
    assert set(with_email["email_consent_state"].unique()) == {
        "SUBSCRIBED",
        "NOT_SUBSCRIBED",
        "UNSUBSCRIBED",
        "PENDING",
    }
    subscribed = with_email.filter(pl.col("email_consent_state") == "SUBSCRIBED")
    assert subscribed["email_consent_updated_at"].null_count() == 0
    assert (cust["updated_at"] >= cust["created_at"]).all()


def test_metafields_live_in_custom_namespace(world: World_) -> None:
    metafields = world["metafields"]
    assert metafields["namespace"].unique().to_list() == ["custom"]
    assert metafields.select("owner_id", "key").is_unique().all()
    assert metafields.height < 0.1 * world["customers"].height


def test_engagement_events_key_on_real_contacts(world: World_, tmp_path: Path) -> None:
    events = world["engagement_events"]
    assert set(events["type"].unique()) == {
        "email_sent",
        "email_delivered",
        "email_open",
        "email_click",
        "email_unsubscribe",
        "sms_sent",
        "sms_click",
        "sms_inbound",
    }
    known = set(world["customers"]["email"].drop_nulls().str.strip_chars().str.to_lowercase().to_list())
    emails = events["email"].drop_nulls()
    assert emails.is_in(list(known)).mean() > 0.95
    assert not emails.is_in(list(known)).all()  # strangers too
    bodies = set(events.filter(pl.col("type") == "sms_inbound")["body"].to_list())
    assert {"STOP", " stop ", "START"} <= bodies
    path = write_engagement(world, tmp_path / "events.jsonl")
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == set(model.ENGAGEMENT_EVENTS)
    assert datetime.fromisoformat(first["occurred_at"].replace("Z", "+00:00")).tzinfo is not None


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_truth_round_trips(world: World_, tmp_path: Path, suffix: str) -> None:
    path = write_truth(world, tmp_path / f"truth{suffix}")
    back = pl.read_parquet(path) if suffix == ".parquet" else pl.read_csv(path, schema=model.TRUTH)
    assert back.equals(world["truth"])


def test_world_loads_into_devstore_state(world: World_) -> None:
    state = World.from_tables(world)
    assert set(state.shops) == set(world["shops"]["handle"].to_list())
    shop = next(iter(state.shops.values()))
    assert len(shop.records["customers"]) == world["customers"].filter(pl.col("shop") == shop.domain).height


def test_explicit_now_and_plans() -> None:
    now = datetime(2025, 3, 1, tzinfo=UTC)
    small = generate_world(stores=1, customers=50, seed=1, now=now, plans=["plus"])
    assert small["shops"]["plan"].to_list() == ["plus"]
    assert small["orders"]["created_at"].max() <= now
    assert small["customers"].height > 30


def test_orders_built_in_slices_stay_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    from devstore import generator

    monkeypatch.setattr(generator, "ORDER_SLICE", 301)  # many slice boundaries in a small world
    sliced = generator.generate_world(stores=2, customers=400, seed=3)
    orders, items, refunds = sliced["orders"], sliced["order_line_items"], sliced["refunds"]
    assert orders.height > 3 * 301
    for frame in (orders, items, refunds):
        assert frame["id"].n_unique() == frame.height
        assert frame["id"].is_sorted()
    assert orders["created_at"].is_sorted()
    assert items["order_id"].is_in(orders["id"].implode()).all()
    assert refunds["order_id"].is_in(orders["id"].implode()).all()
    assert orders.select("shop", "name").is_unique().all()
