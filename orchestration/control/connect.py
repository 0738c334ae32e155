"""The three ways to give shopsync a store's credentials, each verified with Shopify first.

- a static Admin API access token (a custom app made in the store's admin);
- the client-credentials grant (client id and secret; tokens expire after 24 h and the
  client refreshes them before expiry and on a 401);
- the authorization-code flow (a public or Partner app): the merchant approves in the
  browser, a local listener receives the redirect, ``state`` and ``hmac`` are verified and
  the code is exchanged for an offline token.

Each returns what to store (``Verified``): the credential fields, their kind and the scopes
Shopify reports as granted. Nothing is stored here; the caller registers the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from orchestration.control.models import AuthKind


class ConnectError(RuntimeError):
    """The credentials could not be verified; ``str(exc)`` says why and what to do."""


@dataclass(frozen=True)
class Verified:
    """Credentials Shopify accepted, ready to be stored encrypted."""

    auth_kind: AuthKind
    credentials: dict[str, Any] = field(repr=False)
    scopes: tuple[str, ...]


def requested_scopes(*, push: bool = False) -> list[str]:
    """The access scopes to ask for: every entity's read scope and ``read_all_orders``, plus
    ``write_customers`` when a "Sync data to Shopify" toggle is (or will be) on."""
    from pipelines.shopify.settings import ALL_ORDERS_SCOPE, ENTITY_SCOPES

    scopes = {*ENTITY_SCOPES.values(), ALL_ORDERS_SCOPE}
    if push:
        scopes.add("write_customers")
    return sorted(scopes)


def granted_scopes(domain: str, base_url: str | None, **auth: Any) -> tuple[str, ...]:
    """Read the scopes granted to the app with one API call (``auth``: ShopifyClient credentials)."""
    from pipelines.shopify.client import ShopifyClient, ShopifyError
    from pipelines.shopify.preflight import read_scopes

    try:
        with ShopifyClient(domain, base_url=base_url, max_attempts=3, **auth) as client:
            return tuple(sorted(read_scopes(client)))
    except ShopifyError as exc:
        raise ConnectError(f"Could not connect {domain}: {exc}") from None


def verify_token(
    domain: str,
    token: str,
    base_url: str | None,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
) -> Verified:
    """A static access token (``client_secret``, if given, verifies the store's webhooks)."""
    scopes = granted_scopes(domain, base_url, access_token=token)
    credentials: dict[str, Any] = {"access_token": token}
    if client_id:
        credentials["client_id"] = client_id
    if client_secret:
        credentials["client_secret"] = client_secret
    return Verified(AuthKind.ACCESS_TOKEN, credentials, scopes)


def verify_client_credentials(
    domain: str, client_id: str, client_secret: str, base_url: str | None
) -> Verified:
    """The client-credentials grant: obtain a token once to prove the pair and record its expiry."""
    from pipelines.shopify.oauth import OAuthError, client_credentials_grant

    try:
        grant = client_credentials_grant(domain, base_url or f"https://{domain}", client_id, client_secret)
    except OAuthError as exc:
        raise ConnectError(f"Could not connect {domain}: {exc}") from None
    scopes = granted_scopes(domain, base_url, access_token=grant.access_token)
    credentials: dict[str, Any] = {"client_id": client_id, "client_secret": client_secret}
    if grant.expires_at is not None:
        credentials["expires_at"] = grant.expires_at.isoformat()
    return Verified(AuthKind.CLIENT_CREDENTIALS, credentials, scopes)


def verify_oauth(
    domain: str,
    client_id: str,
    client_secret: str,
    base_url: str | None,
    scopes: Iterable[str],
    *,
    show_url: Callable[[str], None],
    port: int = 0,
    timeout: float = 300.0,
) -> Verified:
    """The authorization-code flow with a local callback; returns the expiring offline token."""
    from pipelines.shopify.oauth import OAuthError, authorize

    try:
        grant = authorize(
            domain,
            base_url or f"https://{domain}",
            client_id,
            client_secret,
            scopes,
            show_url=show_url,
            port=port,
            timeout=timeout,
        )
    except OAuthError as exc:
        raise ConnectError(str(exc)) from None
    # The token's own view of its scopes (Shopify may grant fewer than asked).
    granted = granted_scopes(domain, base_url, access_token=grant.access_token)
    # An expiring offline token: its refresh token and expiries are kept with it (encrypted).
    credentials = {**grant.credentials(), "client_id": client_id, "client_secret": client_secret}
    return Verified(AuthKind.OAUTH, credentials, granted)
