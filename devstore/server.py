"""Build a devstore world and serve it: blocking (``serve``) or in a thread for tests.

``create_world`` generates shops with ``devstore.generator`` and installs one app,
"shopsync", in each, with a deterministic client id and secret (derived from the seed and
the shop handle, so a restarted devstore accepts the same credentials) and a static access
token holding every scope in ``state.ALL_SCOPES``.
"""

from __future__ import annotations

import gc
import hashlib
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import uvicorn
from starlette.applications import Starlette

from devstore.app import create_app, set_base_url
from devstore.state import ALL_SCOPES, AppCredentials, World

APP_NAME = "shopsync"
PLANS: tuple[str, ...] = ("standard", "advanced", "plus")


def _derive(seed: int, handle: str, what: str, length: int) -> str:
    return hashlib.sha256(f"{APP_NAME}:{seed}:{handle}:{what}".encode()).hexdigest()[:length]


def install_apps(
    world: World,
    seed: int = 0,
    *,
    token_ttl: timedelta | None = None,
    redirect_urls: Sequence[str] = (),
) -> None:
    """Give every shop the "shopsync" app: deterministic credentials, a static token, all scopes.

    ``token_ttl`` is how long client-credentials tokens live; ``redirect_urls`` are the app's
    allowed OAuth redirection URLs.
    """
    for handle, shop in world.shops.items():
        app = AppCredentials(
            client_id=_derive(seed, handle, "client_id", 32),
            client_secret="shpss_" + _derive(seed, handle, "client_secret", 32),
            scopes=set(ALL_SCOPES),
            redirect_urls=list(redirect_urls),
        )
        if token_ttl is not None:
            app.token_ttl = token_ttl
        app.tokens["shpat_" + _derive(seed, handle, "static_token", 32)] = None
        with shop.lock:
            shop.apps[app.client_id] = app


def world_from_tables(
    tables: dict[str, pl.DataFrame],
    *,
    seed: int = 0,
    plan: str | None = None,
    token_ttl: timedelta | None = None,
    redirect_urls: Sequence[str] = (),
) -> World:
    """A world served from ``devstore.model`` tables, with the shopsync app installed."""
    world = World.from_tables(tables)
    if plan is not None:
        if plan not in PLANS:
            raise ValueError(f"unknown plan {plan!r}; use one of {', '.join(PLANS)}")
        for shop in world.shops.values():
            shop.info["plan"] = plan
    install_apps(world, seed, token_ttl=token_ttl, redirect_urls=redirect_urls)
    return world


def create_world(
    stores: int = 2,
    customers: int = 1000,
    seed: int = 0,
    plan: str | None = None,
    *,
    token_ttl: timedelta | None = None,
    redirect_urls: Sequence[str] = (),
    **generator_options: Any,
) -> World:
    """Generate ``stores`` shops of ~``customers`` customers each and install the shopsync app.

    ``plan`` (standard|advanced|plus) overrides every shop's plan; None keeps the generator's.
    """
    from devstore.generator import generate_world

    tables = generate_world(stores=stores, customers=customers, seed=seed, **generator_options)
    return world_from_tables(tables, seed=seed, plan=plan, token_ttl=token_ttl, redirect_urls=redirect_urls)


def shop_credentials(world: World, base_url: str = "") -> list[dict[str, Any]]:
    """Per shop: domain, static access token, client id/secret, scopes (and its path-prefix URL)."""
    out = []
    for handle, shop in sorted(world.shops.items()):
        for app in shop.apps.values():
            static = next((t for t, expiry in app.tokens.items() if expiry is None), None)
            entry: dict[str, Any] = {
                "domain": shop.domain,
                "access_token": static,
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "scopes": sorted(app.scopes),
            }
            if base_url:
                entry["base_url"] = f"{base_url.rstrip('/')}/shops/{handle}"
            out.append(entry)
            break
    return out


def serve(
    world: World,
    host: str = "127.0.0.1",
    port: int = 8700,
    *,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    log_level: str = "warning",
    **app_options: Any,
) -> None:
    """Serve ``world`` until interrupted (HTTPS when a certificate and key are given)."""
    scheme = "https" if tls_cert else "http"
    app = create_app(world, base_url=f"{scheme}://{host}:{port}", **app_options)
    # The world is millions of long-lived dicts; without this, full garbage collections that
    # walk them all stall random requests by a third of a second.
    gc.freeze()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        # an interrupted devstore stops within seconds even if a client holds a connection open
        timeout_graceful_shutdown=3,
    )


@dataclass
class RunningDevstore:
    """A devstore serving in a background thread."""

    url: str
    world: World
    app: Starlette
    server: uvicorn.Server = field(repr=False)
    thread: threading.Thread = field(repr=False)

    def shop_url(self, handle_or_domain: str) -> str:
        """Base URL of one shop through the path prefix (``<url>/shops/<handle>``)."""
        return f"{self.url}/shops/{handle_or_domain.removesuffix('.myshopify.com')}"

    def graphql_url(self, handle_or_domain: str) -> str:
        """The shop's Admin GraphQL endpoint."""
        return f"{self.shop_url(handle_or_domain)}/admin/api/2026-10/graphql.json"

    @property
    def shops(self) -> list[dict[str, Any]]:
        """Credentials of every shop (as the CLI prints them)."""
        return shop_credentials(self.world, self.url)

    def token(self, handle_or_domain: str) -> str:
        """The shop's static access token."""
        domain = (
            handle_or_domain
            if handle_or_domain.endswith(".myshopify.com")
            else f"{handle_or_domain}.myshopify.com"
        )
        for entry in self.shops:
            if entry["domain"] == domain:
                return str(entry["access_token"])
        raise KeyError(f"no shop {handle_or_domain!r} in this devstore")

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call the ``/_devstore`` control API and return its JSON; a refusal raises with its text."""
        response = httpx.request(method, f"{self.url}/_devstore{path}", json=body, timeout=30)
        if response.status_code >= 300:
            raise RuntimeError(f"devstore control {method} {path} -> {response.status_code}: {response.text}")
        return response.json()

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_in_thread(
    world: World,
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    **app_options: Any,
) -> RunningDevstore:
    """Serve ``world`` on ``host:port`` (0 = a free port) from a daemon thread; returns once listening.

    With ``tls_cert`` and ``tls_key`` (PEM files) it serves HTTPS.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    url = f"{'https' if tls_cert else 'http'}://{host}:{bound_port}"
    app = create_app(world, base_url=url, **app_options)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="devstore", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"The devstore did not start listening on {url}.")
        time.sleep(0.01)
    set_base_url(app, url)
    return RunningDevstore(url=url, world=world, app=app, server=server, thread=thread)
