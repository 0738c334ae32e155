"""Pacing to a shop's cost bucket, shared by every thread and process that calls the shop.

Shopify keeps one leaky bucket per app and shop. Each query takes its requested cost from
it, the difference to the actual cost is refunded, and it refills at ``restoreRate`` points a
second; a query the bucket cannot cover is answered THROTTLED. Every answer reports the
level (``extensions.cost.throttleStatus``).

The pacer keeps a *virtual* bucket: the level Shopify last reported, minus the points of
requests reserved (sent, or waiting for their turn) but not answered yet. A request first
reserves its expected cost: the pacer says how long to wait until the virtual bucket holds
it and takes it at once, so concurrent callers queue up behind each other instead of all
seeing the same free points. When the answer arrives its reservation ends and the reported
level, minus the reservations still open, becomes the new virtual level.

With a ``path`` the state is a file shared by every process of this machine that calls the
shop (see :mod:`pipelines.shopify.shared_state`); without one it is shared by the threads
of one client. One shopsync deployment is one Shopify app, so the file is per shop.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines.shopify.shared_state import SharedState

# A reservation whose answer never came (its process died) stops counting after this long.
RESERVATION_TTL_S = 180.0
# Shopify measures the bucket a little differently from us (rounding, clocks): keep a margin.
_MARGIN_FACTOR = 1.02
_MARGIN_POINTS = 1.0


@dataclass
class Bucket:
    """A state of the shop's cost bucket (leaky bucket, refilled at ``restore_rate``)."""

    maximum: float
    available: float
    restore_rate: float
    at: float  # when ``available`` held (the pacer's clock)

    def available_at(self, now: float) -> float:
        """Points expected to be available at ``now``."""
        return min(self.maximum, self.available + max(0.0, now - self.at) * self.restore_rate)


class Pacer:
    """Reserves bucket points before requests and learns the level from Shopify's answers."""

    def __init__(self, path: Path | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self._state = SharedState(path)
        self._clock = clock

    @property
    def shared(self) -> bool:
        """Whether other processes see this pacer's state."""
        return self._state.path is not None

    def reserve(self, cost: float, *, max_wait_s: float) -> tuple[float, str | None]:
        """Take ``cost`` points from the virtual bucket; returns (seconds to wait first, reservation id).

        Nothing is reserved (no wait, no id) when the cost is unknown or no answer has told
        the bucket's size yet.
        """
        if cost <= 0:
            return 0.0, None
        with self._state.edit() as state:
            now = self._clock()
            bucket = _bucket(state)
            if bucket is None:
                return 0.0, None
            need = min(cost * _MARGIN_FACTOR + _MARGIN_POINTS, bucket.maximum)
            available = bucket.available_at(now)
            wait = 0.0 if available >= need else (need - available) / max(bucket.restore_rate, 1e-6)
            wait = min(wait, max_wait_s)
            # the virtual bucket after this request: frozen until it is sent, then refilling
            bucket.available = available + wait * bucket.restore_rate - need
            bucket.at = now + wait
            state["bucket"] = asdict(bucket)
            reservation = secrets.token_hex(6)
            pending = _pending(state, now)
            pending[reservation] = {"points": need, "until": now + wait + RESERVATION_TTL_S}
            state["pending"] = pending
        return wait, reservation

    def observe(self, maximum: float, available: float, restore_rate: float, reservation: str | None) -> None:
        """Shopify reported the bucket in the answer to ``reservation``'s request."""
        with self._state.edit() as state:
            now = self._clock()
            pending = _pending(state, now)
            pending.pop(reservation or "", None)
            # the answered request is inside Shopify's figure; the open ones are not yet
            open_points = sum(float(p["points"]) for p in pending.values())
            state["bucket"] = asdict(Bucket(maximum, available - open_points, restore_rate, now))
            state["pending"] = pending

    def release(self, reservation: str | None) -> None:
        """The request got no answer to learn from (a reset, a 5xx): its reservation ends.

        Its points stay taken from the virtual bucket until the next answer corrects it.
        """
        if reservation is None:
            return
        with self._state.edit() as state:
            pending = _pending(state, self._clock())
            pending.pop(reservation, None)
            state["pending"] = pending

    def bucket(self) -> Bucket | None:
        """The virtual bucket now (None before the first answer)."""
        with self._state.edit() as state:
            return _bucket(state)


def _bucket(state: dict[str, Any]) -> Bucket | None:
    data = state.get("bucket")
    if not isinstance(data, dict):
        return None
    try:
        return Bucket(
            maximum=float(data["maximum"]),
            available=float(data["available"]),
            restore_rate=float(data["restore_rate"]),
            at=float(data["at"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _pending(state: dict[str, Any], now: float) -> dict[str, dict[str, float]]:
    """Open reservations, without those whose owner stopped answering long ago."""
    pending = state.get("pending")
    if not isinstance(pending, dict):
        return {}
    return {
        key: value
        for key, value in pending.items()
        if isinstance(value, dict) and float(value.get("until", 0)) >= now
    }
