"""An authorization code from the devstore, as a merchant approving the app would give one.

Usage in a test::

    from support.oauth import authorization_code
    code = authorization_code(running_devstore)  # for the first shop, scope read_customers
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import httpx

from devstore.server import RunningDevstore

CALLBACK = "https://app.example/callback"


def authorization_code(running: RunningDevstore, scope: str = "read_customers") -> str:
    """Allow ``CALLBACK`` for the first shop's app, approve it for ``scope`` and return the code."""
    shop = running.shops[0]
    handle = shop["domain"].removesuffix(".myshopify.com")
    running.control("PUT", f"/shops/{handle}/app", {"redirect_urls": [CALLBACK]})
    approved = httpx.get(
        shop["base_url"] + "/admin/oauth/authorize",
        params={"client_id": shop["client_id"], "scope": scope, "redirect_uri": CALLBACK, "state": "s"},
        timeout=30,
    )
    return dict(parse_qsl(urlsplit(approved.headers["location"]).query))["code"]
