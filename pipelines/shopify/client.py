"""The one HTTP client for Shopify's Admin GraphQL API.

It authenticates (a static access token, or client credentials exchanged for a token that
is cached and refreshed), paces requests to the shop's cost bucket so that Shopify rarely
has to answer THROTTLED, retries what is worth retrying, and turns everything else into a
typed error whose message tells the user what to do.

``extensions.cost`` is read in one place, ``_observe_cost``; the pacing state it feeds
(:mod:`pipelines.shopify.pacing`) is shared by every thread that uses the client and, given
a ``shared_dir``, by every process of the machine that calls the same shop, because the
bucket is per app and shop.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from pipelines.shopify.pacing import Bucket, Pacer
from pipelines.shopify.settings import API_VERSION, MAX_QUERY_COST
from pipelines.shopify.shared_state import SharedState, state_file

__all__ = [
    "Bucket",
    "ClientStats",
    "ShopifyAccessDenied",
    "ShopifyAuthError",
    "ShopifyClient",
    "ShopifyCostTooHigh",
    "ShopifyError",
    "ShopifyQueryError",
    "ShopifyUnavailable",
    "raise_user_errors",
    "token_rejection",
]

log = logging.getLogger("shopsync.shopify")


# errors ------------------------------------------------------------------------------------
class ShopifyError(Exception):
    """Base of every error the Shopify client raises on purpose."""

    def __init__(self, message: str, *, shop: str = "") -> None:
        super().__init__(message)
        self.shop = shop


class ShopifyAuthError(ShopifyError):
    """The access token (or the app's credentials) was rejected: revoked, expired, app uninstalled."""


class ShopifyAccessDenied(ShopifyError):
    """The token lacks an access scope; ``scope`` names it when Shopify says which."""

    def __init__(self, message: str, *, shop: str = "", scope: str | None = None) -> None:
        super().__init__(message, shop=shop)
        self.scope = scope


class ShopifyUnavailable(ShopifyError):
    """Shopify kept failing (5xx, timeouts, resets, throttling) after every retry."""


class ShopifyQueryError(ShopifyError):
    """Shopify answered with GraphQL errors or mutation userErrors."""

    def __init__(self, message: str, *, shop: str = "", errors: list[Any] | None = None) -> None:
        super().__init__(message, shop=shop)
        self.errors = errors or []


class ShopifyCostTooHigh(ShopifyQueryError):
    """A query asks for more points than Shopify allows one query, or than the shop's bucket holds.

    Asking again cannot help; a smaller page can. ``requested`` is the query's requested cost
    and ``limit`` the most a query may cost here.
    """

    def __init__(
        self, message: str, *, shop: str = "", errors: list[Any] | None = None, requested: float, limit: float
    ) -> None:
        super().__init__(message, shop=shop, errors=errors)
        self.requested = requested
        self.limit = limit


# stats -------------------------------------------------------------------------------------
@dataclass
class ClientStats:
    """What the client did: requests, points and waiting. Read it to judge API efficiency."""

    requests: int = 0
    points: float = 0.0  # actual query cost, summed
    requested_points: float = 0.0
    throttled: int = 0  # THROTTLED answers and 429s
    throttle_wait_s: float = 0.0  # waiting after THROTTLED/429 answers
    pacing_wait_s: float = 0.0  # waiting before a request so the bucket holds its cost
    retries: Counter[str] = field(default_factory=Counter)
    token_fetches: int = 0

    @property
    def wait_s(self) -> float:
        """All time spent waiting on the rate limit."""
        return self.throttle_wait_s + self.pacing_wait_s

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return {
            "requests": self.requests,
            "points": self.points,
            "requested_points": self.requested_points,
            "throttled": self.throttled,
            "throttle_wait_s": round(self.throttle_wait_s, 3),
            "pacing_wait_s": round(self.pacing_wait_s, 3),
            "retries": dict(self.retries),
            "token_fetches": self.token_fetches,
        }


class _Retry(Exception):
    """Internal: this attempt failed in a retryable way."""

    def __init__(self, reason: str, wait: float | None = None, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait
        self.detail = detail


_SCOPE_IN_MESSAGE = re.compile(r"`(\w+)`")
_TRANSPORT_ERRORS = (httpx.TransportError,)  # connect/read/write errors, resets, protocol errors


class TokenSource(Protocol):
    """Where a client gets an expiring token it cannot mint itself (an OAuth offline token).

    The source refreshes and stores the token; processes sharing one store share its source.
    """

    def token(self, stale: str | None = None) -> tuple[str, datetime | None]:
        """A usable access token and when it expires (UTC; None = never), never ``stale`` (a
        token this client found expired or Shopify refused). Raises ``ShopifyAuthError`` when
        no token can be had (the store must be reconnected)."""
        ...


class ShopifyClient:
    """A GraphQL Admin API client for one shop.

    ``base_url`` overrides ``https://<shop>`` (the devstore serves shops under
    ``http://host:port/shops/<handle>``). Give either ``access_token`` or
    ``client_id`` + ``client_secret``. The token is only ever put in the request header.
    ``shared_dir`` is a folder shared by the processes calling the shop: their pacing then
    shares one view of the shop's cost bucket (without it, only this client's threads do),
    and bulk exports share the shop's bulk-operation slots.
    """

    # Backoff and pacing knobs; tests shrink them.
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    token_refresh_margin_s: float = 60.0
    max_wait_s: float = 120.0  # longest single wait on Retry-After or a refilling bucket

    def __init__(
        self,
        shop: str,
        *,
        access_token: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        base_url: str | None = None,
        timeout: float = 30.0,
        max_attempts: int = 8,
        shared_dir: Path | None = None,
        token_source: TokenSource | None = None,
    ) -> None:
        if not access_token and not (client_id and client_secret) and token_source is None:
            raise ValueError(f"ShopifyClient for {shop} needs an access token or client id and secret")
        if token_source is not None:
            access_token = None  # the source's token, refreshed by the source
        self.shop = shop
        self.base_url = (base_url or f"https://{shop}").rstrip("/")
        self.graphql_url = f"{self.base_url}/admin/api/{API_VERSION}/graphql.json"
        self.token_url = f"{self.base_url}/admin/oauth/access_token"
        self.max_attempts = max(1, max_attempts)
        self.stats = ClientStats()
        self._static_token = access_token
        self._client_id = client_id
        self._client_secret = client_secret
        self._token_source = token_source
        self._token: str | None = access_token
        self._token_expires: float | None = None  # monotonic deadline; None = never
        self._token_lock = threading.Lock()
        self._bucket: Bucket | None = None  # the last reading, dated by time.time()
        self._bucket_lock = threading.Lock()
        self.shared_dir = shared_dir
        self._token_accepted = False  # set once Shopify answered this client; a 401 clears it
        self._pacer = Pacer(state_file(shared_dir, shop, "bucket") if shared_dir is not None else None)
        self._stats_lock = threading.Lock()
        self._random = random.Random()
        self._local = threading.local()
        self._known_costs: dict[int, float] = {}
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            headers={"User-Agent": "shopsync/0.1", "Accept": "application/json"},
        )

    # lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Close the underlying connections."""
        self._http.close()

    def __enter__(self) -> ShopifyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        auth = "access_token" if self._static_token is not None else "client_credentials"
        if self._token_source is not None:
            auth = "refreshed_token"
        return f"ShopifyClient(shop={self.shop!r}, base_url={self.base_url!r}, auth={auth})"

    @property
    def last_cost(self) -> tuple[float | None, float | None]:
        """(requested, actual) cost of this thread's last answered query."""
        return getattr(self._local, "cost", (None, None))

    @property
    def bucket(self) -> Bucket | None:
        """The cost bucket as last observed (``at`` is ``time.time()``); None before any answer.

        Before this client's first answer it is what the processes sharing its
        ``shared_dir`` last learned, so a new run sizes even its first page to the bucket.
        """
        return self._bucket or self._pacer.bucket()

    def available_points(self) -> float | None:
        """Points the shop's bucket should hold now, net of requests still in flight (None if unknown).

        Counts the reservations of every thread and, with a ``shared_dir``, every process
        calling the shop.
        """
        bucket = self._pacer.bucket()
        return None if bucket is None else bucket.available_at(time.time())

    # auth --------------------------------------------------------------------------------
    def _auth_error(self) -> ShopifyAuthError:
        return ShopifyAuthError(
            f"Shopify rejected the access token for {self.shop}: reconnect the store "
            "(the token was revoked, expired or the app was uninstalled).",
            shop=self.shop,
        )

    def _current_token(self, *, force_refresh: bool = False) -> str:
        if self._static_token is not None:
            return self._static_token
        with self._token_lock:
            fresh = self._token is not None and (
                self._token_expires is None or time.monotonic() < self._token_expires - self._refresh_margin()
            )
            if force_refresh or not fresh:
                if self._token_source is not None:
                    self._take_token(stale=self._token)
                else:
                    self._fetch_token()
            assert self._token is not None
            return self._token

    def _take_token(self, stale: str | None) -> None:
        """Ask the token source for a token other than ``stale`` (holding ``_token_lock``)."""
        assert self._token_source is not None
        token, expires_at = self._token_source.token(stale=stale)
        self._token = token
        self._token_expires = (
            None
            if expires_at is None
            else time.monotonic() + (expires_at - datetime.now(UTC)).total_seconds()
        )

    def _refresh_margin(self) -> float:
        return self.token_refresh_margin_s

    def _fetch_token(self) -> None:
        """Exchange the client credentials for an access token (holding ``_token_lock``)."""
        body = {
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "grant_type": "client_credentials",
        }
        last: _Retry | None = None
        for attempt in range(self.max_attempts):
            if attempt:
                self._sleep_backoff(attempt, last)
            try:
                response = self._http.post(self.token_url, json=body)
            except _TRANSPORT_ERRORS as exc:
                last = self._count_retry(_Retry(_transport_reason(exc)))
                continue
            if response.status_code in (400, 401, 403, 404):
                raise ShopifyAuthError(
                    f"Shopify refused the app credentials for {self.shop} (HTTP {response.status_code}): "
                    "check the client id and secret, or reconnect the store.",
                    shop=self.shop,
                )
            if response.status_code == 429 or response.status_code >= 500:
                last = self._count_retry(_Retry(str(response.status_code), _retry_after(response)))
                continue
            try:
                payload = response.json()
                token = payload["access_token"]
            except (ValueError, KeyError):
                last = self._count_retry(_Retry("invalid_json"))
                continue
            expires_in = payload.get("expires_in")
            self._token = token
            self._token_expires = time.monotonic() + float(expires_in) if expires_in else None
            with self._stats_lock:
                self.stats.token_fetches += 1
            # never the token itself
            log.info("shopify %s: obtained an access token (expires in %s s)", self.shop, expires_in)
            return
        raise ShopifyUnavailable(
            f"Shopify did not issue an access token for {self.shop} after {self.max_attempts} attempts "
            f"(last: {last.reason if last else 'unknown'}); try again later.",
            shop=self.shop,
        )

    # pacing ------------------------------------------------------------------------------
    def _pace(self, expected_cost: float) -> str | None:
        """Wait until the shop's bucket should hold ``expected_cost`` points; returns the reservation.

        The points are reserved before waiting, so concurrent callers (threads, and processes
        sharing a ``shared_dir``) queue behind each other instead of all seeing the same free
        points.
        """
        wait, reservation = self._pacer.reserve(expected_cost, max_wait_s=self.max_wait_s)
        if wait > 0:
            with self._stats_lock:
                self.stats.pacing_wait_s += wait
            time.sleep(wait)
        return reservation

    def _observe_cost(self, payload: dict[str, Any]) -> tuple[float | None, float | None]:
        """Read ``extensions.cost``: update the bucket, the pacer and the stats. Returns (requested, actual)."""
        cost = (payload.get("extensions") or {}).get("cost") or {}
        status = cost.get("throttleStatus") or {}
        requested = cost.get("requestedQueryCost")
        actual = cost.get("actualQueryCost")
        if status:
            try:
                bucket = Bucket(
                    maximum=float(status["maximumAvailable"]),
                    available=float(status["currentlyAvailable"]),
                    restore_rate=float(status["restoreRate"]),
                    # Shopify measured the bucket somewhere between sending and answering; dating the
                    # reading at its arrival never overestimates what has refilled since
                    at=time.time(),
                )
            except (KeyError, TypeError, ValueError):
                bucket = None
            if bucket is not None:
                with self._bucket_lock:
                    self._bucket = bucket
                reservation = getattr(self._local, "reservation", None)
                self._pacer.observe(bucket.maximum, bucket.available, bucket.restore_rate, reservation)
                self._local.reservation = None
        self._local.cost = (
            float(requested) if requested is not None else None,
            float(actual) if actual is not None else None,
        )
        with self._stats_lock:
            if actual is not None:
                self.stats.points += float(actual)
            if requested is not None:
                self.stats.requested_points += float(requested)
        return self._local.cost

    def _throttle_wait(self, requested: float | None) -> float:
        """How long until the bucket refills enough for a query that was THROTTLED."""
        bucket = self._bucket
        if bucket is None:
            return 1.0
        need = min(requested or bucket.maximum * 0.1, bucket.maximum)
        missing = need - bucket.available_at(time.time())
        return max(0.05, missing / max(bucket.restore_rate, 1e-6))

    # retries -----------------------------------------------------------------------------
    def _count_retry(self, retry: _Retry) -> _Retry:
        with self._stats_lock:
            self.stats.retries[retry.reason] += 1
        return retry

    def _sleep_backoff(self, attempt: int, last: _Retry | None) -> None:
        if last is not None and last.wait is not None:
            wait = min(last.wait, self.max_wait_s)
        else:
            # full jitter: spreads the retries of parallel workers
            ceiling = min(self.backoff_cap_s, self.backoff_base_s * (2 ** (attempt - 1)))
            wait = self._random.uniform(ceiling / 2, ceiling)
        if last is not None and last.reason in ("THROTTLED", "429"):
            with self._stats_lock:
                self.stats.throttle_wait_s += wait
        time.sleep(wait)

    # the request -------------------------------------------------------------------------
    def execute(
        self, document: str, variables: dict | None = None, *, expected_cost: float | None = None
    ) -> dict:
        """Run a GraphQL document and return its ``data``.

        ``expected_cost`` (the query's requested cost, if the caller knows it) lets the client
        wait for the bucket before sending instead of being THROTTLED. Raises
        ``ShopifyAuthError``, ``ShopifyAccessDenied``, ``ShopifyQueryError`` or
        ``ShopifyUnavailable``.
        """
        try:
            data = self._execute(document, variables, expected_cost)
        except ShopifyAuthError as exc:
            self._note_token(str(exc))
            raise
        if not self._token_accepted:
            self._note_token(None)
        return data

    def _note_token(self, rejection: str | None) -> None:
        """Tell the processes sharing ``shared_dir`` whether Shopify accepts the shop's token."""
        self._token_accepted = rejection is None
        if self.shared_dir is None:
            return
        with SharedState(state_file(self.shared_dir, self.shop, "token")).edit() as state:
            state.clear()
            if rejection is not None:
                state.update({"rejected": rejection, "at": time.time()})

    def _execute(self, document: str, variables: dict | None, expected_cost: float | None) -> dict:
        body = {"query": document, "variables": variables or {}}
        if expected_cost is None:
            # the same document asked before costs about the same again
            expected_cost = self._known_costs.get(hash(document))
        refreshed = False
        last: _Retry | None = None
        for attempt in range(self.max_attempts):
            if attempt:
                self._sleep_backoff(attempt, last)
            self._local.reservation = self._pace(expected_cost or 0.0)
            try:
                data = self._attempt(body)
                requested, _ = self.last_cost
                if requested is not None:
                    self._known_costs[hash(document)] = requested
                return data
            except _Retry as retry:
                if retry.reason == "THROTTLED" and self.last_cost[0] is not None:
                    expected_cost = self.last_cost[0]
                last = self._count_retry(retry)
                log.warning(
                    "shopify %s: attempt %d/%d failed (%s%s); %s",
                    self.shop,
                    attempt + 1,
                    self.max_attempts,
                    retry.reason,
                    f": {retry.detail}" if retry.detail else "",
                    "retrying" if attempt + 1 < self.max_attempts else "giving up",
                )
            except ShopifyAuthError:
                # an expiring token (client credentials, OAuth offline) may have expired early or
                # been rotated: one fresh token
                if self._static_token is None and not refreshed:
                    refreshed = True
                    self._count_retry(_Retry("401"))
                    self._current_token(force_refresh=True)
                    last = None
                    continue
                raise
            finally:
                # an attempt answered without a cost reading (a reset, a 5xx) ends its reservation
                self._pacer.release(self._local.reservation)
                self._local.reservation = None
        reason = last.reason if last else "unknown"
        raise ShopifyUnavailable(
            f"Shopify at {self.shop} kept failing after {self.max_attempts} attempts "
            f"(last: {_describe(reason)}). Nothing was lost; try the sync again later.",
            shop=self.shop,
        )

    def _attempt(self, body: dict[str, Any]) -> dict:
        self._local.cost = (None, None)  # no stale cost from an earlier answer
        token = self._current_token()
        headers = {"X-Shopify-Access-Token": token, "Content-Type": "application/json"}
        with self._stats_lock:
            self.stats.requests += 1
        try:
            response = self._http.post(self.graphql_url, json=body, headers=headers)
        except _TRANSPORT_ERRORS as exc:
            raise _Retry(_transport_reason(exc), detail=type(exc).__name__) from None
        status = response.status_code
        if status == 401:
            raise self._auth_error()
        if status == 403:
            raise ShopifyAccessDenied(
                f"Shopify denied access for {self.shop} (HTTP 403): the app is missing a permission; "
                "grant it in the app's access scopes and reconnect the store.",
                shop=self.shop,
            )
        if status == 429:
            with self._stats_lock:
                self.stats.throttled += 1
            raise _Retry("429", _retry_after(response) or 1.0)
        if status >= 500:
            raise _Retry(str(status) if status in (500, 502, 503, 504) else "5xx")
        if status == 402 or status == 423:
            raise ShopifyUnavailable(
                f"Shopify says the store {self.shop} is {'frozen (unpaid)' if status == 402 else 'locked'} "
                f"(HTTP {status}); syncing resumes once the store owner resolves it.",
                shop=self.shop,
            )
        if status == 404:
            raise ShopifyUnavailable(
                f"No Shopify store answers at {self.shop} (HTTP 404): check the store domain.",
                shop=self.shop,
            )
        if status >= 400:
            raise ShopifyQueryError(
                f"Shopify rejected the request for {self.shop} (HTTP {status}).", shop=self.shop
            )
        try:
            payload = json.loads(response.content)
        except ValueError:
            raise _Retry("invalid_json") from None
        if not isinstance(payload, dict):
            raise _Retry("invalid_json")
        requested, _actual = self._observe_cost(payload)
        errors = payload.get("errors")
        if errors:
            self._raise_for_errors(errors, requested)
        data = payload.get("data")
        if data is None:
            raise _Retry("invalid_json", detail="no data")
        return data

    def _raise_for_errors(self, errors: Any, requested: float | None) -> None:
        if isinstance(errors, str):  # Shopify's top-level string form, e.g. auth failures
            errors = [{"message": errors}]
        codes = [((e.get("extensions") or {}).get("code") if isinstance(e, dict) else None) for e in errors]
        messages = [str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors]
        if "THROTTLED" in codes:
            with self._stats_lock:
                self.stats.throttled += 1
            bucket = self._bucket
            if requested is not None and bucket is not None and requested > bucket.maximum:
                # the bucket never holds this much: waiting for it would be THROTTLED forever
                raise ShopifyCostTooHigh(
                    f"A query to {self.shop} asks for {requested:.0f} points, more than the store's whole "
                    f"rate-limit bucket ({bucket.maximum:.0f}); ask for fewer records per page.",
                    shop=self.shop,
                    errors=errors,
                    requested=requested,
                    limit=bucket.maximum,
                )
            raise _Retry("THROTTLED", self._throttle_wait(requested))
        if "ACCESS_DENIED" in codes:
            text = next(m for m, c in zip(messages, codes, strict=True) if c == "ACCESS_DENIED")
            match = _SCOPE_IN_MESSAGE.search(text)
            scope = match.group(1) if match else None
            what = f"the `{scope}` access scope" if scope else "an access scope"
            raise ShopifyAccessDenied(
                f"Shopify denied access for {self.shop}: the app needs {what}. "
                "Grant it in the app's settings, then reconnect the store.",
                shop=self.shop,
                scope=scope,
            )
        if any(c in ("UNAUTHORIZED", "UNAUTHENTICATED") for c in codes):
            raise self._auth_error()
        if "INTERNAL_SERVER_ERROR" in codes:
            raise _Retry("graphql_internal_error", detail="; ".join(messages)[:300])
        if "MAX_COST_EXCEEDED" in codes:
            raise ShopifyCostTooHigh(
                f"Query too expensive for Shopify ({requested} points > {MAX_QUERY_COST}): {'; '.join(messages)}",
                shop=self.shop,
                errors=errors,
                requested=float(requested or 0.0),
                limit=float(MAX_QUERY_COST),
            )
        raise ShopifyQueryError(
            f"Shopify GraphQL error for {self.shop}: {'; '.join(messages)}", shop=self.shop, errors=errors
        )


def token_rejection(shared_dir: Path, shop: str) -> str | None:
    """Why Shopify last refused the shop's token (401, app uninstalled), or None if it last accepted it.

    Any client given ``shared_dir`` records this: the refusal when Shopify rejects the token,
    and its end at the first answer after that.
    """
    with SharedState(state_file(shared_dir, shop, "token")).edit() as state:
        rejected = state.get("rejected")
    return str(rejected) if rejected else None


def raise_user_errors(payload: dict[str, Any] | None, operation: str, *, shop: str = "") -> None:
    """Raise ``ShopifyQueryError`` if a mutation payload carries ``userErrors``."""
    errors = (payload or {}).get("userErrors") or []
    if errors:
        text = "; ".join(
            f"{'.'.join(map(str, e.get('field') or [])) or operation}: {e.get('message')}"
            + (f" [{e['code']}]" if e.get("code") else "")
            for e in errors
        )
        raise ShopifyQueryError(f"{operation} failed for {shop}: {text}", shop=shop, errors=errors)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _transport_reason(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    return "reset"


def _describe(reason: str) -> str:
    return {
        "THROTTLED": "throttled by Shopify's rate limit",
        "429": "too many requests (HTTP 429)",
        "timeout": "the request timed out",
        "connect": "could not connect",
        "reset": "the connection was reset",
        "invalid_json": "an unreadable response",
    }.get(reason, f"HTTP {reason}" if reason.isdigit() else reason)
