"""Getting an access token from Shopify: the authorization-code flow and the client-credentials grant.

Authorization code (a public or Partner app): the merchant opens the authorize URL, approves,
and Shopify redirects the browser to ``redirect_uri`` with ``code``, ``shop``, ``state``,
``timestamp`` and ``hmac``. The callback is trusted only when its ``hmac`` (hex HMAC-SHA256
of the other parameters, sorted and joined as ``k=v`` with ``&``, keyed with the app's
client secret) verifies, its ``state`` is the one this attempt made, and its ``shop`` is
the store being connected. The code is then exchanged for an expiring offline token (an
hour) and a refresh token (``expiring=1``): Shopify requires public apps to use expiring
offline tokens from 1 January 2027. ``refresh_offline_token`` spends the refresh token for a
new pair; Shopify rotates the refresh token on every use. A store connected earlier with a
non-expiring offline token is moved over by ``migrate_offline_token`` (token exchange).

Client credentials (an app the merchant created or installed for their own store): the
client id and secret are exchanged for a token that expires (24 h on Shopify); the
``ShopifyClient`` refreshes it by itself, this module only reads its expiry for the record.

Tokens and secrets never appear in messages or logs.
"""

from __future__ import annotations

import hashlib
import hmac
import queue
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

CALLBACK_PATH = "/shopsync/oauth/callback"
OFFLINE_TOKEN_TYPE = "urn:shopify:params:oauth:token-type:offline-access-token"
DEFAULT_TIMEOUT_S = 300.0


class OAuthError(Exception):
    """The grant did not happen; ``str(exc)`` says why and what to do (no secrets in it)."""


class OAuthRefused(OAuthError):
    """Shopify refused the app's credentials (wrong client id or secret, app not installed)."""


@dataclass(frozen=True)
class TokenGrant:
    """An access token Shopify issued, the scopes it carries, and when it expires (None = never).

    An expiring offline token comes with the ``refresh_token`` that buys the next one.
    """

    access_token: str
    scopes: tuple[str, ...]
    expires_at: datetime | None = None
    refresh_token: str | None = None
    refresh_expires_at: datetime | None = None

    def __repr__(self) -> str:  # the tokens must not reach a log through a repr
        return f"TokenGrant(scopes={self.scopes!r}, expires_at={self.expires_at!r})"

    def credentials(self) -> dict[str, str]:
        """The grant as kept in a store's encrypted credentials: the tokens and their expiry instants (ISO)."""
        stored = {"access_token": self.access_token}
        if self.refresh_token:
            stored["refresh_token"] = self.refresh_token
        if self.expires_at is not None:
            stored["access_token_expires_at"] = self.expires_at.isoformat()
        if self.refresh_expires_at is not None:
            stored["refresh_token_expires_at"] = self.refresh_expires_at.isoformat()
        return stored


def _grant(payload: dict[str, Any], started: datetime) -> TokenGrant:
    def at(key: str) -> datetime | None:
        seconds = payload.get(key)
        return started + timedelta(seconds=float(seconds)) if seconds else None

    refresh = payload.get("refresh_token")
    return TokenGrant(
        str(payload["access_token"]),
        _scopes(payload.get("scope")),
        at("expires_in"),
        str(refresh) if refresh else None,
        at("refresh_token_expires_in"),
    )


def _token_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/admin/oauth/access_token"


def _scopes(raw: Any) -> tuple[str, ...]:
    return tuple(sorted({s.strip() for s in str(raw or "").split(",") if s.strip()}))


def sign_params(params: dict[str, str], secret: str) -> str:
    """Shopify's OAuth ``hmac`` of callback parameters (``hmac``/``signature`` left out)."""
    message = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in ("hmac", "signature"))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def authorize_url(base_url: str, client_id: str, scopes: Iterable[str], redirect_uri: str, state: str) -> str:
    """The URL the merchant opens to approve the app (offline access: no ``grant_options``)."""
    query = urlencode(
        {
            "client_id": client_id,
            "scope": ",".join(sorted(set(scopes))),
            "redirect_uri": redirect_uri,
            "state": state,
        }
    )
    return f"{base_url.rstrip('/')}/admin/oauth/authorize?{query}"


def verify_callback(params: dict[str, str], *, client_secret: str, state: str, shop: str) -> str:
    """The authorization code of a callback, or ``OAuthError`` saying which check failed."""
    given = params.get("hmac", "")
    if not given or not hmac.compare_digest(given, sign_params(params, client_secret)):
        raise OAuthError(
            "The OAuth callback was refused: its hmac signature does not verify with the app's client "
            "secret, so it did not come from Shopify unaltered. Nothing was stored. Check --client-secret "
            "and run the connect again."
        )
    if not hmac.compare_digest(params.get("state", ""), state):
        raise OAuthError(
            "The OAuth callback was refused: its state does not match this connect attempt (a stale or "
            "forged redirect). Nothing was stored. Run the connect again and approve from the URL it prints."
        )
    if params.get("shop", "").lower() != shop:
        raise OAuthError(
            f"The OAuth callback was refused: it is for {params.get('shop') or 'no shop'}, not {shop}. "
            "Nothing was stored. Approve the app in the admin of the store you are connecting."
        )
    if not params.get("code"):
        raise OAuthError("The OAuth callback carried no authorization code. Run the connect again.")
    return params["code"]


def _post_token(base_url: str, body: dict[str, str], shop: str, timeout: float) -> dict[str, Any]:
    try:
        response = httpx.post(_token_url(base_url), json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        raise OAuthError(
            f"Could not reach {shop} to obtain an access token ({type(exc).__name__}); "
            "check the network and try again."
        ) from None
    if response.status_code in (400, 401, 403, 404):
        try:
            detail = str(response.json().get("error_description") or "")
        except ValueError:
            detail = ""
        raise OAuthRefused(
            f"Shopify refused the app credentials for {shop} (HTTP {response.status_code}"
            + (f": {detail}" if detail else "")
            + "). Check the client id and secret and that the app is installed on the store."
        )
    if response.status_code >= 300:
        raise OAuthError(
            f"Shopify did not issue an access token for {shop} (HTTP {response.status_code}); try again later."
        )
    try:
        payload = response.json()
        payload["access_token"]
    except (ValueError, KeyError, TypeError):
        raise OAuthError(f"Shopify's token answer for {shop} was not understood; try again later.") from None
    return dict(payload)


def _token_grant(
    shop: str,
    base_url: str,
    client_id: str,
    client_secret: str,
    fields: dict[str, str],
    timeout: float,
    now: datetime | None = None,
) -> TokenGrant:
    """Ask the token endpoint for a grant (the app's keys plus ``fields``); expiries from ``now``."""
    started = now or datetime.now(UTC)
    body = {"client_id": client_id, "client_secret": client_secret, **fields}
    return _grant(_post_token(base_url, body, shop, timeout), started)


def exchange_code(
    shop: str, base_url: str, client_id: str, client_secret: str, code: str, *, timeout: float = 30.0
) -> TokenGrant:
    """Exchange an authorization code for an expiring offline access token and its refresh token."""
    fields = {"code": code, "expiring": "1"}
    return _token_grant(shop, base_url, client_id, client_secret, fields, timeout)


def migrate_offline_token(
    shop: str, base_url: str, client_id: str, client_secret: str, token: str, *, timeout: float = 30.0
) -> TokenGrant:
    """Exchange a non-expiring offline token for an expiring one and its refresh token (token
    exchange), without the merchant; the old token stops working. Asked again with the same
    old token (a lost answer), Shopify returns the same pair for seven days."""
    fields = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": token,
        "subject_token_type": OFFLINE_TOKEN_TYPE,
        "requested_token_type": OFFLINE_TOKEN_TYPE,
        "expiring": "1",
    }
    return _token_grant(shop, base_url, client_id, client_secret, fields, timeout)


def refresh_offline_token(
    shop: str, base_url: str, client_id: str, client_secret: str, refresh_token: str, *, timeout: float = 30.0
) -> TokenGrant:
    """Spend a refresh token for a new expiring offline token and the refresh token that replaces it.

    Raises ``OAuthRefused`` when Shopify refuses it (revoked, expired, app uninstalled): the
    store must then be reconnected.
    """
    fields = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return _token_grant(shop, base_url, client_id, client_secret, fields, timeout)


def client_credentials_grant(
    shop: str,
    base_url: str,
    client_id: str,
    client_secret: str,
    *,
    timeout: float = 30.0,
    now: datetime | None = None,
) -> TokenGrant:
    """A token from the client-credentials grant, with its expiry as a UTC instant."""
    fields = {"grant_type": "client_credentials"}
    return _token_grant(shop, base_url, client_id, client_secret, fields, timeout, now)


class CallbackServer:
    """A one-shot HTTP listener on 127.0.0.1 for the OAuth redirect (``port`` 0 = a free one).

    The first request to ``CALLBACK_PATH`` is checked by ``check`` (which returns an error
    message or None); the browser gets the verdict, ``wait`` returns the parameters or
    raises the refusal.
    """

    def __init__(self, check: Callable[[dict[str, str]], str | None], port: int = 0) -> None:
        results: queue.Queue[tuple[dict[str, str], str | None]] = queue.Queue()
        self._results = results

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != CALLBACK_PATH:
                    self._answer(404, "Not the shopsync OAuth callback.")
                    return
                params = dict(parse_qsl(parts.query, keep_blank_values=True))
                problem = check(params)
                if problem is None:
                    self._answer(200, "shopsync: the store is authorised. You can close this tab.")
                else:
                    self._answer(400, "shopsync: " + problem)
                results.put((params, problem))

            def _answer(self, status: int, text: str) -> None:
                body = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # the query holds the code
                return

        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError as exc:
            raise OAuthError(
                f"Cannot listen for the OAuth callback on 127.0.0.1:{port} ({exc.strerror}); "
                "choose another --callback-port."
            ) from None
        self.port = int(self._server.server_address[1])
        self.redirect_uri = f"http://127.0.0.1:{self.port}{CALLBACK_PATH}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="oauth-callback", daemon=True)

    def __enter__(self) -> CallbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait(self, timeout: float) -> dict[str, str]:
        """The parameters of the first callback (``OAuthError`` if refused or none came in time)."""
        try:
            params, problem = self._results.get(timeout=timeout)
        except queue.Empty:
            raise OAuthError(
                f"No OAuth callback arrived within {timeout:.0f} s; nothing was stored. Run the connect "
                "again and open the printed URL in a browser logged in to the store's admin."
            ) from None
        if problem is not None:
            raise OAuthError(problem)
        return params


def authorize(
    shop: str,
    base_url: str,
    client_id: str,
    client_secret: str,
    scopes: Iterable[str],
    *,
    show_url: Callable[[str], None],
    port: int = 0,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> TokenGrant:
    """Run the authorization-code flow end to end and return the offline token.

    ``show_url`` is given the authorize URL once the callback listener is up (the CLI prints
    it; a test follows it as the merchant would).
    """
    state = secrets.token_urlsafe(24)

    def check(params: dict[str, str]) -> str | None:
        try:
            verify_callback(params, client_secret=client_secret, state=state, shop=shop)
        except OAuthError as exc:
            return str(exc)
        return None

    with CallbackServer(check, port) as server:
        show_url(authorize_url(base_url, client_id, scopes, server.redirect_uri, state))
        params = server.wait(timeout)
    return exchange_code(shop, base_url, client_id, client_secret, params["code"])
