"""Access tokens, OAuth (authorization code and client credentials) and the REST endpoints.

Every Admin API call carries ``X-Shopify-Access-Token``; an unknown, expired or revoked
token (or an uninstalled app) gets Shopify's 401 body. Tokens come three ways: static
tokens installed with the world, the client-credentials grant (expiring, TTL per app), and
the authorization-code flow, whose redirect goes only to one of the app's allowed
redirection URLs and carries an ``hmac`` of the other query parameters signed with the
client secret, by Shopify's rule (the app verifies it before exchanging the code). The code
buys a non-expiring offline token, or with ``expiring=1`` an offline token that expires
after an hour and a refresh token (90 days); ``grant_type=refresh_token`` spends a refresh
token for a new pair, and the spent one keeps working until its replacement is first used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from devstore.state import AppCredentials, ShopState, World

INVALID_TOKEN_BODY = {
    "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
}
AUTH_CODE_TTL = timedelta(minutes=10)
OFFLINE_TOKEN_TTL = timedelta(hours=1)  # Shopify's expiring offline tokens
REFRESH_TOKEN_TTL = timedelta(days=90)
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
OFFLINE_TOKEN_TYPE = "urn:shopify:params:oauth:token-type:offline-access-token"
MIGRATION_RETRY_WINDOW = timedelta(days=7)  # a lost migration answer can be asked for again


def unauthorized() -> JSONResponse:
    """Shopify's 401 for a missing, unknown, expired or revoked access token."""
    return JSONResponse(INVALID_TOKEN_BODY, status_code=401)


def authenticate(world: World, shop: ShopState, token: str | None) -> AppCredentials | None:
    """The installed app owning ``token`` on ``shop`` if the token is valid now, else None."""
    if not token:
        return None
    now = world.clock.now()
    with shop.lock:
        for app in shop.apps.values():
            if token in app.tokens:
                expiry = app.tokens[token]
                if not app.installed or (expiry is not None and expiry <= now):
                    return None
                return app
    return None


def sign_params(params: dict[str, str], secret: str) -> str:
    """Shopify's OAuth hmac: hex HMAC-SHA256 of ``k=v`` pairs (hmac removed), sorted, joined by ``&``."""
    message = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in ("hmac", "signature"))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


@dataclass
class PendingGrant:
    """An authorization code waiting to be exchanged for an offline token."""

    shop: str
    client_id: str
    scopes: set[str]
    expires_at: datetime


class OAuthState:
    """Authorization codes issued and not yet exchanged, across all shops."""

    def __init__(self) -> None:
        self.codes: dict[str, PendingGrant] = {}


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def parse_scopes(raw: str | None) -> set[str]:
    """``"read_customers, write_customers"`` -> ``{"read_customers", "write_customers"}``."""
    return {s.strip() for s in (raw or "").split(",") if s.strip()}


def scope_string(scopes: set[str]) -> str:
    """Scopes as Shopify lists them in token responses (comma-separated)."""
    return ",".join(sorted(scopes))


def _url_key(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower(), parts.path or "/"


def redirect_allowed(redirect_uri: str, allowed: list[str]) -> bool:
    """True when ``redirect_uri`` has the scheme, host, port and path of an allowed URL.

    The query string may differ (apps carry their own parameters through it); anything
    else, even a trailing slash, must match.
    """
    key = _url_key(redirect_uri)
    return any(_url_key(url) == key for url in allowed)


def authorize(request: Request, world: World, shop: ShopState, oauth: OAuthState) -> Response:
    """``GET /admin/oauth/authorize``: grant at once (no merchant screen) and redirect with a code."""
    params = dict(request.query_params)
    client_id = params.get("client_id", "")
    redirect_uri = params.get("redirect_uri", "")
    app = shop.apps.get(client_id)
    if app is None:
        return _oauth_error(
            "invalid_request", f"The client_id {client_id!r} is not an app installed on {shop.domain}."
        )
    if not redirect_uri or urlsplit(redirect_uri).scheme not in ("http", "https"):
        return _oauth_error("invalid_request", "The redirect_uri is missing or is not an http(s) URL.")
    if not redirect_allowed(redirect_uri, app.redirect_urls):
        # a changed redirect_uri is how an authorization code gets stolen: refuse it, as Shopify does
        return _oauth_error(
            "invalid_request",
            f"The redirect_uri is not whitelisted: {redirect_uri} is not one of the app's allowed "
            "redirection URLs. Register it with `shopsync devstore serve --redirect-url URL` or "
            f'PUT /_devstore/shops/{shop.handle}/app {{"redirect_urls": [...]}}.',
        )
    now = world.clock.now()
    code = secrets.token_hex(16)
    requested = parse_scopes(params.get("scope")) or set(app.scopes)
    oauth.codes[code] = PendingGrant(shop.domain, client_id, requested, now + AUTH_CODE_TTL)
    answer = {
        "code": code,
        "host": base64.b64encode(f"admin.shopify.com/store/{shop.handle}".encode()).decode().rstrip("="),
        "shop": shop.domain,
        "state": params.get("state", ""),
        "timestamp": str(int(now.timestamp())),
    }
    answer["hmac"] = sign_params(answer, app.client_secret)
    parts = urlsplit(redirect_uri)
    query = "&".join(p for p in (parts.query, urlencode(answer)) if p)
    return RedirectResponse(
        urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment)), status_code=302
    )


async def _form_or_json(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "")
    if "application/json" in content_type:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return {}
        return {k: str(v) for k, v in body.items()} if isinstance(body, dict) else {}
    # urlencoded forms parsed here: Starlette's form parser needs python-multipart, not in the lock
    values = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
    # some clients send the grant as query parameters of the POST
    for key, value in request.query_params.items():
        values.setdefault(key, value)
    return values


async def access_token(request: Request, world: World, shop: ShopState, oauth: OAuthState) -> Response:
    """``POST /admin/oauth/access_token``: client-credentials grant or authorization-code exchange."""
    params = await _form_or_json(request)
    client_id = params.get("client_id", "")
    app = shop.apps.get(client_id)
    if app is None or not hmac.compare_digest(app.client_secret, params.get("client_secret", "")):
        return _oauth_error(
            "invalid_client", "Client authentication failed: unknown client_id or wrong client_secret."
        )
    now = world.clock.now()
    grant_type = params.get("grant_type", "authorization_code" if "code" in params else "")
    if grant_type == "client_credentials":
        if not app.installed:
            return _oauth_error("invalid_client", f"The app is not installed on {shop.domain}.")
        with shop.lock:
            token = app.issue_token(now, app.token_ttl)
        return JSONResponse(
            {
                "access_token": token,
                "scope": scope_string(app.scopes),
                "expires_in": int(app.token_ttl.total_seconds()),
            }
        )
    if grant_type == "authorization_code":
        grant = oauth.codes.pop(params.get("code", ""), None)
        if (
            grant is None
            or grant.client_id != client_id
            or grant.shop != shop.domain
            or grant.expires_at <= now
        ):
            return _oauth_error(
                "invalid_request", "This authorization code was not found or was already used."
            )
        with shop.lock:
            app.scopes = set(grant.scopes)
            app.installed = True
            if params.get("expiring") != "1":
                return JSONResponse(
                    {"access_token": app.issue_token(now, None), "scope": scope_string(app.scopes)}
                )
            return JSONResponse(_expiring_pair(app, now))
    if grant_type == "refresh_token":
        with shop.lock:
            if not app.installed or not app.use_refresh_token(params.get("refresh_token", ""), now):
                return _oauth_error("invalid_grant", "The refresh token is invalid, expired or was revoked.")
            return JSONResponse(_expiring_pair(app, now, replacing=params["refresh_token"]))
    if grant_type == TOKEN_EXCHANGE and params.get("subject_token_type") == OFFLINE_TOKEN_TYPE:
        return _migrate(app, params.get("subject_token", ""), params.get("expiring") == "1", now, shop)
    return _oauth_error("unsupported_grant_type", f"grant_type {grant_type!r} is not supported.")


def _migrate(app: AppCredentials, old: str, expiring: bool, now: datetime, shop: ShopState) -> Response:
    """Token exchange of a non-expiring offline token for an expiring pair; the old one stops
    working. Asked again with the same old token within 7 days (and before the pair was
    refreshed), the same pair comes back, as Shopify does since 2026."""
    with shop.lock:
        earlier = app.migrated.get(old)
        if earlier is not None:
            at, answer = earlier
            refresh = answer["refresh_token"]
            if (
                now - at <= MIGRATION_RETRY_WINDOW
                and refresh in app.refresh_tokens
                and refresh not in app.replaced_by
            ):
                app.tokens[answer["access_token"]] = now + OFFLINE_TOKEN_TTL
                return JSONResponse({**answer, "expires_in": int(OFFLINE_TOKEN_TTL.total_seconds())})
            return _oauth_error("invalid_grant", "The subject token was already exchanged.")
        if not expiring or not app.installed or old not in app.tokens or app.tokens[old] is not None:
            return _oauth_error(
                "invalid_grant", "The subject token is not a non-expiring offline token of this app."
            )
        del app.tokens[old]
        answer = _expiring_pair(app, now)
        app.migrated[old] = (now, answer)
        return JSONResponse(answer)


def _expiring_pair(app: AppCredentials, now: datetime, replacing: str | None = None) -> dict[str, Any]:
    """An expiring offline access token and its refresh token, as Shopify's token endpoint answers."""
    return {
        "access_token": app.issue_token(now, OFFLINE_TOKEN_TTL),
        "scope": scope_string(app.scopes),
        "expires_in": int(OFFLINE_TOKEN_TTL.total_seconds()),
        "refresh_token": app.issue_refresh_token(now, REFRESH_TOKEN_TTL, replacing),
        "refresh_token_expires_in": int(REFRESH_TOKEN_TTL.total_seconds()),
    }


def access_scopes_json(app: AppCredentials) -> dict[str, Any]:
    """Body of ``GET /admin/oauth/access_scopes.json``."""
    return {"access_scopes": [{"handle": s} for s in sorted(app.scopes)]}


_PLAN_REST = {
    "standard": ("basic", "Basic"),
    "advanced": ("advanced", "Advanced"),
    "plus": ("shopify_plus", "Shopify Plus"),
}


def shop_json(shop: ShopState, shop_id: int) -> dict[str, Any]:
    """Body of ``GET /admin/api/<version>/shop.json`` (Shopify's REST shop fields)."""
    info = shop.info
    created = info.get("created_at")
    created_text = created.isoformat() if isinstance(created, datetime) else created
    plan_name, plan_display = _PLAN_REST.get(info.get("plan") or "standard", ("basic", "Basic"))
    currency = info.get("currency_code")
    return {
        "shop": {
            "id": shop_id,
            "name": info.get("name"),
            "email": info.get("email"),
            "customer_email": info.get("email"),
            "domain": info.get("primary_domain") or shop.domain,
            "myshopify_domain": shop.domain,
            "country": info.get("country_code"),
            "country_code": info.get("country_code"),
            "currency": currency,
            "enabled_presentment_currencies": [currency],
            "iana_timezone": info.get("timezone"),
            "timezone": info.get("timezone"),
            "plan_name": plan_name,
            "plan_display_name": plan_display,
            "primary_locale": "en",
            "money_format": "${{amount}}" if currency == "USD" else f"{{{{amount}}}} {currency}",
            "created_at": created_text,
            "updated_at": created_text,
            "has_storefront": True,
            "password_enabled": False,
            "setup_required": False,
        }
    }
