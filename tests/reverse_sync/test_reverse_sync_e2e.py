"""Reverse sync through the real pipeline: registry toggles, a warehouse the pipeline built, the Dagster
sensors, schedules and jobs, and the devstore over HTTP (its write log is the witness)."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import phonenumbers
import pytest
from reverse_support import Pipeline

from orchestration.defs.reverse_sync.definitions import profile_fill_schedule

EMAIL_OP = "customerEmailMarketingConsentUpdate"
SMS_OP = "customerSmsMarketingConsentUpdate"


def _customers(p: Pipeline) -> list[dict[str, Any]]:
    with p.shop.lock:
        return [dict(c) for c in sorted(p.shop.records["customers"].values(), key=lambda c: c["id"])]


def _gid(cid: int) -> str:
    return f"gid://shopify/Customer/{cid}"


def _national(e164: str) -> str:
    """A phone as a person types it: (415) 555-0101 for +14155550101."""
    return phonenumbers.format_number(phonenumbers.parse(e164), phonenumbers.PhoneNumberFormat.NATIONAL)


def _unused_phone(p: Pipeline) -> str:
    taken = {c.get("phone") for c in _customers(p)}
    for n in range(100, 999):
        candidate = f"+1415555{n:04d}"
        if candidate not in taken and phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
            return candidate
    raise AssertionError("no free phone number")


def _drop(p: Pipeline, name: str, lines: list[str]) -> None:
    folder = p.paths.landing_path / "_engagement"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    settled = time.time() - 10  # as if written a while ago: the sensor picks up settled files only
    os.utime(path, (settled, settled))


def _event(event_id: str, kind: str, **fields: Any) -> str:
    at = fields.pop("at", datetime.now(UTC) - timedelta(minutes=5))
    return json.dumps({"event_id": event_id, "occurred_at": at.isoformat(), "type": kind, **fields})


@pytest.mark.slow  # a dozen in-process Dagster runs over a synced store (~30 s)
def test_unsubscribe_and_stop_reach_shopify_through_the_sensors(pipeline: Pipeline) -> None:
    p = pipeline
    customers = _customers(p)
    by_email = next(c for c in customers if c.get("email") and c["email_consent_state"] == "SUBSCRIBED")
    by_phone = next(
        c
        for c in customers
        if c.get("phone") and c["sms_consent_state"] == "SUBSCRIBED" and c is not by_email
    )
    phoneless = next(c for c in customers if c.get("email") and not c.get("phone"))
    stranger = _unused_phone(p)
    p.registry.set_outbound_toggles(p.domain, {"email_consent": True, "sms_consent": True})

    _drop(
        p,
        "replies.jsonl",
        [
            _event("u1", "email_unsubscribe", email=f"  {by_email['email'].upper()} "),
            _event("s1", "sms_inbound", phone=_national(by_phone["phone"]), body=" stop "),
            _event("s2", "sms_inbound", phone=by_phone["phone"], body="HELP"),  # changes nothing
            _event("s3", "sms_inbound", phone=stranger, body="Opt  Out"),  # nobody has this phone yet
            '{"event_id": "bad", "type": "email_open"}',
        ],
    )
    feed = p.tick("engagement_feed_sensor")
    assert len(feed.run_requests) == 1 and feed.run_requests[0].run_key.startswith("engagement:")
    assert p.tick("engagement_feed_sensor", feed.cursor).run_requests == []  # asked once
    run = p.launch("engagement_feed", feed.run_requests[0])
    landed = run.asset_materializations_for_node("engagement__feed")[0].metadata
    assert (landed["events_landed"].value, landed["lines_quarantined"].value) == (4, 1)
    assert p.query("SELECT count(*) FROM engagement.events") == [(4,)]
    assert [
        f.name.split("-", 1)[1] for f in (p.paths.landing_path / "_engagement" / "processed").iterdir()
    ] == ["replies.jsonl"]
    # the same run recomputed consent: the audit names the store as having changes to push
    consent = p.tick("consent_push_sensor")
    assert [r.partition_key for r in consent.run_requests] == [p.domain]
    # keyed by what caused the change: the feed run, itself keyed by the file and its batch
    assert consent.run_requests[0].run_key == f"consent:{p.domain}:{feed.run_requests[0].run_key}"
    before = len(p.writes())
    p.launch("reverse_sync_consent", consent.run_requests[0])
    assert [e["target"] for e in p.writes(EMAIL_OP)] == [_gid(by_email["id"])]
    assert [e["target"] for e in p.writes(SMS_OP)] == [_gid(by_phone["id"])]
    with p.shop.lock:
        assert p.shop.records["customers"][by_email["id"]]["email_consent_state"] == "UNSUBSCRIBED"
        assert p.shop.records["customers"][by_phone["id"]]["sms_consent_state"] == "UNSUBSCRIBED"
    assert p.tick("consent_push_sensor", consent.cursor).run_requests == []
    pushed = len(p.writes())
    assert pushed - before == 4  # two consent writes, two origin metafields

    # the stranger's number is given to a customer (in the admin); the next sync and consent run
    # apply the STOP it sent earlier. (Set through the control API with the SMS consent Shopify
    # gives a new number: the devstore's customerUpdate leaves the opt-in level null, which its
    # own schema then refuses to serve.)
    p.devstore.control(
        "PATCH",
        f"/shops/{p.handle}/records/customers/{phoneless['id']}",
        {"phone": stranger, "sms_consent_state": "NOT_SUBSCRIBED", "sms_consent_opt_in_level": "UNKNOWN"},
    )
    p.sync_customers()
    refresh = p.run("intelligence_refresh")
    audit = refresh.asset_materializations_for_node("core__consent")
    assert any(m.metadata.get("pushable_shops") for m in audit)
    second = p.tick("consent_push_sensor", consent.cursor)
    assert [r.partition_key for r in second.run_requests] == [p.domain]
    result = p.launch("reverse_sync_consent", second.run_requests[0])
    assert [e["target"] for e in p.writes(SMS_OP)] == [_gid(by_phone["id"]), _gid(phoneless["id"])]
    with p.shop.lock:
        assert p.shop.records["customers"][phoneless["id"]]["sms_consent_state"] == "UNSUBSCRIBED"
    # nothing of the first push went out again; the sync brought back the versions our own writes
    # made, and they were recognised as echoes, counted once, not re-planned
    assert len(p.writes()) - pushed == 2  # one SMS consent write, one origin
    plan = result.asset_materializations_for_node("reverse_sync__plan")[0].metadata
    assert plan["inbound_echoes"].value == 2
    echoes = p.query("SELECT customer_id FROM sync.inbound_echoes ORDER BY 1")
    assert echoes == sorted([(by_email["id"],), (by_phone["id"],)])


@pytest.mark.slow  # in-process Dagster runs over a synced store (~30 s)
def test_engagement_and_profile_toggles_through_the_automation(pipeline: Pipeline) -> None:
    p = pipeline
    customers = _customers(p)
    engaged = [c for c in customers if c.get("email")][:3]
    texted = next(c for c in customers if c.get("phone") and c not in engaged)
    _drop(
        p,
        "engagement.csv",
        [
            "event_id,occurred_at,type,email,phone,shop,campaign,body",
            *[f"o{c['id']},2026-11-01T09:00:00Z,email_open,{c['email']},,,nov," for c in engaged],
            *[f"k{c['id']},2026-11-02T09:00:00Z,email_click,{c['email']},,,nov," for c in engaged],
            # no shop, national format: still this store's customer
            f"t1,2026-11-03T09:00:00Z,sms_click,,{_national(texted['phone'])},,nov,",
            f"t2,2026-11-03T08:00:00Z,sms_sent,,{texted['phone']},{p.domain},nov,",
        ],
    )
    feed = p.tick("engagement_feed_sensor")
    p.launch("engagement_feed", feed.run_requests[0])

    # the nightly metrics run finished: with the toggle off, nothing is asked
    nightly = p.run("intelligence_refresh")
    after_metrics = p.defs.resolve_sensor_def("engagement_after_metrics")

    def metrics_done() -> list[dg.RunRequest]:
        success = next(e for e in nightly.all_events if e.event_type_value == "PIPELINE_SUCCESS")
        with dg.build_run_status_sensor_context(
            sensor_name="engagement_after_metrics",
            dagster_event=success,
            dagster_instance=p.instance,
            dagster_run=nightly.dagster_run,
            resources={"stores": p.stores},
        ) as context:
            return list(after_metrics(context) or [])  # type: ignore[operator]

    assert metrics_done() == []
    p.registry.set_outbound_toggles(p.domain, {"engagement": True})
    requests = metrics_done()
    assert [r.partition_key for r in requests] == [p.domain]
    before = len(p.writes())
    result = p.launch("reverse_sync_engagement", requests[0])
    calls = result.asset_materializations_for_node("reverse_sync__push")[0].metadata["calls"].value
    written: dict[tuple[str, str], str] = {}
    for entry in p.writes("metafieldsSet"):
        for m in entry["payload"]["metafields"]:
            written[(entry["target"], m["key"])] = m["value"]
    # every customer with a segment gets it; the engaged ones their last open and click too
    segments = dict(
        p.query(
            "SELECT i.record_id, m.segment FROM core.contact_identities i JOIN core.contact_metrics m "
            "USING (contact_id) WHERE i.record_type = 'customer' AND m.segment IS NOT NULL"
        )
    )
    assert {t for t, k in written if k == "rfm_segment"} == {_gid(int(r)) for r in segments}
    for c in engaged:
        assert written[(_gid(c["id"]), "last_email_open_at")] == "2026-11-01T09:00:00Z"
        assert written[(_gid(c["id"]), "last_email_click_at")] == "2026-11-02T09:00:00Z"
    assert written[(_gid(texted["id"]), "last_sms_click_at")] == "2026-11-03T09:00:00Z"
    assert written[(_gid(texted["id"]), "messages_sent_total")] == "1"
    assert all((t, "origin") in written for t, _ in written)
    elements = sum(len(e["payload"]["metafields"]) for e in p.writes("metafieldsSet"))
    assert calls["push_metafields_set"] == -(-elements // 25)  # 25 per call
    assert len(p.writes()) > before
    # a second nightly run changes nothing: nothing is written
    mark = len(p.writes())
    p.launch("reverse_sync_engagement", dg.RunRequest(partition_key=p.domain))
    assert len(p.writes()) == mark

    # profile fill: staff cleared a customer's first name, phone and address on Shopify
    target = next(
        c for c in customers if c.get("phone") and c.get("first_name") and c.get("default_address_id")
    )
    with p.shop.lock:
        address = next(
            a
            for a in p.shop.children["customer_addresses"][target["id"]]
            if a["id"] == target["default_address_id"]
        )
        p.shop.children["customer_addresses"][target["id"]] = []
        p.shop.records["customers"][target["id"]]["default_address_id"] = None
    p.gql(
        "mutation($input: CustomerInput!) { customerUpdate(input: $input) { userErrors { message } } }",
        {"input": {"id": _gid(target["id"]), "firstName": "", "phone": ""}},
    )
    p.sync_customers()
    p.run("intelligence_refresh")  # the contact keeps what Shopify had when it was created
    tick = datetime(2026, 11, 5, 10, 15, tzinfo=UTC)

    def schedule() -> list[dg.RunRequest]:
        with dg.build_schedule_context(
            instance=p.instance, scheduled_execution_time=tick, resources={"stores": p.stores}
        ) as context:
            return list(profile_fill_schedule(context) or [])  # type: ignore[arg-type]

    assert schedule() == []  # toggle off
    p.registry.set_outbound_toggles(p.domain, {"profile": True})
    requests = schedule()
    assert [r.partition_key for r in requests] == [p.domain]
    mark = len(p.writes())
    p.launch("reverse_sync_profile", requests[0])
    new = p.writes()[mark:]
    updates = [e for e in new if e["operation"] == "customerUpdate"]
    assert [e["target"] for e in updates] == [_gid(target["id"])]
    assert updates[0]["payload"]["phone"] == target["phone"]  # E.164, from core.contacts
    assert updates[0]["payload"]["firstName"] == target["first_name"]
    assert [e["target"] for e in new if e["operation"] == "customerAddressCreate"] == [_gid(target["id"])]
    with p.shop.lock:
        restored = p.shop.records["customers"][target["id"]]
        assert restored["phone"] == target["phone"] and restored["first_name"] == target["first_name"]
        assert [a["address1"] for a in p.shop.children["customer_addresses"][target["id"]]] == [
            address["address1"]
        ]
    # every other customer's fields were already filled on Shopify: nothing else was written
    assert {e["target"] for e in new} == {_gid(target["id"])}
