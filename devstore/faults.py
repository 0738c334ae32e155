"""Fault injection for the devstore: throttle storms, HTTP errors, resets, slow and broken replies.

A ``FaultProfile`` says how often each fault happens; a ``FaultInjector`` turns it into
decisions. Decisions are deterministic: every shop has its own ``random.Random`` stream
per channel (requests, bulk operations, webhook deliveries) derived from the profile's
seed, so the same seed and the same sequence of requests give the same faults. Faults come
in bursts (a "storm" of N consecutive faulty requests), because that is what breaks naive
retry loops, not independent coin flips.
"""

from __future__ import annotations

import random
import threading
import weakref
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any

REQUEST_KINDS: tuple[str, ...] = ("graphql", "rest", "oauth")
ACTION_KINDS: tuple[str, ...] = ("throttled", "429", "500", "502", "503", "reset", "slow", "invalid_json")
BULK_FAULTS: tuple[str, ...] = ("fail_partial", "never_finish")


@dataclass
class FaultProfile:
    """How often each fault happens. Rates are probabilities per request (0..1).

    A fault, once drawn, repeats for its burst length: ``throttle_storm_length`` consecutive
    requests for a throttle storm, ``burst_length`` for every other request fault.
    """

    seed: int = 0
    # request faults (GraphQL, REST, OAuth)
    throttle_storm_rate: float = 0.0  # GraphQL THROTTLED error with an empty bucket
    throttle_storm_length: int = 5
    rate_429: float = 0.0
    retry_after: float = 1.0  # seconds, sent as Retry-After with a 429
    rate_500: float = 0.0
    rate_502: float = 0.0
    rate_503: float = 0.0
    reset_rate: float = 0.0  # connection closed after part of the body was sent
    slow_rate: float = 0.0
    slow_delay: float = 2.0  # seconds added before a slow reply
    invalid_json_rate: float = 0.0
    burst_length: int = 1
    # which request kinds the request faults apply to
    kinds: tuple[str, ...] = REQUEST_KINDS
    # bulk operations
    bulk_fail_rate: float = 0.0  # FAILED with a partialDataUrl
    bulk_never_finish_rate: float = 0.0  # stays RUNNING until cancelled
    # webhook deliveries
    webhook_duplicate_rate: float = 0.0  # delivered twice with the same X-Shopify-Webhook-Id
    webhook_reorder_rate: float = 0.0  # held back and sent after the next delivery
    webhook_late_rate: float = 0.0
    webhook_late_delay: float = 5.0  # seconds (scaled by the dispatcher's time scale)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultProfile:
        """Build a profile from JSON; unknown keys raise ``ValueError`` naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"unknown fault profile fields: {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        values = dict(data)
        if "kinds" in values:
            kinds = tuple(values["kinds"])
            bad = [k for k in kinds if k not in REQUEST_KINDS]
            if bad:
                raise ValueError(f"unknown request kinds {bad}; use some of {list(REQUEST_KINDS)}")
            values["kinds"] = kinds
        profile = cls(**values)
        profile.validate()
        return profile

    def to_dict(self) -> dict[str, Any]:
        """The profile as JSON-ready data."""
        data = asdict(self)
        data["kinds"] = list(self.kinds)
        return data

    def validate(self) -> None:
        """Raise ``ValueError`` if a rate is outside 0..1 or the request rates sum above 1."""
        rates = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name.endswith("rate") or "rate_" in f.name
        }
        for name, value in rates.items():
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"fault rate {name}={value} must be between 0 and 1")
        if sum(self._request_rates().values()) > 1.0 + 1e-9:
            raise ValueError("request fault rates add up to more than 1")
        if self.throttle_storm_length < 1 or self.burst_length < 1:
            raise ValueError("burst lengths must be at least 1")

    def _request_rates(self) -> dict[str, float]:
        return {
            "throttled": self.throttle_storm_rate,
            "429": self.rate_429,
            "500": self.rate_500,
            "502": self.rate_502,
            "503": self.rate_503,
            "reset": self.reset_rate,
            "slow": self.slow_rate,
            "invalid_json": self.invalid_json_rate,
        }


@dataclass
class FaultAction:
    """One injected request fault. ``kind`` is one of ``ACTION_KINDS``."""

    kind: str
    retry_after: float = 0
    delay: float = 0


@dataclass
class WebhookFault:
    """What happens to one webhook delivery."""

    duplicate: bool = False
    reorder: bool = False
    late_delay: float = 0.0

    @property
    def any(self) -> bool:
        """True when the delivery is disturbed in any way."""
        return self.duplicate or self.reorder or self.late_delay > 0


@dataclass
class _ShopStreams:
    requests: random.Random
    bulk: random.Random
    webhooks: random.Random
    burst_remaining: int = 0
    burst_action: FaultAction | None = None
    request_count: int = 0
    # bounded: a long benchmark must not grow it without limit
    history: deque[str | None] = field(default_factory=lambda: deque(maxlen=10_000))


class FaultInjector:
    """Deterministic fault decisions per shop, from the current ``FaultProfile``."""

    def __init__(self, profile: FaultProfile | None = None) -> None:
        self._lock = threading.Lock()
        self.profile = profile or FaultProfile()
        self._streams: dict[str, _ShopStreams] = {}
        self.counters: Counter[str] = Counter()

    # configuration -------------------------------------------------------------------
    def set_profile(self, profile: FaultProfile | None) -> None:
        """Install a profile (None = no faults) and restart every shop's random stream."""
        if profile is not None:
            profile.validate()
        with self._lock:
            self.profile = profile or FaultProfile()
            self._streams.clear()
            self.counters.clear()

    def clear(self) -> None:
        """Stop injecting faults."""
        self.set_profile(None)

    @property
    def active(self) -> bool:
        """True when the profile can inject anything."""
        p = self.profile
        return any(
            (
                sum(p._request_rates().values()) > 0,
                p.bulk_fail_rate > 0,
                p.bulk_never_finish_rate > 0,
                p.webhook_duplicate_rate > 0,
                p.webhook_reorder_rate > 0,
                p.webhook_late_rate > 0,
            )
        )

    def _shop(self, shop_handle: str) -> _ShopStreams:
        streams = self._streams.get(shop_handle)
        if streams is None:
            # str seeds are hashed with SHA-512 by random.seed, so they do not depend on
            # PYTHONHASHSEED: the same seed gives the same stream in every process.
            seed = self.profile.seed
            streams = _ShopStreams(
                requests=random.Random(f"{seed}:{shop_handle}:requests"),
                bulk=random.Random(f"{seed}:{shop_handle}:bulk"),
                webhooks=random.Random(f"{seed}:{shop_handle}:webhooks"),
            )
            self._streams[shop_handle] = streams
        return streams

    # decisions -----------------------------------------------------------------------
    def decide(self, shop_handle: str, kind: str) -> FaultAction | None:
        """The fault to inject into this request of ``kind`` ("graphql", "rest", "oauth"), if any."""
        with self._lock:
            profile = self.profile
            if kind not in profile.kinds:
                return None
            rates = profile._request_rates()
            if not any(rates.values()):
                return None
            streams = self._shop(shop_handle)
            streams.request_count += 1
            if streams.burst_remaining > 0 and streams.burst_action is not None:
                streams.burst_remaining -= 1
                action = FaultAction(**asdict(streams.burst_action))
            else:
                action = self._draw(streams.requests, rates, profile)
                if action is not None:
                    length = (
                        profile.throttle_storm_length if action.kind == "throttled" else profile.burst_length
                    )
                    streams.burst_remaining = length - 1
                    streams.burst_action = action
            streams.history.append(action.kind if action else None)
            if action is not None:
                self.counters[action.kind] += 1
            return action

    @staticmethod
    def _draw(rng: random.Random, rates: dict[str, float], profile: FaultProfile) -> FaultAction | None:
        u = rng.random()
        cumulative = 0.0
        for name, rate in rates.items():
            cumulative += rate
            if u < cumulative:
                if name == "429":
                    return FaultAction("429", retry_after=profile.retry_after)
                if name == "slow":
                    return FaultAction("slow", delay=profile.slow_delay)
                return FaultAction(name)
        return None

    def decide_bulk(self, shop_handle: str) -> str | None:
        """The fault for a new bulk operation: "fail_partial", "never_finish" or None."""
        with self._lock:
            profile = self.profile
            if profile.bulk_fail_rate <= 0 and profile.bulk_never_finish_rate <= 0:
                return None
            u = self._shop(shop_handle).bulk.random()
            if u < profile.bulk_fail_rate:
                self.counters["bulk_fail_partial"] += 1
                return "fail_partial"
            if u < profile.bulk_fail_rate + profile.bulk_never_finish_rate:
                self.counters["bulk_never_finish"] += 1
                return "never_finish"
            return None

    def decide_webhook(self, shop_handle: str) -> WebhookFault:
        """What happens to the next webhook delivery of this shop."""
        with self._lock:
            profile = self.profile
            if not (
                profile.webhook_duplicate_rate or profile.webhook_reorder_rate or profile.webhook_late_rate
            ):
                return WebhookFault()
            rng = self._shop(shop_handle).webhooks
            # always draw three numbers so one rate does not shift the others' sequence
            u_dup, u_reorder, u_late = rng.random(), rng.random(), rng.random()
            fault = WebhookFault(
                duplicate=u_dup < profile.webhook_duplicate_rate,
                reorder=u_reorder < profile.webhook_reorder_rate,
                late_delay=profile.webhook_late_delay if u_late < profile.webhook_late_rate else 0.0,
            )
            for name, hit in (
                ("webhook_duplicate", fault.duplicate),
                ("webhook_reorder", fault.reorder),
                ("webhook_late", fault.late_delay > 0),
            ):
                if hit:
                    self.counters[name] += 1
            return fault

    # read back -----------------------------------------------------------------------
    def history(self, shop_handle: str) -> list[str | None]:
        """Every request decision for the shop since the profile was set (None = no fault)."""
        with self._lock:
            streams = self._streams.get(shop_handle)
            return list(streams.history) if streams else []

    def snapshot(self) -> dict[str, Any]:
        """Profile and counters as JSON-ready data (for the control API)."""
        with self._lock:
            return {"profile": self.profile.to_dict(), "counters": dict(self.counters)}


_INJECTORS: weakref.WeakKeyDictionary[Any, FaultInjector] = weakref.WeakKeyDictionary()
_INJECTORS_LOCK = threading.Lock()


def injector_for(world: Any) -> FaultInjector:
    """The one ``FaultInjector`` of a devstore world (created on first use).

    The GraphQL app, the bulk runner, the webhook dispatcher and the control API all reach
    the same injector through the world they serve, so setting a profile affects them all.
    """
    with _INJECTORS_LOCK:
        injector = _INJECTORS.get(world)
        if injector is None:
            injector = FaultInjector()
            _INJECTORS[world] = injector
        return injector
