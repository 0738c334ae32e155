"""Fault injection: deterministic by seed, storms come in bursts, every kind can be produced."""

from __future__ import annotations

from collections import Counter

import pytest

from devstore.faults import ACTION_KINDS, FaultInjector, FaultProfile


def _sequence(
    profile: FaultProfile, shop: str = "acme", n: int = 400, kind: str = "graphql"
) -> list[str | None]:
    injector = FaultInjector(profile)
    return [(a.kind if a else None) for a in (injector.decide(shop, kind) for _ in range(n))]


MIXED = FaultProfile(
    seed=11,
    throttle_storm_rate=0.03,
    throttle_storm_length=4,
    rate_429=0.03,
    retry_after=2.5,
    rate_500=0.02,
    rate_502=0.02,
    rate_503=0.02,
    reset_rate=0.02,
    slow_rate=0.02,
    slow_delay=0.3,
    invalid_json_rate=0.02,
)


def test_same_seed_same_request_sequence_gives_same_faults() -> None:
    first = _sequence(MIXED)
    assert first == _sequence(MIXED)
    assert any(first), "the profile should inject something in 400 requests"
    other = _sequence(FaultProfile(**{**MIXED.to_dict(), "seed": 12, "kinds": ("graphql", "rest", "oauth")}))
    assert other != first


def test_every_action_kind_is_produced_with_its_parameters() -> None:
    injector = FaultInjector(MIXED)
    actions = [injector.decide("acme", "graphql") for _ in range(3000)]
    kinds = Counter(a.kind for a in actions if a)
    assert set(kinds) == set(ACTION_KINDS)
    assert all(a.retry_after == 2.5 for a in actions if a and a.kind == "429")
    assert all(a.delay == 0.3 for a in actions if a and a.kind == "slow")
    assert injector.counters["throttled"] == kinds["throttled"]


def test_throttle_storms_are_bursts_of_consecutive_requests() -> None:
    seq = _sequence(FaultProfile(seed=5, throttle_storm_rate=0.05, throttle_storm_length=6), n=2000)
    runs: list[int] = []
    length = 0
    for item in [*seq, None]:
        if item == "throttled":
            length += 1
        elif length:
            runs.append(length)
            length = 0
    assert runs, "expected at least one storm"
    # a storm lasts at least its length (two storms may touch and merge)
    assert min(runs) >= 6


def test_shops_have_independent_streams() -> None:
    injector = FaultInjector(MIXED)
    a = [injector.decide("acme", "graphql") for _ in range(200)]
    # interleaving another shop's requests does not change acme's sequence
    injector2 = FaultInjector(MIXED)
    b = []
    for _ in range(200):
        injector2.decide("other", "graphql")
        b.append(injector2.decide("acme", "graphql"))
    assert [x.kind if x else None for x in a] == [x.kind if x else None for x in b]


def test_kinds_filter_and_set_profile_restart() -> None:
    injector = FaultInjector(FaultProfile(seed=1, rate_500=1.0, kinds=("rest",)))
    assert injector.decide("acme", "graphql") is None
    action = injector.decide("acme", "rest")
    assert action is not None and action.kind == "500"
    injector.set_profile(None)
    assert injector.decide("acme", "rest") is None
    assert not injector.active


def test_bulk_and_webhook_decisions_are_seeded() -> None:
    profile = FaultProfile(
        seed=3,
        bulk_fail_rate=0.3,
        bulk_never_finish_rate=0.2,
        webhook_duplicate_rate=0.3,
        webhook_reorder_rate=0.3,
    )
    one, two = FaultInjector(profile), FaultInjector(profile)
    assert [one.decide_bulk("acme") for _ in range(50)] == [two.decide_bulk("acme") for _ in range(50)]
    assert [one.decide_webhook("acme") for _ in range(50)] == [two.decide_webhook("acme") for _ in range(50)]
    assert {"fail_partial", "never_finish", None} == {one.decide_bulk("acme") for _ in range(200)}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"rate_500": 1.5}, "between 0 and 1"),
        ({"rate_500": 0.6, "rate_502": 0.6}, "more than 1"),
        ({"no_such_rate": 0.1}, "unknown fault profile fields"),
        ({"kinds": ["smtp"]}, "unknown request kinds"),
    ],
)
def test_invalid_profiles_are_refused_with_a_clear_message(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaultProfile.from_dict(data)
