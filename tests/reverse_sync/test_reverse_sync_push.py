"""Reverse sync end to end against the devstore over real HTTP; its write log is the witness."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import polars as pl
import pytest
from ops_support import Store

from pipelines import sync_log
from pipelines.shopify.client import ShopifyClient
from pipelines.shopify.push import PushScopeMissing, push_shop
from transforms.consent import resolve_consent
from transforms.reverse_sync import plan_push, split_echoes

ALL = {"email_consent", "sms_consent", "engagement", "profile"}


def writes(store: Store, since: int = 0) -> list[dict[str, Any]]:
    """Write-log entries of mutations (not control calls), from position ``since``."""
    entries = store.control("GET", f"/shops/{store.shop.handle}/write_log?since={since}").json()
    return [e for e in entries if not e["operation"].startswith("control.")]


def log_len(store: Store) -> int:
    return len(store.control("GET", f"/shops/{store.shop.handle}/write_log").json())


def customers_frame(store: Store) -> pl.DataFrame:
    """The warehouse's view of Shopify customers, built from the devstore records."""
    rows = []
    with store.shop.lock:
        addressed = {cid for cid, rows in store.shop.children["customer_addresses"].items() if rows}
        for c in store.shop.records["customers"].values():
            rows.append(
                {
                    "shop": store.shop.domain,
                    "customer_id": c["id"],
                    "email": c.get("email"),
                    "phone": c.get("phone"),
                    "first_name": c.get("first_name"),
                    "last_name": c.get("last_name"),
                    "has_address": c["id"] in addressed,
                }
            )
    return pl.DataFrame(rows)


def pick(store: Store, *, email: bool = True, phone: bool | None = None, n: int = 1) -> list[int]:
    out = []
    with store.shop.lock:
        for c in sorted(store.shop.records["customers"].values(), key=lambda r: r["id"]):
            if bool(c.get("email")) != email or (phone is not None and bool(c.get("phone")) != phone):
                continue
            out.append(c["id"])
    assert len(out) >= n, "the generated shop lacks customers of that shape"
    return out[:n]


def shop_now(store: Store) -> datetime:
    return store.shop.clock.now().astimezone(UTC)


def consent_rows(store: Store, ids: list[int], channel: str, state: str, at: datetime) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "shop": [store.shop.domain] * len(ids),
            "customer_id": ids,
            "channel": [channel] * len(ids),
            "state": [state] * len(ids),
            "opt_in_level": ["SINGLE_OPT_IN"] * len(ids),
            "updated_at": [at] * len(ids),
            "source": ["engagement"] * len(ids),
        }
    )


def engagement_rows(store: Store, ids: list[int], at: datetime, segment: str = "Champions") -> pl.DataFrame:
    n = len(ids)
    return pl.DataFrame(
        {
            "shop": [store.shop.domain] * n,
            "customer_id": ids,
            "last_email_open_at": [at] * n,
            "last_email_click_at": [at] * n,
            "last_sms_click_at": [None] * n,
            "rfm_segment": [segment] * n,
            "messages_sent": list(range(1, n + 1)),
        }
    )


class Runner:
    """plan (warehouse read) → push (network) → record (warehouse write), as the assets do it."""

    def __init__(self, store: Store, client: ShopifyClient, path: str) -> None:
        self.store, self.client, self.path, self.runs = store, client, path, 0

    def __call__(self, toggles: set[str], **frames: pl.DataFrame) -> tuple[pl.DataFrame, Any]:
        self.runs += 1
        now = shop_now(self.store)
        with duckdb.connect(self.path) as con:
            state = sync_log.read_pushed_state(con)
            dead = sync_log.read_dead_letters(con)
        frames.setdefault("customers", customers_frame(self.store))
        plan, _skips = plan_push(
            toggles={self.store.shop.domain: toggles},
            as_of=now,
            pushed_state=state,
            dead_letters=dead,
            **frames,
        )
        report = push_shop(self.client, plan, run_id=f"run{self.runs}", now=now)
        with duckdb.connect(self.path) as con:
            sync_log.record(con, report.outcomes, run_id=f"run{self.runs}", at=now)
        return plan, report


@pytest.fixture
def run(store: Store, client: ShopifyClient, tmp_path: Any) -> Runner:
    return Runner(store, client, str(tmp_path / "wh.duckdb"))


def test_toggles_off_nothing_written(store: Store, run: Runner) -> None:
    now = shop_now(store) - timedelta(hours=1)
    ids = pick(store, n=3)
    before = log_len(store)
    plan, report = run(
        set(),
        consent=consent_rows(store, ids, "email", "UNSUBSCRIBED", now),
        engagement=engagement_rows(store, ids, now),
    )
    assert plan.is_empty() and report.outcomes.is_empty()
    assert writes(store, before) == []


def test_email_consent_end_to_end_and_second_run_writes_nothing(store: Store, run: Runner) -> None:
    at = shop_now(store) - timedelta(hours=1)
    ids = pick(store, n=3)
    no_email = pick(store, email=False, n=1)
    before = log_len(store)
    consent = consent_rows(store, ids + no_email, "email", "UNSUBSCRIBED", at)
    plan, report = run({"email_consent"}, consent=consent)
    assert plan.height == 3  # the customer without email is skipped, not an error
    assert report.count("written", "email_consent") == 3
    log = writes(store, before)
    consent_writes = [e for e in log if e["operation"] == "customerEmailMarketingConsentUpdate"]
    assert len(consent_writes) == 3 and all(e["outcome"] == "ok" for e in consent_writes)
    # the original consentUpdatedAt was sent, not "now"
    with store.shop.lock:
        for cid in ids:
            c = store.shop.records["customers"][cid]
            assert c["email_consent_state"] == "UNSUBSCRIBED"
            assert c["email_consent_updated_at"] == at.replace(microsecond=0)
    # every write also set the origin metafield
    assert any(e["operation"] == "metafieldsSet" for e in log)
    mark = log_len(store)
    plan2, report2 = run({"email_consent"}, consent=consent)
    assert plan2.is_empty() and report2.outcomes.is_empty()
    assert writes(store, mark) == []


def test_missing_email_and_shared_phone_are_skipped_with_reason(store: Store) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    customers = pl.DataFrame(
        {
            "shop": ["s"] * 4,
            "customer_id": [1, 2, 3, 4],
            "email": [None, "a@x.io", "b@x.io", "c@x.io"],
            "phone": [None, "+15550001", "+15550001", "+15550002"],
        }
    )
    consent = pl.concat(
        [
            pl.DataFrame(
                {
                    "shop": "s",
                    "customer_id": [1, 2],
                    "channel": "email",
                    "state": "UNSUBSCRIBED",
                    "updated_at": at,
                    "source": "engagement",
                }
            ),
            pl.DataFrame(
                {
                    "shop": "s",
                    "customer_id": [2, 3, 4],
                    "channel": "sms",
                    "state": "UNSUBSCRIBED",
                    "updated_at": at,
                    "source": "engagement",
                }
            ),
        ]
    )
    plan, skips = plan_push(
        toggles={"s": {"email_consent", "sms_consent"}}, as_of=at, consent=consent, customers=customers
    )
    assert sorted(zip(plan["kind"], plan["customer_id"], strict=True)) == [
        ("email_consent", 2),
        ("sms_consent", 4),
    ]
    reasons = {(r["kind"], r["customer_id"]): r["reason"] for r in skips.iter_rows(named=True)}
    assert reasons == {
        ("email_consent", 1): "no email address",
        ("sms_consent", 2): "no phone number of its own",
        ("sms_consent", 3): "no phone number of its own",
    }


def test_sms_consent_end_to_end(store: Store, run: Runner) -> None:
    at = shop_now(store) - timedelta(minutes=30)
    ids = pick(store, phone=True, n=2)
    before = log_len(store)
    _plan, report = run({"sms_consent"}, consent=consent_rows(store, ids, "sms", "UNSUBSCRIBED", at))
    assert report.count("written", "sms_consent") == 2
    ops = [e["operation"] for e in writes(store, before)]
    assert ops.count("customerSmsMarketingConsentUpdate") == 2
    with store.shop.lock:
        assert all(store.shop.records["customers"][c]["sms_consent_state"] == "UNSUBSCRIBED" for c in ids)


def test_engagement_metafields_batched_25_per_call(store: Store, run: Runner) -> None:
    at = shop_now(store) - timedelta(days=1)
    ids = pick(store, n=10)  # 10 customers x (4 keys + origin) = 50 elements = 2 calls
    plan, report = run({"engagement"}, engagement=engagement_rows(store, ids, at))
    assert plan.height == 40
    assert report.calls["push_metafields_set"] == 2
    assert report.count("written", "engagement") == 40
    with store.shop.lock:
        mfs = {
            (m["key"], m["type"])
            for m in store.shop.children["metafields"][ids[0]]
            if m["namespace"] == "shopsync"
        }
    assert ("rfm_segment", "single_line_text_field") in mfs and ("origin", "json") in mfs
    assert ("last_email_open_at", "date_time") in mfs and ("messages_sent_total", "number_integer") in mfs
    # only the changed segment goes out next time
    mark = log_len(store)
    plan2, report2 = run(
        {"engagement"},
        engagement=engagement_rows(store, ids, at).with_columns(
            pl.when(pl.col("customer_id") == ids[0])
            .then(pl.lit("At risk"))
            .otherwise(pl.col("rfm_segment"))
            .alias("rfm_segment")
        ),
    )
    assert plan2.height == 1 and plan2["key"][0] == "rfm_segment"
    assert report2.count("written", "engagement") == 1
    assert [e["operation"] for e in writes(store, mark)] == ["metafieldsSet"]


def test_one_bad_element_is_split_out_and_the_rest_go_through(store: Store, run: Runner) -> None:
    at = shop_now(store) - timedelta(days=1)
    ids = pick(store, n=3)
    frame = engagement_rows(store, ids, at).with_columns(
        pl.when(pl.col("customer_id") == ids[1])
        .then(pl.lit("two\nlines"))
        .otherwise(pl.col("rfm_segment"))
        .alias("rfm_segment")
    )
    before = log_len(store)
    _plan, report = run({"engagement"}, engagement=frame)
    failed = report.outcomes.filter(pl.col("outcome") == "failed")
    assert failed.select("customer_id", "key").rows() == [(ids[1], "rfm_segment")]
    assert report.count("written", "engagement") == 11
    outcomes = [e["outcome"] for e in writes(store, before) if e["operation"] == "metafieldsSet"]
    assert outcomes[0] != "ok" and "ok" in outcomes  # the atomic batch was refused, then split


def test_stale_compare_digest_rereads_and_replans(store: Store, run: Runner) -> None:
    at = shop_now(store) - timedelta(days=1)
    ids = pick(store, n=1)
    run({"engagement"}, engagement=engagement_rows(store, ids, at))
    # someone else changes our metafield behind our back
    with store.shop.lock:
        for m in store.shop.children["metafields"][ids[0]]:
            if m["key"] == "rfm_segment":
                m["value"] = "Edited in admin"
    _plan, report = run({"engagement"}, engagement=engagement_rows(store, ids, at, segment="Loyal"))
    assert report.count("written", "engagement") == 1
    with store.shop.lock:
        value = next(
            m["value"] for m in store.shop.children["metafields"][ids[0]] if m["key"] == "rfm_segment"
        )
    assert value == "Loyal"
    assert report.calls.get("push_metafields_read") == 1


def test_missing_scope_reconnect_required_and_no_writes(store: Store, run: Runner) -> None:
    store.control("POST", f"/shops/{store.shop.handle}/scopes/remove", {"scope": "write_customers"})
    at = shop_now(store) - timedelta(hours=1)
    before = log_len(store)
    with pytest.raises(PushScopeMissing, match="Reconnect"):
        run({"email_consent"}, consent=consent_rows(store, pick(store, n=2), "email", "UNSUBSCRIBED", at))
    assert writes(store, before) == []


def test_faults_mid_push_are_retried_without_duplicate_writes(store: Store, run: Runner) -> None:
    at = shop_now(store) - timedelta(hours=1)
    ids = pick(store, n=12)
    store.control("PUT", "/faults", {"seed": 5, "rate_500": 0.2, "reset_rate": 0.2, "kinds": ["graphql"]})
    before = log_len(store)
    _plan, report = run(
        {"email_consent", "engagement"},
        consent=consent_rows(store, ids, "email", "UNSUBSCRIBED", at),
        engagement=engagement_rows(store, ids, at),
    )
    store.control("DELETE", "/faults")
    assert report.count("failed") == 0
    log = [e for e in writes(store, before) if e["outcome"] == "ok"]
    consent_targets = [e["target"] for e in log if e["operation"] == "customerEmailMarketingConsentUpdate"]
    assert sorted(consent_targets) == sorted(set(consent_targets)) and len(consent_targets) == 12
    written_keys = [
        (e["target"], m["key"])
        for e in log
        if e["operation"] == "metafieldsSet"
        for m in e["payload"]["metafields"]
    ]
    assert len(written_keys) == len(set(written_keys)) == 12 * 5
    faults = store.control("GET", "/faults").json()
    assert faults  # the profile was live during the push


def test_echo_of_our_own_write_is_recognised(store: Store, run: Runner, client: ShopifyClient) -> None:
    at = shop_now(store) - timedelta(hours=1)
    ids = pick(store, n=2)
    run({"email_consent"}, consent=consent_rows(store, ids[:1], "email", "UNSUBSCRIBED", at))

    def inbound() -> pl.DataFrame:
        rows = []
        for cid in ids:
            data = client.execute(
                'query($id: ID!) { customer(id: $id) { updatedAt metafield(namespace: "shopsync", key: "origin") { value } } }',
                {"id": f"gid://shopify/Customer/{cid}"},
            )["customer"]
            origin = json.loads(data["metafield"]["value"])["write_id"] if data["metafield"] else None
            rows.append(
                {
                    "shop": store.shop.domain,
                    "customer_id": cid,
                    "updated_at": datetime.fromisoformat(data["updatedAt"].replace("Z", "+00:00")),
                    "origin_write_id": origin,
                }
            )
        return pl.DataFrame(rows)

    with duckdb.connect(run.path) as con:
        state = sync_log.read_pushed_state(con)
    fresh, echoes = split_echoes(inbound(), state)
    assert echoes["customer_id"].to_list() == [ids[0]] and fresh["customer_id"].to_list() == [ids[1]]
    # a later change by someone else is not an echo any more
    # (Shopify timestamps have whole seconds: the staff edit comes a little later)
    store.control("POST", "/clock/shift", {"seconds": 2})
    client.execute(
        "mutation($input: CustomerInput!) { customerUpdate(input: $input) { userErrors { message } } }",
        {"input": {"id": f"gid://shopify/Customer/{ids[0]}", "note": "edited by staff"}},
    )
    fresh2, echoes2 = split_echoes(inbound(), state)
    assert echoes2.is_empty() and sorted(fresh2["customer_id"].to_list()) == sorted(ids)


def test_unsubscribe_then_older_subscribed_from_shopify_stays_unsubscribed(store: Store, run: Runner) -> None:
    t_unsub = shop_now(store) - timedelta(hours=1)
    cid = pick(store, n=1)[0]
    observations = consent_rows(store, [cid], "email", "UNSUBSCRIBED", t_unsub).with_columns(
        pl.lit("evt-1").alias("source_ref")
    )
    run({"email_consent"}, consent=resolve_consent(observations))
    # Shopify later reports an OLDER subscribed state (a late webhook, a stale app)
    older = observations.with_columns(
        pl.lit("SUBSCRIBED").alias("state"),
        pl.lit(t_unsub - timedelta(days=2)).alias("updated_at"),
        pl.lit("shopify").alias("source"),
        pl.lit("webhook-9").alias("source_ref"),
    )
    resolved = resolve_consent(pl.concat([observations, older]))
    assert resolved["state"].to_list() == ["UNSUBSCRIBED"]
    mark = log_len(store)
    plan, _ = run({"email_consent"}, consent=resolved)
    assert plan.is_empty() and writes(store, mark) == []
    # and Shopify itself refuses the older subscribed decision
    with store.shop.lock:
        assert store.shop.records["customers"][cid]["email_consent_state"] == "UNSUBSCRIBED"


def test_profile_fill_writes_only_empty_fields_and_adds_address(store: Store, run: Runner) -> None:
    cid = pick(store, n=1)[0]
    with store.shop.lock:
        c = store.shop.records["customers"][cid]
        c["first_name"] = None
        keep_last = c.get("last_name")
        store.shop.children["customer_addresses"][cid] = []
        c["default_address_id"] = None
    profile = pl.DataFrame(
        {
            "shop": [store.shop.domain],
            "customer_id": [cid],
            "first_name": ["Ada"],
            "last_name": ["Other"],
            "address1": ["1 Main St"],
            "city": ["Springfield"],
            "zip": ["12345"],
            "country_code": ["US"],
        }
    )
    before = log_len(store)
    plan, report = run({"profile"}, profile=profile)
    assert plan.height == 1 and report.count("written", "profile") == 1
    ops = [e["operation"] for e in writes(store, before)]
    assert "customerUpdate" in ops and "customerAddressCreate" in ops
    with store.shop.lock:
        c = store.shop.records["customers"][cid]
        assert c["first_name"] == "Ada" and c.get("last_name") == keep_last
    mark = log_len(store)
    plan2, _ = run({"profile"}, profile=profile)
    assert plan2.is_empty() and writes(store, mark) == []


def test_consent_failure_names_the_customer_and_is_retried_later(
    store: Store, run: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    at = shop_now(store) - timedelta(hours=1)
    ok, gone = pick(store, n=2)
    consent = consent_rows(store, [ok, gone], "email", "UNSUBSCRIBED", at)
    frame = customers_frame(store)
    with store.shop.lock:  # deleted on Shopify after the warehouse last saw it
        del store.shop.records["customers"][gone]
    with caplog.at_level("ERROR", logger="shopsync.shopify.push"):
        _plan, report = run({"email_consent"}, consent=consent, customers=frame)
    assert report.consent_failures == [(gone, "Customer not found")]
    assert any(str(gone) in r.getMessage() for r in caplog.records)
    with duckdb.connect(run.path) as con:
        state = sync_log.read_pushed_state(con).filter(pl.col("customer_id") == gone)
    assert state["attempts"].to_list() == [1] and state["next_attempt_at"][0] is not None


def test_planner_pushes_only_settable_states_not_from_shopify() -> None:
    at = datetime(2026, 5, 1, tzinfo=UTC)
    customers = pl.DataFrame({"shop": "s", "customer_id": [1, 2, 3], "email": ["a@x.io", "b@x.io", "c@x.io"]})
    consent = pl.DataFrame(
        {
            "shop": "s",
            "customer_id": [1, 2, 3],
            "channel": "email",
            "state": ["UNSUBSCRIBED", "NOT_SUBSCRIBED", "SUBSCRIBED"],
            "updated_at": at,
            "source": ["engagement", "engagement", "shopify"],
        }
    )
    plan, skips = plan_push(toggles={"s": {"email_consent"}}, as_of=at, consent=consent, customers=customers)
    assert plan["customer_id"].to_list() == [1]
    payload = json.loads(plan["payload"][0])
    assert payload == {
        "opt_in_level": "SINGLE_OPT_IN",
        "state": "UNSUBSCRIBED",
        "updated_at": "2026-05-01T00:00:00Z",
    }
    assert skips["reason"].to_list() == ["state NOT_SUBSCRIBED is not settable on Shopify"]
    # a toggle for another kind or another shop changes nothing here
    other, _ = plan_push(
        toggles={"s": {"sms_consent"}, "t": {"email_consent"}}, as_of=at, consent=consent, customers=customers
    )
    assert other.is_empty()


def test_profile_fill_rereads_and_never_overwrites(store: Store, run: Runner) -> None:
    cid = pick(store, n=1)[0]
    frame = customers_frame(store).with_columns(  # the warehouse still thinks the name is empty
        pl.when(pl.col("customer_id") == cid).then(None).otherwise(pl.col("first_name")).alias("first_name")
    )
    with store.shop.lock:
        store.shop.records["customers"][cid]["first_name"] = "Set in admin"
    profile = pl.DataFrame({"shop": [store.shop.domain], "customer_id": [cid], "first_name": ["Ada"]})
    before = log_len(store)
    plan, report = run({"profile"}, profile=profile, customers=frame)
    assert plan.height == 1 and report.count("unchanged", "profile") == 1
    assert [e["operation"] for e in writes(store, before)] == []
    with store.shop.lock:
        assert store.shop.records["customers"][cid]["first_name"] == "Set in admin"


def test_engagement_from_events_matches_normalised_keys_across_stores() -> None:
    from transforms.reverse_sync import engagement_from_events
    from transforms.warehouse_inputs import engagement_frame

    t = datetime(2026, 3, 1, tzinfo=UTC)
    raw = pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(7)],
            "occurred_at": [t, t + timedelta(days=1), t, t + timedelta(days=2), t, t, t + timedelta(days=3)],
            "type": [
                "email_open",
                "email_open",
                "email_sent",
                "sms_click",
                "sms_sent",
                "email_sent",
                "email_click",
            ],
            "email": [" A@x.io", "a@x.io", "a@x.io", None, None, "a@x.io", "a@x.io"],
            # the same number three ways: national, E.164, with punctuation
            "phone": [None, None, None, "(415) 555-0101", "+14155550101", None, None],
            # e5 and e6 name a store: they count there only; the rest count in every store
            "shop": ["s", None, None, None, None, "t", "s"],
            "body": [None] * 7,
        },
        schema_overrides={"occurred_at": pl.Datetime("us", "UTC")},
    )
    events = engagement_frame(raw, "US")
    customers = pl.DataFrame(
        {
            "shop": ["s", "s", "t"],
            "customer_id": [1, 2, 3],
            "email_norm": ["a@x.io", None, "a@x.io"],
            "phone_e164": [None, "+14155550101", None],
        }
    )
    metrics = pl.DataFrame({"shop": "s", "customer_id": [1], "segment": ["Champions"]})
    out = engagement_from_events(events, customers, metrics).sort("shop", "customer_id")
    assert out.select("shop", "customer_id").rows() == [("s", 1), ("s", 2), ("t", 3)]
    assert out["last_email_open_at"].to_list() == [t + timedelta(days=1), None, t + timedelta(days=1)]
    assert out["last_email_click_at"].to_list() == [t + timedelta(days=3), None, None]
    assert out["last_sms_click_at"].to_list() == [None, t + timedelta(days=2), None]
    assert out["messages_sent"].to_list() == [1, 1, 2]
    assert out["rfm_segment"].to_list() == ["Champions", None, None]
