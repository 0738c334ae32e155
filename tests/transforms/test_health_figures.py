"""Sync-health figures: lag percentiles against service levels, consent errors, dead letters, API use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from transforms.sync_health import (
    API_USAGE_SCHEMA,
    CONSENT_FAILURE_SCHEMA,
    DEAD_LETTER_SCHEMA,
    HEALTH_SCHEMA,
    LAG_SCHEMA,
    HealthSettings,
    sync_health,
)

AS_OF = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SHOP = "alpha-store.myshopify.com"


def lag_frame(rows: list[tuple[str, str, float, timedelta]]) -> pl.DataFrame:
    """(entity, event_type, lag seconds, loaded how long before AS_OF)."""
    return pl.DataFrame(
        [
            {
                "shop": SHOP,
                "entity": entity,
                "event_type": event,
                "source": "poll",
                "id": i,
                "changed_at": AS_OF - ago - timedelta(seconds=lag),
                "loaded_at": AS_OF - ago,
                "lag_s": lag,
                "batch_id": "b",
            }
            for i, (entity, event, lag, ago) in enumerate(rows)
        ],
        schema=LAG_SCHEMA,
    )


def evaluate(**overrides: Any) -> pl.DataFrame:
    inputs: dict[str, Any] = {
        "as_of": AS_OF,
        "shops": [SHOP],
        "lag": pl.DataFrame(schema=LAG_SCHEMA),
        "identity": pl.DataFrame(),
        "blocked": pl.DataFrame(),
        "consent_failures": pl.DataFrame(schema=CONSENT_FAILURE_SCHEMA),
        "dead_letters": pl.DataFrame(schema=DEAD_LETTER_SCHEMA),
        "api_usage": pl.DataFrame(schema=API_USAGE_SCHEMA),
        "previous": pl.DataFrame(schema=HEALTH_SCHEMA),
    }
    inputs.update(overrides)
    figures = sync_health(**inputs)
    assert figures.schema == pl.Schema(HEALTH_SCHEMA)
    return figures


def figure(figures: pl.DataFrame, metric: str, **where: str) -> dict[str, Any]:
    rows = figures.filter(pl.col("metric") == metric)
    for column, value in where.items():
        rows = rows.filter(pl.col(column) == value)
    assert rows.height == 1, (metric, where, rows)
    return rows.row(0, named=True)


def test_lag_percentiles_per_entity_and_event_type_against_their_service_levels() -> None:
    hour = timedelta(hours=1)
    lag = lag_frame(
        [("customers", "update", s, hour) for s in (10, 20, 30, 40, 5000)]
        + [("orders", "create", s, hour) for s in (100, 200)]
        # older than the window: not counted
        + [("orders", "create", 99999, timedelta(hours=30))]
    )
    settings = HealthSettings(default_lag_objective_s=900, lag_objective_s={"customers": 60})
    figures = evaluate(lag=lag, settings=settings)
    p50 = figure(figures, "sync_lag_p50_s", entity="customers", event_type="update")
    assert p50["value"] == pytest.approx(30) and p50["status"] == "info"
    customers = figure(figures, "sync_lag_p95_s", entity="customers", event_type="update")
    assert customers["value"] == pytest.approx(4008, abs=1) and customers["objective"] == 60
    assert customers["status"] == "breach"
    assert "above the 60 s service level" in customers["message"]
    assert f"shopsync stores health {SHOP}" in customers["message"]
    orders = figure(figures, "sync_lag_p95_s", entity="orders", event_type="create")
    assert orders["status"] == "ok" and orders["objective"] == 900 and orders["value"] < 200


@pytest.mark.parametrize(
    ("failures", "status", "value"),
    [
        ([], "ok", 0),
        ([(17, "email_consent", "HTTP 503", timedelta(hours=2))], "breach", 1),
        # a failure from before the window no longer counts
        ([(17, "email_consent", "HTTP 503", timedelta(hours=48))], "ok", 0),
    ],
)
def test_any_consent_push_error_in_the_window_is_a_breach_naming_the_customers(
    failures: list[tuple[int, str, str, timedelta]], status: str, value: int
) -> None:
    frame = pl.DataFrame(
        [
            {"shop": SHOP, "customer_id": c, "kind": k, "error": e, "logged_at": AS_OF - ago}
            for c, k, e, ago in failures
        ],
        schema=CONSENT_FAILURE_SCHEMA,
    )
    row = figure(evaluate(consent_failures=frame), "consent_push_errors", shop=SHOP)
    assert (row["status"], row["value"]) == (status, value)
    if status == "breach":
        assert "customers 17" in row["message"] and "HTTP 503" in row["message"]
        assert f"shopsync push retry-dead {SHOP}" in row["message"]


@pytest.mark.parametrize(
    ("previous", "depth", "status"),
    [(None, 3, "ok"), (3.0, 3, "ok"), (3.0, 2, "ok"), (3.0, 5, "breach"), (0.0, 1, "breach")],
)
def test_dead_letters_breach_only_when_they_grew(previous: float | None, depth: int, status: str) -> None:
    before = pl.DataFrame(schema=HEALTH_SCHEMA)
    if previous is not None:
        before = evaluate(dead_letters=pl.DataFrame({"shop": [SHOP], "depth": [int(previous)]}))
    row = figure(
        evaluate(dead_letters=pl.DataFrame({"shop": [SHOP], "depth": [depth]}), previous=before),
        "dead_letters",
        shop=SHOP,
    )
    assert row["value"] == depth and row["status"] == status
    if status == "breach":
        assert "retry-dead" in row["message"]


def test_api_points_used_against_what_the_plan_restores_in_the_window() -> None:
    usage = pl.DataFrame({"shop": [SHOP], "points_used": [43_200.0], "restore_rate": [100.0]})
    figures = evaluate(api_usage=usage)
    assert figure(figures, "api_points_available", shop=SHOP)["value"] == 100.0 * 86_400
    assert figure(figures, "api_utilisation", shop=SHOP)["value"] == pytest.approx(0.005)
    # without a known restore rate there is no utilisation to state
    unknown = evaluate(
        api_usage=pl.DataFrame({"shop": [SHOP], "points_used": [10.0], "restore_rate": [None]})
    )
    assert unknown.filter(pl.col("metric") == "api_utilisation").is_empty()


def test_identity_rates_come_from_the_latest_run_and_blocked_overwrites_are_summed() -> None:
    identity = pl.DataFrame(
        {
            "run_number": [1, 2],
            "records": [10, 200],
            "email_match": [1, 100],
            "phone_match": [1, 20],
            "probabilistic_match": [0, 10],
            "unmatched": [8, 70],
            "ambiguous": [0, 4],
        }
    )
    blocked = pl.DataFrame({"field": ["notes", "owner"], "blocked": [3, 4]})
    figures = evaluate(identity=identity, blocked=blocked)
    assert figure(figures, "identity_email_match_rate")["value"] == pytest.approx(0.5)
    assert figure(figures, "identity_unmatched_rate")["value"] == pytest.approx(0.35)
    assert figure(figures, "identity_ambiguous")["value"] == 4
    assert figure(figures, "blocked_overwrites")["value"] == 7


def test_nothing_known_yet_gives_only_the_per_store_figures() -> None:
    figures = evaluate()
    assert set(figures["metric"]) == {"consent_push_errors", "dead_letters"}
    assert set(figures["status"]) == {"ok"}
