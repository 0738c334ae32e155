"""Shared fixtures: a devstore (local Shopify) served over real HTTP on a free port.

``devstore``          a fresh world per test (2 shops, 150 customers each, seed 0): mutate freely.
``devstore_shared``   one world for the whole session: for tests that only read.
``devstore_factory``  start devstores with your own options (stores, customers, seed, plan,
                      token_ttl, faults, ...); all are stopped at the end of the test.

Each yields a ``devstore.server.RunningDevstore``: ``.url``, ``.world``, ``.shops`` (domain,
access_token, client_id, client_secret, scopes, base_url), ``.graphql_url(handle)``,
``.shop_url(handle)``, ``.token(handle)``, ``.stop()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devstore.server import RunningDevstore, create_world, start_in_thread

DEFAULT_WORLD: dict[str, Any] = {"stores": 2, "customers": 150, "seed": 0}
_WORLD_KEYS = {"stores", "customers", "seed", "plan", "token_ttl"}


def _start(options: dict[str, Any]) -> RunningDevstore:
    world_options = {**DEFAULT_WORLD, **{k: v for k, v in options.items() if k in _WORLD_KEYS}}
    app_options = {k: v for k, v in options.items() if k not in _WORLD_KEYS}
    app_options.setdefault("webhooks", True)
    return start_in_thread(create_world(**world_options), **app_options)


@pytest.fixture
def devstore_factory() -> Iterator[Callable[..., RunningDevstore]]:
    """Start devstores with custom world/app options; every one is stopped after the test."""
    started: list[RunningDevstore] = []

    def start(**options: Any) -> RunningDevstore:
        running = _start(options)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def devstore() -> Iterator[RunningDevstore]:
    """A devstore with a fresh world (2 shops x ~150 customers), stopped after the test."""
    running = _start({})
    yield running
    running.stop()


@pytest.fixture(scope="session")
def devstore_shared() -> Iterator[RunningDevstore]:
    """One devstore for the whole session; do not change its world."""
    running = _start({})
    yield running
    running.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the one-line summaries tests record (``record_property("summary", ...)``), also under xdist."""
    lines = [
        f"{report.nodeid.rsplit('::', 1)[-1]}: {value}"
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", "call") == "call"
        for name, value in getattr(report, "user_properties", [])
        if name == "summary"
    ]
    if lines:
        terminalreporter.section("summaries")
        for line in lines:
            terminalreporter.write_line(line)
