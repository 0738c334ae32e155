"""``shopsync devstore serve`` and ``generate``, run as a user runs them (a real process, real HTTP)."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import polars as pl
import pytest
from click.testing import CliRunner
from tls_support import self_signed

from devstore.bulk_jsonl import read_jsonl
from orchestration.cli import cli
from pipelines.engagement import EngagementEvent

ROOT = Path(__file__).resolve().parents[2]
SHOPSYNC = str(Path(sys.executable).parent / "shopsync")


@contextmanager
def serving(*args: str) -> Iterator[tuple[dict[str, Any], subprocess.Popen[str]]]:
    """Run ``shopsync devstore serve --port 0 ARGS``; yield its announced JSON line once it answers."""
    process = subprocess.Popen(
        [SHOPSYNC, "devstore", "serve", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"serve printed nothing; stderr: {process.communicate(timeout=10)[1]}")
        yield json.loads(line), process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
            raise AssertionError("the devstore did not stop within 15 s of SIGTERM") from None


def wait_until_listening(url: str, **client: Any) -> httpx.Client:
    """An httpx client for ``url`` once the server accepts connections (it binds just after printing)."""
    http = httpx.Client(timeout=10, **client)
    for _ in range(150):
        try:
            http.get(url + "/_devstore/clock")
            return http
        except httpx.ConnectError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listening on {url}")


def gql(http: httpx.Client, shop: dict[str, Any], query: str) -> dict[str, Any]:
    body: dict[str, Any] = http.post(
        f"{shop['base_url']}/admin/api/2026-10/graphql.json",
        json={"query": query},
        headers={"X-Shopify-Access-Token": shop["access_token"]},
    ).json()
    return body


def test_serve_prints_one_json_line_then_serves() -> None:
    with serving("--stores", "1", "--customers", "30", "--plan", "plus") as (announced, _):
        shop = announced["shops"][0]
        assert set(shop) >= {"domain", "access_token", "client_id", "client_secret", "scopes"}
        assert "files" not in announced
        http = wait_until_listening(announced["url"])
        body = gql(http, shop, "{ shop { myshopifyDomain plan { shopifyPlus } } }")
        assert body["data"]["shop"] == {"myshopifyDomain": shop["domain"], "plan": {"shopifyPlus": True}}
        assert body["extensions"]["cost"]["throttleStatus"]["maximumAvailable"] == 20000.0


def test_serve_writes_truth_and_engagement_and_takes_token_ttl_and_redirect_urls(tmp_path: Path) -> None:
    truth_dir = tmp_path / "truth"
    callback = "http://127.0.0.1:9/auth/callback"
    args = ["--stores", "2", "--customers", "25", "--seed", "7", "--truth-dir", str(truth_dir)]
    with serving(*args, "--token-ttl", "90", "--redirect-url", callback) as (announced, _):
        assert announced["files"] == {
            "truth": str(truth_dir / "truth.csv"),
            "engagement": str(truth_dir / "engagement.jsonl"),
        }
        http = wait_until_listening(announced["url"])
        truth = pl.read_csv(truth_dir / "truth.csv")
        for shop in announced["shops"]:
            served = gql(http, shop, "{ customers(first: 250) { nodes { legacyResourceId } } }")
            served_ids = {int(n["legacyResourceId"]) for n in served["data"]["customers"]["nodes"]}
            recorded = truth.filter(
                (pl.col("record_type") == "customer") & (pl.col("shop") == shop["domain"])
            )
            # a person id for every customer record the shop serves, and for nothing else
            assert set(recorded["record_id"].to_list()) == served_ids and served_ids
            assert recorded["person_id"].null_count() == 0
        events = [EngagementEvent.model_validate(e) for e in read_jsonl(truth_dir / "engagement.jsonl")]
        assert events and {e.type for e in events} >= {"email_sent", "sms_inbound"}

        shop = announced["shops"][0]
        token = http.post(
            f"{shop['base_url']}/admin/oauth/access_token",
            data={
                "grant_type": "client_credentials",
                "client_id": shop["client_id"],
                "client_secret": shop["client_secret"],
            },
        ).json()
        assert token["expires_in"] == 90
        assert http.get(f"{announced['url']}/_devstore/shops/{shop['domain']}/app").json()[
            "redirect_urls"
        ] == [callback]
        authorize = f"{shop['base_url']}/admin/oauth/authorize"
        granted = http.get(authorize, params={"client_id": shop["client_id"], "redirect_uri": callback})
        assert granted.status_code == 302
        assert dict(parse_qsl(urlsplit(granted.headers["location"]).query))["shop"] == shop["domain"]
        refused = http.get(
            authorize, params={"client_id": shop["client_id"], "redirect_uri": "http://127.0.0.1:9/elsewhere"}
        )
        assert refused.status_code == 400


def test_serve_refuses_to_overwrite_truth_files(tmp_path: Path) -> None:
    (tmp_path / "truth.csv").write_text("mine\n")
    result = subprocess.run(
        [SHOPSYNC, "devstore", "serve", "--port", "0", "--customers", "5", "--truth-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert "already exists; nothing was written" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "truth.csv").read_text() == "mine\n"
    assert not (tmp_path / "engagement.jsonl").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--token-ttl", "0"], "--token-ttl"),
        (["--redirect-url", "/relative/callback"], "not an absolute http(s) URL"),
        (["--tls-cert", "README.md"], "Give both --tls-cert and --tls-key"),
    ],
)
def test_serve_rejects_bad_options_with_a_clear_message(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["devstore", "serve", "--port", "0", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_serve_over_https_with_a_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with serving("--stores", "1", "--customers", "10", "--tls-cert", str(cert), "--tls-key", str(key)) as (
        announced,
        _,
    ):
        assert announced["url"].startswith("https://127.0.0.1:")
        shop = announced["shops"][0]
        assert shop["base_url"].startswith("https://")
        # verified against the certificate itself: the server really presents it
        trusted = ssl.create_default_context(cafile=str(cert))
        http = wait_until_listening(announced["url"], verify=trusted)
        body = gql(http, shop, "{ shop { myshopifyDomain } }")
        assert body["data"]["shop"]["myshopifyDomain"] == shop["domain"]
        with pytest.raises(httpx.ConnectError):  # a client that does not trust it refuses to talk
            httpx.get(announced["url"] + "/_devstore/clock", timeout=5)
        http.close()
        plain = "http://" + announced["url"].removeprefix("https://")
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port gets no answer
            httpx.get(plain + "/_devstore/clock", timeout=5)


def _generate(out: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["devstore", "generate", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def test_generate_writes_bulk_jsonl_truth_and_engagement(tmp_path: Path) -> None:
    args = ("--stores", "2", "--customers", "40", "--seed", "5", "--orders-per-customer", "1.5")
    summary = _generate(tmp_path / "a", *args)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    handles = sorted(shop.split(".")[0] for shop in summary["bulk"])
    assert files == sorted(
        ["truth.csv", "engagement.jsonl"]
        + [f"{h}.{kind}.jsonl" for h in handles for kind in ("customers", "orders")]
    )
    truth = pl.read_csv(tmp_path / "a" / "truth.csv")
    assert truth.height == summary["truth"]["rows"]
    for shop, written in summary["bulk"].items():
        customers = read_jsonl(written["customers"]["path"])
        assert len(customers) == written["customers"]["lines"]
        assert all(str(c["id"]).startswith("gid://shopify/Customer/") for c in customers)
        ids = {int(str(c["id"]).rsplit("/", 1)[1]) for c in customers}
        in_truth = truth.filter((pl.col("record_type") == "customer") & (pl.col("shop") == shop))
        assert set(in_truth["record_id"].to_list()) == ids
        lines = read_jsonl(written["orders"]["path"])
        orders = {str(line["id"]) for line in lines if "__parentId" not in line}
        children = [line for line in lines if "__parentId" in line]
        assert orders and children and all(c["__parentId"] in orders for c in children)
        order_ids = {int(o.rsplit("/", 1)[1]) for o in orders}
        in_truth = truth.filter((pl.col("record_type") == "order") & (pl.col("shop") == shop))
        assert set(in_truth["record_id"].to_list()) == order_ids
    events = read_jsonl(tmp_path / "a" / "engagement.jsonl")
    assert len(events) == summary["engagement"]["events"]
    for event in events:
        EngagementEvent.model_validate(event)  # the feed `shopsync engagement import` accepts

    # the same seed gives the same files byte for byte; another seed does not
    _generate(tmp_path / "b", *args)
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    _generate(tmp_path / "c", *args[:4], "--seed", "6", *args[6:])
    assert (tmp_path / "a" / "truth.csv").read_bytes() != (tmp_path / "c" / "truth.csv").read_bytes()


def test_generate_never_overwrites(tmp_path: Path) -> None:
    _generate(tmp_path, "--stores", "1", "--customers", "10")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = CliRunner().invoke(
        cli,
        ["devstore", "generate", "--out", str(tmp_path), "--stores", "1", "--customers", "10", "--seed", "9"],
    )
    assert result.exit_code == 1
    assert "already exist; nothing was written" in result.output and "--out" in result.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
