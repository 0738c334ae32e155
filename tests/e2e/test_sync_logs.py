"""Structured logs: a real store sync on a Dagster instance that manages shopsync's loggers
writes one JSON object per stderr line, carrying the store and the run, and neither the
access token nor any customer's e-mail address, phone number or name reaches stderr or the
event log. Plus the redaction rules themselves and the CLI's and receiver's log setup."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import dagster as dg
import pytest
from test_sync_pipeline import harness_factory  # noqa: F401  (fixture)

from orchestration.defs.instance import ensure_warehouse_pool
from orchestration.defs.logs import LOGGERS
from orchestration.defs.shopify.jobs import fetch_run_config
from orchestration.defs.shopify.partitions import add_store_partition
from pipelines.logs import JsonFormatter, configure_logging, log_context, redact, uvicorn_log_config
from pipelines.shopify.client import ShopifyClient


def test_redaction_hides_secrets_and_contact_details_and_keeps_ids() -> None:
    text = (
        "token shpat_0123456789abcdef0123456789abcdef secret shpss_abcdef0123456789 "
        "X-Shopify-Access-Token: abc123 Authorization: Bearer xyz.789 "
        'access_token=zz9 {"client_secret": "s3cr3t"} callback ?code=c0de&hmac=ff00&shop=a.myshopify.com '
        "mail Ann.O'Neil+tag@example.co.uk phones +1 (415) 555-0134, +447911123456, 415-555-0199 "
        "ids gid://shopify/Customer/7000000000123 id=7000000000123 ct_5f2a9c run 4c1f2e6a-0b1d-4d9e-9a55-1f2e3d4c5b6a "
        "at 2026-12-05T05:42:23+00:00 status 500 after 2.5 s"
    )
    out = redact(text)
    for secret in (
        "shpat_0123",
        "shpss_abc",
        "abc123",
        "xyz.789",
        "zz9",
        "s3cr3t",
        "c0de",
        "ff00",
        "example.co.uk",
        "555-0134",
        "7911123456",
        "555-0199",
    ):
        assert secret not in out, (secret, out)
    for kept in (
        "gid://shopify/Customer/7000000000123",
        "id=7000000000123",
        "ct_5f2a9c",
        "4c1f2e6a-0b1d-4d9e-9a55-1f2e3d4c5b6a",
        "2026-12-05T05:42:23+00:00",
        "status 500 after 2.5 s",
        "shop=a.myshopify.com",
    ):
        assert kept in out, (kept, out)


def test_cli_logging_writes_json_lines_with_context_and_redacts_at_the_record() -> None:
    stream = io.StringIO()
    handler = configure_logging("INFO", stream=stream)
    try:
        log = logging.getLogger("shopsync.test")
        with log_context(shop="a.myshopify.com", run_id="r-1"):
            log.info("pushed to %s with %s", "ann@example.com", "shpat_0123456789abcdef0123456789abcdef")
        try:
            raise ValueError("bad phone +1 415 555 0134")
        except ValueError:
            log.exception("failed")
        # a second call replaces the first handler instead of doubling every line
        assert configure_logging("INFO", stream=stream) is not handler
        handler = logging.getLogger().handlers[-1]
        assert sum(getattr(h, "shopsync", False) for h in logging.getLogger().handlers) == 1
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["shop"] == "a.myshopify.com" and lines[0]["run_id"] == "r-1"
    assert lines[0]["message"] == "pushed to <email> with <secret>"
    assert "shop" not in lines[1] and lines[1]["level"] == "error"
    assert "ValueError" in lines[1]["error"] and "555" not in lines[1]["error"]


def test_the_receiver_log_config_uses_the_json_formatter() -> None:
    import logging.config

    config = uvicorn_log_config("INFO")
    logging.config.dictConfig(config)
    handler = logging.getLogger("uvicorn").handlers[0]
    assert isinstance(handler.formatter, JsonFormatter)
    logging.getLogger("uvicorn").handlers.clear()


@pytest.mark.slow
def test_a_store_sync_logs_json_lines_with_store_and_run_and_no_personal_data(
    harness_factory: Any,  # noqa: F811
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the client's backoff shrunk tenfold: the same retries are logged, with less sleep
    monkeypatch.setattr(ShopifyClient, "backoff_base_s", 0.05)
    monkeypatch.setattr(ShopifyClient, "backoff_cap_s", 2.0)
    h = harness_factory(stores=1, customers=25, seed=3)
    shop = h.devstore.shops[0]
    domain = shop["domain"]
    settings = {"python_logs": {"managed_python_loggers": ["shopsync"], "python_log_level": "INFO"}}
    with dg.instance_for_test(overrides=settings) as instance:
        add_store_partition(instance, domain)
        ensure_warehouse_pool(instance)
        job = dg.Definitions.merge(h.defs, dg.Definitions(loggers=LOGGERS)).resolve_job_def("shopify_sync")
        # 5xx bursts make the client log its retries (shopsync.shopify, through Dagster)
        h.control("PUT", "/faults", {"seed": 2, "rate_503": 0.15, "burst_length": 2, "kinds": ["graphql"]})
        capfd.readouterr()
        result = job.execute_in_process(
            instance=instance,
            partition_key=domain,
            run_config=fetch_run_config(full=True),
            raise_on_error=False,
        )
        h.control("DELETE", "/faults")
        assert result.success
        err = capfd.readouterr().err
        event_log = "\n".join(e.message or "" for e in instance.all_logs(result.run_id))

    lines = [line for line in err.splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a stderr line is not JSON: {line[:200]}")
    ours = [r for r in records if r["logger"].startswith("shopsync")]
    retries = [r for r in ours if "attempt" in r["message"] and "failed" in r["message"]]
    assert retries, "the client's retries under 5xx were not logged"
    assert all(r.get("shop") == domain and r.get("run_id") == result.run_id for r in ours)
    assert all("step" in r for r in retries)

    state = h.devstore.world.shop(domain)
    assert state is not None
    personal: set[str] = {shop["access_token"]}
    for customer in state.records["customers"].values():
        for key in ("email", "phone", "first_name", "last_name"):
            value = customer.get(key)
            if isinstance(value, str) and len(value) >= 4:
                personal.add(value)
    for text, where in ((err, "stderr"), (event_log, "the event log")):
        leaked = sorted(v for v in personal if v in text)
        assert not leaked, f"{where} carries personal data or a token: {leaked[:5]}"
