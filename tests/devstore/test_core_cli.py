"""``shopsync devstore serve`` prints one JSON line with the URL and credentials, then serves."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def test_serve_prints_one_json_line_then_serves() -> None:
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "shopsync"),
            "devstore",
            "serve",
            "--port",
            "0",
            "--stores",
            "1",
            "--customers",
            "30",
            "--plan",
            "plus",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        announced = json.loads(line)
        shop = announced["shops"][0]
        assert set(shop) >= {"domain", "access_token", "client_id", "client_secret", "scopes"}
        body = None
        for _ in range(100):  # the line comes out just before uvicorn binds
            try:
                body = httpx.post(
                    f"{announced['url']}/shops/{shop['domain'].split('.')[0]}/admin/api/2026-10/graphql.json",
                    json={"query": "{ shop { myshopifyDomain plan { shopifyPlus } } }"},
                    headers={"X-Shopify-Access-Token": shop["access_token"]},
                ).json()
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert body is not None
        assert body["data"]["shop"] == {"myshopifyDomain": shop["domain"], "plan": {"shopifyPlus": True}}
        assert body["extensions"]["cost"]["throttleStatus"]["maximumAvailable"] == 20000.0
    finally:
        process.terminate()
        process.wait(timeout=15)
