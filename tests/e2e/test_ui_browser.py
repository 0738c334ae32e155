"""The Dagster UI in a real browser: Debian's Chromium driven by Playwright.

``shopsync demo --ui`` syncs two generated stores, keeps their local Shopify running and starts
``dagster dev`` on the demo's instance and warehouse. The test then does what a data engineer
does on first contact: opens the asset graph, finds the Shopify, identity, metrics and
reverse-sync groups and the store partitions, launches one store's re-sync from the launchpad,
waits for the run to succeed and keeps a screenshot of it (``artifacts/ui/``, or
``$SHOPSYNC_ARTIFACTS_DIR``).

Chromium comes from Debian (``.ci/run`` installs it). Without it the test is skipped, unless
``SHOPSYNC_REQUIRE_BROWSER`` is set (CI sets it), where a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
SHOPSYNC = Path(sys.executable).with_name("shopsync")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GROUPS = ("shopify", "identity", "metrics", "reverse_sync")


def _chromium() -> str:
    found = (
        os.environ.get("SHOPSYNC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if found:
        return found
    message = "Debian's chromium is not installed (apt-get install chromium); .ci/run installs it"
    if os.environ.get("SHOPSYNC_REQUIRE_BROWSER"):
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _artifacts() -> Path:
    folder = Path(os.environ.get("SHOPSYNC_ARTIFACTS_DIR") or REPO / "artifacts" / "ui")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def demo_ui(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``shopsync demo --ui`` in a fresh folder; yields the UI's URL and the folder."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "SHOPSYNC_"))}
    log = (tmp_path / "demo-ui.log").open("wb")
    process = subprocess.Popen(
        [str(SHOPSYNC), "demo", "--customers", "40", "--ui", "--ui-port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the webserver, daemon and code servers go with it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                pytest.fail(f"shopsync demo --ui exited with {process.returncode}:\n{_tail(tmp_path)}")
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the Dagster UI did not come up within 240 s:\n{_tail(tmp_path)}")
            time.sleep(1)
        yield url, tmp_path
    finally:
        _stop_group(process)
        log.close()


def _tail(folder: Path) -> str:
    return (folder / "demo-ui.log").read_text(errors="replace")[-4000:]


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C as a user would, then make sure nothing of the group outlives the test."""
    group = os.getpgid(process.pid)
    os.killpg(group, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(600)  # the demo, dagster dev and a re-sync: ~3 min on two busy cores
def test_a_store_resync_launched_from_the_dagster_ui_succeeds(demo_ui: tuple[str, Path]) -> None:
    chromium = _chromium()
    from playwright.sync_api import expect, sync_playwright

    url, folder = demo_ui
    stores = ("acme-outdoors.myshopify.com", "north-coffee.myshopify.com")
    store = stores[1]
    shots = _artifacts()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            # The asset graph: every group of the product is there.
            page.goto(f"{url}/asset-groups")
            _dismiss_onboarding(page)
            for group in GROUPS:
                expect(page.get_by_text(group, exact=True).first).to_be_visible()
            page.screenshot(path=str(shots / "asset-graph.png"))

            # One partition per store, on a Shopify asset's partitions view.
            page.goto(f"{url}/assets/shopify/customers?view=partitions")
            _dismiss_onboarding(page)
            for domain in stores:
                expect(page.get_by_text(domain).first).to_be_visible()

            # The re-sync: the store's partition of shopify_resync, launched from the launchpad.
            page.goto(f"{url}/locations/orchestration.definitions/jobs/shopify_resync/playground")
            _dismiss_onboarding(page)
            page.get_by_placeholder("Partition").click()
            page.get_by_text(store, exact=True).click()
            # the partition's config asks for a full export of every entity
            expect(page.get_by_text("full: true").first).to_be_visible()
            page.get_by_role("button", name="Launch Run").click()
            page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}"))
            run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
            page.screenshot(path=str(shots / "resync-launched.png"))

            # The run page turns to Success (it updates live); generous for a loaded 2-core CI box.
            expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=300_000)
            page.screenshot(path=str(shots / "resync-succeeded.png"))
        except Exception:
            page.screenshot(path=str(shots / "failure.png"))
            raise
        finally:
            browser.close()

    # The UI's word is checked against the instance: the run of that store's partition succeeded.
    instance = dg.DagsterInstance.from_config(str(folder / ".dagster_home"))
    try:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.job_name == "shopify_resync"
        assert run.tags.get("dagster/partition") == store
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.run_config["ops"]["shopify__landing__customers"]["config"]["full"] is True
    finally:
        instance.dispose()
    print(f"UI screenshots in {shots}")


def _dismiss_onboarding(page: object) -> None:
    """Dagster asks first-time visitors to join its community; a new browser profile is one."""
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=5_000)
    except Exception:
        return
    skip.click()
